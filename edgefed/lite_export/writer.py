"""A TFLite file written without TensorFlow: a dense softmax classifier, softmax(x @ kernel + bias).

The graph: input float32 [batch, features] -> FULLY_CONNECTED (weights [classes, features], the
transposed kernel; bias [classes]) -> SOFTMAX (beta 1) -> output float32 [batch, classes]. Both ops are
version 1, which every interpreter runs (tflite-runtime 2.14 on the Pis included). The file is built
with the `flatbuffers` package; the schema's numbers (field slots, operator and type codes) come from
tflite_schema.json beside this module, not from code.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import flatbuffers
import numpy as np

from edgefed.errors import user_error

SCHEMA_FILE = "tflite_schema.json"
# The Python builder holds the whole file in memory: refuse models far beyond anything a Pi would serve.
MAX_PARAMETERS = 1 << 26
DESCRIPTION = "edgefed dense softmax classifier"

# How the builder prepends each scalar kind named in the schema file.
_PREPEND_SLOT = {
    "bool": "PrependBoolSlot", "int8": "PrependInt8Slot", "uint8": "PrependUint8Slot",
    "int32": "PrependInt32Slot", "uint32": "PrependUint32Slot", "float32": "PrependFloat32Slot",
}


@user_error
class LiteWriteError(ValueError):
    """The weights cannot make a model file; the message says which and why."""


@cache
def tflite_schema() -> dict[str, Any]:
    """The schema facts file, parsed (cached: callers must not modify it)."""
    text = resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _checked(kernel: object, bias: object) -> tuple[np.ndarray, np.ndarray]:
    """kernel [features, classes] and bias [classes], float32 and finite; LiteWriteError otherwise."""
    for name, array in (("kernel", kernel), ("bias", bias)):
        if not isinstance(array, np.ndarray):
            raise LiteWriteError(f"softmax model: {name} must be a NumPy array, got {type(array).__name__}")
        if array.dtype != np.float32:
            raise LiteWriteError(f"softmax model: {name} must be float32, got {array.dtype}")
    assert isinstance(kernel, np.ndarray) and isinstance(bias, np.ndarray)
    if kernel.ndim != 2 or bias.ndim != 1 or min(kernel.shape, default=0) < 1 or bias.shape[0] != kernel.shape[1]:
        raise LiteWriteError(f"softmax model: kernel {kernel.shape} and bias {bias.shape} do not make "
                             "kernel [features, classes] and bias [classes]")
    if kernel.size + bias.size > MAX_PARAMETERS:
        raise LiteWriteError(f"softmax model: {kernel.size + bias.size} parameters, over {MAX_PARAMETERS}")
    if not (np.isfinite(kernel).all() and np.isfinite(bias).all()):
        raise LiteWriteError("softmax model: the weights hold NaN or Inf")
    return kernel, bias


class _Builder:
    """flatbuffers.Builder driven by the schema file's table layouts."""

    def __init__(self, schema: dict[str, Any], size_hint: int) -> None:
        self.schema = schema
        self.fb = flatbuffers.Builder(size_hint)

    def table(self, name: str, fields: dict[str, Any]) -> int:
        """One table; every offset in `fields` must already be built (flatbuffers forbids nesting)."""
        layout = self.schema["tables"][name]
        self.fb.StartObject(max(spec["slot"] for spec in layout.values()) + 1)
        for field, value in fields.items():
            spec = layout[field]
            if spec["kind"] == "offset":
                self.fb.PrependUOffsetTRelativeSlot(spec["slot"], value, 0)
            else:
                getattr(self.fb, _PREPEND_SLOT[spec["kind"]])(spec["slot"], value, spec["default"])
        return int(self.fb.EndObject())

    def int32s(self, values: list[int]) -> int:
        self.fb.StartVector(4, len(values), 4)
        for value in reversed(values):
            self.fb.PrependInt32(value)
        return int(self.fb.EndVector())

    def offsets(self, values: list[int]) -> int:
        self.fb.StartVector(4, len(values), 4)
        for value in reversed(values):
            self.fb.PrependUOffsetTRelative(value)
        return int(self.fb.EndVector())

    def aligned_bytes(self, data: bytes) -> int:
        """A [ubyte] vector whose data starts on the schema's buffer alignment (Buffer.data force_align)."""
        self.fb.StartVector(1, len(data), self.schema["buffer_alignment"])
        self.fb.head -= len(data)
        self.fb.Bytes[self.fb.head : self.fb.head + len(data)] = data
        return int(self.fb.EndVector())

    def string(self, text: str) -> int:
        return int(self.fb.CreateString(text))


