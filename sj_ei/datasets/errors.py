"""The errors of dataset files a user placed: missing, or damaged."""


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not where they should be; the message says what to place where."""


class DatasetDamagedError(ValueError):
    """A dataset file fails its published MD5 checksum; the message names it and says what to replace."""
