"""The model zoo: named configurations (one YAML file each) and their weights.

    import kerasdet
    kerasdet.zoo.list()                        # ['faster_rcnn_mobilenetv2', ..., 'overfeat_tiny']
    kerasdet.zoo.info("faster_rcnn_tiny")      # description, parameters, weights + metrics
    model = kerasdet.zoo.load("faster_rcnn_tiny", weights="shapes")
    model = kerasdet.zoo.load("faster_rcnn_tiny", weights="shapes", num_classes=3)  # fine-tune
    model = kerasdet.zoo.load("faster_rcnn_vgg16", backbone_weights="imagenet")
    model = kerasdet.zoo.load("my_config.yaml", weights="run/my.weights.h5")
    parts = kerasdet.zoo.load_parts("overfeat_tiny")   # classifier, localizer, detector

The configurations are package data in `kerasdet/zoo/configs/` (a `zoo` link at the top of
the repository points there); their bundled weights files are in `kerasdet/zoo/weights/`.
Downloaded weights are cached in `$KERASDET_HOME/weights` (default `~/.kerasdet`).
"""

from kerasdet.zoo.api import info, list_models, load, load_parts
from kerasdet.zoo.builders import CLASS_LAYERS, OverFeatParts
from kerasdet.zoo.config import WeightsEntry, ZooConfig, get_config, load_config
from kerasdet.zoo.weights import WeightsError, kerasdet_home, load_weights_by_name, sha256_of

# `kerasdet.zoo.list()`, like `torch.hub.list()`; the builtin stays usable inside the package
# because no module of it does `from kerasdet.zoo import list`.
list = list_models  # noqa: A001

__all__ = [
    "CLASS_LAYERS",
    "OverFeatParts",
    "WeightsEntry",
    "WeightsError",
    "ZooConfig",
    "get_config",
    "info",
    "kerasdet_home",
    "list",
    "load",
    "load_config",
    "load_parts",
    "load_weights_by_name",
    "sha256_of",
]
