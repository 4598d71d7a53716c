"""`kerasdet evaluate CONFIG`: COCO AP of a model's weights on a dataset split.

`--data` takes what `kerasdet train --data` takes (COCO json file or folder, VOC folder, TFDS
name, `shapes[/CONFIG]`); the per-class table uses the data's class names.
"""

from __future__ import annotations

import json
import sys

from kerasdet.cli.train import DATA_HELP, ON_ERROR_HELP, non_negative_int, positive_int


def default_weights(config, weights):
    """`weights` if given, else the configuration's first weights entry."""
    if weights is not None:
        return weights
    if config.weights:
        return next(iter(config.weights))
    raise ValueError(
        f"{config.name!r} has no weights entry: pass --weights NAME|PATH (a .weights.h5 or "
        "the NAME.yaml that kerasdet train writes)"
    )


def register(subparsers):
    parser = subparsers.add_parser(
        "evaluate",
        help="COCO AP of a model on a dataset split (pycocotools' table)",
        description=(
            "Runs the model over a dataset split and prints COCO detection metrics "
            "(AP@[.5:.95], AP50, AP75, by object size, AR) computed by pycocotools."
        ),
    )
    parser.add_argument("config", help="zoo name or YAML path (e.g. the NAME.yaml kerasdet train wrote)")
    parser.add_argument("--weights", default=None,
                        help="an entry of the config or a .weights.h5/.keras path (default: the config's first entry)")
    parser.add_argument("--data", default=None, help=DATA_HELP)
    parser.add_argument("--split", default="validation",
                        help="split of the data (default: validation; COCO / VOC folders also find val or valid)")
    parser.add_argument("--on-error", choices=("raise", "skip"), default="raise", help=ON_ERROR_HELP)
    parser.add_argument("--max-images", type=non_negative_int, default=None, help="first N images (default: all)")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--per-class", action="store_true", help="also print AP per class")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the metrics to FILE")
    return parser


def run(args) -> int:
    from kerasdet.cli.train import _load_data, graph_errors_as_value_errors
    from kerasdet.metrics import COCOEvaluator
    from kerasdet.zoo.api import _load
    from kerasdet.zoo.config import get_config

    config = get_config(args.config)
    loaded = _load(config, weights=default_weights(config, args.weights))
    source = args.data or config.train["dataset"]
    data = _load_data(source, args.split, image_size=loaded.config.model["image_size"],
                      batch_size=args.batch_size, max_images=args.max_images or None, on_error=args.on_error)
    if loaded.num_classes != len(data.class_names):
        raise ValueError(
            f"the model has {loaded.num_classes} classes but {source!r} has {len(data.class_names)} "
            f"({', '.join(data.class_names)})"
        )
    if loaded.class_names is not None and tuple(loaded.class_names) != tuple(data.class_names):
        # Same count, other names: likely another class order, which makes the metrics wrong.
        print(f"kerasdet evaluate: warning: the weights' classes ({', '.join(loaded.class_names)}) are not "
              f"the data's ({', '.join(data.class_names)}); class ids are compared as they are", file=sys.stderr)
    evaluator = COCOEvaluator(class_names=list(data.class_names), per_class=args.per_class)
    with graph_errors_as_value_errors():
        evaluator.update_from_model(loaded.model, data.dataset)
    result = evaluator.result()
    print(evaluator.summary.rstrip())
    print(f"{loaded.config.name} on {source} {args.split} ({evaluator.num_images} images): "
          f"AP {result['AP']:.3f}, AP50 {result['AP50']:.3f}, AP75 {result['AP75']:.3f}")
    if args.per_class:
        for name in data.class_names:
            print(f"  AP {name}: {result[f'AP/{name}']:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": loaded.config.name, "data": source, "split": args.split,
                       "images": evaluator.num_images,
                       # NaN (nothing to measure) is not JSON: null instead.
                       "metrics": {k: (None if v != v else v) for k, v in result.items()}}, f, indent=1)
    return 0
