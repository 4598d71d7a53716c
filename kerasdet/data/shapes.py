"""`kerasdet_shapes`: a synthetic detection dataset that needs no network.

Coloured circles, squares, triangles, ellipses and rectangles of varied sizes and aspect
ratios (aspect ratio = height / width) on textured backgrounds (gradients, stripes,
checkerboards, smooth noise, pixel noise); 0–`max_objects` shapes per image, about 5 % of
the images empty. Shapes may overlap, but every shape keeps at least half of its pixels
visible. Colour is random and says nothing about the class: only the shape does.

Two ways to use it:

* Plain Python, no TFDS: `generate_example(rng, height, width, ...)` returns one image with
  its boxes (`yxyx` pixels, the package convention) and classes.
* A TFDS builder, registered when `kerasdet.data` is imported::

      import kerasdet.data  # registers the builder
      ds = tfds.load("kerasdet_shapes", split="train", data_dir=...)       # 256x256
      ds = tfds.load("kerasdet_shapes/small", split="validation")          # 128x128

  Configs: `default` (256x256, 2000 train / 300 validation, JPEG, ~50 MB, ~45 s to
  build on one core), `small` (128x128, same sizes, JPEG), `tiny` (64x64, 32 / 8, PNG, for
  smoke tests). Examples follow the TFDS detection schema
  of `voc/2007` / `coco/2017`: `image` uint8 `[H, W, 3]`, `image/id`, `image/filename`,
  `objects/bbox` normalized `[ymin, xmin, ymax, xmax]`, `objects/label` (`ClassLabel`).

Everything is deterministic: example `i` of a split is drawn from
`np.random.default_rng([config.seed, split_id, i])`, so it is the same in every run and
independent of generation order (see `make_example`).

Boxes are the tight box of the painted pixels of the whole shape (amodal: a shape partly
covered by a later one keeps the box of its full outline), in pixel-edge coordinates:
a shape painting rows `r0..r1` has `y1 = r0`, `y2 = r1 + 1`.
"""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from kerasdet.boxes.formats import convert_format
from kerasdet.data import drawing

CLASS_NAMES = drawing.SHAPE_KINDS  # ("circle", "square", "triangle", "ellipse", "rectangle")
BACKGROUNDS = ("textured", "plain")
_SPLIT_IDS = {"train": 0, "validation": 1}
# Aspect ratio (height / width, or its inverse) ranges per class: circles and squares are
# exactly 1, ellipses and rectangles are clearly elongated so the classes do not overlap.
_ELONGATION = {
    "circle": (1.0, 1.0),
    "square": (1.0, 1.0),
    "triangle": (1.0, 2.0),
    "ellipse": (1.5, 3.0),
    "rectangle": (1.5, 3.0),
}


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}")


def _sample_size(rng, kind, min_size, max_size):
    lo, hi = _ELONGATION[kind]
    elongation = float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if hi > lo else 1.0
    short_hi = max(float(min_size), max_size / elongation)
    short = float(np.exp(rng.uniform(np.log(min_size), np.log(short_hi))))
    long = min(short * elongation, float(max_size))
    if kind in ("circle", "square"):
        return int(round(short)), int(round(short))
    if rng.random() < 0.5:
        short, long = long, short
    return int(round(short)), int(round(long))


