"""boto3 as the scan uses it: a checked region, one call that proves the
credentials and the endpoint, errors told apart by their codes, bounded waits
(boto3's own waiters where it has them), and one line for what the user must fix."""

from __future__ import annotations

import contextlib
import difflib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import botocore
import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    SSOError,
    TokenRetrievalError,
    WaiterError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from raygpu.errors import CommandError, UsageError
from raygpu.stack import Clock, wait_until

ACCESS_DENIED = frozenset(
    {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}
)
# Codes by which AWS refuses the caller's credentials themselves.
BAD_CREDENTIALS = frozenset(
    {
        "AuthFailure",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "RequestExpired",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
    }
)
# The one call before a command's first real one: few, quick retries, so a
# wrong endpoint or missing credentials end in seconds.
_PROBE_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3}, connect_timeout=10
)


def error_code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def short(exc: Exception) -> str:
    """`Code: message` of a ClientError, else the exception's first line."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', '')}: {error.get('Message', '')}"
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def known_regions() -> set[str]:
    """Every region of every partition this botocore knows (read offline)."""
    session = botocore.session.Session()
    return {
        region
        for partition in session.get_available_partitions()
        for region in session.get_available_regions("ec2", partition)
    }


def check_region(region: str, source: str) -> None:
    """A UsageError naming `source` (where the region came from) unless AWS has
    `region`: checked offline, so a typo never becomes a DNS lookup."""
    known = known_regions()
    if region in known:
        return
    close = difflib.get_close_matches(region, sorted(known), n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise UsageError(
        f"{source}: {region!r} is not an AWS region; {hint}regions look like "
        f"us-west-2 (one newer than this botocore {botocore.__version__} needs a "
        "newer boto3)"
    )


def session_for(region: str, source: str) -> Any:
    """A boto3 Session in a checked region."""
    check_region(region, source)
    import boto3

    with aws_errors():
        return boto3.Session(region_name=region)


@contextlib.contextmanager
def aws_errors() -> Iterator[None]:
    """Turns an unusable AWS connection (credentials, profile, endpoint) into
    one line that says what to fix."""
    try:
        yield
    except NoCredentialsError:
        raise UsageError(
            "no AWS credentials found: run `aws configure` (or `aws sso login` "
            "and set AWS_PROFILE), or set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY"
        ) from None
    except (
        PartialCredentialsError,
        CredentialRetrievalError,
        TokenRetrievalError,
        SSOError,
    ) as exc:
        raise UsageError(
            f"the AWS credentials cannot be used ({short(exc)}): fix them, or "
            "log in again (`aws sso login`)"
        ) from None
    except ProfileNotFound as exc:
        raise UsageError(
            f"AWS profile {exc.kwargs.get('profile')!r} not found: set AWS_PROFILE "
            "to a profile in ~/.aws/config, or unset it"
        ) from None
    except (BotoConnectionError, HTTPClientError) as exc:
        url = exc.kwargs.get("endpoint_url") or "its endpoint"
        override = os.environ.get("AWS_ENDPOINT_URL")
        fix = f"check AWS_ENDPOINT_URL={override}" if override else "check the network"
        raise CommandError(
            f"cannot reach AWS at {url} ({type(exc).__name__}): {fix}, and any "
            "proxy settings (HTTPS_PROXY)"
        ) from None
    except ClientError as exc:
        if error_code(exc) not in BAD_CREDENTIALS:
            raise
        raise UsageError(
            f"AWS refused the credentials ({short(exc)}): refresh them (`aws sso "
            "login`, new access keys) and run again"
        ) from None


class AwsContext:
    """One region's clients, and the bounded waits every kind's deletion uses."""

    def __init__(
        self,
        session: Any,  # boto3.Session
        clock: Clock | None = None,
        wait_timeout_s: float = 600.0,
        interval_s: float = 10.0,
        log: Callable[[str], None] = print,
    ) -> None:
        self.session = session
        self.clock = clock or Clock()
        self.wait_timeout_s = wait_timeout_s
        self.interval_s = interval_s
        self.log = log
        self._clients: dict[str, Any] = {}

    @property
    def region(self) -> str:
        return self.session.region_name

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.session.client(service)
        return self._clients[service]

    def check_access(self) -> str:
        """The caller's ARN; proves the credentials and the endpoint first
        (sts:GetCallerIdentity needs no permission)."""
        with aws_errors():
            sts = self.session.client("sts", config=_PROBE_CONFIG)
            return sts.get_caller_identity()["Arn"]

    def poll(self, check: Callable[[], Any], what: str | Callable[[], str]) -> Any:
        return wait_until(check, self.wait_timeout_s, what, self.interval_s, self.clock)

    def wait(self, service: str, waiter: str, what: str, **kwargs: Any) -> None:
        """boto3's waiter `waiter`, bounded like every other wait here."""
        delay = max(self.interval_s, 1.0)
        attempts = math.ceil(self.wait_timeout_s / delay) + 1
        try:
            self.client(service).get_waiter(waiter).wait(
                **kwargs, WaiterConfig={"Delay": delay, "MaxAttempts": attempts}
            )
        except WaiterError as exc:
            raise CommandError(
                f"waiting for {what} (at most {self.wait_timeout_s:.0f}s): "
                f"{exc.kwargs.get('reason', exc)}"
            ) from None

    def retry(self, call: Callable[[], Any], codes: Sequence[str], what: str) -> None:
        """Retry `call` while AWS answers one of `codes` (a dependency is still
        there), bounded."""
        last: list[str] = []

        def attempt() -> bool:
            try:
                call()
            except ClientError as exc:
                if error_code(exc) not in codes:
                    raise
                last[:] = [short(exc)]
                return False
            return True

        self.poll(attempt, lambda: f"{what} ({last[0] if last else 'still in use'})")
