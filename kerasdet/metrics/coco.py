"""COCO detection metrics (AP@[.5:.95], AP50, AP75, APs/m/l, AR) computed by pycocotools.

kerasdet does not re-implement COCO matching: ground truth and detections are converted to
COCO json-like records (`xywh` boxes, via `kerasdet.boxes.convert_format`) and handed to
`pycocotools.cocoeval.COCOeval`.

Inputs use kerasdet conventions:

* ground truth: `{"boxes": float32 [B, M, 4] yxyx pixels, "classes": int32 [B, M]}`, padding
  rows (class -1) ignored;
* detections: `{"boxes": [B, N, 4], "scores": [B, N], "classes": [B, N],
  "num_detections": [B]}`, rows past `num_detections` (and rows of class -1) ignored.

Boxes are evaluated in the pixels they are given in (normally the model's input image), so
the COCO area ranges of APs / APm / APl (32², 96² pixels²) apply to that scale. Numbers
pycocotools reports as -1 (no ground truth, e.g. no small objects) are returned as NaN.
"""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np

from kerasdet.boxes.formats import convert_format

STAT_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)


def _pycocotools():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "kerasdet.metrics needs pycocotools for COCO evaluation: pip install pycocotools"
        ) from error
    return COCO, COCOeval


def _to_numpy(value, name):
    try:
        return np.asarray(value)
    except Exception as error:  # noqa: BLE001
        raise ValueError(f"`{name}` must be array-like, got {type(value).__name__}") from error


def _get(d, key, name, rank, batch=None):
    if not isinstance(d, dict) or key not in d:
        keys = sorted(d) if isinstance(d, dict) else type(d).__name__
        raise ValueError(f"`{name}` must be a dict with key {key!r}, got {keys}")
    value = _to_numpy(d[key], f"{name}[{key!r}]")
    if value.ndim != rank or (rank > 1 and key == "boxes" and value.shape[-1] != 4):
        want = {"boxes": "[B, N, 4]", "num_detections": "[B]"}.get(key, "[B, N]")
        raise ValueError(f"`{name}[{key!r}]` must have shape {want}, got {value.shape}")
    if batch is not None and value.shape[0] != batch:
        raise ValueError(
            f"`{name}[{key!r}]` has batch size {value.shape[0]}, expected {batch} "
            "(the batch size of y_true)"
        )
    return value


