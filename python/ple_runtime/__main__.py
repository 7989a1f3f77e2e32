"""Command line: ``python -m ple_runtime inspect FILE.ple [--no-verify-data]``."""

from __future__ import annotations

import argparse
import sys

from .format import FormatError, describe, read_header_and_meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ple_runtime", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    ins = sub.add_parser("inspect", help="validate a .ple file strictly and print a summary")
    ins.add_argument("path")
    ins.add_argument("--no-verify-data", action="store_true", help="skip the data CRC and padding checks")
    args = parser.parse_args(argv)
    try:
        pf = read_header_and_meta(args.path, verify_data=not args.no_verify_data)
    except (OSError, FormatError) as exc:
        print(f"{args.path}: {exc}", file=sys.stderr)
        return 1
    print(describe(pf))
    return 0


def inspect_main() -> int:
    """Entry point of the ``ple-inspect FILE`` console script."""
    return main(["inspect", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
