"""Autoanchor: ratio metric / BPR against loops, planted anchors recovered, config, CLI."""

import argparse
import math

import numpy as np
import pytest
import yaml

from kerasdet.anchors import (
    anchor_fit,
    autoanchor,
    flatten_anchors,
    kmeans_anchors,
    ratio_metric,
    read_config_anchors,
    read_config_image_size,
    split_levels,
    write_anchors_to_config,
)
from kerasdet.anchors.autoanchor import _Fitness
from kerasdet.layers import AnchorGenerator

PLANTED = np.array([[12.0, 30.0], [60.0, 40.0], [150.0, 260.0]])


def planted_boxes(n=3000, seed=0, spread=0.08):
    rng = np.random.default_rng(seed)
    return PLANTED[rng.integers(0, 3, n)] * np.exp(rng.normal(0, spread, (n, 2)))


def loop_metric(wh, anchors):
    """The ratio metric written out box by box, anchor by anchor."""
    out = np.zeros((len(wh), len(anchors)))
    for i, (w, h) in enumerate(wh):
        for j, (aw, ah) in enumerate(anchors):
            out[i, j] = min(w / aw, aw / w, h / ah, ah / h)
    return out


def test_ratio_metric_bpr_and_fitness_match_loops():
    rng = np.random.default_rng(1)
    wh = rng.uniform(1, 300, (200, 2))
    anchors = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
    k, counts = flatten_anchors(anchors)
    assert counts == [3, 3, 3] and k.shape == (9, 2)
    ref = loop_metric(wh, k)
    np.testing.assert_allclose(ratio_metric(wh, anchors), ref, rtol=1e-12)
    bpr, aat = anchor_fit(wh, anchors, threshold=4.0)
    # A box fits when max(w/aw, aw/w, h/ah, ah/h) < 4.
    fits = np.array([[max(w / aw, aw / w, h / ah, ah / h) < 4 for aw, ah in k] for w, h in wh])
    assert bpr == pytest.approx(fits.any(1).mean()) and aat == pytest.approx(fits.sum(1).mean())
    best = ref.max(1)
    want = np.mean(best * (best > 0.25))  # YOLOv5's anchor fitness
    assert _Fitness(wh, 9, 4.0)(k) == pytest.approx(want, rel=1e-5)


def test_learned_anchors_recover_planted_shapes():
    wh = planted_boxes()
    k = kmeans_anchors(wh, 3, seed=0)
    assert k.dtype == np.float32 and k.shape == (3, 2)
    np.testing.assert_allclose(k, PLANTED, rtol=0.08)  # sorted by area, like PLANTED
    np.testing.assert_array_equal(k, kmeans_anchors(wh, 3, seed=0))  # deterministic


def test_autoanchor_raises_bpr_and_keeps_level_order():
    wh = planted_boxes(2000, seed=2)
    # Two levels, the larger anchors listed first: learned ones must keep that layout.
    poor = [[200.0, 200.0, 300.0, 300.0], [100.0, 100.0, 120.0, 120.0]]
    result = autoanchor(wh, poor, generations=300, seed=0)
    assert result.bpr_before < 0.9 and result.replaced
    assert result.bpr_after > 0.98 and result.bpr_after == result.bpr_learned
    big, small = (np.reshape(level, (-1, 2)) for level in result.anchors)
    assert big.prod(1).min() >= small.prod(1).max()
    # Ready for AnchorGenerator, one level per stride.
    gen = AnchorGenerator(anchors=result.anchors, stride=(32, 16))
    assert gen.anchors_per_location == [2, 2]
    # RPN-style: one level of k anchors learned from scratch.
    rpn = autoanchor(wh, num_anchors=3, generations=100)
    assert rpn.replaced and math.isnan(rpn.bpr_before) and len(rpn.anchors) == 1
    np.testing.assert_allclose(np.reshape(rpn.anchors[0], (3, 2)), PLANTED, rtol=0.1)


def test_good_anchors_are_left_alone_and_worse_ones_not_taken():
    wh = planted_boxes(1000, seed=3)
    good = [PLANTED.reshape(-1).tolist()]
    result = autoanchor(wh, good)
    assert not result.replaced and result.learned is None and result.bpr_before == 1.0
    assert result.anchors == [[float(v) for v in good[0]]]
    forced = autoanchor(wh, good, force=True, generations=50)
    # Learned anchors cannot beat a BPR of 1: the current ones stay.
    assert not forced.replaced and forced.learned is not None and forced.anchors == result.anchors


def test_split_levels_follows_the_reference_order():
    learned = np.array([[5, 5], [50, 50], [10, 10], [100, 100]], float)
    reference = np.array([[90, 90], [80, 80], [4, 4], [6, 6]], float)
    levels = split_levels(learned, [2, 2], reference)
    assert levels == [[50.0, 50.0, 100.0, 100.0], [5.0, 5.0, 10.0, 10.0]]
    assert split_levels(learned, [2, 2]) == [[5.0, 5.0, 10.0, 10.0], [50.0, 50.0, 100.0, 100.0]]


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        anchor_fit(np.ones((3, 3)), [[1, 1]])
    with pytest.raises(ValueError, match="positive finite"):
        anchor_fit([[1.0, 0.0]], [[1, 1]])
    with pytest.raises(ValueError, match="level 0 must list"):
        flatten_anchors([[1, 2, 3]])
    with pytest.raises(ValueError, match="threshold"):
        anchor_fit([[1.0, 1.0]], [[1, 1]], threshold=1.0)
    with pytest.raises(ValueError, match="need at least num_anchors=5 boxes"):
        kmeans_anchors(planted_boxes(4), 5)
    with pytest.raises(ValueError, match="num_anchors"):
        autoanchor(planted_boxes(10))
    with pytest.raises(ValueError, match="does not split evenly"):
        autoanchor(planted_boxes(30), num_anchors=3, num_levels=2)


