//! `.npy` input: one array per model input, read whole and served a batch at a time.
//!
//! The reader is a small private one for the four dtypes a model's inputs come in (little-endian
//! float32, float64, int64, int32; C order): the `npyz` crate would bring a Python-literal parser
//! (pest, with a proc-macro and a C build step) for headers that hold three fixed keys.

use std::path::PathBuf;

use ple::InputKind;

use super::{Batch, InputSpec, RowSource};
use crate::column::InputColumn;
use crate::error::CliError;

/// The first bytes of every `.npy` file.
pub const MAGIC: &[u8] = b"\x93NUMPY";

/// Element types the reader takes (little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dtype {
    F32,
    F64,
    I32,
    I64,
}

/// A `.npy` file's shape, element type and data bytes.
pub struct NpyArray {
    shape: Vec<usize>,
    dtype: Dtype,
    bytes: Vec<u8>,
    data_start: usize,
}

impl NpyArray {
    pub fn read(path: &std::path::Path) -> Result<NpyArray, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        NpyArray::parse(bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses a whole file: magic, version, header (`{'descr': ..., 'fortran_order': ...,
    /// 'shape': (...)}`), data.
    pub fn parse(bytes: Vec<u8>) -> Result<NpyArray, String> {
        if !bytes.starts_with(MAGIC) || bytes.len() < 10 {
            return Err("not a .npy file (bad magic)".into());
        }
        let (header_len, header_start) = match bytes[6] {
            1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
            2 | 3 if bytes.len() >= 12 => {
                let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
                (len as usize, 12)
            }
            version => return Err(format!("unsupported .npy version {version}")),
        };
        let data_start = header_start + header_len;
        let header = bytes
            .get(header_start..data_start)
            .ok_or("truncated .npy header")?;
        let header = std::str::from_utf8(header).map_err(|_| "the .npy header is not text")?;
        let dtype = match quoted(header_value(header, "descr")?)? {
            "<f4" => Dtype::F32,
            "<f8" => Dtype::F64,
            "<i4" => Dtype::I32,
            "<i8" => Dtype::I64,
            other => {
                return Err(format!(
                    "unsupported .npy dtype '{other}' (use float32, float64, int64 or int32)"
                ))
            }
        };
        if header_value(header, "fortran_order")?.starts_with("True") {
            return Err("Fortran-order .npy arrays are not supported (use C order)".into());
        }
        let shape = parse_shape(header_value(header, "shape")?)?;
        let count = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or("the .npy shape overflows")?;
        let need = count.saturating_mul(dtype.size());
        let have = bytes.len() - data_start;
        if have < need {
            return Err(format!(
                ".npy data truncated: need {need} bytes, have {have}"
            ));
        }
        Ok(NpyArray {
            shape,
            dtype,
            bytes,
            data_start,
        })
    }

    fn data(&self) -> &[u8] {
        let count: usize = self.shape.iter().product();
        &self.bytes[self.data_start..self.data_start + count * self.dtype.size()]
    }

    /// The values as f32 (f64 rounded, integers converted).
    fn floats(&self) -> Vec<f32> {
        let data = self.data();
        match self.dtype {
            Dtype::F32 => decode(data, f32::from_le_bytes),
            Dtype::F64 => decode(data, |b| f64::from_le_bytes(b) as f32),
            Dtype::I32 => decode(data, |b| i32::from_le_bytes(b) as f32),
            Dtype::I64 => decode(data, |b| i64::from_le_bytes(b) as f32),
        }
    }

    /// The values as ids. Float arrays must hold whole numbers below 2^53; the error is the index
    /// and value of the first that is not.
    fn ids(&self) -> Result<Vec<i64>, (usize, f64)> {
        let data = self.data();
        let whole = |values: Vec<f64>| {
            values
                .iter()
                .enumerate()
                .map(|(i, &x)| {
                    if x.fract() == 0.0 && x.abs() < super::MAX_FLOAT_ID {
                        Ok(x as i64)
                    } else {
                        Err((i, x))
                    }
                })
                .collect()
        };
        match self.dtype {
            Dtype::I64 => Ok(decode(data, i64::from_le_bytes)),
            Dtype::I32 => Ok(decode(data, |b| i64::from(i32::from_le_bytes(b)))),
            Dtype::F64 => whole(decode(data, f64::from_le_bytes)),
            Dtype::F32 => whole(decode(data, |b| f64::from(f32::from_le_bytes(b)))),
        }
    }
}

impl Dtype {
    fn size(self) -> usize {
        match self {
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F64 | Dtype::I64 => 8,
        }
    }
}

fn decode<const N: usize, T>(data: &[u8], from_le: impl Fn([u8; N]) -> T) -> Vec<T> {
    data.chunks_exact(N)
        .map(|c| from_le(c.try_into().expect("chunks of N bytes")))
        .collect()
}

/// The text after `'key':` in the header dictionary.
fn header_value<'h>(header: &'h str, key: &str) -> Result<&'h str, String> {
    let at = header
        .find(&format!("'{key}'"))
        .ok_or_else(|| format!("the .npy header has no '{key}'"))?;
    Ok(header[at + key.len() + 2..].trim_start_matches([':', ' ']))
}

