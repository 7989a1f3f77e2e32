//! Native side of the comparison benchmark (driven by benches/compare/driver.py).
//!
//! Every timing here runs in this process, single thread, with no Python in the loop:
//! ple (Session::run), tract-onnx (optimized plan with the batch symbol set to the batch size,
//! one reused state) and ONNX Runtime through its C API (the `ort` crate loading
//! libonnxruntime.so from the onnxruntime wheel; 1 intra-op and 1 inter-op thread, sequential,
//! all graph optimizations, inputs and output bound once with an IoBinding).
//!
//! Subcommands (each prints one JSON object per line on stdout):
//!
//!   run --inputs DIR --batches 1,16 [RUNNERS] [--reps 15] [--min-ms 20] [--dump DIR]
//!       RUNNERS: --ple NAME=FILE.ple (repeatable), --tract FILE.onnx, --ort FILE.onnx,
//!       --ort-identity FILE.onnx (with --ort-lib libonnxruntime.so), --bandwidth NAME=BYTES
//!       (repeatable: one read of a buffer of that size per call), --widen NAME=BYTES (one read of
//!       an f16 buffer of that size, widened with vcvtph2ps as the f16 kernels load weights).
//!       --threads N (N >= 2) adds, for every --ple model, NAME-tN (a session on a ple pool of N
//!       threads, default threshold) and, with --ort, ort-tN (ORT with N intra-op threads, its
//!       default spinning) and ort-tN-nospin (session.intra_op.allow_spinning = 0).
//!       Inputs are DIR/b{B}/{input name}.npy. For every batch, every runner first scores once
//!       (outputs written to DUMP/{runner}_b{B}.npy with --dump), then the timed repetitions are
//!       interleaved across runners (rep 1 of every runner, rep 2 of every runner, ...) so slow
//!       drift on a shared machine hits all of them alike. Each repetition loops enough calls to
//!       last >= --min-ms; the reported figure is the median over repetitions of µs per call.
//!   serve --inputs DIR --batch B [RUNNERS] [--min-ms 20] [--dump DIR]
//!       Sets up and calibrates the runners of one batch, prints {"kind": "ready", "runners": [..]},
//!       then answers `rep NAME` on stdin with {"us": µs per call} (one repetition), `report`
//!       with the timing lines, `quit`. The driver uses it to interleave native and Python runs.
//!   bandwidth --bytes N[,N...] [--streams 4] [--reps 15] [--min-ms 20]
//!       Single-core read bandwidth: repeated AVX2 sums over a buffer of N bytes (GB/s, median).
//!   open --model FILE.ple [--reps 15] [--cold]
//!       Model::open latency (median), the resident pages of the model's mapping after open
//!       (from /proc/self/smaps), page faults and the process RSS delta. --cold drops the file
//!       from the page cache (posix_fadvise DONTNEED) before each open.
//!   sessions --model FILE.ple --max-batch 1,16,256,1024 [--count 16]
//!       Bytes each Session::new allocates (counting allocator) vs Session::scratch_bytes, and
//!       the heap / RSS / mapping growth of --count sessions over one model.
//!   make-big --out FILE.ple --table-mib 1024 [--dtype f32|f16]
//!       Writes a criteo-shaped PLE whose 26 embedding tables hold --table-mib MiB in total
//!       (with the test kit's Rust writer and synthetic-model helper).

use ple_testkit as common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use ple::{Input, InputKind, Model, Pool, Session};

// ------------------------------------------------------------------------------------------------
// A counting allocator: bytes currently allocated through Rust's allocator (one relaxed atomic
// add per allocation; ONNX Runtime's own C++ allocations are not counted).

struct Counting;
static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(l.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(l.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE_BYTES.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live_bytes() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

type Res<T> = Result<T, String>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("run") => cmd_run(&Args::parse(&args[1..])),
        Some("serve") => cmd_serve(&Args::parse(&args[1..])),
        Some("bandwidth") => cmd_bandwidth(&Args::parse(&args[1..])),
        Some("open") => cmd_open(&Args::parse(&args[1..])),
        Some("sessions") => cmd_sessions(&Args::parse(&args[1..])),
        Some("make-big") => cmd_make_big(&Args::parse(&args[1..])),
        _ => Err(
            "usage: ple-compare run|serve|bandwidth|open|sessions|make-big ... (see src/main.rs)"
                .into(),
        ),
    };
    if let Err(e) = result {
        eprintln!("ple-compare: {e}");
        std::process::exit(1);
    }
}

// ------------------------------------------------------------------------------------------------
// Arguments: --key value (repeatable) and --flag.

struct Args(BTreeMap<String, Vec<String>>);

