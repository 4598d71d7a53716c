"""kerasdet.zoo: configurations, load / fine-tune surgery, weights sources."""

import inspect
import pathlib

import keras
import numpy as np
import pytest
import yaml

import kerasdet  # noqa: F401  (TF backend)
from kerasdet import zoo
from kerasdet.zoo import config as zoo_config
from kerasdet.zoo import weights as zoo_weights

SHIPPED = (
    "faster_rcnn_mobilenetv2", "faster_rcnn_resnet50", "faster_rcnn_tiny", "faster_rcnn_vgg16",
    "overfeat", "overfeat_fast", "overfeat_tiny",
)
SHAPES = ["circle", "square", "triangle", "ellipse", "rectangle"]
SMALL_FRCNN = dict(image_size=(64, 64), head_units=[32, 32])
SMALL_OVERFEAT = dict(image_size=(96, 96), scales=[1.0])


def _arrays(model, prefix=None):
    """`{qualified layer name: [arrays]}`, optionally only names starting with `prefix`."""
    layers = zoo_weights.model_layers_by_name(model)
    return {k: [v.numpy() for v in layer.weights] for k, layer in layers.items() if prefix is None or k.startswith(prefix)}


def _shift_weights(model, delta=0.5):
    # Random init differs between builds anyway; a shift makes "came from the file" certain.
    for variable in model.weights:
        variable.assign(variable + delta)


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        for x, y in zip(a[key], b[key], strict=True):
            np.testing.assert_array_equal(x, y, err_msg=key)


@pytest.fixture(scope="module")
def frcnn_file(tmp_path_factory):
    """A 5-class faster_rcnn_tiny (64×64, 32-unit head) weights file and its arrays."""
    model = zoo.load("faster_rcnn_tiny", **SMALL_FRCNN)
    _shift_weights(model)
    path = tmp_path_factory.mktemp("frcnn") / "frcnn.weights.h5"
    model.save_weights(path)
    return path, _arrays(model)


@pytest.fixture(scope="module")
def overfeat_file(tmp_path_factory):
    parts = zoo.load_parts("overfeat_tiny", **SMALL_OVERFEAT)
    _shift_weights(parts.detector)
    path = tmp_path_factory.mktemp("overfeat") / "overfeat.weights.h5"
    parts.save_weights(path)
    return path, _arrays(parts.detector)


def _load_tool(name):
    """A script of tools/ as a module (its `main` not run)."""
    import importlib.util

    path = pathlib.Path(__file__).resolve().parent.parent / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _user_config(directory, name="faster_rcnn_tiny", *, model=None, weights=None):
    """Writes a copy of a shipped configuration with `model` keys replaced to
    `directory/<name>.yaml`."""
    data = yaml.safe_load((zoo_config.CONFIG_DIR / f"{name}.yaml").read_text())
    data["model"].update(model or {})
    if weights:
        data["weights"] = weights
    path = pathlib.Path(directory) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# --- configurations ----------------------------------------------------------------------------


