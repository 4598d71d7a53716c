"""`kerasdet autoanchor`: check a config's anchors against a dataset, learn better ones."""

from __future__ import annotations

import math
import os


def register(subparsers):
    parser = subparsers.add_parser(
        "autoanchor",
        help="measure how well anchors fit a dataset's boxes (BPR) and learn better ones",
        description=(
            "YOLOv5's autoanchor: the best possible recall (BPR) of the config's anchors on the "
            "training boxes (resized to the model input), and, if it is below the target, "
            "anchors learned by k-means and genetic refinement, kept only if they raise the "
            "BPR. Prints BPR before and after; --output writes the config with the learned "
            "anchors (model.anchors in zoo configs, else a top-level `anchors`)."
        ),
    )
    parser.add_argument(
        "--data",
        required=True,
        help="COCO json or folder, VOC folder, TFDS name (voc/2007, coco/2017) or shapes[/config]",
    )
    parser.add_argument("--split", default="train", help="split to measure (default: train)")
    parser.add_argument(
        "--config",
        default=None,
        help="model YAML config whose anchors and image size are used (zoo: model.anchors, "
        "model.image_size; else top-level anchors, image_size)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="model input size (default: the config's image_size)",
    )
    parser.add_argument(
        "--num-anchors",
        type=int,
        default=None,
        help="anchors to learn (default: as many as the config has)",
    )
    parser.add_argument(
        "--num-levels",
        type=int,
        default=None,
        help="levels for the learned anchors when the config has none (default 1)",
    )
    parser.add_argument("--threshold", type=float, default=4.0, help="side-ratio threshold (4.0)")
    parser.add_argument("--target-bpr", type=float, default=0.98, help="learn below this BPR (0.98)")
    parser.add_argument("--generations", type=int, default=1000, help="genetic generations (1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of k-means and evolution (0)")
    parser.add_argument("--force", action="store_true", help="learn even if the anchors fit")
    parser.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help="bad entries in COCO / VOC data: stop (default) or skip the images",
    )
    parser.add_argument(
        "--check-images",
        choices=("decode", "header"),
        default="header",
        help="image check for COCO / VOC data (default header: sizes only, no decoding)",
    )
    parser.add_argument(
        "--output",
        default=None,
        help="if new anchors were learned, write the config with them here (may be --config)",
    )
    return parser


def _fmt(value):
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def run(args) -> int:
    from kerasdet.anchors import (
        autoanchor,
        read_config_anchors,
        read_config_image_size,
        write_anchors_to_config,
    )
    from kerasdet.data import box_sizes

    anchors = image_size = None
    if args.config is not None:
        anchors = read_config_anchors(args.config)
        image_size = read_config_image_size(args.config)
    if args.image_size is not None:
        image_size = tuple(args.image_size)
    if image_size is None:
        raise ValueError("give --image-size H W (or a config with `image_size: [H, W]`)")
    if anchors is None and args.num_anchors is None:
        raise ValueError("the config has no `anchors`: give --num-anchors to learn some")

    # The folder readers' options; TFDS names and shapes take none.
    reader = (
        {"on_error": args.on_error, "check_images": args.check_images}
        if os.path.exists(args.data)
        else {}
    )
    wh = box_sizes(args.data, args.split, image_size=image_size, **reader)
    result = autoanchor(
        wh,
        anchors,
        num_anchors=args.num_anchors,
        num_levels=args.num_levels,
        threshold=args.threshold,
        target_bpr=args.target_bpr,
        force=args.force,
        generations=args.generations,
        seed=args.seed,
    )
    h, w = image_size
    print(f"autoanchor: {result.num_boxes} boxes of {args.data} ({args.split}) at {h}x{w}")
    print(
        f"autoanchor: BPR before {_fmt(result.bpr_before)} "
        f"({_fmt(result.aat_before)} anchors/box above threshold {args.threshold:g})"
    )
    if result.learned is None:
        print(f"autoanchor: the anchors fit (BPR >= {args.target_bpr:g}); nothing learned")
    elif result.replaced:
        print(f"autoanchor: learned anchors raise the BPR to {_fmt(result.bpr_learned)}")
    else:
        print(
            f"autoanchor: learned anchors reach BPR {_fmt(result.bpr_learned)}, no better: "
            "keeping the current ones"
        )
    print(
        f"autoanchor: BPR after {_fmt(result.bpr_after)} "
        f"({_fmt(result.aat_after)} anchors/box above threshold)"
    )
    print(f"anchors: {result.anchors}")
    if args.output is not None:
        if result.replaced:
            source = args.config if args.config is not None else args.output
            write_anchors_to_config(source, result.anchors, output=args.output)
            print(f"autoanchor: wrote the learned anchors to {args.output}")
        else:
            # Rewriting unchanged anchors would only turn sizes x ratios into (w, h) lists.
            print(f"autoanchor: anchors unchanged; nothing written to {args.output}")
    return 0
