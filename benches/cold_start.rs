//! Cold start of a model with multi-GiB tables (docs/PERFORMANCE.md, "Cold start"): what the
//! first requests cost after a deploy, with and without warm-up, access advice and fault batching.
//! Not run in CI (it writes and reads gigabytes).
//!
//!     cargo bench --bench cold_start -- FILE.ple [--make-gib 4] [--reps 3] [--calls 100]
//!
//! `--make-gib N` first writes a criteo-shaped PLE (the benchmark's `make-big` shape: 26 f32
//! tables of dimension 16, N GiB in all) to FILE.ple if it does not exist. Before each cold
//! measurement the page cache is emptied (`echo 1 > /proc/sys/vm/drop_caches` where permitted,
//! else `posix_fadvise(DONTNEED)` on the file, which the output says).
//!
//! `COLD_START_ONLY=disk,prefault,latency,overhead,memory,hugepages` runs only the sections named. Prints, as
//! `name: figures` lines:
//! - `disk`: sequential read of the file with read() (the bandwidth a warm-up can reach);
//! - `prefault/*`: bringing the whole file into a mapping: ple's warm-up, MAP_POPULATE, a touch
//!   pass alone, MADV_WILLNEED then touch;
//! - `latency/*`: per batch (1, 256) and mode, open time, warm-up time, then the median, p99 and
//!   max of the first `--calls` calls with fresh random ids, and of the next `--calls` (steady).
//!   Modes: `before` (the kernel's readahead on the tables, no fault batching: the library before
//!   this measurement), `random` (tables advised random), `fault-ahead` (random + fault batching:
//!   the default), `warm` (the default, warmed before the first call), `warm-no-batching`
//!   (what the clock reads of fault batching cost a resident model), `cached` (the file in the
//!   page cache, a fresh mapping, no warm-up);
//! - `overhead/*`: fault batching on against off on a warmed model (paired calls), i.e. what its
//!   clock reads cost when everything is resident;
//! - `memory/*`: RSS (file-backed and anonymous) and the model's pages in RAM after a cold open,
//!   mapped without and with warm-up and lock, and read into memory (lock needs RLIMIT_MEMLOCK
//!   above the file's size, or CAP_IPC_LOCK);
//! - `hugepages/*`: random 64-byte row reads over an anonymous copy of the file on 4 KiB pages
//!   against transparent huge pages (what MADV_HUGEPAGE buys the read-into-memory mode).

use ple_testkit as common;

use std::io::Read;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::synth::{self, Shape};
use common::Column;
use ple::{Input, LoadOptions, Model, Session};

struct Args {
    file: PathBuf,
    make_gib: Option<usize>,
    reps: usize,
    calls: usize,
}

fn args() -> Args {
    let mut a = Args {
        file: PathBuf::new(),
        make_gib: None,
        reps: 3,
        calls: 100,
    };
    let mut it = std::env::args().skip(1).filter(|s| s != "--bench");
    while let Some(s) = it.next() {
        let mut num = || it.next().and_then(|v| v.parse().ok()).expect("a number");
        match s.as_str() {
            "--make-gib" => a.make_gib = Some(num()),
            "--reps" => a.reps = num(),
            "--calls" => a.calls = num(),
            _ => a.file = PathBuf::from(s),
        }
    }
    assert!(
        !a.file.as_os_str().is_empty(),
        "usage: cold_start FILE.ple [--make-gib N]"
    );
    a
}

fn make(path: &Path, gib: usize) {
    let (sparse, dim) = (26usize, 16usize);
    let vocab = (gib << 30) / (sparse * dim * 4);
    let shape = Shape {
        expert_dims: vec![256, 128],
        tower_dims: vec![64],
        dense_width: 13,
        sparse,
        sequences: 0,
        dim,
        vocab,
        max_len: 1,
        ..Default::default()
    };
    let t = Instant::now();
    let bytes = synth::ple(&shape, 11).to_bytes();
    std::fs::write(path, &bytes).unwrap();
    println!(
        "made {}: {} bytes, 26 tables x {vocab} rows x 16 f32, {:.1} s",
        path.display(),
        bytes.len(),
        t.elapsed().as_secs_f64()
    );
}