def test_list_has_every_shipped_configuration():
    assert zoo.list() == sorted(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_yaml_parses_and_validates(name):
    config = zoo.get_config(name)
    assert config.name == name  # the file's `name` matches its file name
    assert config.bundled
    assert set(config.model) == set(zoo_config.MODEL_SCHEMAS[config.family])
    assert set(config.train) == set(zoo_config.TRAIN_SCHEMAS[config.family])
    # Round trip: what `dump` writes reads back to the same configuration.
    data = yaml.safe_load(yaml.safe_dump(config.to_dict()))
    again = zoo_config.parse_config(data, path=f"{name}.yaml")
    assert again.model == config.model and again.train == config.train


def test_tiny_configs_match_the_training_recipes():
    frcnn = zoo.get_config("faster_rcnn_tiny").model
    assert frcnn["image_size"] == [256, 256] and frcnn["head_units"] == [256, 256]
    # The recipe's --anchor-sizes 16 32 64 128 (the bundled weights' command).
    assert frcnn["anchors"] == {"stride": 8, "sizes": [16.0, 32.0, 64.0, 128.0], "aspect_ratios": [0.5, 1.0, 2.0]}
    assert frcnn["backbone_stride"] == 8  # --backbone-stride 8: the FPN top-down level
    assert frcnn["rpn_ignore_cross_boundary"] is False and frcnn["backbone_batch_norm"] is True
    assert frcnn["proposals"]["post_nms_top_k_train"] == 256 and frcnn["rcnn_batch_size"] == 64
    # --roi-align --sampling-ratio 1 --rpn-separable --rpn-kernel-size 5
    assert frcnn["roi_pool"] == "roi_align" and frcnn["sampling_ratio"] == 1
    assert frcnn["rpn_separable"] is True and frcnn["rpn_kernel_size"] == 5
    command = zoo.get_config("faster_rcnn_tiny").weights["shapes"].command
    for flag in ("--backbone-stride 8", "--roi-align", "--sampling-ratio 1", "--rpn-separable", "--rpn-kernel-size 5",
                 "--rcnn-batch-size 64",
                 "--learning-rate 4e-3", "--cosine"):
        assert flag in command
    overfeat = zoo.get_config("overfeat_tiny")
    assert overfeat.model["scales"] == [0.6, 0.85, 1.2, 1.7, 2.4, 3.4]
    # Offset pooling at test time (the weights were trained with the standard pool).
    assert overfeat.model["last_pool"] == "offset" and overfeat.model["score_threshold"] == 0.1
    # `kerasdet train overfeat_tiny` runs the bundled weights' training: the tool's flags as
    # its weights command sets them (and the tool's defaults for the others).
    tool = _load_tool("train_overfeat_tiny")
    args = tool.build_parser().parse_args(overfeat.weights["shapes"].command.split()[2:])
    assert overfeat.train["recipe"] == "dense"
    for flag in tool.RECIPE_FLAGS:
        want = getattr(args, flag)
        assert overfeat.train[flag] == (list(want) if isinstance(want, (list, tuple)) else want), flag
    assert overfeat.train["crop_epochs"] == 4 and overfeat.train["classifier_minutes"] == 8.4
    assert overfeat.train["train_images"] == args.train_images == 1800 and overfeat.train["val_images"] == args.val_images
    # A total budget the dense stages share, as in the tool (no step caps).
    assert overfeat.train["minutes"] == 14.8
    assert overfeat.train["classifier_steps"] is overfeat.train["localizer_steps"] is None
    assert overfeat.model["batch_norm"] is args.batch_norm is True and overfeat.model["dropout"] == args.dropout
    assert [overfeat.model["score_threshold"]] == args.score_thresholds
    assert [overfeat.model["match_threshold"]] == args.match_thresholds
    # The tool's flags and the config's dense keys are `fit_dense_recipe`'s arguments, by name.
    from kerasdet.training.overfeat_dense_recipe import fit_dense_recipe

    parameters = inspect.signature(fit_dense_recipe).parameters
    assert set(tool.RECIPE_FLAGS) <= set(zoo_config.OVERFEAT_DENSE_KEYS) <= set(parameters)


def test_info_reports_parameters_and_weights(tmp_path):
    path = _user_config(tmp_path, weights={"mine": {
        "file": "mine.weights.h5", "sha256": "0" * 64, "classes": SHAPES, "metrics": {"AP50": 0.91},
        "command": "kerasdet train faster_rcnn_tiny",
    }})
    record = zoo.info(str(path))
    assert record["family"] == "faster_rcnn" and record["model"]["backbone"] == "tiny"
    entry = record["weights"]["mine"]
    assert entry["classes"] == SHAPES and entry["num_classes"] == 5 and entry["metrics"] == {"AP50": 0.91}
    assert entry["available"] is False and entry["source"] == str(tmp_path / "mine.weights.h5")
    assert zoo.info("faster_rcnn_mobilenetv2")["weights"] == {}
    assert zoo.info("overfeat_tiny")["weights"]["shapes"]["available"] is True


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.update(modle={}), "unknown key `modle`. Did you mean 'model'?"),
        (lambda d: d["model"].update(head_unit=[8]), "unknown key `model.head_unit`. Did you mean 'head_units'?"),
        (lambda d: d["model"].update(image_size="256"), "`model.image_size` must be [height, width], two positive integers, got '256'"),
        (lambda d: d["model"].update(image_size=[256, 0]), "`model.image_size` must be [height, width]"),
        (lambda d: d["model"].update(score_threshold="1e-3"), "write 1.0e-3"),
        (lambda d: d["model"].update(max_detections=2.5), "`model.max_detections` must be an integer >= 1, got 2.5"),
        (lambda d: d["model"].update(backbone="resnet"), "`model.backbone` must be one of"),
        (lambda d: d["model"].update(anchors=[[10, 13, 16]]), "`model.anchors.wh[0]` must list (w, h) pairs, got an odd-length list of 3 numbers: [10, 13, 16]"),
        (lambda d: d["model"].update(anchors={"stride": 16, "size": [32]}), "unknown key `model.anchors.size`. Did you mean 'sizes'?"),
        (lambda d: d["model"].update(anchors={"stride": 16, "sizes": [32]}), "`model.anchors.stride` must be the backbone's feature stride, `model.backbone_stride` = 8, got 16"),
        (lambda d: d["model"]["proposals"].update(nms_iou=1.5), "`model.proposals.nms_iou` must be a number >= 0 and < 1, got 1.5"),
        (lambda d: d.update(family="yolo"), "`family` must be one of ['faster_rcnn', 'overfeat'], got 'yolo'"),
        (lambda d: d["train"].update(batch_size=0), "`train.batch_size` must be an integer >= 1, got 0"),
        (lambda d: d["train"].update(schedule="cosine", minutes=None),
         "`train.schedule` must be 'constant' without a `train.minutes` budget (cosine decays over it), got 'cosine'"),
        (lambda d: d["model"].update(rpn_positive_iou=0.5, rpn_negative_iou=0.6),
         "`model.rpn_negative_iou` must be at most `model.rpn_positive_iou` = 0.5, got 0.6"),
        (lambda d: d["model"].update(sampling_ratio=0), "`model.sampling_ratio` must be an integer >= 1, got 0"),
        (lambda d: d.update(weights={"w": {"file": "w.weights.h5", "sha256": "abc", "classes": ["a"]}}),
         "`weights.w.sha256` must be 64 lowercase hex digits"),
        (lambda d: d.update(weights={"w": {"file": "w.weights.h5", "sha256": "0" * 64}}), "missing required key `weights.w.classes`"),
        (lambda d: d.update(weights={"w": {"file": "w.h5", "sha256": "0" * 64, "classes": ["a"]}}),
         "`weights.w.file` must be a file name ending in .weights.h5 or .keras"),
        (lambda d: d.update(weights={"w": {"file": "w.weights.h5", "url": "file:///w.weights.h5", "sha256": "0" * 64, "classes": ["a"]}}),
         "must have exactly one of `file` (bundled) or `url`"),
    ],
)
def test_invalid_yaml_is_a_one_line_error_naming_the_key(tmp_path, edit, message):
    data = yaml.safe_load((zoo_config.CONFIG_DIR / "faster_rcnn_tiny.yaml").read_text())
    edit(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError) as error:
        zoo.get_config(str(path))
    assert message in str(error.value)
    assert str(error.value).startswith("bad.yaml: ")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "train, message",
    [
        ({"recipe": "dence"}, "`train.recipe` must be one of ['crops', 'dense'], got 'dence'. Did you mean 'dense'?"),
        ({"recipe": "crops", "minutes": 10}, "`train.minutes` must be null with `train.recipe: crops` (it trains by "
                                              "epochs; `train.recipe: dense` trains by minutes), got 10.0"),
        ({"ignore_center": 0.2}, "`train.ignore_center` must be at least `train.center_tolerance` = 0.25, got 0.2"),
        ({"scale_range": [0.5]}, "`train.scale_range` must be [low, high] with 0 < low <= high, got [0.5]"),
        ({"regression_fraction": [1.2, 0.35]}, "`train.regression_fraction` must be [low, high] with 0 < low <= high"),
        ({"patch_size": 80}, "`train.patch_size` must be at least the 86×86 window of arch 'tiny', got 80"),
        ({"localizer_minutes": 0}, "`train.localizer_minutes` must be a positive number or null, got 0.0"),
        ({"classifier_minutes": None, "minutes": None}, "`train.classifier_minutes` must be a number when `train.classifier_steps` and "
                                       "`train.minutes` are null (the dense stage's budget), got None"),
    ],
)
def test_invalid_overfeat_train_section_is_a_one_line_error(tmp_path, train, message):
    data = yaml.safe_load((zoo_config.CONFIG_DIR / "overfeat_tiny.yaml").read_text())
    data["train"].update(train)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError) as error:
        zoo.get_config(str(path))
    assert str(error.value).startswith("bad.yaml: ") and message in str(error.value)
    assert "\n" not in str(error.value)


