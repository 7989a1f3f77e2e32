"""Round trips and strictness of the .ple writer and reader (docs/FORMAT.md)."""

import os
import struct
import zlib

import numpy as np
import pytest

from _util import full_spec, inputs_for, layer
from ple_runtime import format as fmt
from ple_runtime import numpy_runtime, reference
from ple_runtime.spec import normalize


@pytest.fixture
def spec():
    return full_spec(np.random.default_rng(1))


def test_panel16_index_formula():
    k, n = 3, 37
    logical = np.arange(k * n, dtype=np.float32).reshape(k, n)
    flat = fmt.pack_panel16(logical)
    assert flat.size == 3 * k * 16
    for r in range(k):
        for c in range(n):
            assert flat[(c // 16) * k * 16 + r * 16 + c % 16] == logical[r, c]
    assert np.all(flat.reshape(3, k, 16)[2, :, n % 16:] == 0)
    assert np.array_equal(fmt.unpack_panel16(flat, k, n), logical)


def test_header_and_layout(spec, tmp_path):
    path = tmp_path / "m.ple"
    pf = fmt.write(spec, path)
    blob = path.read_bytes()
    assert blob[:8] == b"\x89PLE\r\n\x1a\n"
    major, minor, hsize, fsize, moff, msize, doff, dsize, mcrc, dcrc = struct.unpack("<HHIQQQQQII", blob[8:64])
    assert (major, minor, hsize, moff) == (1, 0, 64, 64)
    assert fsize == len(blob) and doff == fmt.align64(64 + msize) and dsize == fsize - doff
    assert mcrc == zlib.crc32(blob[:56] + blob[64:64 + msize])
    assert dcrc == zlib.crc32(blob[doff:])
    assert not any(blob[64 + msize:doff])
    offset = 0
    for t in pf.tensors:
        assert t.offset == offset and t.offset % 64 == 0
        offset = fmt.align64(t.offset + t.size)
    assert offset == dsize
    assert pf.x0_width == 20 and pf.output_width == 4 and pf.gate_width == 3 + 3 + 5 + 3 + 3


def test_deterministic(spec):
    assert fmt.to_bytes(spec) == fmt.to_bytes(full_spec(np.random.default_rng(1)))


def test_roundtrip_values_f32(spec, tmp_path):
    path = tmp_path / "m.ple"
    fmt.write(spec, path)
    pf, arrays = fmt.read_tensors(path)
    canon = normalize(spec)
    assert np.array_equal(arrays["table.items"], canon["tables"]["items"].astype(np.float32))
    lay = canon["levels"][0]["task_experts"][0][0][0]
    s = lay["bn"]["gamma"] / np.sqrt(lay["bn"]["var"] + lay["bn"]["eps"])
    w_expect = (lay["weight"] * s[:, None]).T.astype(np.float32)
    b_expect = ((lay["bias"] - lay["bn"]["mean"]) * s + lay["bn"]["beta"]).astype(np.float32)
    assert np.array_equal(arrays["l0.t0.e0.0.w"], w_expect)
    assert np.array_equal(arrays["l0.t0.e0.0.b"], b_expect[None, :])
    assert arrays["l0.t0.e1.0.a"].shape == (1, 1)   # scalar PReLU
    assert arrays["l0.t1.e0.0.a"].shape == (1, 6)   # per-channel PReLU
    assert pf.name == "full" and [f.name for f in pf.features] == [f["name"] for f in canon["features"]]
    assert [pf.features[i].name for i in pf.order] == canon["x0_order"]
    assert pf.features[1].flags == 1 and pf.features[0].flags == 0
    assert (pf.features[2].pooling, pf.features[2].mask, pf.features[2].max_len) == (2, 1, 5)
    assert pf.features[4].table == fmt.NONE
    assert pf.features[1].table == pf.features[2].table  # shared table
    assert pf.levels[1].shared_gate == fmt.NONE and pf.levels[0].shared_gate != fmt.NONE


def test_dice_bn_and_leaky_params(tmp_path):
    rng = np.random.default_rng(5)
    bn = {"mean": rng.normal(size=4), "var": rng.uniform(.5, 2, 4), "eps": 1e-8, "gamma": None, "beta": None}
    spec = {"name": "d", "features": [{"name": "x", "kind": "dense", "width": 3}],
            "towers": [{"mlp": [layer(rng, 4, 3, "dice_bn", dice_alpha=np.array([0.3]), dice_bn=bn),
                                layer(rng, 2, 4, "leaky_relu", slope=0.2),
                                layer(rng, 1, 2, "dice_rechub", bn=False, dice_alpha=[0.5], dice_eps=2e-3)],
                        "input": "x0", "activation": "identity"}]}
    path = tmp_path / "d.ple"
    pf = fmt.write(spec, path)
    _, arrays = fmt.read_tensors(path)
    scale = 1 / np.sqrt(bn["var"] + 1e-8)
    assert np.array_equal(arrays["tower0.0.a"], np.stack([scale, -bn["mean"] * scale, np.full(4, 0.3)]).astype(np.float32))
    layers = pf.mlps[0]
    assert [l.act for l in layers] == [7, 4, 6]
    assert layers[1].act_scalar == np.float32(0.2) and layers[2].act_scalar == np.float32(2e-3)
    assert layers[0].act_scalar == 0 and layers[1].act_param == fmt.NONE


def test_f16_and_f16_rounded(spec, tmp_path):
    fmt.write(spec, tmp_path / "a.ple", dtype="f16")
    fmt.write(spec, tmp_path / "b.ple", dtype="f32", round_weights_to_f16=True)
    pa, a = fmt.read_tensors(tmp_path / "a.ple")
    pb, b = fmt.read_tensors(tmp_path / "b.ple")
    for ta, tb in zip(pa.tensors, pb.tensors):
        assert ta.name == tb.name
        if ta.layout == fmt.LAYOUT_PANEL16 or ta.name.startswith("table."):
            assert ta.dtype == fmt.DTYPE_F16 and tb.dtype == fmt.DTYPE_F32
        else:
            assert ta.dtype == tb.dtype == fmt.DTYPE_F32
        assert np.array_equal(a[ta.name].astype(np.float32), b[tb.name])
    x = inputs_for(spec, np.random.default_rng(2))
    oa, ga = numpy_runtime.score_file(tmp_path / "a.ple", x)
    ob, gb = numpy_runtime.score_file(tmp_path / "b.ple", x)
    assert np.array_equal(oa, ob) and np.array_equal(ga, gb)


def test_f16_overflow_is_refused(tmp_path):
    spec = {"name": "o", "features": [{"name": "x", "kind": "dense", "width": 1}],
            "towers": [{"mlp": [{"weight": [[1e6]], "activation": "identity"}], "input": "x0"}]}
    fmt.write(spec, tmp_path / "ok.ple")
    with pytest.raises(fmt.FormatError, match="tower0.0.w"):
        fmt.write(spec, tmp_path / "bad.ple", dtype="f16")


@pytest.mark.parametrize("bottom", [False, True])
def test_file_scores_like_reference(bottom, tmp_path):
    rng = np.random.default_rng(3)
    spec = full_spec(rng, bottom=bottom)
    if bottom:
        spec["towers"][1]["input"] = "bottom"
        spec["towers"][1]["mlp"] = [layer(rng, 3, 6, "softmax", bn=False)]
    fmt.write(spec, tmp_path / "m.ple")
    x = inputs_for(spec, rng)
    o_ref, g_ref = reference.forward(spec, x)
    o, g = numpy_runtime.score_file(tmp_path / "m.ple", x)
    assert o.shape == o_ref.shape and g.shape == g_ref.shape
    assert np.abs(o - o_ref).max() < 1e-5 and np.abs(g - g_ref).max() < 1e-5


# ---------------------------------------------------------------- strictness of the reader

def _retag(blob: bytearray) -> bytes:
    """Recompute both CRCs after tampering, so the check under test is the one that fires."""
    msize = struct.unpack_from("<Q", blob, 32)[0]
    doff = struct.unpack_from("<Q", blob, 40)[0]
    struct.pack_into("<I", blob, 56, zlib.crc32(bytes(blob[:56]) + bytes(blob[64:64 + msize])))
    struct.pack_into("<I", blob, 60, zlib.crc32(bytes(blob[doff:])))
    return bytes(blob)


@pytest.fixture
def blob(spec):
    return fmt.to_bytes(spec)


def test_reader_accepts_writer_output(blob):
    fmt.parse(blob)


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b[:63], "shorter than"),
    (lambda b: b"\x88" + b[1:], "magic"),
    (lambda b: b[:8] + struct.pack("<H", 2) + b[10:], "unsupported format version 2.0"),
    (lambda b: b + b"\0", "file_size"),
    (lambda b: b[:70] + bytes([b[70] ^ 1]) + b[71:], "meta CRC"),
    (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "data CRC"),
])
def test_reader_rejects(blob, mutate, message):
    with pytest.raises(fmt.FormatError, match=message):
        fmt.parse(mutate(blob))


