//! Test kit for ple-runtime's tests, benches, fuzz targets and the CLI's tests (never linked into
//! libple): a `.ple` writer independent of the Python one ([`writer`]), synthetic models
//! ([`synth`]), fixture loading (below), a small `.npy` reader ([`npy`]) and the checks the fuzz
//! targets assert ([`fuzz_checks`]).
//!
//! Fixtures are made by tools/make_fixtures.py from the real training libraries (see
//! tests/fixtures/README.txt); nothing here comes from the runtime's own output.

pub mod fuzz_checks;
pub mod npy;
pub mod synth;
pub mod writer;

use std::path::{Path, PathBuf};

use ple::{Input, InputKind, LoadOptions, Model, SimdLevel};

/// The repository's root (this crate lives in crates/testkit).
pub fn repo_root() -> PathBuf {
    // Lexically, not through "..": the AVX-512 emulator's guest has tests/fixtures at the
    // checkout's path but not this crate's directory.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(Path::parent)
        .expect("crates/testkit has a grandparent")
        .to_path_buf()
}

pub fn fixtures_dir() -> PathBuf {
    repo_root().join("tests/fixtures")
}

/// Every fixture directory (one holding a model.ple), sorted by name.
pub fn fixture_dirs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("tests/fixtures exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.ple").is_file())
        .collect();
    v.sort();
    v
}

/// Opens `path` with the kernels of one SIMD level (the tests run every level the CPU has).
pub fn open_at(path: impl AsRef<Path>, level: SimdLevel) -> Model {
    let opts = LoadOptions {
        simd: Some(level),
        ..Default::default()
    };
    let path = path.as_ref();
    Model::open_with(path, &opts).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn name(dir: &Path) -> String {
    dir.file_name().unwrap().to_string_lossy().into_owned()
}

/// One feature's values for the whole batch, owned.
pub enum Column {
    Ids(Vec<i64>),
    Floats(Vec<f32>),
}

impl Column {
    pub fn as_input(&self) -> Input<'_> {
        match self {
            Column::Ids(v) => Input::Ids(v),
            Column::Floats(v) => Input::Floats(v),
        }
    }
    /// The rows `start..end` of this column (`per` values per sample).
    pub fn rows(&self, per: usize, start: usize, end: usize) -> Column {
        match self {
            Column::Ids(v) => Column::Ids(v[start * per..end * per].to_vec()),
            Column::Floats(v) => Column::Floats(v[start * per..end * per].to_vec()),
        }
    }
}

/// Reads `in_<feature>.npy` for every input of `model`; returns the columns and the batch size.
pub fn load_inputs(model: &Model, dir: &Path) -> (Vec<Column>, usize) {
    let mut batch = None;
    let cols = model
        .inputs()
        .iter()
        .map(|f| {
            let path = dir.join(format!("in_{}.npy", f.name));
            let arr = crate::npy::read(&path).unwrap_or_else(|e| panic!("{e}"));
            let b = arr.shape[0];
            assert_eq!(
                *batch.get_or_insert(b),
                b,
                "{}: batch sizes differ",
                path.display()
            );
            match f.kind {
                InputKind::Dense => Column::Floats(arr.to_f32()),
                _ => Column::Ids(
                    arr.to_i64()
                        .unwrap_or_else(|| panic!("{}: ids must be integers", path.display())),
                ),
            }
        })
        .collect();
    (cols, batch.expect("at least one input"))
}

pub fn read_f64(path: &Path) -> Vec<f64> {
    crate::npy::read(path)
        .unwrap_or_else(|e| panic!("{e}"))
        .to_f64()
}

/// `max |ours − ref| / max(1, |ref|)` — the error measure of the issue tracker.
pub fn max_rel_err(ours: &[f32], reference: &[f64]) -> f64 {
    assert_eq!(ours.len(), reference.len(), "length mismatch");
    ours.iter()
        .zip(reference)
        .map(|(&o, &r)| {
            if o.is_nan() || r.is_nan() {
                if o.is_nan() && r.is_nan() {
                    0.0
                } else {
                    f64::INFINITY
                }
            } else {
                (o as f64 - r).abs() / r.abs().max(1.0)
            }
        })
        .fold(0.0, f64::max)
}

/// Scores the whole batch with `model`, returning outputs and gate weights.
pub fn score(model: &Model, cols: &[Column], batch: usize) -> (Vec<f32>, Vec<f32>) {
    let mut session = ple::Session::new(model, batch).expect("session");
    let inputs: Vec<Input> = cols.iter().map(Column::as_input).collect();
    let mut out = vec![0f32; batch * model.output_width()];
    let mut gates = vec![0f32; batch * model.gate_width()];
    session
        .run(&inputs, batch, &mut out, Some(&mut gates))
        .expect("scoring succeeds");
    (out, gates)
}
