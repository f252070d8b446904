"""User-facing errors: the CLIs print these as one clear message, never as a traceback."""


class UserError(Exception):
    """Something the user can fix (bad data, bad flag, missing file). Printed without traceback."""


class DataError(UserError, ValueError):
    """Data on disk is missing, malformed or inconsistent. The message names the file(s)."""


class ConfigError(UserError, ValueError):
    """A configuration value or flag is invalid. The message names the key and the valid choices."""
