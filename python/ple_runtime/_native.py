"""Finding and loading libple (the native scorer) through ctypes.

The library is looked up, first match wins:

1. ``PLE_LIB``: the full path of a ``libple.so`` (or ``.dylib``) to load;
2. ``PLE_LIB_DIR``: a directory holding ``libple.so``;
3. the package directory (``ple_runtime/libple.so``), where ``pip install ./python``
   puts the library it built with cargo;
4. a source checkout: ``<repo>/target/release``, then ``<repo>/target/debug``, where
   ``<repo>`` is two directories above the package (in-tree and editable installs),
   and ``$CARGO_TARGET_DIR/{release,debug}`` if that variable is set;
5. the system's search path (``ctypes.util.find_library("ple")``: ``LD_LIBRARY_PATH``,
   ldconfig), for a library installed with ``make -C examples install``.

:func:`lib` loads it once per process and checks that its version is the one this
package was written for (the C ABI is not stable before 1.0).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading

# The library version this package's bindings were written against (include/ple.h).
ABI_MAJOR, ABI_MINOR = 0, 1

_LIB_NAMES = ("libple.dylib",) if sys.platform == "darwin" else ("libple.so",)
_PKG_DIR = os.path.dirname(os.path.abspath(__file__))
_REPO_DIR = os.path.dirname(os.path.dirname(_PKG_DIR))

STATUS_NAMES = {
    0: "PLE_STATUS_OK",
    1: "PLE_STATUS_NULL_ARGUMENT",
    2: "PLE_STATUS_INVALID_ARGUMENT",
    3: "PLE_STATUS_PANIC",
    4: "PLE_STATUS_SYSTEM",
    5: "PLE_STATUS_CANCELLED",
    10: "PLE_STATUS_IO",
    11: "PLE_STATUS_NOT_PLE",
    12: "PLE_STATUS_UNSUPPORTED_VERSION",
    13: "PLE_STATUS_CHECKSUM",
    14: "PLE_STATUS_INVALID_FILE",
    20: "PLE_STATUS_INVALID_MAX_BATCH",
    21: "PLE_STATUS_BATCH_OUT_OF_RANGE",
    22: "PLE_STATUS_WRONG_INPUT_COUNT",
    23: "PLE_STATUS_WRONG_INPUT_KIND",
    24: "PLE_STATUS_WRONG_LENGTH",
    25: "PLE_STATUS_ID_OUT_OF_RANGE",
    26: "PLE_STATUS_UNKNOWN_INPUT",
    27: "PLE_STATUS_SESSION_BUSY",
}

OPEN_VERIFY_DATA = 1
OPEN_READ_INTO_MEMORY = 2
OPEN_WARM = 4
OPEN_LOCK = 8
MAX_BATCH_LIMIT = 1 << 24  # PLE_STATUS_INVALID_MAX_BATCH above this (docs/C_API.md)

KIND_NAMES = {1: "dense", 2: "sparse", 3: "sequence"}
DTYPE_NAMES = {1: "f32", 2: "f16", 3: "mixed", 4: "i8"}


class LibraryNotFound(OSError):
    """libple could not be found or loaded (the message lists every place tried)."""


# int progress(void *ctx, uint64_t done, uint64_t total): nonzero stops ple_model_warm.
PROGRESS_FN = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64)


class Residency(ctypes.Structure):
    """``ple_residency``: bytes of the model and of its tables, and how many are in RAM."""

    _fields_ = [
        ("total_bytes", ctypes.c_uint64),
        ("resident_bytes", ctypes.c_uint64),
        ("table_bytes", ctypes.c_uint64),
        ("table_resident_bytes", ctypes.c_uint64),
    ]


class Column(ctypes.Structure):
    """``ple_column``: one input column (name or NULL, ids or floats, length in elements)."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("ids", ctypes.POINTER(ctypes.c_int64)),
        ("floats", ctypes.POINTER(ctypes.c_float)),
        ("len", ctypes.c_size_t),
        ("offsets", ctypes.POINTER(ctypes.c_int64)),  # ragged sequences; Model.predict pads instead
        ("offsets_len", ctypes.c_size_t),
    ]


def candidates() -> list[str]:
    """Every path :func:`lib` would try, in order (existing or not)."""
    out = []
    env_lib = os.environ.get("PLE_LIB")
    if env_lib:
        out.append(env_lib)
    dirs = []
    if os.environ.get("PLE_LIB_DIR"):
        dirs.append(os.environ["PLE_LIB_DIR"])
    dirs.append(_PKG_DIR)
    if os.path.isfile(os.path.join(_REPO_DIR, "Cargo.toml")):  # in a ple-runtime checkout
        for profile in ("release", "debug"):
            dirs.append(os.path.join(_REPO_DIR, "target", profile))
    if os.environ.get("CARGO_TARGET_DIR"):
        for profile in ("release", "debug"):
            dirs.append(os.path.join(os.environ["CARGO_TARGET_DIR"], profile))
    for d in dirs:
        for name in _LIB_NAMES:
            out.append(os.path.join(d, name))
    return out