/// `'<f4', ...` → `<f4`.
fn quoted(value: &str) -> Result<&str, String> {
    let quote = value.chars().next().filter(|c| matches!(c, '\'' | '"'));
    let quote = quote.ok_or("the .npy descr is not a string")?;
    value[1..]
        .split(quote)
        .next()
        .ok_or_else(|| "the .npy descr is not a string".to_string())
}

/// `(3, 4), ...` → `[3, 4]`; `(5,)` → `[5]`.
fn parse_shape(value: &str) -> Result<Vec<usize>, String> {
    let inner = value
        .strip_prefix('(')
        .and_then(|v| v.split(')').next())
        .ok_or("the .npy shape is not a tuple")?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse().map_err(|_| format!("bad .npy shape entry '{d}'")))
        .collect()
}

/// Whole `.npy` columns, served a batch at a time.
pub struct NpySource {
    columns: Vec<InputColumn>,
    values_per_sample: Vec<usize>,
    rows: usize,
    next_row: usize,
    label: String,
}

impl NpySource {
    /// Reads one file per model input (in the order of `specs`).
    pub fn load(
        files: &[PathBuf],
        specs: &[InputSpec],
        label: &str,
    ) -> Result<NpySource, CliError> {
        let arrays = files
            .iter()
            .map(|f| Ok((NpyArray::read(f)?, f.display().to_string())))
            .collect::<Result<Vec<_>, String>>()
            .map_err(CliError::failed)?;
        NpySource::new(arrays, specs, label)
    }

    /// Checks every (array, file name) against its input's shape and converts it to a column.
    pub fn new(
        arrays: Vec<(NpyArray, String)>,
        specs: &[InputSpec],
        label: &str,
    ) -> Result<NpySource, CliError> {
        let mut rows = None;
        let mut columns = Vec::with_capacity(specs.len());
        for ((array, file), spec) in arrays.iter().zip(specs) {
            let fail =
                |msg: String| CliError::failed(format!("{file}: input '{}': {msg}", spec.name));
            let (n_rows, per_row) = match array.shape.as_slice() {
                [r] => (*r, 1),
                [r, w] => (*r, *w),
                s => {
                    return Err(fail(format!(
                        "expected a 1-D or 2-D array, got shape {s:?}"
                    )))
                }
            };
            let n = spec.values_per_sample;
            let shape_ok = match spec.kind {
                InputKind::Sequence => per_row <= n,
                _ => per_row == n,
            };
            if !shape_ok {
                let want = match spec.kind {
                    InputKind::Dense if n == 1 => "[rows] or [rows, 1]".to_string(),
                    InputKind::Dense => format!("[rows, {n}]"),
                    InputKind::Sparse => "[rows] or [rows, 1]".into(),
                    InputKind::Sequence => format!("[rows, {n}] (max_len)"),
                };
                return Err(fail(format!("shape {:?}, expected {want}", array.shape)));
            }
            match rows {
                None => rows = Some(n_rows),
                Some(r) if r != n_rows => {
                    return Err(fail(format!(
                        "{n_rows} rows, but the other inputs have {r}"
                    )));
                }
                Some(_) => {}
            }
            let column = match spec.kind {
                InputKind::Dense => InputColumn::Floats(array.floats()),
                InputKind::Sparse | InputKind::Sequence => {
                    let ids = array.ids().map_err(|(i, x)| {
                        fail(format!(
                            "row {}: {x} is not an integer id (store ids as int64)",
                            i / per_row.max(1)
                        ))
                    })?;
                    if per_row == n {
                        InputColumn::Ids(ids)
                    } else {
                        // A short sequence array: pad every row.
                        let mut column = InputColumn::Ids(Vec::with_capacity(n_rows * n));
                        for (r, row) in ids.chunks(per_row.max(1)).enumerate().take(n_rows) {
                            spec.push_ids(row, &mut column)
                                .map_err(|e| fail(format!("row {r}: {e}")))?;
                        }
                        column
                    }
                }
            };
            columns.push(column);
        }
        Ok(NpySource {
            columns,
            values_per_sample: specs.iter().map(|s| s.values_per_sample).collect(),
            rows: rows.unwrap_or(0),
            next_row: 0,
            label: label.to_string(),
        })
    }
}

