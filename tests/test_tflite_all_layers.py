"""One model that uses every foundation layer converts to builtin-op TFLite and matches."""

import keras
import numpy as np
import tensorflow as tf
from layer_checks import run_tflite

from kerasdet.demo.layers import FoundationDemoModel, run_layers_demo, synthetic_image
from kerasdet.export import convert_builtin_only, tflite_op_names

KEYS = [
    ("pooled_max", None),
    ("pooled_align", None),
    *[(group, key) for group in ("nms", "merge") for key in ("boxes", "scores", "classes", "num_detections")],
]


def _flat(outputs):
    return [outputs[g] if k is None else outputs[g][k] for g, k in KEYS]


def test_every_layer_converts_to_builtin_tflite_and_matches_keras():
    keras.utils.set_random_seed(1)
    size = (160, 224)
    model = FoundationDemoModel(image_size=size, num_proposals=16)
    image = synthetic_image(size, seed=1)
    expected = _flat(model(image))

    tflite_model = convert_builtin_only(
        lambda x: _flat(model(x)), [tf.TensorSpec([1, *size, 3], tf.float32)]
    )
    ops = tflite_op_names(tflite_model)
    assert ops and not [op for op in ops if op.startswith("CUSTOM") or "FLEX" in op.upper()], ops
    assert "GATHER" in ops or "GATHER_ND" in ops  # RoI pooling is built from gathers
    assert "NON_MAX_SUPPRESSION_V4" in ops or "NON_MAX_SUPPRESSION_V5" in ops

    actual = run_tflite(tflite_model, [image])
    assert len(actual) == len(expected)
    for (group, key), got, want in zip(KEYS, actual, expected):
        np.testing.assert_allclose(got, np.asarray(want), atol=1e-4, err_msg=f"{group}/{key}")


def test_demo_runs_and_reports_agreement(capsys):
    assert run_layers_demo(image_size=(128, 192)) == 0
    out = capsys.readouterr().out
    assert "LiteRT matches Keras: yes" in out