impl Args {
    fn parse(v: &[String]) -> Args {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut i = 0;
        while i < v.len() {
            let key = v[i].trim_start_matches("--").to_string();
            if i + 1 < v.len() && !v[i + 1].starts_with("--") {
                m.entry(key).or_default().push(v[i + 1].clone());
                i += 2;
            } else {
                m.entry(key).or_default().push(String::new());
                i += 1;
            }
        }
        Args(m)
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).and_then(|v| v.last()).map(String::as_str)
    }
    fn all(&self, k: &str) -> Vec<&str> {
        self.0
            .get(k)
            .map(|v| v.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }
    fn req(&self, k: &str) -> Res<&str> {
        self.get(k).ok_or_else(|| format!("missing --{k}"))
    }
    fn flag(&self, k: &str) -> bool {
        self.0.contains_key(k)
    }
    fn num<T: std::str::FromStr>(&self, k: &str, default: T) -> Res<T> {
        match self.get(k) {
            None => Ok(default),
            Some(s) => s.parse().map_err(|_| format!("--{k}: bad number {s:?}")),
        }
    }
    fn list(&self, k: &str) -> Res<Vec<usize>> {
        self.req(k)?
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .map_err(|_| format!("--{k}: bad number {s:?}"))
            })
            .collect()
    }
}

// ------------------------------------------------------------------------------------------------
// .npy inputs, through the library's reader (integers as ids, floats as f32).

enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

struct Npy {
    shape: Vec<usize>,
    data: Data,
}

fn read_npy(path: &Path) -> Res<Npy> {
    let a = common::npy::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let data = match a.to_i64() {
        Some(ids) => Data::I64(ids),
        None => Data::F32(a.to_f32()),
    };
    Ok(Npy {
        shape: a.shape,
        data,
    })
}

fn write_npy_f32(path: &Path, shape: &[usize], v: &[f32]) -> Res<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let sh = if dims.len() == 1 {
        format!("{},", dims[0])
    } else {
        dims.join(", ")
    };
    let mut h = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({sh}), }}");
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(path, out).map_err(|e| format!("{}: {e}", path.display()))
}

// ------------------------------------------------------------------------------------------------
// JSON output (flat objects).

struct J(String);

impl J {
    fn new() -> J {
        J(String::from("{"))
    }
    fn sep(&mut self) {
        if self.0.len() > 1 {
            self.0.push_str(", ");
        }
    }
    fn s(mut self, k: &str, v: &str) -> J {
        self.sep();
        let esc = v.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = write!(self.0, "\"{k}\": \"{esc}\"");
        self
    }
    fn n(mut self, k: &str, v: f64) -> J {
        self.sep();
        if v.is_finite() {
            let _ = write!(self.0, "\"{k}\": {v}");
        } else {
            let _ = write!(self.0, "\"{k}\": null");
        }
        self
    }
    fn arr(mut self, k: &str, v: &[f64]) -> J {
        self.sep();
        let items: Vec<String> = v.iter().map(|x| format!("{x:.3}")).collect();
        let _ = write!(self.0, "\"{k}\": [{}]", items.join(", "));
        self
    }
    fn print(mut self) {
        self.0.push('}');
        println!("{}", self.0);
    }
}

// ------------------------------------------------------------------------------------------------
// Timing.

/// One thing to time: `call` scores the whole batch once.
struct Runner<'a> {
    name: String,
    call: Box<dyn FnMut() -> Res<()> + 'a>,
    inner: usize,
    samples: Vec<f64>,
    /// Extra fields for its timing line.
    info: Option<J>,
}