def dense_softmax_tflite(kernel: np.ndarray, bias: np.ndarray) -> bytes:
    """The .tflite file of softmax(x @ kernel + bias): kernel [features, classes], bias [classes], float32."""
    kernel, bias = _checked(kernel, bias)
    features, classes = (int(d) for d in kernel.shape)
    schema = tflite_schema()
    out = _Builder(schema, kernel.nbytes + bias.nbytes + 4096)
    float32 = schema["tensor_types"]["FLOAT32"]

    # Buffer 0 is the schema's empty sentinel (tensors computed at run time); 1 and 2 hold the constants.
    weights = out.aligned_bytes(np.ascontiguousarray(kernel.T, dtype="<f4").tobytes())
    biases = out.aligned_bytes(np.ascontiguousarray(bias, dtype="<f4").tobytes())
    buffers = [out.table("Buffer", {}), out.table("Buffer", {"data": weights}), out.table("Buffer", {"data": biases})]

    # (name, shape, buffer): batch 1 in `shape`, -1 (any batch) in `shape_signature` for the run-time tensors.
    specs = [("input", [1, features], 0), ("dense/weights", [classes, features], 1), ("dense/bias", [classes], 2),
             ("logits", [1, classes], 0), ("probabilities", [1, classes], 0)]
    tensors = []
    for name, shape, buffer in specs:
        fields: dict[str, Any] = {"shape": out.int32s(shape), "name": out.string(name)}
        if buffer == 0:
            fields["shape_signature"] = out.int32s([-1, *shape[1:]])
        tensors.append(out.table("Tensor", {**fields, "type": float32, "buffer": buffer}))

    codes = []
    for op in ("FULLY_CONNECTED", "SOFTMAX"):
        code = schema["builtin_operators"][op]
        codes.append(out.table("OperatorCode", {
            "deprecated_builtin_code": min(code, schema["largest_deprecated_builtin_code"]),
            "builtin_code": code, "version": 1,
        }))

    options = schema["builtin_options"]
    dense_options = out.table("FullyConnectedOptions",
                              {"fused_activation_function": schema["activation_functions"]["NONE"]})
    softmax_options = out.table("SoftmaxOptions", {"beta": 1.0})  # the schema's default beta is 0
    operators = [
        out.table("Operator", {"opcode_index": 0, "inputs": out.int32s([0, 1, 2]), "outputs": out.int32s([3]),
                               "builtin_options_type": options["FullyConnectedOptions"],
                               "builtin_options": dense_options}),
        out.table("Operator", {"opcode_index": 1, "inputs": out.int32s([3]), "outputs": out.int32s([4]),
                               "builtin_options_type": options["SoftmaxOptions"],
                               "builtin_options": softmax_options}),
    ]
    subgraph = out.table("SubGraph", {
        "tensors": out.offsets(tensors), "inputs": out.int32s([0]), "outputs": out.int32s([4]),
        "operators": out.offsets(operators), "name": out.string("main"),
    })
    model = out.table("Model", {
        "version": schema["schema_version"], "operator_codes": out.offsets(codes),
        "subgraphs": out.offsets([subgraph]), "description": out.string(DESCRIPTION),
        "buffers": out.offsets(buffers),
    })
    out.fb.Finish(model, file_identifier=schema["file_identifier"].encode("ascii"))
    return bytes(out.fb.Output())
