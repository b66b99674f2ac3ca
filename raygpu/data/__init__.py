"""`raygpu data push`: put raw data where a preparation job reads it.

    raygpu data push ./images --stack dev [--name cats]
    raygpu data push ./digits.csv.gz --to s3://bucket/raw/digits
    raygpu data push ./folder --to /srv/datasets/raw/folder

With --stack the destination is the stack's data bucket under raw/<name>/
(<name>: --name, else SRC's name), the prefix the cluster's role may read but
not write; the preparation job writes prepared/<name>/, which the role may
write. Uploads are parallel and multipart (boto3's transfer manager), each
object carries its SHA-256, `_raygpu_upload.json` lists them all; a rerun skips
what is already there (an interrupted push resumes) and refuses to replace other
content unless --force. Credentials are the operator's own (AWS_PROFILE or the
AWS_* variables), never printed.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from raygpu import options
from raygpu.data.push import (
    DEFAULT_CHUNK_MB,
    DEFAULT_WORKERS,
    Target,
    parse_target,
    push,
)
from raygpu.errors import UsageError
from raygpu.names import PREPARED_PREFIX, RAW_PREFIX

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "raygpu data push SRC (--stack NAME [--outputs FILE] [--name N] | --to URI) "
        "[--force] [--workers N] [--chunk-mb MB] [--json]; see raygpu data push "
        "--help"
    )
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = sub.add_parser(
        "push",
        help="upload a file or folder: checksummed, parallel, resumable",
        description="Upload a local file or folder to the stack's data bucket "
        f"({RAW_PREFIX}/<name>/) or to --to: SHA-256 per object, a rerun skips "
        "what is there, other content is refused unless --force.",
    )
    p.add_argument("src", metavar="SRC", type=Path, help="local file or folder")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--stack", metavar="NAME", help="the stack's data bucket")
    where.add_argument("--to", metavar="URI", help="s3://bucket/prefix or a folder")
    options.add_outputs(p)
    p.add_argument("--name", help=f"with --stack: {RAW_PREFIX}/NAME (SRC's name)")
    p.add_argument(
        "--force", action="store_true", help="replace objects with other content"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help=f"parallel transfers and hashing threads ({DEFAULT_WORKERS})",
    )
    p.add_argument(
        "--chunk-mb",
        type=int,
        default=DEFAULT_CHUNK_MB,
        help=f"multipart part size in MiB, at least 5 ({DEFAULT_CHUNK_MB})",
    )
    options.add_json(p)
    p.set_defaults(_parser=p)


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.outputs and not args.stack:
        parser.error("--outputs needs --stack")
    if args.name is not None and not args.stack:
        parser.error("--name goes with --stack (--to names the whole destination)")
    if args.name is not None and not NAME.fullmatch(args.name):
        parser.error(
            f"--name: {args.name!r} is not allowed; use 1-100 letters, digits, '.', "
            "'_' or '-', starting with a letter or digit"
        )
    if args.workers < 1:
        parser.error("--workers: must be at least 1")
    if args.chunk_mb < 5:
        parser.error("--chunk-mb: S3 parts are at least 5 MiB")


def default_name(src: Path) -> str:
    """SRC's name without file suffixes (digits.csv.gz -> digits)."""
    name = src.resolve().name
    stem = name.split(".", 1)[0] if src.is_file() else name
    if not NAME.fullmatch(stem or ""):
        raise UsageError(f"SRC's name {name!r} is no valid --name; give one")
    return stem


def stack_target(stack: str, outputs_file, name: str) -> tuple[Target, str, str]:
    """(raw target, prepared URI, region) in the stack's data bucket."""
    from raygpu.stack import load_outputs

    outputs = load_outputs(stack, outputs_file)
    bucket = str(outputs.require("data_bucket"))
    target = parse_target(f"s3://{bucket}/{RAW_PREFIX}/{name}")
    return target, f"s3://{bucket}/{PREPARED_PREFIX}/{name}", outputs.region


def run(args: argparse.Namespace) -> int:
    region = None
    prepared = None
    if args.stack:
        name = args.name or default_name(args.src)
        target, prepared, region = stack_target(args.stack, args.outputs, name)
    else:
        target = parse_target(args.to)
    say = (lambda _text: None) if args.json else print
    summary = push(
        args.src,
        target,
        force=args.force,
        workers=args.workers,
        chunk_mb=args.chunk_mb,
        region=region,
        say=say,
    )
    if args.json:
        print(json.dumps({**summary, "prepared": prepared}, indent=2))
        return 0
    print(
        f"pushed {target.uri}: {summary['uploaded']} uploaded "
        f"({summary['bytes_sent']} bytes), {summary['skipped']} already there; "
        f"manifest {summary['manifest']}"
    )
    if prepared:
        print(
            f"next: raygpu submit --stack {args.stack} -- python prepare.py "
            f"--format FORMAT --source {target.uri} --output {prepared}"
        )
    return 0
