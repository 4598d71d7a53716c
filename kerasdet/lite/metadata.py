"""kerasdet's description of an exported detector, stored inside the `.tflite` file.

A TFLite flatbuffer has a list of named metadata buffers (the converter already writes
`min_runtime_version` there) that interpreters ignore. kerasdet adds one named
`"kerasdet"` holding UTF-8 JSON, e.g.::

    {"format_version": 1, "class_names": ["circle", ...], "input_size": [128, 128],
     "input_dtype": "uint8", "quantization": "float32"}

so one file carries what a runner needs to letterbox images and name classes. Reading and
writing use the flatbuffer schema shipped with `ai-edge-litert` (no TensorFlow needed).
"""

from __future__ import annotations

import json
import os

import flatbuffers
import numpy as np

METADATA_NAME = "kerasdet"
FORMAT_VERSION = 1
_FILE_IDENTIFIER = b"TFL3"


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _model_bytes(model) -> bytes:
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    with open(os.fspath(model), "rb") as f:
        return f.read()


def add_tflite_metadata(tflite_model: bytes, info: dict) -> bytes:
    """Returns `tflite_model` with `info` (JSON-serializable) stored as the `"kerasdet"`
    metadata entry, replacing an earlier one."""
    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite_model), 0)
    payload = np.frombuffer(json.dumps(info, sort_keys=True).encode("utf-8"), np.uint8)
    buffer = schema.BufferT()
    buffer.data = payload
    model.buffers = list(model.buffers or []) + [buffer]
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    kept = [m for m in (model.metadata or []) if _name(m.name) != METADATA_NAME]
    model.metadata = kept + [entry]
    builder = flatbuffers.Builder(len(tflite_model) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=_FILE_IDENTIFIER)
    return bytes(builder.Output())


def _name(name) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


def read_tflite_metadata(model) -> dict | None:
    """The `"kerasdet"` metadata of a `.tflite` file (a path or its bytes), or `None` if
    the file has none.

    Raises:
        ValueError: if the entry is not valid JSON.
    """
    data = _model_bytes(model)
    root = _schema().Model.GetRootAs(bytearray(data), 0)
    for i in range(root.MetadataLength()):
        entry = root.Metadata(i)
        if _name(entry.Name()) != METADATA_NAME:
            continue
        buffer = root.Buffers(entry.Buffer())
        # Files over 2 GB keep buffers after the flatbuffer (offset / size); others inline.
        if buffer.Offset() > 1:
            raw = data[buffer.Offset() : buffer.Offset() + buffer.Size()]
        else:
            raw = buffer.DataAsNumpy().tobytes()
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"the {METADATA_NAME!r} metadata of the TFLite file is not valid JSON: {error}") from error
    return None