/// Empties the page cache of the file: all of it where permitted, else the file's pages.
fn drop_cache(path: &Path) -> &'static str {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    f.sync_all().unwrap();
    // SAFETY: a valid descriptor; DONTNEED only drops clean cached pages.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    match std::fs::write("/proc/sys/vm/drop_caches", "1") {
        Ok(()) => "drop_caches",
        Err(_) => "fadvise",
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn gbps(bytes: u64, ms: f64) -> f64 {
    bytes as f64 / ms / 1e6
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// (median, p99, max) of `v`.
fn summary(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let at = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), at(1.0))
}

fn disk(path: &Path, reps: usize) {
    let len = std::fs::metadata(path).unwrap().len();
    let mut times = Vec::new();
    let mut how = "";
    for _ in 0..reps {
        how = drop_cache(path);
        let t = Instant::now();
        let mut f = std::fs::File::open(path).unwrap();
        let mut buf = vec![0u8; 8 << 20];
        while f.read(&mut buf).unwrap() > 0 {}
        times.push(ms(t));
    }
    let m = median(&mut times);
    println!(
        "disk: sequential read() {:.0} ms = {:.2} GB/s (median of {reps}, cache emptied by {how})",
        m,
        gbps(len, m)
    );
}

/// Maps `path` with `flags` (MAP_POPULATE or 0).
fn map(path: &Path, flags: i32) -> (*mut libc::c_void, usize) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    // SAFETY: a read-only private mapping of an open file; unmapped by the caller.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED | flags,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    (p, len)
}

fn touch(p: *mut libc::c_void, len: usize) {
    let mut sum = 0u8;
    for at in (0..len).step_by(4096) {
        // SAFETY: inside the mapping.
        sum ^= unsafe { std::ptr::read_volatile(p.cast::<u8>().add(at)) };
    }
    std::hint::black_box(sum);
}

/// Touches the mapped file 8 MiB at a time, asking the kernel (MADV_WILLNEED) for the `window`
/// bytes ahead of the touching.
fn sliding(path: &Path, window: usize) {
    let (a, l) = map(path, 0);
    let chunk = 8 << 20;
    let mut asked = 0;
    let mut done = 0;
    while done < l {
        while asked < l && asked < done + window {
            let n = chunk.min(l - asked);
            // SAFETY: inside the mapping (page-aligned: chunk is a multiple of the page size).
            unsafe { libc::madvise(a.cast::<u8>().add(asked).cast(), n, libc::MADV_WILLNEED) };
            asked += n;
        }
        let n = chunk.min(l - done);
        // SAFETY: inside the mapping.
        touch(unsafe { a.cast::<u8>().add(done).cast() }, n);
        done += n;
    }
    // SAFETY: the mapping just made.
    unsafe { libc::munmap(a, l) };
}

