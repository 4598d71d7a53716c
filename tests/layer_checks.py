"""One shared check for every kerasdet layer (the keras-hub pattern).

`check_layer` asserts, for a layer and concrete inputs:
  * `get_config` / `from_config` round-trip (same config, same outputs with copied weights);
  * eager call == symbolic call in a functional model (unknown batch size);
  * a `tf.function` with an unknown batch dimension gives the same outputs;
  * the functional model saved as `.keras` and loaded back gives the same outputs.
`run_tflite` runs a flatbuffer on the ai-edge-litert interpreter.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def _flat(x):
    return [np.asarray(t) for t in tf.nest.flatten(x)]


def assert_same_outputs(a, b, atol=1e-5):
    flat_a, flat_b = _flat(a), _flat(b)
    assert len(flat_a) == len(flat_b), (len(flat_a), len(flat_b))
    for x, y in zip(flat_a, flat_b):
        assert x.shape == y.shape, (x.shape, y.shape)
        np.testing.assert_allclose(x, y, atol=atol, rtol=0)


def check_layer(layer, inputs, tmp_path, atol=1e-5, call_kwargs=None):
    """Runs the standard layer checks; returns the eager outputs.

    Args:
        layer: an unbuilt layer instance.
        inputs: list of NumPy arrays, one per positional call argument; the first axis of
            each is the batch axis.
        tmp_path: a pytest `tmp_path` for the `.keras` file.
    """
    call_kwargs = call_kwargs or {}
    inputs = [np.asarray(x) for x in inputs]
    expected = layer(*[tf.constant(x) for x in inputs], **call_kwargs)

    # Config round trip: same config, and the same outputs once weights are copied.
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    clone(*[tf.constant(x) for x in inputs], **call_kwargs)
    clone.set_weights(layer.get_weights())
    assert_same_outputs(clone(*[tf.constant(x) for x in inputs], **call_kwargs), expected, atol)

    # Symbolic call with an unknown batch size, inside a functional model.
    symbolic = [keras.Input(shape=x.shape[1:], dtype=str(x.dtype)) for x in inputs]
    model = keras.Model(symbolic, layer(*symbolic, **call_kwargs))
    assert_same_outputs(model([tf.constant(x) for x in inputs]), expected, atol)

    # tf.function with the batch dimension unknown at trace time.
    signature = [tf.TensorSpec((None,) + x.shape[1:], tf.as_dtype(x.dtype)) for x in inputs]
    traced = tf.function(lambda *args: layer(*args, **call_kwargs), input_signature=signature)
    assert_same_outputs(traced(*[tf.constant(x) for x in inputs]), expected, atol)

    # .keras save / load.
    path = str(tmp_path / f"{layer.name}.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert_same_outputs(restored([tf.constant(x) for x in inputs]), expected, atol)
    return expected


def run_tflite(tflite_model: bytes, inputs, num_threads: int = 1):
    """Runs a TFLite flatbuffer on ai-edge-litert; returns outputs in signature order.

    Inputs are matched to the interpreter's inputs by position (the converter keeps the
    order of the `tf.function` arguments).
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=tflite_model, num_threads=num_threads)
    input_details = interpreter.get_input_details()
    for detail, value in zip(input_details, inputs):
        value = np.asarray(value, dtype=detail["dtype"])
        if tuple(detail["shape"]) != value.shape:
            interpreter.resize_tensor_input(detail["index"], value.shape)
    interpreter.allocate_tensors()
    for detail, value in zip(interpreter.get_input_details(), inputs):
        interpreter.set_tensor(detail["index"], np.asarray(value, dtype=detail["dtype"]))
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
