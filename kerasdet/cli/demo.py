"""`kerasdet demo`."""

from __future__ import annotations


def register(subparsers):
    parser = subparsers.add_parser(
        "demo",
        help="run the foundation layers end to end on a synthetic image and check TFLite parity",
        description=(
            "Builds a small two-stage graph from kerasdet's layers (anchors, RPN head, RoI "
            "pooling, FC-as-conv head, NMS and greedy merge), runs it on a synthetic image, "
            "converts it to a builtin-ops-only TFLite file and checks LiteRT agrees."
        ),
    )
    parser.add_argument("--image-size", type=int, nargs=2, default=(320, 480), metavar=("H", "W"))
    parser.add_argument("--output", default=None, help="also write the .tflite file here")
    return parser


def run(args) -> int:
    from kerasdet.demo import run_demo

    return run_demo(image_size=tuple(args.image_size), output=args.output)