def test_data_crc_only_on_request(blob):
    bad = blob[:-1] + bytes([blob[-1] ^ 1])
    fmt.parse(bad, verify_data=False)


def _meta_offset_of_tensor_records(pf):
    off = 4 + sum(2 + len(s.encode()) for s in pf.strings)
    return 64 + off + 4


def test_reader_rejects_structural_tampering(blob):
    pf = fmt.parse(blob)
    rec0 = _meta_offset_of_tensor_records(pf)
    b = bytearray(blob)
    b[rec0 + 6] = 1  # reserved u16 of tensor 0
    with pytest.raises(fmt.FormatError, match="reserved"):
        fmt.parse(_retag(b))
    b = bytearray(blob)
    struct.pack_into("<Q", b, rec0 + 32 + 16, 128)  # tensor 1 offset not canonical
    with pytest.raises(fmt.FormatError, match="canonical"):
        fmt.parse(_retag(b))
    b = bytearray(blob)
    b[rec0 + 4] = 4  # unknown dtype: the message names the record, field, value and known codes, as in Rust
    with pytest.raises(fmt.FormatError, match=r"tensor 0 \('table\.\w+'\): unknown dtype 4 \(known: 1 f32, 2 f16, 3 i8\)"):
        fmt.parse(_retag(b))