impl RowSource for NpySource {
    fn fill(&mut self, batch: &mut Batch, max: usize) -> Result<usize, CliError> {
        batch.clear();
        let (start, n) = (self.next_row, max.min(self.rows - self.next_row));
        let widths = self.columns.iter().zip(&self.values_per_sample);
        for ((source, &w), column) in widths.zip(&mut batch.columns) {
            column.extend_from(source, start * w..(start + n) * w);
        }
        batch.origins.extend(start as u64..(start + n) as u64);
        self.next_row += n;
        Ok(n)
    }

    fn locate(&self, origin: u64) -> String {
        format!("{} row {origin}", self.label)
    }

    fn progress(&self) -> Option<f64> {
        (self.rows > 0).then(|| self.next_row as f64 / self.rows as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version-1.0 `.npy` file as numpy writes it.
    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        npy_in_order(descr, "False", shape, data)
    }

    fn npy_in_order(descr: &str, fortran: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = MAGIC.to_vec();
        bytes.extend([1, 0]);
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.extend(header.as_bytes());
        bytes.extend(data);
        bytes
    }

    #[test]
    fn reads_the_four_dtypes() {
        let ints: Vec<u8> = [3i64, -1].iter().flat_map(|x| x.to_le_bytes()).collect();
        let a = NpyArray::parse(npy("<i8", "(2,)", &ints)).unwrap();
        assert_eq!((a.shape.clone(), a.ids().unwrap()), (vec![2], vec![3, -1]));
        let ints: Vec<u8> = [7i32, 8, 9, 10]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let a = NpyArray::parse(npy("<i4", "(2, 2)", &ints)).unwrap();
        assert_eq!(
            (a.shape.clone(), a.ids().unwrap()),
            (vec![2, 2], vec![7, 8, 9, 10])
        );
        let floats: Vec<u8> = [0.5f64, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        let a = NpyArray::parse(npy("<f8", "(1, 2)", &floats)).unwrap();
        assert_eq!(a.floats(), [0.5, 2.0]);
        assert_eq!(a.ids(), Err((0, 0.5)));
        let floats: Vec<u8> = [4.0f32].iter().flat_map(|x| x.to_le_bytes()).collect();
        let a = NpyArray::parse(npy("<f4", "(1,)", &floats)).unwrap();
        assert_eq!((a.floats(), a.ids().unwrap()), (vec![4.0], vec![4]));
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        let err = |bytes: Vec<u8>| NpyArray::parse(bytes).err().unwrap();
        assert!(err(b"hello".to_vec()).contains("bad magic"));
        assert!(err(npy("<i8", "(2,)", &[0; 15])).contains("truncated"));
        assert!(err(npy(">i8", "(1,)", &[0; 8])).contains("unsupported .npy dtype '>i8'"));
        assert!(err(npy("<u2", "(1,)", &[0; 2])).contains("unsupported"));
        assert!(err(npy_in_order("<f4", "True", "(1,)", &[0; 4])).contains("Fortran"));
    }
}
