"""`python -m raygpu.config [--write]`: print the config table, or rewrite it
inside docs/config.md."""

from __future__ import annotations

import argparse

from raygpu.config.table import DOC, config_table, with_tables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raygpu.config")
    parser.add_argument("--write", action="store_true", help=f"rewrite {DOC}")
    args = parser.parse_args(argv)
    if args.write:
        DOC.write_text(with_tables(DOC.read_text()))
    else:
        print(config_table(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