fn prefault(path: &Path, reps: usize) {
    let len = std::fs::metadata(path).unwrap().len();
    type Strategy = fn(&Path);
    let strategies: [(&str, Strategy); 8] = [
        ("read() 8 MiB at a time (the disk's sequential rate)", |p| {
            let mut f = std::fs::File::open(p).unwrap();
            let mut buf = vec![0u8; 8 << 20];
            while f.read(&mut buf).unwrap() > 0 {}
        }),
        (
            "ple warm (MADV_WILLNEED 256 MiB ahead + MADV_POPULATE_READ per 8 MiB)",
            |p| {
                let m = Model::open(p).unwrap();
                m.warm(|_, _| ControlFlow::Continue(())).unwrap();
            },
        ),
        ("MAP_POPULATE", |p| {
            let (a, l) = map(p, libc::MAP_POPULATE);
            // SAFETY: the mapping just made.
            unsafe { libc::munmap(a, l) };
        }),
        ("touch alone", |p| {
            let (a, l) = map(p, 0);
            touch(a, l);
            // SAFETY: the mapping just made.
            unsafe { libc::munmap(a, l) };
        }),
        ("MADV_WILLNEED 256 MiB ahead + touch", |p| {
            sliding(p, 256 << 20)
        }),
        ("MADV_POPULATE_READ per 8 MiB, no WILLNEED", |p| {
            let (a, l) = map(p, 0);
            for at in (0..l).step_by(8 << 20) {
                let n = (8 << 20).min(l - at);
                // SAFETY: inside the mapping.
                unsafe {
                    libc::madvise(a.cast::<u8>().add(at).cast(), n, libc::MADV_POPULATE_READ)
                };
            }
            // SAFETY: the mapping just made.
            unsafe { libc::munmap(a, l) };
        }),
        ("MADV_WILLNEED 1 GiB ahead + touch", |p| sliding(p, 1 << 30)),
        ("MADV_WILLNEED whole file, then touch", |p| {
            let (a, l) = map(p, 0);
            // SAFETY: the mapping just made.
            unsafe { libc::madvise(a, l, libc::MADV_WILLNEED) };
            touch(a, l);
            // SAFETY: the mapping just made.
            unsafe { libc::munmap(a, l) };
        }),
    ];
    let mut times = vec![Vec::new(); strategies.len()];
    // Alternated, so slow drift of the shared machine hits every strategy alike.
    for _ in 0..reps {
        for (i, (_, f)) in strategies.iter().enumerate() {
            drop_cache(path);
            let t = Instant::now();
            f(path);
            times[i].push(ms(t));
        }
    }
    for ((name, _), t) in strategies.iter().zip(&mut times) {
        let m = median(t);
        println!(
            "prefault/{name}: {m:.0} ms = {:.2} GB/s (median of {reps})",
            gbps(len, m)
        );
    }
}

/// Fresh random ids (call `call`'s own seed) for `batch` samples.
fn inputs(model: &Model, batch: usize, call: u64) -> Vec<Column> {
    synth::inputs(model, batch, 1000 + call)
}

struct Run {
    open_ms: f64,
    warm_ms: f64,
    /// (median, p99, max) of the first calls and of the next as many.
    first: (f64, f64, f64),
    steady: (f64, f64, f64),
}

fn run_mode(path: &Path, mode: &str, batch: usize, calls: usize, seed: u64) -> Run {
    let opts = LoadOptions {
        table_readahead: mode == "before",
        fault_ahead: !matches!(mode, "before" | "random" | "warm-no-batching"),
        ..Default::default()
    };
    if mode != "cached" {
        drop_cache(path);
    } else {
        // The whole file in the page cache, then a fresh mapping.
        let m = Model::open(path).unwrap();
        m.warm(|_, _| ControlFlow::Continue(())).unwrap();
    }
    let t = Instant::now();
    let model = Model::open_with(path, &opts).unwrap();
    let open_ms = ms(t);
    let mut warm_ms = 0.0;
    if mode.starts_with("warm") {
        let t = Instant::now();
        model.warm(|_, _| ControlFlow::Continue(())).unwrap();
        warm_ms = ms(t);
    }
    let mut session = Session::new(&model, batch).unwrap();
    let all: Vec<Vec<Column>> = (0..2 * calls as u64)
        .map(|c| inputs(&model, batch, seed * 100_000 + c))
        .collect();
    let mut out = vec![0f32; batch * model.output_width()];
    let mut lat = Vec::new();
    for cols in &all {
        let ins: Vec<Input> = cols.iter().map(Column::as_input).collect();
        let t = Instant::now();
        session.run(&ins, batch, &mut out, None).unwrap();
        lat.push(ms(t));
    }
    let steady = lat.split_off(calls);
    Run {
        open_ms,
        warm_ms,
        first: summary(&lat),
        steady: summary(&steady),
    }
}

