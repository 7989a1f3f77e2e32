"""Every input form Model.predict takes (ple_runtime/inputs.py): each is scored and compared with
the same samples given as the plain padded arrays, whose scores test_model.py checks against the
float64 reference; and every bad form is an error naming the input and row."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import ple_runtime
from _util import full_spec, inputs_for

pd = pytest.importorskip("pandas")  # installed with torch-rechub by tools/python_env.sh


@pytest.fixture(scope="module")
def spec():
    return full_spec(np.random.default_rng(31))


@pytest.fixture(scope="module")
def model(spec, tmp_path_factory):
    path = tmp_path_factory.mktemp("inputs") / "m.ple"
    ple_runtime.write(spec, path)
    with ple_runtime.Model(path) as m:
        yield m


@pytest.fixture(scope="module")
def unmasked(spec, tmp_path_factory):
    """The same model whose 'hist_max' has no pad id: every position counts in its pooling."""
    s = copy.deepcopy(spec)
    for f in s["features"]:
        if f["name"] == "hist_max":
            f.pop("pad_id")
    path = tmp_path_factory.mktemp("inputs") / "nopad.ple"
    ple_runtime.write(s, path)
    with ple_runtime.Model(path) as m:
        assert m.input("hist_max").pad_id is None
        yield m


@pytest.fixture(scope="module")
def x(spec):
    """Padded arrays with ragged true lengths: positions after `lengths` hold the pad id 0."""
    rng = np.random.default_rng(5)
    x = inputs_for(spec, rng, batch=7)
    lengths = {"hist_mean": [0, 1, 2, 5, 3, 4, 5], "hist_max": [3, 1, 0, 2, 3, 1, 2]}
    for name, lens in lengths.items():
        x[name] = x[name].copy()
        for r, n in enumerate(lens):
            x[name][r, :n] = rng.integers(1, 20, size=n)
            x[name][r, n:] = 0
    x["lengths"] = lengths
    return x


def arrays(x):
    return {k: v for k, v in x.items() if k != "lengths"}


def ragged(x, name):
    return [list(map(int, x[name][r, :n])) for r, n in enumerate(x["lengths"][name])]


def rows_of(x):
    """One dict per sample, as plain Python values (lists for sequences and vectors)."""
    out = []
    for r in range(len(x["user"])):
        out.append({"user": int(x["user"][r]), "item": int(x["item"][r]),
                    "hist_mean": ragged(x, "hist_mean")[r], "hist_max": ragged(x, "hist_max")[r],
                    "age": float(np.asarray(x["age"]).reshape(-1)[r]), "vec": [float(v) for v in x["vec"][r]]})
    return out


def test_ragged_lists_are_padded_with_the_pad_id(model, x):
    want = model.predict(arrays(x))
    got = model.predict(dict(arrays(x), hist_mean=ragged(x, "hist_mean"), hist_max=ragged(x, "hist_max")))
    assert np.array_equal(got, want)
    # A rectangular array shorter than max_len, and None / [] rows.
    short = dict(arrays(x), hist_max=x["hist_max"][:, :3])
    assert np.array_equal(model.predict(short), want)
    rows = ragged(x, "hist_max")
    rows[2] = None
    assert np.array_equal(model.predict(dict(arrays(x), hist_max=rows)), want)


def test_dict_of_lists_and_single_rows(model, x):
    want = model.predict(arrays(x))
    records = rows_of(x)
    cols = {k: [r[k] for r in records] for k in records[0]}
    assert np.array_equal(model.predict(cols), want)
    for r, row in enumerate(records):
        one = model.predict(row)
        assert one.shape == (1, model.output_width)
        assert np.array_equal(one[0], want[r])
    # A sequence of one id may be a scalar in a single row.
    row = dict(records[1], hist_max=int(x["hist_max"][1, 0]))
    assert np.array_equal(model.predict(row)[0], want[1])


def test_dataframe(model, x):
    want, want_gates = model.predict(arrays(x), gates=True)
    records = rows_of(x)
    df = pd.DataFrame(records)
    df["label"] = 1  # not an input: ignored, as the CLI ignores such columns
    df = df[["label"] + list(reversed(list(records[0])))]  # any column order
    got, gates = model.predict(df, gates=True)
    assert np.array_equal(got, want) and np.array_equal(gates, want_gates)
    with pytest.raises(ValueError, match=r"missing columns \['vec'\]"):
        model.predict(df.drop(columns=["vec"]))
    bad = df.copy()
    bad["user"] = bad["user"].astype(float)
    bad.loc[3, "user"] = np.nan
    with pytest.raises(ValueError, match=r"input 'user', row 3: nan is not an id"):
        model.predict(bad)
    bad = df.copy()
    bad["item"] = bad["item"].astype(object)
    bad.loc[2, "item"] = "x7"
    with pytest.raises(TypeError, match=r"input 'item', row 2: a string"):
        model.predict(bad)
    bad = df.copy()
    bad.at[4, "vec"] = [1.0, 2.0]
    with pytest.raises(ValueError, match=r"input 'vec', row 4: 2 values, expected 3"):
        model.predict(bad)
    bad = df.copy()
    bad.at[5, "hist_mean"] = [1, "a"]
    with pytest.raises(TypeError, match=r"input 'hist_mean', row 5"):
        model.predict(bad)


def test_arrow_table(model, x):
    pa = pytest.importorskip("pyarrow")  # installed by tools/python_env.sh
    want = model.predict(arrays(x))
    table = pa.Table.from_pylist(rows_of(x))
    assert np.array_equal(model.predict(table), want)
    assert np.array_equal(model.predict(table.to_batches()[0]), want)
    cols = {k: table.column(k).to_pylist() for k in table.column_names}
    cols["user"][4] = None
    with pytest.raises(ValueError, match=r"input 'user', row 4: null"):
        model.predict(pa.table(cols))


def test_sequences_without_a_pad_id(unmasked, x):
    full = arrays(x)
    short = dict(full, hist_max=ragged(x, "hist_max"))
    with pytest.raises(ValueError, match=r"input 'hist_max', row 1: 1 ids, fewer than max_len 3, and the model "
                                         r"has no pad id.*pad_id=\{'hist_max': ID\}"):
        unmasked.predict(short)
    # With the id the rows were padded with, the result is the padded arrays' result.
    want = unmasked.predict(full)
    assert np.array_equal(unmasked.predict(short, pad_id={"hist_max": 0}), want)
    assert np.array_equal(unmasked.predict(short, pad_id=0), want)
    # Another id gives other scores: without a mask the padding counts, so it is never guessed.
    assert not np.array_equal(unmasked.predict(short, pad_id=7), want)


def test_too_long_and_bad_ids_name_the_row(model, x):
    rows = ragged(x, "hist_mean")
    rows[6] = rows[6] + [1]
    with pytest.raises(ValueError, match=r"input 'hist_mean', row 6: 6 ids, more than max_len 5"):
        model.predict(dict(arrays(x), hist_mean=rows))
    rows = ragged(x, "hist_mean")
    rows[3][1] = 2.5
    with pytest.raises(ValueError, match=r"input 'hist_mean', row 3: 2.5 is not an id"):
        model.predict(dict(arrays(x), hist_mean=rows))
    with pytest.raises(ValueError, match=r"input 'user': \(2,\) values for a single row"):
        model.predict({"user": [1, 2], "item": 3, "hist_mean": [1], "hist_max": [1], "age": 0.5,
                       "vec": [0.0, 0.0, 0.0]})
    with pytest.raises(TypeError, match="a dict"):
        model.predict(42)
