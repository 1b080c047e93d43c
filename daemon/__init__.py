"""Cloudpilot: an automation daemon for the Seeweb cloud."""

__version__ = "0.1.0"
