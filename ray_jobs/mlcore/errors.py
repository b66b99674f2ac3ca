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
