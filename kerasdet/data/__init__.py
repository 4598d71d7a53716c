"""Detection data: readers for COCO json and VOC xml, TFDS, the offline `kerasdet_shapes`
builder, box-aware augmentation and the `tf.data` pipeline they all share.

`load_detection_data(source, split)` is the one entry point: a COCO json (file or folder), a
VOC folder, a TFDS name (`"voc/2007"`, `"coco/2017"`) or `"shapes"` becomes batches of
`(images, {"boxes", "classes"})` plus the class names.

Importing this package registers the `kerasdet_shapes` builder with TFDS, so
`tfds.load("kerasdet_shapes", ...)` works afterwards.
"""

from kerasdet.data.augment import Augmentation
from kerasdet.data.coco import read_coco, write_coco_json
from kerasdet.data.pipeline import default_data_dir, detection_dataset, load_shapes
from kerasdet.data.records import DataError, DataWarning, DetectionRecords
from kerasdet.data.shapes import (
    CLASS_NAMES,
    KerasdetShapes,
    ShapesConfig,
    generate_example,
    ground_truth_batch,
    make_example,
    shapes_config,
)
from kerasdet.data.sources import (
    COCO_CLASSES,
    box_sizes,
    find_coco_json,
    load_detection_data,
    read_records,
)
from kerasdet.data.voc import VOC_CLASSES, read_voc

__all__ = [
    "Augmentation",
    "CLASS_NAMES",
    "COCO_CLASSES",
    "DataError",
    "DataWarning",
    "DetectionRecords",
    "KerasdetShapes",
    "ShapesConfig",
    "VOC_CLASSES",
    "box_sizes",
    "default_data_dir",
    "detection_dataset",
    "find_coco_json",
    "generate_example",
    "ground_truth_batch",
    "load_detection_data",
    "load_shapes",
    "make_example",
    "read_coco",
    "read_records",
    "read_voc",
    "shapes_config",
    "write_coco_json",
]
