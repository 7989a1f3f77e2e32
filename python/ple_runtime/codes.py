"""Every number the ``.ple`` format fixes (docs/FORMAT.md): header constants, the codes the
file stores as bare integers, and the limits of section 3.8.

The Rust reader keeps the same table in ``src/format/codes.rs`` and ``src/format/mod.rs``;
``python/tests/test_cross_writer.py`` and ``tests/cross_writer.rs`` check both against the
committed ``tests/cross_writer/codes.txt`` (see :func:`table`).
"""

from __future__ import annotations

MAGIC = b"\x89PLE\r\n\x1a\n"
MAJOR, MINOR = 1, 3
MINOR_INT8 = 1  # the first minor that may hold i8 tensors; files without them say 0
MINOR_INPUT_SCALES = 2  # the first minor with the input-scales section; files without input scales say 1 or 0
MINOR_NODES = 3  # the first minor with a node section (after the input scales); files without nodes say 0-2
HEADER_SIZE = 64
ALIGN = 64
NONE = 0xFFFFFFFF

# Codes (FORMAT.md sections 3.2-3.7), each as {name: code}; the names are the ones the spec
# (ple_runtime.spec) and the Rust reader's messages use.
DTYPE_F32, DTYPE_F16, DTYPE_I8 = 1, 2, 3
DTYPE_CODES = {"f32": DTYPE_F32, "f16": DTYPE_F16, "i8": DTYPE_I8}
LAYOUT_PLAIN, LAYOUT_PANEL16, LAYOUT_PANEL16X4 = 0, 1, 2
LAYOUT_CODES = {"plain": LAYOUT_PLAIN, "panel16": LAYOUT_PANEL16, "panel16x4": LAYOUT_PANEL16X4}
KIND_DENSE, KIND_SPARSE, KIND_SEQUENCE = 1, 2, 3
KIND_CODES = {"dense": KIND_DENSE, "sparse": KIND_SPARSE, "sequence": KIND_SEQUENCE}
POOL_CODES = {"sum": 1, "mean": 2, "max": 3}  # 0: a feature that does not pool
MASK_NONE, MASK_PAD_ID = 0, 1
MASK_CODES = {"none": MASK_NONE, "pad id": MASK_PAD_ID}
FLAG_ID_F32 = 1  # feature flag bit 0: ids pass through f32 (DeepCTR-Torch)
FLAG_CALLER_VECTORS = 2  # feature flag bit 1: no table in the file, the caller passes vectors
ACT_CODES = {
    "identity": 0, "relu": 1, "sigmoid": 2, "tanh": 3, "leaky_relu": 4, "prelu": 5,
    "dice_rechub": 6, "dice_bn": 7, "softmax": 8,
}
TOWER_INPUT_CODES = {"x0": 0, "bottom": 1, "level": 2, "node": 3}  # also what a node input reads
TOWER_ACT_CODES = {"identity": 0, "sigmoid": 2}
OUTPUT_TOWER, OUTPUT_PRODUCT = 0, 1
OUTPUT_KIND_CODES = {"tower": OUTPUT_TOWER, "product": OUTPUT_PRODUCT}
NODE_MLP, NODE_ATTENTION = 1, 2
NODE_OP_CODES = {"mlp": NODE_MLP, "attention": NODE_ATTENTION}

DTYPE_NAMES = {code: name for name, code in DTYPE_CODES.items()}
LAYOUT_NAMES = {code: name for name, code in LAYOUT_CODES.items()}
KIND_NAMES = {code: name for name, code in KIND_CODES.items()}
POOL_NAMES = {code: name for name, code in POOL_CODES.items()}
MASK_NAMES = {code: name for name, code in MASK_CODES.items()}
ACT_NAMES = {code: name for name, code in ACT_CODES.items()}
TOWER_INPUT_NAMES = {code: name for name, code in TOWER_INPUT_CODES.items()}
TOWER_ACT_NAMES = {code: name for name, code in TOWER_ACT_CODES.items()}
OUTPUT_KIND_NAMES = {code: name for name, code in OUTPUT_KIND_CODES.items()}
NODE_OP_NAMES = {code: name for name, code in NODE_OP_CODES.items()}
ELEMENT_SIZE = {DTYPE_F32: 4, DTYPE_F16: 2, DTYPE_I8: 1}

# Limits (FORMAT.md section 3.8): a reader refuses a file beyond them, a writer a spec.
MAX_META = 64 << 20
LIMIT_STRINGS = 1_000_000
MAX_STRING_BYTES = 255
LIMIT_TENSORS = 1_000_000
TENSOR_DIM_LIMIT = 1 << 31  # rows and cols are below this
MAX_FEATURES = 65_536
MAX_LEN = 65_536
MAX_DENSE_WIDTH = 1 << 20
MAX_LAYERS = 64
LIMIT_MLPS = 1_000_000
MAX_LEVELS = 16
MAX_TASKS = 64
MAX_EXPERTS_PER_LEVEL = 4_096
MAX_OUTPUTS = 256
MAX_WORKING_FLOATS = 1 << 20  # per sample: x0, every layer's output, every mixture, every product
MAX_NODES = 4_096
MAX_NODE_INPUTS = 64


class FormatError(ValueError):
    """A file that breaks FORMAT.md (reader) or a model the format cannot hold (writer)."""


def align64(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def table() -> str:
    """The table as ``tests/cross_writer/codes.txt`` holds it: one tab-separated line per
    code (``field code name``) and per constant (``constant name value``), in file order."""
    fields = [
        ("dtype", DTYPE_CODES), ("layout", LAYOUT_CODES), ("kind", KIND_CODES), ("pooling", POOL_CODES),
        ("mask", MASK_CODES), ("activation code", ACT_CODES), ("tower input code", TOWER_INPUT_CODES),
        ("output activation code", TOWER_ACT_CODES), ("output kind", OUTPUT_KIND_CODES),
        ("node op", NODE_OP_CODES),
    ]
    lines = [f"{field}\t{code}\t{name}" for field, codes in fields
             for name, code in sorted(codes.items(), key=lambda item: item[1])]
    lines.append(f"feature flag\t{FLAG_ID_F32}\tids through f32")
    lines.append(f"feature flag\t{FLAG_CALLER_VECTORS}\tcaller vectors")
    constants = [
        ("magic", MAGIC.hex()), ("major", MAJOR), ("minor", MINOR), ("header size", HEADER_SIZE),
        ("alignment", ALIGN), ("none", NONE), ("metadata bytes", MAX_META), ("strings", LIMIT_STRINGS),
        ("string bytes", MAX_STRING_BYTES), ("tensors", LIMIT_TENSORS), ("tensor dim below", TENSOR_DIM_LIMIT),
        ("features", MAX_FEATURES), ("max_len", MAX_LEN), ("dense width", MAX_DENSE_WIDTH),
        ("MLP layers", MAX_LAYERS), ("MLPs", LIMIT_MLPS), ("levels", MAX_LEVELS), ("tasks", MAX_TASKS),
        ("experts per level", MAX_EXPERTS_PER_LEVEL), ("outputs", MAX_OUTPUTS),
        ("working floats per sample", MAX_WORKING_FLOATS), ("nodes", MAX_NODES),
        ("node inputs", MAX_NODE_INPUTS),
    ]
    lines += [f"constant\t{name}\t{value}" for name, value in constants]
    return "\n".join(lines) + "\n"