def test_write_anchors_to_config(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text("# a comment\nname: tiny\nbackbone: {depth: 3}\nanchors:\n  - [1, 2]\nnum_classes: 5\n")
    data = write_anchors_to_config(path, [np.array([10.5, 13, 16, 30], np.float32), [33, 23]])
    loaded = yaml.safe_load(path.read_text())
    assert loaded == data
    assert list(loaded) == ["name", "backbone", "anchors", "num_classes"]  # key order kept
    assert loaded["anchors"] == [[10.5, 13.0, 16.0, 30.0], [33.0, 23.0]]
    assert read_config_anchors(path) == loaded["anchors"]
    out = tmp_path / "new" / "other.yaml"
    write_anchors_to_config(path, [[1, 2]], output=out)
    assert yaml.safe_load(out.read_text())["name"] == "tiny"
    assert read_config_anchors(path) == loaded["anchors"]  # the source is untouched
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="expected a YAML mapping"):
        write_anchors_to_config(tmp_path / "list.yaml", [[1, 2]])
    with pytest.raises(ValueError, match="levels"):
        write_anchors_to_config(path, [[1, 2, 3]])


def test_zoo_layout_model_anchors(tmp_path):
    """Zoo configs keep anchors and image size under `model`; sizes x ratios are expanded."""
    path = tmp_path / "faster_rcnn.yaml"
    path.write_text(
        "name: frcnn\nfamily: faster_rcnn\nmodel:\n  image_size: [256, 320]\n  anchors:\n"
        "    stride: 16\n    sizes: [32, 64]\n    aspect_ratios: [0.5, 2.0]\n  pool_size: 7\n"
    )
    assert read_config_image_size(path) == (256, 320)
    (level,) = read_config_anchors(path)
    k = np.reshape(level, (-1, 2))
    # The same shapes AnchorGenerator builds: w = S/sqrt(r), h = S*sqrt(r), ratio-major.
    np.testing.assert_allclose(k, AnchorGenerator(sizes=[32, 64], aspect_ratios=[0.5, 2.0]).shapes[0])
    write_anchors_to_config(path, [[10.0, 20.0, 30.0, 40.0]])
    data = yaml.safe_load(path.read_text())
    assert data["model"]["anchors"] == {"stride": 16, "wh": [[10.0, 20.0, 30.0, 40.0]]}
    assert list(data["model"]) == ["image_size", "anchors", "pool_size"] and "anchors" not in data
    assert read_config_anchors(path) == [[10.0, 20.0, 30.0, 40.0]]


def _cli(argv):
    from kerasdet.cli import autoanchor as command

    parser = argparse.ArgumentParser(prog="kerasdet")
    command.register(parser.add_subparsers(dest="command"))
    return command.run(parser.parse_args(["autoanchor", *argv]))


def test_cli_on_a_coco_folder(tmp_path, capsys):
    from test_data_coco import write_coco

    images = [
        (f"{i}.png", (64, 64), [(3, [2, 2, 8, 20]), (7, [30, 10, 30, 20])]) for i in range(6)
    ]
    data = write_coco(tmp_path / "coco", images=images)
    config = tmp_path / "model.yaml"
    config.write_text("image_size: [128, 128]\nanchors:\n  - [200, 200, 250, 250]\n")
    out = tmp_path / "tuned.yaml"
    assert _cli(["--data", data, "--config", str(config), "--generations", "100", "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert "12 boxes" in text and "at 128x128" in text
    assert "BPR before 0.0000" in text and "BPR after 1.0000" in text
    anchors = np.reshape(yaml.safe_load(out.read_text())["anchors"], (-1, 2))
    # The boxes, doubled by the resize to 128: (16, 40) and (60, 40).
    np.testing.assert_allclose(anchors, [[16, 40], [60, 40]], rtol=0.05)
    with pytest.raises(ValueError, match="--image-size"):
        _cli(["--data", data, "--num-anchors", "2"])


def test_cli_writes_nothing_when_the_anchors_fit(tmp_path, capsys):
    from test_data_coco import write_coco

    images = [(f"{i}.png", (64, 64), [(3, [2, 2, 8, 20])]) for i in range(3)]
    data = write_coco(tmp_path / "coco", images=images)
    out = tmp_path / "out.yaml"
    assert _cli(["--data", data, "--image-size", "64", "64", "--num-anchors", "1", "--output", str(out)]) == 0
    assert out.exists()  # no current anchors: learned ones are written
    capsys.readouterr()
    config = tmp_path / "fits.yaml"
    config.write_text("model:\n  image_size: [64, 64]\n  anchors: {stride: 16, sizes: [11], aspect_ratios: [2.5]}\n")
    again = tmp_path / "again.yaml"
    assert _cli(["--data", data, "--config", str(config), "--output", str(again)]) == 0
    text = capsys.readouterr().out
    assert "BPR before 1.0000" in text and "nothing learned" in text and "nothing written" in text
    assert not again.exists()
