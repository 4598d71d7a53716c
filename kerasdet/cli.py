"""The `kerasdet` command."""

from __future__ import annotations

import argparse
import os
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kerasdet",
        description="Object detectors as native Keras 3 models (Faster R-CNN, OverFeat).",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run the foundation layers end to end on a synthetic image and check TFLite parity",
        description=(
            "Builds a small two-stage graph from kerasdet's layers (anchors, RPN head, RoI "
            "pooling, FC-as-conv head, NMS and greedy merge), runs it on a synthetic image, "
            "converts it to a builtin-ops-only TFLite file and checks LiteRT agrees."
        ),
    )
    demo.add_argument("--image-size", type=int, nargs=2, default=(320, 480), metavar=("H", "W"))
    demo.add_argument("--output", default=None, help="also write the .tflite file here")
    return parser


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
        if args.command == "demo":
            from kerasdet.demo import run_demo

            return run_demo(image_size=tuple(args.image_size), output=args.output)
    except ValueError as error:  # user errors: one line, no traceback
        print(f"kerasdet {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
