"""kerasdet.lite: letterboxing (against tf.image / the training pipeline), the metadata
entry of .tflite files, and TFLiteDetector on a toy detector with a known answer."""

import numpy as np
import pytest
import tensorflow as tf
from test_export import whole_image_model

from kerasdet.data import detection_dataset
from kerasdet.export import convert_builtin_only, convert_saved_model_builtin_only, export
from kerasdet.lite import (
    TFLiteDetector,
    add_tflite_metadata,
    as_rgb,
    letterbox,
    read_tflite_metadata,
    resize_bilinear,
)

INPUT = (48, 64)


@pytest.fixture(scope="module")
def toy_file(tmp_path_factory):
    """The whole-image toy detector at a 48×64 input, uint8 in, with class names."""
    path = tmp_path_factory.mktemp("lite") / "toy.tflite"
    return export(whole_image_model(), path, "tflite", input_size=INPUT, class_names=["background", "thing"])


@pytest.fixture(scope="module")
def detector(toy_file):
    return TFLiteDetector(toy_file, num_threads=1)


# --- letterbox ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "in_size, out_size", [((100, 150), (85, 128)), ((37, 53), (128, 128)), ((256, 256), (128, 128)), ((64, 80), (200, 31))]
)
def test_resize_bilinear_matches_tf_image_resize(rng, in_size, out_size):
    image = rng.uniform(0, 255, (*in_size, 3)).astype(np.float32)
    expected = tf.image.resize(image, out_size, method="bilinear").numpy()
    np.testing.assert_allclose(resize_bilinear(image, out_size), expected, atol=2e-3)


@pytest.mark.parametrize("in_size", [(100, 150), (150, 100), (128, 128), (30, 200), (300, 301)])
def test_letterbox_matches_the_training_pipeline(rng, in_size):
    image = rng.integers(0, 256, (*in_size, 3)).astype(np.uint8)
    bbox = np.array([[0.1, 0.2, 0.7, 0.9]], np.float32)  # normalized, as TFDS stores it
    example = {"image": image, "objects": {"bbox": bbox, "label": np.array([0])}}
    ds = tf.data.Dataset.from_tensors(example)
    want_image, want_gt = next(iter(detection_dataset(ds, image_size=(128, 128), batch_size=1, max_boxes=1)))
    padded, (sy, sx) = letterbox(image, (128, 128))
    np.testing.assert_allclose(padded, want_image.numpy()[0], atol=2e-3)
    # The pipeline's box (pixels of the padded image) maps back to the original's pixels.
    box = want_gt["boxes"].numpy()[0, 0] / np.array([sy, sx, sy, sx])
    np.testing.assert_allclose(box, bbox[0] * np.array([*in_size, *in_size]), rtol=1e-5)


def test_as_rgb_conversions_and_errors():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for image in (gray, gray[..., None]):
        rgb = as_rgb(image)
        assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8
        np.testing.assert_array_equal(rgb[..., 2], gray)
    with pytest.raises(ValueError, match=r"got shape \(2, 3, 4, 3\)"):
        as_rgb(np.zeros([2, 3, 4, 3]))
    with pytest.raises(ValueError, match=r"got shape \(3, 4, 4\)"):
        as_rgb(np.zeros([3, 4, 4]))
    with pytest.raises(ValueError, match="got dtype bool"):
        as_rgb(np.zeros([3, 4, 3], bool))
    with pytest.raises(ValueError, match=r"at least one pixel, got shape \(0, 4, 3\)"):
        as_rgb(np.zeros([0, 4, 3]))


# --- metadata ---------------------------------------------------------------------------------


def test_metadata_round_trip_keeps_the_model_working():
    from ai_edge_litert.interpreter import Interpreter

    flatbuffer = convert_builtin_only(lambda x: x * 2.0 + 1.0, [tf.TensorSpec([1, 3], tf.float32)])
    assert read_tflite_metadata(flatbuffer) is None
    tagged = add_tflite_metadata(flatbuffer, {"class_names": ["a"], "n": 1})
    assert read_tflite_metadata(tagged) == {"class_names": ["a"], "n": 1}
    retagged = add_tflite_metadata(tagged, {"n": 2})  # replaces, does not duplicate
    assert read_tflite_metadata(retagged) == {"n": 2}
    interpreter = Interpreter(model_content=retagged)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], np.array([[1, 2, 3]], np.float32))
    interpreter.invoke()
    np.testing.assert_allclose(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]), [[3, 5, 7]])


