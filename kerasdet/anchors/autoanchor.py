"""Anchors learned from the training boxes, as YOLOv5's autoanchor does it.

A box of size `(w, h)` fits an anchor `(aw, ah)` when neither side is more than `threshold`
(4 by default) times larger or smaller: `max(w/aw, aw/w, h/ah, ah/h) < threshold`.
Equivalently the *ratio metric* `x = min(min(w/aw, aw/w), min(h/ah, ah/h))`, in `(0, 1]`, is
above `1 / threshold`. Then

* **BPR**, the best possible recall, is the fraction of boxes that fit at least one anchor
  (what a detector can at best assign); **AAT** is the mean number of anchors each box fits.
* When the current anchors' BPR is below `target_bpr` (0.98), new anchors are learned:
  k-means on the whitened `(w, h)` (each divided by its standard deviation) of the boxes
  with a side of at least 2 pixels, then a genetic refinement — 1000 generations, each
  multiplying every anchor side by `1 + N(0, 1)·sigma·u` with probability `mutation_prob`
  (`u` uniform per generation, factors clipped to [0.3, 3], sides kept >= 2 px), keeping a
  mutation when it raises the fitness `mean(best_x · [best_x > 1/threshold])` where `best_x`
  is each box's best ratio metric. The learned anchors are kept only if they raise the BPR.

Boxes are measured in pixels of the model input (`kerasdet.data.box_sizes(..., image_size=)`),
anchors are `(width, height)` pixels. Anchors are returned per level as
`[[w, h, w, h, ...], ...]`, ready for `AnchorGenerator(anchors=...)`: sorted by area and
given to the levels in the order of their current anchors' sizes (the smallest anchors to
the level whose anchors were smallest, i.e. the finest stride). Unlike YOLOv5, the BPR is
measured on the boxes as they are (YOLOv5 multiplies them by a random 0.9-1.1), so results
are deterministic for a seed.

Everything is NumPy; the metric runs in log space (`x = exp(-max(|log w/aw|, |log h/ah|))`)
so each of the 1000 generations costs a few passes over `N × k` floats: about 2-3 s for
100k boxes and 9 anchors on one core (`tools/bench_autoanchor.py`).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

DEFAULT_THRESHOLD = 4.0
DEFAULT_TARGET_BPR = 0.98
MIN_KMEANS_SIZE = 2.0  # YOLOv5 leaves boxes under 2 px on both sides out of the clustering


def _check_wh(wh, name="wh"):
    wh = np.asarray(wh, np.float64)
    if wh.ndim != 2 or wh.shape[1] != 2:
        raise ValueError(f"`{name}` must be box sizes [N, 2] (width, height), got shape {wh.shape}")
    if wh.size and not (np.all(np.isfinite(wh)) and np.all(wh > 0)):
        bad = wh[~(np.isfinite(wh) & (wh > 0)).all(1)][0]
        raise ValueError(f"`{name}` must hold positive finite sizes, got (w, h) = {tuple(bad)}")
    return wh


def _check_threshold(threshold):
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold <= 1:
        raise ValueError(f"`threshold` must be a number > 1 (a side ratio), got {threshold!r}")
    return float(threshold)


def flatten_anchors(anchors):
    """Parses anchors per level into `(array [K, 2] (w, h), counts per level)`.

    Accepts `[[w, h, w, h, ...], ...]` or `[[(w, h), ...], ...]` per level (the
    `AnchorGenerator(anchors=...)` forms), or one level as an array `[K, 2]`.
    """
    if isinstance(anchors, np.ndarray) and anchors.ndim == 2 and anchors.shape[1] == 2:
        levels = [anchors.tolist()]
    else:
        levels = [list(level) for level in anchors]
    pairs, counts = [], []
    for i, level in enumerate(levels):
        flat = np.asarray(level, np.float64).reshape(-1)
        if flat.size == 0 or flat.size % 2:
            raise ValueError(
                f"`anchors` level {i} must list (width, height) pairs, got {level!r}"
            )
        pairs.append(flat.reshape(-1, 2))
        counts.append(flat.size // 2)
    if not pairs:
        raise ValueError("`anchors` must have at least one level, got []")
    k = _check_wh(np.concatenate(pairs), "anchors")
    return k, counts


def ratio_metric(wh, anchors) -> np.ndarray:
    """YOLOv5's ratio metric of every box against every anchor.

    Args:
        wh: `[N, 2]` box `(width, height)`.
        anchors: `[K, 2]` anchor `(width, height)` (or per-level lists, see
            `flatten_anchors`).

    Returns:
        float `[N, K]`, `min(min(w/aw, aw/w), min(h/ah, ah/h))` in `(0, 1]`.
    """
    wh = _check_wh(wh)
    k = flatten_anchors(anchors)[0]
    r = wh[:, None, :] / k[None]
    return np.minimum(r, 1.0 / r).min(axis=2)


def anchor_fit(wh, anchors, threshold: float = DEFAULT_THRESHOLD):
    """`(bpr, aat)`: best possible recall and mean anchors above threshold per box.

    A box fits an anchor when its ratio metric exceeds `1 / threshold`. An empty `wh` gives
    `(nan, nan)`.
    """
    threshold = _check_threshold(threshold)
    x = ratio_metric(wh, anchors)
    if x.shape[0] == 0:
        return math.nan, math.nan
    fits = x > 1.0 / threshold
    return float(fits.any(axis=1).mean()), float(fits.sum(axis=1).mean())


def best_possible_recall(wh, anchors, threshold: float = DEFAULT_THRESHOLD) -> float:
    """Fraction of boxes whose best anchor has a ratio metric above `1 / threshold`."""
    return anchor_fit(wh, anchors, threshold)[0]


class _Fitness:
    """`mean(best_x * [best_x > 1/threshold])` over boxes, fast for repeated calls.

    In log space the ratio metric is `exp(-max(|log w - log aw|, |log h - log ah|))`, so a
    call is two subtractions, two abs, a maximum and a minimum over `K × N` float32s,
    written into preallocated buffers (the genetic loop calls this 1000 times). The layout
    is anchor-major `[K, N]`: every op runs along long contiguous rows, and the minimum
    over anchors is an elementwise minimum of K rows (reducing short rows of an `[N, K]`
    array is several times slower in NumPy).
    """

    def __init__(self, wh, k, threshold):
        log_wh = np.log(wh).astype(np.float32)
        self.lw = np.ascontiguousarray(log_wh[:, 0])[None]
        self.lh = np.ascontiguousarray(log_wh[:, 1])[None]
        self.dw = np.empty((k, len(wh)), np.float32)
        self.dh = np.empty((k, len(wh)), np.float32)
        self.log_threshold = np.float32(math.log(threshold))

    def __call__(self, anchors) -> float:
        log_k = np.log(anchors).astype(np.float32)
        np.subtract(self.lw, log_k[:, :1], out=self.dw)
        np.abs(self.dw, out=self.dw)
        np.subtract(self.lh, log_k[:, 1:], out=self.dh)
        np.abs(self.dh, out=self.dh)
        np.maximum(self.dw, self.dh, out=self.dw)
        best = np.minimum.reduce(self.dw, axis=0)  # -log(best ratio metric) per box
        fits = best < self.log_threshold
        return float(np.exp(-best[fits]).sum(dtype=np.float64) / len(best))


def _nearest(xt, centres):
    """Nearest centre of every point and its squared distance; `xt` is points `[2, N]`.

    A running minimum over the K centres (K passes over contiguous `[N]` rows, in reused
    buffers) is several times faster than `argmin` over an axis of a `[K, N]` array.
    """
    n = xt.shape[1]
    best = np.empty(n, xt.dtype)
    d = np.empty(n, xt.dtype)
    tmp = np.empty(n, xt.dtype)
    closer = np.empty(n, bool)
    index = np.zeros(n, np.intp)
    for j, (cx, cy) in enumerate(centres.astype(xt.dtype)):
        np.subtract(xt[0], cx, out=d)
        np.square(d, out=d)
        np.subtract(xt[1], cy, out=tmp)
        np.square(tmp, out=tmp)
        d += tmp
        if j == 0:
            best[:] = d
            continue
        np.less(d, best, out=closer)
        np.minimum(best, d, out=best)
        index[closer] = j
    return index, best


def _kmeans(points, k, rng, restarts, max_iter=100, tol=1e-5):
    """Lloyd's k-means with k-means++ seeding; the run with the least mean distance wins.

    A run stops when the mean distance improves by less than `tol` (scipy's
    `cluster.vq.kmeans` rule).
    """
    n = len(points)
    # [2, N] float32: contiguous rows for the distance passes (whitened units: float32 is
    # ample for choosing a nearest centre; centres are averaged in float64 by bincount).
    xt = np.ascontiguousarray(points.T, dtype=np.float32)
    best, best_cost = None, math.inf
    for _ in range(restarts):
        centres = np.empty((k, 2))
        centres[0] = points[rng.integers(n)]
        d2 = np.square(xt[0] - centres[0, 0]) + np.square(xt[1] - centres[0, 1])
        for j in range(1, k):
            total = d2.sum()
            # All points on the chosen centres already: any point will do.
            i = rng.integers(n) if total <= 0 else rng.choice(n, p=d2 / total)
            centres[j] = points[i]
            d2 = np.minimum(d2, np.square(xt[0] - centres[j, 0]) + np.square(xt[1] - centres[j, 1]))
        cost = math.inf
        for _ in range(max_iter):
            assign, d2 = _nearest(xt, centres)
            previous, cost = cost, float(np.sqrt(d2).mean())
            if previous - cost <= tol:
                break
            counts = np.bincount(assign, minlength=k)
            filled = counts > 0
            for dim in range(2):
                sums = np.bincount(assign, weights=xt[dim], minlength=k)
                centres[filled, dim] = sums[filled] / counts[filled]
            if not filled.all():
                # An empty cluster restarts at the points farthest from their centres.
                centres[~filled] = points[np.argsort(-d2)[: int((~filled).sum())]]
        if cost < best_cost:
            best, best_cost = centres.copy(), cost
    return best


def _sort_by_area(k):
    return k[np.argsort(k.prod(axis=1), kind="stable")]


def kmeans_anchors(
    wh,
    num_anchors: int,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    generations: int = 1000,
    mutation_prob: float = 0.9,
    sigma: float = 0.1,
    seed: int | None = 0,
    kmeans_restarts: int = 3,
) -> np.ndarray:
    """Learns `num_anchors` anchor shapes from box sizes: k-means, then genetic refinement.

    Args:
        wh: `[N, 2]` box `(width, height)` in model-input pixels.
        num_anchors: anchors to learn `k` (all levels together).
        threshold: the side-ratio threshold of the fitness (4.0).
        generations: genetic refinement steps (1000; 0 keeps the k-means result).
        mutation_prob: probability that each anchor side is mutated in a generation (0.9).
        sigma: scale of the mutations (0.1).
        seed: NumPy seed; the result is a pure function of the inputs and the seed.
        kmeans_restarts: k-means runs (k-means++ seeded); the one of least distortion wins.

    Returns:
        float32 `[k, 2]` `(width, height)`, sorted by area.
    """
    wh = _check_wh(wh)
    threshold = _check_threshold(threshold)
    if isinstance(num_anchors, bool) or not isinstance(num_anchors, (int, np.integer)) or num_anchors < 1:
        raise ValueError(f"`num_anchors` must be a positive integer, got {num_anchors!r}")
    if not (isinstance(generations, (int, np.integer)) and generations >= 0):
        raise ValueError(f"`generations` must be an integer >= 0, got {generations!r}")
    if not 0.0 <= mutation_prob <= 1.0:
        raise ValueError(f"`mutation_prob` must be in [0, 1], got {mutation_prob!r}")
    if not sigma > 0:
        raise ValueError(f"`sigma` must be > 0, got {sigma!r}")
    points = wh[(wh >= MIN_KMEANS_SIZE).any(axis=1)]
    if len(points) < num_anchors:
        raise ValueError(
            f"need at least num_anchors={num_anchors} boxes with a side >= {MIN_KMEANS_SIZE:g} px "
            f"to learn anchors, got {len(points)} (of {len(wh)} boxes)"
        )
    rng = np.random.default_rng(seed)
    # Whitening: k-means on (w/σw, h/σh), so neither side dominates the distance.
    scale = points.std(axis=0)
    scale[scale == 0] = 1.0  # all boxes one size along a side: nothing to whiten
    k = _kmeans(points / scale, num_anchors, rng, kmeans_restarts) * scale
    k = _sort_by_area(np.maximum(k, MIN_KMEANS_SIZE))

    fitness = _Fitness(points, num_anchors, threshold)
    best = fitness(k)
    shape = k.shape
    for _ in range(generations):
        v = np.ones(shape)
        while (v == 1).all():  # mutate until something changes
            v = (
                (rng.random(shape) < mutation_prob) * rng.random() * rng.standard_normal(shape) * sigma + 1
            ).clip(0.3, 3.0)
        candidate = (k * v).clip(min=MIN_KMEANS_SIZE)
        f = fitness(candidate)
        if f > best:
            best, k = f, candidate
    return _sort_by_area(k).astype(np.float32)


def split_levels(anchors, counts, reference=None):
    """Splits area-sorted anchors `[K, 2]` into levels `[[w, h, ...], ...]` of `counts`.

    Levels are filled smallest-first in the order of `reference` (current anchors `[K, 2]`
    with the same `counts`): the level whose reference anchors have the smallest mean area
    gets the smallest anchors. Without a reference, level 0 gets the smallest.
    """
    anchors = _sort_by_area(np.asarray(anchors, np.float64))
    if sum(counts) != len(anchors):
        raise ValueError(f"level sizes {counts} do not add up to {len(anchors)} anchors")
    order = list(range(len(counts)))
    if reference is not None:
        reference = np.asarray(reference, np.float64)
        starts = np.cumsum([0, *counts])
        areas = [reference[starts[i] : starts[i + 1]].prod(axis=1).mean() for i in order]
        order = sorted(order, key=lambda i: areas[i])
    levels = [None] * len(counts)
    start = 0
    for level in order:
        chunk = anchors[start : start + counts[level]]
        levels[level] = [round(float(v), 2) for v in chunk.reshape(-1)]
        start += counts[level]
    return levels


@dataclasses.dataclass
class AutoAnchorResult:
    """What `autoanchor` found.

    Attributes:
        anchors: the anchors to use, per level `[[w, h, ...], ...]`: the learned ones if
            they raised the BPR, else the current ones.
        replaced: whether `anchors` are the learned ones.
        bpr_before, aat_before: BPR and anchors-above-threshold of the current anchors (NaN
            when there were none).
        bpr_after, aat_after: the same for `anchors`.
        learned: the learned anchors per level (also when not kept), or `None` when the
            current anchors already fit (BPR >= target) and nothing was learned.
        bpr_learned: BPR of `learned` (NaN if none).
        num_boxes: boxes measured.
    """

    anchors: list
    replaced: bool
    bpr_before: float
    aat_before: float
    bpr_after: float
    aat_after: float
    learned: list | None
    bpr_learned: float
    num_boxes: int


def autoanchor(
    wh,
    anchors=None,
    *,
    num_anchors: int | None = None,
    num_levels: int | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    target_bpr: float = DEFAULT_TARGET_BPR,
    force: bool = False,
    generations: int = 1000,
    mutation_prob: float = 0.9,
    sigma: float = 0.1,
    seed: int | None = 0,
) -> AutoAnchorResult:
    """Checks the anchors against the boxes and learns better ones if they fit poorly.

    Args:
        wh: `[N, 2]` box `(width, height)` in model-input pixels (see
            `kerasdet.data.box_sizes`).
        anchors: current anchors per level, `[[w, h, w, h, ...], ...]` (YOLO-style, one
            list per level; an RPN has one level). `None`: no current anchors (always learn).
        num_anchors: anchors to learn; default: as many as `anchors` has. With a different
            count the learned anchors are split evenly over the levels.
        num_levels: levels of the result when `anchors` is `None` (default 1).
        threshold: side-ratio threshold (4.0): a box fits an anchor when no side is more
            than `threshold` times larger or smaller.
        target_bpr: learn only when the current BPR is below this (0.98).
        force: learn even when the current anchors fit.
        generations, mutation_prob, sigma, seed: see `kmeans_anchors`.

    Returns:
        An `AutoAnchorResult`; `result.anchors` goes into `AnchorGenerator(anchors=...)` or
        `write_anchors_to_config`.
    """
    wh = _check_wh(wh)
    threshold = _check_threshold(threshold)
    if len(wh) == 0:
        raise ValueError("`wh` has no boxes: cannot fit anchors to an empty dataset")
    if anchors is not None:
        current, counts = flatten_anchors(anchors)
        current_levels = split_levels_as_given(current, counts)
        bpr_before, aat_before = anchor_fit(wh, current, threshold)
    else:
        current, counts, current_levels = None, None, None
        bpr_before = aat_before = math.nan
    if num_anchors is None:
        if current is None:
            raise ValueError("give the current `anchors` or `num_anchors` to learn")
        num_anchors = len(current)
    if current is not None and num_levels is None:
        num_levels = len(counts)
    num_levels = num_levels or 1
    if current is None or num_anchors != len(current):
        if num_anchors % num_levels:
            raise ValueError(
                f"`num_anchors`={num_anchors} does not split evenly over {num_levels} levels"
            )
        counts = [num_anchors // num_levels] * num_levels
        reference = None
    else:
        reference = current

    if current is not None and bpr_before >= target_bpr and not force:
        return AutoAnchorResult(
            current_levels, False, bpr_before, aat_before, bpr_before, aat_before, None,
            math.nan, len(wh),
        )  # fmt: skip
    k = kmeans_anchors(
        wh,
        num_anchors,
        threshold=threshold,
        generations=generations,
        mutation_prob=mutation_prob,
        sigma=sigma,
        seed=seed,
    )
    learned = split_levels(k, counts, reference)
    bpr_learned, aat_learned = anchor_fit(wh, flatten_anchors(learned)[0], threshold)
    if current is None or bpr_learned > bpr_before:
        return AutoAnchorResult(
            learned, True, bpr_before, aat_before, bpr_learned, aat_learned, learned,
            bpr_learned, len(wh),
        )  # fmt: skip
    return AutoAnchorResult(
        current_levels, False, bpr_before, aat_before, bpr_before, aat_before, learned,
        bpr_learned, len(wh),
    )  # fmt: skip


def split_levels_as_given(anchors, counts):
    """`[K, 2]` anchors back into per-level `[[w, h, ...], ...]` lists, order unchanged."""
    levels, start = [], 0
    for c in counts:
        levels.append([float(v) for v in np.asarray(anchors[start : start + c]).reshape(-1)])
        start += c
    return levels