def test_overfeat_train_overrides_are_checked_like_the_file():
    config = zoo.get_config("overfeat_tiny")
    assert config.with_train({"classifier_minutes": None, "minutes": None, "classifier_steps": 500}).train[
        "classifier_steps"] == 500
    with pytest.raises(ValueError, match=r"^kerasdet train: `train.ignore_center` must be at least"):
        config.with_train({"ignore_center": 0.1}, where="kerasdet train")
    with pytest.raises(ValueError, match=r"`train.minutes` must be null with `train.recipe: crops`"):
        zoo.get_config("overfeat").with_train({"minutes": 5})


def test_overfeat_scale_below_the_window_is_rejected(tmp_path):
    path = _user_config(tmp_path, "overfeat_tiny", model={"image_size": [96, 96], "scales": [0.5, 1.0]})
    with pytest.raises(ValueError, match=r"`model.scales` entry 0.5 resizes .* smaller than the 86×86 window"):
        zoo.get_config(str(path))


def test_unknown_name_lists_valid_names_with_a_close_match():
    with pytest.raises(ValueError, match="unknown zoo model 'faster_rcnn_tin'. Did you mean 'faster_rcnn_tiny'?") as error:
        zoo.load("faster_rcnn_tin")
    assert "'overfeat_fast'" in str(error.value)


