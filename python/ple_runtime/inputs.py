"""What ``Model.predict`` accepts, turned into one array per model input.

The forms (docs/EXPORT.md, "Input forms"), with the command-line tool's rules (docs/CLI.md):

- a dict ``{feature: array or list}``: the training library's form; lists of lists may be ragged;
- a single row: a dict whose id and width-1 dense features are scalars
  (``{"user_id": 3, "hist": [4, 5], "price": 0.5}``), scored as a batch of one;
- a pandas ``DataFrame`` or a pyarrow ``Table`` / ``RecordBatch``: a column per feature, list
  cells for sequences and dense vectors; columns that are not model inputs are ignored (labels,
  keys), as the CLI ignores them;
- short sequences are padded on the right with the feature's pad id; a feature without one
  needs ``pad_id=`` (the id used in training: without a mask every position counts, so the
  runtime does not guess); longer ones are an error.

Errors name the feature and the row. The library still validates everything it is given
(names, lengths, every id against its table) after this.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["to_columns"]


def _module(obj: Any) -> str:
    return type(obj).__module__.split(".")[0]


def _table_columns(data: Any, names: list[str]) -> dict[str, Any] | None:
    """Columns of a pandas DataFrame or pyarrow Table / RecordBatch, model inputs only; None if
    `data` is neither. Imports neither library."""
    lib = _module(data)
    if lib == "pandas" and hasattr(data, "columns") and hasattr(data, "iloc"):
        cols = {str(c): c for c in data.columns}
        out = {}
        for name in names:
            if name in cols:
                col = data[cols[name]]
                if getattr(col, "ndim", 1) != 1:
                    raise ValueError(f"column {name!r} appears more than once in the DataFrame")
                out[name] = list(col) if col.dtype == object else col.to_numpy()
        return out
    if lib == "pyarrow" and hasattr(data, "column_names") and hasattr(data, "column"):
        out = {}
        for name in names:
            if name in data.column_names:
                col = data.column(name)
                if col.null_count:
                    rows = [i for i, v in enumerate(col.to_pylist()) if v is None][:3]
                    raise ValueError(f"input {name!r}, row {rows[0]}: null (rows {rows}...)")
                if str(col.type).startswith(("list", "large_list", "fixed_size_list")):
                    out[name] = col.to_pylist()
                else:
                    out[name] = col.to_numpy()
        return out
    return None


def _is_scalar(v: Any) -> bool:
    return isinstance(v, (numbers.Number, np.generic)) or (isinstance(v, np.ndarray) and v.ndim == 0)


def _rows(name: str, value: Any) -> list:
    """A list of per-row values, for a column that is not one rectangular array."""
    if isinstance(value, np.ndarray):
        return list(value)
    if isinstance(value, (list, tuple)):
        return list(value)
    raise TypeError(f"input {name!r}: expected an array or a list of rows, got {type(value).__name__}")


def _row_values(name: str, r: int, cell: Any, integer: bool) -> np.ndarray:
    """One row's values as a 1-D array (a scalar is one value)."""
    if isinstance(cell, str):
        raise TypeError(f"input {name!r}, row {r}: a string ({cell[:20]!r}); expected "
                        f"{'ids' if integer else 'numbers'}")
    arr = np.asarray(cell)
    if arr.dtype.kind in "OUS":
        kinds = sorted({type(x).__name__ for x in (cell if isinstance(cell, (list, tuple)) else arr.reshape(-1))})
        raise TypeError(f"input {name!r}, row {r}: values of mixed or unsupported types ({', '.join(kinds)})")
    if arr.ndim > 1:
        raise ValueError(f"input {name!r}, row {r}: a nested value of shape {arr.shape}; expected one list")
    return arr.reshape(-1)


def _check_ids(name: str, arr: np.ndarray, per_row: int, first_row: int = 0) -> np.ndarray:
    """Ids as int64; floats must be whole (DeepCTR keeps ids in float arrays); NaN, fractions,
    strings and booleans are errors naming the row (`arr` holds `per_row` values per row from
    row `first_row` on)."""
    per_row = max(per_row, 1)
    if np.issubdtype(arr.dtype, np.integer):
        if arr.dtype == np.uint64 and arr.size and arr.max() > np.iinfo(np.int64).max:
            bad = int(np.argmax(arr.reshape(-1) > np.iinfo(np.int64).max))
            raise ValueError(f"input {name!r}, row {first_row + bad // per_row}: id {int(arr.reshape(-1)[bad])} "
                             "does not fit in int64")
        return arr.astype(np.int64, copy=False)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"input {name!r}: ids must be integers, got values of dtype {arr.dtype}")
    flat = arr.reshape(-1)
    bad = ~np.isfinite(flat) | (flat != np.trunc(flat)) | (np.abs(flat) >= 2.0 ** 63)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"input {name!r}, row {first_row + i // per_row}: {float(flat[i])!r} is not an id "
                         "(ids are whole numbers)")
    return arr.astype(np.int64)


def _pad_for(info: Any, pad_id: int | Mapping | None) -> int | None:
    if info.pad_id is not None:
        return info.pad_id
    if isinstance(pad_id, Mapping):
        return pad_id.get(info.name)
    return pad_id


