"""`kerasdet demo`: the parity rule, the demo's fresh images, and the demo end to end."""

import os
import re

import numpy as np
import pytest

from kerasdet.boxes import pairwise_iou
from kerasdet.cli import main
from kerasdet.data import make_example
from kerasdet.demo import check_parity, demo_examples
from kerasdet.demo.detector import DEMO_STREAM, PNG_NAME
from kerasdet.demo.parity import box_iou
from kerasdet.visualize import read_image

BOX = [10.0, 20.0, 110.0, 120.0]  # 100 × 100


def dets(*rows):
    """A detections dict from (box, score, class) rows."""
    return {
        "boxes": np.array([r[0] for r in rows], np.float32).reshape(-1, 4),
        "scores": np.array([r[1] for r in rows], np.float32),
        "classes": np.array([r[2] for r in rows], np.int32),
    }


# --- the parity rule ------------------------------------------------------------------------


def test_identical_detections_agree():
    a = dets((BOX, 0.9, 1), ([0, 0, 50, 50], 0.5, 3), ([5, 5, 9, 9], 0.1, 0))
    report = check_parity([a, dets()], [a, dets()])
    assert report.ok
    assert (report.compared, report.matched, report.failures) == (2, 2, ())  # 0.1 < 0.3: not compared


@pytest.mark.parametrize(
    "candidate, reason",
    [
        (dets((BOX, 0.9, 2)), "no detection of its class"),  # class changed
        (dets(([10, 20, 110, 135], 0.9, 1)), "IoU 0.870"),  # 100×115 box: IoU 0.87 < 0.9
        (dets((BOX, 0.87, 1)), "|Δscore| 0.030"),  # score off by 0.03 > 0.02
        (dets(), "no detection of its class"),  # detection lost
    ],
)
def test_mismatch_fails(candidate, reason):
    report = check_parity([dets((BOX, 0.9, 1))], [candidate], class_names=["a", "square"])
    assert not report.ok
    assert (report.compared, report.matched) == (1, 0)
    assert len(report.failures) == 1
    assert report.failures[0].startswith("image 0: square 0.900 at [10.0, 20.0, 110.0, 120.0]")
    assert reason in report.failures[0]


def test_match_just_inside_the_thresholds():
    # IoU 100/105 = 0.952 and Δscore 0.019: both within the rule.
    report = check_parity([dets((BOX, 0.9, 1))], [dets(([10, 20, 110, 125], 0.919, 1))])
    assert report.ok, report.failures


def test_one_candidate_must_pass_both_tests_at_once():
    # One candidate has the IoU, the other the score; neither has both.
    candidate = dets((BOX, 0.5, 1), ([10, 20, 110, 160], 0.9, 1))
    assert not check_parity([dets((BOX, 0.9, 1))], [candidate]).ok


def test_extra_candidate_detections_are_allowed_and_low_scores_ignored():
    reference = dets((BOX, 0.9, 1), ([0, 0, 30, 30], 0.29, 4))
    candidate = dets((BOX, 0.9, 1), ([50, 50, 90, 90], 0.8, 0))
    report = check_parity([reference], [candidate])
    assert report.ok and report.compared == 1


def test_nothing_compared_is_not_agreement():
    report = check_parity([dets(([0, 0, 30, 30], 0.2, 0))], [dets()])
    assert report.compared == 0 and not report.ok


def test_thresholds_are_arguments():
    reference, candidate = [dets((BOX, 0.9, 1))], [dets((BOX, 0.85, 1))]
    assert not check_parity(reference, candidate).ok
    assert check_parity(reference, candidate, max_score_diff=0.06).ok


def test_bad_inputs_are_errors():
    with pytest.raises(ValueError, match="`reference` has 2 images and `candidate` 1"):
        check_parity([dets(), dets()], [dets()])
    with pytest.raises(ValueError, match=r"`candidate\[0\]` must be a detections dict"):
        check_parity([dets()], [{"boxes": np.zeros([0, 4])}])
    with pytest.raises(ValueError, match=r"`reference\[0\]` has 1 boxes, 2 scores"):
        check_parity([{"boxes": [BOX], "scores": [0.5, 0.4], "classes": [1]}], [dets()])


