"""Truncated SVD of the Faster R-CNN head (Fast R-CNN §3.1): `RoIHead(head_ranks=...)`,
`kerasdet.models.truncate_head_svd`, `svd_factorize`, and the `--head-svd-rank` option."""

import argparse

import keras
import numpy as np
import pytest

from kerasdet import zoo
from kerasdet.data.shapes import make_example
from kerasdet.export import export, tflite_op_names
from kerasdet.lite import TFLiteDetector
from kerasdet.models import FasterRCNN, ProposalLayer, truncate_head_svd
from kerasdet.models.compress import svd_factorize
from kerasdet.models.faster_rcnn import RoIHead

SIZE = (128, 128)
NUM_CLASSES = 3


def relu(x):
    return np.maximum(x, 0.0)


def numpy_head(head, pooled):
    """Reference RoI head in NumPy from a full-rank `RoIHead`'s weights: `relu(x W + b)`
    per FC layer on the flattened (row, column, channel) window, then the two outputs."""
    x = pooled.reshape(-1, int(np.prod(pooled.shape[2:]))).astype(np.float64)
    for fc in head.fcs:
        x = relu(x @ fc.kernel.numpy().reshape(-1, fc.units) + fc.bias.numpy())
    logits = x @ head.cls.kernel.numpy().reshape(-1, head.cls.units) + head.cls.bias.numpy()
    deltas = x @ head.box.kernel.numpy().reshape(-1, head.box.units) + head.box.bias.numpy()
    return logits.reshape(*pooled.shape[:2], -1), deltas.reshape(*pooled.shape[:2], -1, 4)


def effective_kernel(first, second):
    """`[v, u]` matrix of a factorized pair of ConvFC layers (`x @ V_t Σ_t @ U_tᵀ`)."""
    return first.kernel.numpy().reshape(-1, first.units) @ second.kernel.numpy().reshape(first.units, -1)


def small_model(**kwargs):
    keras.utils.set_random_seed(0)
    return FasterRCNN(
        NUM_CLASSES, image_size=SIZE, head_units=(48, 32), max_detections=10,
        proposal_layer=ProposalLayer(pre_nms_top_k_test=200, post_nms_top_k_test=32), **kwargs,
    )


def images(count=2, config="small"):
    return np.stack([make_example("validation", i, config)["image"] for i in range(count)]).astype(np.float32)


@pytest.fixture(scope="module")
def trained():
    """The bundled, trained faster_rcnn_tiny (fc1: 7·7·96 = 4704 inputs → 256 units)."""
    return zoo.load("faster_rcnn_tiny", weights="shapes")


# --- the factorization ---------------------------------------------------------------------