fn latency(path: &Path, reps: usize, calls: usize) {
    let modes = [
        "before",
        "random",
        "fault-ahead",
        "warm",
        "warm-no-batching",
        "cached",
    ];
    // COLD_START_MODES=warm,before... and COLD_START_BATCHES=1,256 narrow the run.
    let chosen = std::env::var("COLD_START_MODES").unwrap_or_default();
    let modes: Vec<&str> = modes
        .into_iter()
        .filter(|m| chosen.is_empty() || chosen.split(',').any(|c| c == *m))
        .collect();
    let batches: Vec<usize> = std::env::var("COLD_START_BATCHES")
        .unwrap_or_else(|_| "1,256".into())
        .split(',')
        .filter_map(|b| b.parse().ok())
        .collect();
    for batch in batches {
        let mut runs: Vec<Vec<Run>> = modes.iter().map(|_| Vec::new()).collect();
        for rep in 0..reps {
            for (i, mode) in modes.iter().enumerate() {
                runs[i].push(run_mode(path, mode, batch, calls, rep as u64));
            }
        }
        for (mode, rs) in modes.iter().zip(&runs) {
            let med = |f: &dyn Fn(&Run) -> f64| median(&mut rs.iter().map(f).collect::<Vec<_>>());
            println!(
                "latency/b{batch}/{mode}: open {:.1} ms, warm {:.0} ms; first {calls} calls: \
                 median {:.3} ms, p99 {:.3} ms, max {:.3} ms; next {calls}: median {:.3} ms, \
                 p99 {:.3} ms (medians over {reps} runs)",
                med(&|r| r.open_ms),
                med(&|r| r.warm_ms),
                med(&|r| r.first.0),
                med(&|r| r.first.1),
                med(&|r| r.first.2),
                med(&|r| r.steady.0),
                med(&|r| r.steady.1),
            );
        }
    }
}

/// Random row gathers (26 rows of 64 bytes per sample, as the criteo model's lookups) over an
/// anonymous copy of the file, backed by 4 KiB pages (MADV_NOHUGEPAGE) or by transparent huge
/// pages (MADV_HUGEPAGE): what huge pages buy the read-into-memory mode on random lookups.
fn hugepages(path: &Path, reps: usize) {
    let len = std::fs::metadata(path).unwrap().len() as usize;
    let gathers = 1 << 20;
    let mut results = Vec::new();
    for (name, advice) in [
        ("4 KiB pages (MADV_NOHUGEPAGE)", libc::MADV_NOHUGEPAGE),
        ("huge pages (MADV_HUGEPAGE)", libc::MADV_HUGEPAGE),
    ] {
        // SAFETY: a fresh private anonymous mapping, unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        // SAFETY: the mapping just made; advice before the first write decides the backing.
        unsafe { libc::madvise(p, len, advice) };
        // SAFETY: `len` writable bytes.
        let buf = unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len) };
        let mut f = std::fs::File::open(path).unwrap();
        f.read_exact(buf).unwrap();
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let rows = len / 64;
        let mut times = Vec::new();
        for _ in 0..reps {
            let t = Instant::now();
            let mut sum = 0u64;
            for _ in 0..gathers {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let at = (rng % rows as u64) as usize * 64;
                let row: &[u8; 64] = buf[at..at + 64].try_into().unwrap();
                sum = sum.wrapping_add(u64::from_le_bytes(row[..8].try_into().unwrap()));
                sum = sum.wrapping_add(u64::from_le_bytes(row[56..].try_into().unwrap()));
            }
            std::hint::black_box(sum);
            times.push(t.elapsed().as_secs_f64() * 1e9 / gathers as f64);
        }
        let huge_kib = std::fs::read_to_string("/proc/self/smaps_rollup")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("AnonHugePages:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .unwrap_or(0);
        results.push((name, median(&mut times), huge_kib));
        // SAFETY: the mapping made above, no longer used.
        unsafe { libc::munmap(p, len) };
    }
    for (name, ns, huge) in results {
        println!(
            "hugepages/{name}: {ns:.1} ns per random 64-byte row (median of {reps} x {gathers}; \
             AnonHugePages {} MiB)",
            huge / 1024
        );
    }
}

