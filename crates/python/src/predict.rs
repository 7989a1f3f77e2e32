//! Both scoring paths. The fast one takes a dict whose values are already what the library reads
//! (native int64 ids and float32 dense values, C-contiguous, aligned, shaped `[B]` or
//! `[B, values per sample]`), checks that in a few field reads per column, and scores them in place;
//! anything else goes back to Python (`ple_runtime.inputs`) and comes here through [`named`], with
//! the columns already converted. Both release the GIL while scoring and write only arrays they or
//! the Python side just allocated.

use std::ffi::c_int;
use std::sync::OnceLock;

use numpy::{PyArray2, PyArrayDescrMethods, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use ple::ffi::ple_status;
use ple::Input;

use crate::error::{from_core, raise};
use crate::model::Model;

/// numpy's type numbers of int64 and float32 on this platform.
fn type_nums(py: Python<'_>) -> (c_int, c_int) {
    static NUMS: OnceLock<(c_int, c_int)> = OnceLock::new();
    *NUMS.get_or_init(|| (numpy::dtype::<i64>(py).num(), numpy::dtype::<f32>(py).num()))
}

/// A column the library can read in place.
enum Column<'a> {
    Ids(&'a [i64]),
    Floats(&'a [f32]),
}

/// The array's elements as a slice, if it holds native int64 or float32 values, C-contiguous and
/// aligned; None otherwise.
fn column<'a>(arr: &'a Bound<'_, PyUntypedArray>, nums: (c_int, c_int)) -> Option<Column<'a>> {
    if !arr.is_c_contiguous() || !arr.is_aligned() {
        return None;
    }
    let dtype = arr.dtype();
    if dtype.is_native_byteorder() == Some(false) {
        return None;
    }
    let num = dtype.num();
    let len = arr.len();
    // SAFETY: `arr` is a live ndarray (checked by the cast that made it); this reads its data
    // pointer field, as numpy's PyArray_DATA does.
    let data = unsafe { (*numpy::npyffi::_PyArray_GET_ITEM_DATA(arr.as_array_ptr())).data };
    if len == 0 {
        return Some(if num == nums.0 {
            Column::Ids(&[])
        } else if num == nums.1 {
            Column::Floats(&[])
        } else {
            return None;
        });
    }
    if num == nums.0 && data.cast::<i64>().is_aligned() {
        // SAFETY: a C-contiguous, aligned array of `len` native int64 values starts at `data`; the
        // borrow of `arr` (which holds a reference to the array) keeps the buffer alive, and numpy
        // refuses to resize an array that has other references. As with any numpy function that
        // releases the GIL, the caller must not write to the array during the call.
        Some(Column::Ids(unsafe {
            std::slice::from_raw_parts(data.cast::<i64>(), len)
        }))
    } else if num == nums.1 && data.cast::<f32>().is_aligned() {
        // SAFETY: as above, for float32 values.
        Some(Column::Floats(unsafe {
            std::slice::from_raw_parts(data.cast::<f32>(), len)
        }))
    } else {
        None
    }
}

/// The arrays of `inputs` in model order (held by the caller: the dict may change while the GIL
/// is released) and the batch, if `inputs` is a dict of arrays shaped as the model's inputs.
fn ready<'py>(
    m: &Model,
    py: Python<'py>,
    inputs: &Bound<'py, PyAny>,
) -> PyResult<Option<(Vec<Bound<'py, PyUntypedArray>>, usize)>> {
    let Ok(dict) = inputs.cast::<PyDict>() else {
        return Ok(None);
    };
    let n = m.names.len();
    if dict.len() != n {
        return Ok(None);
    }
    let mut arrays = Vec::with_capacity(n);
    let mut batch = None;
    for (i, name) in m.names.iter().enumerate() {
        let Some(value) = dict.get_item(name.bind(py))? else {
            return Ok(None);
        };
        let Ok(arr) = value.cast_into::<PyUntypedArray>() else {
            return Ok(None);
        };
        let shape = arr.shape();
        let (Some(&b), per) = (shape.first(), m.per_sample[i]) else {
            return Ok(None);
        };
        let shaped = match shape {
            [_] => per == 1,
            [_, w] => *w == per,
            _ => false,
        };
        if !shaped || *batch.get_or_insert(b) != b {
            return Ok(None);
        }
        arrays.push(arr);
    }
    let batch = batch.unwrap_or(0);
    if batch == 0 || batch > m.max_batch {
        return Ok(None);
    }
    Ok(Some((arrays, batch)))
}

/// The library's views of `arrays` (model order), if each holds the kind its input takes as
/// native, C-contiguous, aligned values.
fn views<'a>(
    m: &Model,
    py: Python<'_>,
    arrays: &'a [Bound<'_, PyUntypedArray>],
) -> Option<Vec<Input<'a>>> {
    let nums = type_nums(py);
    arrays
        .iter()
        .zip(&m.ids)
        .map(|(arr, &ids)| match (column(arr, nums)?, ids) {
            (Column::Ids(x), true) => Some(Input::Ids(x)),
            (Column::Floats(x), false) => Some(Input::Floats(x)),
            _ => None,
        })
        .collect()
}