def test_full_rank_factorized_head_matches_numpy_reference(rng):
    pooled = rng.uniform(0, 2, size=(2, 5, 7, 7, 8)).astype(np.float32)
    full = RoIHead(NUM_CLASSES, head_units=(16, 12), pool_size=7)
    full(pooled)
    # fc1: v = 7·7·8 = 392, u = 16, full rank 16; fc2: 16 × 12, full rank 12.
    factorized = RoIHead(NUM_CLASSES, head_units=(16, 12), pool_size=7, head_ranks=(16, 12))
    factorized(pooled)
    for (old, _), (first, second) in zip(full.fc_layers(), factorized.fc_layers()):
        v_kernel, u_kernel, _ = svd_factorize(old.kernel.numpy(), first.units)
        first.set_weights([v_kernel])
        second.set_weights([u_kernel, old.bias.numpy()])
    for layer in ("cls", "box"):
        getattr(factorized, layer).set_weights(getattr(full, layer).get_weights())

    want_logits, want_deltas = numpy_head(full, pooled)
    for head in (full, factorized):
        logits, deltas = head(pooled)
        np.testing.assert_allclose(logits, want_logits, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(deltas, want_deltas, rtol=1e-4, atol=1e-4)
    assert [fc.name for fc in factorized.fcs] == ["fc1_svd_v", "fc1_svd_u", "fc2_svd_v", "fc2_svd_u"]
    assert not factorized.fcs[0].use_bias and factorized.fcs[0].kernel_size == (7, 7)
    assert factorized.fcs[1].kernel_size == (1, 1) and factorized.fcs[1].use_bias


def test_truncation_error_is_the_discarded_singular_values(rng):
    kernel = rng.standard_normal((3, 3, 4, 10)).astype(np.float32)  # v = 36, u = 10
    sigma = np.linalg.svd(kernel.reshape(36, 10).astype(np.float64), compute_uv=False)
    for rank in range(1, 11):
        first, second, singular = svd_factorize(kernel, rank)
        assert first.shape == (3, 3, 4, rank) and second.shape == (1, 1, rank, 10)
        np.testing.assert_allclose(singular, sigma, rtol=1e-10)
        error = np.linalg.norm(kernel.reshape(36, 10) - first.reshape(36, rank) @ second.reshape(rank, 10))
        # Eckart–Young: ‖W − W_t‖_F² = Σ_{i>t} σ_i² (float32 factors: ~1e-6 relative).
        np.testing.assert_allclose(error, np.sqrt(np.sum(sigma[rank:] ** 2)), rtol=1e-4, atol=1e-5)


def test_svd_factorize_rejects_bad_ranks():
    kernel = np.zeros((3, 3, 4, 10), np.float32)
    for rank in (0, 11, 2.0, True):
        with pytest.raises(ValueError, match=rf"`rank` must be an int in \[1, min\(36, 10\)\], got {rank!r}"):
            svd_factorize(kernel, rank)


# --- truncate_head_svd -----------------------------------------------------------------------


def test_truncated_model_copies_weights_and_has_the_discarded_error():
    model = small_model()
    pairs = model.roi_head.fc_layers()
    full_kernel = pairs[0][0].kernel.numpy().reshape(-1, 48)  # v = 7·7·96 = 4704
    compressed = truncate_head_svd(model, 8)
    assert compressed.head_ranks == (8, None) and model.head_ranks == (None, None)
    assert compressed.get_config()["head_ranks"] == [8, None]

    first, second = compressed.roi_head.fc_layers()[0]
    sigma = np.linalg.svd(full_kernel.astype(np.float64), compute_uv=False)
    error = np.linalg.norm(full_kernel - effective_kernel(first, second))
    np.testing.assert_allclose(error, np.sqrt(np.sum(sigma[8:] ** 2)), rtol=1e-4)
    np.testing.assert_array_equal(second.bias.numpy(), pairs[0][0].bias.numpy())

    # Every other layer's weights are copied unchanged.
    for old, new in [(pairs[1][0], compressed.roi_head.fc_layers()[1][0]),
                     (model.roi_head.cls, compressed.roi_head.cls), (model.roi_head.box, compressed.roi_head.box),
                     (model.backbone, compressed.backbone), (model.rpn_head, compressed.rpn_head)]:
        for a, b in zip(old.get_weights(), new.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)


def test_per_layer_ranks_and_retruncation():
    model = small_model()
    both = truncate_head_svd(model, [8, 4])
    assert both.head_ranks == (8, 4)
    assert [fc.name for fc in both.roi_head.fcs] == ["fc1_svd_v", "fc1_svd_u", "fc2_svd_v", "fc2_svd_u"]
    # Re-truncating a factorized layer works on its product; `None` keeps a factorization.
    again = truncate_head_svd(both, [4, None])
    assert again.head_ranks == (4, 4)
    product = effective_kernel(*both.roi_head.fc_layers()[0])
    sigma = np.linalg.svd(product.astype(np.float64), compute_uv=False)
    error = np.linalg.norm(product - effective_kernel(*again.roi_head.fc_layers()[0]))
    np.testing.assert_allclose(error, np.sqrt(np.sum(sigma[4:] ** 2)), rtol=1e-3, atol=1e-6)
    for a, b in zip(both.roi_head.fcs[2].get_weights(), again.roi_head.fcs[2].get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_parameter_count_follows_the_formula():
    model = small_model()
    v, u, t = 7 * 7 * 96, 48, 8
    compressed = truncate_head_svd(model, t)
    head_before, head_after = model.roi_head.count_params(), compressed.roi_head.count_params()
    # fc1: v·u + u → t·v (no bias) + t·u + u.
    assert head_before - head_after == (v * u + u) - (t * v + t * u + u)
    assert model.count_params() - compressed.count_params() == v * u - t * (v + u)


@pytest.mark.parametrize(
    "rank, message",
    [
        (0, "rank of FC layer 1 must be a positive int, got 0"),
        (-3, "rank of FC layer 1 must be a positive int, got -3"),
        ([8, 2.5], "rank of FC layer 2 must be a positive int, got 2.5"),
        (48, r"rank of FC layer 1 must be below min\(inputs, units\) = min\(4704, 48\), got 48"),
        ([None, 32], r"rank of FC layer 2 must be below min\(inputs, units\) = min\(48, 32\), got 32"),
        ([8], r"`rank` must be an int \(the first FC layer\) or a list of 2 ints / None .* got \[8\]"),
        ("8", r"`rank` must be an int .* got '8'"),
        (True, r"`rank` must be an int .* got True"),
    ],
)
def test_bad_ranks_are_one_line_errors(rank, message):
    model = small_model()
    with pytest.raises(ValueError, match=message) as error:
        truncate_head_svd(model, rank)
    assert "\n" not in str(error.value)


def test_rank_without_savings_warns_and_bad_models_are_rejected():
    model = small_model()
    with pytest.warns(UserWarning, match=r"rank 20 of FC layer 2 \(48 × 32\) saves no parameters"):
        truncate_head_svd(model, [None, 20])
    with pytest.raises(ValueError, match="`model` must be a kerasdet.models.FasterRCNN, got Sequential"):
        truncate_head_svd(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]), 1)


