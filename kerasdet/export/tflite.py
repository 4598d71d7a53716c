"""Convert a Keras model, a `tf.function` or a SavedModel to TFLite with builtin ops only.

kerasdet promises phone-ready detectors: every graph must run on the pip `ai-edge-litert`
interpreter, which has neither the Flex delegate (`SELECT_TF_OPS`) nor our custom ops. The
converter is therefore restricted to `TFLITE_BUILTINS`, and the written flatbuffer's operator
table is checked again afterwards so a custom op cannot slip in.

Full-integer (int8) quantization with a representative dataset can be limited to the ops
under given name scopes (`quantized_scopes`): a detector's convolutions and FC layers run in
int8 while its box arithmetic (anchors, decoding, clipping, RoI coordinates, NMS, greedy
merge) stays float. Quantizing every op that has an int8 kernel breaks detectors: constant
grids of window centres and pixel coordinates are squeezed into 256 levels (OverFeat-tiny's
AP50 fell from 0.10 to 0.005), and LiteRT aborts the process on a greedy-merge loop whose
state was quantized.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence

import flatbuffers
import tensorflow as tf


class BuiltinOpsError(ValueError):
    """A TFLite graph uses an operator that is not a TFLite builtin."""


def _schema():
    from tensorflow.lite.python import schema_py_generated as schema

    return schema


def tflite_op_names(tflite_model: bytes) -> list[str]:
    """Names of the operators a TFLite flatbuffer uses, sorted.

    Builtin operators are reported by their `BuiltinOperator` name (e.g. `"CONV_2D"`);
    custom operators (including Flex ops) as `"CUSTOM:<name>"`.

    Args:
        tflite_model: bytes of a `.tflite` file.

    Returns:
        A sorted list of distinct operator names.
    """
    schema = _schema()
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


def _scope_matcher(scopes: Sequence[str]) -> Callable[[str], bool]:
    """A test of whether every part of a (possibly fused, `;`-joined) node name lies under
    one of `scopes`. Keras names a layer's ops `<model>/<layer name>[_<k>]/...` (TF
    uniquifies scopes with a `_<k>` suffix), so a scope matches the second path component."""
    pattern = re.compile(r"^[^/]+/(?:" + "|".join(re.escape(s) for s in scopes) + r")(?:_\d+)?/")

    def inside(name: str) -> bool:
        parts = [part for part in name.split(";") if part]
        return bool(parts) and all(pattern.match(part) for part in parts)

    return inside


def _check_builtins(tflite_model: bytes) -> bytes:
    custom = [name for name in tflite_op_names(tflite_model) if name.startswith("CUSTOM:")]
    if custom:
        raise BuiltinOpsError(f"TFLite graph uses non-builtin ops {custom}; expected builtins only")
    return tflite_model


def _run_converter(converter) -> bytes:
    try:
        with warnings.catch_warnings():
            # Calibration runs TensorFlow's own deprecated tf.lite.Interpreter internally;
            # its deprecation notice is not actionable for the caller.
            warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated", category=UserWarning)
            return converter.convert()
    except Exception as error:  # the converter raises ConverterError with the op list
        raise BuiltinOpsError(
            f"TFLite conversion with builtin ops only failed: {str(error).splitlines()[0]}"
        ) from error


def _convert(
    converter,
    *,
    optimizations=(),
    supported_types=(),
    representative_dataset=None,
    quantized_scopes=None,
) -> bytes:
    """Configures `converter` for builtin ops only, converts, checks the op table."""
    # Float fallback: ops without an int8 kernel (NMS, TopK, float casts) stay float even
    # with a representative dataset. TFLITE_BUILTINS_INT8 alone would reject them.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.optimizations = list(optimizations)
    if supported_types:
        converter.target_spec.supported_types = list(supported_types)
    if representative_dataset is None:
        return _check_builtins(_run_converter(converter))
    if not converter.optimizations:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    if quantized_scopes is None:
        return _check_builtins(_run_converter(converter))
    return _check_builtins(_quantize_selectively(converter, quantized_scopes))


def _quantize_selectively(converter, quantized_scopes: Sequence[str]) -> bytes:
    """Calibrates, then quantizes only the ops under `quantized_scopes`; others stay float.

    The steps `tf.lite.experimental.QuantizationDebugger` runs for its deny lists
    (calibrate-only conversion, then the MLIR quantizer), with more done to make the deny
    list hold. A node deny list alone does not: the quantizer still rounds a denied op's
    output through int8 when it has calibration statistics, and quantizes ops that only
    pass values through (slices, reshapes, unpacks) from their neighbours' statistics.
    So, outside the scopes, (1) calibration statistics are deleted, (2) every op is denied
    by its output names (each one and, for multi-output ops, the `;`-joined name the
    quantizer gives the op), and (3) op types that occur only outside the scopes are
    denied by type.
    """
    from tensorflow.lite.python import convert as lite_convert

    converter._experimental_calibrate_only = True
    calibrated = _run_converter(converter)
    inside = _scope_matcher(quantized_scopes)
    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(calibrated), 0)
    op_names = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    keep_float, inside_types, outside_types = set(), set(), set()
    for subgraph in model.subgraphs or []:
        tensors = subgraph.tensors or []
        for op in subgraph.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            op_type = op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode))
            outputs = [_text(tensors[i].name) for i in op.outputs if i >= 0]
            if outputs and all(inside(name) for name in outputs):
                inside_types.add(op_type)
            else:
                outside_types.add(op_type)
                keep_float.update(outputs)
                keep_float.add(";".join(outputs))
        for tensor in tensors:
            if not inside(_text(tensor.name)):
                tensor.quantization = None
    if not inside_types:
        warnings.warn(
            f"no TFLite op lies under the quantized scopes {list(quantized_scopes)}; "
            "quantizing every op with an int8 kernel instead",
            stacklevel=3,
        )
        return _run_quantizer(lite_convert, calibrated, converter)
    builder = flatbuffers.Builder(len(calibrated) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return _run_quantizer(
        lite_convert, bytes(builder.Output()), converter,
        denylisted_nodes=sorted(keep_float), denylisted_ops=sorted(outside_types - inside_types - {None}),
    )


def _text(name) -> str:
    return name.decode() if isinstance(name, bytes) else str(name or "")


def _run_quantizer(lite_convert, calibrated: bytes, converter, **deny) -> bytes:
    try:
        return lite_convert.mlir_quantize(
            calibrated,
            disable_per_channel=converter._experimental_disable_per_channel,
            fully_quantize=False,  # float inputs and outputs
            **deny,
        )
    except Exception as error:
        raise BuiltinOpsError(f"TFLite int8 quantization failed: {str(error).splitlines()[0]}") from error


def convert_builtin_only(
    fn: Callable,
    input_signature: Sequence[tf.TensorSpec],
    *,
    optimizations: Sequence[tf.lite.Optimize] = (),
    supported_types: Sequence[tf.dtypes.DType] = (),
    representative_dataset: Callable[[], Iterable] | None = None,
) -> bytes:
    """Converts `fn` to a TFLite flatbuffer that uses builtin operators only.

    Args:
        fn: a Keras model, layer or any callable of tensors (it is wrapped in a
            `tf.function` with `input_signature`).
        input_signature: one `tf.TensorSpec` per positional input. TFLite needs static
            shapes for fast kernels, so give every dimension except possibly the batch.
        optimizations: `tf.lite.Optimize` values (e.g. `[tf.lite.Optimize.DEFAULT]`).
        supported_types: e.g. `[tf.float16]` for float16 weights.
        representative_dataset: for int8 activations, a callable returning an iterable of
            input lists (one array per input of `input_signature`). Ops without an int8
            kernel stay float. Calibration cannot read the variables of a concrete
            function (TensorFlow issue 62664), so `fn` then goes through a temporary
            SavedModel.

    Returns:
        The `.tflite` flatbuffer as bytes. Without `representative_dataset` it has no
        signature and its output order follows `fn`'s (flattened) outputs; with it, it
        has a `serving_default` signature (outputs named by the keys `fn` returns).

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
    if representative_dataset is not None:
        module = tf.Module()
        # The SavedModel must own every variable the function captures (`fn` may be a
        # lambda around a model), so track them explicitly.
        module.captured_variables = list(concrete.variables)
        module.serving = serving
        with tempfile.TemporaryDirectory() as directory:
            tf.saved_model.save(module, directory, signatures={"serving_default": serving})
            return convert_saved_model_builtin_only(
                directory, optimizations=optimizations, supported_types=supported_types,
                representative_dataset=representative_dataset,
            )

    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], serving)
    return _convert(converter, optimizations=optimizations, supported_types=supported_types)