impl<'a> Runner<'a> {
    fn new(name: &str, call: impl FnMut() -> Res<()> + 'a) -> Runner<'a> {
        Runner {
            name: name.to_string(),
            call: Box::new(call),
            inner: 1,
            samples: Vec::new(),
            info: None,
        }
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    s[((s.len() - 1) as f64 * q).round() as usize]
}

/// Warm-up (>= 3 calls and >= 2·min_ms) and calibration of the calls per repetition.
fn calibrate(r: &mut Runner, min_s: f64) -> Res<()> {
    let t = Instant::now();
    let mut calls = 0usize;
    while calls < 3 || t.elapsed().as_secs_f64() < 2.0 * min_s {
        (r.call)()?;
        calls += 1;
    }
    let per = t.elapsed().as_secs_f64() / calls as f64;
    r.inner = ((min_s / per).ceil() as usize).max(1);
    Ok(())
}

fn time_rep(r: &mut Runner) -> Res<()> {
    let t = Instant::now();
    for _ in 0..r.inner {
        (r.call)()?;
    }
    r.samples
        .push(t.elapsed().as_secs_f64() * 1e6 / r.inner as f64);
    Ok(())
}

/// Interleaved repetitions over all runners.
fn time_all(runners: &mut [Runner], reps: usize, min_s: f64) -> Res<()> {
    for r in runners.iter_mut() {
        calibrate(r, min_s)?;
    }
    for _ in 0..reps {
        for r in runners.iter_mut() {
            time_rep(r)?;
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// run

struct Loaded {
    shape: Vec<usize>,
    data: Data,
}

fn load_input(dir: &Path, batch: usize, name: &str) -> Res<Loaded> {
    let p = dir.join(format!("b{batch}")).join(format!("{name}.npy"));
    let a = read_npy(&p)?;
    if a.shape.first() != Some(&batch) {
        return Err(format!(
            "{}: first dim {:?}, expected batch {batch}",
            p.display(),
            a.shape
        ));
    }
    Ok(Loaded {
        shape: a.shape,
        data: a.data,
    })
}

/// Every runner of one batch size, set up (and, with --dump, scored once with outputs written).
/// Also prints one "ple-model" line per .ple model when `describe` is set.
fn setup(a: &Args, batch: usize, describe: bool) -> Res<Vec<Runner<'static>>> {
    let dir = PathBuf::from(a.req("inputs")?);
    let dump = a.get("dump").map(PathBuf::from);
    if let Some(d) = &dump {
        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    let threads = match a.num("threads", 1usize)? {
        1 => None,
        0 => return Err("--threads must be at least 1".into()),
        n => Some(n),
    };
    let dump_to = |name: &str, shape: &[usize], v: &[f32]| -> Res<()> {
        match &dump {
            Some(d) if !v.is_empty() => {
                write_npy_f32(&d.join(format!("{name}_b{batch}.npy")), shape, v)
            }
            _ => Ok(()),
        }
    };
    let mut runners: Vec<Runner<'static>> = Vec::new();

    for spec in a.all("ple") {
        let (name, path) = spec.split_once('=').ok_or("--ple NAME=FILE")?;
        let m = Model::open(path).map_err(|e| format!("{path}: {e}"))?;
        if describe {
            J::new()
                .s("kind", "ple-model")
                .s("name", name)
                .s("simd", m.simd_level().name())
                .n("flops_per_sample", m.flops_per_sample() as f64)
                .n("parameters", m.parameter_count() as f64)
                .n(
                    "scratch_floats_per_sample",
                    m.scratch_floats_per_sample() as f64,
                )
                .print();
        }
        let cols = m
            .inputs()
            .iter()
            .map(|f| {
                let l = load_input(&dir, batch, &f.name)?;
                match (f.kind, &l.data) {
                    (InputKind::Dense, Data::F32(_)) => Ok(l.data),
                    (InputKind::Dense, _) => Err(format!("{}: dense input must be float", f.name)),
                    (_, Data::I64(_)) => Ok(l.data),
                    _ => Err(format!("{}: ids must be integers", f.name)),
                }
            })
            .collect::<Res<Vec<Data>>>()?;
        // Leaked (one batch's inputs per model, for the life of this bench process) so the
        // timed closure holds plain `Input`s and builds nothing per call.
        let cols: &'static [Data] = Box::leak(cols.into_boxed_slice());
        let inputs: Vec<Input<'static>> = cols.iter().map(Data::as_input).collect();
        let mut sessions = vec![(name.to_string(), Session::new(&m, batch))];
        if let Some(n) = threads {
            let pool = Pool::new(n).map_err(|e| e.to_string())?;
            sessions.push((format!("{name}-t{n}"), Session::with_pool(&m, batch, &pool)));
        }
        for (name, session) in sessions {
            let mut session = session.map_err(|e| e.to_string())?;
            let inputs = inputs.clone();
            let mut out = vec![0f32; batch * m.output_width()];
            session
                .run(&inputs, batch, &mut out, None)
                .map_err(|e| e.to_string())?;
            dump_to(&name, &[batch, m.output_width()], &out)?;
            let info = J::new()
                .n("scratch_bytes", session.scratch_bytes() as f64)
                .n("flops", m.flops_per_sample() as f64 * batch as f64)
                .n("threads", session.threads() as f64)
                .s("simd", m.simd_level().name());
            runners.push(Runner {
                name,
                call: Box::new(move || {
                    session
                        .run(&inputs, batch, &mut out, None)
                        .map_err(|e| e.to_string())
                }),
                inner: 1,
                samples: Vec::new(),
                info: Some(info),
            });
        }
    }
    if let Some(path) = a.get("tract") {
        let mut plan = tract_native::Plan::new(path, &dir, batch)?;
        let (shape, out) = plan.run_once()?;
        dump_to("tract", &shape, &out)?;
        runners.push(Runner::new("tract", move || plan.run().map(|_| ())));
    }
    let mut ort_runs = vec![("ort", "ort".to_string(), 1, true)];
    ort_runs.push(("ort-identity", "ort-identity".to_string(), 1, true));
    if let Some(n) = threads {
        ort_runs.push(("ort", format!("ort-t{n}"), n, true));
        ort_runs.push(("ort", format!("ort-t{n}-nospin"), n, false));
    }
    for (flag, name, intra_threads, spinning) in ort_runs {
        if let Some(path) = a.get(flag) {
            let lib = a.req("ort-lib")?;
            let mut bound =
                ort_native::Bound::new(path, lib, &dir, batch, intra_threads, spinning)?;
            let (shape, out) = bound.run_once()?;
            dump_to(&name, &shape, &out)?;
            runners.push(Runner::new(&name, move || bound.run()));
        }
    }
    for spec in a.all("bandwidth") {
        let (name, bytes) = spec.split_once('=').ok_or("--bandwidth NAME=BYTES")?;
        let bytes: usize = bytes.parse().map_err(|_| format!("--bandwidth {spec}"))?;
        runners.push(bandwidth_runner(name, bytes));
    }
    for spec in a.all("widen") {
        let (name, bytes) = spec.split_once('=').ok_or("--widen NAME=BYTES")?;
        let bytes: usize = bytes.parse().map_err(|_| format!("--widen {spec}"))?;
        runners.push(widen_runner(name, bytes));
    }
    Ok(runners)
}

impl Data {
    fn as_input(&self) -> Input<'_> {
        match self {
            Data::F32(v) => Input::Floats(v),
            Data::I64(v) => Input::Ids(v),
        }
    }
}

fn timing_line(r: &Runner, batch: usize) -> J {
    let mut j = J::new()
        .s("kind", "timing")
        .s("runtime", &r.name)
        .n("batch", batch as f64)
        .n("median_us", median(&r.samples))
        .n("p10_us", quantile(&r.samples, 0.1))
        .n("p90_us", quantile(&r.samples, 0.9))
        .n("min_us", quantile(&r.samples, 0.0))
        .n("reps", r.samples.len() as f64)
        .n("calls_per_rep", r.inner as f64);
    if let Some(info) = &r.info {
        let body = info.0.trim_start_matches('{');
        if !body.is_empty() {
            j.sep();
            j.0.push_str(body);
        }
    }
    j.arr("samples_us", &r.samples)
}

/// `run`: every batch in turn, repetitions interleaved across the runners of that batch.
fn cmd_run(a: &Args) -> Res<()> {
    let reps: usize = a.num("reps", 15)?;
    let min_s = a.num::<f64>("min-ms", 20.0)? / 1e3;
    for (i, batch) in a.list("batches")?.into_iter().enumerate() {
        let mut runners = setup(a, batch, i == 0)?;
        time_all(&mut runners, reps, min_s)?;
        for r in &runners {
            timing_line(r, batch).print();
        }
    }
    Ok(())
}

/// `serve`: sets up the runners of one batch, calibrates them and prints a "ready" line; then
/// reads commands on stdin: `rep NAME` times one repetition of that runner and prints
/// {"us": µs per call}; `quit` (or end of input) exits. This lets the driver interleave native
/// and Python runtimes repetition by repetition.
fn cmd_serve(a: &Args) -> Res<()> {
    use std::io::BufRead;
    let batch: usize = a.num("batch", 1)?;
    let min_s = a.num::<f64>("min-ms", 20.0)? / 1e3;
    let mut runners = setup(a, batch, true)?;
    for r in runners.iter_mut() {
        calibrate(r, min_s)?;
    }
    let mut ready = J::new().s("kind", "ready").n("batch", batch as f64);
    let names: Vec<String> = runners.iter().map(|r| format!("\"{}\"", r.name)).collect();
    ready.sep();
    let _ = write!(ready.0, "\"runners\": [{}]", names.join(", "));
    ready.print();
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        let mut it = line.split_whitespace();
        match (it.next(), it.next()) {
            (Some("rep"), Some(name)) => {
                let r = runners
                    .iter_mut()
                    .find(|r| r.name == name)
                    .ok_or_else(|| format!("no runner {name}"))?;
                time_rep(r)?;
                J::new().n("us", *r.samples.last().unwrap()).print();
            }
            (Some("report"), _) => {
                for r in &runners {
                    timing_line(r, batch).print();
                }
                J::new().s("kind", "end").print();
            }
            (Some("quit"), _) | (None, _) => break,
            _ => return Err(format!("serve: unknown command {line:?}")),
        }
        use std::io::Write as _;
        std::io::stdout().flush().map_err(|e| e.to_string())?;
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// tract

mod tract_native {
    use super::{load_input, Data, Res};
    use std::path::Path;
    use tract_onnx::prelude::*;

    type Runnable = Arc<TypedRunnableModel>;

    pub struct Plan {
        state: TypedSimpleState,
        inputs: TVec<TValue>,
    }

    fn e(x: impl std::fmt::Display) -> String {
        format!("tract: {x:#}")
    }

    impl Plan {
        /// Loads the ONNX file, sets its batch symbol to this batch (tract's best case: every
        /// shape known at optimization time) and builds the optimized plan.
        pub fn new(path: &str, dir: &Path, batch: usize) -> Res<Plan> {
            let model = tract_onnx::onnx().model_for_path(path).map_err(e)?;
            let mut values = TVec::new();
            for o in model.input_outlets().map_err(e)? {
                let name = model.node(o.node).name.clone();
                let l = load_input(dir, batch, &name)?;
                let t = match &l.data {
                    Data::F32(v) => Tensor::from_shape::<f32>(&l.shape, v).map_err(e)?,
                    Data::I64(v) => Tensor::from_shape::<i64>(&l.shape, v).map_err(e)?,
                };
                values.push(t.into_tvalue());
            }
            // Typed with the file's symbolic batch axis, then every symbol set to this batch.
            let typed = model.into_typed().map_err(e)?;
            let subs: std::collections::HashMap<Symbol, TDim> = ["batch", "N", "batch_size"]
                .iter()
                .map(|s| (typed.symbols.sym(s), TDim::Val(batch as i64)))
                .collect();
            let plan: Runnable = typed
                .set_symbols(&subs)
                .map_err(e)?
                .into_optimized()
                .map_err(e)?
                .into_runnable()
                .map_err(e)?;
            let state = TypedSimpleState::new(&plan).map_err(e)?;
            Ok(Plan {
                state,
                inputs: values,
            })
        }

        pub fn run(&mut self) -> Res<TVec<TValue>> {
            self.state.run(self.inputs.clone()).map_err(e)
        }

        pub fn run_once(&mut self) -> Res<(Vec<usize>, Vec<f32>)> {
            let out = self.run()?;
            let t = &out[0];
            let v: Vec<f32> = t
                .to_plain_array_view::<f32>()
                .map_err(e)?
                .iter()
                .copied()
                .collect();
            Ok((t.shape().to_vec(), v))
        }
    }
}

// ------------------------------------------------------------------------------------------------
// ONNX Runtime (C API through the `ort` crate, library loaded at run time)

mod ort_native {
    use super::{load_input, Data, Res};
    use ort::environment::Environment;
    use ort::session::builder::GraphOptimizationLevel;
    use ort::session::{IoBinding, Session};
    use ort::value::{DynValue, Tensor};
    use std::path::Path;
    use std::sync::OnceLock;

    fn e(x: impl std::fmt::Display) -> String {
        format!("onnxruntime: {x}")
    }

    static ENV: OnceLock<Result<Environment, String>> = OnceLock::new();

    /// The ORT environment, loading `lib` the first time.
    fn env(lib: &str) -> Res<&'static Environment> {
        ENV.get_or_init(|| {
            ort::init_from(lib)
                .map_err(e)?
                .with_name("ple-compare")
                .build()
                .map_err(e)
        })
        .as_ref()
        .map_err(Clone::clone)
    }

    /// Same options as the Python timings: `intra_threads` intra-op threads (1 unless the
    /// thread comparison asks for more; `spinning` false sets session.intra_op.allow_spinning to
    /// 0) and 1 inter-op thread, sequential execution, all graph optimizations (ORT_ENABLE_ALL).
    fn open(path: &str, lib: &str, intra_threads: usize, spinning: bool) -> Res<Session> {
        Session::builder(env(lib)?)
            .map_err(e)?
            .with_intra_threads(intra_threads)
            .map_err(e)?
            .with_intra_op_spinning(spinning)
            .map_err(e)?
            .with_inter_threads(1)
            .map_err(e)?
            .with_parallel_execution(false)
            .map_err(e)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(e)?
            .commit_from_file(path)
            .map_err(e)
    }

    /// A session with one batch's inputs and (for a [batch, width] f32 output) a preallocated
    /// output bound once in an IoBinding.
    pub struct Bound {
        binding: IoBinding,
        _inputs: Vec<DynValue>,
        out_name: String,
        session: Session,
    }

    impl Bound {
        pub fn new(
            path: &str,
            lib: &str,
            dir: &Path,
            batch: usize,
            intra_threads: usize,
            spinning: bool,
        ) -> Res<Bound> {
            let session = open(path, lib, intra_threads, spinning)?;
            let mut binding = session.create_binding().map_err(e)?;
            let mut held = Vec::new();
            let names: Vec<String> = session
                .inputs()
                .iter()
                .map(|i| i.name().to_string())
                .collect();
            for name in names {
                let l = load_input(dir, batch, &name)?;
                let v: DynValue = match l.data {
                    Data::F32(v) => Tensor::from_array((l.shape.clone(), v))
                        .map_err(e)?
                        .into_dyn(),
                    Data::I64(v) => Tensor::from_array((l.shape.clone(), v))
                        .map_err(e)?
                        .into_dyn(),
                };
                binding.bind_input(&name, &v).map_err(e)?;
                held.push(v);
            }
            let out_name = session.outputs()[0].name().to_string();
            // Anything but a [batch, width] f32 output (the identity model's) goes to ORT's
            // CPU allocator.
            let width = match session.outputs()[0].dtype() {
                ort::value::ValueType::Tensor {
                    ty: ort::value::TensorElementType::Float32,
                    shape,
                    ..
                } if shape.len() == 2 && shape[1] > 0 => Some(shape[1] as usize),
                _ => None,
            };
            match width {
                Some(w) => {
                    let out = Tensor::<f32>::new(session.allocator(), [batch, w]).map_err(e)?;
                    binding.bind_output(&out_name, out).map_err(e)?;
                }
                None => {
                    let info = session.allocator().memory_info().clone();
                    binding.bind_output_to_device(&out_name, &info).map_err(e)?;
                }
            }
            Ok(Bound {
                binding,
                _inputs: held,
                out_name,
                session,
            })
        }

        pub fn run(&mut self) -> Res<()> {
            self.session.run_binding(&self.binding).map_err(e)?;
            Ok(())
        }

        pub fn run_once(&mut self) -> Res<(Vec<usize>, Vec<f32>)> {
            let out = self.session.run_binding(&self.binding).map_err(e)?;
            let v = out.get(&self.out_name).ok_or("no output")?;
            match v.try_extract_tensor::<f32>() {
                Ok((shape, data)) => {
                    Ok((shape.iter().map(|&d| d as usize).collect(), data.to_vec()))
                }
                Err(_) => Ok((vec![0], Vec::new())),
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// bandwidth

/// A buffer element the bandwidth sums can read: 16 values per step as two f32 vectors.
#[cfg(target_arch = "x86_64")]
trait Row16: Copy {
    /// # Safety
    /// `p` has 16 readable elements; AVX2 and F16C are enabled in the calling function.
    unsafe fn load(p: *const Self) -> (std::arch::x86_64::__m256, std::arch::x86_64::__m256);
    fn value(self) -> f32;
}

#[cfg(target_arch = "x86_64")]
impl Row16 for f32 {
    #[inline(always)]
    unsafe fn load(p: *const f32) -> (std::arch::x86_64::__m256, std::arch::x86_64::__m256) {
        use std::arch::x86_64::*;
        // SAFETY: 16 readable floats (caller).
        unsafe { (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))) }
    }
    fn value(self) -> f32 {
        self
    }
}

/// binary16, widened with two `vcvtph2ps` per step exactly as ple's f16 GEMV loads a panel row:
/// the conversion throughput, not the memory, can be what limits an f16 kernel at batch 1.
#[cfg(target_arch = "x86_64")]
impl Row16 for u16 {
    #[inline(always)]
    unsafe fn load(p: *const u16) -> (std::arch::x86_64::__m256, std::arch::x86_64::__m256) {
        use std::arch::x86_64::*;
        // SAFETY: 16 readable halves (caller); unaligned 16-byte loads.
        unsafe {
            (
                _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)),
                _mm256_cvtph_ps(_mm_loadu_si128(p.add(8) as *const __m128i)),
            )
        }
    }
    fn value(self) -> f32 {
        ple::kernels::f16_to_f32(self)
    }
}

/// Sums `v` reading `S` equal parts of it side by side (the way a GEMV kernel streams several
/// weight panels at once), 16 values per part per step, into 2·S independent register
/// accumulators (S is a constant so the accumulators stay in registers).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn sum_avx2<const S: usize, T: Row16>(v: &[T]) -> f32 {
    use std::arch::x86_64::*;
    let part = v.len() / S / 16 * 16;
    let p = v.as_ptr();
    let mut lo = [_mm256_setzero_ps(); S];
    let mut hi = [_mm256_setzero_ps(); S];
    let mut i = 0;
    while i < part {
        for s in 0..S {
            // SAFETY: s·part + i + 16 <= S·part <= v.len(); features enabled by the attribute.
            let (a, b) = unsafe { T::load(p.add(s * part + i)) };
            lo[s] = _mm256_add_ps(lo[s], a);
            hi[s] = _mm256_add_ps(hi[s], b);
        }
        i += 16;
    }
    let mut t = _mm256_setzero_ps();
    for s in 0..S {
        t = _mm256_add_ps(t, _mm256_add_ps(lo[s], hi[s]));
    }
    let mut out = [0f32; 8];
    // SAFETY: out has 8 floats.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), t) };
    out.iter().sum::<f32>() + v[S * part..].iter().map(|x| x.value()).sum::<f32>()
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_f16c() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("f16c")
}

fn sum(v: &[f32], streams: usize) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_f16c() {
        // SAFETY: AVX2 and F16C checked just above.
        return unsafe {
            match streams {
                1 => sum_avx2::<1, f32>(v),
                2 => sum_avx2::<2, f32>(v),
                8 => sum_avx2::<8, f32>(v),
                _ => sum_avx2::<4, f32>(v),
            }
        };
    }
    let _ = streams;
    let mut acc = [0f32; 16];
    for c in v.chunks_exact(16) {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + v[v.len() / 16 * 16..].iter().sum::<f32>()
}

/// A runner that widens and sums an f16 buffer of `bytes` once per call (4 streams, like the
/// GEMV's 4 panels), or reads it as f32 where the CPU lacks F16C.
fn widen_runner(name: &str, bytes: usize) -> Runner<'static> {
    let n = (bytes / 2).max(64);
    let buf: Vec<u16> = (0..n).map(|i| 0x3C00 + (i % 7) as u16).collect();
    let mut r = Runner::new(name, move || {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("f16c")
        {
            // SAFETY: AVX2 and F16C checked just above.
            std::hint::black_box(unsafe {
                sum_avx2::<BW_STREAMS, u16>(std::hint::black_box(&buf))
            });
            return Ok(());
        }
        let s: u32 = std::hint::black_box(&buf).iter().map(|&h| h as u32).sum();
        std::hint::black_box(s);
        Ok(())
    });
    r.info = Some(
        J::new()
            .n("bytes", (n * 2) as f64)
            .n("streams", BW_STREAMS as f64),
    );
    r
}

/// Streams used by the bandwidth measurement (see `bandwidth --streams`).
const BW_STREAMS: usize = 4;

/// A runner that reads a buffer of `bytes` once per call.
fn bandwidth_runner(name: &str, bytes: usize) -> Runner<'static> {
    bandwidth_runner_with(name, bytes, BW_STREAMS)
}

fn bandwidth_runner_with(name: &str, bytes: usize, streams: usize) -> Runner<'static> {
    let n = (bytes / 4).max(64);
    let buf: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let mut r = Runner::new(name, move || {
        std::hint::black_box(sum(std::hint::black_box(&buf), streams));
        Ok(())
    });
    r.info = Some(
        J::new()
            .n("bytes", (n * 4) as f64)
            .n("streams", streams as f64),
    );
    r
}

