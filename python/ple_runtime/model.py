"""``ple_runtime.Model``: score a ``.ple`` file through libple's C ABI (ctypes).

    import ple_runtime
    m = ple_runtime.Model("model.ple")
    scores = m.predict({"user_id": user_ids, "hist": padded_hist, "price": prices})  # [B, output_width]
    scores, gates = m.predict(inputs, gates=True)                                     # + [B, gate_width]

``predict`` takes what the training model takes: a dict of numpy arrays keyed by
feature name (ids as integers ``[B]``, sequences as padded ``[B, max_len]``, dense
features as floats ``[B, width]`` or ``[B]`` for width 1), or, for a model whose only
input is one dense feature, a 2-D float array ``[B, width]``. Inputs are converted
once to contiguous int64 / float32 and handed to ``ple_session_run`` by name; the
library validates everything (names, kinds, lengths, every id) before computing, and
a failure raises :class:`PleError` carrying the library's status and detailed message.

Dense inputs are not checked for NaN or infinity: like the training libraries, the
runtime propagates them into the scores of the samples that hold them (other samples
of the batch are unaffected).

A model holds one ``ple_session`` per thread that uses it (created on first use), so
one ``Model`` may be shared by threads; ctypes releases the GIL during scoring. A
session's working memory is bounded by 64 samples whatever its ``max_batch``, so
sessions are created for the library's largest batch (2^24) and any practical batch
is scored in one call; larger ones are split.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import _native
from . import inputs as _inputs
from ._native import Column

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


def _s(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", "replace")


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
        self._lib = _native.lib()
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise ValueError(f"threads must be an integer >= 0 (0: one per CPU), got {threads!r}")
        ptr = ctypes.c_void_p()
        status = self._lib.ple_pool_new(threads, ctypes.byref(ptr))
        if status:
            raise PleError(status, _native.last_error(), f"ple_pool_new({threads})")
        self._ptr = ptr.value
        self.threads: int = int(self._lib.ple_pool_threads(self._ptr))
        if spin_us is not None:
            self.set_spin_us(spin_us)

    def set_spin_us(self, spin_us: int) -> None:
        """How long an idle thread spins before it sleeps (0: sleep at once)."""
        if not self._ptr:
            raise ValueError("the pool is closed")
        if not 0 <= int(spin_us) < 2**32:
            raise ValueError(f"spin_us must be in 0..2^32-1, got {spin_us}")
        status = self._lib.ple_pool_set_spin_us(self._ptr, int(spin_us))
        if status:
            raise PleError(status, _native.last_error(), "ple_pool_set_spin_us")

    def close(self) -> None:
        """Release this handle (models' sessions keep the threads until they are freed)."""
        ptr, self._ptr = getattr(self, "_ptr", None), None
        if ptr:
            self._lib.ple_pool_free(ptr)

    def __repr__(self) -> str:
        return f"<ple_runtime.Pool {self.threads} threads{'' if self._ptr else ', closed'}>"


class _Session:
    """One thread's ``ple_session``; freed when the thread's local storage goes away."""

    def __init__(self, lib, model_ptr: int, max_batch: int, pool: int | None = None,
                 min_parallel_batch: int | None = None):
        self._lib = lib
        ptr = ctypes.c_void_p()
        if pool is None:
            status = lib.ple_session_new(model_ptr, max_batch, ctypes.byref(ptr))
        else:
            status = lib.ple_session_new_with_pool(model_ptr, max_batch, pool, ctypes.byref(ptr))
        if status:
            raise PleError(status, _native.last_error(), "ple_session_new")
        self.ptr = ptr.value
        self.max_batch = int(lib.ple_session_max_batch(self.ptr))
        self.threads = int(lib.ple_session_threads(self.ptr))
        if min_parallel_batch is not None:
            status = lib.ple_session_set_min_parallel_batch(self.ptr, min_parallel_batch)
            if status:
                detail = self.last_error()
                self.free()
                raise PleError(status, detail, "ple_session_set_min_parallel_batch")

    def last_error(self) -> str:
        return self._lib.ple_session_last_error(self.ptr).decode("utf-8", "replace")

    def free(self) -> None:
        if self.ptr:
            ptr, self.ptr = self.ptr, None
            self._lib.ple_session_free(ptr)

    def __del__(self):
        try:
            self.free()
        except Exception:  # interpreter shutdown
            pass


def _ptr(arr: np.ndarray, ctype) -> Any:
    return arr.ctypes.data_as(ctypes.POINTER(ctype))


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
        self._lib = _native.lib()
        # The model's own reference to the pool (released by close): sessions are made lazily,
        # one per thread, and must find the pool alive whatever the caller did with its handle.
        chosen = self._choose_pool(threads, pool)
        self._pool = self._lib.ple_pool_clone(chosen._ptr) if chosen is not None else None
        if chosen is not None and pool is None:
            chosen.close()
        if min_parallel_batch is not None and (isinstance(min_parallel_batch, bool) or min_parallel_batch < 0):
            raise ValueError(f"min_parallel_batch must be an integer >= 0, got {min_parallel_batch!r}")
        self._min_parallel_batch = min_parallel_batch
        flags = (_native.OPEN_VERIFY_DATA if verify_data else 0) | (_native.OPEN_READ_INTO_MEMORY if in_memory else 0)
        flags |= (_native.OPEN_WARM if warm else 0) | (_native.OPEN_LOCK if lock else 0)
        ptr = ctypes.c_void_p()
        if _data is not None:
            buf = ctypes.create_string_buffer(bytes(_data), len(_data))
            status = self._lib.ple_model_open_memory(buf, len(_data), flags, ctypes.byref(ptr))
            where = "ple_model_open_memory"
        else:
            status = self._lib.ple_model_open(os.fsencode(os.fspath(path)), flags, ctypes.byref(ptr))
            where = f"ple_model_open({os.fspath(path)!r})"
        if status:
            raise PleError(status, _native.last_error(), where)
        self._ptr = ptr.value
        self.path = None if _data is not None else os.fspath(path)
        self.max_batch = int(max_batch) if max_batch is not None else _native.MAX_BATCH_LIMIT
        if not 1 <= self.max_batch <= _native.MAX_BATCH_LIMIT:
            self.close()
            raise ValueError(f"max_batch must be in 1..{_native.MAX_BATCH_LIMIT}, got {max_batch}")
        self._local = threading.local()
        self._read_info()

    @staticmethod
    def _choose_pool(threads, pool) -> Pool | None:
        if pool is not None:
            if threads is not None:
                raise ValueError("give threads= or pool=, not both")
            if not isinstance(pool, Pool):
                raise TypeError(f"pool must be a ple_runtime.Pool, got {type(pool).__name__}")
            if not pool._ptr:
                raise ValueError("the pool is closed")
            return pool
        if threads is None or (threads == 1 and not isinstance(threads, bool)):
            return None
        return Pool(threads)

    @property
    def threads(self) -> int:
        """The most threads one :meth:`predict` call runs on (1 without a pool)."""
        return self._session().threads

    @classmethod
    def from_bytes(cls, data: bytes, *, verify_data: bool = False, max_batch: int | None = None,
                   threads: int | None = None, pool: Pool | None = None,
                   min_parallel_batch: int | None = None) -> "Model":
        """A model from the bytes of a .ple file (copied by the library)."""
        return cls("<memory>", verify_data=verify_data, max_batch=max_batch, threads=threads, pool=pool,
                   min_parallel_batch=min_parallel_batch, _data=data)

    # ------------------------------------------------------------------ introspection

    def _read_info(self) -> None:
        L, m = self._lib, self._ptr
        self.name: str = _s(L.ple_model_name(m))
        self.dtype: str = _native.DTYPE_NAMES.get(L.ple_model_dtype(m), "?")
        self.simd_level: str = _s(L.ple_model_simd_level(m))
        self.task_count: int = int(L.ple_model_task_count(m))
        inputs = []
        for i in range(L.ple_model_input_count(m)):
            pad = ctypes.c_int64()
            has_pad = L.ple_model_input_pad_id(m, i, ctypes.byref(pad))
            inputs.append(InputInfo(
                name=_s(L.ple_model_input_name(m, i)),
                kind=_native.KIND_NAMES[L.ple_model_input_kind(m, i)],
                width=int(L.ple_model_input_width(m, i)),
                values_per_sample=int(L.ple_model_input_values_per_sample(m, i)),
                vocab_size=int(L.ple_model_input_vocab_size(m, i)),
                max_len=int(L.ple_model_input_max_len(m, i)),
                pooling=_s(L.ple_model_input_pooling(m, i)),
                pad_id=int(pad.value) if has_pad else None,
            ))
        self.inputs: list[InputInfo] = inputs
        self._by_name = {inp.name: inp for inp in inputs}
        self._cnames = {inp.name: inp.name.encode("utf-8") for inp in inputs}
        self.outputs: list[OutputInfo] = [
            OutputInfo(_s(L.ple_model_output_name(m, k)), int(L.ple_model_output_offset(m, k)),
                       int(L.ple_model_output_len(m, k))) for k in range(L.ple_model_output_count(m))]
        self.output_width: int = int(L.ple_model_output_width(m))
        self.gates: list[GateInfo] = [
            GateInfo(_s(L.ple_model_gate_name(m, g)), int(L.ple_model_gate_offset(m, g)),
                     int(L.ple_model_gate_len(m, g))) for g in range(L.ple_model_gate_count(m))]
        self.gate_width: int = int(L.ple_model_gate_width(m))

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
        state = "closed" if not self._ptr else f"{len(self.inputs)} inputs, outputs {self.output_names}"
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
        thrown = []

        def call(_ctx, done, total):
            try:
                if cancel is not None and cancel.is_set():
                    return 1
                return 1 if progress is not None and progress(int(done), int(total)) is False else 0
            except BaseException as exc:  # never into the C library
                thrown.append(exc)
                return 1

        status = self._lib.ple_model_warm(self._handle(), _native.PROGRESS_FN(call), None, None)
        if thrown:
            raise thrown[0]
        if status:
            raise PleError(status, _native.last_error(), "warm")

    def residency(self) -> dict:
        """How much of the model, and of its embedding tables, is in RAM now (``mincore``):
        ``{"total_bytes", "resident_bytes", "table_bytes", "table_resident_bytes"}``."""
        r = _native.Residency()
        status = self._lib.ple_model_residency(self._handle(), ctypes.byref(r))
        if status:
            raise PleError(status, _native.last_error(), "residency")
        return {name: int(getattr(r, name)) for name, _ in _native.Residency._fields_}

    @property
    def locked(self) -> bool:
        """Whether the model's pages are locked in RAM (opened with ``lock=True``)."""
        return bool(self._ptr) and bool(self._lib.ple_model_is_locked(self._ptr))

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Release this thread's session and the model handle (sessions of other threads
        keep their own reference and are freed when those threads end)."""
        local = getattr(self, "_local", None)
        sess = getattr(local, "session", None) if local is not None else None
        if sess is not None:
            sess.free()
            local.session = None
        ptr, self._ptr = getattr(self, "_ptr", None), None
        if ptr:
            self._lib.ple_model_free(ptr)
        pool, self._pool = getattr(self, "_pool", None), None
        if pool:  # sessions of other threads keep their own reference
            self._lib.ple_pool_free(pool)

    def _handle(self) -> int:
        if not self._ptr:
            raise ValueError("the model is closed")
        return self._ptr

    def _session(self) -> _Session:
        sess = getattr(self._local, "session", None)
        if sess is None:
            if not self._ptr:
                raise ValueError("the model is closed")
            sess = _Session(self._lib, self._ptr, self.max_batch, self._pool, self._min_parallel_batch)
            self._local.session = sess
        return sess

    # ------------------------------------------------------------------ scoring

    def _columns(self, inputs: Mapping) -> tuple[int, list[tuple[bytes, np.ndarray, bool, int]]]:
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
            cols.append((name.encode("utf-8"), arr, is_ids, per))
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
        if not self._ptr:
            raise ValueError("the model is closed")
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
        sess = self._session()
        if batch == 0:  # still validated by the library (names, count, kinds, empty lengths)
            self._run(sess, 0, 0, 0, cols, out, gate_buf)
            return (out, gate_buf) if gates else out
        step = sess.max_batch
        if batch > step:
            for name, arr, _, per in cols:
                if arr.size != batch * per:
                    raise ValueError(f"input {name.decode()!r}: {arr.size} values for a batch of {batch} "
                                     f"({per} per sample expected)")
        for start in range(0, batch, step):
            n = min(step, batch - start)
            self._run(sess, start, n, batch, cols, out, gate_buf)
        return (out, gate_buf) if gates else out

    def _run(self, sess: _Session, start: int, n: int, batch: int, cols, out, gate_buf) -> None:
        ccols = (Column * len(cols))()
        keep = []
        for c, (name, arr, is_ids, per) in zip(ccols, cols):
            flat = arr.reshape(-1)
            if n != batch:
                flat = flat[start * per:(start + n) * per]
            keep.append(flat)
            c.name = name
            if is_ids:
                c.ids = _ptr(flat, ctypes.c_int64) if flat.size else None
            else:
                c.floats = _ptr(flat, ctypes.c_float) if flat.size else None
            c.len = flat.size
        o = out[start:start + n]
        g = gate_buf[start:start + n] if gate_buf is not None else None
        status = self._lib.ple_session_run(
            sess.ptr, n, ccols, len(cols),
            o.ctypes.data_as(ctypes.c_void_p) if o.size else None, o.size,
            g.ctypes.data_as(ctypes.c_void_p) if g is not None and g.size else None,
            g.size if g is not None else 0)
        if status == 21 and n == 0:  # a library from before batch 0 became a no-op: check names here
            self._check_names(cols)
            return
        if status:
            detail = sess.last_error()
            if n != batch:
                detail += f" (in the chunk of samples {start}..{start + n - 1}; sample numbers are relative to it)"
            shapes = {name.decode(): arr.shape for name, arr, _, _ in cols}
            context = _shape_context(detail, shapes, batch)
            missing = [n for n in self.input_names if n not in shapes]
            unknown = [n for n in shapes if n not in self._by_name]
            if missing:
                context += f"; missing inputs {missing}"
            if unknown:
                context += f"; unknown inputs {unknown} (the model's inputs are {self.input_names})"
            raise PleError(status, detail, context=context)

    def _check_names(self, cols) -> None:
        """For an empty batch with a library that refuses batch 0: every name known, each input once."""
        given = [name.decode() for name, *_ in cols]
        for name in given:
            idx = ctypes.c_size_t()
            status = self._lib.ple_model_input_index(self._ptr, name.encode(), ctypes.byref(idx))
            if status:
                raise PleError(status, _native.last_error())
        missing = [n for n in self.input_names if n not in given]
        if missing:
            raise PleError(22, f"{len(given)} columns for {len(self.inputs)} inputs: missing {missing}")


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
