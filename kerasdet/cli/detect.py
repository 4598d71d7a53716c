"""`kerasdet detect CONFIG IMAGE...`: detections drawn on each image (PNG) and as JSON."""

from __future__ import annotations

import json
import os

from kerasdet.cli.evaluate import default_weights
from kerasdet.cli.train import positive_int


def register(subparsers):
    parser = subparsers.add_parser(
        "detect",
        help="detect objects in image files: annotated PNG + JSON per image",
        description=(
            "Runs a model on image files (PNG, JPEG, GIF, BMP). Each image is letterboxed into "
            "the model's input size; the detections are mapped back to the image's pixels and "
            "written as OUTPUT/STEM.png (boxes, class names, scores) and OUTPUT/STEM.json."
        ),
    )
    parser.add_argument("config", help="zoo name or YAML path (e.g. the NAME.yaml kerasdet train wrote)")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--weights", default=None,
                        help="an entry of the config or a .weights.h5/.keras path (default: the config's first entry)")
    parser.add_argument("--output", "-o", default="detections", help="output directory (default: detections)")
    parser.add_argument("--score-threshold", type=float, default=0.5, help="keep detections scoring at least this")
    parser.add_argument("--class-names", default=None, help="comma-separated names by class id (default: the weights')")
    parser.add_argument("--grid", default=None, metavar="FILE", help="also write all annotated images as one PNG grid")
    parser.add_argument("--batch-size", type=positive_int, default=4)
    return parser


def letterbox(image, size):
    """Resizes `image` to fit `size` keeping its aspect ratio (height / width) and pads
    the bottom / right with zeros, as `kerasdet.data.detection_dataset` does.

    Returns:
        `(float32 [H, W, 3], (sy, sx))`, the resize factors per axis.
    """
    import numpy as np
    import tensorflow as tf

    height, width = size
    h, w = image.shape[:2]
    scale = min(height / h, width / w)
    new_h = min(max(round(h * scale), 1), height)
    new_w = min(max(round(w * scale), 1), width)
    resized = tf.image.resize(image, (new_h, new_w), method="bilinear").numpy()
    out = np.zeros([height, width, 3], np.float32)
    out[:new_h, :new_w] = resized
    return out, (new_h / h, new_w / w)


def _unique_stems(paths):
    stems, used = [], {}
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        count = used.get(stem, 0)
        used[stem] = count + 1
        stems.append(stem if count == 0 else f"{stem}_{count}")
    return stems


def run(args) -> int:
    import numpy as np

    from kerasdet import visualize
    from kerasdet.zoo.api import _load
    from kerasdet.zoo.config import get_config

    if not 0.0 <= args.score_threshold <= 1.0:
        raise ValueError(f"--score-threshold must be in [0, 1], got {args.score_threshold}")
    images = [visualize.read_image(path) for path in args.images]  # fail before building the model
    config = get_config(args.config)
    loaded = _load(config, weights=default_weights(config, args.weights))
    names = loaded.class_names
    if args.class_names:
        names = tuple(n.strip() for n in args.class_names.split(","))
        if len(names) != loaded.num_classes:
            raise ValueError(f"--class-names lists {len(names)} names, the model has {loaded.num_classes} classes")
    names = names or tuple(str(k) for k in range(loaded.num_classes))
    size = loaded.config.model["image_size"]

    os.makedirs(args.output, exist_ok=True)
    drawn_all = []
    stems = _unique_stems(args.images)
    for start in range(0, len(images), args.batch_size):
        chunk = images[start : start + args.batch_size]
        boxed = [letterbox(image, size) for image in chunk]
        detections = loaded.model.predict_on_batch(np.stack([b[0] for b in boxed]))
        detections = {k: np.asarray(v) for k, v in detections.items()}
        for i, (image, (_, (sy, sx))) in enumerate(zip(chunk, boxed)):
            n = int(detections["num_detections"][i])
            scores = detections["scores"][i, :n]
            keep = scores >= args.score_threshold
            boxes = detections["boxes"][i, :n][keep] / np.array([sy, sx, sy, sx], np.float32)
            h, w = image.shape[:2]
            boxes = np.clip(boxes, 0, [h, w, h, w])
            classes, scores = detections["classes"][i, :n][keep], scores[keep]
            drawn = visualize.draw_detections(
                image, {"boxes": boxes, "scores": scores, "classes": classes}, class_names=names
            )
            index = start + i
            png = os.path.join(args.output, f"{stems[index]}.png")
            visualize.save_png(png, drawn)
            record = {
                "image": args.images[index],
                "height": h,
                "width": w,
                "box_format": "yxyx pixels [y1, x1, y2, x2]; bbox is COCO [x, y, width, height]",
                "detections": [
                    {
                        "class_id": int(c),
                        "class": names[int(c)],
                        "score": round(float(s), 4),
                        "box": [round(float(v), 2) for v in b],
                        "bbox": [round(float(v), 2) for v in (b[1], b[0], b[3] - b[1], b[2] - b[0])],
                    }
                    for b, s, c in zip(boxes, scores, classes)
                ],
            }
            with open(os.path.join(args.output, f"{stems[index]}.json"), "w") as f:
                json.dump(record, f, indent=1)
            print(f"{args.images[index]}: {len(record['detections'])} detections → {png}")
            drawn_all.append(drawn)
    if args.grid:
        visualize.save_png(args.grid, visualize.make_grid(drawn_all))
        print(f"grid: {args.grid}")
    return 0