/// The fast path (`_ple.Model.predict`): `Some(scores)` or `Some((scores, gates))`, or None when
/// `inputs` needs the Python side's conversions.
pub fn fast<'py>(
    m: &Model,
    py: Python<'py>,
    inputs: &Bound<'py, PyAny>,
    want_gates: bool,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let Some((arrays, batch)) = ready(m, py, inputs)? else {
        return Ok(None);
    };
    let Some(views) = views(m, py, &arrays) else {
        return Ok(None);
    };
    // SAFETY: new arrays; every element is written by a successful run, and a failed one drops
    // them unread.
    let out = unsafe { PyArray2::<f32>::new(py, [batch, m.output_width], false) };
    // SAFETY: as for `out`.
    let gates =
        want_gates.then(|| unsafe { PyArray2::<f32>::new(py, [batch, m.gate_width], false) });
    score(m, py, &views, batch, &out, gates.as_ref())?;
    Ok(Some(match gates {
        Some(g) => PyTuple::new(py, [out.into_any(), g.into_any()])?.into_any(),
        None => out.into_any(),
    }))
}

/// A float32 array's elements for the library to write, if it is C-contiguous, aligned and
/// writeable.
///
/// # Safety
/// Nothing else reads or writes the array's data while the slice lives.
// The array is a shared Python object; uniqueness is the caller's promise (# Safety).
#[allow(clippy::mut_from_ref)]
unsafe fn writable<'a>(a: &'a Bound<'_, PyArray2<f32>>, what: &str) -> PyResult<&'a mut [f32]> {
    // SAFETY: a live ndarray; reads its flags field, as numpy's PyArray_FLAGS does.
    let flags = unsafe { (*numpy::npyffi::_PyArray_GET_ITEM_DATA(a.as_array_ptr())).flags };
    if flags & numpy::npyffi::NPY_ARRAY_BEHAVED != numpy::npyffi::NPY_ARRAY_BEHAVED {
        return Err(PyTypeError::new_err(format!(
            "{what}: the array must be aligned and writeable"
        )));
    }
    // SAFETY: exclusive per this function's contract.
    unsafe { a.as_slice_mut() }.map_err(|e| PyTypeError::new_err(format!("{what}: {e}")))
}

/// Runs a session over `views` into `out` / `gates` with the GIL released.
fn score(
    m: &Model,
    py: Python<'_>,
    views: &[Input<'_>],
    batch: usize,
    out: &Bound<'_, PyArray2<f32>>,
    gates: Option<&Bound<'_, PyArray2<f32>>>,
) -> PyResult<()> {
    let out_is_input = |a: &Bound<'_, PyArray2<f32>>| {
        let p = a.data() as usize;
        let end = p + a.len() * 4;
        let overlaps = |s: usize, l: usize| l > 0 && p < s + l && s < end;
        views.iter().any(|v| match v {
            Input::Ids(x) => overlaps(x.as_ptr() as usize, x.len() * 8),
            Input::Floats(x) => overlaps(x.as_ptr() as usize, x.len() * 4),
            // Only the two forms above are built here.
            _ => false,
        })
    };
    if out_is_input(out) || gates.is_some_and(out_is_input) {
        return Err(raise(
            ple_status::InvalidArgument,
            "an output array overlaps an input column",
        ));
    }
    if let Some(g) = gates {
        if g.is(out) {
            return Err(raise(
                ple_status::InvalidArgument,
                "out and gates are the same array",
            ));
        }
    }
    // SAFETY: the arrays written are new ones, made by `fast` just before, or by
    // ple_runtime's converted path just before it calls `named` (a private entry point), so no
    // Python code holds them during the call and no other slice of them exists (overlap with the
    // inputs was refused above; out and gates are distinct arrays). numpy's borrow tracking
    // (`try_readwrite`) would cost a shared-table update per call for nothing.
    let out_slice = unsafe { writable(out, "out") }?;
    // SAFETY: as for `out`.
    let gates_slice = gates.map(|g| unsafe { writable(g, "gates") }).transpose()?;
    let mut session = m.take_session()?;
    let result = py.detach(|| session.run(views, batch, out_slice, gates_slice));
    m.give_back(session);
    result.map_err(|e| from_core(&e))
}