def test_unknown_override_lists_valid_keys_with_a_close_match():
    with pytest.raises(ValueError, match="unknown faster_rcnn model parameter 'score_treshold'. Did you mean 'score_threshold'?") as error:
        zoo.load("faster_rcnn_tiny", score_treshold=0.3)
    assert "'head_units'" in str(error.value)


def test_bad_override_value_names_the_key():
    with pytest.raises(ValueError, match="`head_units` must be a non-empty list of integers >= 1, got"):
        zoo.load("faster_rcnn_tiny", head_units=[0])


def test_missing_yaml_file_is_file_not_found():
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        zoo.load("nowhere.yaml")


# --- building ------------------------------------------------------------------------------------


def test_load_faster_rcnn_with_overrides_runs():
    model = zoo.load("faster_rcnn_tiny", **SMALL_FRCNN, score_threshold=0.2, proposals={"post_nms_top_k_test": 20})
    assert isinstance(model, kerasdet.models.FasterRCNN)
    assert model.num_classes == 5 and model.image_size == (64, 64) and model.head_units == (32, 32)
    assert model.score_threshold == pytest.approx(0.2)
    # Nested mappings update key by key: the rest of the config's proposal sizes stay.
    assert model.proposal_layer.post_nms_top_k_test == 20 and model.proposal_layer.post_nms_top_k_train == 256
    out = model(np.zeros([1, 64, 64, 3], "float32"))
    assert out["boxes"].shape == (1, 100, 4)


def test_input_shape_sets_the_image_size_and_explicit_anchors_build():
    model = zoo.load("faster_rcnn_tiny", input_shape=(48, 80, 3), head_units=[16], anchors=[[16, 16, 32, 16]])
    assert model.input_shape == (None, 48, 80, 3)
    assert model.anchor_generator.anchors_per_location == [2]
    with pytest.raises(ValueError, match="disagree"):
        zoo.load("faster_rcnn_tiny", input_shape=(48, 80, 3), image_size=(64, 64))