/// What fault batching's clock reads cost a resident model: two warmed models, fault batching on
/// and off, called alternately with the same fresh inputs (paired), per batch; the median of the
/// per-pair ratios.
fn overhead(path: &Path, calls: usize) {
    let open = |fault_ahead| {
        let opts = LoadOptions {
            warm: true,
            fault_ahead,
            ..Default::default()
        };
        Model::open_with(path, &opts).unwrap()
    };
    let (on, off) = (open(true), open(false));
    for batch in [1usize, 256] {
        let mut s_on = Session::new(&on, batch).unwrap();
        let mut s_off = Session::new(&off, batch).unwrap();
        let mut out = vec![0f32; batch * on.output_width()];
        let (mut t_on, mut t_off, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        for c in 0..calls as u64 {
            let cols = inputs(&on, batch, 7_000_000 + c);
            let ins: Vec<Input> = cols.iter().map(Column::as_input).collect();
            let mut time = |s: &mut Session| {
                let t = Instant::now();
                s.run(&ins, batch, &mut out, None).unwrap();
                ms(t)
            };
            let (a, b) = if c % 2 == 0 {
                let a = time(&mut s_on);
                (a, time(&mut s_off))
            } else {
                let b = time(&mut s_off);
                (time(&mut s_on), b)
            };
            t_on.push(a);
            t_off.push(b);
            ratio.push(a / b);
        }
        println!(
            "overhead/b{batch}: fault batching on {:.4} ms, off {:.4} ms (medians of {calls} \
             paired calls); on/off median ratio {:.3}",
            median(&mut t_on),
            median(&mut t_off),
            median(&mut ratio)
        );
    }
}

/// Resident memory of this process by kind, from /proc/self/status (KiB): (file-backed, anon).
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let get = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    (get("RssFile:"), get("RssAnon:"))
}

/// RSS and page-cache use after opening the file cold with each option, and what is locked.
fn memory(path: &Path) {
    for (name, opts) in [
        ("mapped, no warm-up", LoadOptions::default()),
        (
            "mapped, warm",
            LoadOptions {
                warm: true,
                ..Default::default()
            },
        ),
        (
            "mapped, warm + lock",
            LoadOptions {
                lock: true,
                ..Default::default()
            },
        ),
        (
            "read into memory",
            LoadOptions {
                read_into_memory: true,
                ..Default::default()
            },
        ),
    ] {
        drop_cache(path);
        let before = rss_kib();
        let t = Instant::now();
        let m = match Model::open_with(path, &opts) {
            Ok(m) => m,
            Err(e) => {
                println!("memory/{name}: {e}");
                continue;
            }
        };
        let open_ms = ms(t);
        let after = rss_kib();
        let r = m.residency().unwrap();
        let locked = std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("VmLck:"))
            .map(|l| l.trim().to_string())
            .unwrap_or_default();
        println!(
            "memory/{name}: open {open_ms:.0} ms; RSS +{} MiB file-backed, +{} MiB anonymous; \
             model pages in RAM {} MiB of {} MiB; {locked}",
            (after.0.saturating_sub(before.0)) / 1024,
            (after.1.saturating_sub(before.1)) / 1024,
            r.resident_bytes >> 20,
            r.total_bytes >> 20
        );
    }
}

fn main() {
    let a = args();
    if let Some(gib) = a.make_gib {
        if !a.file.exists() {
            make(&a.file, gib);
        }
    }
    println!(
        "{}: {} bytes",
        a.file.display(),
        std::fs::metadata(&a.file).unwrap().len()
    );
    let only = std::env::var("COLD_START_ONLY").unwrap_or_default();
    if only.is_empty() || only.contains("disk") {
        disk(&a.file, a.reps);
    }
    if only.is_empty() || only.contains("prefault") {
        prefault(&a.file, a.reps);
    }
    if only.is_empty() || only.contains("latency") {
        latency(&a.file, a.reps, a.calls);
    }
    if only.is_empty() || only.contains("overhead") {
        overhead(&a.file, 10 * a.calls);
    }
    if only.is_empty() || only.contains("memory") {
        memory(&a.file);
    }
    if only.is_empty() || only.contains("hugepages") {
        hugepages(&a.file, a.reps);
    }
}