def generate_example(
    rng,
    height: int = 256,
    width: int = 256,
    *,
    num_objects: int | None = None,
    classes=None,
    max_objects: int = 6,
    min_size: int = 12,
    max_size: int = 120,
    empty_prob: float = 0.05,
    background: str = "textured",
    noise: float | None = None,
    min_visible: float = 0.5,
    max_tries: int = 50,
    return_masks: bool = False,
) -> dict:
    """Draws one synthetic detection example with NumPy.

    Args:
        rng: a `np.random.Generator` (or an int seed). The example is a pure function of it.
        height, width: image size in pixels.
        num_objects: how many shapes to draw; default: 0 with probability `empty_prob`,
            otherwise uniform in `1..max_objects`.
        classes: optional sequence of class ids (indices into `CLASS_NAMES`) to draw, in that
            order; overrides `num_objects`.
        max_objects: upper bound of the random object count.
        min_size, max_size: range of each box side in pixels (sizes are log-uniform; the
            shorter side of elongated shapes is at least `min_size`).
        empty_prob: probability of an image without objects (when `num_objects` and
            `classes` are None).
        background: `"textured"` (gradient / stripes / checkerboard + smooth noise) or
            `"plain"` (one flat colour; with `noise=0` every shape is an exact colour mask).
        noise: standard deviation of the Gaussian pixel noise added to the whole image;
            default random in [0, 8] for textured backgrounds, 0 for plain ones.
        min_visible: every shape keeps at least this fraction of its pixels visible; a
            placement that would hide more of an earlier shape is retried elsewhere.
        max_tries: placement attempts per shape; a shape that finds no room is left out
            (so crowded images may hold fewer shapes than asked).
        return_masks: also return `"masks"`, bool `[N, H, W]` full (amodal) shape masks.

    Returns:
        dict with `"image"` uint8 `[H, W, 3]`, `"boxes"` float32 `[N, 4]` `yxyx` pixels (tight
        box of each shape's painted pixels, pixel-edge coordinates), `"classes"` int32 `[N]`
        (indices into `CLASS_NAMES`), and `"masks"` if asked.
    """
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    _check_int("height", height, 1)
    _check_int("width", width, 1)
    _check_int("min_size", min_size, 1)
    _check_int("max_size", max_size, min_size)
    _check_int("max_objects", max_objects, 0)
    if max_size > min(height, width):
        raise ValueError(
            f"`max_size` must be <= min(height, width)={min(height, width)}, got {max_size}"
        )
    if background not in BACKGROUNDS:
        raise ValueError(f"`background` must be one of {BACKGROUNDS}, got {background!r}")
    if classes is not None:
        classes = [int(c) for c in classes]
        bad = [c for c in classes if not 0 <= c < len(CLASS_NAMES)]
        if bad:
            raise ValueError(
                f"`classes` must be ids in [0, {len(CLASS_NAMES)}) for {CLASS_NAMES}, got {bad}"
            )
    elif num_objects is not None:
        _check_int("num_objects", num_objects, 0)

    if background == "textured":
        image = drawing.textured_background(rng, height, width)
    else:
        image = drawing.plain_background(rng, height, width)

    if classes is None:
        if num_objects is None:
            num_objects = 0 if rng.random() < empty_prob else int(rng.integers(1, max_objects + 1))
        classes = [int(c) for c in rng.integers(0, len(CLASS_NAMES), size=num_objects)]

    owner = np.full((height, width), -1, np.int32)  # which shape is on top of each pixel
    areas, visible, boxes, kept, masks = [], [], [], [], []
    for cls in classes:
        kind = CLASS_NAMES[cls]
        for _ in range(max_tries):
            h, w = _sample_size(rng, kind, min_size, max_size)
            y0 = int(rng.integers(0, height - h + 1))
            x0 = int(rng.integers(0, width - w + 1))
            mask = drawing.shape_mask(rng, kind, h, w)
            window = owner[y0 : y0 + h, x0 : x0 + w]
            covered = window[mask]
            lost = np.bincount(covered[covered >= 0], minlength=len(areas))
            if all(visible[i] - lost[i] >= min_visible * areas[i] for i in range(len(areas))):
                break
        else:
            continue  # no room for this shape
        region = image[y0 : y0 + h, x0 : x0 + w]
        under = region[mask].mean(axis=0)
        for _ in range(20):  # a colour that stands out from what it covers
            colour = drawing.random_colour(rng)
            if np.linalg.norm(colour - under) >= 80.0:
                break
        region[mask] = colour
        for i, n in enumerate(lost):
            visible[i] -= int(n)
        window[mask] = len(areas)
        area = int(mask.sum())
        areas.append(area)
        visible.append(area)
        by1, bx1, by2, bx2 = drawing.tight_box(mask)
        boxes.append([y0 + by1, x0 + bx1, y0 + by2, x0 + bx2])
        kept.append(cls)
        if return_masks:
            full = np.zeros((height, width), bool)
            full[y0 : y0 + h, x0 : x0 + w] = mask
            masks.append(full)

    sigma = (rng.uniform(0.0, 8.0) if background == "textured" else 0.0) if noise is None else noise
    if sigma > 0:
        image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma)
    out = {
        "image": np.ascontiguousarray(np.clip(np.round(image), 0, 255).astype(np.uint8)),
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
        "classes": np.asarray(kept, np.int32),
    }
    if return_masks:
        out["masks"] = np.asarray(masks, bool).reshape(-1, height, width)
    return out


@dataclasses.dataclass(eq=False)
class ShapesConfig(tfds.core.BuilderConfig):
    """Configuration of `kerasdet_shapes`: image size, split sizes, object sizes.

    Attributes:
        height, width: image size in pixels.
        train_size, validation_size: number of examples per split.
        min_size, max_size: box side range in pixels.
        max_objects: at most this many shapes per image.
        empty_prob: fraction of images without objects.
        seed: base seed; example `i` of split `s` uses `default_rng([seed, split_id, i])`.
        encoding: image encoding on disk, `"jpeg"` (default; ~22 kB per 256x256 image) or
            `"png"` (lossless, ~100 kB: pixel noise does not compress). The boxes are exact
            either way: they come from the shape masks, not from the decoded pixels.
    """

    height: int = 256
    width: int = 256
    train_size: int = 2000
    validation_size: int = 300
    min_size: int = 12
    max_size: int = 120
    max_objects: int = 6
    empty_prob: float = 0.05
    seed: int = 0
    encoding: str = "jpeg"

    def generate(self, rng) -> dict:
        """One example drawn from `rng` with this config's image and object settings, as
        `generate_example` returns it."""
        return generate_example(
            rng,
            self.height,
            self.width,
            max_objects=self.max_objects,
            min_size=self.min_size,
            max_size=self.max_size,
            empty_prob=self.empty_prob,
        )


