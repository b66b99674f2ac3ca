"""`raygpu dashboard --stack S`: Ray's dashboard on 127.0.0.1 through a
port-forward, open until Ctrl-C. The Ray head Service is ClusterIP only, so this is
the way in; the dashboard asks for Ray's token, which --show-token prints."""

from __future__ import annotations

import argparse
import threading

from raygpu import options

# What the forward waits on: Ctrl-C (KeyboardInterrupt) ends it; tests set it.
STOP = threading.Event()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_stack(parser)
    options.add_outputs(parser)
    parser.add_argument(
        "--show-token",
        action="store_true",
        help="print Ray's auth token too (the dashboard's login asks for it)",
    )


def run(args: argparse.Namespace) -> int:
    from raygpu.stack import load_outputs, stack_access

    outputs = load_outputs(args.stack, args.outputs)
    with stack_access(outputs) as (url, token, _kubectl):
        try:
            print(f"Ray dashboard of stack {args.stack}: {url}", flush=True)
            if token and args.show_token:
                print(f"Ray token: {token}", flush=True)
            elif token:
                print(
                    "it asks for Ray's token: `raygpu dashboard --stack "
                    f"{args.stack} --show-token` prints it",
                    flush=True,
                )
            print("press Ctrl-C to close the port-forward", flush=True)
            STOP.wait()
        except KeyboardInterrupt:
            pass
    print("port-forward closed", flush=True)
    return 0
