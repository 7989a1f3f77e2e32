//! Tests of the `ple` binary: every command, `--help`, `--json`, exit codes, one-line errors,
//! and `ple score` against `Session::run` on the same inputs (bit for bit).

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use ple::{Input, InputKind, Model, Session};
use ple_testkit::npy::{self, NpyArray};
// Built with `arbitrary_precision` (a number keeps its text, so scores compare bit for bit) and
// `preserve_order` (objects keep the tool's key order).
use serde_json::Value;

const QUICKSTART: &str = "examples/models/quickstart.ple";
const QUICKSTART_INPUTS: &str = "examples/models/quickstart_inputs";

fn root() -> PathBuf {
    ple_testkit::repo_root()
}

fn ple_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ple"));
    c.args(args).current_dir(root());
    c
}

fn ple(args: &[&str]) -> Output {
    ple_cmd(args).output().expect("run ple")
}

fn ple_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child = ple_cmd(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ple");
    // Written from another thread while this one collects the output, and a closed pipe is not an
    // error: ple may stop reading early (an error on the first row ends it before it reads the
    // rest), and a large input must not wait on ple's full stdout pipe.
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.to_string();
    let writer = std::thread::spawn(move || match pipe.write_all(input.as_bytes()) {
        Err(e) if e.kind() != ErrorKind::BrokenPipe => panic!("writing ple's stdin: {e}"),
        _ => {}
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    output
}

/// A JSON number as f32, parsed from its text (exact for the shortest round-trip text).
#[track_caller]
fn f32_of(v: &Value) -> f32 {
    match v {
        Value::Number(n) => n.as_str().parse().unwrap(),
        other => panic!("not a number: {other}"),
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}
fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstderr: {}",
        o.status.code(),
        stderr(o)
    );
    stdout(o)
}

/// Asserts exit code `code` and exactly one stderr line `ple: error: ...` containing `needle`.
#[track_caller]
fn fails(o: &Output, code: i32, needle: &str) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "stderr: {err}\nstdout: {}",
        stdout(o)
    );
    assert_eq!(err.lines().count(), 1, "errors are one line: {err:?}");
    assert!(err.starts_with("ple: error: "), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in {err:?}");
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("ple-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Fixture directories holding a model.ple and its inputs.
fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("tests/fixtures"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.join("model.ple").is_file())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root())
        .unwrap_or(p)
        .to_str()
        .unwrap()
        .to_string()
}

/// One input column loaded from `dir/in_<name>.npy`, with its array.
enum Col {
    Ids(Vec<i64>),
    Floats(Vec<f32>),
}

fn load_inputs(model: &Model, dir: &Path) -> (Vec<Col>, usize) {
    let mut rows = 0;
    let cols = model
        .inputs()
        .iter()
        .map(|f| {
            let a: NpyArray = npy::read(dir.join(format!("in_{}.npy", f.name))).unwrap();
            rows = a.shape[0];
            match f.kind {
                InputKind::Dense => Col::Floats(a.to_f32()),
                _ => Col::Ids(a.to_i64().expect("integer ids")),
            }
        })
        .collect();
    (cols, rows)
}

/// Scores via the library: (scores, gates, rows).
fn reference(model_path: &Path, dir: &Path) -> (Vec<f32>, Vec<f32>, usize) {
    let model = Model::open(model_path).unwrap();
    let (cols, rows) = load_inputs(&model, dir);
    let inputs: Vec<Input> = cols
        .iter()
        .map(|c| match c {
            Col::Ids(v) => Input::Ids(v),
            Col::Floats(v) => Input::Floats(v),
        })
        .collect();
    let mut s = Session::new(&model, rows).unwrap();
    let mut out = vec![0f32; rows * model.output_width()];
    let mut gates = vec![0f32; rows * model.gate_width()];
    let g = (model.gate_width() > 0).then_some(&mut gates[..]);
    s.run(&inputs, rows, &mut out, g).unwrap();
    (out, gates, rows)
}

/// Parses CSV score output: (header, values row-major).
fn parse_csv(text: &str) -> (Vec<String>, Vec<f32>) {
    let mut lines = text.lines();
    let header = lines
        .next()
        .expect("header")
        .split(',')
        .map(String::from)
        .collect::<Vec<_>>();
    let mut vals = Vec::new();
    for l in lines {
        let row: Vec<f32> = l
            .split(',')
            .map(|x| x.parse().unwrap_or_else(|_| panic!("{x:?}")))
            .collect();
        assert_eq!(row.len(), header.len(), "{l}");
        vals.extend(row);
    }
    (header, vals)
}

#[track_caller]
fn assert_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
            "{what}[{i}]: {a} != {b}"
        );
    }
}