class COCOEvaluator:
    """Accumulates batches of ground truth and detections, then runs `COCOeval` (bbox).

    Example::

        evaluator = COCOEvaluator(class_names=["circle", "square", "triangle"])
        for images, y_true in val_ds:          # an unshuffled dataset
            evaluator.update(y_true, model.predict_on_batch(images))
        evaluator.result()["AP"]
        print(evaluator.summary)               # pycocotools' 12-line table

    Args:
        class_names: optional names of the 0-based classes; they become the COCO categories
            (classes without ground truth are left out of the mean, as COCO does). Without
            names, the categories are the classes seen in ground truth or detections.
        max_detections: detections per image COCO keeps (highest scores), the last of
            COCO's `maxDets` (`[1, 10, max_detections]`); AR keys stay named `AR100`.
        per_class: also return `"AP/<class name>"` (AP@[.5:.95] per category).
    """

    def __init__(self, class_names=None, *, max_detections: int = 100, per_class: bool = False):
        if class_names is not None:
            class_names = [str(n) for n in class_names]
            if not class_names:
                raise ValueError("`class_names` must be a non-empty sequence or None, got []")
        if (
            isinstance(max_detections, bool)
            or not isinstance(max_detections, int)
            or max_detections < 1
        ):
            raise ValueError(f"`max_detections` must be a positive integer, got {max_detections!r}")
        self.class_names = class_names
        self.max_detections = max_detections
        self.per_class = per_class
        self.reset()

    def reset(self) -> None:
        """Forgets all accumulated images."""
        self._image_ids: list[int] = []
        self._seen: set[int] = set()
        self._gt: list[tuple[int, np.ndarray, np.ndarray]] = []  # (image id, xywh, classes)
        self._dt: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []  # + scores
        self._next_id = 1
        self.summary = ""

    @property
    def num_images(self) -> int:
        return len(self._image_ids)

    def update(self, y_true: dict, y_pred: dict, image_ids=None) -> None:
        """Adds one batch.

        Args:
            y_true: `{"boxes": [B, M, 4] yxyx, "classes": [B, M]}` (numpy or tensors),
                padding rows have class -1.
            y_pred: `{"boxes": [B, N, 4] yxyx, "scores": [B, N], "classes": [B, N]}` and
                optionally `"num_detections": [B]` (without it every row with class >= 0
                counts).
            image_ids: optional `[B]` ints identifying the images (unique over all updates);
                default: consecutive ids in update order.
        """
        gt_boxes = _get(y_true, "boxes", "y_true", 3)
        batch = gt_boxes.shape[0]
        gt_classes = _get(y_true, "classes", "y_true", 2, batch).astype(np.int64)
        dt_boxes = _get(y_pred, "boxes", "y_pred", 3, batch)
        dt_scores = _get(y_pred, "scores", "y_pred", 2, batch).astype(np.float64)
        dt_classes = _get(y_pred, "classes", "y_pred", 2, batch).astype(np.int64)
        if "num_detections" in y_pred:
            num_det = _get(y_pred, "num_detections", "y_pred", 1, batch).astype(np.int64)
        else:
            num_det = np.full([batch], dt_classes.shape[1], np.int64)
        if gt_classes.shape != gt_boxes.shape[:2]:
            raise ValueError(
                f"`y_true['classes']` shape {gt_classes.shape} does not match boxes {gt_boxes.shape}"
            )
        if dt_classes.shape != dt_boxes.shape[:2] or dt_scores.shape != dt_boxes.shape[:2]:
            raise ValueError(
                f"`y_pred` classes {dt_classes.shape} / scores {dt_scores.shape} do not match "
                f"boxes {dt_boxes.shape}"
            )
        if image_ids is None:
            image_ids = list(range(self._next_id, self._next_id + batch))
        else:
            image_ids = [int(i) for i in _to_numpy(image_ids, "image_ids").reshape(-1)]
            if len(image_ids) != batch:
                raise ValueError(f"`image_ids` must have {batch} entries, got {len(image_ids)}")
        duplicates = sorted(self._seen.intersection(image_ids)) or (
            image_ids if len(set(image_ids)) != len(image_ids) else []
        )
        if duplicates:
            raise ValueError(
                f"`image_ids` must be unique over all updates, got repeated {duplicates}"
            )

        self._check_classes(gt_classes, "y_true")
        self._check_classes(dt_classes, "y_pred")
        gt_xywh = convert_format(gt_boxes, "yxyx", "xywh").numpy().astype(np.float64)
        dt_xywh = convert_format(dt_boxes, "yxyx", "xywh").numpy().astype(np.float64)
        rows = np.arange(dt_classes.shape[1])
        for b, image_id in enumerate(image_ids):
            keep = gt_classes[b] >= 0
            self._gt.append((image_id, gt_xywh[b][keep], gt_classes[b][keep]))
            keep = (rows < num_det[b]) & (dt_classes[b] >= 0)
            self._dt.append((image_id, dt_xywh[b][keep], dt_classes[b][keep], dt_scores[b][keep]))
        self._image_ids.extend(image_ids)
        self._seen.update(image_ids)
        self._next_id = max(self._next_id, max(image_ids, default=0) + 1)

    def update_from_model(self, model, dataset) -> None:
        """Adds every batch of a `(images, ground_truth)` dataset, with detections from
        `model.predict_on_batch(images)`."""
        for batch in dataset:
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise ValueError(
                    "`dataset` must yield (images, ground_truth) tuples, got "
                    f"{type(batch).__name__}"
                )
            self.update(batch[1], model.predict_on_batch(batch[0]))

    def _check_classes(self, classes, name):
        if self.class_names is not None and classes.size and classes.max() >= len(self.class_names):
            raise ValueError(
                f"`{name}['classes']` has class id {int(classes.max())}, expected ids in "
                f"[0, {len(self.class_names)}) for class_names={self.class_names}"
            )

    def _categories(self):
        if self.class_names is not None:
            return list(enumerate(self.class_names))
        ids = set()
        for _, _, classes in self._gt:
            ids.update(classes.tolist())
        for _, _, classes, _ in self._dt:
            ids.update(classes.tolist())
        return [(i, str(i)) for i in sorted(ids)]

    def result(self) -> dict:
        """Runs COCOeval over everything accumulated.

        Returns:
            dict of floats: `AP` (AP@[.5:.95]), `AP50`, `AP75`, `APs`, `APm`, `APl`, `AR1`,
            `AR10`, `AR100`, `ARs`, `ARm`, `ARl` (and `AP/<name>` with `per_class`). NaN where
            COCO has nothing to measure (e.g. no ground truth at all, or none in an area
            range). The pycocotools summary table is kept in `self.summary`.
        """
        if not self._image_ids:
            raise ValueError("COCOEvaluator has no images: call update(y_true, y_pred) first")
        COCO, COCOeval = _pycocotools()
        categories = self._categories()
        images = [{"id": i} for i in self._image_ids]
        cats = [{"id": i, "name": n} for i, n in categories]

        gt_anns = []
        for image_id, xywh, classes in self._gt:
            for box, cls in zip(xywh.tolist(), classes.tolist(), strict=True):
                gt_anns.append(
                    {
                        "id": len(gt_anns) + 1,
                        "image_id": image_id,
                        "category_id": cls,
                        "bbox": box,
                        "area": box[2] * box[3],
                        "iscrowd": 0,
                    }
                )
        dt_anns = []
        for image_id, xywh, classes, scores in self._dt:
            for box, cls, score in zip(
                xywh.tolist(), classes.tolist(), scores.tolist(), strict=True
            ):
                dt_anns.append(
                    {
                        "id": len(dt_anns) + 1,
                        "image_id": image_id,
                        "category_id": cls,
                        "bbox": box,
                        "area": box[2] * box[3],
                        "score": score,
                        "iscrowd": 0,
                    }
                )

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            coco_gt = COCO()
            coco_gt.dataset = {"images": images, "categories": cats, "annotations": gt_anns}
            coco_gt.createIndex()
            # Built directly rather than with loadRes, which fails on zero detections.
            coco_dt = COCO()
            coco_dt.dataset = {"images": images, "categories": cats, "annotations": dt_anns}
            coco_dt.createIndex()
            evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
            evaluator.params.imgIds = list(self._image_ids)
            evaluator.params.catIds = [i for i, _ in categories]
            evaluator.params.maxDets = [1, 10, self.max_detections]
            evaluator.evaluate()
            evaluator.accumulate()
        table = io.StringIO()
        with contextlib.redirect_stdout(table):
            evaluator.summarize()
        self.summary = table.getvalue()

        def clean(value):
            value = float(value)
            return math.nan if value < 0 else value

        results = {name: clean(v) for name, v in zip(STAT_NAMES, evaluator.stats, strict=True)}
        if self.per_class:
            precision = evaluator.eval["precision"]  # [T, R, K, A, M]
            for k, (_, name) in enumerate(categories):
                p = precision[:, :, k, 0, -1]
                p = p[p > -1]
                results[f"AP/{name}"] = float(p.mean()) if p.size else math.nan
        return results


