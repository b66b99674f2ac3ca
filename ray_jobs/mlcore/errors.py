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


# What a user can cause and fix: an entry point prints the message as it is.
USER_ERRORS = (
    JobInputError,
    DatasetUnavailable,
    StorageError,
    CheckpointError,
    DataError,
)


def failure_line(exc: BaseException) -> str:
    """The one line an entry point ends with for `exc`: a user error's own
    message; anything else (Ray's TrainingFailedError and the like) as its type
    and text, whitespace folded and cut to 2,000 characters."""
    if isinstance(exc, USER_ERRORS):
        return f"error: {exc}"
    reason = " ".join(str(exc).split())[:2000]
    return f"error: training failed: {type(exc).__name__}: {reason}"


def report_failure(exc: BaseException, usage: tuple[type, ...] = ()) -> int:
    """Print `failure_line(exc)` on stderr; the exit status: 2 for the `usage`
    errors (a flag that does not fit, found late), else 1."""
    import sys

    print(failure_line(exc), file=sys.stderr)
    return 2 if isinstance(exc, usage) else 1
