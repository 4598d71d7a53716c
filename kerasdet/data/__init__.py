"""Detection data: the offline `kerasdet_shapes` TFDS builder and `tf.data` pipelines.

Importing this package registers the `kerasdet_shapes` builder with TFDS, so
`tfds.load("kerasdet_shapes", ...)` works afterwards.
"""

from kerasdet.data.pipeline import default_data_dir, detection_dataset, load_shapes
from kerasdet.data.shapes import (
    CLASS_NAMES,
    KerasdetShapes,
    ShapesConfig,
    generate_example,
    make_example,
)

__all__ = [
    "CLASS_NAMES",
    "KerasdetShapes",
    "ShapesConfig",
    "default_data_dir",
    "detection_dataset",
    "generate_example",
    "load_shapes",
    "make_example",
]