def convert_saved_model_builtin_only(
    saved_model_dir: str | os.PathLike,
    *,
    signature_key: str = "serving_default",
    optimizations: Sequence[tf.lite.Optimize] = (),
    supported_types: Sequence[tf.dtypes.DType] = (),
    representative_dataset: Callable[[], Iterable] | None = None,
    quantized_scopes: Sequence[str] | None = None,
) -> bytes:
    """Converts one signature of a SavedModel to a builtin-ops-only TFLite flatbuffer.

    The file keeps the signature (`Interpreter.get_signature_runner(signature_key)` takes
    and returns tensors by name).

    Args:
        saved_model_dir: a SavedModel directory.
        signature_key: the signature to convert.
        optimizations: `tf.lite.Optimize` values (e.g. `[tf.lite.Optimize.DEFAULT]`).
        supported_types: e.g. `[tf.float16]` for float16 weights.
        representative_dataset: for int8 activations, a callable returning an iterable of
            `{input name: array}` dicts (or lists in input order), ~100 samples. Ops
            without an int8 kernel stay float (inputs and outputs stay float too).
        quantized_scopes: with `representative_dataset`, quantize only the ops under these
            top-level name scopes (Keras layer names of the exported model, e.g.
            `["backbone", "rpn_head", "roi_head"]`); all other ops stay float. `None`:
            every op with an int8 kernel.

    Returns:
        The `.tflite` flatbuffer as bytes.

    Raises:
        BuiltinOpsError: if conversion needs an op outside `TFLITE_BUILTINS`, the written
            file lists a custom op, or quantization fails.
    """
    converter = tf.lite.TFLiteConverter.from_saved_model(os.fspath(saved_model_dir), signature_keys=[signature_key])
    return _convert(
        converter, optimizations=optimizations, supported_types=supported_types,
        representative_dataset=representative_dataset,
        quantized_scopes=list(quantized_scopes) if quantized_scopes is not None else None,
    )
