"""Finding and loading the native extension ``ple_runtime._ple`` (crates/python).

The extension is the ple library itself with Python bindings (PyO3): models, sessions and pools
are Rust objects, numpy arrays are read in place, and scoring releases the GIL. It is looked up,
first match wins:

1. ``PLE_EXTENSION``: the full path of a built extension (``lib_ple.so``) to load;
2. the package itself (``ple_runtime/_ple.abi3.so``): a wheel, ``pip install ./python`` or
   ``maturin develop`` put it there;
3. a source checkout: ``<repo>/target/release/lib_ple.so``, then ``<repo>/target/debug``, where
   ``<repo>`` is two directories above the package (``cargo build --release -p ple-python``
   makes it), and ``$CARGO_TARGET_DIR/{release,debug}`` if that variable is set.

Nothing is loaded at import: ``import ple_runtime`` and the pure-Python parts (the exporters,
:func:`ple_runtime.write`, the spec, the reader, the float64 reference) work without the
extension; :class:`ple_runtime.Model` and :func:`ple_runtime.verify` need it, and raise
:class:`LibraryNotFound` saying how to get it.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import threading

# The ple version this package's Python side was written against (its messages and codes).
ABI_MAJOR, ABI_MINOR = 0, 1

_EXT_NAME = "ple_runtime._ple"
_BUILT_NAMES = ("lib_ple.dylib",) if sys.platform == "darwin" else ("lib_ple.so",)
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
    28: "PLE_STATUS_EXECUTOR_FAILED",
    29: "PLE_STATUS_RAGGED_INPUT",
}

MAX_BATCH_LIMIT = 1 << 24  # the library's largest max_batch (docs/C_API.md)


class LibraryNotFound(OSError):
    """The native extension could not be found or loaded (the message lists every place tried)."""


def candidates() -> list[str]:
    """Every built-extension path :func:`ext` tries after the package's own, in order."""
    out = []
    if os.environ.get("PLE_EXTENSION"):
        out.append(os.environ["PLE_EXTENSION"])
    dirs = []
    if os.path.isfile(os.path.join(_REPO_DIR, "Cargo.toml")):  # in a ple-runtime checkout
        for profile in ("release", "debug"):
            dirs.append(os.path.join(_REPO_DIR, "target", profile))
    if os.environ.get("CARGO_TARGET_DIR"):
        for profile in ("release", "debug"):
            dirs.append(os.path.join(os.environ["CARGO_TARGET_DIR"], profile))
    out += [os.path.join(d, name) for d in dirs for name in _BUILT_NAMES]
    return out


_lock = threading.Lock()
_ext = None


def _check_version(mod, where: str):
    major, minor = (int(p) for p in mod.version().split(".")[:2])
    if (major, minor) != (ABI_MAJOR, ABI_MINOR):
        raise LibraryNotFound(
            f"{where} is ple {mod.version()}, but this ple_runtime package was written for "
            f"{ABI_MAJOR}.{ABI_MINOR}.x: rebuild the extension from the same checkout")
    return mod


def _load_file(path: str):
    loader = importlib.machinery.ExtensionFileLoader(_EXT_NAME, path)
    spec = importlib.util.spec_from_file_location(_EXT_NAME, path, loader=loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    sys.modules[_EXT_NAME] = mod
    return mod


def ext():
    """The loaded extension module (loaded on first use; see the module docstring)."""
    global _ext
    if _ext is not None:
        return _ext
    with _lock:
        if _ext is not None:
            return _ext
        explicit = os.environ.get("PLE_EXTENSION")
        tried = []
        if not explicit:
            try:
                from . import _ple  # the wheel's (or pip install's) own copy

                _ext = _check_version(_ple, _ple.__file__)
                return _ext
            except ImportError as exc:
                tried.append(f"{_EXT_NAME} in {_PKG_DIR} ({exc})")
        for path in candidates():
            if not os.path.isfile(path):
                if path == explicit:
                    raise LibraryNotFound(f"PLE_EXTENSION={explicit!r}: no such file")
                tried.append(f"{path} (missing)")
                continue
            try:
                _ext = _check_version(_load_file(path), path)
            except ImportError as exc:
                if path == explicit:
                    raise LibraryNotFound(f"PLE_EXTENSION={explicit!r}: {exc}") from None
                tried.append(f"{path} ({exc})")
                continue
            return _ext
        raise LibraryNotFound(
            "the ple_runtime native extension (ple_runtime._ple) was not found. Install the wheel "
            "(`pip install ple_runtime-*.whl`), or from a ple-runtime checkout `pip install ./python` "
            "(needs Rust), or build it in place with `cargo build --release -p ple-python`, or set "
            "PLE_EXTENSION to the path of a built lib_ple.so. Tried:\n  " + "\n  ".join(tried))


# The name earlier versions (ctypes over libple.so) used; kept for callers that probe with it.
lib = ext


def lib_path() -> str:
    """Path of the loaded extension (loads it if needed)."""
    return ext().__file__


def version() -> str:
    """Version of the ple library in the extension ("MAJOR.MINOR.PATCH")."""
    return ext().version()


def simd_level() -> str:
    """The SIMD level a model opened now would use ("scalar", "avx2", "avx512" or "neon")."""
    return ext().simd_level()


def status_str(status: int) -> str:
    return ext().status_str(int(status))
