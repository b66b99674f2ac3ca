"""Errors a user can cause; entry points turn them into one-line messages."""


class JobInputError(ValueError):
    """A flag or argument is invalid. The message names it and what is allowed."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


class DatasetUnavailable(RuntimeError):
    """The dataset's files cannot be had (missing and not downloadable)."""


class StorageError(RuntimeError):
    """The storage path cannot be reached or does not exist."""


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or corrupt."""


class DataError(ValueError):
    """Raw or prepared data is unusable; the message names the file, column or
    shard. Raised inside Ray Data tasks too, where only its text reaches the
    driver: `data_error_in` finds it there."""


def data_error_in(exc: BaseException) -> DataError | None:
    """The DataError behind `exc`, when a Ray Data task raised one (Ray passes on
    the task's traceback as text, not the exception object)."""
    import re

    if isinstance(exc, DataError):
        return exc
    found = re.findall(r"^(?:mlcore\.errors\.)?DataError: (.+)$", str(exc), re.M)
    return DataError(found[-1]) if found else None
