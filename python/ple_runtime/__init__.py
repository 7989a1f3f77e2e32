"""ple_runtime: export, verify and score ``.ple`` multi-task models (docs/EXPORT.md).

Top level (numpy is the only hard dependency; a training framework is needed only by the
exporters and :func:`verify`, and only the model's own: torch for torch-rechub / DeepCTR-Torch,
TensorFlow with tf-keras for DeepCTR on Keras -- neither imports the other):

- :class:`Model`: a ``.ple`` file loaded by the ple library (the native extension ``ple_runtime._ple``):
  ``Model(path).predict({feature: array})`` -> ``[B, outputs]``; ``gates=True`` adds gate weights;
  ``Model(path, threads=N)`` or ``pool=Pool(N)`` splits large batches across threads;
- :func:`export` / :func:`to_spec`: torch-rechub / DeepCTR-Torch / DeepCTR (Keras) model ->
  ``.ple`` / spec;
- :func:`verify`: the model vs its ``.ple`` file on the same inputs, per-output errors;
- :func:`write`: any spec (plain numpy arrays + a small config, :mod:`ple_runtime.spec`)
  -> ``.ple`` file: the generic path for EasyRec or hand-built models;
- :func:`forward`: an independent float64 reference forward pass of a spec.

Modules: :mod:`.spec`; the file format: :mod:`.codes` (every code and limit),
:mod:`.storage` (BatchNorm folding, panel16 packing), :mod:`.writer`, :mod:`.reader` (strict
reader; :mod:`.graph_check` for the graph rules), :mod:`.describe`, and :mod:`.format`, which
gathers their public names; :mod:`.reference` (the float64 forward), :mod:`.numpy_runtime`
(a written file scored by it), :mod:`.export_torch`, :mod:`.export_keras`, :mod:`.model`,
:mod:`.verify`, :mod:`._native` (finding the native extension: ``PLE_EXTENSION``, the package,
the checkout's ``target/release`` and ``target/debug``); the ``ple`` console script is the
separate ``ple_runtime_cli`` package (it starts without importing this one).
"""

from ._native import LibraryNotFound
from .format import FormatError, PleFile, read_header_and_meta, read_tensors, write
from .gates import GateReport, gate_report
from .model import GateInfo, InputInfo, Model, OutputInfo, PleError, Pool
from .reference import forward
from .spec import ExportError, SpecError, normalize
from .verify import VerifyError, VerifyReport, random_inputs, rel_err, verify


def _exporter(model):
    """The exporter module for a model, chosen from its class without importing either framework."""
    from .verify import _framework

    return _framework(model)[1]


def export(model, path, dtype: str = "f32", **kwargs):
    """Write a torch-rechub / DeepCTR-Torch model (needs torch; see
    :func:`ple_runtime.export_torch.export`: ``name``, ``task_names``, ``max_len``) or a DeepCTR
    Keras model (needs TensorFlow; see :func:`ple_runtime.export_keras.export`: ``name``,
    ``task_names``) as a ``.ple`` file. ``dtype``: "f32", "f16" or "int8" (dense layers of at
    least 32 outputs int8, the rest f32); ``precision={"<mlp>[.<layer>]": "f32"|"f16"|"int8"}``
    overrides it per layer (:func:`ple_runtime.write`)."""
    return _exporter(model).export(model, path, dtype=dtype, **kwargs)


def to_spec(model, **kwargs) -> dict:
    """The generic spec of a torch-rechub / DeepCTR-Torch / DeepCTR (Keras) model; see
    :func:`ple_runtime.export_torch.to_spec` and :func:`ple_runtime.export_keras.to_spec`."""
    return _exporter(model).to_spec(model, **kwargs)


def library_version() -> str:
    """Version of the ple library in the native extension ("MAJOR.MINOR.PATCH"); loads it if needed."""
    from ._native import version

    return version()


def library_path() -> str:
    """Path of the loaded native extension; loads it if needed."""
    from ._native import lib_path

    return lib_path()


def simd_level() -> str:
    """The SIMD level the ple library uses on this CPU ("scalar", "avx2", "avx512", "neon")."""
    from ._native import simd_level as _simd

    return _simd()


__all__ = [
    "ExportError",
    "FormatError",
    "GateInfo",
    "GateReport",
    "InputInfo",
    "LibraryNotFound",
    "Model",
    "OutputInfo",
    "PleError",
    "Pool",
    "PleFile",
    "SpecError",
    "VerifyError",
    "VerifyReport",
    "export",
    "forward",
    "gate_report",
    "library_path",
    "library_version",
    "normalize",
    "random_inputs",
    "read_header_and_meta",
    "read_tensors",
    "rel_err",
    "simd_level",
    "to_spec",
    "verify",
    "write",
]
__version__ = "0.1.0"
