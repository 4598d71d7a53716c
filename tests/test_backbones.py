"""build_backbone: stride 16, weight-free preprocessing, offline ImageNet error."""

import keras
import numpy as np
import pytest

from kerasdet.models import BACKBONES, build_backbone
from kerasdet.models.backbones import ImagePreprocessing


@pytest.mark.parametrize(
    "name, channels", [("tiny", 96), ("vgg16", 512), ("resnet50", 1024), ("mobilenetv2", 576)]
)
def test_stride_16_and_channels(name, channels):
    backbone = build_backbone(name)
    assert backbone.output.shape[-1] == channels
    out = backbone(np.zeros([1, 128, 128, 3], "float32"))
    assert tuple(out.shape) == (1, 8, 8, channels)
    assert all(not layer.weights for layer in backbone.layers[:2])  # preprocessing is weight-free


def test_static_input_shape():
    backbone = build_backbone("tiny", input_shape=(64, 96, 3))
    assert tuple(backbone.output.shape) == (None, 4, 6, 96)


@pytest.mark.parametrize("mode, fn", [("caffe", "vgg16"), ("tf", "mobilenet_v2")])
def test_preprocessing_matches_keras_applications(mode, fn):
    x = np.random.default_rng(0).uniform(0, 255, (2, 5, 5, 3)).astype("float32")
    expected = getattr(keras.applications, fn).preprocess_input(x.copy())
    np.testing.assert_allclose(ImagePreprocessing(mode)(x), expected, atol=1e-4)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="valid names: " + ", ".join(BACKBONES)):
        build_backbone("alexnet")


def test_imagenet_offline_error(monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/x.h5: None -- [Errno -3] name resolution")

    monkeypatch.setattr(keras.applications, "VGG16", offline)
    with pytest.raises(RuntimeError, match="ImageNet weights need network access.*weights=None` works offline"):
        build_backbone("vgg16", weights="imagenet")
    with pytest.raises(Exception, match="URL fetch"):  # weights=None: not rewritten
        build_backbone("vgg16", weights=None)


def test_tiny_stride_8_is_one_top_down_step():
    """Stride 8: the stride-16 stage upsampled ×2 (nearest) plus a 1×1 lateral conv of the
    stride-8 stage — checked against NumPy on the backbone's own intermediate maps."""
    backbone = build_backbone("tiny", input_shape=(72, 104, 3), stride=8)  # odd 9×13 stride-8 grid
    assert tuple(backbone.output.shape) == (None, 9, 13, 96)
    images = np.random.default_rng(0).uniform(0, 255, (2, 72, 104, 3)).astype("float32")
    probe = keras.Model(
        backbone.input,
        [backbone.get_layer("stage3_conv").output, backbone.get_layer("stage4_conv").output, backbone.output],
    )
    stage3, stage4, out = (np.asarray(v) for v in probe(images))
    assert stage4.shape[1:3] == (5, 7)
    kernel, bias = backbone.get_layer("lateral3").get_weights()
    lateral = stage3 @ kernel[0, 0] + bias
    upsampled = np.repeat(np.repeat(stage4, 2, axis=1), 2, axis=2)[:, :9, :13]
    np.testing.assert_allclose(out, lateral + upsampled, rtol=1e-5, atol=1e-5)


def test_tiny_stride_8_save_load(tmp_path):
    backbone = build_backbone("tiny", input_shape=(64, 64, 3), stride=8, batch_norm=True)
    path = str(tmp_path / "backbone.keras")
    backbone.save(path)
    images = np.random.default_rng(1).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(keras.saving.load_model(path)(images), backbone(images), rtol=1e-5, atol=1e-5)