def _ground_truth_of(batch):
    """A batch of `ground_truth` may be the GT dict or an `(images, gt, ...)` tuple."""
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[1]
    return batch


def coco_evaluate(
    ground_truth, detections, *, class_names=None, max_detections: int = 100, per_class=False
) -> dict:
    """COCO metrics of matching batches of ground truth and detections.

    Args:
        ground_truth: iterable of batches, each the GT dict `{"boxes", "classes"}` or an
            `(images, gt_dict, ...)` tuple as a `detection_dataset` yields (use an unshuffled
            dataset if it is iterated separately to produce `detections`).
        detections: iterable of detection dicts, one per ground-truth batch, same order.
        class_names, max_detections, per_class: see `COCOEvaluator`.

    Returns:
        `COCOEvaluator.result()`: `AP`, `AP50`, `AP75`, `APs`, `APm`, `APl`, `AR1`, `AR10`,
        `AR100`, `ARs`, `ARm`, `ARl`.
    """
    evaluator = COCOEvaluator(class_names, max_detections=max_detections, per_class=per_class)
    sentinel = object()
    gt_iter, dt_iter = iter(ground_truth), iter(detections)
    while True:
        gt, dt = next(gt_iter, sentinel), next(dt_iter, sentinel)
        if gt is sentinel and dt is sentinel:
            break
        if gt is sentinel or dt is sentinel:
            raise ValueError(
                "`ground_truth` and `detections` must have the same number of batches, got "
                f"{'fewer' if gt is sentinel else 'more'} ground-truth batches"
            )
        evaluator.update(_ground_truth_of(gt), dt)
    return evaluator.result()


def evaluate_model(
    model, dataset, *, class_names=None, max_detections: int = 100, per_class=False
) -> dict:
    """Runs `model.predict_on_batch` over a `(images, gt)` dataset once and returns
    `COCOEvaluator.result()` (see `coco_evaluate`)."""
    evaluator = COCOEvaluator(class_names, max_detections=max_detections, per_class=per_class)
    evaluator.update_from_model(model, dataset)
    return evaluator.result()