@pytest.mark.parametrize("stride", [8, 16])
def test_backbone_stride_sets_anchor_stride_and_pooling_scale(stride):
    model = zoo.load("faster_rcnn_tiny", image_size=(64, 64), head_units=[16], backbone_stride=stride,
                     anchors={"stride": stride, "sizes": [16, 32], "aspect_ratios": [1.0]})
    assert model.backbone.output.shape[1:3] == (64 // stride, 64 // stride)
    assert model.roi_pool.spatial_scale == pytest.approx(1 / stride)
    assert model.anchor_generator.strides == [stride] and model.anchor_generator.anchors_per_location == [2]
    with pytest.raises(ValueError, match="`model.anchors.stride` must be the backbone's feature stride"):
        zoo.load("faster_rcnn_tiny", backbone_stride=16)  # the config's anchors are stride 8
    # Anchors written without a stride take the backbone's.
    model = zoo.load("faster_rcnn_tiny", image_size=(64, 64), head_units=[16], backbone_stride=stride,
                     anchors={"sizes": [16, 32], "aspect_ratios": [1.0]})
    assert model.anchor_generator.strides == [stride]
    assert zoo.load("faster_rcnn_tiny", image_size=(64, 64), head_units=[16], backbone_stride=stride,
                    anchors=[[16, 16, 32, 16]]).anchor_generator.strides == [stride]


@pytest.mark.skipif(
    "backbone_batch_norm" not in inspect.signature(kerasdet.models.FasterRCNN).parameters,
    reason="FasterRCNN has no backbone_batch_norm option in this tree",
)
def test_batch_norm_backbone_weights_round_trip(tmp_path):
    """Batch-norm layers carry non-trainable moving statistics: they load by name too."""
    model = zoo.load("faster_rcnn_tiny", **SMALL_FRCNN, backbone_batch_norm=True, train_backbone_batch_norm=True)
    assert "stage1_down_bn" in zoo_weights.model_layers_by_name(model)
    _shift_weights(model)
    model.save_weights(tmp_path / "bn.weights.h5")
    again = zoo.load("faster_rcnn_tiny", **SMALL_FRCNN, backbone_batch_norm=True, weights=str(tmp_path / "bn.weights.h5"))
    _assert_same(_arrays(again), _arrays(model))


def test_load_overfeat_returns_the_detector_and_parts_share_layers():
    parts = zoo.load_parts("overfeat_tiny", **SMALL_OVERFEAT, num_classes=3)
    assert parts.classifier.output.shape[-1] == 4 and parts.localizer.output.shape[-1] == 12
    assert parts.detector.get_layer("dense_windows").get_layer("conv1") is parts.classifier.get_layer("conv1")
    detector = zoo.load("overfeat_tiny", **SMALL_OVERFEAT)
    assert detector(np.zeros([1, 96, 96, 3], "float32"))["boxes"].shape == (1, 100, 4)
    with pytest.raises(ValueError, match="load_parts is for OverFeat"):
        zoo.load_parts("faster_rcnn_tiny")


def test_overfeat_batch_norm_option_round_trips_weights(tmp_path):
    """`model.batch_norm`: layers 1–5 get batch norm, and the detector's weights (moving
    statistics included) load back by name into a fresh batch-norm detector."""
    parts = zoo.load_parts("overfeat_tiny", **SMALL_OVERFEAT, batch_norm=True)
    assert isinstance(parts.classifier.get_layer("conv1_bn"), keras.layers.BatchNormalization)
    assert parts.detector.get_layer("dense_windows").get_layer("conv1_bn") is parts.classifier.get_layer("conv1_bn")
    _shift_weights(parts.detector)
    parts.save_weights(tmp_path / "bn.weights.h5")
    again = zoo.load("overfeat_tiny", **SMALL_OVERFEAT, batch_norm=True, weights=str(tmp_path / "bn.weights.h5"))
    _assert_same(_arrays(again), _arrays(parts.detector))


# --- weights: local files, by layer name, num_classes surgery ------------------------------------


def test_local_weights_round_trip_and_num_classes_inferred(frcnn_file):
    path, saved = frcnn_file
    model = zoo.load("faster_rcnn_tiny", **SMALL_FRCNN, weights=str(path))
    assert model.num_classes == 5
    _assert_same(_arrays(model), saved)


def test_fine_tune_keeps_every_weight_but_the_class_heads(frcnn_file):
    path, saved = frcnn_file
    model = zoo.load("faster_rcnn_tiny", **SMALL_FRCNN, weights=str(path), num_classes=3)
    assert model.num_classes == 3
    now = _arrays(model)
    heads = set(zoo.CLASS_LAYERS["faster_rcnn"])
    kept = {k: v for k, v in saved.items() if k not in heads}
    assert any(k.startswith("stage") for k in kept) and "rpn_head/conv" in kept and "roi_head/fc2" in kept
    _assert_same({k: now[k] for k in kept}, kept)  # backbone, RPN and FC layers kept
    assert now["roi_head/class_logits"][0].shape == (1, 1, 32, 4)  # 3 classes + background
    assert now["roi_head/box_deltas"][0].shape == (1, 1, 32, 12)
    # The new heads are freshly initialized (biases zero), not the file's shifted values.
    np.testing.assert_array_equal(now["roi_head/class_logits"][1], 0.0)


def test_weights_of_another_configuration_are_rejected(frcnn_file):
    path, _ = frcnn_file
    with pytest.raises(zoo.WeightsError, match="layer 'roi_head/fc1' has shapes .* in the file, the model expects"):
        zoo.load("faster_rcnn_tiny", image_size=(64, 64), head_units=[16, 16], weights=str(path))
    with pytest.raises(zoo.WeightsError, match="has no weights for layer"):
        zoo.load("overfeat_tiny", **SMALL_OVERFEAT, weights=str(path))


def test_keras_file_loads(tmp_path, frcnn_file):
    path, saved = frcnn_file
    model = zoo.load("faster_rcnn_tiny", **SMALL_FRCNN, weights=str(path))
    model.save(tmp_path / "model.keras")
    again = zoo.load("faster_rcnn_tiny", **SMALL_FRCNN, weights=str(tmp_path / "model.keras"))
    _assert_same(_arrays(again), saved)


def test_bad_weights_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown weights 'imagenett' for 'faster_rcnn_tiny'. Did you mean 'imagenet'?"):
        zoo.load("faster_rcnn_tiny", weights="imagenett")
    with pytest.raises(FileNotFoundError, match="missing.weights.h5"):
        zoo.load("faster_rcnn_tiny", weights=str(tmp_path / "missing.weights.h5"))
    (tmp_path / "old.h5").write_bytes(b"")
    with pytest.raises(ValueError, match="must be a Keras 3 .weights.h5 or .keras file"):
        zoo.load("faster_rcnn_tiny", weights=str(tmp_path / "old.h5"))


def test_overfeat_weights_load_across_pyramids_merge_and_dropout(overfeat_file):
    path, saved = overfeat_file
    detector = zoo.load("overfeat_tiny", image_size=(120, 120), scales=[0.8, 1.0], merge="nms", dropout=0.0,
                        weights=str(path))
    _assert_same(_arrays(detector), saved)


def test_overfeat_fine_tune_rebuilds_logits_and_regressor_output(overfeat_file):
    path, saved = overfeat_file
    parts = zoo.load_parts("overfeat_tiny", **SMALL_OVERFEAT, weights=str(path), num_classes=2)
    now = _arrays(parts.detector)
    for key in saved:
        if key in ("logits", "reg_boxes"):
            continue
        for x, y in zip(now[key], saved[key]):
            np.testing.assert_array_equal(x, y, err_msg=key)
    assert now["logits"][0].shape[-1] == 3 and now["reg_boxes"][0].shape[-1] == 8


# --- weights: bundled files and the registry -------------------------------------------------------


def _entry(path, **extra):
    return {"sha256": zoo.sha256_of(path), "classes": SHAPES, "metrics": {"AP50": 0.5}, **extra}


def test_bundled_weights_load_from_the_bundled_directory(tmp_path, monkeypatch, frcnn_file):
    path, saved = frcnn_file
    configs, bundled = tmp_path / "configs", tmp_path / "weights"
    configs.mkdir()
    bundled.mkdir()
    (bundled / "faster_rcnn_tiny_shapes.weights.h5").write_bytes(path.read_bytes())
    _user_config(configs, model={"image_size": [64, 64], "head_units": [32, 32]},
                 weights={"shapes": _entry(path, file="faster_rcnn_tiny_shapes.weights.h5")})
    monkeypatch.setattr(zoo_config, "CONFIG_DIR", configs)
    monkeypatch.setattr(zoo_weights, "BUNDLED_DIR", bundled)

    model = zoo.load("faster_rcnn_tiny", weights="shapes")
    _assert_same(_arrays(model), saved)
    assert zoo.info("faster_rcnn_tiny")["weights"]["shapes"]["available"] is True
    # A typo in the weights name suggests the entry.
    with pytest.raises(ValueError, match="Did you mean 'shapes'?"):
        zoo.load("faster_rcnn_tiny", weights="shape")


def test_bundled_file_with_another_hash_loads_nothing(tmp_path, monkeypatch, frcnn_file):
    path, _ = frcnn_file
    configs, bundled = tmp_path / "configs", tmp_path / "weights"
    configs.mkdir()
    bundled.mkdir()
    (bundled / "w.weights.h5").write_bytes(path.read_bytes() + b"tampered")
    _user_config(configs, weights={"shapes": _entry(path, file="w.weights.h5")})
    monkeypatch.setattr(zoo_config, "CONFIG_DIR", configs)
    monkeypatch.setattr(zoo_weights, "BUNDLED_DIR", bundled)
    with pytest.raises(zoo.WeightsError, match="SHA-256 mismatch for weights 'shapes'"):
        zoo.load("faster_rcnn_tiny", weights="shapes")
    (bundled / "w.weights.h5").unlink()
    with pytest.raises(zoo.WeightsError, match="is missing from this kerasdet installation"):
        zoo.load("faster_rcnn_tiny", weights="shapes")


def test_registry_weights_download_into_kerasdet_home(tmp_path, monkeypatch, frcnn_file):
    path, saved = frcnn_file
    home = tmp_path / "home"
    monkeypatch.setenv("KERASDET_HOME", str(home))
    config = _user_config(tmp_path, model={"image_size": [64, 64], "head_units": [32, 32]},
                          weights={"remote": _entry(path, url=path.as_uri())})
    model = zoo.load(str(config), weights="remote")
    _assert_same(_arrays(model), saved)
    cached = list((home / "weights").iterdir())
    assert [p.name for p in cached] == [f"frcnn-{zoo.sha256_of(path)[:12]}.weights.h5"]
    # Cached: a second load does not need the source any more.
    model = zoo.load(str(config), weights="remote")
    _assert_same(_arrays(model), saved)


def test_registry_hash_mismatch_is_an_error_and_nothing_is_cached(tmp_path, monkeypatch, frcnn_file):
    path, _ = frcnn_file
    home = tmp_path / "home"
    monkeypatch.setenv("KERASDET_HOME", str(home))
    wrong = {**_entry(path, url=path.as_uri()), "sha256": "f" * 64}
    config = _user_config(tmp_path, weights={"remote": wrong})
    with pytest.raises(zoo.WeightsError, match="SHA-256 mismatch .* the file was deleted and nothing was loaded") as error:
        zoo.load(str(config), weights="remote")
    assert "\n" not in str(error.value)
    assert not any((home / "weights").iterdir())


def test_registry_download_failure_says_network_is_needed(tmp_path, monkeypatch):
    monkeypatch.setenv("KERASDET_HOME", str(tmp_path / "home"))
    config = _user_config(tmp_path, weights={"remote": {
        "url": (tmp_path / "absent.weights.h5").as_uri(), "sha256": "0" * 64, "classes": SHAPES}})
    with pytest.raises(zoo.WeightsError, match="could not download weights 'remote' .* need network access once"):
        zoo.load(str(config), weights="remote")


def test_imagenet_offline_is_a_one_line_error_naming_backbone_and_url(monkeypatch):
    from keras.src.utils import file_utils

    url = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/weights.h5"

    def offline(fname=None, origin=None, **kwargs):
        # What keras.utils.get_file raises without network (nothing is downloaded here).
        raise Exception(f"URL fetch failure on {url}: None -- [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(zoo.WeightsError) as error:
        zoo.load("faster_rcnn_mobilenetv2", image_size=(96, 96), head_units=[16], backbone_weights="imagenet")
    message = str(error.value)
    assert "'mobilenetv2'" in message and "network" in message and url in message
    assert "\n" not in message
    with pytest.raises(zoo.WeightsError, match="'mobilenetv2'"):
        zoo.load("faster_rcnn_mobilenetv2", image_size=(96, 96), head_units=[16], weights="imagenet")


def test_imagenet_backbone_weights_are_used(monkeypatch):
    """With the download mocked by a file of known values, the backbone holds them and the
    model still serializes its backbone by name."""
    captured = {}
    original = keras.applications.MobileNetV2

    def fake_application(**kwargs):
        captured.update(kwargs)
        model = original(**{**kwargs, "weights": None})
        for variable in model.weights:
            variable.assign(np.full(variable.shape, 0.25, "float32"))
        return model

    monkeypatch.setattr(keras.applications, "MobileNetV2", fake_application)
    model = zoo.load("faster_rcnn_mobilenetv2", image_size=(96, 96), head_units=[16], backbone_weights="imagenet")
    assert captured["weights"] == "imagenet"
    np.testing.assert_array_equal(model.backbone.get_layer("mobilenetv2_features").get_layer("Conv1").kernel.numpy(), 0.25)
    assert model.get_config()["backbone"] == "mobilenetv2"


def test_imagenet_is_refused_where_it_cannot_apply(frcnn_file):
    path, _ = frcnn_file
    with pytest.raises(ValueError, match="no ImageNet weights for OverFeat"):
        zoo.load("overfeat_tiny", **SMALL_OVERFEAT, backbone_weights="imagenet")
    with pytest.raises(ValueError, match="is for `weights=None` only"):
        zoo.load("faster_rcnn_tiny", **SMALL_FRCNN, weights=str(path), backbone_weights="imagenet")
    with pytest.raises(ValueError, match="no pretrained weights"):
        zoo.load("faster_rcnn_tiny", **SMALL_FRCNN, backbone_weights="imagenet")


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in SHIPPED if "tiny" not in n])
def test_big_configurations_build_at_their_size(name):
    model = zoo.load(name)
    config = zoo.get_config(name)
    h, w = config.model["image_size"]
    assert model.input_shape == (None, h, w, 3)
    out = model(np.zeros([1, h, w, 3], "float32"))
    assert out["boxes"].shape == (1, config.model["max_detections"], 4)


