"""Errors a user can cause through configuration; entry points print them as one line, without a traceback."""


class ConfigurationError(ValueError):
    """An invalid combination or value in the Hydra configuration; the message names the fix."""
