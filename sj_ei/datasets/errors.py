"""The errors of dataset files a user placed: missing, or damaged."""
from ..errors import UserError


class DatasetNotFoundError(UserError, FileNotFoundError):
    """The dataset's files are not where they should be; the message says what to place where."""


class DatasetDamagedError(UserError, ValueError):
    """A dataset file fails its published MD5 checksum; the message names it and says what to replace."""
