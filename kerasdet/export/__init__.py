"""Export: builtin-op TFLite conversion and inspection."""

from kerasdet.export.tflite import BuiltinOpsError, convert_builtin_only, tflite_op_names

__all__ = ["BuiltinOpsError", "convert_builtin_only", "tflite_op_names"]
