"""Convert a Keras model or a `tf.function` to TFLite with builtin ops only.

kerasdet promises phone-ready detectors: every graph must run on the pip `ai-edge-litert`
interpreter, which has neither the Flex delegate (`SELECT_TF_OPS`) nor our custom ops. The
converter is therefore restricted to `TFLITE_BUILTINS`, and the written flatbuffer's operator
table is checked again afterwards so a custom op cannot slip in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf


class BuiltinOpsError(ValueError):
    """A TFLite graph uses an operator that is not a TFLite builtin."""


def tflite_op_names(tflite_model: bytes) -> list[str]:
    """Names of the operators a TFLite flatbuffer uses, sorted.

    Builtin operators are reported by their `BuiltinOperator` name (e.g. `"CONV_2D"`);
    custom operators (including Flex ops) as `"CUSTOM:<name>"`.

    Args:
        tflite_model: bytes of a `.tflite` file.

    Returns:
        A sorted list of distinct operator names.
    """
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite_model), 0)
    builtin_names = {
        value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")
    }
    names = set()
    for code in model.operatorCodes or []:
        # Codes above 127 live in `builtinCode`; older files only fill the deprecated byte.
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        if builtin == schema.BuiltinOperator.CUSTOM:
            custom = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
            names.add(f"CUSTOM:{custom}")
        else:
            names.add(builtin_names.get(builtin, f"UNKNOWN_{builtin}"))
    return sorted(names)


def convert_builtin_only(
    fn: Callable,
    input_signature: Sequence[tf.TensorSpec],
    *,
    optimizations: Sequence[tf.lite.Optimize] = (),
    supported_types: Sequence[tf.dtypes.DType] = (),
) -> bytes:
    """Converts `fn` to a TFLite flatbuffer that uses builtin operators only.

    Args:
        fn: a Keras model, layer or any callable of tensors (it is wrapped in a
            `tf.function` with `input_signature`).
        input_signature: one `tf.TensorSpec` per positional input. TFLite needs static
            shapes for fast kernels, so give every dimension except possibly the batch.
        optimizations: `tf.lite.Optimize` values (e.g. `[tf.lite.Optimize.DEFAULT]`).
        supported_types: e.g. `[tf.float16]` for float16 weights.

    Returns:
        The `.tflite` flatbuffer as bytes.

    Raises:
        BuiltinOpsError: if conversion needs an op outside `TFLITE_BUILTINS`, or the
            written file lists a custom op.
    """
    if not isinstance(input_signature, (list, tuple)) or not all(
        isinstance(spec, tf.TensorSpec) for spec in input_signature
    ):
        raise TypeError(
            f"`input_signature` must be a list of tf.TensorSpec, got {input_signature!r}"
        )

    @tf.function(input_signature=list(input_signature), autograph=False)
    def serving(*args):
        return fn(*args)

    concrete = serving.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], serving)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.optimizations = list(optimizations)
    if supported_types:
        converter.target_spec.supported_types = list(supported_types)
    try:
        tflite_model = converter.convert()
    except Exception as error:  # the converter raises ConverterError with the op list
        raise BuiltinOpsError(
            f"TFLite conversion with builtin ops only failed: {str(error).splitlines()[0]}"
        ) from error
    custom = [name for name in tflite_op_names(tflite_model) if name.startswith("CUSTOM:")]
    if custom:
        raise BuiltinOpsError(f"TFLite graph uses non-builtin ops {custom}; expected builtins only")
    return tflite_model