def test_reader_trailing_metadata_depends_on_minor(blob):
    """Files of this reader's minor or older must be consumed exactly; a newer minor may append
    fields."""
    pf = fmt.parse(blob)
    msize, pad = pf.meta_size, pf.data_offset - 64 - pf.meta_size
    assert pad >= 5, "test needs room for five more metadata bytes"
    # An empty input-scales section (1.2), then one byte no minor up to this reader's defines.
    grown = bytearray(blob[:64 + msize]) + b"\0\0\0\0\x07" + blob[69 + msize:]
    struct.pack_into("<Q", grown, 32, msize + 5)
    with pytest.raises(fmt.FormatError, match="trailing metadata"):
        fmt.parse(_retag(grown))
    struct.pack_into("<H", grown, 10, fmt.MINOR_INT8)
    with pytest.raises(fmt.FormatError, match="trailing metadata"):
        fmt.parse(_retag(grown))
    struct.pack_into("<H", grown, 10, fmt.MINOR_INPUT_SCALES)
    with pytest.raises(fmt.FormatError, match="trailing metadata"):
        fmt.parse(_retag(grown))
    # From 1.3 on the node section follows the input scales: one byte is not a node section.
    struct.pack_into("<H", grown, 10, fmt.MINOR_NODES)
    with pytest.raises(fmt.FormatError, match="truncated metadata: node count"):
        fmt.parse(_retag(grown))
    # A 1.3 file (with nodes) and one appended byte: refused at 1.3, accepted as a newer minor.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for name in ("f32.ple", "f16.ple"):
        with open(os.path.join(root, "tests", "cross_writer", name), "rb") as fh:
            nodes = fh.read()
        pf = fmt.parse(nodes)
        if pf.data_offset - 64 - pf.meta_size >= 1:
            break
    assert pf.minor == fmt.MINOR_NODES and pf.nodes
    grown = bytearray(nodes[:64 + pf.meta_size]) + b"\x07" + nodes[65 + pf.meta_size:]
    struct.pack_into("<Q", grown, 32, pf.meta_size + 1)
    with pytest.raises(fmt.FormatError, match="trailing metadata"):
        fmt.parse(_retag(grown))
    struct.pack_into("<H", grown, 10, fmt.MINOR + 1)
    fmt.parse(_retag(grown))


def test_reader_rejects_nonzero_padding(blob):
    pf = fmt.parse(blob)
    b = bytearray(blob)
    i = next(i for i, t in enumerate(pf.tensors[:-1]) if pf.tensors[i + 1].offset > t.offset + t.size)
    t = pf.tensors[i]
    b[pf.data_offset + t.offset + t.size] = 1
    with pytest.raises(fmt.FormatError, match="non-zero padding after"):
        fmt.parse(_retag(b))
    # a panel16 column past n
    i = next(i for i, t in enumerate(pf.tensors) if t.layout == fmt.LAYOUT_PANEL16 and t.cols % 16)
    t = pf.tensors[i]
    b = bytearray(blob)
    b[pf.data_offset + t.offset + t.size - 1] = 0x3F
    with pytest.raises(fmt.FormatError, match="panel16 padding"):
        fmt.parse(_retag(b))


def test_inspect_cli(spec, tmp_path, capsys):
    from ple_runtime.__main__ import main
    fmt.write(spec, tmp_path / "m.ple")
    assert main(["inspect", str(tmp_path / "m.ple")]) == 0
    out = capsys.readouterr().out
    assert "levels: 2" in out and "x0 order: item, user" in out
    (tmp_path / "bad.ple").write_bytes(b"nope")
    assert main(["inspect", str(tmp_path / "bad.ple")]) == 1
