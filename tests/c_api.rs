//! The C ABI tested from C and C++: the examples (examples/c, examples/cpp) and the C tests
//! (tests/c) are compiled with `-Wall -Wextra -Wpedantic -Werror` and AddressSanitizer +
//! UndefinedBehaviorSanitizer, linked against the static library, run, and their outputs checked
//! against the Rust API. Plus Rust tests of the `extern "C"` functions themselves (no allocation
//! on the scoring path, failures included; misaligned buffers) and an optional valgrind run.
//!
//! Needs a C and a C++ compiler (`CC` / `CXX`, default `cc` / `c++`) with the sanitizer runtimes:
//! a missing one fails these tests (it does not skip them). `PLE_C_TESTS_NO_SANITIZERS=1` builds
//! without sanitizers, for toolchains that lack them (it says so loudly).
//!
//! The static library: `cargo test` compiles the library with all its crate types, so the
//! `libple.a` this test links sits next to the test executable (`target/<profile>/deps/`), made
//! by the same compilation as the rlib the test itself links. The test checks that both are from
//! the same build and fails (asking for `cargo build`) if not.
#![cfg(target_os = "linux")]

use ple_testkit as common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ffi::{c_char, CStr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use common::{fixture_dirs, load_inputs, name, Column};
use ple::ffi::*;
use ple::{Input, InputKind, Model, Session};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn quickstart() -> PathBuf {
    root().join("examples/models/quickstart.ple")
}

// ---- toolchain --------------------------------------------------------------------------------

struct Toolchain {
    cc: String,
    cxx: String,
    lib: PathBuf,
    out_dir: PathBuf,
    sanitize: bool,
    detect_leaks: bool,
}

fn toolchain() -> &'static Toolchain {
    static T: OnceLock<Toolchain> = OnceLock::new();
    T.get_or_init(|| {
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
        for c in [&cc, &cxx] {
            let ok = Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success());
            assert!(
                ok,
                "no working compiler `{c}`: the C API tests need a C and a C++ compiler \
                 (install gcc and g++, or set CC / CXX)"
            );
        }
        let out_dir = scratch_dir();
        let lib = staticlib();
        let sanitize = std::env::var_os("PLE_C_TESTS_NO_SANITIZERS").is_none();
        let mut t = Toolchain {
            cc,
            cxx,
            lib,
            out_dir,
            sanitize,
            detect_leaks: false,
        };
        if !sanitize {
            eprintln!("WARNING: PLE_C_TESTS_NO_SANITIZERS is set: C tests run WITHOUT ASan/UBSan");
        } else {
            t.detect_leaks = leak_sanitizer_works(&t);
            if !t.detect_leaks {
                eprintln!(
                    "NOTE: LeakSanitizer does not work here (ptrace restrictions?): the C tests \
                     run with ASAN_OPTIONS=detect_leaks=0; leaks are checked by valgrind only"
                );
            }
        }
        t
    })
}

/// `target/tmp/c_api-<pid>`: a directory of this process's own, so that concurrent `cargo test`
/// runs do not overwrite each other's programs; those of finished processes are removed.
fn scratch_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    if let Ok(entries) = std::fs::read_dir(tmp) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("c_api-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    let dir = tmp.join(format!("c_api-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The `libple.a` of this very build (see the module comment).
fn staticlib() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let lib = deps.join("libple.a");
    let rlib = deps.join("libple.rlib");
    assert!(
        lib.is_file(),
        "{} does not exist: build the library with `cargo build` (crate-type staticlib)",
        lib.display()
    );
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(a), Some(r)) = (mtime(&lib), mtime(&rlib)) {
        let skew = a
            .duration_since(r)
            .or_else(|e| Ok::<_, ()>(e.duration()))
            .unwrap();
        assert!(
            skew < Duration::from_secs(120),
            "{} and {} come from different builds; run `cargo build` and retry",
            lib.display(),
            rlib.display()
        );
    }
    lib
}

