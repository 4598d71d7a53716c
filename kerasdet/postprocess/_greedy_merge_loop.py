"""Private helpers of `kerasdet.postprocess.greedy_merge`: box features, match scores and
the in-graph merge loop.

Algorithm (per image, all images of a batch advance together in one `tf.while_loop`):

The full pairwise match-score matrix is built once, only to seed, for every row `i`, its
minimum `rowmin[i]` and first argmin `rowarg[i]` (O(M²), fused by XLA into one pass). The
matrix itself is not kept: after a merge of the pair (r, c) only row/column r changes (c is
removed), and the new row r is computed in O(M) from the merged box. Reading a stored row
would cost the same O(M) as recomputing it from the boxes, whereas writing a column into a
stored [M, M] loop variable costs an O(M²) copy per merge in TF graph mode.

Each iteration pops g = first argmin of `rowmin` (O(M)):
  * if row g is *fresh* (`rowmin[g]` is its exact minimum and `rowarg[g]` the first column
    attaining it), (g, rowarg[g]) is exactly the spec's pair: every row before g has a
    strictly larger lower bound, every row after it one at least as large. It is merged:
    row g becomes the merged box, row c is removed, and every other row folds in its new
    entry at column g in O(1) (see `take` in the loop body).
  * otherwise `rowmin[g]` is only a lower bound ("stale": its argmin pointed to g or c of
    an earlier merge, and the new column g did not beat it); the row is recomputed
    exactly and nothing is merged (a "refresh").
The loop stops when the smallest lower bound exceeds the threshold: then every exact score
does too. Staleness is a boolean per row rather than a version counter: a row only needs to
know whether its bound is still exact. On OverFeat-like data (tools/bench_greedy_merge.py)
there is about one refresh per merge, so ~2 iterations per merge, each O(M).

Every step is a fixed-shape [B, M] op, so the loop runs as a TFLite WHILE builtin, and with
`jit_compile=True` XLA fuses each iteration into a few kernels.
"""

from __future__ import annotations

import tensorflow as tf

# Floor of the half-diagonal and area, guarding the match score's divisions against
# zero-size boxes; far below any real pixel area or diagonal, so it never changes the score
# of a non-degenerate box.
_TINY = 1e-30

# Layout of the per-box feature vector used by the match score.
NUM_FEATURES = 8  # y1, x1, y2, x2, center_y, center_x, diagonal / 2, area
# Layout of the per-box accumulator: running sums of the original boxes merged into it.
NUM_ACC = 6  # sum y1, sum x1, sum y2, sum x2, count, sum of scores


def box_features(boxes):
    """[..., 4] `[y1, x1, y2, x2]` -> [..., 8] `[y1, x1, y2, x2, cy, cx, diag / 2, area]`.

    Inverted boxes (y2 < y1 or x2 < x1) get zero height/width, i.e. they are empty.
    Half-diagonal and area are floored at a tiny positive value, so the match score's two
    divisions need no guard of their own (two fewer ops per loop iteration): coincident
    zero-size boxes then score 0 + (1 - 0) and distinct ones a huge center term.
    """
    y1, x1, y2, x2 = tf.unstack(boxes, axis=-1)
    h = tf.maximum(y2 - y1, 0.0)
    w = tf.maximum(x2 - x1, 0.0)
    return tf.stack(
        [
            y1,
            x1,
            y2,
            x2,
            (y1 + y2) * 0.5,
            (x1 + x2) * 0.5,
            tf.maximum(tf.sqrt(h * h + w * w) * 0.5, _TINY),
            tf.maximum(h * w, _TINY),
        ],
        axis=-1,
    )


def match_from_features(fa, fb, feature_axis=-1):
    """OverFeat match score between broadcastable feature tensors `fa`, `fb` ([..., 8]).

    With `feature_axis=None`, `fa` and `fb` are already sequences of the 8 features.
    Written so that `match(a, b)` and `match(b, a)` are bitwise equal (only commutative
    ops on a/b pairs): the tie-breaking rule relies on an exactly symmetric matrix.
    `(diag_a + diag_b) / 2` is computed as `diag_a / 2 + diag_b / 2`, which is bitwise the
    same (halving is exact).
    """
    if feature_axis is not None:
        fa = tf.unstack(fa, axis=feature_axis)
        fb = tf.unstack(fb, axis=feature_axis)
    y1a, x1a, y2a, x2a, cya, cxa, hda, aa = fa
    y1b, x1b, y2b, x2b, cyb, cxb, hdb, ab = fb
    ih = tf.maximum(tf.minimum(y2a, y2b) - tf.maximum(y1a, y1b), 0.0)
    iw = tf.maximum(tf.minimum(x2a, x2b) - tf.maximum(x1a, x1b), 0.0)
    inter = ih * iw
    iou = inter / (aa + ab - inter)
    dy = cya - cyb
    dx = cxa - cxb
    return tf.sqrt(dy * dy + dx * dx) / (hda + hdb) + (1.0 - iou)


def first_argmin(values, iota=None):
    """Min along the last axis and the smallest index attaining it.

    With `iota` (`tf.range` of the last axis), the index is computed explicitly as the
    smallest index holding the min: two vectorizable reductions, ~20% faster per loop
    iteration under XLA than `tf.argmin`'s (value, index) reduction. Without it,
    `tf.argmin` is used (cheaper for the one-off [B, M, M] seed). `tf.argmin`'s docs leave
    the index returned on ties open, but every backend kerasdet runs on returns the first
    one (TF CPU's Eigen reducer breaks ties by index, XLA's argmin lowering too, TFLite's
    ARG_MIN scans with a strict `<`); the tie-rule tests pin this down on all three.
    """
    vmin = tf.reduce_min(values, axis=-1)
    if iota is None:
        return vmin, tf.argmin(values, axis=-1, output_type=tf.int32)
    first = tf.where(values == vmin[..., None], iota, tf.size(iota))
    return vmin, tf.reduce_min(first, axis=-1)