def _sequence(info: Any, value: Any, pad_id) -> np.ndarray:
    """A sequence column as [B, max_len] int64, short rows padded on the right."""
    L = info.max_len
    arr = None if isinstance(value, (list, tuple)) else np.asarray(value)
    if arr is not None and arr.dtype != object and arr.ndim == 2:
        ids = _check_ids(info.name, arr, arr.shape[1] or 1)
        rows = [ids[r] for r in range(ids.shape[0])] if ids.shape[1] != L else None
        if rows is None:
            return ids
    else:
        # None / [] is an empty sequence (all padding), as an empty CSV cell or JSON null.
        rows = [np.zeros(0, np.int64) if cell is None or np.size(cell) == 0 else
                _check_ids(info.name, _row_values(info.name, r, cell, True), np.size(cell), r)
                for r, cell in enumerate(_rows(info.name, value))]
    out = np.empty((len(rows), L), dtype=np.int64)
    pad = None
    for r, ids in enumerate(rows):
        n = len(ids)
        if n > L:
            raise ValueError(f"input {info.name!r}, row {r}: {n} ids, more than max_len {L} (which ids to drop is "
                             "a modelling decision: cut the sequence before scoring)")
        if n < L:
            if pad is None:
                pad = _pad_for(info, pad_id)
                if pad is None:
                    raise ValueError(
                        f"input {info.name!r}, row {r}: {n} ids, fewer than max_len {L}, and the model has no pad "
                        f"id for it: every position counts in its pooling, so the padding must be the id used in "
                        f"training; pass pad_id={{{info.name!r}: ID}} (or pad the rows yourself)")
            out[r, n:] = pad
        out[r, :n] = ids
    return out


def _vectors(info: Any, value: Any, integer: bool) -> np.ndarray:
    """A dense or sparse column given as one value per row (list cells of a table)."""
    width = info.values_per_sample
    rows = [_row_values(info.name, r, cell, integer) for r, cell in enumerate(_rows(info.name, value))]
    for r, v in enumerate(rows):
        if v.size != width:
            raise ValueError(f"input {info.name!r}, row {r}: {v.size} values, expected {width}")
    if not rows:
        return np.zeros((0, width), np.int64 if integer else np.float32)
    arr = np.stack(rows)
    return _check_ids(info.name, arr, width) if integer else arr


def _needs_rows(value: Any) -> bool:
    """A column that is not one rectangular numeric array: ragged lists, list cells, objects."""
    # Strings too, so the error can name the row holding one (numpy would turn the whole column
    # into strings).
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "OUS"
    if isinstance(value, (list, tuple)):
        try:
            return np.asarray(value).dtype.kind in "OUS"
        except ValueError:  # ragged nested lists
            return True
    return False


def to_columns(inputs: Any, infos: Mapping, pad_id: int | Mapping | None = None) -> tuple[dict, bool]:
    """(``{name: array}``, single row?) for any accepted form; unknown names of a dict are
    passed through for the library to report (a table's other columns are dropped)."""
    names = list(infos)
    table = _table_columns(inputs, names) if not isinstance(inputs, Mapping) else None
    if table is not None:
        given = {k: table[k] for k in names if k in table}
        missing = [n for n in names if n not in table]
        if missing:
            raise ValueError(f"missing columns {missing} (the model's inputs are {names})")
    elif isinstance(inputs, Mapping):
        given = dict(inputs)
    else:
        raise TypeError(f"inputs must be a dict {{feature: array}}, a pandas DataFrame or a pyarrow Table, "
                        f"got {type(inputs).__name__}")
    for key in given:
        if not isinstance(key, str):
            raise TypeError(f"input names must be strings, got {key!r}")

    # A single row: some value for an id or a width-1 dense feature is a scalar.
    single = table is None and any(_is_scalar(v) for v in given.values())
    if single:
        for k, v in given.items():
            if not _is_scalar(v) and k in infos and infos[k].values_per_sample == 1:
                raise ValueError(f"input {k!r}: {np.shape(v)} values for a single row (the other inputs are "
                                 "scalars: one sample); give every input as a batch, or one value each")
        def one_row(k, v):
            if not _is_scalar(v):
                return [v]
            if k in infos and infos[k].kind == "sequence":
                return [[v]]  # a sequence of one id, as a CSV cell holding one id
            return np.asarray(v)[None]

        given = {k: one_row(k, v) for k, v in given.items()}

    out = {}
    for name, value in given.items():
        info = infos.get(name)
        if info is None:
            out[name] = value if isinstance(value, np.ndarray) else np.asarray(value)
        elif info.kind == "sequence" and (_needs_rows(value) or np.ndim(value) == 2 and np.shape(value)[1] < info.max_len):
            out[name] = _sequence(info, value, pad_id)
        elif info.kind != "sequence" and _needs_rows(value):
            out[name] = _vectors(info, value, integer=info.kind != "dense")
        else:
            arr = value if isinstance(value, np.ndarray) else np.asarray(value)
            if info.kind != "dense" and arr.dtype != np.int64 and arr.size:
                arr = _check_ids(name, arr, info.values_per_sample)
            out[name] = arr
    return out, single
