//! Warm-up, locking, residency and table access advice (LoadOptions::warm / lock /
//! table_readahead, Model::warm / residency / is_locked) on a synthetic model with 8 MiB of
//! tables, written to a temporary file and dropped from the page cache (fdatasync +
//! posix_fadvise(DONTNEED)) so that it starts cold. The refusal of a lock is tested in a child
//! process whose RLIMIT_MEMLOCK is lowered to 64 KiB (and which loses CAP_IPC_LOCK when run as
//! root).
#![cfg(target_os = "linux")]

use ple_testkit as common;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use common::synth::{self, Shape};
use common::Column;
use ple::{Error, LoadOptions, Model};

/// A model file in the temporary directory, removed when dropped.
struct TempModel(PathBuf);

impl Drop for TempModel {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl std::ops::Deref for TempModel {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempModel {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

/// A file of its own for test `tag`: 4 tables of 16384 x 32 f32 (2 MiB each).
fn big_file(tag: &str) -> TempModel {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    let bytes = BYTES.get_or_init(|| {
        let shape = Shape {
            sparse: 3,
            sequences: 1,
            dim: 32,
            vocab: 16384,
            ..Shape::default()
        };
        synth::ple(&shape, 7).to_bytes()
    });
    let path = std::env::temp_dir().join(format!("ple-warm-{}-{tag}.ple", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    TempModel(path)
}

/// Asks the kernel to drop the file's pages from the page cache (none may be mapped).
fn drop_from_page_cache(path: &Path) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    f.sync_all().unwrap();
    // SAFETY: a valid open descriptor; fadvise only changes the page cache.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0, "posix_fadvise(DONTNEED)");
}

fn scores(model: &Model, cols: &[Column], batch: usize) -> Vec<f32> {
    common::score(model, cols, batch).0
}

#[test]
fn warm_brings_a_cold_file_into_memory_and_reports_progress() {
    let path = &big_file("progress");
    drop_from_page_cache(path);
    let model = Model::open(path).unwrap();
    let cold = model.residency().unwrap();
    assert_eq!(cold.total_bytes, model.file_size());
    assert_eq!(cold.table_bytes, 4 * 16384 * 32 * 4);
    // Header and metadata were read at open; the tables were not.
    assert!(
        cold.table_resident_bytes < cold.table_bytes / 4,
        "tables already resident before warming: {cold:?}"
    );
    let mut calls = Vec::new();
    model
        .warm(|done, total| {
            calls.push((done, total));
            ControlFlow::Continue(())
        })
        .unwrap();
    let warm = model.residency().unwrap();
    assert_eq!(warm.resident_bytes, warm.total_bytes, "{warm:?}");
    assert_eq!(warm.table_resident_bytes, warm.table_bytes, "{warm:?}");
    let total = model.file_size();
    assert_eq!(calls.first(), Some(&(0, total)));
    assert_eq!(calls.last(), Some(&(total, total)));
    assert!(calls.windows(2).all(|w| w[0].0 < w[1].0), "{calls:?}");
}

#[test]
fn warm_stops_when_progress_says_so() {
    let path = big_file("cancel");
    let model = Model::open(&*path).unwrap();
    let mut calls = 0;
    let e = model
        .warm(|_, _| {
            calls += 1;
            if calls == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap_err();
    assert!(matches!(e, Error::Cancelled), "{e}");
    assert_eq!(calls, 2);
    // The model is still whole.
    model.warm(|_, _| ControlFlow::Continue(())).unwrap();
}

#[test]
fn open_options_warm_lock_and_readahead_keep_the_scores() {
    let path = &big_file("options");
    let plain = Model::open(path).unwrap();
    let cols = synth::inputs(&plain, 64, 3);
    let expected = scores(&plain, &cols, 64);
    // Its pages stay mapped while it lives, and mapped pages are not dropped from the cache.
    drop(plain);
    for (warm, lock, table_readahead, read_into_memory) in [
        (true, false, false, false),
        (false, false, true, false),
        (true, false, false, true),
    ] {
        drop_from_page_cache(path);
        let opts = LoadOptions {
            warm,
            lock,
            table_readahead,
            read_into_memory,
            ..Default::default()
        };
        let m = Model::open_with(path, &opts).unwrap();
        let r = m.residency().unwrap();
        if warm || read_into_memory {
            assert_eq!(r.resident_bytes, r.total_bytes, "{opts:?}: {r:?}");
        }
        assert!(!m.is_locked());
        assert_eq!(scores(&m, &cols, 64), expected, "{opts:?}");
    }
}

/// A lock within RLIMIT_MEMLOCK (the quickstart model is 23 KiB; the default limit is 64 KiB or
/// more) succeeds, for a mapped model and one read into memory.
#[test]
fn lock_within_the_limit_succeeds() {
    let path = common::repo_root().join("examples/models/quickstart.ple");
    for read_into_memory in [false, true] {
        let opts = LoadOptions {
            lock: true,
            read_into_memory,
            ..Default::default()
        };
        let m = Model::open_with(&path, &opts).unwrap();
        assert!(m.is_locked());
        let r = m.residency().unwrap();
        assert_eq!(r.resident_bytes, r.total_bytes);
    }
}

/// Runs `lock_refused_in_child` in a child process whose RLIMIT_MEMLOCK is 64 KiB and which
/// cannot regain CAP_IPC_LOCK (dropped from its bounding set before exec, when run as root).
#[test]
fn lock_refusal_names_rlimit_memlock() {
    use std::os::unix::process::CommandExt;
    let path = big_file("refusal");
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "lock_refused_in_child",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("PLE_WARM_LOCK_CHILD", &*path);
    // SAFETY: between fork and exec the child calls only setrlimit and prctl, which are
    // async-signal-safe system calls, and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 64 << 10,
                rlim_max: 64 << 10,
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Fails without CAP_SETPCAP (not root): then there is no CAP_IPC_LOCK to drop.
            const CAP_IPC_LOCK: libc::c_ulong = 14; // linux/capability.h
            libc::prctl(libc::PR_CAPBSET_DROP, CAP_IPC_LOCK, 0, 0, 0);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("lock refused as expected"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Only does something in the child `lock_refusal_names_rlimit_memlock` starts.
#[test]
fn lock_refused_in_child() {
    let Some(path) = std::env::var_os("PLE_WARM_LOCK_CHILD") else {
        return;
    };
    let opts = LoadOptions {
        lock: true,
        ..Default::default()
    };
    let e = Model::open_with(&path, &opts).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Lock(_)), "{msg}");
    assert!(
        msg.contains("RLIMIT_MEMLOCK is 65536 bytes"),
        "the message must name the limit: {msg}"
    );
    // Read into memory: the same refusal, and the buffer is freed cleanly.
    let opts = LoadOptions {
        lock: true,
        read_into_memory: true,
        ..Default::default()
    };
    let msg = Model::open_with(&path, &opts).unwrap_err().to_string();
    assert!(msg.contains("RLIMIT_MEMLOCK"), "{msg}");
    // Without locking the same file opens.
    Model::open(&path).unwrap();
    println!("lock refused as expected: {msg}");
}

/// Warm-up on one thread while others score with the same model: every score stays exact.
#[test]
fn warm_runs_while_other_threads_score() {
    let path = &big_file("threads");
    let model = Model::open(path).unwrap();
    let cols = Arc::new(synth::inputs(&model, 32, 11));
    let expected = Arc::new(scores(&model, &cols, 32));
    drop_from_page_cache(path);
    let stop = Arc::new(AtomicBool::new(false));
    let scorers: Vec<_> = (0..2)
        .map(|_| {
            let (model, cols, expected, stop) =
                (model.clone(), cols.clone(), expected.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut calls = 0;
                while !stop.load(Ordering::Relaxed) || calls < 20 {
                    assert_eq!(scores(&model, &cols, 32), *expected);
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    for _ in 0..3 {
        model.warm(|_, _| ControlFlow::Continue(())).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for s in scorers {
        assert!(s.join().unwrap() >= 20);
    }
}

/// The tables of a mapped model are advised random access (the kernel marks their mapping "rr" in
/// /proc/self/smaps), unless `table_readahead` is set; warming restores the advice.
#[test]
fn tables_are_advised_random_unless_readahead_is_asked_for() {
    let path = &big_file("advice");
    let random_mappings = |_alive: &Model| {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let name = path.to_str().unwrap();
        // Each mapping: a header line ("start-end perms offset dev inode path"), then fields, the
        // last of which is "VmFlags: ...".
        let mut in_file = false;
        let mut random = 0;
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                if in_file && flags.split_whitespace().any(|f| f == "rr") {
                    random += 1;
                }
            } else if first.contains('-')
                && first.split('-').all(|h| u64::from_str_radix(h, 16).is_ok())
            {
                in_file = line.ends_with(name);
            }
        }
        random
    };
    let m = Model::open(path).unwrap();
    assert!(
        random_mappings(&m) >= 1,
        "no table mapping is advised random"
    );
    m.warm(|_, _| ControlFlow::Continue(())).unwrap();
    assert!(random_mappings(&m) >= 1, "warming lost the random advice");
    drop(m);
    let opts = LoadOptions {
        table_readahead: true,
        ..Default::default()
    };
    let m = Model::open_with(path, &opts).unwrap();
    assert_eq!(random_mappings(&m), 0);
}

/// Scoring a cold file with fault batching (the default: on a disk, the first cold lookup of a
/// call makes it request every row of the call) gives the scores of scoring without it, at
/// batch 1 and over several tiles, sparse and sequence inputs alike.
#[test]
fn fault_batching_keeps_the_scores() {
    let path = &big_file("fault-ahead");
    for batch in [1, 300] {
        let cols = {
            let m = Model::open(path).unwrap();
            synth::inputs(&m, batch, 17 + batch as u64)
        };
        let plain = LoadOptions {
            fault_ahead: false,
            ..Default::default()
        };
        drop_from_page_cache(path);
        let expected = scores(&Model::open_with(path, &plain).unwrap(), &cols, batch);
        drop_from_page_cache(path);
        let got = scores(&Model::open(path).unwrap(), &cols, batch);
        assert_eq!(got, expected, "batch {batch}");
    }
}

/// A mapped file truncated after the open: warming it is refused before any page is read
/// (reading past the new end would crash the process with SIGBUS).
#[test]
fn warm_refuses_a_truncated_file() {
    let path = &big_file("truncated");
    let model = Model::open(path).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(4096)
        .unwrap();
    let e = model.warm(|_, _| ControlFlow::Continue(())).unwrap_err();
    assert!(e.to_string().contains("truncated to 4096 bytes"), "{e}");
    // Residency only asks the kernel about the mapping: it reads nothing.
    let r = model.residency().unwrap();
    assert_eq!(r.total_bytes, model.file_size());
}