fn cmd_bandwidth(a: &Args) -> Res<()> {
    let reps: usize = a.num("reps", 15)?;
    let min_s = a.num::<f64>("min-ms", 20.0)? / 1e3;
    let streams: usize = a.num("streams", BW_STREAMS)?;
    for bytes in a.list("bytes")? {
        let mut r = bandwidth_runner_with("bandwidth", bytes, streams);
        time_all(std::slice::from_mut(&mut r), reps, min_s)?;
        let n = (bytes / 4).max(64) * 4;
        let us = median(&r.samples);
        let best = quantile(&r.samples, 0.0);
        J::new()
            .s("kind", "bandwidth")
            .n("bytes", n as f64)
            .n("streams", streams as f64)
            .n("median_us", us)
            .n("gb_per_s", n as f64 / us / 1e3)
            .n("best_gb_per_s", n as f64 / best / 1e3)
            .print();
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// memory: open latency, mapping residency, sessions

fn status_kib(field: &str) -> usize {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// (size KiB, Rss KiB) summed over the mappings of `path` in /proc/self/smaps.
fn mapping_kib(path: &Path) -> (usize, usize) {
    let want = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let want = want.to_string_lossy().to_string();
    let s = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let (mut size, mut rss) = (0, 0);
    let mut inside = false;
    for l in s.lines() {
        let first = l.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            inside = l.trim_end().ends_with(&want);
            continue;
        }
        if inside {
            let v = || {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|x| x.parse::<usize>().ok())
                    .unwrap_or(0)
            };
            if l.starts_with("Size:") {
                size += v();
            } else if l.starts_with("Rss:") {
                rss += v();
            }
        }
    }
    (size, rss)
}

fn drop_cache(path: &Path) {
    if let Ok(f) = std::fs::File::open(path) {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid fd; DONTNEED only drops clean cached pages.
        unsafe {
            libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
    }
}

/// (minor, major) page faults of this process so far.
fn faults() -> (i64, i64) {
    // SAFETY: getrusage writes into the struct we pass.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        (u.ru_minflt as i64, u.ru_majflt as i64)
    }
}

/// `data_offset` from the .ple header: the bytes of header + metadata (+ padding).
fn data_offset(path: &Path) -> u64 {
    use std::io::Read;
    let mut h = [0u8; 64];
    match std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut h)) {
        Ok(()) => u64::from_le_bytes(h[40..48].try_into().unwrap()),
        Err(_) => 0,
    }
}