/// Splits CSV values into (scores, gates) given the model's widths.
fn split_scores(vals: &[f32], ow: usize, gw: usize) -> (Vec<f32>, Vec<f32>) {
    let mut s = Vec::new();
    let mut g = Vec::new();
    for row in vals.chunks(ow + gw) {
        s.extend_from_slice(&row[..ow]);
        g.extend_from_slice(&row[ow..]);
    }
    (s, g)
}

// ---- help, version, usage errors -------------------------------------------------------------

#[test]
fn help_everywhere() {
    let top = ok(&ple(&["--help"]));
    for cmd in ["inspect", "check", "score", "bench"] {
        assert!(top.contains(cmd), "{top}");
        for form in [
            vec![cmd, "--help"],
            vec![cmd, "-h"],
            vec!["help", cmd],
            vec![cmd, "x.ple", "--help"],
        ] {
            let out = ok(&ple(&form));
            assert!(
                out.contains(&format!("usage: ple {cmd}")),
                "{form:?}: {out}"
            );
        }
    }
    assert!(ok(&ple(&["help"])).contains("commands:"));
    assert!(ok(&ple(&["--version"])).starts_with("ple "));
}

#[test]
fn usage_errors_exit_2() {
    fails(&ple(&[]), 2, "no command");
    fails(&ple(&["frobnicate"]), 2, "unknown command 'frobnicate'");
    fails(&ple(&["inspect"]), 2, "missing MODEL");
    fails(
        &ple(&["inspect", QUICKSTART, "extra"]),
        2,
        "unexpected argument 'extra'",
    );
    fails(
        &ple(&["inspect", QUICKSTART, "--jsn"]),
        2,
        "did you mean --json",
    );
    fails(&ple(&["check"]), 2, "missing MODEL");
    fails(&ple(&["score", QUICKSTART]), 2, "missing --input");
    fails(
        &ple(&["score", QUICKSTART, "-i", QUICKSTART_INPUTS, "--batch", "0"]),
        2,
        "--batch",
    );
    fails(
        &ple(&["score", QUICKSTART, "-i", QUICKSTART_INPUTS, "--batch"]),
        2,
        "needs a value",
    );
    fails(
        &ple(&[
            "score",
            QUICKSTART,
            "-i",
            QUICKSTART_INPUTS,
            "--input-format",
            "xml",
        ]),
        2,
        "unknown format",
    );
    fails(
        &ple(&["bench", QUICKSTART, "--batch", "1,x"]),
        2,
        "'x' is not a positive integer",
    );
    fails(
        &ple(&["bench", QUICKSTART, "--seconds", "-1"]),
        2,
        "--seconds",
    );
    fails(
        &ple(&["inspect", QUICKSTART, "--simd", "sse9"]),
        2,
        "unknown level 'sse9'",
    );
}

// ---- inspect -----------------------------------------------------------------------------------

#[test]
fn inspect_marks_int8_layers_with_input_scales() {
    // The 1.2 fuzz seed: a DeepCTR PLE whose x0-reading experts are int8 with input scales.
    let out = ok(&ple(&[
        "inspect",
        "fuzz/corpus/load/deepctr_ple_int8_x0.ple",
    ]));
    assert!(out.contains("format      .ple 1.2"), "{out}");
    assert!(out.contains("16 → 32 relu i8 scaled → 16 relu"), "{out}");
}