def test_head_ranks_config_is_checked():
    with pytest.raises(ValueError, match=r"`head_ranks` needs one entry per FC layer \(2 for head_units \(48, 32\)\)"):
        small_model(head_ranks=[8])
    with pytest.raises(ValueError, match=r"`head_ranks\[1\]` must be None or a positive int, got 0"):
        small_model(head_ranks=[8, 0])
    with pytest.raises(ValueError, match=r"`head_ranks\[0\]` = 64 exceeds the layer's 48 units"):
        small_model(head_ranks=[64, None])
    head = RoIHead(NUM_CLASSES, head_units=(16,), pool_size=1, head_ranks=(12,))
    with pytest.raises(ValueError, match=r"`head_ranks\[0\]` = 12 exceeds min\(inputs, units\) = min\(8, 16\)"):
        head.build((None, None, 1, 1, 8))


def test_full_rank_head_keeps_layer_names():
    model = small_model()
    assert [fc.name for fc in model.roi_head.fcs] == ["fc1", "fc2"]
    assert model.head_ranks == (None, None) and model.get_config()["head_ranks"] is None


# --- the trained model, saving, export -------------------------------------------------------


def test_compressed_trained_model_still_detects(trained):
    # Validation images with objects (image 1 has none).
    examples = [make_example("validation", i) for i in range(6)]
    batch = np.stack([e["image"] for e in examples if len(e["classes"])][:4]).astype(np.float32)
    compressed = truncate_head_svd(trained, 64)  # 1.27 M → 0.39 M head parameters
    want, got = trained(batch), compressed(batch)
    assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in want.items()}
    boxes, scores, n = got["boxes"].numpy(), got["scores"].numpy(), got["num_detections"].numpy()
    classes = got["classes"].numpy()
    assert (n > 0).all()
    assert (boxes >= 0).all() and (boxes <= 256).all()
    assert ((classes >= 0) & (classes < 5)).all()
    for i in range(len(batch)):
        assert (scores[i, n[i]:] == 0).all() and (scores[i, : n[i]] >= 0.05 - 1e-6).all()
        assert (np.diff(scores[i, : n[i]]) <= 1e-6).all()
        # The most confident detection survives compression: same class, near-same box.
        top = want["boxes"].numpy()[i, 0]
        assert int(classes[i, 0]) == int(want["classes"].numpy()[i, 0])
        np.testing.assert_allclose(boxes[i, 0], top, atol=4.0)
        assert abs(scores[i, 0] - float(want["scores"].numpy()[i, 0])) < 0.05


