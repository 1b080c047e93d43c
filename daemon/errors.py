"""The root of Cloudpilot's exception tree."""


class CloudpilotError(Exception):
    """Base class of every error Cloudpilot raises on purpose."""


class ConfigError(CloudpilotError):
    """A configuration or rule file is invalid; the message names file, line and field."""