#[test]
fn inspect_text_quickstart() {
    let out = ok(&ple(&["inspect", QUICKSTART]));
    for needle in [
        "model       quickstart",
        "format      .ple 1.0",
        "weights     f32",
        "checksums   metadata ok, data ok",
        "simd ",
        "parameters ",
        "flops ",
        "scratch ",
        "recent_items  sequence",
        "mean",
        "ctr ",
        "cvr ",
        "PLE, 2 tasks, 2 levels",
        "gate task 0",
        "tower 1",
        "sigmoid",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
    let model = Model::open(root().join(QUICKSTART)).unwrap();
    let params = model.parameter_count();
    assert!(
        out.contains(&format!("{},{:03}", params / 1000, params % 1000)),
        "{out}"
    );
    let skip = ok(&ple(&["inspect", QUICKSTART, "--no-verify-data"]));
    assert!(skip.contains("data not verified"), "{skip}");
}

#[test]
fn inspect_json_matches_the_api() {
    let mut paths = vec![root().join(QUICKSTART)];
    for f in fixtures() {
        paths.push(f.join("model.ple"));
        paths.push(f.join("model_f16.ple"));
    }
    for path in paths {
        let p = rel(&path);
        let text = ok(&ple(&["inspect", "--json", &p]));
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{p}: {e}\n{text}"));
        let model = Model::open(&path).unwrap();
        let get = |k: &str| v.get(k).unwrap_or_else(|| panic!("{k}")).clone();
        let num = |k: &str| get(k).as_u64().unwrap_or_else(|| panic!("{k}"));
        assert_eq!(get("name"), model.name(), "{p}");
        let (major, minor) = model.format_version();
        assert_eq!(get("format_version"), format!("{major}.{minor}"), "{p}");
        let nodes = v.get("nodes").map_or(0, |n| n.as_array().unwrap().len());
        assert_eq!(nodes, model.graph().nodes.len(), "{p}");
        assert_eq!(num("file_size"), model.file_size());
        assert_eq!(num("parameters"), model.parameter_count(), "{p}");
        assert_eq!(num("flops_per_sample"), model.flops_per_sample(), "{p}");
        assert_eq!(
            num("scratch_bytes_per_sample"),
            model.scratch_floats_per_sample() as u64 * 4
        );
        assert_eq!(num("tile_rows"), model.tile_rows() as u64);
        assert_eq!(num("output_width"), model.output_width() as u64);
        assert_eq!(num("gate_width"), model.gate_width() as u64);
        assert_eq!(get("simd"), model.simd_level().name());
        let dtype = model.weight_dtype().map_or("mixed", |d| d.name());
        assert_eq!(get("weight_dtype"), dtype, "{p}");
        let inputs = get("inputs");
        let inputs = inputs.as_array().unwrap();
        assert_eq!(inputs.len(), model.inputs().len());
        for (j, f) in inputs.iter().zip(model.inputs()) {
            let keys: Vec<&String> = j.as_object().unwrap().keys().take(2).collect();
            assert_eq!(keys, ["name", "kind"]);
            assert_eq!(j["name"], *f.name);
            assert_eq!(j["kind"], f.kind.name());
        }
        assert_eq!(
            get("outputs").as_array().unwrap().len(),
            model.outputs().len()
        );
        assert_eq!(
            get("levels").as_array().unwrap().len(),
            model.graph().levels.len()
        );
        assert_eq!(get("towers").as_array().unwrap().len(), model.n_tasks());
        assert_eq!(get("checksums")["data"], "ok");
    }
}

#[test]
fn inspect_describes_graph_nodes() {
    let p = "tests/fixtures/rechub_aitm/model.ple";
    let out = ok(&ple(&["inspect", p]));
    for needle in [
        "format      .ple 1.3",
        "task chain with attention transfer (AITM-like; 7 graph nodes, 2 attention), 3 tasks, 0 levels",
        "node 0    reads x0: 12 → 12 relu → 8 relu",
        "node 3    reads node 0: 8 → 8 relu",
        "node 4    attention over node 1, node 3 (logits q·k / 2.828427, softmax): query 8 → 8, key 8 → 8, value 8 → 8",
        "tower 1   reads node 4: 8 → 5 prelu → 4 prelu → 1, sigmoid",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
    let v: Value = serde_json::from_str(&ok(&ple(&["inspect", "--json", p]))).unwrap();
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 7);
    assert_eq!(nodes[4]["op"], "attention");
    assert_eq!(nodes[4]["inputs"], serde_json::json!(["node:1", "node:3"]));
    assert_eq!(nodes[4]["width"], 8);
    assert!((f32_of(&nodes[4]["temperature"]) - 8f32.sqrt()).abs() < 1e-6);
    assert_eq!(nodes[4]["query"]["layers"][0]["bias"], false);
    assert_eq!(nodes[0]["inputs"], serde_json::json!(["x0"]));
    assert_eq!(v["towers"][2]["input"], "node");
    assert_eq!(v["towers"][2]["node"], 6);
    assert!(v["towers"][0].get("node").is_some());
    assert!(v["levels"].as_array().unwrap().is_empty());
}

// ---- check -------------------------------------------------------------------------------------

#[test]
fn check_good_files() {
    let out = ok(&ple(&["check", QUICKSTART]));
    assert!(out.starts_with(&format!("ok  {QUICKSTART}")), "{out}");
    let mut all = vec![QUICKSTART.to_string()];
    for f in fixtures() {
        all.push(rel(&f.join("model.ple")));
        all.push(rel(&f.join("model_f16.ple")));
    }
    let args: Vec<&str> = std::iter::once("check")
        .chain(all.iter().map(String::as_str))
        .collect();
    let out = ok(&ple(&args));
    assert_eq!(out.lines().count(), all.len(), "{out}");
    assert!(ok(&ple(&["check", "-q", QUICKSTART])).is_empty());
}

/// A copy of the quickstart model with `edit` applied.
fn corrupted(dir: &TempDir, name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut bytes = std::fs::read(root().join(QUICKSTART)).unwrap();
    edit(&mut bytes);
    let p = dir.path(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn check_and_inspect_reject_bad_files() {
    let dir = TempDir::new("corrupt");
    let data_offset = {
        let b = std::fs::read(root().join(QUICKSTART)).unwrap();
        u64::from_le_bytes(b[40..48].try_into().unwrap()) as usize
    };
    let data = corrupted(&dir, "data.ple", |b| {
        let i = data_offset + 100;
        b[i] ^= 0x40;
    });
    let meta = corrupted(&dir, "meta.ple", |b| b[70] ^= 1);
    let truncated = corrupted(&dir, "short.ple", |b| b.truncate(b.len() - 64));
    let not_ple = corrupted(&dir, "text.ple", |b| {
        *b = b"hello world, this is not a model at all".repeat(4)
    });
    let missing = dir.path("missing.ple");

    fails(&ple(&["check", &data]), 1, "tensor data checksum mismatch");
    fails(&ple(&["check", &meta]), 1, "checksum mismatch");
    fails(&ple(&["check", &truncated]), 1, "truncated");
    fails(&ple(&["check", &not_ple]), 1, "not a .ple file");
    fails(&ple(&["check", &missing]), 1, "cannot read");
    fails(&ple(&["inspect", &missing]), 1, "No such file");
    fails(
        &ple(&["score", &missing, "-i", QUICKSTART_INPUTS]),
        1,
        "cannot read",
    );
    fails(&ple(&["bench", &missing]), 1, "cannot read");

    // inspect still describes a file whose data checksum fails, then exits 1.
    let o = ple(&["inspect", &data]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("DATA CORRUPT"), "{}", stdout(&o));
    assert!(ok(&ple(&["inspect", &data, "--no-verify-data"])).contains("data not verified"));

    // Several files: one line per bad file, plus a summary; exit 1.
    let o = ple(&["check", QUICKSTART, &data, &missing]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o).lines().count(), 1);
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 3, "{err}");
    assert!(err.contains("2 of 3 files failed"), "{err}");
}

// ---- score -------------------------------------------------------------------------------------

#[test]
fn score_npy_dir_matches_session_run() {
    let mut cases = vec![(root().join(QUICKSTART), root().join(QUICKSTART_INPUTS))];
    for f in fixtures() {
        cases.push((f.join("model.ple"), f.clone()));
        cases.push((f.join("model_f16.ple"), f.clone()));
    }
    for (model_path, dir) in cases {
        let model = Model::open(&model_path).unwrap();
        let (want, want_gates, rows) = reference(&model_path, &dir);
        let (m, d) = (rel(&model_path), rel(&dir));
        let gates = model.gate_width() > 0;
        let mut args = vec!["score", &m, "--input", &d, "--batch", "5"];
        if gates {
            args.push("--gates");
        }
        let out = ok(&ple(&args));
        let (header, vals) = parse_csv(&out);
        let names: Vec<String> = model
            .outputs()
            .flat_map(|(n, w)| {
                if w == 1 {
                    vec![n.to_string()]
                } else {
                    (0..w).map(|i| format!("{n}[{i}]")).collect()
                }
            })
            .collect();
        assert_eq!(&header[..names.len()], &names[..], "{m}");
        assert_eq!(
            header.len(),
            model.output_width() + if gates { model.gate_width() } else { 0 }
        );
        assert_eq!(vals.len(), header.len() * rows);
        let (s, g) = split_scores(
            &vals,
            model.output_width(),
            if gates { model.gate_width() } else { 0 },
        );
        assert_bits(&s, &want, &m);
        if gates {
            assert_eq!(
                header[names.len()],
                format!("gate.{}[0]", model.gates()[0].name)
            );
            assert_bits(&g, &want_gates, &format!("{m} gates"));
        }
    }
}

#[test]
fn quickstart_scores_match_torch() {
    // The bundled example: the CLI reproduces the torch model's own output.
    let out = ok(&ple(&["score", QUICKSTART, "--input", QUICKSTART_INPUTS]));
    let (header, vals) = parse_csv(&out);
    assert_eq!(header, ["ctr", "cvr"]);
    let expected = npy::read(root().join(QUICKSTART_INPUTS).join("expected.npy"))
        .unwrap()
        .to_f32();
    assert_eq!(vals.len(), expected.len());
    for (a, b) in vals.iter().zip(&expected) {
        assert!((a - b).abs() <= 1e-5, "{a} vs {b}");
    }
}

#[test]
fn score_with_threads_matches_one_thread() {
    // --threads N gives the session a pool; the scores do not change by a bit.
    let one = ok(&ple(&["score", QUICKSTART, "--input", QUICKSTART_INPUTS]));
    let two = ok(&ple(&[
        "score",
        QUICKSTART,
        "--input",
        QUICKSTART_INPUTS,
        "--threads",
        "2",
        "--batch",
        "1000",
    ]));
    assert_eq!(one, two);
    let o = ple(&[
        "score",
        QUICKSTART,
        "--input",
        QUICKSTART_INPUTS,
        "--threads",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--threads"), "{}", stderr(&o));
}

/// Writes the fixture inputs of `dir` as CSV (mixing one-cell and `name[i]` forms) and JSON lines.
fn text_inputs(model: &Model, dir: &Path) -> (String, String) {
    let (cols, rows) = load_inputs(model, dir);
    let mut header = Vec::new();
    for (i, f) in model.inputs().iter().enumerate() {
        let n = f.values_per_sample();
        if n > 1 && i % 2 == 1 {
            header.extend((0..n).map(|j| format!("{}[{j}]", f.name)));
        } else {
            header.push(f.name.to_string());
        }
    }
    header.push("label".into()); // not a model input: ignored
    let mut csv = header.join(",") + "\n";
    let mut jsonl = String::new();
    for r in 0..rows {
        let mut cells = Vec::new();
        let mut members = Vec::new();
        for (i, (f, c)) in model.inputs().iter().zip(&cols).enumerate() {
            let n = f.values_per_sample();
            let vals: Vec<String> = match c {
                Col::Ids(v) => v[r * n..(r + 1) * n]
                    .iter()
                    .map(|x| x.to_string())
                    .collect(),
                Col::Floats(v) => v[r * n..(r + 1) * n]
                    .iter()
                    .map(|x| format!("{x:e}"))
                    .collect(),
            };
            if n > 1 && i % 2 == 1 {
                cells.extend(vals.iter().cloned());
            } else if vals.len() == 1 {
                cells.push(vals[0].clone());
            } else {
                cells.push(format!(
                    "\"{}\"",
                    vals.join(if r % 2 == 0 { " " } else { "|" })
                ));
            }
            let value = if n == 1 && r % 2 == 0 {
                vals[0].clone()
            } else {
                format!("[{}]", vals.join(", "))
            };
            members.push(format!("\"{}\": {value}", f.name));
        }
        cells.push("1".into());
        csv += &(cells.join(",") + "\n");
        jsonl += &format!("{{{}, \"label\": 0}}\n", members.join(", "));
    }
    (csv, jsonl)
}

#[test]
fn score_csv_and_jsonl_match_session_run() {
    let tmp = TempDir::new("text");
    let mut cases = vec![(root().join(QUICKSTART), root().join(QUICKSTART_INPUTS))];
    cases.extend(fixtures().into_iter().map(|f| (f.join("model.ple"), f)));
    for (k, (model_path, dir)) in cases.into_iter().enumerate() {
        let model = Model::open(&model_path).unwrap();
        let (want, _, _) = reference(&model_path, &dir);
        let (csv, jsonl) = text_inputs(&model, &dir);
        let m = rel(&model_path);
        let csv_path = tmp.path(&format!("{k}.csv"));
        std::fs::write(&csv_path, &csv).unwrap();
        let (_, got) = parse_csv(&ok(&ple(&["score", &m, "--input", &csv_path])));
        assert_bits(&got, &want, &format!("{m} from CSV"));

        // JSON lines on stdin, JSON lines out.
        let out = ok(&ple_stdin(
            &["score", &m, "--input", "-", "--output-format", "jsonl"],
            &jsonl,
        ));
        let mut got = Vec::new();
        for line in out.lines() {
            let row: serde_json::Map<String, Value> = serde_json::from_str(line).unwrap();
            let names: Vec<&String> = row.keys().collect();
            let want_names: Vec<&str> = model.outputs().map(|(n, _)| n).collect();
            assert_eq!(names, want_names, "{line}");
            for (name, w) in model.outputs() {
                match &row[name] {
                    Value::Array(xs) => got.extend(xs.iter().map(f32_of)),
                    x if w == 1 => got.push(f32_of(x)),
                    other => panic!("{other}"),
                }
            }
        }
        assert_bits(&got, &want, &format!("{m} from JSON lines"));
    }
}

#[test]
fn score_named_npy_inputs_and_output_file() {
    let tmp = TempDir::new("named");
    let model_path = root().join(QUICKSTART);
    let model = Model::open(&model_path).unwrap();
    let (want, want_gates, _) = reference(&model_path, &root().join(QUICKSTART_INPUTS));
    let specs: Vec<String> = model
        .inputs()
        .iter()
        .map(|f| format!("{}={QUICKSTART_INPUTS}/in_{}.npy", f.name, f.name))
        .collect();
    let out_path = tmp.path("scores.jsonl");
    let mut args = vec!["score", QUICKSTART, "-o", &out_path, "--gates"];
    for s in &specs {
        args.extend(["--input", s]);
    }
    assert_eq!(ok(&ple(&args)), "");
    let text = std::fs::read_to_string(&out_path).unwrap();
    let (mut got, mut gates) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let row: serde_json::Map<String, Value> = serde_json::from_str(line).unwrap();
        for (k, v) in &row {
            match (k.as_str(), v) {
                ("gates", Value::Object(g)) => {
                    let names: Vec<&String> = g.keys().collect();
                    let want_names: Vec<&String> = model.gates().iter().map(|s| &s.name).collect();
                    assert_eq!(names, want_names);
                    for ws in g.values() {
                        gates.extend(ws.as_array().unwrap().iter().map(f32_of));
                    }
                }
                (_, x) => got.push(f32_of(x)),
            }
        }
    }
    assert_bits(&got, &want, "named npy");
    assert_bits(&gates, &want_gates, "named npy gates");

    // A failing run removes the output file it created.
    let bad = tmp.path("bad.csv");
    std::fs::write(
        &bad,
        "user_id,item_id,category,recent_items,price\n1,2,3,,x\n",
    )
    .unwrap();
    let out2 = tmp.path("out2.csv");
    fails(
        &ple(&["score", QUICKSTART, "-i", &bad, "-o", &out2]),
        1,
        "'x' is not a number",
    );
    assert!(!Path::new(&out2).exists());

    // Every input needs its NAME=FILE.
    let args = [
        "score", QUICKSTART, "--input", &specs[0], "--input", &specs[1],
    ];
    fails(&ple(&args), 2, "no --input category=FILE.npy");
}

#[test]
fn score_dense_model_single_npy() {
    let Some(dir) = fixtures().into_iter().find(|f| f.ends_with("dense_ple")) else {
        return;
    };
    let model_path = dir.join("model.ple");
    let model = Model::open(&model_path).unwrap();
    assert_eq!(model.inputs().len(), 1);
    let (want, _, _) = reference(&model_path, &dir);
    let npy_path = rel(&dir.join(format!("in_{}.npy", model.inputs()[0].name)));
    let (_, got) = parse_csv(&ok(&ple(&[
        "score",
        &rel(&model_path),
        "--input",
        &npy_path,
    ])));
    assert_bits(&got, &want, "dense single npy");
}

#[test]
fn score_sequence_padding_rules() {
    // rechub_ple2: 'hist' has pad id 0, 'tags' (max_len 4, sum pooling) has none.
    let Some(dir) = fixtures().into_iter().find(|f| f.ends_with("rechub_ple2")) else {
        return;
    };
    let m = rel(&dir.join("model.ple"));
    let model = Model::open(dir.join("model.ple")).unwrap();
    let header = "age,ctx,user,item,item_alt,hist,tags";
    let short_tags = format!("{header}\n0.5,1 2,3,4,5,6 7,1 2\n");
    fails(
        &ple_stdin(&["score", &m, "-i", "-"], &short_tags),
        1,
        "--pad-id",
    );
    let full = format!("{header}\n0.5,1 2,3,4,5,6 7,1 2 0 0\n");
    let want = ok(&ple_stdin(&["score", &m, "-i", "-"], &full));
    for pad in ["0", "tags=0"] {
        assert_eq!(
            ok(&ple_stdin(
                &["score", &m, "-i", "-", "--pad-id", pad],
                &short_tags
            )),
            want
        );
    }
    // The same row through the library.
    let mut s = Session::new(&model, 1).unwrap();
    let mut out = vec![0f32; model.output_width()];
    let cols = [
        Input::Floats(&[0.5]),
        Input::Floats(&[1.0, 2.0]),
        Input::Ids(&[3]),
        Input::Ids(&[4]),
        Input::Ids(&[5]),
        Input::Ids(&[6, 7, 0, 0, 0]),
        Input::Ids(&[1, 2, 0, 0]),
    ];
    s.run(&cols, 1, &mut out, None).unwrap();
    let (_, got) = parse_csv(&want);
    assert_bits(&got, &out, "padded row");
    fails(
        &ple_stdin(&["score", &m, "-i", "-", "--pad-id", "hist=0"], &short_tags),
        1,
        "--pad-id",
    );
    fails(
        &ple_stdin(&["score", &m, "-i", "-", "--pad-id", "age=0"], &short_tags),
        2,
        "not a sequence",
    );
    let long = format!("{header}\n0.5,1 2,3,4,5,1 2 3 4 5 6,1 2 0 0\n");
    fails(
        &ple_stdin(&["score", &m, "-i", "-"], &long),
        1,
        "max_len is 5",
    );
}

#[test]
fn score_bad_input_errors() {
    let h = "user_id,item_id,category,recent_items,price";
    let cases: &[(&str, &str)] = &[
        ("user_id,item_id,recent_items,price\n1,2,,0.5\n", "no column for model input 'category'"),
        (&format!("{h}\n1,2,3,,0.5\n1,200,3,,0.5\n"), "line 3: input 'item_id': id 200 is out of range"),
        (&format!("{h}\n1,2,3,1 99,0.5\n"), "input 'recent_items' (position 1): id 99"),
        (&format!("{h}\n1,2,3,,0.5,7\n"), "line 2: 6 fields, but the header has 5"),
        (&format!("{h}\n1.5,2,3,,0.5\n"), "'1.5' is not an integer id"),
        (&format!("{h}\n1,2,3,,\n"), "input 'price': missing value (expected one number)"),
        (&format!("{h}\n1,2,3,\"1 2,0.5\n"), "quoted field is never closed"),
        ("", "empty input"),
        ("{\"user_id\": 1}\n", "input 'item_id': missing"),
        ("{\"user_id\": 1, \"item_id\": 2, \"category\": 3, \"recent_items\": [], \"price\": \"x\"}\n", "'x' is not a number"),
        ("{\"user_id\": 1, \"item_id\": 2, \"category\": 3, \"recent_items\": [[1]], \"price\": 1}\n", "array items must be numbers"),
        ("{\"user_id\": 1,\n", "line 1: invalid JSON"),
        ("[1, 2]\n", "expected one JSON object per line"),
    ];
    for (input, needle) in cases {
        let o = ple_stdin(&["score", QUICKSTART, "--input", "-"], input);
        fails(&o, 1, needle);
        assert_eq!(
            stdout(&o),
            "",
            "nothing is written when the first batch fails"
        );
    }
    fails(
        &ple(&["score", QUICKSTART, "-i", "/nonexistent/x.csv"]),
        1,
        "cannot read /nonexistent/x.csv",
    );
    fails(
        &ple(&["score", QUICKSTART, "-i", "examples/models"]),
        1,
        "in_<feature>.npy",
    );
    fails(
        &ple(&[
            "score",
            QUICKSTART,
            "-i",
            &format!("{QUICKSTART_INPUTS}/in_price.npy"),
        ]),
        2,
        "this model has 5",
    );
    // No levels, no gates.
    if let Some(dir) = fixtures().into_iter().find(|f| f.ends_with("rechub_esmm")) {
        fails(
            &ple(&[
                "score",
                &rel(&dir.join("model.ple")),
                "-i",
                &rel(&dir),
                "--gates",
            ]),
            2,
            "has no gates",
        );
    }
}

#[test]
fn score_output_to_closed_pipe_is_quiet() {
    // 20,000 rows into `head -1`-like reader that closes stdout early.
    let mut csv = String::from("user_id,item_id,category,recent_items,price\n");
    for i in 0..20_000 {
        csv += &format!("{},{},{},{} {},0.5\n", i % 64, i % 61, i % 16, i % 7, i % 5);
    }
    let mut child = ple_cmd(&["score", QUICKSTART, "-i", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(csv.as_bytes());
    });
    let mut first = [0u8; 8];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_eq!(&first, b"ctr,cvr\n");
    assert_eq!(stderr(&o), "");
    assert!(o.status.success());
}

// ---- bench -------------------------------------------------------------------------------------

#[test]
fn bench_text_and_json() {
    let out = ok(&ple(&[
        "bench",
        QUICKSTART,
        "--batch",
        "1,8",
        "--seconds",
        "0.1",
        "--warmup",
        "0",
    ]));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("model quickstart: PLE"), "{out}");
    assert!(lines[1].contains("p50") && lines[1].contains("p99") && lines[1].contains("samples/s"));
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[2].trim_start().starts_with("1 "), "{out}");
    assert!(lines[3].trim_start().starts_with("8 "), "{out}");

    let out = ok(&ple(&[
        "bench",
        QUICKSTART,
        "--batch",
        "4",
        "--threads",
        "1,2",
        "--sessions",
        "2",
        "--seconds",
        "0.1",
        "--json",
    ]));
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    let num = |r: &Value, k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k}: {r}"));
    assert_eq!(num(&results[0], "threads"), 1.0);
    let r = &results[1];
    let num = |k: &str| num(r, k);
    assert_eq!(num("batch"), 4.0);
    assert_eq!(num("sessions"), 2.0);
    assert_eq!(num("threads"), 2.0);
    assert!(num("calls") >= 2.0);
    assert!(
        num("p50_us") > 0.0 && num("p50_us") <= num("p90_us") && num("p99_us") <= num("max_us")
    );
    assert!(num("samples_per_sec") > 0.0);
}