fn cmd_open(a: &Args) -> Res<()> {
    let path = PathBuf::from(a.req("model")?);
    let reps: usize = a.num("reps", 15)?;
    let cold = a.flag("cold");
    let file_size = std::fs::metadata(&path).map_err(|e| e.to_string())?.len();
    let mut times = Vec::new();
    let mut detail = None;
    for i in 0..reps + 1 {
        if cold {
            drop_cache(&path);
        }
        let rss0 = status_kib("VmRSS:");
        let heap0 = live_bytes();
        let f0 = faults();
        let t = Instant::now();
        let m = Model::open(&path).map_err(|e| e.to_string())?;
        let dt = t.elapsed().as_secs_f64() * 1e6;
        let f1 = faults();
        let rss1 = status_kib("VmRSS:");
        let heap1 = live_bytes();
        let (map_kib, map_rss_kib) = mapping_kib(&path);
        if i > 0 || reps == 0 {
            times.push(dt);
        }
        if detail.is_none() {
            detail = Some((
                rss1 as f64 - rss0 as f64,
                map_kib,
                map_rss_kib,
                heap1 - heap0,
                m.parameter_count(),
                (f1.0 - f0.0, f1.1 - f0.1),
            ));
        }
        drop(m);
    }
    let (rss_delta, map_kib, map_rss_kib, heap, params, (minflt, majflt)) = detail.unwrap();
    J::new()
        .s("kind", "open")
        .n("cold", cold as u8 as f64)
        .n("file_bytes", file_size as f64)
        .n("parameters", params as f64)
        .n("median_us", median(&times))
        .n("min_us", quantile(&times, 0.0))
        .n("max_us", quantile(&times, 1.0))
        .n("rss_delta_kib", rss_delta)
        .n("mapping_kib", map_kib as f64)
        .n("mapping_resident_kib", map_rss_kib as f64)
        .n("heap_bytes", heap as f64)
        .n("minor_faults", minflt as f64)
        .n("major_faults", majflt as f64)
        .n("header_meta_bytes", data_offset(&path) as f64)
        .n(
            "page_kib",
            (unsafe { libc::sysconf(libc::_SC_PAGESIZE) } / 1024) as f64,
        )
        .print();
    Ok(())
}

