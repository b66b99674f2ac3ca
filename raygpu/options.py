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


def positive(name: str):
    """An argparse type: a number > 0, else an error naming the option."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name}: {text!r} is not a number"
            ) from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{name}: must be > 0, got {text}")
        return value

    return parse


def positive_int(name: str):
    """An argparse type: a whole number > 0, else an error naming the option."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name}: {text!r} is not a whole number"
            ) from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{name}: must be > 0, got {text}")
        return value

    return parse
