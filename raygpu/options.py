"""Options the commands share, each defined once.

`raygpu.cli` builds one subparser per command from the command module's
`add_arguments(parser)`; the modules call these helpers for the options they take.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_stack(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "--stack",
        required=required,
        metavar="NAME",
        help="stack name (its config is Pulumi.NAME.yaml)",
    )


def add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="stack file to use instead of Pulumi.<stack>.yaml",
    )


def add_outputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--outputs",
        type=Path,
        metavar="FILE",
        help="the stack's outputs as JSON (`pulumi stack output --json "
        "--show-secrets`) instead of asking the Pulumi CLI",
    )


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print the result as one JSON document"
    )


def add_cluster_target(parser: argparse.ArgumentParser, address_help: str) -> None:
    """--stack NAME [--outputs FILE] | --address URL: which Ray cluster to use."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--stack", metavar="NAME", help="the stack whose Ray cluster to use"
    )
    where.add_argument("--address", metavar="URL", help=address_help)
    add_outputs(parser)


def check_cluster_target(parser: argparse.ArgumentParser, args) -> None:
    if args.outputs and not args.stack:
        parser.error("--outputs needs --stack")


def _number(name: str, convert, noun: str, minimum: float, inclusive: bool):
    """An argparse type: a `convert`ed number above `minimum` (or at it when
    `inclusive`), else an error naming the option."""
    bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name}: {text!r} is not {noun}"
            ) from None
        if not (value >= minimum if inclusive else value > minimum):
            raise argparse.ArgumentTypeError(f"{name}: must be {bound}, got {text}")
        return value

    return parse


def positive(name: str):
    """A number > 0."""
    return _number(name, float, "a number", 0, inclusive=False)


def positive_int(name: str):
    """A whole number > 0."""
    return _number(name, int, "a whole number", 0, inclusive=False)


def non_negative(name: str):
    """A number >= 0."""
    return _number(name, float, "a number", 0, inclusive=True)


def non_negative_int(name: str):
    """A whole number >= 0."""
    return _number(name, int, "a whole number", 0, inclusive=True)


def add_autoscaling(parser: argparse.ArgumentParser) -> None:
    """Serve autoscaling bounds; unset ones take the app's own defaults."""
    group = parser.add_argument_group(
        "Serve autoscaling (any of these turns it on; the rest keep the app's defaults)"
    )
    group.add_argument(
        "--min-replicas",
        type=non_negative_int("--min-replicas"),
        metavar="N",
        help="0 scales to zero",
    )
    group.add_argument(
        "--max-replicas", type=positive_int("--max-replicas"), metavar="N"
    )
    group.add_argument(
        "--target-ongoing-requests",
        type=positive("--target-ongoing-requests"),
        metavar="N",
        help="requests in flight per replica that Serve sizes for",
    )
    group.add_argument(
        "--downscale-delay",
        type=non_negative("--downscale-delay"),
        metavar="S",
        help="seconds a lower replica count must hold before Serve scales down",
    )


AUTOSCALING_FLAGS = {
    "min_replicas": "min_replicas",
    "max_replicas": "max_replicas",
    "target_ongoing_requests": "target_ongoing_requests",
    "downscale_delay": "downscale_delay_s",
}


def autoscaling_given(args: argparse.Namespace) -> dict[str, float]:
    """The autoscaling flags given, by Serve's field names ({} when none)."""
    return {
        field: getattr(args, dest)
        for dest, field in AUTOSCALING_FLAGS.items()
        if getattr(args, dest, None) is not None
    }
