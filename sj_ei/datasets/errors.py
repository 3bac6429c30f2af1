"""The one error a missing dataset raises."""


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not where they should be; the message says what to place where."""
