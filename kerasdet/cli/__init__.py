"""The `kerasdet` command.

Each subcommand lives in its own module of this package and exposes two functions:
`register(subparsers)`, which adds its `argparse` parser, and `run(args) -> int`. Adding a
command means adding a module and listing it in `_COMMANDS`.

User errors (`ValueError` and its subclasses, `FileNotFoundError`, `FileExistsError`) are printed
as one line `kerasdet <command>: error: <reason>` with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Module names under `kerasdet.cli`, in the order `kerasdet --help` lists them.
_COMMANDS = ("demo", "zoo", "train", "evaluate", "detect", "export", "autoanchor")

# Exceptions that mean "the user asked for something wrong", reported in one line.
_USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kerasdet",
        description="Object detectors as native Keras 3 models (Faster R-CNN, OverFeat).",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        module = importlib.import_module(f"kerasdet.cli.{name}")
        sub = module.register(subparsers)
        sub.set_defaults(_run=module.run)
    return parser


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def main(argv=None) -> int:
    # TensorFlow's C++ start-up chatter is noise for a command-line user.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = _parser()
    args = parser.parse_args(argv)
    if args.version:
        from kerasdet import __version__

        print(__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except _USER_ERRORS as error:
        print(f"kerasdet {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
