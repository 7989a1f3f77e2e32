"""Progress bars for long exports and verifies: tqdm on stderr, drawn only when stderr is a
terminal (never in logs, pipes, notebooks' captured output or tests) and only once a job has
run for half a second, so quick ones print nothing. tqdm is optional (``pip install
"ple-runtime[progress]"``); without it there is no bar.
"""

from __future__ import annotations

import sys
from typing import TextIO

DELAY_SECONDS = 0.5


class _Quiet:
    """The bar when none is drawn."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "_Quiet":
        return self

    def __exit__(self, *exc) -> None:
        pass


def bar(total: int, desc: str, *, unit: str = "it", enabled: bool | None = None, file: TextIO | None = None):
    """A context-managed bar with ``update(n)`` and ``set_postfix_str(text)``.

    enabled: None draws it when ``file`` (default stderr) is a terminal; True always (if
    tqdm is installed); False never. ``unit="B"`` counts bytes (KiB, MiB, ... shown).
    """
    out = file if file is not None else sys.stderr
    if enabled is None:
        enabled = bool(getattr(out, "isatty", lambda: False)())
    if not enabled:
        return _Quiet()
    try:
        from tqdm import tqdm
    except ImportError:
        return _Quiet()
    byte_units = {"unit_scale": True, "unit_divisor": 1024} if unit == "B" else {}
    return tqdm(total=total, desc=desc, unit=unit, file=out, leave=False, dynamic_ncols=True,
                delay=DELAY_SECONDS, **byte_units)