#[test]
fn bench_every_fixture() {
    // bench builds valid random inputs for any model: all kinds, pad ids, f32-routed ids.
    for f in fixtures() {
        for file in ["model.ple", "model_f16.ple"] {
            let m = rel(&f.join(file));
            let out = ok(&ple(&[
                "bench",
                &m,
                "--batch",
                "3",
                "--seconds",
                "0.02",
                "--warmup",
                "0",
            ]));
            assert_eq!(out.lines().count(), 3, "{m}: {out}");
        }
    }
}

/// `--warm` and `--lock` open the model resident (and locked), and `inspect` says so; the JSON
/// residency counts the whole file and its tables.
#[test]
fn inspect_reports_residency_of_a_warm_and_locked_model() {
    let text = ok(&ple(&[
        "inspect",
        QUICKSTART,
        "--warm",
        "--lock",
        "--no-verify-data",
    ]));
    let line = text
        .lines()
        .find(|l| l.starts_with("resident    "))
        .unwrap_or_else(|| panic!("no resident line:\n{text}"));
    assert!(
        line.contains("(100%); tables ") && line.ends_with("(100%), locked"),
        "{line}"
    );
    let json = ok(&ple(&[
        "inspect",
        "--json",
        "--warm",
        "--no-verify-data",
        QUICKSTART,
    ]));
    let v: Value = serde_json::from_str(&json).unwrap();
    let r = &v["residency"];
    let size = std::fs::metadata(root().join(QUICKSTART)).unwrap().len();
    assert_eq!(r["total_bytes"].as_u64(), Some(size), "{r}");
    assert_eq!(r["resident_bytes"].as_u64(), Some(size), "{r}");
    assert!(r["table_bytes"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["table_resident_bytes"], r["table_bytes"], "{r}");
    assert_eq!(r["locked"], false, "{r}");
}

// ---- gates -------------------------------------------------------------------------------------

#[test]
fn gates_report_matches_the_reference_gate_weights() {
    // The fixture's gates_ref.npy holds the float64 reference's gate weights for its inputs
    // (python/ple_runtime/reference.py, checked against torch-rechub): the CLI's per-expert means
    // are their column means, in gate-row order.
    let dir = root().join("tests/fixtures/rechub_ple3_dice");
    let model_path = dir.join("model.ple");
    let model = Model::open(&model_path).unwrap();
    let reference = npy::read(dir.join("gates_ref.npy")).unwrap();
    let (rows, gw) = (reference.shape[0], reference.shape[1]);
    assert_eq!(gw, model.gate_width());
    let reference = reference.to_f32();
    let tmp = TempDir::new("gates");
    let (csv_path, svg_path) = (tmp.path("g.csv"), tmp.path("g.svg"));
    let text = ok(&ple(&[
        "gates",
        &rel(&model_path),
        "--input",
        &rel(&dir),
        "--csv",
        &csv_path,
        "--svg",
        &svg_path,
    ]));
    assert!(text.starts_with(&format!(
        "gate report of '{}' over {rows} samples",
        model.name()
    )));
    assert!(
        text.contains("level 2") && text.contains("shared gate"),
        "{text}"
    );

    let csv = std::fs::read_to_string(&csv_path).unwrap();
    let lines: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(lines.len(), gw, "one row per gate column");
    let mut col = 0;
    for slot in model.gates() {
        let mut sum = 0.0;
        for j in 0..slot.width {
            let cells: Vec<&str> = lines[col + j].split(',').collect();
            assert_eq!(cells[0], slot.level.to_string());
            let gate = if slot.task.is_some() {
                "task "
            } else {
                "shared"
            };
            assert!(cells[1].starts_with(gate), "{}", lines[col + j]);
            let want = (0..rows)
                .map(|r| reference[r * gw + col + j] as f64)
                .sum::<f64>()
                / rows as f64;
            let got: f64 = cells[3].parse().unwrap();
            assert!(
                (got - want).abs() < 1e-5,
                "{}: {got} vs {want}",
                lines[col + j]
            );
            sum += got;
        }
        assert!((sum - 1.0).abs() < 1e-5, "gate {} sums to {sum}", slot.name);
        col += slot.width;
    }
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(
        svg.matches("<rect").count(),
        gw + 1,
        "a cell per gate column and the background"
    );
}

#[test]
fn gates_refuses_models_without_gates_and_bad_input() {
    let dir = root().join("tests/fixtures/rechub_shared_bottom");
    let o = ple(&["gates", &rel(&dir.join("model.ple")), "--input", &rel(&dir)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("has no gates"), "{}", stderr(&o));
    let o = ple(&["gates", QUICKSTART, "--input", "nope.csv"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}

#[test]
fn inspect_shows_each_layers_precision_and_the_int8_level() {
    use ple_testkit::synth::{self, Shape};
    let shape = Shape {
        expert_dims: vec![64, 32],
        tower_dims: vec![32],
        dense_width: 40,
        dtype: ple::DType::I8,
        ..Shape::default()
    };
    let dir = std::env::temp_dir().join(format!("ple-cli-int8-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("int8.ple");
    std::fs::write(&path, synth::ple(&shape, 3).to_bytes()).unwrap();
    let p = path.to_str().unwrap();
    let out = ok(&ple(&["inspect", p]));
    let level = Model::open(&path).unwrap().int8_level().name();
    for needle in [
        "format      .ple 1.1",
        "weights     mixed",
        &format!("int8 layers: {level}"),
        "→ 64 relu i8 → 32 relu i8",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
    let json: Value = serde_json::from_str(&ok(&ple(&["inspect", p, "--json"]))).unwrap();
    let text = json.to_string();
    assert!(
        text.contains("\"dtype\":\"i8\"") && text.contains("\"dtype\":\"f32\""),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
