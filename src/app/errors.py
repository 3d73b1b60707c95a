"""Expected errors: each message names the file, key or value at fault and what to do.

The CLI prints these without a traceback (``--debug`` shows it); anything else is a bug.
"""


class AppError(ValueError):
    """Base of the expected errors."""


class ConfigError(AppError):
    """A config file, key or value is wrong."""


class DataError(AppError):
    """Input data is missing, unreadable or not what it claims to be."""


class CheckpointError(AppError):
    """A checkpoint is missing, corrupt or does not fit the data."""


class OutputError(AppError):
    """An output cannot be written: a folder that is not writable, a full disk."""


class TrainingError(AppError):
    """Training cannot go on: the loss stopped being a finite number."""