def test_overrides_are_checked_against_each_other():
    with pytest.raises(ValueError, match=r"overfeat_tiny override: `model.scales` entry 0.6 resizes the \[96, 96\] input"):
        zoo.load("overfeat_tiny", image_size=(96, 96))


def test_separable_rpn_options_build_the_separable_head(tmp_path):
    model = zoo.load("faster_rcnn_tiny", **SMALL_FRCNN, rpn_separable=True, rpn_kernel_size=5)
    assert model.rpn_head.separable and model.rpn_head.kernel_size == 5
    assert model.rpn_head.channels == 96  # the default width min(512, C) of the tiny backbone
    assert tuple(model.rpn_head.conv.depthwise_kernel.shape) == (5, 5, 96, 1)
    _shift_weights(model)
    model.save_weights(tmp_path / "separable.weights.h5")
    again = zoo.load("faster_rcnn_tiny", **SMALL_FRCNN, rpn_separable=True, rpn_kernel_size=5,
                     weights=str(tmp_path / "separable.weights.h5"))
    _assert_same(_arrays(again), _arrays(model))
    explicit = zoo.load("faster_rcnn_tiny", **SMALL_FRCNN, rpn_separable=True, rpn_channels=32)
    assert explicit.rpn_head.channels == 32 and explicit.rpn_head.kernel_size == 5
    dense = zoo.load("faster_rcnn_tiny", **SMALL_FRCNN, rpn_separable=False, rpn_kernel_size=3)
    assert not dense.rpn_head.separable and tuple(dense.rpn_head.conv.kernel.shape) == (3, 3, 96, 96)


def test_roi_align_sampling_ratio_and_rpn_ious_reach_the_model():
    model = zoo.load("faster_rcnn_tiny", **SMALL_FRCNN, roi_pool="roi_align", sampling_ratio=3,
                     rpn_positive_iou=0.6, rpn_negative_iou=0.2, rpn_best_anchors_per_gt=3)
    assert type(model.roi_pool).__name__ == "RoIAlign" and model.roi_pool.sampling_ratio == 3
    assert (model.rpn_positive_iou, model.rpn_negative_iou, model.rpn_best_anchors_per_gt) == (0.6, 0.2, 3)