def test_keras_round_trip(tmp_path):
    compressed = truncate_head_svd(small_model(), [8, 4])
    batch = images()
    expected = compressed(batch)
    path = tmp_path / "compressed.keras"
    compressed.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, FasterRCNN) and loaded.head_ranks == (8, 4)
    config, loaded_config = compressed.get_config(), loaded.get_config()
    for key in ("num_classes", "backbone", "image_size", "head_units", "head_ranks"):
        assert loaded_config[key] == config[key]
    for key in expected:
        np.testing.assert_allclose(loaded(batch)[key], expected[key], atol=1e-4)
    rebuilt = FasterRCNN.from_config(compressed.get_config())
    assert [fc.kernel.shape for fc in rebuilt.roi_head.fcs] == [fc.kernel.shape for fc in compressed.roi_head.fcs]


def test_export_builtin_only_smaller_and_same_detections(trained, tmp_path):
    compressed = truncate_head_svd(trained, 32)
    full_path = export(trained, tmp_path / "full.tflite", "tflite")
    path = export(compressed, tmp_path / "svd.tflite", "tflite")
    with open(path, "rb") as f:
        ops = tflite_op_names(f.read())
    assert not [op for op in ops if op.startswith("CUSTOM") or op.startswith("FLEX")], ops
    # fc1 is 4704 × 256 floats (4.8 MB); rank 32 keeps 32 · (4704 + 256) (0.6 MB).
    saved = (4704 * 256 - 32 * (4704 + 256)) * 4
    size_diff = tmp_path.joinpath("full.tflite").stat().st_size - tmp_path.joinpath("svd.tflite").stat().st_size
    assert abs(size_diff - saved) < 0.02 * saved, (size_diff, saved)
    assert full_path

    image = make_example("validation", 0)["image"]
    want = compressed(image[None].astype(np.float32))
    got = TFLiteDetector(path).detect(image)
    n = int(want["num_detections"][0])
    assert len(got["scores"]) == n > 0
    top = min(n, 5)  # the valid rows only: past num_detections the Keras output is padding
    np.testing.assert_allclose(got["scores"][:top], want["scores"][0, :top], atol=2e-3)
    np.testing.assert_allclose(got["boxes"][:top], want["boxes"][0, :top], atol=0.5)


def test_cli_export_head_svd_rank(trained, tmp_path, capsys):
    from kerasdet.cli import export as command

    source = tmp_path / "tiny.keras"
    trained.save(source)
    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers(dest="command"))
    output = tmp_path / "tiny_svd.tflite"
    args = parser.parse_args(["export", "--model", str(source), "--output", str(output), "--head-svd-rank", "32"])
    assert command.run(args) == 0
    assert "wrote" in capsys.readouterr().out
    assert output.stat().st_size < 0.5 * 1.3e6 * 4  # the full model is ~5.3 MB of float32
    assert command.head_svd_ranks([64, 0]) == [64, None] and command.head_svd_ranks([8]) == 8


def test_docstring_example():
    import doctest

    import kerasdet
    from kerasdet.models import compress

    globs = {"kerasdet": kerasdet, "truncate_head_svd": truncate_head_svd}
    (test,) = doctest.DocTestFinder().find(compress.truncate_head_svd, "truncate_head_svd", globs=globs)
    assert doctest.DocTestRunner().run(test).failed == 0
