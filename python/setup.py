"""Build step of the ple-runtime Python package: bundle libple (the native scorer).

``pip install ./python`` (from a ple-runtime checkout) runs ``cargo build --release -p ple-runtime --lib``
in the checkout and copies ``libple.so`` into the installed package, next to the Python
modules, where :mod:`ple_runtime._native` finds it first. Knobs (environment variables
read at install time):

- ``PLE_LIB=/path/to/libple.so``: bundle this prebuilt library instead of building one;
- ``PLE_BUILD_NATIVE=0``: bundle nothing (numpy-only use: writer, spec, reference; or a
  library found at run time through ``PLE_LIB`` / ``PLE_LIB_DIR`` / the system path);
- ``CARGO`` (the cargo to run) and ``CARGO_TARGET_DIR`` are honoured.

Editable installs (``pip install -e python``) build the library too but do not copy it:
the package then finds ``<checkout>/target/release/libple.so`` at run time.
Everything else (metadata, dependencies) is in pyproject.toml.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
LIB_NAME = "libple.dylib" if sys.platform == "darwin" else "libple.so"


def _log(msg: str) -> None:
    print(f"[ple-runtime build] {msg}", file=sys.stderr, flush=True)


def _native_library() -> str | None:
    """Path of the libple to bundle (building it if needed), or None to bundle nothing."""
    if os.environ.get("PLE_BUILD_NATIVE", "1") == "0":
        _log("PLE_BUILD_NATIVE=0: not bundling libple (set PLE_LIB or PLE_LIB_DIR at run time)")
        return None
    prebuilt = os.environ.get("PLE_LIB")
    if prebuilt:
        if not os.path.isfile(prebuilt):
            raise SystemExit(f"PLE_LIB={prebuilt!r}: no such file")
        _log(f"bundling the prebuilt {prebuilt} (PLE_LIB)")
        return prebuilt
    if not os.path.isfile(os.path.join(REPO, "Cargo.toml")):
        raise SystemExit(
            "ple-runtime: this source tree is not inside a ple-runtime checkout, so libple cannot be built. "
            "Install from the checkout (`pip install ./python`), or set PLE_LIB=/path/to/libple.so to bundle "
            "a prebuilt library, or PLE_BUILD_NATIVE=0 to install without it.")
    cargo = os.environ.get("CARGO") or shutil.which("cargo") or os.path.expanduser("~/.cargo/bin/cargo")
    if not os.path.isfile(cargo) and not shutil.which(cargo):
        raise SystemExit(
            "ple-runtime: cargo (the Rust toolchain, 1.89 or newer) is needed to build libple: install it from "
            "https://rustup.rs, or set PLE_LIB=/path/to/libple.so to bundle a library built elsewhere, "
            "or PLE_BUILD_NATIVE=0 to install without it.")
    cmd = [cargo, "build", "--release", "-p", "ple-runtime", "--lib"]
    _log(f"building libple: {' '.join(cmd)} (in {REPO})")
    subprocess.run(cmd, cwd=REPO, check=True, stdout=sys.stderr)
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
    if not os.path.isabs(target):
        target = os.path.join(REPO, target)
    path = os.path.join(target, "release", LIB_NAME)
    if not os.path.isfile(path):
        raise SystemExit(f"ple-runtime: cargo finished but {path} does not exist")
    return path


class BuildPyWithLibple(build_py):
    """build_py that also builds (or finds) libple and copies it into the package."""

    def run(self):
        super().run()
        lib = _native_library()
        if lib is None:
            return
        if getattr(self, "editable_mode", False):
            _log(f"editable install: not copying {lib}; it is found in the checkout at run time")
            return
        dest_dir = os.path.join(self.build_lib, "ple_runtime")
        os.makedirs(dest_dir, exist_ok=True)
        dest = os.path.join(dest_dir, LIB_NAME)
        shutil.copyfile(lib, dest)
        os.chmod(dest, 0o755)
        _log(f"bundled {lib} as {dest}")


class BinaryDistribution(Distribution):
    """The wheel holds a native library: tag it for this platform, not py3-none-any."""

    def has_ext_modules(self):
        return os.environ.get("PLE_BUILD_NATIVE", "1") != "0"


setup(cmdclass={"build_py": BuildPyWithLibple}, distclass=BinaryDistribution)