/// The general path (`_ple.Model.run`): columns by name, in any order, each input once, with the
/// C ABI's checks and messages (`ple_session_run` with named columns).
pub fn named(
    m: &Model,
    py: Python<'_>,
    columns: &[(String, Bound<'_, PyUntypedArray>)],
    batch: usize,
    out: &Bound<'_, PyArray2<f32>>,
    gates: Option<&Bound<'_, PyArray2<f32>>>,
) -> PyResult<()> {
    let n = m.names.len();
    if columns.len() != n {
        let missing = m
            .by_name
            .iter()
            .filter(|(name, _)| !columns.iter().any(|(c, _)| c == *name))
            .min_by_key(|(_, &i)| i)
            .map(|(name, _)| format!("; input '{name}' is missing"))
            .unwrap_or_default();
        return Err(raise(
            ple_status::WrongInputCount,
            format!(
                "expected {n} input columns (one per model input), got {}{missing}",
                columns.len()
            ),
        ));
    }
    let nums = type_nums(py);
    let mut views = vec![None; n];
    for (ci, (name, arr)) in columns.iter().enumerate() {
        let Some(&fi) = m.by_name.get(name) else {
            return Err(raise(
                ple_status::UnknownInput,
                format!("column {ci}: the model has no input named '{name}'"),
            ));
        };
        if views[fi].is_some() {
            return Err(raise(
                ple_status::InvalidArgument,
                format!("input '{name}' is given twice (column {ci})"),
            ));
        }
        views[fi] = Some(match column(arr, nums) {
            Some(Column::Ids(ids)) => Input::Ids(ids),
            Some(Column::Floats(x)) => Input::Floats(x),
            None => {
                return Err(PyTypeError::new_err(format!(
                    "input '{name}': expected a C-contiguous array of int64 or float32, got {}",
                    arr.dtype()
                )))
            }
        });
    }
    let views: Vec<Input<'_>> = views.into_iter().flatten().collect();
    score(m, py, &views, batch, out, gates)
}

/// Seconds per call of `calls` back-to-back library calls on `inputs` (a dict the fast path
/// takes), timed in Rust with the GIL released: what `predict` costs without Python, for the
/// overhead benchmark (benches/compare/python_overhead.py).
pub fn time_native(
    m: &Model,
    py: Python<'_>,
    inputs: &Bound<'_, PyAny>,
    calls: usize,
) -> PyResult<f64> {
    let not_ready = || {
        PyTypeError::new_err(
            "inputs are not ready for the fast path (a dict of the model's inputs as C-contiguous \
             int64 / float32 arrays)",
        )
    };
    let (arrays, batch) = ready(m, py, inputs)?.ok_or_else(not_ready)?;
    let views = views(m, py, &arrays).ok_or_else(not_ready)?;
    let mut out = vec![0f32; batch * m.output_width];
    let mut session = m.take_session()?;
    let result = py.detach(|| {
        let t0 = std::time::Instant::now();
        for _ in 0..calls.max(1) {
            session.run(&views, batch, &mut out, None)?;
        }
        Ok(t0.elapsed().as_secs_f64() / calls.max(1) as f64)
    });
    m.give_back(session);
    result.map_err(|e: ple::Error| from_core(&e))
}
