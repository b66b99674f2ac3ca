"""The errors a user can hit, and the exit code each ends in.

Every command exits 0 when it did what was asked, 1 when it failed, and 2 when
its arguments or the stack's config are wrong. `raygpu.cli` prints a
`RaygpuError` as one line; nothing else of it (no traceback) reaches the user.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class RaygpuError(Exception):
    """An error the user can act on: printed as one line, exit `exit_code`."""

    exit_code = EXIT_FAILURE


class CommandError(RaygpuError):
    """A command could not do its work (unreachable cluster, failed job, ...)."""


class UsageError(RaygpuError):
    """Bad arguments or an install that lacks what the command needs."""

    exit_code = EXIT_USAGE