def shapes_config(config: ShapesConfig | str = "default") -> ShapesConfig:
    """The builder config named `config` (`"default"`, `"small"`, `"tiny"`), or `config`
    itself when it is already a `ShapesConfig`."""
    if not isinstance(config, str):
        return config
    names = {c.name: c for c in KerasdetShapes.BUILDER_CONFIGS}
    if config not in names:
        raise ValueError(f"`config` must be one of {sorted(names)}, got {config!r}")
    return names[config]


def make_example(split: str, index: int, config: ShapesConfig | str = "default") -> dict:
    """Example `index` of `split` of a `kerasdet_shapes` config, as `generate_example` returns
    it (boxes in `yxyx` pixels), identical to what the TFDS builder writes."""
    config = shapes_config(config)
    if split not in _SPLIT_IDS:
        raise ValueError(f"`split` must be one of {tuple(_SPLIT_IDS)}, got {split!r}")
    return config.generate(np.random.default_rng([config.seed, _SPLIT_IDS[split], int(index)]))


def ground_truth_batch(examples) -> dict:
    """Ground truth of examples as one padded batch: `boxes [B, M, 4]`, `classes [B, M]`
    (-1 rows are padding), the form `COCOEvaluator.update` takes."""
    most = max([len(e["classes"]) for e in examples] + [1])
    boxes = np.zeros([len(examples), most, 4], np.float32)
    classes = np.full([len(examples), most], -1, np.int32)
    for i, example in enumerate(examples):
        n = len(example["classes"])
        boxes[i, :n] = example["boxes"]
        classes[i, :n] = example["classes"]
    return {"boxes": boxes, "classes": classes}


class KerasdetShapes(tfds.core.GeneratorBasedBuilder):
    """Synthetic coloured shapes for object detection, generated locally (no download)."""

    name = "kerasdet_shapes"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        ShapesConfig(
            name="default",
            description="256x256 images, 2000 train / 300 validation, boxes 12-120 px.",
        ),
        ShapesConfig(
            name="small",
            description="128x128 images, 2000 train / 300 validation, boxes 8-60 px.",
            height=128,
            width=128,
            min_size=8,
            max_size=60,
        ),
        ShapesConfig(
            name="tiny",
            description="64x64 images, 32 train / 8 validation, boxes 8-32 px (smoke tests).",
            height=64,
            width=64,
            train_size=32,
            validation_size=8,
            min_size=8,
            max_size=32,
            max_objects=4,
            encoding="png",
        ),
    ]
    DEFAULT_CONFIG_NAME = "default"

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS 4.9.10's own lookup imports the `importlib_resources` backport, which its
        # requirements do not pull in; the plain file path is all it needs.
        return epath.Path(inspect.getfile(cls))

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        return self.dataset_info_from_configs(
            description=__doc__.split("\n\n")[1],
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(
                        shape=(cfg.height, cfg.width, 3), encoding_format=cfg.encoding
                    ),
                    "image/filename": tfds.features.Text(),
                    "image/id": np.int64,
                    "objects": tfds.features.Sequence(
                        {
                            "bbox": tfds.features.BBoxFeature(),
                            "label": tfds.features.ClassLabel(names=list(CLASS_NAMES)),
                        }
                    ),
                }
            ),
            homepage="https://github.com/kerasdet/kerasdet",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # everything is generated locally
        cfg = self.builder_config
        return {
            "train": self._generate_examples("train", cfg.train_size),
            "validation": self._generate_examples("validation", cfg.validation_size),
        }

    def _generate_examples(self, split, num_examples):
        cfg = self.builder_config
        for index in range(num_examples):
            ex = make_example(split, index, cfg)
            bbox = convert_format(
                ex["boxes"], "yxyx", "rel_yxyx", image_shape=(cfg.height, cfg.width)
            ).numpy()
            name = f"{split}_{index:06d}"
            yield (
                name,
                {
                    "image": ex["image"],
                    "image/filename": f"{name}.{'jpg' if cfg.encoding == 'jpeg' else 'png'}",
                    "image/id": index,
                    "objects": {"bbox": np.clip(bbox, 0.0, 1.0), "label": ex["classes"]},
                },
            )