def _declare(lib: ctypes.CDLL) -> None:
    """Give every function of include/ple.h its ctypes signature."""
    P = ctypes.c_void_p
    sz, i32, u32, cstr = ctypes.c_size_t, ctypes.c_int32, ctypes.c_uint32, ctypes.c_char_p
    sigs = {
        "ple_model_open": (i32, [cstr, u32, ctypes.POINTER(P)]),
        "ple_model_open_memory": (i32, [P, sz, u32, ctypes.POINTER(P)]),
        "ple_model_clone": (P, [P]),
        "ple_model_free": (None, [P]),
        "ple_model_name": (cstr, [P]),
        "ple_model_dtype": (i32, [P]),
        "ple_model_simd_level": (cstr, [P]),
        "ple_model_task_count": (sz, [P]),
        "ple_model_input_count": (sz, [P]),
        "ple_model_input_name": (cstr, [P, sz]),
        "ple_model_input_kind": (i32, [P, sz]),
        "ple_model_input_width": (sz, [P, sz]),
        "ple_model_input_values_per_sample": (sz, [P, sz]),
        "ple_model_input_vocab_size": (sz, [P, sz]),
        "ple_model_input_max_len": (sz, [P, sz]),
        "ple_model_input_pooling": (cstr, [P, sz]),
        "ple_model_input_pad_id": (ctypes.c_bool, [P, sz, ctypes.POINTER(ctypes.c_int64)]),
        "ple_model_input_index": (i32, [P, cstr, ctypes.POINTER(sz)]),
        "ple_model_output_width": (sz, [P]),
        "ple_model_output_count": (sz, [P]),
        "ple_model_output_name": (cstr, [P, sz]),
        "ple_model_output_offset": (sz, [P, sz]),
        "ple_model_output_len": (sz, [P, sz]),
        "ple_model_gate_width": (sz, [P]),
        "ple_model_gate_count": (sz, [P]),
        "ple_model_gate_name": (cstr, [P, sz]),
        "ple_model_gate_offset": (sz, [P, sz]),
        "ple_model_gate_len": (sz, [P, sz]),
        "ple_model_warm": (i32, [P, PROGRESS_FN, P, ctypes.POINTER(i32)]),
        "ple_model_residency": (i32, [P, ctypes.POINTER(Residency)]),
        "ple_model_is_locked": (ctypes.c_bool, [P]),
        "ple_session_new": (i32, [P, sz, ctypes.POINTER(P)]),
        "ple_session_new_with_pool": (i32, [P, sz, P, ctypes.POINTER(P)]),
        "ple_session_threads": (sz, [P]),
        "ple_session_set_min_parallel_batch": (i32, [P, sz]),
        "ple_pool_new": (i32, [sz, ctypes.POINTER(P)]),
        "ple_pool_free": (None, [P]),
        "ple_pool_clone": (P, [P]),
        "ple_pool_threads": (sz, [P]),
        "ple_pool_set_spin_us": (i32, [P, u32]),
        "ple_session_free": (None, [P]),
        "ple_session_max_batch": (sz, [P]),
        "ple_session_model": (P, [P]),
        "ple_session_last_error": (cstr, [P]),
        "ple_session_run_dense": (i32, [P, sz, P, sz, P, sz, P, sz]),
        "ple_session_run": (i32, [P, sz, ctypes.POINTER(Column), sz, P, sz, P, sz]),
        "ple_status_str": (cstr, [i32]),
        "ple_last_error": (cstr, []),
        "ple_version": (cstr, []),
        "ple_version_number": (u32, []),
        "ple_simd_level": (cstr, []),
    }
    for name, (res, args) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = res
        fn.argtypes = args


_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_lib_path: str | None = None


def _load(path: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(path)
    try:
        _declare(lib)
    except AttributeError as exc:
        raise LibraryNotFound(f"{path} is not libple (or a very different version): {exc}") from None
    number = lib.ple_version_number()
    major, minor = number // 1_000_000, number // 1000 % 1000
    if (major, minor) != (ABI_MAJOR, ABI_MINOR):
        raise LibraryNotFound(
            f"{path} is libple {lib.ple_version().decode()}, but this ple_runtime package speaks the C ABI "
            f"of {ABI_MAJOR}.{ABI_MINOR}.x (not stable before 1.0): rebuild the library from the same "
            "checkout, or point PLE_LIB at a matching one")
    return lib


def lib() -> ctypes.CDLL:
    """The loaded libple (loaded on first use; see the module docstring for the lookup)."""
    global _lib, _lib_path
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is not None:
            return _lib
        tried = []
        explicit = os.environ.get("PLE_LIB")
        for path in candidates():
            if not os.path.isfile(path):
                if path == explicit:
                    raise LibraryNotFound(f"PLE_LIB={explicit!r}: no such file")
                tried.append(f"{path} (missing)")
                continue
            try:
                _lib = _load(path)
            except OSError as exc:
                if path == explicit or isinstance(exc, LibraryNotFound):
                    raise
                tried.append(f"{path} ({exc})")
                continue
            _lib_path = path
            return _lib
        found = ctypes.util.find_library("ple")
        if found:
            try:
                _lib = _load(found)
                _lib_path = found
                return _lib
            except OSError as exc:
                tried.append(f"{found} from the system search path ({exc})")
        else:
            tried.append("the system search path (ctypes.util.find_library('ple'): nothing)")
        raise LibraryNotFound(
            "libple (the native ple-runtime library) was not found. Build it with "
            "`cargo build --release -p ple-runtime --lib` in the ple-runtime checkout (or reinstall this package with "
            "`pip install ./python` from the checkout, which builds and bundles it), or set PLE_LIB to the "
            "path of libple.so or PLE_LIB_DIR to its directory. Tried:\n  " + "\n  ".join(tried))


def lib_path() -> str:
    """Path of the loaded library (loads it if needed)."""
    lib()
    return _lib_path or ""


def version() -> str:
    """Version of the loaded libple ("MAJOR.MINOR.PATCH")."""
    return lib().ple_version().decode()


def simd_level() -> str:
    """The SIMD level a model opened now would use ("scalar", "avx2", "avx512" or "neon")."""
    return lib().ple_simd_level().decode()


def status_str(status: int) -> str:
    return lib().ple_status_str(int(status)).decode("utf-8", "replace")


def last_error() -> str:
    return lib().ple_last_error().decode("utf-8", "replace")
