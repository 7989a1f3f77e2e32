"""ple_runtime: write and check `.ple` weight files for the ple-runtime scorer.

- :mod:`ple_runtime.spec`: the generic model spec (numpy arrays + a small config);
- :mod:`ple_runtime.format`: the `.ple` writer and strict reader (docs/FORMAT.md);
- :mod:`ple_runtime.reference`: an independent float64 forward pass of a spec;
- :mod:`ple_runtime.export_torch`: specs from live torch-rechub / DeepCTR-Torch models
  (needs torch; imported on demand so that numpy alone is enough for the rest).
"""

from .format import FormatError, PleFile, read_header_and_meta, read_tensors, write
from .reference import forward
from .spec import SpecError, normalize

__all__ = [
    "FormatError",
    "PleFile",
    "SpecError",
    "forward",
    "normalize",
    "read_header_and_meta",
    "read_tensors",
    "write",
]
__version__ = "0.1.0"
