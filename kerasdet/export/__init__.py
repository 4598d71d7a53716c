"""Export: SavedModel and builtin-op TFLite files of kerasdet detectors.

`export(model, path, format)` is the entry point; `convert_builtin_only` and
`convert_saved_model_builtin_only` are the lower-level TFLite converters it uses, and
`tflite_op_names` lists a flatbuffer's operators.
"""

from kerasdet.export.api import FORMATS, QUANTIZATIONS, export, read_metadata
from kerasdet.export.tflite import (
    BuiltinOpsError,
    convert_builtin_only,
    convert_saved_model_builtin_only,
    tflite_op_names,
)

__all__ = [
    "FORMATS",
    "QUANTIZATIONS",
    "BuiltinOpsError",
    "convert_builtin_only",
    "convert_saved_model_builtin_only",
    "export",
    "read_metadata",
    "tflite_op_names",
]
