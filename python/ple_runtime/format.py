"""The ``.ple`` weight file (docs/FORMAT.md, version 1.0): this module gathers the public
names of the modules that implement it, so ``ple_runtime.format`` stays the one import
for callers and exporters:

- :mod:`.codes`: header constants, every code the file stores, the limits;
- :mod:`.storage`: BatchNorm folding, Dice parameter rows, panel16 packing;
- :mod:`.writer`: :func:`write` / :func:`to_bytes` (spec -> file, read back strictly);
- :mod:`.reader`: the strict reader (:func:`parse`, :func:`read_header_and_meta`,
  :func:`read_tensors`, :func:`read_spec`), with :mod:`.graph_check` for the graph rules;
- :mod:`.describe`: a human-readable summary.
"""

from .codes import (  # noqa: F401
    ACT_CODES, ACT_NAMES, ALIGN, DTYPE_CODES, DTYPE_F16, DTYPE_F32, DTYPE_I8, DTYPE_NAMES, ELEMENT_SIZE, FLAG_ID_F32,
    HEADER_SIZE, KIND_CODES, KIND_DENSE, KIND_NAMES, KIND_SEQUENCE, KIND_SPARSE, LAYOUT_CODES, LAYOUT_NAMES,
    LAYOUT_PANEL16, LAYOUT_PANEL16X4, LAYOUT_PLAIN, LIMIT_MLPS, LIMIT_STRINGS, LIMIT_TENSORS, MAGIC, MAJOR, MASK_CODES, MASK_NONE,
    MASK_PAD_ID, MAX_META, MINOR, MINOR_INPUT_SCALES, MINOR_INT8, MINOR_NODES, NODE_OP_CODES, NODE_OP_NAMES, NONE, OUTPUT_KIND_CODES, OUTPUT_PRODUCT, OUTPUT_TOWER, POOL_CODES, POOL_NAMES,
    TOWER_ACT_CODES, TOWER_ACT_NAMES, TOWER_INPUT_CODES, TOWER_INPUT_NAMES, FormatError, align64,
)
from .describe import describe  # noqa: F401
from .graph_check import check_graph  # noqa: F401
from .reader import (  # noqa: F401
    FeatureInfo, LayerInfo, LevelInfo, NodeInfo, OutputInfo, PleFile, TensorInfo, TowerInfo, parse, read_header_and_meta,
    read_spec, read_tensors, tensor_array,
)
from .storage import (  # noqa: F401
    dice_bn_rows, fold_batchnorm, int8_problem, int8_weight_bytes, pack_int8, pack_panel16, quantize_int8, unpack_int8,
    unpack_panel16,
)
from .writer import INT8_MIN_OUTPUTS, X0_SCALE_TENSOR, tensor_prefix, to_bytes, write, x0_input_scales  # noqa: F401
