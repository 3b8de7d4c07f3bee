"""The one error of the configuration layer."""


class ConfigError(Exception):
    """The configuration cannot be used; the message says where and what to change."""