def test_box_iou_matches_pairwise_iou(rng):
    corners = rng.uniform(0, 100, size=(20, 2, 2))
    boxes = np.concatenate([corners.min(1), corners.max(1)], axis=1)[:, [0, 1, 2, 3]]
    expected = pairwise_iou(boxes[:1], boxes).numpy()[0]
    np.testing.assert_allclose(box_iou(boxes[0], boxes), expected, rtol=1e-5, atol=1e-6)
    assert box_iou(BOX, np.zeros([0, 4])).shape == (0,)
    assert box_iou([0, 0, 0, 0], [[0, 0, 0, 0]])[0] == 0.0  # empty union, not NaN


# --- the demo's images ----------------------------------------------------------------------


def test_demo_images_are_fresh_and_reproducible():
    images = [e["image"] for e in demo_examples(4, seed=0)]
    assert all(image.shape == (256, 256, 3) and image.dtype == np.uint8 for image in images)
    again = [e["image"] for e in demo_examples(4, seed=0)]
    assert all(np.array_equal(a, b) for a, b in zip(images, again))
    other_seed = [e["image"] for e in demo_examples(4, seed=1)]
    assert not any(np.array_equal(a, b) for a, b in zip(images, other_seed))
    # Not images of the splits the weights were trained and selected on.
    for split in ("train", "validation"):
        split_images = [make_example(split, i)["image"] for i in range(4)]
        assert not any(np.array_equal(a, b) for a in images for b in split_images)
    assert DEMO_STREAM not in (0, 1)  # kerasdet_shapes' train / validation stream ids


def test_demo_example_arguments_are_checked():
    with pytest.raises(ValueError, match="positive integer, got 0"):
        demo_examples(0)
    with pytest.raises(ValueError, match="integer >= 0, got -1"):
        demo_examples(2, seed=-1)


# --- end to end -----------------------------------------------------------------------------


def test_demo_end_to_end(tmp_path, capsys):
    assert main(["demo", "--images", "4", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"keras +\d+ detections", out), out
    ap = re.findall(r"COCO AP (\d\.\d{3})  AP50 (\d\.\d{3})  AP75 (\d\.\d{3})", out)
    assert len(ap) == 2, out  # Keras and TFLite
    assert float(ap[0][1]) > 0.3, out  # trained weights find the shapes (AP50)
    agree = re.search(r"TFLite agrees: (\d+)/(\d+) detections", out)
    assert agree and agree.group(1) == agree.group(2) and int(agree.group(2)) > 0, out
    assert re.search(r"total +\d+\.\d s", out), out

    grid = read_image(tmp_path / PNG_NAME)
    assert grid.shape == (2 * 256 + 3 * 4, 2 * 256 + 3 * 4, 3)  # 2 × 2 cells, 4-px padding
    assert os.path.getsize(tmp_path / "faster_rcnn_tiny.tflite") > 100_000


@pytest.mark.slow
def test_demo_defaults_paths_and_failure(tmp_path, capsys, monkeypatch):
    # Default paths: the PNG in the current directory, the .tflite file in a temporary
    # directory that is deleted. A TFLite run that drifts must fail the demo.
    from kerasdet.lite import TFLiteDetector

    real_detect = TFLiteDetector.detect

    def drifting(self, image):
        result = real_detect(self, image)
        result["scores"] = result["scores"] - 0.05
        return result

    monkeypatch.setattr(TFLiteDetector, "detect", drifting)
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--images", "2", "--seed", "3"]) == 1
    out = capsys.readouterr().out
    assert "TFLite DISAGREES: 0/" in out and "|Δscore| 0.050" in out, out
    assert os.listdir(tmp_path) == [PNG_NAME]
    temporary = re.search(r"export +(\S+\.tflite) \(temporary", out).group(1)
    assert not os.path.exists(os.path.dirname(temporary))