# --- TFLiteDetector ----------------------------------------------------------------------------


def test_detector_reads_input_and_class_names(detector):
    assert detector.input_size == INPUT
    assert detector.class_names == ("background", "thing")
    assert detector.metadata["input_dtype"] == "uint8"
    assert "input_size=(48, 64)" in repr(detector)


@pytest.mark.parametrize("shape", [(48, 64), (96, 128), (100, 50), (30, 200), (480, 640)])
def test_detect_maps_the_box_to_the_original_image(detector, shape, rng):
    image = rng.integers(100, 256, (*shape, 3)).astype(np.uint8)
    result = detector.detect(image)
    # The toy box covers the whole (letterboxed) input; mapped back and clipped it is
    # the whole original image.
    np.testing.assert_allclose(result["boxes"], [[0, 0, shape[0], shape[1]]], rtol=1e-5)
    padded, _ = letterbox(image, INPUT)
    np.testing.assert_allclose(result["scores"], [np.round(padded).mean() / 255], atol=1e-3)
    assert result["classes"].tolist() == [1] and result["class_names"] == ["thing"]
    assert result["boxes"].dtype == np.float32 and result["classes"].dtype == np.int32


def test_detect_accepts_grayscale_and_float(detector):
    gray = np.full((30, 40), 200, np.uint8)
    for image in (gray, gray[..., None], gray.astype(np.float32), np.repeat(gray[..., None], 3, -1)):
        result = detector.detect(image)
        np.testing.assert_allclose(result["boxes"], [[0, 0, 30, 40]], rtol=1e-5)
        np.testing.assert_allclose(result["scores"], [200 / 255], atol=1e-3)


def test_detect_with_no_detection(detector):
    result = detector.detect(np.zeros((50, 50, 3), np.uint8))  # score 0 < 0.1: nothing found
    assert result["boxes"].shape == (0, 4) and result["scores"].shape == (0,) and result["classes"].shape == (0,)
    assert result["class_names"] == []


def test_detect_batch(detector):
    images = [np.full((20, 20, 3), 0, np.uint8), np.full((10, 30, 3), 255, np.uint8)]
    results = detector.detect_batch(images)
    assert [len(r["scores"]) for r in results] == [0, 1]
    np.testing.assert_allclose(results[1]["boxes"], [[0, 0, 10, 30]], rtol=1e-5)


def test_detect_rejects_bad_images(detector):
    with pytest.raises(ValueError, match=r"\[height, width, 3\] RGB .* got shape \(1, 48, 64, 3\)"):
        detector.detect(np.zeros([1, 48, 64, 3], np.uint8))
    with pytest.raises(ValueError, match=r"got shape \(48, 64, 4\)"):
        detector.detect(np.zeros([48, 64, 4], np.uint8))
    with pytest.raises(ValueError, match=r"got shape \(5,\)"):
        detector.detect(np.zeros([5], np.uint8))


def test_num_threads(toy_file):
    detector = TFLiteDetector(toy_file, num_threads=2)
    detector.num_threads = 1
    assert detector.num_threads == 1
    assert len(detector.detect(np.full((8, 8, 3), 128, np.uint8))["scores"]) == 1
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="`num_threads` must be a positive int"):
            detector.num_threads = bad


def test_detector_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no TFLite file"):
        TFLiteDetector(tmp_path / "missing.tflite")
    path = tmp_path / "plain.tflite"  # converted without a signature
    path.write_bytes(convert_builtin_only(lambda x: x + 1.0, [tf.TensorSpec([1, 8, 8, 3], tf.float32)]))
    with pytest.raises(ValueError, match="no 'serving_default' signature"):
        TFLiteDetector(path)


def test_detector_with_float_input_file(tmp_path):
    # A file whose signature takes float32 pixels (not written by `export`).
    model = whole_image_model()
    module = tf.Module()
    module.model = model
    module.serve = tf.function(
        lambda images: model(images), input_signature=[tf.TensorSpec([1, 16, 16, 3], tf.float32, name="images")]
    )
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": module.serve})
    path = tmp_path / "float.tflite"
    path.write_bytes(convert_saved_model_builtin_only(tmp_path / "sm"))
    detector = TFLiteDetector(path)
    assert detector.class_names is None and detector.metadata is None
    result = detector.detect(np.full((32, 32, 3), 127.5, np.float32))  # float pixels are not rounded
    np.testing.assert_allclose(result["scores"], [0.5], atol=1e-6)
    assert "class_names" not in result
