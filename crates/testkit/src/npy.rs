//! Minimal reader for NumPy `.npy` files (format versions 1.0–3.0, little-endian,
//! C order), for the dtypes a model takes and returns: `<f4`, `<f8`, `<i8`, `<i4`. Used by the
//! command-line tool and the tests; not on the scoring path.

/// An array read from a `.npy` file.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    I32(Vec<i32>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub data: NpyData,
}

impl NpyArray {
    /// Values as f32 (f64 rounded, integers converted).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            NpyData::F32(v) => v.clone(),
            NpyData::F64(v) => v.iter().map(|&x| x as f32).collect(),
            NpyData::I64(v) => v.iter().map(|&x| x as f32).collect(),
            NpyData::I32(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }
    /// Values as f64.
    pub fn to_f64(&self) -> Vec<f64> {
        match &self.data {
            NpyData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            NpyData::F64(v) => v.clone(),
            NpyData::I64(v) => v.iter().map(|&x| x as f64).collect(),
            NpyData::I32(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }
    /// Integer values as i64; `None` for float arrays.
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        match &self.data {
            NpyData::I64(v) => Some(v.clone()),
            NpyData::I32(v) => Some(v.iter().map(|&x| x as i64).collect()),
            _ => None,
        }
    }
}

/// Parses `.npy` bytes.
pub fn parse(bytes: &[u8]) -> Result<NpyArray, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (bad magic)".into());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let end = start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or("truncated .npy header")?;
    let header = std::str::from_utf8(&bytes[start..end]).map_err(|_| "non-UTF-8 .npy header")?;
    let field = |key: &str| -> Result<&str, String> {
        let at = header
            .find(&format!("'{key}'"))
            .ok_or(format!(".npy header lacks '{key}'"))?;
        let rest = &header[at + key.len() + 2..];
        Ok(rest.trim_start_matches([':', ' ']))
    };
    let descr = field("descr")?;
    let descr = descr.trim_start_matches(['\'', '"']);
    let descr = &descr[..descr.find(['\'', '"']).ok_or("bad descr")?];
    if field("fortran_order")?.starts_with("True") {
        return Err("Fortran-order .npy arrays are not supported (use C order)".into());
    }
    let shape_txt = field("shape")?;
    let shape_txt = &shape_txt
        [shape_txt.find('(').ok_or("bad shape")? + 1..shape_txt.find(')').ok_or("bad shape")?];
    let shape: Vec<usize> = shape_txt
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad shape entry '{s}'"))
        })
        .collect::<Result<_, _>>()?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("shape overflows")?;
    let body = &bytes[end..];
    let need = |size: usize| -> Result<&[u8], String> {
        let n = count.checked_mul(size).ok_or("size overflows")?;
        body.get(..n)
            .ok_or_else(|| format!(".npy data truncated: need {n} bytes, have {}", body.len()))
    };
    let data = match descr {
        "<f4" | "|f4" => NpyData::F32(little_endian(need(4)?, f32::from_le_bytes)),
        "<f8" => NpyData::F64(little_endian(need(8)?, f64::from_le_bytes)),
        "<i8" => NpyData::I64(little_endian(need(8)?, i64::from_le_bytes)),
        "<i4" => NpyData::I32(little_endian(need(4)?, i32::from_le_bytes)),
        d => {
            return Err(format!(
                "unsupported .npy dtype '{d}' (use float32, float64, int64 or int32)"
            ))
        }
    };
    Ok(NpyArray { shape, data })
}

/// Reads a `.npy` file.
pub fn read(path: impl AsRef<std::path::Path>) -> Result<NpyArray, String> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Decodes `bytes` as consecutive little-endian values of `N` bytes each.
fn little_endian<const N: usize, T>(bytes: &[u8], decode: fn([u8; N]) -> T) -> Vec<T> {
    (bytes.chunks_exact(N))
        .map(|c| decode(c.try_into().expect("N bytes")))
        .collect()
}
