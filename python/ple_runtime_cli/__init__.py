"""The ``ple`` command installed with the ple_runtime package (a console script): the
command-line tool of crates/cli, linked into the package's native extension, so a wheel ships no
separate executable. ``ple --help`` and docs/CLI.md describe it; it behaves as the
``target/release/ple`` binary (same arguments, output and exit codes).

A package of its own so that starting the tool does not import ``ple_runtime`` (and numpy, which
takes most of a second on a busy machine): the extension file is found next to the package's
modules without running its ``__init__``.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import signal
import sys


def _extension():
    """The native extension, loaded from the installed package's directory when it is there;
    otherwise (a source checkout) found the way ``ple_runtime`` finds it."""
    spec = importlib.util.find_spec("ple_runtime")  # locates the package without importing it
    for folder in (spec.submodule_search_locations or []) if spec else []:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(folder, "_ple" + suffix)
            if os.path.isfile(path):
                loader = importlib.machinery.ExtensionFileLoader("ple_runtime._ple", path)
                module = importlib.util.module_from_spec(
                    importlib.util.spec_from_file_location("ple_runtime._ple", path, loader=loader))
                loader.exec_module(module)
                return module
    from ple_runtime import _native

    return _native.ext()


def main() -> int:
    try:
        ext = _extension()
    except (ImportError, OSError) as exc:
        print(f"ple: error: {exc}", file=sys.stderr)
        return 1
    # Ctrl-C stops the tool at once, as it stops the binary (Python would only notice it after
    # the native call returned).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.stdout.flush()
    return ext.cli(sys.argv[1:])