fn cmd_sessions(a: &Args) -> Res<()> {
    let path = PathBuf::from(a.req("model")?);
    let count: usize = a.num("count", 16)?;
    let m = Model::open(&path).map_err(|e| e.to_string())?;
    for mb in a.list("max-batch")? {
        let h0 = live_bytes();
        let s = Session::new(&m, mb).map_err(|e| e.to_string())?;
        let h1 = live_bytes();
        J::new()
            .s("kind", "session")
            .n("max_batch", mb as f64)
            .n("scratch_bytes", s.scratch_bytes() as f64)
            .n("allocated_bytes", (h1 - h0) as f64)
            .n(
                "scratch_floats_per_sample",
                m.scratch_floats_per_sample() as f64,
            )
            .print();
    }
    // `count` sessions, each scoring one batch (so its scratch pages are really touched).
    let mb = 256;
    let cols = common::synth::inputs(&m, mb, 7);
    let inputs: Vec<Input> = cols.iter().map(common::Column::as_input).collect();
    let mut out = vec![0f32; mb * m.output_width()];
    // Warm the mapping first with one session, so later growth is per-session only.
    {
        let mut s = Session::new(&m, mb).map_err(|e| e.to_string())?;
        s.run(&inputs, mb, &mut out, None)
            .map_err(|e| e.to_string())?;
    }
    let mut sessions = Vec::with_capacity(count);
    let rss0 = status_kib("VmRSS:");
    let anon0 = status_kib("RssAnon:");
    let (_, map0) = mapping_kib(&path);
    let h0 = live_bytes();
    for _ in 0..count {
        let mut s = Session::new(&m, mb).map_err(|e| e.to_string())?;
        s.run(&inputs, mb, &mut out, None)
            .map_err(|e| e.to_string())?;
        sessions.push(s);
    }
    let h1 = live_bytes();
    let rss1 = status_kib("VmRSS:");
    let anon1 = status_kib("RssAnon:");
    let (_, map1) = mapping_kib(&path);
    let scratch: usize = sessions.iter().map(|s| s.scratch_bytes()).sum();
    J::new()
        .s("kind", "sessions")
        .n("count", count as f64)
        .n("max_batch", mb as f64)
        .n("scratch_bytes_total", scratch as f64)
        .n("heap_bytes_delta", (h1 - h0) as f64)
        .n("rss_delta_kib", rss1 as f64 - rss0 as f64)
        .n("anon_rss_delta_kib", anon1 as f64 - anon0 as f64)
        .n("mapping_resident_delta_kib", map1 as f64 - map0 as f64)
        .print();
    Ok(())
}

