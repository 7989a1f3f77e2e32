"""Score a written ``.ple`` file with numpy, in float64, from its stored tensors.

The file is read back as a spec (:func:`ple_runtime.reader.read_spec`: folded BatchNorm,
rounded or f16 weights and tables, exactly as stored) and scored by the one float64
forward, :func:`ple_runtime.reference.forward`. Comparing the result with the forward of
the unfolded spec checks the writer; comparing the Rust runtime with it isolates the
runtime from the writer.
"""

from __future__ import annotations

import os

import numpy as np

from .reader import read_spec
from .reference import forward


def score_file(path: str | os.PathLike, inputs: dict) -> tuple[np.ndarray, np.ndarray]:
    """Score `inputs` (feature name -> array) with the file at `path`; float64 results
    (outputs [B, output_width], gates [B, gate_width])."""
    return forward(read_spec(path), inputs)
