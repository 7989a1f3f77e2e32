"""``ple_runtime.Model``: score a ``.ple`` file with the native extension (``ple_runtime._ple``).

    import ple_runtime
    m = ple_runtime.Model("model.ple")
    scores = m.predict({"user_id": user_ids, "hist": padded_hist, "price": prices})  # [B, output_width]
    scores, gates = m.predict(inputs, gates=True)                                     # + [B, gate_width]

``predict`` takes what the training model takes: a dict of numpy arrays keyed by
feature name (ids as integers ``[B]``, sequences as padded ``[B, max_len]``, dense
features as floats ``[B, width]`` or ``[B]`` for width 1), or, for a model whose only
input is one dense feature, a 2-D float array ``[B, width]``. A dict holding exactly the
model's inputs as C-contiguous native int64 (ids) / float32 (dense) arrays of the right
shapes is scored in place, checked in Rust (the fast path: no conversion, no copy); any
other form is first converted by :mod:`ple_runtime.inputs`. The library validates
everything (names, kinds, lengths, every id) before computing, and a failure raises
:class:`PleError` carrying the library's status and detailed message.

Dense inputs are not checked for NaN or infinity: like the training libraries, the
runtime propagates them into the scores of the samples that hold them (other samples
of the batch are unaffected).

A model keeps as many sessions as calls ever ran on it at once (each call takes an idle
one), so one ``Model`` may be shared by threads; the GIL is released during scoring, so
Python threads score in parallel. A session's working memory is bounded by 64 samples
whatever its ``max_batch``, so sessions are created for the library's largest batch
(2^24) and any practical batch is scored in one call; larger ones are split.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import _native
from . import inputs as _inputs

__all__ = ["Model", "Pool", "PleError", "InputInfo", "OutputInfo", "GateInfo"]


class PleError(ValueError):
    """A call into libple failed.

    Attributes: ``status`` (the ``ple_status`` code), ``status_name``
    (``"PLE_STATUS_ID_OUT_OF_RANGE"``...), ``description`` (the status's fixed text)
    and ``detail`` (the library's detailed message, e.g. "input 'user_id', sample 3,
    position 0: id 64 is out of range (the table has 64 rows)").
    """

    def __init__(self, status: int, detail: str, context: str = ""):
        self.status = int(status)
        self.status_name = _native.STATUS_NAMES.get(self.status, f"status {self.status}")
        self.description = _native.status_str(self.status) if self.status else ""
        self.detail = detail
        msg = f"{self.description}: {detail}" if detail else self.description
        if context:
            msg = f"{context}: {msg}"
        super().__init__(msg)


@dataclasses.dataclass(frozen=True)
class InputInfo:
    """One input of the model, in column order (``ple_model_input_*``)."""

    name: str
    kind: str  # "dense", "sparse" or "sequence"
    width: int  # dense width, or embedding dimension
    values_per_sample: int  # width (dense), 1 (sparse), max_len (sequence)
    vocab_size: int  # valid ids are 0 .. vocab_size - 1 (0 for dense)
    max_len: int  # sequence length (1 sparse, 0 dense)
    pooling: str | None  # "sum" / "mean" / "max" for sequences
    pad_id: int | None  # positions holding it are ignored by the pooling

    @property
    def shape(self) -> tuple:
        """Per-sample shape of the array ``predict`` takes for this input."""
        if self.kind == "sparse":
            return ()
        return (self.values_per_sample,)


@dataclasses.dataclass(frozen=True)
class OutputInfo:
    """One output: columns ``offset : offset + len`` of each result row."""

    name: str
    offset: int
    len: int


@dataclasses.dataclass(frozen=True)
class GateInfo:
    """One gate's softmax weights: columns ``offset : offset + len`` of each gate row."""

    name: str
    offset: int
    len: int


class _Closable:
    """A handle released by ``close()``: usable as a context manager, released when collected."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass


class Pool(_Closable):
    """Threads that sessions split one large batch across (libple's ``ple_pool``).

    Pool(threads=0)  -- ``threads`` 0 means one per CPU; at most 1024.

    Make one per process (or per group of models) and pass it to several models with
    ``Model(path, pool=pool)``; ``Model(path, threads=N)`` makes a private one. Results are
    bit-identical to one thread. A batch is split only when it is large enough to gain
    (docs/DESIGN.md, "Threads"); idle threads sleep (after spinning ``spin_us``, default
    50 µs). A pool serves one call at a time: a call that finds it busy with another
    model's or thread's call scores on its own thread instead of waiting. Sessions hold
    their own reference, so :meth:`close` (or collection) is safe while models use it.
    """

    def __init__(self, threads: int = 0, *, spin_us: int | None = None):
        ext = _native.ext()
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise ValueError(f"threads must be an integer >= 0 (0: one per CPU), got {threads!r}")
        try:
            self._core = ext.Pool(threads)
        except ext.Error as exc:
            raise _ple_error(exc, f"ple_pool_new({threads})") from None
        self.threads: int = int(self._core.threads)
        if spin_us is not None:
            self.set_spin_us(spin_us)

    @property
    def closed(self) -> bool:
        return self._core.closed

    def set_spin_us(self, spin_us: int) -> None:
        """How long an idle thread spins before it sleeps (0: sleep at once)."""
        if self._core.closed:
            raise ValueError("the pool is closed")
        if not 0 <= int(spin_us) < 2**32:
            raise ValueError(f"spin_us must be in 0..2^32-1, got {spin_us}")
        self._core.set_spin_us(int(spin_us))

    def close(self) -> None:
        """Release this handle (models' sessions keep the threads until they are freed)."""
        core = getattr(self, "_core", None)
        if core is not None:
            core.close()

    def __repr__(self) -> str:
        return f"<ple_runtime.Pool {self.threads} threads{', closed' if self.closed else ''}>"


def _ple_error(exc: Exception, context: str = "") -> "PleError":
    """The :class:`PleError` for the extension's ``Error(status, detail)``."""
    status, detail = exc.args
    return PleError(status, detail, context)


class Model(_Closable):
    """A ``.ple`` model loaded by libple.

    Model(path, verify_data=False, in_memory=False, warm=False, lock=False, max_batch=None,
          threads=None, pool=None)

    - ``verify_data``: also check the data section's checksum at open (reads the file);
    - ``in_memory``: read the file into memory instead of mapping it (for files that may
      be rewritten in place);
    - ``warm``: bring the whole model into memory before returning (:meth:`warm`), so the
      first predictions do not wait for page faults; ``lock``: also lock it in RAM (mlock:
      within ``RLIMIT_MEMLOCK``, else :class:`PleError` naming it);
    - ``max_batch``: the sessions' batch limit (default 2^24, the library's maximum;
      working memory does not grow with it). Larger batches are scored in chunks.
    - ``threads``: split each large batch across this many threads (a private
      :class:`Pool`; 0 means one per CPU; default 1: every call on the calling thread);
    - ``pool``: a :class:`Pool` shared with other models instead (not with ``threads``);
    - ``min_parallel_batch``: the smallest batch split across the pool (default: chosen by
      the library from the model's size; scores never depend on it, only speed does).

    ``Model.from_bytes(data)`` loads a model from bytes. Use as a context manager or
    call :meth:`close` to release it early; otherwise it is released when collected.
    """

    def __init__(self, path: str | os.PathLike, *, verify_data: bool = False, in_memory: bool = False,
                 warm: bool = False, lock: bool = False, max_batch: int | None = None, threads: int | None = None, pool: Pool | None = None,
                 min_parallel_batch: int | None = None, _data: bytes | None = None):
        ext = _native.ext()
        self._core = None
        if min_parallel_batch is not None and (isinstance(min_parallel_batch, bool) or min_parallel_batch < 0):
            raise ValueError(f"min_parallel_batch must be an integer >= 0, got {min_parallel_batch!r}")
        self.max_batch = int(max_batch) if max_batch is not None else _native.MAX_BATCH_LIMIT
        if not 1 <= self.max_batch <= _native.MAX_BATCH_LIMIT:
            raise ValueError(f"max_batch must be in 1..{_native.MAX_BATCH_LIMIT}, got {max_batch}")
        # The model keeps its own clone of the pool: a private one is closed here at once.
        chosen = self._choose_pool(threads, pool)
        if _data is not None:
            where, fs_path = "ple_model_open_memory", None
        else:
            fs_path = os.fsdecode(os.fspath(path))
            where = f"ple_model_open({fs_path!r})"
        try:
            self._core = ext.Model(fs_path, None if _data is None else bytes(_data), verify_data, in_memory, warm,
                                   lock, self.max_batch, chosen._core if chosen is not None else None,
                                   min_parallel_batch)
        except ext.Error as exc:
            raise _ple_error(exc, where) from None
        finally:
            if chosen is not None and pool is None:
                chosen.close()
        self.path = None if _data is not None else os.fspath(path)
        self._read_info()

    @staticmethod
    def _choose_pool(threads, pool) -> Pool | None:
        if pool is not None:
            if threads is not None:
                raise ValueError("give threads= or pool=, not both")
            if not isinstance(pool, Pool):
                raise TypeError(f"pool must be a ple_runtime.Pool, got {type(pool).__name__}")
            if pool.closed:
                raise ValueError("the pool is closed")
            return pool
        if threads is None or (threads == 1 and not isinstance(threads, bool)):
            return None
        return Pool(threads)

    @property
    def threads(self) -> int:
        """The most threads one :meth:`predict` call runs on (1 without a pool)."""
        return self._core.threads()

    @classmethod
    def from_bytes(cls, data: bytes, *, verify_data: bool = False, max_batch: int | None = None,
                   threads: int | None = None, pool: Pool | None = None,
                   min_parallel_batch: int | None = None) -> "Model":
        """A model from the bytes of a .ple file (copied by the library)."""
        return cls("<memory>", verify_data=verify_data, max_batch=max_batch, threads=threads, pool=pool,
                   min_parallel_batch=min_parallel_batch, _data=data)

    # ------------------------------------------------------------------ introspection

    def _read_info(self) -> None:
        info = self._core.info()
        self.name: str = info["name"]
        self.dtype: str = info["dtype"]
        self.simd_level: str = info["simd_level"]
        self.task_count: int = info["task_count"]
        self.inputs: list[InputInfo] = [
            InputInfo(name=name, kind=kind, width=width, values_per_sample=per, vocab_size=vocab, max_len=max_len,
                      pooling=pooling, pad_id=pad_id)
            for name, kind, width, per, vocab, max_len, pooling, pad_id in info["inputs"]]
        self._by_name = {inp.name: inp for inp in self.inputs}
        self.outputs: list[OutputInfo] = [OutputInfo(*o) for o in info["outputs"]]
        self.output_width: int = info["output_width"]
        self.gates: list[GateInfo] = [GateInfo(*g) for g in info["gates"]]
        self.gate_width: int = info["gate_width"]

    @property
    def input_names(self) -> list[str]:
        """Input names in the model's column order."""
        return [inp.name for inp in self.inputs]

    @property
    def output_names(self) -> list[str]:
        """Output names in result-row order."""
        return [o.name for o in self.outputs]

    @property
    def gate_names(self) -> list[str]:
        """Gate names ("level0.task0", ..., "level0.shared") in gate-row order."""
        return [g.name for g in self.gates]

    def input(self, name: str) -> InputInfo:
        """The :class:`InputInfo` of input ``name`` (KeyError if there is none)."""
        return self._by_name[name]

    def split(self, scores: np.ndarray) -> dict[str, np.ndarray]:
        """Result rows as ``{output name: [B, len]}`` (views of ``scores``)."""
        return {o.name: scores[:, o.offset:o.offset + o.len] for o in self.outputs}

    def split_gates(self, gates: np.ndarray) -> dict[str, np.ndarray]:
        """Gate rows as ``{gate name: [B, n_experts]}`` (views of ``gates``)."""
        return {g.name: gates[:, g.offset:g.offset + g.len] for g in self.gates}

    def describe(self) -> str:
        """A multi-line summary of inputs, outputs and gates."""
        lines = [f"model {self.name!r}: dtype {self.dtype}, simd {self.simd_level}, {self.task_count} tasks, "
                 f"libple {_native.version()}"]
        for inp in self.inputs:
            if inp.kind == "dense":
                lines.append(f"  input  {inp.name}: dense float32 [B, {inp.width}]")
            elif inp.kind == "sparse":
                lines.append(f"  input  {inp.name}: sparse int64 [B], vocab {inp.vocab_size}, dim {inp.width}")
            else:
                pad = "no padding id" if inp.pad_id is None else f"pad id {inp.pad_id}"
                lines.append(f"  input  {inp.name}: sequence int64 [B, {inp.max_len}], vocab {inp.vocab_size}, "
                             f"dim {inp.width}, {inp.pooling} pooling, {pad}")
        for o in self.outputs:
            lines.append(f"  output {o.name}: columns {o.offset}..{o.offset + o.len - 1}")
        for g in self.gates:
            lines.append(f"  gate   {g.name}: columns {g.offset}..{g.offset + g.len - 1}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self.inputs)} inputs, outputs {self.output_names}"
        return f"<ple_runtime.Model {self.name!r} ({self.dtype}, {state})>"

    # ------------------------------------------------------------------ memory

    def warm(self, progress=None, cancel: threading.Event | None = None) -> None:
        """Bring every page of the model into memory (``ple_model_warm``), so the first
        predictions find their table rows resident. Run it on a background thread before
        switching traffic to a newly opened model: other threads may predict meanwhile (the
        GIL is released while it reads).

        ``progress(done, total)`` is called every 8 MiB; returning ``False`` stops it, as does
        setting ``cancel``: :class:`PleError` with ``PLE_STATUS_CANCELLED``. An exception
        raised by ``progress`` stops it and is re-raised here.
        """
        thrown, stopped_by = [], []

        def call(done, total):
            try:
                if cancel is not None and cancel.is_set():
                    stopped_by.append("its cancel flag was set")
                    return True
                if progress is not None and progress(int(done), int(total)) is False:
                    stopped_by.append("the progress callback returned False")
                    return True
                return False
            except BaseException as exc:  # never into the native code
                thrown.append(exc)
                return True

        core = self._open_core()
        try:
            core.warm(call)
        except core_error() as exc:
            if thrown:
                raise thrown[0] from None
            status, detail = exc.args
            if stopped_by:
                detail = f"cancelled ({stopped_by[0]})"
            raise PleError(status, detail, "warm") from None
        if thrown:
            raise thrown[0]

    def residency(self) -> dict:
        """How much of the model, and of its embedding tables, is in RAM now (``mincore``):
        ``{"total_bytes", "resident_bytes", "table_bytes", "table_resident_bytes"}``."""
        try:
            r = self._open_core().residency()
        except core_error() as exc:
            raise _ple_error(exc, "residency") from None
        return dict(zip(("total_bytes", "resident_bytes", "table_bytes", "table_resident_bytes"), r))

    @property
    def locked(self) -> bool:
        """Whether the model's pages are locked in RAM (opened with ``lock=True``)."""
        return self._core is not None and self._core.locked

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Release the model handle, its pool and its idle sessions (a call in flight on another
        thread finishes first with its own references)."""
        core = getattr(self, "_core", None)
        if core is not None:
            core.close()

    @property
    def closed(self) -> bool:
        return self._core is None or self._core.closed

    def _open_core(self):
        if self.closed:
            raise ValueError("the model is closed")
        return self._core

    # ------------------------------------------------------------------ scoring

    def _columns(self, inputs: Mapping) -> tuple[int, list[tuple[str, np.ndarray, bool, int]]]:
        """(batch, [(name, contiguous array, is_ids, values per sample)]) in the caller's order."""
        if not isinstance(inputs, Mapping):
            raise TypeError(f"inputs must be a dict of numpy arrays keyed by feature name, got {type(inputs).__name__}")
        arrays = {}
        for key, value in inputs.items():
            if not isinstance(key, str):
                raise TypeError(f"input names must be strings, got {key!r}")
            arrays[key] = np.asarray(value)
        batch = None
        for name in [n for n in self._by_name if n in arrays] + list(arrays):
            if arrays[name].ndim >= 1:
                batch = int(arrays[name].shape[0])
                break
        if batch is None:
            raise ValueError("inputs: no array with a batch dimension (scalars are not accepted)")
        cols = []
        for name, arr in arrays.items():
            info = self._by_name.get(name)
            if info is None:
                # Unknown name: pass it on as given so that the library reports it.
                is_ids = np.issubdtype(arr.dtype, np.integer)
                per = arr.size // batch if batch else 1
            else:
                is_ids = info.kind != "dense"
                per = info.values_per_sample
                self._check_shape(info, arr, batch)
            if is_ids:
                arr = _as_ids(name, arr)
                is_ids = arr.dtype == np.int64
            if not is_ids:
                arr = np.ascontiguousarray(arr, dtype=np.float32)
            if not arr.flags.aligned:
                arr = arr.copy()
            cols.append((name, arr, is_ids, per))
        return batch, cols

    @staticmethod
    def _check_shape(info: InputInfo, arr: np.ndarray, batch: int) -> None:
        """Refuse arrays whose size is right but whose shape is not (a transposed sequence,
        say), which the library, seeing flat buffers, cannot notice. Wrong sizes are left
        to the library, whose message names the input and the lengths."""
        per = info.values_per_sample
        if arr.size != batch * per:
            return
        ok = {(batch, per)}
        if per == 1:
            ok.add((batch,))
        if arr.shape not in ok:
            want = " or ".join(str(s) for s in sorted(ok, key=len))
            raise ValueError(f"input {info.name!r}: array of shape {arr.shape}, expected {want} "
                             f"({info.kind}{'' if info.kind == 'sparse' else f', {per} values per sample'})")

    def predict(self, inputs: Any, gates: bool = False, *, pad_id: int | Mapping | None = None):
        """Score a batch.

        inputs: ``{feature name: array}`` (every input of the model, each exactly once;
        ids int [B] or [B, max_len], dense float [B, width] or [B] for width 1; lists of
        lists may be ragged), a single row (scalars for ids: a batch of one), a pandas
        DataFrame or pyarrow Table (a column per input, list cells for sequences and vectors;
        other columns ignored), or a 2-D float array [B, width] for a model whose only input
        is one dense feature. Short sequences are padded with the feature's pad id, or with
        ``pad_id`` (an id for every sequence without one, or ``{feature: id}``).
        Returns float32 [B, output_width] (columns in :attr:`outputs` order), or
        ``(scores, gate_weights [B, gate_width])`` with ``gates=True``.
        Raises :class:`PleError` (a ValueError) with the library's message on bad input,
        and ValueError / TypeError naming the input and row for what only Python sees.
        """
        try:
            # The fast path: a dict of arrays the library reads as they are (checked in Rust);
            # None when the inputs need converting first.
            result = self._core.predict(inputs, gates)
        except core_error() as exc:
            raise self._error(exc, inputs) from None
        if result is not None:
            return result
        return self._predict_converted(inputs, gates, pad_id)

    def _predict_converted(self, inputs: Any, gates: bool, pad_id):
        """Every other input form: converted by :mod:`.inputs` and :meth:`_columns`, then scored
        (in chunks of ``max_batch``)."""
        self._open_core()
        if not isinstance(inputs, (np.ndarray, list, tuple)):
            inputs, _ = _inputs.to_columns(inputs, self._by_name, pad_id)
        if not isinstance(inputs, Mapping):
            dense = [i for i in self.inputs if i.kind == "dense"]
            if len(self.inputs) != 1 or not dense:
                raise TypeError(f"a bare array is accepted only by a model whose only input is one dense feature; "
                                f"this model takes {self.input_names}: pass a dict {{name: array}}")
            arr = np.asarray(inputs)
            if arr.ndim != 2 and not (arr.ndim == 1 and dense[0].width == 1):
                raise ValueError(f"dense input: expected a 2-D array [B, {dense[0].width}], got shape {arr.shape}")
            inputs = {dense[0].name: arr}
        batch, cols = self._columns(inputs)
        out = np.empty((batch, self.output_width), dtype=np.float32)
        gate_buf = np.empty((batch, self.gate_width), dtype=np.float32) if gates else None
        if batch == 0:  # still validated by the library (names, count, kinds, empty lengths)
            self._run(0, 0, 0, cols, out, gate_buf)
            return (out, gate_buf) if gates else out
        step = self.max_batch
        if batch > step:
            for name, arr, _, per in cols:
                if arr.size != batch * per:
                    raise ValueError(f"input {name!r}: {arr.size} values for a batch of {batch} "
                                     f"({per} per sample expected)")
        for start in range(0, batch, step):
            n = min(step, batch - start)
            self._run(start, n, batch, cols, out, gate_buf)
        return (out, gate_buf) if gates else out

    def _run(self, start: int, n: int, batch: int, cols, out, gate_buf) -> None:
        columns = []
        for name, arr, _, per in cols:
            flat = arr.reshape(-1)
            if n != batch:
                flat = flat[start * per:(start + n) * per]
            columns.append((name, flat))
        o = out[start:start + n]
        g = gate_buf[start:start + n] if gate_buf is not None else None
        try:
            self._core.run(columns, n, o, g)
        except core_error() as exc:
            chunk = "" if n == batch else \
                f" (in the chunk of samples {start}..{start + n - 1}; sample numbers are relative to it)"
            raise self._error(exc, {name: arr for name, arr, _, _ in cols}, batch, chunk) from None

    def _error(self, exc: Exception, inputs: Any, batch: int | None = None, chunk: str = "") -> PleError:
        """The :class:`PleError` of a failed call, with the batch, the shape of the input the
        message names, and the inputs missing or unknown."""
        status, detail = exc.args
        detail += chunk
        shapes = {str(k): np.shape(v) for k, v in inputs.items()} if isinstance(inputs, Mapping) else {}
        if batch is None:
            batch = next((s[0] for s in shapes.values() if len(s)), 0)
        context = _shape_context(detail, shapes, batch)
        missing = [n for n in self.input_names if n not in shapes]
        unknown = [n for n in shapes if n not in self._by_name]
        if missing:
            context += f"; missing inputs {missing}"
        if unknown:
            context += f"; unknown inputs {unknown} (the model's inputs are {self.input_names})"
        return PleError(status, detail, context=context)


def core_error() -> type:
    """The extension's exception type (only looked up when something was raised)."""
    return _native.ext().Error


def _as_ids(name: str, arr: np.ndarray) -> np.ndarray:
    """Ids as contiguous native int64. Floats holding whole numbers (DeepCTR keeps ids in
    float arrays) are converted; other floats are passed through as floats, for the library
    to refuse as the wrong kind."""
    if arr.dtype == np.int64 and arr.flags.c_contiguous:
        return arr
    if np.issubdtype(arr.dtype, np.integer):
        if arr.dtype == np.uint64 and arr.size and arr.max() > np.iinfo(np.int64).max:
            raise ValueError(f"input {name!r}: id {int(arr.max())} does not fit in int64")
        return np.ascontiguousarray(arr, dtype=np.int64)
    if np.issubdtype(arr.dtype, np.floating) and arr.size and np.all(np.isfinite(arr)) \
            and np.all(arr == np.trunc(arr)) and np.all(np.abs(arr) < 2.0 ** 63):
        return np.ascontiguousarray(arr, dtype=np.int64)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"input {name!r}: ids must be integers, got an array of dtype {arr.dtype}")
    return arr  # float: the caller sends it as floats and the library reports the wrong kind


def _shape_context(detail: str, shapes: dict, batch: int) -> str:
    """A short prefix naming the batch and the shape of the input the message names."""
    for name, shape in shapes.items():
        if f"'{name}'" in detail:
            return f"predict (batch {batch}; input {name!r} has shape {shape})"
    return f"predict (batch {batch})"
