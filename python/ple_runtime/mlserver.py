"""An MLServer runtime for ``.ple`` models: the Open Inference (KServe V2) protocol over REST
and gRPC, so a model deploys on KServe, Seldon Core or a plain ``mlserver start``.

``model-settings.json``::

    {"name": "ranker", "implementation": "ple_runtime.mlserver.PleModel",
     "parameters": {"uri": "./model.ple", "extra": {"gates": false}}}

``parameters.extra`` (all optional): ``gates`` (also return every gate's softmax weights,
outputs ``gate.<level>.<task>``), ``threads`` (split large batches across this many threads,
``Model(threads=)``), ``warm`` (default true: fault the whole file in at load, so the first
requests after a deployment or a reload do not wait for the disk), ``lock``, ``verify_data``,
``pad_id`` (an id, or ``{feature: id}``, for sequences whose model has none; see below).

Tensors (docs/SERVING.md has the full table; ``/v2/models/<name>`` lists them from the file):

- a sparse feature: ``INT64 [B]`` (or ``[B, 1]``);
- a sequence: ``INT64 [B, L]`` with ``L <= max_len``; rows shorter than ``L`` are filled by the
  client with the feature's pad id, and ``L < max_len`` is padded on the right here. Ragged
  rows: ``BYTES [B]``, one JSON list of ids per sample (``"[4, 17, 9]"``), padded here;
- a dense feature: ``FP32 [B, width]`` (``[B]`` for width 1);
- outputs: one ``FP32 [B, len]`` per task, named as in the file.

Requests go through ``Model.predict``: the same conversions, validation and messages as the
Python API (ids as whole floats accepted, every id checked against its table, errors naming
the input and the sample); a bad request gets a V2 error (REST 400, gRPC INVALID_ARGUMENT)
with that message. Scoring runs on the event loop's thread with one session per thread
(no allocation per sample; the output rows are one array per request).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from mlserver import MLModel
from mlserver.errors import InferenceError
from mlserver.types import (
    InferenceRequest,
    InferenceResponse,
    MetadataTensor,
    Parameters,
    ResponseOutput,
)
from mlserver.utils import get_model_uri

from .model import Model, PleError

__all__ = ["PleModel", "GATE_PREFIX"]

# Gate outputs are named "gate.<gate name>" ("gate.level0.task0") so that they can never clash
# with a task output's name.
GATE_PREFIX = "gate."

_NUMPY = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}
_OPTIONS = {"gates", "threads", "warm", "lock", "verify_data", "pad_id"}


def _datatype(value: Any) -> str:
    return str(getattr(value, "value", value))


def _data(tensor: Any) -> Any:
    return getattr(tensor.data, "root", tensor.data)


class PleModel(MLModel):
    """The MLServer runtime (``"implementation": "ple_runtime.mlserver.PleModel"``)."""

    async def load(self) -> bool:
        extra = dict((self.settings.parameters.extra if self.settings.parameters else None) or {})
        unknown = sorted(set(extra) - _OPTIONS)
        if unknown:
            raise ValueError(f"model {self.name!r}: unknown parameters.extra {unknown} (known: {sorted(_OPTIONS)})")
        path = await get_model_uri(self.settings, wellknown_filenames=["model.ple"])
        self._gates = bool(extra.get("gates", False))
        self._pad_id = extra.get("pad_id")
        self._model = Model(path, warm=bool(extra.get("warm", True)), lock=bool(extra.get("lock", False)),
                            verify_data=bool(extra.get("verify_data", False)), threads=extra.get("threads"))
        self.path = path
        self._output_by_name = {o.name: o for o in self._model.outputs}
        self._gate_by_name = {GATE_PREFIX + g.name: g for g in self._model.gates}
        self.inputs = [self._input_metadata(i) for i in self._model.inputs]
        self.outputs = ([MetadataTensor(name=o.name, datatype="FP32", shape=[-1, o.len])
                         for o in self._model.outputs]
                        + [MetadataTensor(name=GATE_PREFIX + g.name, datatype="FP32", shape=[-1, g.len])
                           for g in self._model.gates if self._gates])
        if not self.settings.platform:
            self.settings.platform = "ple"
        return True

    async def unload(self) -> bool:
        model, self._model = getattr(self, "_model", None), None
        if model is not None:
            model.close()
        return True

    @staticmethod
    def _input_metadata(info) -> MetadataTensor:
        params: dict[str, Any] = {"kind": info.kind}
        if info.kind == "dense":
            datatype, shape = "FP32", [-1, info.width]
        else:
            datatype = "INT64"
            shape = [-1] if info.kind == "sparse" else [-1, info.max_len]
            params["vocab_size"] = info.vocab_size
        if info.kind == "sequence":
            params["max_len"] = info.max_len
            params["pooling"] = info.pooling
            if info.pad_id is not None:
                params["pad_id"] = info.pad_id
        return MetadataTensor(name=info.name, datatype=datatype, shape=shape, parameters=Parameters(**params))

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        model = getattr(self, "_model", None)
        if model is None:
            raise InferenceError(f"model {self.name!r} is unloaded")
        columns = {}
        for tensor in payload.inputs:
            if tensor.name in columns:
                raise InferenceError(f"input {tensor.name!r} is given more than once")
            columns[tensor.name] = self._decode(tensor)
        wanted = self._wanted_outputs(payload)
        with_gates = any(name.startswith(GATE_PREFIX) for name in wanted)
        try:
            result = model.predict(columns, gates=with_gates, pad_id=self._pad_id)
        except (PleError, ValueError, TypeError) as exc:
            raise InferenceError(str(exc)) from None
        scores, gates = result if with_gates else (result, None)
        outputs = []
        for name in wanted:
            if name.startswith(GATE_PREFIX):
                g = self._gate_by_name[name]
                block = gates[:, g.offset:g.offset + g.len]
            else:
                o = self._output_by_name[name]
                block = scores[:, o.offset:o.offset + o.len]
            outputs.append(ResponseOutput(name=name, datatype="FP32", shape=list(block.shape),
                                          data=block.reshape(-1).tolist()))
        # ple_batch_size: the samples scored in this call; under adaptive batching, every merged
        # request's response carries the size of the merged batch (for tuning max_batch_time).
        return InferenceResponse(model_name=self.name, model_version=self.version, id=payload.id,
                                 outputs=outputs, parameters=Parameters(ple_batch_size=int(scores.shape[0])))

    def _wanted_outputs(self, payload: InferenceRequest) -> list[str]:
        """Output names to return: those the request names, or every task output (and the
        gates when ``parameters.extra.gates`` is set)."""
        if not payload.outputs:
            names = [o.name for o in self._model.outputs]
            if self._gates:
                names += [GATE_PREFIX + g.name for g in self._model.gates]
            return names
        known = set(self._output_by_name) | set(self._gate_by_name)
        names = []
        for requested in payload.outputs:
            if requested.name not in known:
                raise InferenceError(f"output {requested.name!r}: the model has no such output "
                                     f"(outputs {self._model.output_names}, gates "
                                     f"{[GATE_PREFIX + n for n in self._model.gate_names]})")
            if requested.name not in names:
                names.append(requested.name)
        return names

    def _decode(self, tensor) -> Any:
        """One V2 input tensor as what ``Model.predict`` takes: an array of the tensor's shape,
        or, for a BYTES sequence, a list of id lists (ragged)."""
        name, datatype, shape = tensor.name, _datatype(tensor.datatype), list(tensor.shape)
        data = _data(tensor)
        if datatype == "BYTES":
            return self._ragged(name, shape, data)
        dtype = _NUMPY.get(datatype)
        if dtype is None:
            raise InferenceError(f"input {name!r}: datatype {datatype} is not supported "
                                 f"(INT64 ids, FP32 dense values, BYTES for ragged sequences)")
        if any(d < 0 for d in shape):
            raise InferenceError(f"input {name!r}: shape {shape} has a negative dimension")
        try:
            arr = np.asarray(data if data is not None else [], dtype=dtype)
        except (ValueError, TypeError, OverflowError) as exc:
            raise InferenceError(f"input {name!r}: data is not a {datatype} tensor ({exc})") from None
        want = math.prod(shape)
        if arr.size != want:
            raise InferenceError(f"input {name!r}: {arr.size} values for shape {shape} ({want} expected)")
        return arr.reshape(shape)

    def _ragged(self, name: str, shape: list, data: Any) -> list:
        try:
            info = self._model.input(name)
        except KeyError:
            info = None
        if info is None or info.kind != "sequence":
            raise InferenceError(f"input {name!r}: BYTES is accepted only for sequence inputs "
                                 f"(one JSON list of ids per sample)")
        cells = list(data or [])
        if len(shape) != 1 or shape[0] != len(cells):
            raise InferenceError(f"input {name!r}: a BYTES sequence needs shape [B] with one element per "
                                 f"sample; got shape {shape} and {len(cells)} elements")
        rows = []
        for sample, cell in enumerate(cells):
            text = cell.decode("utf-8", "replace") if isinstance(cell, (bytes, bytearray)) else str(cell)
            try:
                ids = json.loads(text) if text.strip() else []
            except ValueError:
                ids = None
            if not isinstance(ids, list):
                raise InferenceError(f"input {name!r}, sample {sample}: {text[:40]!r} is not a JSON list of ids")
            rows.append(ids)
        return rows
