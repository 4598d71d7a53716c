"""Issue 9: bad input → one clear line; valid but unusual input → trains with finite losses.

Models (Faster R-CNN, the OverFeat detector), the data pipeline, the zoo (YAML, weights files)
and the `kerasdet` commands. Every error is checked to be one line that names the bad value
and what was expected.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

from kerasdet import zoo
from kerasdet.cli import main
from kerasdet.data import detection_dataset
from kerasdet.models import FasterRCNN, ProposalLayer, checks
from kerasdet.zoo import config as zoo_config

SIZE = (64, 64)
NUM_CLASSES = 3


def one_line(error) -> str:
    text = str(error.value if hasattr(error, "value") else error)
    assert "\n" not in text and "Traceback" not in text, text
    return text


def small_model(**kwargs):
    keras.utils.set_random_seed(0)
    return FasterRCNN(
        NUM_CLASSES, image_size=SIZE, head_units=(32, 32), rpn_batch_size=32, rcnn_batch_size=16,
        max_detections=10,
        proposal_layer=ProposalLayer(pre_nms_top_k_train=200, post_nms_top_k_train=32, pre_nms_top_k_test=100,
                                     post_nms_top_k_test=16),
        **kwargs,
    )


@pytest.fixture(scope="module")
def model():
    return small_model()


def images(n=2, size=SIZE, channels=3, dtype="float32"):
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (n, *size, channels)).astype(dtype)


def truth(boxes, classes):
    return {"boxes": np.asarray(boxes, "float32"), "classes": np.asarray(classes, "int32")}


GOOD = truth([[[10, 10, 30, 40], [0, 0, 0, 0]], [[5, 5, 20, 20], [30, 30, 60, 50]]], [[1, -1], [2, 0]])


# --- images ------------------------------------------------------------------------------------

BAD_IMAGES = [
    (images(1)[0], "got shape (64, 64, 3): a single image; add the batch axis"),
    (images(1)[None], "got shape (1, 1, 64, 64, 3): rank 5"),
    (images(1, channels=1), "got shape (1, 64, 64, 1): 1 channel (grayscale"),
    (images(1, channels=4), "got shape (1, 64, 64, 4): 4 channels (RGBA?; drop the alpha channel"),
    (images(1).astype(bool), "got dtype bool; expected float32 pixel values"),
    (np.full([1, 64, 64, 3], "x"), "got dtype string"),
    (np.zeros([0, 64, 64, 3], "float32"), "got shape (0, 64, 64, 3): a batch of 0 images"),
    (np.zeros([1, 0, 0, 3], "float32"), "got shape (1, 0, 0, 3): 0×0 images have no pixels"),
    (images(1, size=(32, 32)), "32×32 images, but the model's static image_size is 64×64"),
]


@pytest.mark.parametrize(
    "bad, message", BAD_IMAGES,
    ids=["rank3", "rank5", "1-channel", "4-channels", "bool", "string", "empty-batch", "0x0", "too-small"],
)
def test_bad_images_are_one_line_errors_in_call_predict_and_losses(model, bad, message):
    for run in (
        lambda: model(bad),
        lambda: model.predict(bad, verbose=0),
        lambda: model.predict_on_batch(bad),
        lambda: model.compute_losses(bad, GOOD),
    ):
        with pytest.raises(ValueError) as error:
            run()
        text = one_line(error)
        assert text.startswith(f"{model.name}: `images` must be [batch, 64, 64, 3] (RGB, 0-255)") and message in text


def test_uint8_images_are_accepted(model):
    out = model(images(1).astype("uint8"))
    assert out["boxes"].shape == (1, 10, 4)


def test_symbolic_use_with_unknown_batch_is_accepted(model):
    # Keras builds and exports the model on symbolic inputs with batch None.
    inputs = keras.Input((*SIZE, 3))
    assert model(inputs)["boxes"].shape == (None, 10, 4)


# --- ground truth --------------------------------------------------------------------------------

def _replace(boxes=None, classes=None):
    gt = {k: v.copy() for k, v in GOOD.items()}
    if boxes is not None:
        gt["boxes"][boxes[0]] = boxes[1]
    if classes is not None:
        gt["classes"][classes[0]] = classes[1]
    return gt


BAD_TRUTH = [
    (_replace(boxes=((0, 0), [10, 10, np.nan, 40])),
     "ground_truth['boxes'][0, 0] = [10, 10, nan, 40] is not finite (1 such row); expected [y1, x1, y2, x2]"),
    (_replace(boxes=((1, 1), [np.inf, 0, 5, 5])), "ground_truth['boxes'][1, 1] = [inf, 0, 5, 5] is not finite"),
    # NaN in a padding row is still an error: padding rows must be finite.
    (_replace(boxes=((0, 1), [np.nan] * 4)), "ground_truth['boxes'][0, 1] = [nan, nan, nan, nan] is not finite"),
    (_replace(boxes=((1, 0), [5, 20, 20, 5])),
     "ground_truth['boxes'][1, 0] = [5, 20, 20, 5] has x2 < x1 (5 < 20) (1 such row); expected [y1, x1, y2, x2] "
     "with y1 <= y2 and x1 <= x2"),
    (_replace(boxes=((0, 0), [30, 10, 10, 40])), "ground_truth['boxes'][0, 0] = [30, 10, 10, 40] has y2 < y1 (10 < 30)"),
    (_replace(classes=((1, 1), 3)),
     "ground_truth['classes'][1, 1] = 3 is not a class id of this 3-class model (1 such row); expected 0..2, or -1 "
     "for a padding row"),
    (_replace(classes=((0, 1), -2)), "ground_truth['classes'][0, 1] = -2 is not a class id"),
    ({"boxes": np.zeros([2, 2, 5], "float32"), "classes": GOOD["classes"]},
     "ground_truth['boxes'] must be [batch, M, 4] yxyx pixels, got shape (2, 2, 5)"),
    ({"boxes": np.zeros([2, 4], "float32"), "classes": GOOD["classes"]},
     "ground_truth['boxes'] must be [batch, M, 4] yxyx pixels, got shape (2, 4); a single image's boxes?"),
    ({"boxes": GOOD["boxes"], "classes": np.zeros([2, 3], "int32")},
     "ground_truth['boxes'] (2, 2, 4) and ['classes'] (2, 3) differ in row count M (2 vs 3)"),
    ({"boxes": GOOD["boxes"][:1], "classes": GOOD["classes"][:1]}, "ground truth is for 1 images but the batch has 2"),
    ({"boxes": GOOD["boxes"], "labels": GOOD["classes"]}, "ground truth is missing ['classes']"),
    ((GOOD["boxes"], GOOD["classes"]), "ground truth must be a dict {'boxes'"),
    ({"boxes": GOOD["boxes"], "classes": GOOD["classes"] + 0.5}, "ground_truth['classes'][0, 0] = 1.5 is not a class id"),
]


@pytest.mark.parametrize("gt, message", BAD_TRUTH)
def test_bad_ground_truth_is_a_one_line_error_in_eager_losses_and_fit(model, gt, message):
    with pytest.raises(ValueError) as error:
        model.compute_losses(images(2), gt)
    assert one_line(error).startswith(f"{model.name}: ") and message in one_line(error)
    # fit on arrays checks them in Python before Keras builds a graph.
    model.compile(optimizer=keras.optimizers.SGD(1e-3))
    with pytest.raises(ValueError) as error:
        model.fit(images(2), gt, batch_size=2, epochs=1, verbose=0)
    assert message in one_line(error)


def test_graph_assertions_give_the_same_message_in_one_line():
    """Values inside a tf.function: the step fails with InvalidArgumentError, whose long
    graph report `assertion_message` reduces to one line."""

    @tf.function
    def step(boxes, classes):
        checked, _ = checks.check_ground_truth({"boxes": boxes, "classes": classes}, 3, where="m")
        return checked

    ok = step(GOOD["boxes"], GOOD["classes"])  # no false alarm on good data
    np.testing.assert_array_equal(ok.numpy(), GOOD["boxes"])
    cases = [
        (_replace(boxes=((1, 0), [np.nan, 0, 5, 5])),
         "m: ground_truth['boxes'] holds NaN or inf at [image, row] [1 0] box [nan 0 5 5]; expected [y1, x1, y2, x2]"),
        (_replace(boxes=((1, 0), [5, 20, 20, 5])),
         "m: ground_truth['boxes'] has x2 < x1 or y2 < y1 at [image, row] [1 0] box [5 20 20 5]; expected"),
        (_replace(classes=((0, 1), 7)),
         "m: ground_truth['classes'] holds a class id outside -1..2 at [image, row] [0 1] value 7; expected 0..2"),
    ]
    for gt, message in cases:
        with pytest.raises(tf.errors.InvalidArgumentError) as error:
            step(gt["boxes"], gt["classes"])
        assert "\n" in str(error.value)  # TF's report is long ...
        line = checks.assertion_message(error.value)
        assert "\n" not in line and line.startswith(message), line  # ... the message is one line
    assert checks.assertion_message(tf.errors.InvalidArgumentError(None, None, "other")) is None


def test_cli_turns_graph_assertions_into_value_errors():
    from kerasdet.cli.train import graph_errors_as_value_errors

    @tf.function
    def step(classes):
        return checks.check_ground_truth({"boxes": tf.zeros([1, 1, 4]), "classes": classes}, 2, where="m")[1]

    with pytest.raises(ValueError, match=r"^m: ground_truth\['classes'\] holds a class id outside -1..1"):
        with graph_errors_as_value_errors():
            step(tf.constant([[5]]))
    with pytest.raises(tf.errors.InvalidArgumentError):  # not a kerasdet assertion: passed on
        with graph_errors_as_value_errors():
            tf.reshape(tf.zeros([3]), [2])


@pytest.mark.slow
def test_fit_on_a_dataset_with_a_bad_box_stops_with_the_assertion(model):
    """Graph mode end to end (the ~20 s trace of a train step)."""
    bad = _replace(boxes=((1, 0), [5, 20, 20, 5]))
    ds = tf.data.Dataset.from_tensor_slices((images(2), bad)).batch(2)
    model.compile(optimizer=keras.optimizers.SGD(1e-3))
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        model.fit(ds, epochs=1, verbose=0)
    assert checks.assertion_message(error.value).startswith(
        f"{model.name}: ground_truth['boxes'] has x2 < x1 or y2 < y1 at [image, row] [1 0]"
    )


# --- valid but unusual -----------------------------------------------------------------------------

def _fit_one_step(model, x, gt):
    model.compile(optimizer=keras.optimizers.SGD(1e-2), run_eagerly=True)
    logs = model.fit(x, gt, batch_size=len(x), epochs=1, verbose=0).history
    assert set(logs) == {"loss", "rpn_objectness", "rpn_box", "rcnn_class", "rcnn_box"}
    assert all(np.isfinite(v[0]) for v in logs.values()), logs
    assert all(np.isfinite(w.numpy()).all() for w in model.weights)
    return logs


def test_a_batch_where_every_image_is_empty_trains_with_finite_losses_and_weights():
    model = small_model()
    before = [w.numpy().copy() for w in model.trainable_weights]
    gt = truth(np.zeros([2, 3, 4]), -np.ones([2, 3]))
    logs = _fit_one_step(model, images(2), gt)
    assert logs["rpn_box"][0] == 0.0 and logs["rcnn_box"][0] == 0.0  # nothing to regress
    assert logs["rpn_objectness"][0] > 0.0  # every sampled anchor is a negative: still learns
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights))


def test_boxes_partly_outside_the_image_are_clipped_and_train_next_to_an_empty_image(model):
    outside = truth([[[-10, -5, 30, 40], [50, 40, 90, 80]]], [[1, 2]])
    clipped = truth([[[0, 0, 30, 40], [50, 40, 64, 64]]], [[1, 2]])
    a = model.compute_losses(images(1), outside)
    b = model.compute_losses(images(1), clipped)
    for key in a:  # the same step seeds: identical losses, as the boxes are clipped first
        np.testing.assert_allclose(float(a[key]), float(b[key]), rtol=1e-6, err_msg=key)
    # One step on a batch of an image without objects and the image with the outside boxes.
    batch = truth([[[0, 0, 0, 0], [0, 0, 0, 0]], outside["boxes"][0]], [[-1, -1], [1, 2]])
    _fit_one_step(small_model(), images(2), batch)


def test_zero_size_and_fully_outside_boxes_are_ignored_not_errors(model):
    gt = truth([[[10, 10, 10, 30], [100, 100, 120, 120], [5, 5, 25, 25]]], [[0, 1, 2]])
    only_real = truth([[[5, 5, 25, 25]]], [[2]])
    a, b = model.compute_losses(images(1), gt), model.compute_losses(images(1), only_real)
    for key in ("rpn_objectness", "rpn_box"):
        assert np.isfinite(float(a[key]))
        np.testing.assert_allclose(float(a[key]), float(b[key]), rtol=1e-5, err_msg=key)


# --- OverFeat detector --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def overfeat():
    return zoo.load_parts("overfeat_tiny", image_size=(96, 96), scales=[1.0])


@pytest.mark.parametrize(
    "shape, message",
    [
        ((1, 96, 96, 1), "expected shape=(None, 96, 96, 3), found shape=(1, 96, 96, 1)"),
        ((1, 96, 96, 4), "expected shape=(None, 96, 96, 3), found shape=(1, 96, 96, 4)"),
        ((1, 50, 50, 3), "expected shape=(None, 96, 96, 3), found shape=(1, 50, 50, 3)"),
        ((96, 96, 3), "expected ndim=4, found ndim=3"),
    ],
)
def test_overfeat_detector_rejects_other_inputs_in_one_line(overfeat, shape, message):
    with pytest.raises(ValueError) as error:
        overfeat.detector(np.zeros(shape, "float32"))
    assert message in one_line(error) and "'images'" in one_line(error)


def test_overfeat_detector_smaller_than_its_window_is_refused_at_construction(overfeat):
    from kerasdet.models.overfeat_detector import overfeat_detector

    with pytest.raises(ValueError) as error:
        overfeat_detector(overfeat.classifier, overfeat.localizer, "tiny", image_size=(64, 64))
    assert "scale 1.0 makes a 64×64 image, smaller than the 86×86 window; use scales ≥ 1.344" in one_line(error)
    with pytest.raises(ValueError) as error:
        zoo.load("overfeat_tiny", image_size=(64, 64), scales=[1.0])
    assert "smaller than the 86×86 window of arch 'tiny'; expected scales >= 1.344" in one_line(error)


# --- data pipeline ----------------------------------------------------------------------------------

def _examples(image_shape, bbox=((0.1, 0.1, 0.5, 0.5),)):
    image = np.zeros(image_shape, np.uint8)
    return tf.data.Dataset.from_tensors(
        {"image": image, "objects": {"bbox": np.asarray(bbox, np.float32), "label": np.zeros(len(bbox), np.int64)}}
    )


@pytest.mark.parametrize("shape", [(32, 32, 4), (32, 32), (1, 32, 32, 3)])
def test_pipeline_rejects_images_that_are_not_hw3_in_one_line(shape):
    with pytest.raises(ValueError) as error:
        detection_dataset(_examples(shape), image_size=SIZE, batch_size=1)
    assert "'image' must be [height, width, 3] (or 1 channel), got" in one_line(error)


def test_pipeline_accepts_grayscale_and_empty_images():
    ds = detection_dataset(_examples((32, 32, 1), bbox=np.zeros([0, 4])), image_size=SIZE, batch_size=1, max_boxes=2)
    x, gt = next(iter(ds))
    assert x.shape == (1, 64, 64, 3) and gt["classes"].numpy().tolist() == [[-1, -1]]


def test_pipeline_and_records_reject_bad_values_in_one_line(tmp_path):
    from kerasdet.data import DataError, read_coco

    data = {"images": [{"id": 1, "file_name": "a.png", "height": 8, "width": 8}],
            "categories": [{"id": 7, "name": "cat"}],
            "annotations": [{"id": 3, "image_id": 1, "category_id": 7, "bbox": [6, 1, -4, 3]}]}
    tf.io.write_file(str(tmp_path / "a.png"), tf.io.encode_png(np.zeros([8, 8, 3], np.uint8)))
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as error:
        read_coco(path)
    assert "annotation id 3: bbox [6, 1, -4, 3] has width -4; expected [x, y, width, height] with width > 0" in one_line(
        error
    )


# --- zoo: YAML and weights files --------------------------------------------------------------------

def _yaml(tmp_path, edit):
    data = yaml.safe_load((zoo_config.CONFIG_DIR / "faster_rcnn_tiny.yaml").read_text())
    edit(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["model"].update(hed_units=[8]),
         "bad.yaml: unknown key `model.hed_units`. Did you mean 'head_units'?"),
        (lambda d: d["model"].update(image_size="big"),
         "bad.yaml: `model.image_size` must be [height, width], two positive integers, got 'big'"),
        (lambda d: d["train"].update(learning_rate="1e-3"),
         "`train.learning_rate` must be a number >= 0, got '1e-3' (YAML reads numbers like 1e-3 as text"),
        (lambda d: d["model"].update(anchors=[[10, 13, 16]]),
         "bad.yaml: `model.anchors.wh[0]` must list (w, h) pairs, got an odd-length list of 3 numbers: [10, 13, 16]"),
    ],
)
def test_bad_yaml_is_one_line_in_the_zoo_and_the_cli(tmp_path, capsys, edit, message):
    path = _yaml(tmp_path, edit)
    with pytest.raises(ValueError) as error:
        zoo.load(str(path))
    assert message in one_line(error)
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kerasdet train: error: ") and message in err and "\n" not in err


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    model = zoo.load("faster_rcnn_tiny", image_size=SIZE, head_units=[32, 32])
    path = tmp_path_factory.mktemp("weights") / "tiny.weights.h5"
    model.save_weights(path)
    return path


def test_weights_of_another_architecture_name_the_layer(tmp_path, weights_file):
    with pytest.raises(zoo.WeightsError) as error:
        zoo.load("faster_rcnn_tiny", image_size=SIZE, head_units=[64, 64], weights=str(weights_file))
    assert ("layer 'roi_head/fc1' has shapes [(7, 7, 96, 32), (32,)] in the file, the model expects "
            "[(7, 7, 96, 64), (64,)]") in one_line(error)
    overfeat_path = tmp_path / "overfeat.weights.h5"
    zoo.load_parts("overfeat_tiny", image_size=(96, 96), scales=[1.0]).save_weights(overfeat_path)
    with pytest.raises(zoo.WeightsError) as error:
        zoo.load("faster_rcnn_tiny", image_size=SIZE, weights=str(overfeat_path))
    assert "does not fit model 'faster_rcnn_tiny': it has no weights for layer(s) stage1_down" in one_line(error)


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_weights_file_is_one_line_naming_the_file(tmp_path, weights_file, keep):
    data = weights_file.read_bytes()
    path = tmp_path / "cut.weights.h5"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(zoo.WeightsError) as error:
        zoo.load("faster_rcnn_tiny", image_size=SIZE, head_units=[32, 32], weights=str(path))
    assert one_line(error) == (
        f"weights file {str(path)!r} is truncated: {int(len(data) * keep):,} of its {len(data):,} bytes "
        "(an interrupted download or copy?); expected a complete .weights.h5 file"
    )


def test_weights_damaged_inside_name_the_layer_and_load_nothing(monkeypatch, weights_file):
    import h5py

    model = zoo.load("faster_rcnn_tiny", image_size=SIZE, head_units=[32, 32])
    before = [w.numpy().copy() for w in model.weights]
    read, reads = h5py.Dataset.__getitem__, []

    def fail_midway(self, key):
        reads.append(self.name)
        if len(reads) == 20:  # a damaged chunk in the middle of the file
            raise OSError("Can't synchronously read data (inflate() failed)")
        return read(self, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", fail_midway)
    with pytest.raises(zoo.WeightsError) as error:
        zoo.load_weights_by_name(model, weights_file)
    assert f"weights file {str(weights_file)!r} is damaged: the weights of layer '" in one_line(error)
    assert "cannot be read (Can't synchronously read data (inflate() failed))" in one_line(error)
    for b, w in zip(before, model.weights):  # the layers read before the damage are not assigned
        np.testing.assert_array_equal(b, w.numpy())


def test_truncated_or_foreign_keras_and_h5_files(tmp_path, weights_file):
    keras_path = tmp_path / "cut.keras"
    zoo.load("faster_rcnn_tiny", image_size=SIZE, head_units=[32, 32]).save(keras_path)
    keras_path.write_bytes(keras_path.read_bytes()[:1000])
    with pytest.raises(zoo.WeightsError) as error:
        zoo.load("faster_rcnn_tiny", image_size=SIZE, head_units=[32, 32], weights=str(keras_path))
    assert "is not a Keras 3 .keras archive with weights, or it is truncated" in one_line(error)
    text = tmp_path / "text.weights.h5"
    text.write_text("not hdf5")
    with pytest.raises(zoo.WeightsError) as error:
        zoo.load("faster_rcnn_tiny", image_size=SIZE, weights=str(text))
    assert f"weights file {str(text)!r} is not a readable .weights.h5 file (" in one_line(error)


# --- CLI ----------------------------------------------------------------------------------------

def _cli_error(capsys, argv, command):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"kerasdet {command}: error: ") and "\n" not in err, err
    return err


@pytest.fixture(scope="module")
def small_config(tmp_path_factory, weights_file):
    """A 64×64 faster_rcnn_tiny YAML whose first weights entry is `weights_file`."""
    directory = weights_file.parent
    data = yaml.safe_load((zoo_config.CONFIG_DIR / "faster_rcnn_tiny.yaml").read_text())
    data["model"].update(image_size=list(SIZE), head_units=[32, 32])
    data["weights"] = {"random": {"file": weights_file.name, "sha256": zoo.sha256_of(weights_file),
                                  "classes": ["a", "b", "c", "d", "e"]}}
    path = directory / "small.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_detect_bad_image_files_are_one_line(tmp_path, capsys, small_config):
    missing = tmp_path / "missing.png"
    assert "image file" in _cli_error(capsys, ["detect", str(small_config), str(missing)], "detect")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    err = _cli_error(capsys, ["detect", str(small_config), str(text)], "detect")
    assert f"cannot decode image file {str(text)!r}: expected PNG, JPEG, GIF or BMP" in err
    png = tf.io.encode_png(np.zeros([20, 20, 3], np.uint8)).numpy()
    cut = tmp_path / "cut.png"
    cut.write_bytes(png[:30])
    assert "cannot decode image file" in _cli_error(capsys, ["detect", str(small_config), str(cut)], "detect")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert "cannot decode image file" in _cli_error(capsys, ["detect", str(small_config), str(empty)], "detect")


def test_detect_reads_rgba_and_grayscale_png_as_rgb(tmp_path, capsys, small_config):
    """A PNG file says what its channels are, so `kerasdet detect` converts them to RGB (alpha
    dropped) as image viewers do; 4-channel *arrays* given to a model are errors (above)."""
    paths = []
    for channels in (4, 1):
        path = tmp_path / f"c{channels}.png"
        path.write_bytes(tf.io.encode_png(np.full([40, 30, channels], 128, np.uint8)).numpy())
        paths.append(str(path))
    assert main(["detect", str(small_config), *paths, "--output", str(tmp_path / "out")]) == 0
    for channels in (4, 1):
        record = json.loads((tmp_path / "out" / f"c{channels}.json").read_text())
        assert (record["height"], record["width"]) == (40, 30)


def test_cli_weights_errors_are_one_line(tmp_path, capsys, small_config, weights_file):
    cut = tmp_path / "cut.weights.h5"
    cut.write_bytes(weights_file.read_bytes()[:5000])
    for command in (["evaluate", str(small_config)], ["train", str(small_config), "--data", "shapes/tiny"]):
        err = _cli_error(capsys, [*command, "--weights", str(cut)], command[0])
        assert f"weights file {str(cut)!r} is truncated: 5,000 of its" in err
    missing = tmp_path / "no.weights.h5"
    err = _cli_error(capsys, ["evaluate", str(small_config), "--weights", str(missing)], "evaluate")
    assert f"weights file {str(missing)!r} does not exist" in err