fn leak_sanitizer_works(t: &Toolchain) -> bool {
    let src = t.out_dir.join("leak_probe.c");
    std::fs::write(
        &src,
        "#include <stdlib.h>\nint main(void) { void *volatile p = malloc(33); p = 0; (void)p; return 0; }\n",
    )
    .unwrap();
    let exe = t.out_dir.join("leak_probe");
    let built = Command::new(&t.cc)
        .args(["-fsanitize=address", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("run the C compiler");
    assert!(
        built.status.success(),
        "the C compiler cannot build with -fsanitize=address (install libasan, or set \
         PLE_C_TESTS_NO_SANITIZERS=1 to test without sanitizers):\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let run = Command::new(&exe)
        .env("ASAN_OPTIONS", "detect_leaks=1")
        .output()
        .unwrap();
    String::from_utf8_lossy(&run.stderr).contains("LeakSanitizer: detected memory leaks")
}

enum Lang {
    C,
    Cxx,
}

/// Compiles `sources` into `out_dir/name` (sanitizers unless `plain`) and links the staticlib.
fn build(name: &str, sources: &[&str], lang: Lang, plain: bool) -> PathBuf {
    let t = toolchain();
    let exe = t.out_dir.join(name);
    let (compiler, std) = match lang {
        Lang::C => (&t.cc, "-std=c11"),
        Lang::Cxx => (&t.cxx, "-std=c++17"),
    };
    let mut cmd = Command::new(compiler);
    cmd.args([
        std,
        "-Wall",
        "-Wextra",
        "-Wpedantic",
        "-Werror",
        "-g",
        "-O1",
    ])
    .arg("-I")
    .arg(root().join("include"))
    .arg("-I")
    .arg(root().join("examples/cpp"));
    if t.sanitize && !plain {
        cmd.args([
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all",
            "-fno-omit-frame-pointer",
        ]);
    }
    for s in sources {
        cmd.arg(root().join(s));
    }
    cmd.arg(&t.lib)
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&exe);
    let out = cmd.output().expect("run the compiler");
    assert!(
        out.status.success(),
        "compiling {sources:?} failed:\n{:?}\n{}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// Runs `exe` (from the repository root) and fails with its output unless it exits 0.
fn run(exe: &Path, args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
    run_with(exe, args, |_| {})
}

/// `run`, with the command adjusted by `configure` first.
fn run_with(
    exe: &Path,
    args: &[&dyn AsRef<std::ffi::OsStr>],
    configure: impl FnOnce(&mut Command),
) -> String {
    let t = toolchain();
    let mut cmd = Command::new(exe);
    configure(&mut cmd);
    cmd.current_dir(root())
        .env(
            "ASAN_OPTIONS",
            format!(
                "detect_leaks={}:halt_on_error=1:abort_on_error=0",
                t.detect_leaks as u8
            ),
        )
        .env("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1");
    for a in args {
        cmd.arg(a.as_ref());
    }
    let out: Output = cmd.output().expect("run the test program");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    if !stderr.is_empty() {
        eprintln!("{}: stderr:\n{stderr}", exe.display());
    }
    stdout
}

// ---- the same synthetic inputs as examples/c/score.c -----------------------------------------

fn synthetic(model: &Model, batch: usize) -> Vec<Column> {
    model
        .inputs()
        .iter()
        .enumerate()
        .map(|(j, f)| {
            let per = f.values_per_sample();
            let idx = (0..batch).flat_map(move |s| (0..per).map(move |p| (s, p)));
            match f.kind {
                InputKind::Dense => Column::Floats(
                    idx.map(|(s, p)| ((13 * s + 7 * j + 3 * p) % 17) as f32 / 16.0 - 0.5)
                        .collect(),
                ),
                _ => Column::Ids(
                    idx.map(|(s, p)| ((7 * s + 3 * j + 5 * p + 1) % f.vocab()) as i64)
                        .collect(),
                ),
            }
        })
        .collect()
}

/// Parses score.c's "sample S: name[e]=v ..." lines into one row per sample.
fn parse_scores(stdout: &str) -> Vec<Vec<f32>> {
    stdout
        .lines()
        .filter(|l| l.starts_with("sample "))
        .map(|l| {
            l.split_whitespace()
                .skip(2)
                .map(|kv| kv.rsplit('=').next().unwrap().parse::<f32>().unwrap())
                .collect()
        })
        .collect()
}

// ---- C and C++ programs -----------------------------------------------------------------------

#[test]
fn c_status_walks_every_status() {
    let exe = build("status", &["tests/c/status.c"], Lang::C, false);
    let tmp = toolchain().out_dir.join("status_files");
    std::fs::create_dir_all(&tmp).unwrap();
    let dense = root().join("tests/fixtures/dense_ple/model.ple");
    let out = run(&exe, &[&quickstart(), &dense, &tmp]);
    print!("{out}");
    assert!(out.contains(", 0 failures"), "{out}");
    assert!(out.contains("statuses walked: 15 of 21"), "{out}");
    assert!(
        out.contains(&format!(
            "version {} number {}",
            env!("CARGO_PKG_VERSION"),
            PLE_VERSION_NUMBER
        )),
        "{out}"
    );
}

/// Special files refused, 1 GiB non-models refused cheaply, in-place writes noticed
/// (tests/c/hardening.c; docs/ROBUSTNESS.md).
#[test]
fn c_hardening_files() {
    let exe = build("hardening", &["tests/c/hardening.c"], Lang::C, false);
    let tmp = toolchain().out_dir.join("hardening_files");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = run(&exe, &[&quickstart(), &tmp]);
    print!("{out}");
    assert!(out.contains(", 0 failures"), "{out}");
}

/// Pools from C: bit-identical scores on ple's pool and on a pthread executor, several threads
/// sharing one pool, handles freed in any order, a broken executor, argument errors, an idle
/// pool's CPU (tests/c/pool.c).
#[test]
fn c_pools_score_like_one_thread() {
    let exe = build("pool", &["tests/c/pool.c"], Lang::C, false);
    let out = run(&exe, &[&quickstart()]);
    print!("{out}");
    assert!(out.contains(", 0 failures"), "{out}");
}

/// Ragged sequence columns from C (tests/c/ragged.c): bit-identical to the padded form on one
/// thread and on a pool, and every malformed column refused with its status and a message naming
/// the input and the sample, the outputs untouched.
#[test]
fn c_ragged_columns_score_like_padded() {
    let exe = build("ragged", &["tests/c/ragged.c"], Lang::C, false);
    let out = run(&exe, &[&quickstart()]);
    print!("{out}");
    assert!(
        out.contains("bit-identical, batches 0..150, 1 and 2 threads: yes"),
        "{out}"
    );
    assert!(out.contains(", 0 failures"), "{out}");
}

/// Warm-up, locking and residency from C (tests/c/warm.c), on a synthetic model with 8 MiB of
/// tables; then the lock refused, in a run whose RLIMIT_MEMLOCK is 64 KiB (and which cannot regain
/// CAP_IPC_LOCK when run as root: dropped from its bounding set before exec).
#[test]
fn c_warm_lock_and_residency() {
    use std::os::unix::process::CommandExt;
    let exe = build("warm", &["tests/c/warm.c"], Lang::C, false);
    let shape = common::synth::Shape {
        sparse: 3,
        sequences: 1,
        dim: 32,
        vocab: 16384,
        ..Default::default()
    };
    let path = toolchain().out_dir.join("warm_model.ple");
    std::fs::write(&path, common::synth::ple(&shape, 5).to_bytes()).unwrap();
    let out = run(&exe, &[&path]);
    print!("{out}");
    assert!(out.contains(", 0 failures"), "{out}");
    let out = run_with(&exe, &[&path, &"refused"], |cmd| {
        // SAFETY: between fork and exec the child calls only setrlimit and prctl
        // (async-signal-safe system calls) and allocates nothing.
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
            })
        };
    });
    print!("{out}");
    assert!(
        out.contains(", 0 failures") && out.contains("lock refused"),
        "{out}"
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn c_example_score_matches_rust() {
    let exe = build("score", &["examples/c/score.c"], Lang::C, false);
    let mut models = vec![quickstart()];
    models.extend(fixture_dirs().into_iter().map(|d| d.join("model.ple")));
    for path in models {
        let batch = 6;
        let out = run(&exe, &[&path, &batch.to_string()]);
        let c_scores = parse_scores(&out);

        let model = Model::open(&path).unwrap();
        let cols = synthetic(&model, batch);
        let inputs: Vec<Input> = cols.iter().map(Column::as_input).collect();
        let mut rust = vec![0f32; batch * model.output_width()];
        Session::new(&model, batch)
            .unwrap()
            .run(&inputs, batch, &mut rust, None)
            .unwrap();
        let rust_rows: Vec<Vec<f32>> = rust
            .chunks(model.output_width())
            .map(<[f32]>::to_vec)
            .collect();
        // %.9g round-trips an f32 exactly: the C API must give the very same numbers.
        assert_eq!(c_scores, rust_rows, "{}:\n{out}", path.display());
        if path == quickstart() {
            print!("{out}");
        }
    }
}

#[test]
fn c_fixtures_by_name_in_chunks_match_rust() {
    let exe = build("score_files", &["tests/c/score_files.c"], Lang::C, false);
    let dirs = fixture_dirs();
    assert!(!dirs.is_empty(), "no fixtures in tests/fixtures");
    for dir in dirs {
        for file in ["model.ple", "model_f16.ple"] {
            let path = dir.join(file);
            if !path.is_file() {
                continue;
            }
            let model = Model::open(&path).unwrap();
            let (cols, batch) = load_inputs(&model, &dir);
            let work = toolchain().out_dir.join(format!("{}_{file}", name(&dir)));
            std::fs::create_dir_all(&work).unwrap();
            for (f, c) in model.inputs().iter().zip(&cols) {
                let bytes: Vec<u8> = match c {
                    Column::Ids(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    Column::Floats(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                };
                std::fs::write(work.join(format!("in_{}.bin", f.name)), bytes).unwrap();
            }
            run(&exe, &[&path, &work, &batch.to_string(), &"16", &work]);
            let read = |n: &str| -> Vec<f32> {
                std::fs::read(work.join(n))
                    .unwrap()
                    .chunks(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect()
            };
            let (out, gates) = common::score(&model, &cols, batch);
            let (c_out, c_gates) = (read("out.bin"), read("gates.bin"));
            let close = |a: &[f32], b: &[f32]| {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|(x, y)| (x - y).abs() <= 1e-6 * y.abs().max(1.0))
            };
            assert!(close(&c_out, &out), "{}: outputs differ", path.display());
            assert!(close(&c_gates, &gates), "{}: gates differ", path.display());
        }
    }
}

#[test]
fn cpp_server_example_threads_agree() {
    let exe = build("server", &["examples/cpp/server.cpp"], Lang::Cxx, false);
    let out = run(&exe, &[&quickstart(), &"3", &"0.5", &"32"]);
    print!("{out}");
    assert!(out.contains("mismatches: 0, errors: 0"), "{out}");
}

#[test]
fn cpp_hot_reload_example_switches_models() {
    let exe = build(
        "hot_reload",
        &["examples/cpp/hot_reload.cpp"],
        Lang::Cxx,
        false,
    );
    // From the quickstart model to a different one (other inputs and outputs).
    let next = root().join("tests/fixtures/rechub_ple2/model.ple");
    let out = run(&exe, &[&quickstart(), &next, &"3", &"0.5"]);
    print!("{out}");
    assert!(out.contains("hot reload ok"), "{out}");
}

#[test]
fn cpp_wrapper_errors_and_lifetimes() {
    let exe = build("wrapper", &["tests/c/wrapper.cpp"], Lang::Cxx, false);
    let out = run(&exe, &[&quickstart()]);
    print!("{out}");
    assert!(out.contains(", 0 failures"), "{out}");
}

/// Compiles `source` (C or C++ of the given standard) against the headers into an object file
/// (not `-fsyntax-only`: GCC reports `warn_unused_result` after the front end): the compiler's
/// output and whether it succeeded.
fn compile_only(name: &str, lang: Lang, std: &str, source: &str, extra: &[&str]) -> Output {
    let t = toolchain();
    let (compiler, ext) = match lang {
        Lang::C => (&t.cc, "c"),
        Lang::Cxx => (&t.cxx, "cpp"),
    };
    let src = t.out_dir.join(format!("{name}.{ext}"));
    std::fs::write(&src, source).unwrap();
    Command::new(compiler)
        .arg(format!("-std={std}"))
        .args(["-c", "-Wall", "-Wextra", "-Wpedantic", "-Werror"])
        .args(extra)
        .arg("-I")
        .arg(root().join("include"))
        .arg(&src)
        .arg("-o")
        .arg(t.out_dir.join(format!("{name}.o")))
        .output()
        .expect("run the compiler")
}

/// `ple::ids` / `ple::floats` of a temporary vector would leave the column dangling: it must not
/// compile, and fail for the right reason (the deleted overload); the same call on a named vector
/// compiles.
#[test]
fn cpp_wrapper_refuses_a_temporary_vector() {
    let program = |arg: &str| {
        format!(
            "#include \"ple.hpp\"\n\
             int main() {{\n\
                 std::vector<int64_t> named{{1, 2}};\n\
                 std::vector<float> prices{{0.5f}};\n\
                 (void)named; (void)prices;\n\
                 ple_column c = {arg};\n\
                 return c.len == 2 ? 0 : 1;\n\
             }}\n"
        )
    };
    for (name, call) in [
        ("ids_named", "ple::ids(named, \"user_id\")"),
        ("floats_named", "ple::floats(prices)"),
    ] {
        let out = compile_only(name, Lang::Cxx, "c++17", &program(call), &[]);
        assert!(
            out.status.success(),
            "{call} must compile:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for (name, call, function) in [
        (
            "ids_temporary",
            "ple::ids(std::vector<int64_t>{1, 2}, \"user_id\")",
            "ids",
        ),
        (
            "floats_temporary",
            "ple::floats(std::vector<float>{0.5f})",
            "floats",
        ),
        ("ids_moved", "ple::ids(std::move(named))", "ids"),
    ] {
        let out = compile_only(name, Lang::Cxx, "c++17", &program(call), &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{call} compiled, but must not");
        // GCC: "use of deleted function", clang: "call to deleted function".
        assert!(
            err.contains("deleted function") && err.contains(function),
            "{call} failed for another reason than the deleted overload:\n{err}"
        );
    }
}

/// `PLE_MUST_USE` warns of an ignored status where the compiler can mark it (C++17, C23), and a
/// cast to void silences it there and everywhere else, as ple.h documents; defining
/// `PLE_MUST_USE` before the include overrides it.
#[test]
fn must_use_is_silenced_by_a_void_cast() {
    let program = |call: &str| {
        format!(
            "#include \"ple.h\"\n\
             int main(void) {{\n\
                 const ple_model *m = 0;\n\
                 {call};\n\
                 return 0;\n\
             }}\n"
        )
    };
    // Clang's warn_unused_result is silenced by a cast, so clang marks every standard.
    let clang = |lang: &Lang| {
        let t = toolchain();
        let cc = if matches!(lang, Lang::C) {
            &t.cc
        } else {
            &t.cxx
        };
        Command::new(cc)
            .arg("--version")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("clang"))
    };
    let ignored = "ple_model_open(\"x.ple\", 0, &m)";
    let cast = "(void)ple_model_open(\"x.ple\", 0, &m)";
    for (lang, std, warns) in [
        (Lang::Cxx, "c++17", true),
        (Lang::C, "c2x", true),
        (Lang::C, "c11", false),
        (Lang::Cxx, "c++14", false),
    ] {
        let name = format!("must_use_{std}");
        let is_c = matches!(lang, Lang::C);
        let again = || if is_c { Lang::C } else { Lang::Cxx };
        let out = compile_only(&format!("{name}_cast"), again(), std, &program(cast), &[]);
        assert!(
            out.status.success(),
            "{std}: a (void) cast must silence PLE_MUST_USE:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = compile_only(
            &format!("{name}_ignored"),
            again(),
            std,
            &program(ignored),
            &[],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        if warns || clang(&lang) {
            assert!(
                !out.status.success()
                    && err.contains("ple_model_open")
                    && (err.contains("nodiscard") || err.contains("unused")),
                "{std}: an ignored status must warn:\n{err}"
            );
            let out = compile_only(
                &format!("{name}_off"),
                again(),
                std,
                &program(ignored),
                &["-DPLE_MUST_USE="],
            );
            assert!(
                out.status.success(),
                "{std}: -DPLE_MUST_USE= must turn the marker off:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        } else {
            assert!(out.status.success(), "{std}: {err}");
        }
    }
}

/// Runs `cmd`; returns (success, stdout, stderr).
fn output_of(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `cmd` and fails the test with its output unless it succeeds; returns its stdout.
fn must(cmd: &mut Command) -> String {
    let (ok, stdout, stderr) = output_of(cmd);
    assert!(ok, "{cmd:?} failed:\n{stdout}\n{stderr}");
    stdout
}

/// Whether `tool` runs here.
fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The SONAME's version, as build.rs sets it.
fn soversion() -> String {
    match (
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
    ) {
        ("0", "0") => format!("0.0.{}", env!("CARGO_PKG_VERSION_PATCH")),
        ("0", minor) => format!("0.{minor}"),
        (major, _) => major.to_string(),
    }
}

/// Configures and builds the CMake project `source` in `build`, finding ple under `prefix`.
fn cmake_build(source: &Path, build: &Path, prefix: &Path) {
    must(
        Command::new("cmake")
            .arg("-S")
            .arg(source)
            .arg("-B")
            .arg(build)
            .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display()))
            .arg(format!("-DCMAKE_C_COMPILER={}", toolchain().cc)),
    );
    must(Command::new("cmake").arg("--build").arg(build));
}

/// `make -C examples install` lays the library out as cargo-c does (versioned shared library
/// whose SONAME the links name, headers in include/ple, pkg-config and CMake files); the shared
/// library exports only `ple_` symbols; programs record the SONAME, not the prefix; and after the
/// prefix moves they run through LD_LIBRARY_PATH or an `$ORIGIN` rpath, as docs/C_API.md says,
/// and pkg-config and CMake find the moved prefix. It needs make; the pkg-config and CMake parts
/// need those tools. Each part missing its tool says SKIPPED (CI installs them all).
#[test]
fn installed_prefix_has_a_soname_and_can_move() {
    if !have("make") {
        eprintln!("SKIPPED installed_prefix_has_a_soname_and_can_move: make is not installed (apt-get install make)");
        return;
    }
    let t = toolchain();
    let deps = t.lib.parent().unwrap();
    let work = t.out_dir.join("install");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("bin")).unwrap();
    let prefix = work.join("prefix");
    // This build's own libraries, without building (CARGO=true).
    must(
        Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(root().join("examples"))
            .arg("install")
            .arg(format!("PREFIX={}", prefix.display()))
            .arg(format!("LIBDIR={}", deps.display()))
            .arg("CARGO=true"),
    );
    let version = env!("CARGO_PKG_VERSION");
    let soname = format!("libple.so.{}", soversion());
    let lib = prefix.join("lib");
    let real = format!("libple.so.{version}");
    assert!(!lib.join(&real).is_symlink() && lib.join(&real).is_file());
    for link in [soname.as_str(), "libple.so"] {
        assert_eq!(
            std::fs::read_link(lib.join(link)).unwrap(),
            Path::new(&real),
            "lib/{link}"
        );
    }
    for f in [
        "lib/libple.a",
        "include/ple/ple.h",
        "include/ple/ple.hpp",
        "lib/pkgconfig/ple.pc",
        "lib/cmake/ple/pleConfig.cmake",
        "lib/cmake/ple/pleConfigVersion.cmake",
    ] {
        assert!(prefix.join(f).is_file(), "{f} is not installed");
    }
    let dynamic = must(Command::new("readelf").arg("-d").arg(lib.join(&real)));
    assert!(
        dynamic.contains(&format!("Library soname: [{soname}]")),
        "{dynamic}"
    );
    // Exports: only the C API (rustc's own version script hides every Rust symbol).
    let exported = must(
        Command::new("nm")
            .args(["-D", "--defined-only", "--format=posix"])
            .arg(lib.join(&real)),
    );
    let names: Vec<&str> = exported
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(names.len() >= 40, "{exported}");
    let foreign: Vec<&&str> = names.iter().filter(|n| !n.starts_with("ple_")).collect();
    assert!(foreign.is_empty(), "libple.so exports {foreign:?}");
    // The release install strips the static library's debug sections.
    let sections = must(
        Command::new("readelf")
            .args(["-S", "-W"])
            .arg(lib.join("libple.a")),
    );
    assert!(
        !sections.contains(".debug_info"),
        "libple.a kept its debug info"
    );

    // Programs linked against the install, by hand, by pkg-config and by CMake.
    let cc = |out: &Path, extra: &[&str]| {
        must(
            Command::new(&t.cc)
                .args(["-std=c11", "-O1"])
                .arg(root().join("examples/c/score.c"))
                .args(extra)
                .arg("-o")
                .arg(out),
        );
    };
    let include = format!("-I{}", prefix.join("include/ple").display());
    let libdir = format!("-L{}", lib.display());
    let shared = work.join("bin/score_shared");
    cc(&shared, &[&include, &libdir, "-lple"]);
    let origin = prefix.join("bin/score_origin");
    std::fs::create_dir_all(prefix.join("bin")).unwrap();
    cc(
        &origin,
        &[&include, &libdir, "-lple", "-Wl,-rpath,$ORIGIN/../lib"],
    );
    let static_ = work.join("bin/score_static");
    let archive = lib.join("libple.a");
    cc(
        &static_,
        &[
            &include,
            archive.to_str().unwrap(),
            "-lpthread",
            "-ldl",
            "-lm",
        ],
    );
    let pc = |prefix: &Path, what: &str| {
        must(
            Command::new("pkg-config")
                .arg(what)
                .arg("ple")
                .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig")),
        )
    };
    let pkg_config = have("pkg-config");
    let by_pc = work.join("bin/score_pkg_config");
    if pkg_config {
        let flags = format!("{} {}", pc(&prefix, "--cflags"), pc(&prefix, "--libs"));
        cc(&by_pc, &flags.split_whitespace().collect::<Vec<_>>());
    } else {
        eprintln!("SKIPPED the pkg-config part of installed_prefix_has_a_soname_and_can_move: pkg-config is not installed");
    }
    let needed = must(Command::new("readelf").arg("-d").arg(&shared));
    assert!(
        needed.contains(&format!("Shared library: [{soname}]")),
        "{needed}"
    );
    assert!(
        !needed.contains(&prefix.display().to_string()),
        "the program records the prefix:\n{needed}"
    );
    let cmake = have("cmake");
    let cmake_project = work.join("cmake_project");
    if cmake {
        std::fs::create_dir_all(&cmake_project).unwrap();
        std::fs::write(
            cmake_project.join("CMakeLists.txt"),
            format!(
                "cmake_minimum_required(VERSION 3.16)\n\
                 project(consumer C)\n\
                 find_package(ple {version} CONFIG REQUIRED)\n\
                 add_executable(score_shared {score})\n\
                 target_link_libraries(score_shared PRIVATE ple::ple_shared)\n\
                 add_executable(score_static {score})\n\
                 target_link_libraries(score_static PRIVATE ple::ple)\n",
                score = root().join("examples/c/score.c").display()
            ),
        )
        .unwrap();
        let build = work.join("cmake_build");
        cmake_build(&cmake_project, &build, &prefix);
        let needed = must(
            Command::new("readelf")
                .arg("-d")
                .arg(build.join("score_shared")),
        );
        assert!(
            needed.contains(&format!("Shared library: [{soname}]")),
            "{needed}"
        );
        for exe in ["score_shared", "score_static"] {
            std::fs::copy(
                build.join(exe),
                work.join("bin").join(format!("cmake_{exe}")),
            )
            .unwrap();
        }
    } else {
        eprintln!("SKIPPED the CMake part of installed_prefix_has_a_soname_and_can_move: cmake is not installed (apt-get install cmake)");
    }

    // Move the prefix.
    let moved = work.join("moved");
    std::fs::rename(&prefix, &moved).unwrap();
    let model = quickstart();
    let score = |exe: &Path, lib_path: Option<&Path>| {
        let mut cmd = Command::new(exe);
        cmd.arg(&model).arg("2").env_remove("LD_LIBRARY_PATH");
        if let Some(p) = lib_path {
            cmd.env("LD_LIBRARY_PATH", p);
        }
        output_of(&mut cmd)
    };
    let works = |exe: &Path, lib_path: Option<&Path>| {
        let (ok, stdout, stderr) = score(exe, lib_path);
        assert!(
            ok && stdout.contains("sample 1:"),
            "{} after the move: {stdout}{stderr}",
            exe.display()
        );
    };
    let moved_lib = moved.join("lib");
    works(&static_, None);
    works(&shared, Some(&moved_lib));
    works(&moved.join("bin/score_origin"), None);
    // Without LD_LIBRARY_PATH the moved library is not found: nothing points at the old path.
    let (ok, _, stderr) = score(&shared, None);
    assert!(!ok && stderr.contains(&soname), "{stderr}");
    if pkg_config {
        works(&by_pc, Some(&moved_lib));
        // pkg-config's paths follow the moved file.
        let cflags = pc(&moved, "--cflags");
        let dir = cflags.trim().strip_prefix("-I").unwrap_or_default();
        assert_eq!(
            std::fs::canonicalize(dir).ok(),
            std::fs::canonicalize(moved.join("include/ple")).ok(),
            "{cflags}"
        );
    }
    if cmake {
        works(&work.join("bin/cmake_score_static"), None);
        works(&work.join("bin/cmake_score_shared"), Some(&moved_lib));
        // And find_package finds the moved prefix; the program then runs through its RUNPATH.
        let build = work.join("cmake_build_moved");
        cmake_build(&cmake_project, &build, &moved);
        works(&build.join("score_shared"), None);
    }
}

/// A plugin (a shared object) built from libple.a re-exports every Rust symbol of the archive
/// unless it links with `-Wl,--exclude-libs,ALL`, as docs/C_API.md says; with it, it exports its
/// own functions only, and works.
#[test]
fn static_library_in_a_plugin() {
    let t = toolchain();
    let dir = t.out_dir.join("plugin");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("plugin.c"),
        "#include \"ple.h\"\nconst char *plugin_ple_version(void) { return ple_version(); }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("host.c"),
        "#include <dlfcn.h>\n#include <stdio.h>\n\
         int main(int argc, char **argv) {\n\
             (void)argc;\n\
             void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);\n\
             if (!h) { fprintf(stderr, \"%s\\n\", dlerror()); return 1; }\n\
             const char *(*v)(void) = (const char *(*)(void))dlsym(h, \"plugin_ple_version\");\n\
             if (!v) return 1;\n\
             printf(\"%s\\n\", v());\n\
             return dlclose(h);\n\
         }\n",
    )
    .unwrap();
    let exports = |so: &Path| -> Vec<String> {
        must(
            Command::new("nm")
                .args(["-D", "--defined-only", "--format=posix"])
                .arg(so),
        )
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
    };
    let plugin = |name: &str, extra: &[&str]| -> PathBuf {
        let so = dir.join(name);
        must(
            Command::new(&t.cc)
                .args(["-shared", "-fPIC", "-O1", "-I"])
                .arg(root().join("include"))
                .arg(dir.join("plugin.c"))
                .arg(&t.lib)
                .args(extra)
                .args(["-lpthread", "-ldl", "-lm", "-o"])
                .arg(&so),
        );
        so
    };
    let leaky = exports(&plugin("leaky.so", &[]));
    assert!(
        leaky.len() > 100,
        "without --exclude-libs the plugin was expected to re-export the archive's symbols: {leaky:?}"
    );
    let clean = plugin("clean.so", &["-Wl,--exclude-libs,ALL"]);
    assert_eq!(exports(&clean), ["plugin_ple_version"]);
    let host = dir.join("host");
    must(
        Command::new(&t.cc)
            .arg(dir.join("host.c"))
            .args(["-ldl", "-o"])
            .arg(&host),
    );
    let out = must(Command::new(&host).arg(&clean));
    assert_eq!(out.trim(), env!("CARGO_PKG_VERSION"));
    println!(
        "plugin from libple.a: {} dynamic symbols without --exclude-libs, 1 with it",
        leaky.len()
    );
}

/// Every C/C++ source under tests/c and examples is built by one of the tests above.
#[test]
fn every_c_source_is_tested() {
    let known = [
        "tests/c/status.c",
        "tests/c/score_files.c",
        "tests/c/wrapper.cpp",
        "tests/c/hardening.c",
        "tests/c/pool.c",
        "tests/c/warm.c",
        "tests/c/ragged.c",
        "tests/c/testing.h",
        "examples/c/score.c",
        "examples/cpp/server.cpp",
        "examples/cpp/hot_reload.cpp",
        "examples/cpp/requests.hpp",
    ];
    for dir in ["tests/c", "examples/c", "examples/cpp"] {
        for e in std::fs::read_dir(root().join(dir)).unwrap() {
            let p = e.unwrap().path();
            let rel = format!("{dir}/{}", p.file_name().unwrap().to_string_lossy());
            let is_source = ["c", "cpp", "h", "hpp"]
                .iter()
                .any(|x| p.extension().is_some_and(|e| e == *x));
            assert!(
                !is_source || known.contains(&rel.as_str()),
                "{rel} is not run by tests/c_api.rs"
            );
        }
    }
}

/// Valgrind on the C example: no leaks, no errors. Runs only where valgrind is installed, and
/// says so when it is not.
#[test]
fn valgrind_score_example_is_clean() {
    if !have("valgrind") {
        eprintln!("SKIPPED valgrind_score_example_is_clean: valgrind is not installed (apt-get install valgrind)");
        return;
    }
    let exe = build("score_plain", &["examples/c/score.c"], Lang::C, true);
    let out = Command::new("valgrind")
        .args([
            "--leak-check=full",
            "--show-leak-kinds=definite,indirect,possible",
            "--errors-for-leak-kinds=definite,indirect,possible",
            "--error-exitcode=99",
        ])
        .arg(&exe)
        .arg(quickstart())
        .arg("8")
        .current_dir(root())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "valgrind found problems:\n{stderr}");
    assert!(stderr.contains("ERROR SUMMARY: 0 errors"), "{stderr}");
    for line in stderr.lines().filter(|l| {
        l.contains("in use at exit") || l.contains("ERROR SUMMARY") || l.contains("All heap blocks")
    }) {
        eprintln!("valgrind: {line}");
    }
}

// ---- the extern "C" functions called from Rust ------------------------------------------------

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; only counts calls on this thread.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

fn text(p: *const c_char) -> String {
    assert!(!p.is_null());
    // SAFETY: the API returns NUL-terminated strings.
    unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_owned()
}

fn open(path: &Path) -> *const ple_model {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let mut m = std::ptr::null();
    // SAFETY: valid C string and out pointer.
    let st = unsafe { ple_model_open(c.as_ptr(), 0, &mut m) };
    assert_eq!(st, ple_status::Ok, "{}", text(ple_last_error()));
    m
}

/// Scoring through the C ABI allocates nothing, successes and every kind of failure alike, by
/// position and by name.
#[test]
fn ffi_scoring_allocates_nothing() {
    let model_rs = Model::open(quickstart()).unwrap();
    let m = open(&quickstart());
    let mut s = std::ptr::null_mut();
    // SAFETY: live model, valid out pointer.
    assert_eq!(unsafe { ple_session_new(m, 8, &mut s) }, ple_status::Ok);
    let batch = 8;
    let cols = synthetic(&model_rs, batch);
    let names: Vec<std::ffi::CString> = model_rs
        .inputs()
        .iter()
        .map(|f| std::ffi::CString::new(&*f.name).unwrap())
        .collect();
    let columns = |named: bool| -> Vec<ple_column> {
        cols.iter()
            .zip(&names)
            .map(|(c, n)| {
                let name = if named { n.as_ptr() } else { std::ptr::null() };
                match c {
                    Column::Ids(v) => ple_column {
                        name,
                        ids: v.as_ptr(),
                        floats: std::ptr::null(),
                        len: v.len(),
                        offsets: std::ptr::null(),
                        offsets_len: 0,
                    },
                    Column::Floats(v) => ple_column {
                        name,
                        ids: std::ptr::null(),
                        floats: v.as_ptr(),
                        len: v.len(),
                        offsets: std::ptr::null(),
                        offsets_len: 0,
                    },
                }
            })
            .collect()
    };
    let positional = columns(false);
    let mut named = columns(true);
    named.reverse();
    let mut bad_id = positional.clone();
    let big = vec![1_000_000i64; batch];
    bad_id[0].ids = big.as_ptr();
    let mut unknown = named.clone();
    unknown[0].name = c"nope".as_ptr();
    let width = model_rs.output_width();
    let gw = model_rs.gate_width();
    let mut out = vec![0f32; batch * width];
    let mut gates = vec![0f32; batch * gw];

    let mut statuses = Vec::with_capacity(16);
    let mut trace = [[0u64; 8]; 50];
    let before = allocations();
    for (round, row) in trace.iter_mut().enumerate() {
        let b = 1 + round % batch;
        // SAFETY: every buffer is valid for the lengths given (prefixes of full-batch columns).
        let call = |cols: &[ple_column],
                    b: usize,
                    out: &mut [f32],
                    out_len: usize,
                    gates: Option<&mut Vec<f32>>| unsafe {
            let mut cols_b = [ple_column {
                name: std::ptr::null(),
                ids: std::ptr::null(),
                floats: std::ptr::null(),
                len: 0,
                offsets: std::ptr::null(),
                offsets_len: 0,
            }; 5];
            for (d, c) in cols_b.iter_mut().zip(cols) {
                *d = *c;
                d.len = c.len / batch * b;
            }
            let (g, gl) = gates.map_or((std::ptr::null_mut(), 0), |g| (g.as_mut_ptr(), b * gw));
            ple_session_run(
                s,
                b,
                cols_b.as_ptr(),
                cols.len(),
                out.as_mut_ptr(),
                out_len,
                g,
                gl,
            )
        };
        statuses.clear();
        statuses.push(call(&positional, b, &mut out, b * width, Some(&mut gates)));
        row[statuses.len() - 1] = allocations() - before;
        statuses.push(call(&named, b, &mut out, b * width, None));
        row[statuses.len() - 1] = allocations() - before;
        statuses.push(call(&bad_id, b, &mut out, b * width, None));
        row[statuses.len() - 1] = allocations() - before;
        statuses.push(call(&unknown, b, &mut out, b * width, None));
        row[statuses.len() - 1] = allocations() - before;
        statuses.push(call(&positional, b, &mut out, b * width - 1, None));
        row[statuses.len() - 1] = allocations() - before;
        statuses.push(call(&positional[..4], b, &mut out, b * width, None));
        row[statuses.len() - 1] = allocations() - before;
        statuses.push(call(&positional, batch + 1, &mut out, b * width, None));
        row[statuses.len() - 1] = allocations() - before;
        statuses.push(call(&positional, 0, &mut out, 0, None));
        row[statuses.len() - 1] = allocations() - before;
        assert_eq!(
            statuses,
            [
                ple_status::Ok,
                ple_status::Ok,
                ple_status::IdOutOfRange,
                ple_status::UnknownInput,
                ple_status::WrongLength,
                ple_status::WrongInputCount,
                ple_status::BatchOutOfRange,
                // Batch 0 with empty columns: a successful no-op.
                ple_status::Ok,
            ]
        );
        // Reading the messages does not allocate either.
        // SAFETY: live session.
        let _ = unsafe { ple_session_last_error(s) };
        let _ = ple_last_error();
    }
    let used = allocations() - before;
    assert_eq!(
        used,
        0,
        "the C scoring path allocated {used} times (cumulative count after each call: {:?})",
        &trace[..3]
    );

    // And the messages are the detailed ones.
    // SAFETY: valid buffers; live session.
    let st = unsafe {
        ple_session_run(
            s,
            batch,
            bad_id.as_ptr(),
            5,
            out.as_mut_ptr(),
            out.len(),
            std::ptr::null_mut(),
            0,
        )
    };
    assert_eq!(st, ple_status::IdOutOfRange);
    // SAFETY: live session.
    let msg = text(unsafe { ple_session_last_error(s) });
    assert!(
        msg.contains("'user_id'") && msg.contains("id 1000000") && msg.contains("sample 0"),
        "{msg}"
    );
    assert_eq!(msg, text(ple_last_error()));

    // SAFETY: live handles, freed once.
    unsafe {
        ple_session_free(s);
        ple_model_free(m);
    }
}

/// Misaligned buffers are rejected before any slice is made (creating the pointer is fine in
/// Rust; dereferencing it would not be).
#[test]
fn ffi_rejects_misaligned_buffers() {
    let m = open(&root().join("tests/fixtures/dense_ple/model.ple"));
    let mut s = std::ptr::null_mut();
    // SAFETY: live model, valid out pointer.
    assert_eq!(unsafe { ple_session_new(m, 4, &mut s) }, ple_status::Ok);
    let x = [0f32; 4 * 8 + 1];
    let mut out = [0f32; 2 * 2 + 1];
    let skew = |p: *const f32| p.cast::<u8>().wrapping_add(1).cast::<f32>();
    // SAFETY: the pointers are misaligned on purpose; the function must not read or write them.
    let st = unsafe {
        ple_session_run_dense(
            s,
            2,
            skew(x.as_ptr()),
            16,
            out.as_mut_ptr(),
            4,
            std::ptr::null_mut(),
            0,
        )
    };
    assert_eq!(st, ple_status::InvalidArgument);
    assert!(
        text(ple_last_error()).contains("aligned"),
        "{}",
        text(ple_last_error())
    );
    // SAFETY: as above.
    let st = unsafe {
        ple_session_run_dense(
            s,
            2,
            x.as_ptr(),
            16,
            skew(out.as_ptr()).cast_mut(),
            4,
            std::ptr::null_mut(),
            0,
        )
    };
    assert_eq!(st, ple_status::InvalidArgument);
    // SAFETY: valid buffers.
    let st = unsafe {
        ple_session_run_dense(
            s,
            2,
            x.as_ptr(),
            16,
            out.as_mut_ptr(),
            4,
            std::ptr::null_mut(),
            0,
        )
    };
    assert_eq!(st, ple_status::Ok);
    // SAFETY: live handles, freed once (model first: the session keeps it alive).
    unsafe {
        ple_model_free(m);
        ple_session_free(s);
    }
}

/// Every status has a distinct static message, and codes round-trip.
#[test]
fn status_codes_are_stable() {
    let expected = [
        (ple_status::Ok, 0),
        (ple_status::NullArgument, 1),
        (ple_status::InvalidArgument, 2),
        (ple_status::Panic, 3),
        (ple_status::System, 4),
        (ple_status::Cancelled, 5),
        (ple_status::Io, 10),
        (ple_status::NotPle, 11),
        (ple_status::UnsupportedVersion, 12),
        (ple_status::Checksum, 13),
        (ple_status::InvalidFile, 14),
        (ple_status::InvalidMaxBatch, 20),
        (ple_status::BatchOutOfRange, 21),
        (ple_status::WrongInputCount, 22),
        (ple_status::WrongInputKind, 23),
        (ple_status::WrongLength, 24),
        (ple_status::IdOutOfRange, 25),
        (ple_status::UnknownInput, 26),
        (ple_status::SessionBusy, 27),
        (ple_status::ExecutorFailed, 28),
        (ple_status::RaggedInput, 29),
    ];
    let mut seen = std::collections::HashSet::new();
    for (s, code) in expected {
        assert_eq!(s as i32, code, "{s:?} changed its number");
        let msg = text(ple_status_str(code));
        assert!(seen.insert(msg.clone()), "duplicate message {msg}");
    }
    assert_eq!(ple_status::all().len(), expected.len());
    assert_eq!(text(ple_status_str(9999)), "unknown status");
    assert_eq!(text(ple_version()), env!("CARGO_PKG_VERSION"));
}

/// The f32-id flag is visible through the C ABI, and too few named columns name the missing input.
#[test]
fn ffi_reports_id_rounding_and_the_missing_input() {
    let dir = common::fixtures_dir().join("deepctr_ple");
    let model_rs = Model::open(dir.join("model.ple")).unwrap();
    let m = open(&dir.join("model.ple"));
    for (i, f) in model_rs.inputs().iter().enumerate() {
        // SAFETY: live model handle.
        let through_f32 = unsafe { ple_model_input_ids_through_f32(m, i) };
        assert_eq!(through_f32, f.ids_through_f32);
    }
    assert!(
        model_rs.inputs().iter().any(|f| f.ids_through_f32),
        "DeepCTR-Torch ids pass through f32"
    );
    // SAFETY: a NULL model is allowed and answers false.
    let null_model = unsafe { ple_model_input_ids_through_f32(std::ptr::null(), 0) };
    // SAFETY: live model; an out-of-range index answers false.
    let out_of_range = unsafe { ple_model_input_ids_through_f32(m, 9999) };
    assert!(!null_model && !out_of_range);

    let batch = 2;
    let cols = synthetic(&model_rs, batch);
    let names: Vec<std::ffi::CString> = model_rs
        .inputs()
        .iter()
        .map(|f| std::ffi::CString::new(&*f.name).unwrap())
        .collect();
    let columns: Vec<ple_column> = cols
        .iter()
        .zip(&names)
        .skip(1) // leave out the first input
        .map(|(c, n)| match c {
            Column::Ids(v) => ple_column {
                name: n.as_ptr(),
                ids: v.as_ptr(),
                floats: std::ptr::null(),
                len: v.len(),
                offsets: std::ptr::null(),
                offsets_len: 0,
            },
            Column::Floats(v) => ple_column {
                name: n.as_ptr(),
                ids: std::ptr::null(),
                floats: v.as_ptr(),
                len: v.len(),
                offsets: std::ptr::null(),
                offsets_len: 0,
            },
        })
        .collect();
    let mut s = std::ptr::null_mut();
    // SAFETY: live model, valid out pointer.
    assert_eq!(unsafe { ple_session_new(m, batch, &mut s) }, ple_status::Ok);
    let mut out = vec![0f32; batch * model_rs.output_width()];
    // SAFETY: every buffer is valid for the lengths given.
    let st = unsafe {
        ple_session_run(
            s,
            batch,
            columns.as_ptr(),
            columns.len(),
            out.as_mut_ptr(),
            out.len(),
            std::ptr::null_mut(),
            0,
        )
    };
    assert_eq!(st, ple_status::WrongInputCount);
    // SAFETY: live session.
    let msg = text(unsafe { ple_session_last_error(s) });
    assert!(
        msg.contains(&format!("input '{}' is missing", model_rs.inputs()[0].name)),
        "{msg}"
    );
    // SAFETY: live handles, freed once.
    unsafe {
        ple_session_free(s);
        ple_model_free(m);
    }
}
