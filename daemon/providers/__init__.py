"""Providers: the shared HTTP client toolkit, and one package per cloud, with its registry."""