fn cmd_make_big(a: &Args) -> Res<()> {
    let out = PathBuf::from(a.req("out")?);
    let mib: usize = a.num("table-mib", 1024)?;
    let dtype = match a.get("dtype").unwrap_or("f32") {
        "f16" => ple::DType::F16,
        _ => ple::DType::F32,
    };
    let (sparse, dim) = (26usize, 16usize);
    let vocab = mib * (1 << 20) / (sparse * dim * dtype.size() as usize);
    // The criteo PLE's layers (two tasks, two levels of one task and one shared expert: the
    // default shape) over 26 large tables.
    let shape = common::synth::Shape {
        expert_dims: vec![256, 128],
        tower_dims: vec![64],
        dense_width: 13,
        sparse,
        sequences: 0,
        dim,
        vocab,
        max_len: 1,
        dtype,
        ..Default::default()
    };
    let t = Instant::now();
    let bytes = common::synth::ple(&shape, 11).to_bytes();
    let tmp = out.with_extension("tmp");
    std::fs::write(&tmp, &bytes).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, &out).map_err(|e| e.to_string())?;
    J::new()
        .s("kind", "make-big")
        .s("path", &out.to_string_lossy())
        .n("file_bytes", bytes.len() as f64)
        .n(
            "table_bytes",
            (sparse * vocab * dim * dtype.size() as usize) as f64,
        )
        .n("vocab_per_table", vocab as f64)
        .n("seconds", t.elapsed().as_secs_f64())
        .print();
    Ok(())
}
