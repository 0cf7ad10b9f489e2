"""The error every bad input becomes: one paragraph naming the key, the value and what is allowed.

It lives in a module of its own, importing nothing, so that every module can raise it without
importing the config machinery (and without import cycles).
"""


class ConfigError(ValueError):
    """A config value that cannot run. The message names the key, the value and what is allowed."""
