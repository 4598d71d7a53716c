"""Tests of `sample_balanced` / `sample_balanced_indices`: counts, determinism, shapes."""

import numpy as np
import pytest
import tensorflow as tf

from kerasdet.training import sample_balanced, sample_balanced_indices


def make_labels(rng, counts, size):
    """One row per `(positives, negatives)` in `counts`, the rest ignored, shuffled."""
    rows = []
    for positives, negatives in counts:
        row = np.array([1] * positives + [0] * negatives + [-1] * (size - positives - negatives))
        rows.append(rng.permutation(row))
    return np.stack(rows).astype(np.int32)


def counts(labels, mask):
    return (mask & (labels == 1)).sum(1), (mask & (labels == 0)).sum(1)


def test_sampler_counts_at_most_128_positives_and_exact_fill(rng):
    labels = make_labels(rng, [(500, 3000), (10, 3000), (0, 3000), (300, 50), (3, 4)], 4000)
    mask = sample_balanced(labels, 256, 0.5, seed=1).numpy()
    assert mask.shape == labels.shape and mask.dtype == bool
    positives, negatives = counts(labels, mask)
    np.testing.assert_array_equal(positives, [128, 10, 0, 128, 3])
    # Negatives fill to 256 when there are enough; otherwise all of them are taken.
    np.testing.assert_array_equal(negatives, [128, 246, 256, 50, 4])
    assert not (mask & (labels == -1)).any()  # ignored entries are never sampled


@pytest.mark.parametrize("num_samples, fraction, max_positives", [(512, 0.25, 128), (10, 0.33, 3), (8, 0.0, 0), (8, 1.0, 8)])
def test_sampler_positive_cap_is_int_of_num_samples_times_fraction(num_samples, fraction, max_positives, rng):
    labels = make_labels(rng, [(600, 600)], 1500)
    mask = sample_balanced(labels, num_samples, fraction, seed=0).numpy()
    positives, negatives = counts(labels, mask)
    assert positives[0] == max_positives and negatives[0] == num_samples - max_positives


def test_sampler_deterministic_given_seed_and_different_seeds_differ(rng):
    labels = make_labels(rng, [(400, 2000), (400, 2000)], 3000)
    first = sample_balanced(labels, seed=7).numpy()
    np.testing.assert_array_equal(first, sample_balanced(labels, seed=7).numpy())
    np.testing.assert_array_equal(first, sample_balanced(labels, seed=tf.constant([7, 0])).numpy())
    other = sample_balanced(labels, seed=(7, 1)).numpy()
    assert (first != other).any() and (first != sample_balanced(labels, seed=8).numpy()).any()
    # Two images with the same labels draw different samples (keys are per image).
    same = np.stack([labels[0], labels[0]])
    mask = sample_balanced(same, seed=7).numpy()
    assert (mask[0] != mask[1]).any()


def test_sampler_picks_uniformly_at_random():
    # 4000 copies of one image with 8 positives and 8 negatives, 2 + 2 sampled: each
    # positive / negative is drawn with probability 1/4.
    labels = np.tile(np.array([[1, 0] * 8 + [-1] * 4], np.int32), (4000, 1))
    mask = sample_balanced(labels, 4, 0.5, seed=3).numpy()
    frequency = mask.mean(0)
    np.testing.assert_allclose(frequency[:16], 0.25, atol=0.035)
    assert frequency[16:].sum() == 0


def test_sampler_indices_positives_first_then_negatives_then_padding(rng):
    labels = np.array([[0, 1, -1, 0, 1, 0], [-1, -1, 0, -1, -1, -1]], np.int32)
    indices, valid = sample_balanced_indices(labels, 5, 0.4, seed=0)
    assert indices.shape == valid.shape == (2, 5) and indices.dtype == tf.int32
    np.testing.assert_array_equal(valid.numpy(), [[True] * 5, [True, False, False, False, False]])
    np.testing.assert_array_equal(indices.numpy()[0, :2], [1, 4])  # both positives, in order
    assert set(indices.numpy()[0, 2:]) == {0, 3, 5}
    np.testing.assert_array_equal(indices.numpy()[1], [2, 0, 0, 0, 0])


def test_sampler_indices_agree_with_mask(rng):
    labels = make_labels(rng, [(40, 500), (2, 30)], 600)
    mask = sample_balanced(labels, 64, 0.25, seed=5).numpy()
    indices, valid = sample_balanced_indices(labels, 64, 0.25, seed=5)
    for b in range(2):
        chosen = indices.numpy()[b][valid.numpy()[b]]
        np.testing.assert_array_equal(np.sort(chosen), np.flatnonzero(mask[b]))


def test_sampler_in_tf_function_with_unknown_batch_and_fewer_entries_than_samples():
    fn = tf.function(
        lambda labels: (sample_balanced(labels, 256, seed=0), *sample_balanced_indices(labels, 256, seed=0)),
        input_signature=[tf.TensorSpec([None, None], tf.int32)],
    )
    labels = np.array([[1, 0, 0, -1, 1], [-1, -1, -1, -1, -1]], np.int32)
    mask, indices, valid = fn(labels)
    assert mask.shape == (2, 5) and indices.shape == (2, 256)
    np.testing.assert_array_equal(mask.numpy(), labels >= 0)
    np.testing.assert_array_equal(valid.numpy().sum(1), [4, 0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_samples": 0}, "num_samples"),
        ({"num_samples": 2.5}, "num_samples"),
        ({"positive_fraction": 1.5}, "positive_fraction"),
        ({"seed": None}, "seed"),
        ({"seed": [1, 2, 3]}, "seed"),
    ],
)
def test_sampler_rejects_bad_arguments(kwargs, match):
    kwargs = {"seed": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        sample_balanced(np.zeros([1, 4], np.int32), **kwargs)


def test_sampler_rejects_bad_labels_rank():
    with pytest.raises(ValueError, match=r"\[B, A\]"):
        sample_balanced(np.zeros([4], np.int32), seed=0)


def test_sampler_docstring_example():
    import doctest

    globs = {"tf": tf, "sample_balanced": sample_balanced}
    (test,) = doctest.DocTestFinder().find(sample_balanced, "sample_balanced", globs=globs)
    assert doctest.DocTestRunner().run(test).failed == 0
