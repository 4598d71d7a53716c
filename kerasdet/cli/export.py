"""`kerasdet export`: a saved detector → SavedModel or builtin-ops TFLite file."""

from __future__ import annotations

import os

FORMAT_CHOICES = ("saved_model", "tflite")
QUANTIZATION_CHOICES = ("float16", "dynamic_int8", "int8")
REPRESENTATIVE_SOURCES = ("shapes",)


def register(subparsers):
    parser = subparsers.add_parser(
        "export",
        help="export a detector as a SavedModel or a TFLite file (optionally quantized)",
        description=(
            "Exports a kerasdet detector. Both formats take uint8 [B, H, W, 3] RGB images and "
            "return boxes, scores, classes and num_detections; the TFLite file uses builtin "
            "ops only and runs with kerasdet.lite.TFLiteDetector."
        ),
    )
    parser.add_argument("--model", required=True, help="the detector: a .keras file (model.save)")
    parser.add_argument("--output", required=True, help="output directory (SavedModel) or .tflite file")
    parser.add_argument(
        "--format", choices=FORMAT_CHOICES, default=None,
        help="default: tflite if --output ends with .tflite, else saved_model",
    )
    parser.add_argument(
        "--input-size", type=int, nargs=2, default=None, metavar=("H", "W"),
        help="input size; needed for TFLite when the model takes any size",
    )
    parser.add_argument("--quantization", choices=QUANTIZATION_CHOICES, default=None, help="TFLite only; default float32")
    parser.add_argument(
        "--representative-data", choices=REPRESENTATIVE_SOURCES, default=None,
        help="calibration images for --quantization int8: 'shapes' = 100 training images of "
        "the built-in synthetic kerasdet_shapes set",
    )
    parser.add_argument("--class-names", nargs="+", default=None, metavar="NAME", help="names of the classes, by id")
    parser.add_argument(
        "--head-svd-rank", type=int, nargs="+", default=None, metavar="T",
        help="Faster R-CNN only: before export, factorize the RoI head's first FC layer as a "
        "rank-T truncated SVD (Fast R-CNN §3.1; smaller and faster, slightly less accurate). "
        "Several values: one per FC layer, 0 keeps a layer",
    )
    return parser


def head_svd_ranks(values):
    """`--head-svd-rank` values as the `rank` of `truncate_head_svd`: one value is the
    first FC layer's rank; several are one per FC layer, 0 meaning "keep"."""
    if len(values) == 1:
        return values[0]
    return [None if v == 0 else v for v in values]


def load_model_source(name_or_path: str):
    """The Keras model `--model` names. Today a `.keras` file; the model zoo will add names
    here."""
    import keras

    import kerasdet  # noqa: F401  (TF backend, registers kerasdet's layers for loading)

    if not os.path.exists(name_or_path):
        raise FileNotFoundError(f"--model: no file {name_or_path!r}; expected a .keras file saved with model.save")
    if not name_or_path.endswith(".keras"):
        raise ValueError(f"--model: expected a .keras file saved with model.save, got {name_or_path!r}")
    return keras.saving.load_model(name_or_path, compile=False)


def representative_images(source: str, count: int = 100):
    """Calibration images for int8: the first `count` training images of `source`."""
    if source != "shapes":
        raise ValueError(f"--representative-data must be one of {REPRESENTATIVE_SOURCES}, got {source!r}")
    # make_example yields exactly what the kerasdet_shapes TFDS builder writes, without
    # building the dataset on disk first.
    from kerasdet.data.shapes import make_example

    return (make_example("train", i)["image"] for i in range(count))


def run(args) -> int:
    import time

    from kerasdet.export import export

    output_format = args.format or ("tflite" if args.output.endswith(".tflite") else "saved_model")
    if args.representative_data is not None and args.quantization != "int8":
        raise ValueError("--representative-data is used with --quantization int8 only")
    if args.quantization == "int8" and args.representative_data is None:
        raise ValueError("--quantization int8 needs calibration images: add --representative-data shapes")
    model = load_model_source(args.model)
    if args.head_svd_rank is not None:
        from kerasdet.models import FasterRCNN, truncate_head_svd

        if not isinstance(model, FasterRCNN):
            raise ValueError(f"--head-svd-rank applies to a FasterRCNN, got a {type(model).__name__} from {args.model!r}")
        model = truncate_head_svd(model, head_svd_ranks(args.head_svd_rank))
    data = representative_images(args.representative_data) if args.representative_data else None
    start = time.perf_counter()
    path = export(
        model, args.output, output_format,
        input_size=tuple(args.input_size) if args.input_size else None,
        quantization=args.quantization,
        representative_data=data,
        class_names=args.class_names,
    )
    seconds = time.perf_counter() - start
    size = _size(path)
    print(
        f"wrote {path} ({output_format}, {args.quantization or 'float32'}, "
        f"{size / 1e6:.2f} MB) in {seconds:.1f} s"
    )
    return 0


def _size(path) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)
