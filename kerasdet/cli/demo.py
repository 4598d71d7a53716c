"""`kerasdet demo`: the bundled detector end to end (`--layers`: the foundation layers)."""

from __future__ import annotations

from kerasdet.cli.train import non_negative_int, positive_int
from kerasdet.demo.detector import DEFAULT_NUM_IMAGES as _IMAGES
from kerasdet.demo.detector import DEFAULT_SEED as _SEED

# Option defaults are applied in `run`, not by argparse, so that an option of one demo given
# to the other is an error rather than silently ignored.
_LAYERS_IMAGE_SIZE = (320, 480)


def register(subparsers):
    parser = subparsers.add_parser(
        "demo",
        help="detect on fresh synthetic images with the bundled weights, print the AP, "
             "export TFLite and check it agrees (offline)",
        description=(
            "Loads faster_rcnn_tiny with its bundled 'shapes' weights, detects on fresh synthetic "
            "images of the kerasdet_shapes validation distribution (a random stream neither the "
            "train nor the validation split uses), prints COCO AP / AP50 / AP75, writes the "
            "annotated images as one PNG grid, exports a float32 TFLite file, runs it with LiteRT "
            "and checks that every Keras detection scoring >= 0.3 has a TFLite detection of its "
            "class with IoU >= 0.9 and |score difference| <= 0.02 (exit code 1 if not). "
            "No network needed. With --layers: the older foundation-layers demo instead (a small "
            "untrained two-stage graph built from every layer, and its TFLite parity)."
        ),
    )
    parser.add_argument("--images", type=positive_int, default=None, metavar="N",
                        help=f"fresh synthetic images to detect on (default {_IMAGES})")
    parser.add_argument("--seed", type=non_negative_int, default=None,
                        help=f"which images: image i is drawn from default_rng([SEED, 2, i]) (default {_SEED})")
    parser.add_argument("--output-dir", default=None, metavar="DIR",
                        help="write kerasdet_demo.png and faster_rcnn_tiny.tflite here (default: the PNG "
                             "in the current directory, the .tflite file in a temporary directory)")
    layers = parser.add_argument_group("foundation-layers demo")
    layers.add_argument("--layers", action="store_true",
                        help="run the foundation-layers demo (random weights) instead")
    layers.add_argument("--image-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help=f"--layers image size (default {_LAYERS_IMAGE_SIZE[0]} {_LAYERS_IMAGE_SIZE[1]})")
    layers.add_argument("--output", default=None, metavar="FILE", help="--layers: also write the .tflite file here")
    return parser


def _given(args, names) -> list:
    return [f"--{name.replace('_', '-')}" for name in names if getattr(args, name) is not None]


def run(args) -> int:
    if args.layers:
        from kerasdet.demo.layers import run_layers_demo

        given = _given(args, ("images", "seed", "output_dir"))
        if given:
            raise ValueError(f"{' and '.join(given)} belong to the detector demo: drop --layers")
        size = _LAYERS_IMAGE_SIZE if args.image_size is None else tuple(args.image_size)
        return run_layers_demo(image_size=size, output=args.output)
    given = _given(args, ("image_size", "output"))
    if given:
        raise ValueError(
            f"{' and '.join(given)} belong to the foundation-layers demo: add --layers "
            "(the detector demo writes its files to --output-dir)"
        )
    from kerasdet.demo.detector import run_demo

    return run_demo(
        num_images=_IMAGES if args.images is None else args.images,
        seed=_SEED if args.seed is None else args.seed,
        output_dir=args.output_dir,
    )
