"""kerasdet.export.export: SavedModel and builtin-only TFLite files of tiny detectors, checked
against the Keras models they came from (and LiteRT / a TensorFlow-only process)."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasdet.data.shapes import make_example
from kerasdet.demo import check_parity
from kerasdet.export import BuiltinOpsError, export, read_metadata, tflite_op_names
from kerasdet.lite import TFLiteDetector
from kerasdet.models import FasterRCNN, ProposalLayer, overfeat_classifier
from kerasdet.models.overfeat_detector import overfeat_detector
from kerasdet.models.overfeat_localizer import overfeat_localizer

SIZE = (128, 128)
CLASS_NAMES = ["circle", "square", "triangle"]


# --- models ------------------------------------------------------------------------------


def sharpen(layer, factor):
    """Scales a layer's kernel so an untrained model gives confident, varied scores (an
    untrained softmax over C + 1 classes sits near 1 / (C + 1), below any useful
    threshold, and the parity check would compare nothing)."""
    kernel, *rest = layer.get_weights()
    layer.set_weights([kernel * factor, *rest])


def tiny_faster_rcnn(score_threshold=0.05):
    keras.utils.set_random_seed(0)
    model = FasterRCNN(
        len(CLASS_NAMES), image_size=SIZE, head_units=(64, 64), max_detections=10,
        score_threshold=score_threshold,
        proposal_layer=ProposalLayer(pre_nms_top_k_test=200, post_nms_top_k_test=32),
    )
    sharpen(model.roi_head.cls, 300.0)
    sharpen(model.roi_head.box, 50.0)
    return model


def tiny_overfeat(merge):
    keras.utils.set_random_seed(1)
    classifier = overfeat_classifier("tiny", num_classes=len(CLASS_NAMES) + 1)
    localizer = overfeat_localizer(classifier, "tiny", num_classes=len(CLASS_NAMES))
    sharpen(classifier.get_layer("logits"), 30.0)
    # Window-sized boxes with small random offsets: an untrained regressor's boxes are
    # often inverted (y2 < y1), and IoU says nothing about those.
    regressor = localizer.get_layer("reg_boxes")
    kernel, _ = regressor.get_weights()
    regressor.set_weights([kernel * 0.05, np.tile([-0.3, -0.3, 0.3, 0.3], len(CLASS_NAMES)).astype("float32")])
    return overfeat_detector(
        classifier, localizer, "tiny", image_size=SIZE, scales=(1.0, 1.4), merge=merge,
        score_threshold=0.3, max_detections=10,
    )


@keras.saving.register_keras_serializable(package="kerasdet_tests")
class WholeImageDetector(keras.layers.Layer):
    """A toy detector with a known answer, for any input size: one box covering the whole
    input, class 1, score = mean pixel / 255, reported when the score is ≥ 0.1."""

    def call(self, images):
        batch = tf.shape(images)[0]
        height = tf.cast(tf.shape(images)[1], tf.float32)
        width = tf.cast(tf.shape(images)[2], tf.float32)
        score = tf.reduce_mean(images, axis=[1, 2, 3]) / 255.0  # [B]
        found = score >= 0.1
        box = tf.stack([0.0, 0.0, height, width])
        boxes = tf.where(found[:, None, None], tf.tile(box[None, None], [batch, 1, 1]), 0.0)
        return {
            "boxes": tf.concat([boxes, tf.zeros([batch, 1, 4])], axis=1),
            "scores": tf.concat([tf.where(found, score, 0.0)[:, None], tf.zeros([batch, 1])], axis=1),
            "classes": tf.concat([tf.where(found, 1, 0)[:, None], tf.zeros([batch, 1], tf.int32)], axis=1),
            "num_detections": tf.cast(found, tf.int32),
        }


def whole_image_model(shape=(None, None, 3)):
    images = keras.Input(shape, name="images")
    return keras.Model(images, WholeImageDetector(name="detector")(images), name="whole_image")


def sample_images(count=3, size=SIZE):
    config = {(128, 128): "small", (256, 256): "default"}[size]
    return np.stack([make_example("validation", i, config)["image"] for i in range(count)])


# --- comparisons ---------------------------------------------------------------------------


def assert_parity(expected, got):
    """Every expected detection with score ≥ 0.3 has a detection of its class in `got` with
    IoU ≥ 0.9 and |Δscore| ≤ 0.02 (the issue's rule, `kerasdet.demo.check_parity`); returns
    the number compared. Both arguments: dicts of `[n, ...]` arrays of one image."""
    report = check_parity([expected], [got])
    assert report.matched == report.compared, "no match for " + "\n".join(report.failures)
    return report.compared


def rows(batch_outputs, i=0):
    """Detections of image `i` of a batched detections dict, as `[n, ...]` NumPy arrays."""
    n = int(np.asarray(batch_outputs["num_detections"])[i])
    return {k: np.asarray(batch_outputs[k])[i, :n] for k in ("boxes", "scores", "classes")}


def keras_detections(model, images):
    out = model(np.asarray(images, np.float32), training=False)
    return [rows(out, i) for i in range(len(images))]


# --- fixtures: one conversion per model, shared ---------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def frcnn():
    return tiny_faster_rcnn()


@pytest.fixture(scope="module")
def frcnn_tflite(frcnn, workdir):
    return export(frcnn, workdir / "frcnn.tflite", "tflite", class_names=CLASS_NAMES)


@pytest.fixture(scope="module")
def frcnn_saved_model(frcnn, workdir):
    return export(frcnn, workdir / "frcnn_saved_model", class_names=CLASS_NAMES)


@pytest.fixture(scope="module", params=["greedy", "nms", "greedy_nms"])
def overfeat(request, workdir):
    model = tiny_overfeat(request.param)
    path = export(model, workdir / f"overfeat_{request.param}.tflite", "tflite")
    return model, path


# --- TFLite ------------------------------------------------------------------------------------


def test_faster_rcnn_tflite_parity_and_signature(frcnn, frcnn_tflite):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=frcnn_tflite, num_threads=2)
    signature = interpreter.get_signature_list()["serving_default"]
    assert signature["inputs"] == ["images"]
    assert sorted(signature["outputs"]) == ["boxes", "classes", "num_detections", "scores"]
    runner = interpreter.get_signature_runner()
    detail = runner.get_input_details()["images"]
    assert list(detail["shape"]) == [1, *SIZE, 3] and detail["dtype"] == np.uint8

    images = sample_images()
    compared = 0
    for image, expected in zip(images, keras_detections(frcnn, images)):
        out = runner(images=image[None])
        assert out["boxes"].shape == (1, 10, 4) and out["classes"].dtype == np.int32
        compared += assert_parity(expected, rows(out))
    assert compared > 0, "the parity check compared no detection"


def test_overfeat_tflite_parity(overfeat):
    model, path = overfeat
    detector = TFLiteDetector(path)
    images = sample_images()
    compared = 0
    for image, expected in zip(images, keras_detections(model, images)):
        compared += assert_parity(expected, detector.detect(image))
    assert compared > 0, "the parity check compared no detection"


def test_runner_maps_boxes_back_to_any_image_size(frcnn, frcnn_tflite):
    detector = TFLiteDetector(frcnn_tflite)
    image = sample_images(1)[0]
    expected = keras_detections(frcnn, image[None])[0]
    assert len(expected["scores"]) > 0
    # 2× nearest-neighbour upscale: letterboxing halves it back exactly, so the runner
    # sees the same pixels and its boxes are the Keras boxes × 2.
    big = detector.detect(np.repeat(np.repeat(image, 2, axis=0), 2, axis=1))
    np.testing.assert_allclose(big["boxes"], expected["boxes"] * 2, atol=2e-3)
    np.testing.assert_allclose(big["scores"], expected["scores"], atol=1e-4)
    np.testing.assert_array_equal(big["classes"], expected["classes"])
    assert big["class_names"] == [CLASS_NAMES[c] for c in expected["classes"]]

    # A non-square image against an independent letterbox (tf.image.resize + zero pad).
    tall = np.ascontiguousarray(image[:, 16:96])  # 128 × 80
    scale = 128 / 128  # height fits; width 80 → 80
    boxed = tf.image.pad_to_bounding_box(tf.image.resize(tall, (128, 80)), 0, 0, 128, 128)
    want = keras_detections(frcnn, np.round(boxed.numpy())[None])[0]
    want["boxes"] = np.clip(want["boxes"] / scale, 0, [128, 80, 128, 80])
    got = detector.detect(tall)
    assert assert_parity(want, got) > 0
    assert (got["boxes"][:, 1::2] <= 80).all()


def test_tflite_files_use_builtin_ops_only(frcnn_tflite, overfeat):
    for path in (frcnn_tflite, overfeat[1]):
        with open(path, "rb") as f:
            ops = tflite_op_names(f.read())
        assert not [op for op in ops if op.startswith("CUSTOM")], ops
        assert "CONV_2D" in ops
    with open(frcnn_tflite, "rb") as f:
        assert "NON_MAX_SUPPRESSION_V5" in tflite_op_names(f.read())


def test_tflite_metadata(frcnn_tflite):
    assert read_metadata(frcnn_tflite) == {
        "format_version": 1,
        "class_names": CLASS_NAMES,
        "input_size": list(SIZE),
        "input_dtype": "uint8",
        "quantization": "float32",
    }
    assert TFLiteDetector(frcnn_tflite).class_names == tuple(CLASS_NAMES)


def test_dynamic_input_needs_input_size_for_tflite(workdir):
    model = whole_image_model()
    with pytest.raises(ValueError, match="input_size"):
        export(model, workdir / "dynamic.tflite", "tflite")
    assert not os.path.exists(workdir / "dynamic.tflite")
    path = export(model, workdir / "dynamic.tflite", "tflite", input_size=(48, 64))
    detector = TFLiteDetector(path)
    assert detector.input_size == (48, 64)
    # The known answer: one box over the whole image, score = mean / 255.
    image = np.full((96, 128, 3), 102, np.uint8)
    result = detector.detect(image)
    np.testing.assert_allclose(result["boxes"], [[0, 0, 96, 128]], atol=1e-4)
    np.testing.assert_allclose(result["scores"], [0.4], atol=1e-6)
    assert result["classes"].tolist() == [1]


def test_input_size_must_match_a_static_model(frcnn, workdir):
    with pytest.raises(ValueError, match=r"`input_size` \(64, 64\) differs from the model's static input size"):
        export(frcnn, workdir / "x.tflite", "tflite", input_size=(64, 64))
    with pytest.raises(ValueError, match="pair of positive ints"):
        export(frcnn, workdir / "x.tflite", "tflite", input_size=(0, 128))


def test_bad_arguments_are_one_line_errors(frcnn, workdir):
    with pytest.raises(ValueError, match=r"`quantization` must be one of \(None, 'float16', 'dynamic_int8', 'int8'\), got 'int4'"):
        export(frcnn, workdir / "x.tflite", "tflite", quantization="int4")
    with pytest.raises(ValueError, match=r"`format` must be one of \('saved_model', 'tflite'\), got 'onnx'"):
        export(frcnn, workdir / "x.onnx", "onnx")
    with pytest.raises(ValueError, match="representative_data=None"):
        export(frcnn, workdir / "x.tflite", "tflite", quantization="int8")
    with pytest.raises(ValueError, match="format='tflite' only"):
        export(frcnn, workdir / "sm", "saved_model", quantization="float16")
    with pytest.raises(ValueError, match="3 classes"):
        export(frcnn, workdir / "x.tflite", "tflite", class_names=["a", "b"])
    with pytest.raises(ValueError, match="detections dict"):
        export(overfeat_classifier("tiny", 3, input_shape=(86, 86, 3)), workdir / "x.tflite", "tflite")
    assert not os.path.exists(workdir / "x.tflite")


def test_failed_conversion_leaves_nothing_at_path(workdir):
    images = keras.Input((32, 32, 3), name="images")

    def crop(x):  # tf.image.crop_and_resize is not a TFLite builtin
        crops = tf.image.crop_and_resize(x, [[0.0, 0.0, 1.0, 1.0]], [0], [8, 8])
        score = tf.reduce_mean(crops)[None, None]
        return {
            "boxes": tf.zeros([1, 1, 4]), "scores": score,
            "classes": tf.zeros([1, 1], tf.int32), "num_detections": tf.ones([1], tf.int32),
        }

    model = keras.Model(images, keras.layers.Lambda(crop)(images))
    directory = workdir / "failure"
    directory.mkdir()
    path = directory / "model.tflite"
    with pytest.raises(BuiltinOpsError, match="builtin ops only"):
        export(model, path, "tflite")
    assert os.listdir(directory) == []  # no file, no temporary left behind

    path.write_bytes(b"an earlier export")
    with pytest.raises(BuiltinOpsError):
        export(model, path, "tflite")
    assert path.read_bytes() == b"an earlier export"
    assert os.listdir(directory) == ["model.tflite"]


# --- quantization ---------------------------------------------------------------------------


def int8_ops_outside(path, scopes):
    """Ops of a TFLite file that compute in int8 outside the name scopes `scopes`: ops with
    an int8 output not under a scope, except the QUANTIZE ops feeding only ops under one
    (a quantized layer's input)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()
    consumers = {}
    for op in ops:
        for i in op["inputs"]:
            consumers.setdefault(i, []).append(op)

    def inside(op):
        return all(any(s in tensors[i]["name"] for s in scopes) for i in op["outputs"])

    outside = []
    for op in ops:
        int8 = [i for i in op["outputs"] if tensors[i]["dtype"] == np.int8]
        if not int8:
            continue
        if op["op_name"] == "QUANTIZE":
            ok = all(inside(c) for i in int8 for c in consumers.get(i, []))
        else:
            ok = inside(op)
        if not ok:
            outside.append(f"{op['op_name']} -> {[tensors[i]['name'] for i in op['outputs']]}")
    return outside


@pytest.mark.slow  # two more conversions of the model (~25 s)
def test_float16_and_dynamic_int8_are_smaller_and_close(frcnn, frcnn_tflite, workdir):
    float_size = os.path.getsize(frcnn_tflite)
    images = sample_images()
    expected = keras_detections(frcnn, images)
    for quantization, max_ratio, min_matched in (("float16", 0.55, 1.0), ("dynamic_int8", 0.35, 0.8)):
        path = export(frcnn, workdir / f"frcnn_{quantization}.tflite", "tflite", quantization=quantization)
        assert os.path.getsize(path) < max_ratio * float_size, (quantization, os.path.getsize(path), float_size)
        assert read_metadata(path)["quantization"] == quantization
        detector = TFLiteDetector(path)
        report = check_parity(expected, [detector.detect(image) for image in images])
        # float16 weights are widened back to float32 on CPU: the same detections. int8
        # weights move the sharpened test model's scores enough to reorder a few NMS
        # survivors.
        fraction = report.matched / max(report.compared, 1)
        assert report.compared > 0 and fraction >= min_matched, (quantization, fraction)


def test_int8_keeps_box_arithmetic_float(frcnn, workdir):
    images = np.stack([make_example("train", i, "small")["image"] for i in range(8)]).astype("float32")
    # (images, ground truth) batches, as a training dataset yields them.
    data = tf.data.Dataset.from_tensor_slices((images, np.zeros([8, 1], "float32"))).batch(4)
    path = export(frcnn, workdir / "frcnn_int8.tflite", "tflite", quantization="int8", representative_data=data)
    with open(path, "rb") as f:
        ops = tflite_op_names(f.read())
    assert "QUANTIZE" in ops and not [op for op in ops if op.startswith("CUSTOM")]
    # Only the layers with weights run in int8: anchors, proposals, RoI coordinates,
    # decoding and NMS stay float.
    assert int8_ops_outside(path, ("/tiny_backbone", "/rpn_head", "/roi_head")) == []
    assert int8_ops_outside(path, ("/tiny_backbone", "/rpn_head"))  # the RoI head is int8
    result = TFLiteDetector(path).detect(sample_images(1)[0])
    assert len(result["scores"]) > 0
    assert (result["boxes"] >= 0).all() and (result["boxes"] <= 128).all()


def test_int8_overfeat_greedy_merge_stays_float(workdir):
    # Quantizing every op with an int8 kernel puts the greedy merge's loop state in int8,
    # and LiteRT aborts the process on the resulting file: only the dense network may be int8.
    model = tiny_overfeat("greedy")
    data = [make_example("train", i, "small")["image"] for i in range(4)]
    path = export(model, workdir / "overfeat_int8.tflite", "tflite", quantization="int8", representative_data=data)
    assert int8_ops_outside(path, ("/dense_windows",)) == []
    result = TFLiteDetector(path).detect(sample_images(1)[0])
    assert (result["boxes"] >= 0).all() and (result["boxes"] <= 128).all()


def test_representative_data_forms():
    from kerasdet.export.api import _representative_dataset

    image = np.full((64, 32, 3), 7, np.uint8)
    forms = {
        "list of images": [image, image],
        "batch array": np.stack([image, image]),
        "(images, gt) pairs": [(np.stack([image, image]), {"boxes": np.zeros([2, 1, 4])})],
        "TFDS examples": tf.data.Dataset.from_tensors({"image": image}).repeat(2),
        "float batches": tf.data.Dataset.from_tensor_slices(np.stack([image, image]).astype("float32")).batch(2),
    }
    for name, data in forms.items():
        samples = list(_representative_dataset(data, (32, 32))())
        assert len(samples) == 2, name
        sample = samples[0]["images"]
        assert sample.shape == (1, 32, 32, 3) and sample.dtype == np.uint8, name
        np.testing.assert_array_equal(sample[0, :, :16], 7)  # letterboxed: 64×32 → 32×16
        np.testing.assert_array_equal(sample[0, :, 16:], 0)
    many = list(_representative_dataset(np.zeros([150, 8, 8, 3], np.uint8), (8, 8))())
    assert len(many) == 100  # bounded
    with pytest.raises(ValueError, match="yielded no images"):
        _representative_dataset([], (8, 8))
    with pytest.raises(ValueError, match=r"representative_data.*got shape \(8, 8, 5\)"):
        _representative_dataset([np.zeros([8, 8, 5])], (8, 8))


# --- SavedModel --------------------------------------------------------------------------------


def test_saved_model_loads_and_runs_without_kerasdet(frcnn, frcnn_saved_model, workdir):
    images = sample_images(2)
    np.save(workdir / "images.npy", images)
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        import tensorflow as tf
        loaded = tf.saved_model.load({str(frcnn_saved_model)!r})
        serve = loaded.signatures["serving_default"]
        spec = serve.structured_input_signature[1]["images"]
        out = serve(images=tf.constant(np.load({str(workdir / "images.npy")!r})))
        np.savez({str(workdir / "outputs.npz")!r}, **{{k: v.numpy() for k, v in out.items()}})
        print(spec.dtype.name, spec.shape.as_list(), "kerasdet" in sys.modules, "keras" in sys.modules)
        """
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=str(workdir))
    assert result.returncode == 0, result.stderr[-2000:]
    dtype, *rest = result.stdout.strip().splitlines()[-1].split(" ", 1)
    assert dtype == "uint8"
    assert rest[0].startswith("[None, 128, 128, 3] False")  # no kerasdet import in that process
    outputs = np.load(workdir / "outputs.npz")
    assert set(outputs.files) == {"boxes", "scores", "classes", "num_detections"}
    assert outputs["classes"].dtype == np.int32 and outputs["num_detections"].dtype == np.int32
    compared = 0
    for i, expected in enumerate(keras_detections(frcnn, images)):
        compared += assert_parity(expected, rows(outputs, i))
        np.testing.assert_allclose(outputs["boxes"][i], frcnn(images[i : i + 1].astype("float32"))["boxes"][0], atol=1e-3)
    assert compared > 0


def test_saved_model_metadata_and_replacement(frcnn_saved_model, workdir):
    info = read_metadata(frcnn_saved_model)
    assert info["class_names"] == CLASS_NAMES and info["input_size"] == [128, 128]
    with open(os.path.join(frcnn_saved_model, "assets.extra", "kerasdet.json")) as f:
        assert json.load(f) == info
    # A dynamic model exports with a dynamic signature; exporting over an earlier
    # SavedModel replaces it; a non-SavedModel directory is not overwritten.
    path = workdir / "whole_image_saved_model"
    export(whole_image_model(), path)
    export(whole_image_model(), path)
    loaded = tf.saved_model.load(str(path))
    serve = loaded.signatures["serving_default"]
    assert serve.structured_input_signature[1]["images"].shape.as_list() == [None, None, None, 3]
    out = serve(images=tf.fill([2, 10, 20, 3], tf.constant(51, tf.uint8)))
    np.testing.assert_allclose(out["boxes"][:, 0].numpy(), [[0, 0, 10, 20]] * 2)
    np.testing.assert_allclose(out["scores"][:, 0].numpy(), [0.2, 0.2], atol=1e-6)
    assert [p for p in os.listdir(workdir) if p.startswith(".")] == []
    other = workdir / "not_a_saved_model"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a SavedModel"):
        export(whole_image_model(), other)
    assert os.listdir(other) == ["notes.txt"]
    with pytest.raises(FileExistsError, match="is a directory; expected a .tflite file path"):
        export(whole_image_model(), other, "tflite", input_size=(8, 8))


# --- CLI -------------------------------------------------------------------------------------


def _cli(argv):
    import argparse

    from kerasdet.cli import export as command

    parser = argparse.ArgumentParser(prog="kerasdet")
    command.register(parser.add_subparsers(dest="command"))
    return command.run(parser.parse_args(["export", *argv]))


def test_cli_export(workdir, capsys):
    model_path = workdir / "whole.keras"
    whole_image_model().save(model_path)
    output = workdir / "cli" / "whole.tflite"
    assert _cli(["--model", str(model_path), "--output", str(output), "--input-size", "32", "40", "--class-names", "a", "b"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert read_metadata(output)["class_names"] == ["a", "b"]
    assert TFLiteDetector(output).input_size == (32, 40)
    with pytest.raises(FileNotFoundError, match="no file"):
        _cli(["--model", str(workdir / "missing.keras"), "--output", str(output)])
    with pytest.raises(ValueError, match="--representative-data shapes"):
        _cli(["--model", str(model_path), "--output", str(output), "--input-size", "32", "40", "--quantization", "int8"])