def merge_loop(boxes, scores, classes, active, threshold):
    """Runs the greedy merge on padded candidates.

    Args:
        boxes: [B, M, 4] float32 candidate boxes.
        scores: [B, M] float32 candidate scores.
        classes: [B, M] int32.
        active: [B, M] bool, False for rows that are not candidates.
        threshold: scalar float32 match threshold.

    Returns:
        `(acc, active, iterations)`: acc [B, M, 6] running sums (y1, x1, y2, x2, count,
        score) of the boxes that survive at each index, active [B, M] bool (True for
        surviving merged boxes) and the number of loop iterations (merges + refreshes of
        the slowest image) as an int32 scalar.
    """
    inf = tf.constant(float("inf"), tf.float32)
    iota = tf.range(tf.shape(scores)[1], dtype=tf.int32)

    feats = box_features(boxes)  # [B, M, 8]
    # All per-box state in one feature-major [B, 14, M] tensor: one select writes a merged
    # box, one gather reads boxes g and c, and each feature row is contiguous (TFLite's
    # elementwise kernels and XLA vectorize over M; a [B, M, 14] layout needs strided
    # unpacks). Rows: acc (sum y1, x1, y2, x2, count, score), then the 8 box features.
    acc = tf.concat([boxes, tf.ones_like(scores)[..., None], scores[..., None]], axis=-1)
    data = tf.transpose(tf.concat([acc, feats], axis=-1), [0, 2, 1])

    # Seed: the full [B, M, M] matrix, once. Invalid pairs (self, other class,
    # non-candidate) are +inf so they can never be picked.
    pair_ok = (classes[:, :, None] == classes[:, None, :]) & active[:, :, None] & active[:, None, :]
    full = tf.where(pair_ok, match_from_features(feats[:, :, None, :], feats[:, None, :, :]), inf)
    # Self pairs go through the diagonal: an `iota != iota^T` mask would be folded by the
    # TFLite converter into an M x M constant (4 MB for M = 2000) stored in the file.
    full = tf.linalg.set_diag(full, tf.fill(tf.shape(full)[:2], inf))
    rowmin, rowarg = first_argmin(full)
    fresh = tf.ones_like(active)
    gmin = tf.reduce_min(rowmin, axis=1)

    def cond(gmin, *_):
        return tf.reduce_any(gmin <= threshold)

    def body(gmin, data, active, rowmin, rowarg, fresh, it):
        # One step for every image: merge (do_merge), refresh the stale row g (running but
        # not do_merge: the masks reduce the step to recomputing row g), or nothing
        # (done). A tf.cond skipping the merge-only work on refresh steps would save TF
        # graph-mode ops, but it makes the TFLite converter fail on the second
        # conversion in a process (duplicate "while_cond_function"), so it is not used.
        running = (gmin <= threshold)[:, None]  # [B, 1]: this image has a pair to examine
        # [B, 1] first row attaining the smallest bound `gmin`.
        g = tf.reduce_min(tf.where(rowmin == gmin[:, None], iota, tf.size(iota)), axis=1)[:, None]
        do_merge = running & tf.gather(fresh, g, batch_dims=1)  # [B, 1]
        c = tf.gather(rowarg, g, batch_dims=1)
        class_g = tf.gather(classes, g, batch_dims=1)

        # Boxes g and c; a refresh adds nothing (masked), so the "new" box of a refresh
        # is bitwise the box already stored at g.
        pair = tf.gather(data, tf.concat([g, c], axis=1), axis=2, batch_dims=1)  # [B, 14, 2]
        acc_g = pair[:, :NUM_ACC, 0] + tf.where(do_merge, pair[:, :NUM_ACC, 1], 0.0)
        feat_g = box_features(acc_g[:, :4] / acc_g[:, 4:5])  # [B, 8]
        is_g = (iota == g) & running  # [B, M]
        is_c = (iota == c) & do_merge
        active = active & ~is_c
        data = tf.where(is_g[:, None, :], tf.concat([acc_g, feat_g], axis=1)[:, :, None], data)

        # The new (merged or refreshed) row/column g, O(M).
        col = match_from_features(
            tf.unstack(feat_g[:, :, None], axis=1), tf.unstack(data[:, NUM_ACC:], axis=1), None
        )
        col = tf.where(active & ~is_g & (classes == class_g), col, inf)
        gmin_row, garg_row = first_argmin(col, iota)

        # Other rows see column g change (to `col`) and column c vanish. `take`: the new
        # entry at g becomes the row's exact first minimum. Rows whose argmin was g or c
        # and that do not take g keep their old minimum as a lower bound: stale. Row c
        # "takes" the +inf of its (now masked) column, i.e. is retired.
        pointed = (rowarg == g) | (rowarg == c)
        take = (col < rowmin) | ((col == rowmin) & fresh & (g <= rowarg)) | is_c
        take = take & do_merge
        fresh = take | (fresh & ~(pointed & do_merge)) | is_g
        # Row g itself is now exact.
        rowmin = tf.where(is_g, gmin_row[:, None], tf.where(take, col, rowmin))
        rowarg = tf.where(is_g, garg_row[:, None], tf.where(take, g, rowarg))
        return (tf.reduce_min(rowmin, axis=1), data, active, rowmin, rowarg, fresh, it + 1)

    loop_vars = (gmin, data, active, rowmin, rowarg, fresh, tf.constant(0, tf.int32))
    out = tf.while_loop(cond, body, loop_vars)
    return tf.transpose(out[1][:, :NUM_ACC], [0, 2, 1]), out[2], out[6]
