//! `ple inspect MODEL`: what the file holds and what scoring it costs.

use std::fmt::Write as _;
use std::io::Write as _;

use super::args::Opt;
use super::json::Json;
use super::progress::Progress;
use super::{fmt, CliError};
use ple::model::graph::{Act, Graph, Mlp, OutputKind, TowerInput};
use ple::{InputKind, Model, SimdLevel};

pub const HELP: &str = "\
ple inspect — describe a .ple model

usage: ple inspect MODEL [--json] [--no-verify-data]

Prints the format version, weight dtype, file size, checksum status, the SIMD level scoring
would use, the inputs (name, kind, width, vocabulary, max_len, pooling, pad id), the outputs,
the graph (bottom, levels with their experts and gates, towers with widths and activations),
the parameter count, FLOPs per sample and session scratch memory per sample.

options:
  --json                   print one JSON object instead of text (fields: docs/CLI.md)
  --no-verify-data         skip the data checksum (it reads every byte of the file)
  --simd LEVEL             report this kernel level instead of the best available
  --no-mmap                read the file into memory instead of mapping it
  -h, --help               this help

Exit code 1 if the file cannot be read, is invalid, or its data checksum does not match.";

const OPTS: &[Opt] = &[
    Opt::flag("json"),
    Opt::flag("no-verify-data"),
    super::MODEL_OPTS[0],
    super::MODEL_OPTS[1],
];

/// Data checksum status.
enum DataCrc {
    Ok,
    Skipped,
    Mismatch(String),
}

pub fn run(args: &[String]) -> Result<(), CliError> {
    let Some(p) = super::parse_or_help("inspect", args, OPTS, HELP)? else {
        return Ok(());
    };
    let path = super::one_model("inspect", &p)?;
    let model = super::open_model(&path, &super::load_options(&p)?)?;
    let crc = if p.flag("no-verify-data") {
        DataCrc::Skipped
    } else {
        match verify_with_progress(&model) {
            Ok(()) => DataCrc::Ok,
            Err(e @ ple::Error::Checksum { .. }) => DataCrc::Mismatch(e.to_string()),
            Err(e) => return Err(super::model_error(&path, e)),
        }
    };
    let text = if p.flag("json") {
        to_json(&model, &path, &crc).pretty()
    } else {
        to_text(&model, &path, &crc)
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").map_err(|e| CliError::write("stdout", e))?;
    drop(out);
    match crc {
        DataCrc::Mismatch(msg) => Err(CliError::failed(format!("{path}: {msg}"))),
        _ => Ok(()),
    }
}

/// Verifies the data checksum, with a progress bar for files of 64 MiB and more.
pub(crate) fn verify_with_progress(model: &Model) -> ple::Result<()> {
    let mut bar = Progress::new("checksum", model.file_size() >= 64 << 20);
    let r = model.verify_data(|done, total| {
        let note = format!("{} / {}", fmt::bytes(done), fmt::bytes(total));
        bar.update(
            if total == 0 {
                1.0
            } else {
                done as f64 / total as f64
            },
            &note,
        );
    });
    bar.finish();
    r
}

/// The model family, inferred from the structure (the file does not record it).
pub(crate) fn architecture(g: &Graph) -> String {
    let base = match g.levels.len() {
        0 if g.bottom.is_some() => "shared-bottom",
        0 if g
            .outputs
            .iter()
            .any(|o| matches!(o.kind, OutputKind::Product(..))) =>
        {
            "ESMM"
        }
        0 => "independent towers",
        1 if g.levels[0].n_task_experts == 0 => "MMoE",
        1 => "CGC (one-level PLE)",
        _ => "PLE",
    };
    if g.bottom.is_some() && !g.levels.is_empty() {
        format!("{base} over a shared bottom")
    } else {
        base.to_string()
    }
}

fn act_text(act: &Act) -> String {
    match act {
        Act::LeakyRelu(s) => format!("leaky_relu({s})"),
        a => a.name().to_string(),
    }
}

/// `40 → 64 relu → 32 relu → 1` (identity activations are not written).
fn mlp_text(m: &Mlp) -> String {
    let mut s = m.in_width().to_string();
    for l in &m.layers {
        let _ = write!(s, " → {}", l.n);
        if !matches!(l.act, Act::Identity) {
            let _ = write!(s, " {}", act_text(&l.act));
        }
    }
    s
}

fn tower_input_text(input: TowerInput, task: usize, levels: usize) -> String {
    match input {
        TowerInput::X0 => "x0".into(),
        TowerInput::Bottom => "the bottom".into(),
        TowerInput::LastLevel => format!("level {} (task {task})", levels - 1),
    }
}

fn dtype_text(model: &Model) -> &'static str {
    model.weight_dtype().map_or("mixed f32/f16", |d| d.name())
}

fn checksum_text(crc: &DataCrc) -> String {
    match crc {
        DataCrc::Ok => "metadata ok, data ok".into(),
        DataCrc::Skipped => "metadata ok, data not verified (--no-verify-data)".into(),
        DataCrc::Mismatch(m) => format!("metadata ok, DATA CORRUPT: {m}"),
    }
}

fn to_text(model: &Model, path: &str, crc: &DataCrc) -> String {
    let g = model.graph();
    let mut s = String::new();
    let (major, minor) = model.format_version();
    let scratch = model.scratch_floats_per_sample() * 4;
    let _ = writeln!(s, "model       {}  ({path})", model.name());
    let _ = writeln!(s, "format      .ple {major}.{minor}");
    let _ = writeln!(
        s,
        "size        {} bytes ({})",
        fmt::thousands(model.file_size()),
        fmt::bytes(model.file_size())
    );
    let _ = writeln!(s, "weights     {}", dtype_text(model));
    let _ = writeln!(s, "checksums   {}", checksum_text(crc));
    let _ = writeln!(
        s,
        "simd        {} (available: {})",
        model.simd_level().name(),
        super::available_levels()
    );
    let _ = writeln!(s, "parameters  {}", fmt::thousands(model.parameter_count()));
    let _ = writeln!(
        s,
        "flops       {} per sample",
        fmt::thousands(model.flops_per_sample())
    );
    let _ = writeln!(
        s,
        "scratch     {} bytes per sample (a session holds up to {} samples: {})",
        fmt::thousands(scratch as u64),
        model.tile_rows(),
        fmt::bytes((scratch * model.tile_rows()) as u64)
    );

    // Inputs.
    let _ = writeln!(
        s,
        "\ninputs ({}, x0 width {})",
        g.features.len(),
        g.x0_width
    );
    let name_w = g
        .features
        .iter()
        .map(|f| f.name.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        s,
        "  {:name_w$}  {:8}  {:>5}  {:>7}  {:>9}  {:7}  pad_id",
        "name", "kind", "width", "max_len", "vocab", "pooling"
    );
    for f in &g.features {
        let dash = || "-".to_string();
        let max_len = if f.kind == InputKind::Sequence {
            f.max_len.to_string()
        } else {
            dash()
        };
        let vocab = if f.kind == InputKind::Dense {
            dash()
        } else {
            fmt::thousands(f.vocab() as u64)
        };
        let pooling = f.pooling.map_or("-", |p| p.name());
        let pad = f.pad_id.map_or_else(dash, |p| p.to_string());
        let mut notes = String::new();
        if let Some(t) = f.table {
            if t.dtype != ple::DType::F32 {
                let _ = write!(notes, "  ({} table)", t.dtype.name());
            }
        }
        if f.ids_through_f32 {
            notes.push_str("  (ids pass through f32)");
        }
        let _ = writeln!(
            s,
            "  {:name_w$}  {:8}  {:>5}  {:>7}  {:>9}  {:7}  {pad}{notes}",
            f.name,
            f.kind.name(),
            f.width,
            max_len,
            vocab,
            pooling
        );
    }
    if g.x0_order.iter().enumerate().any(|(i, &f)| i != f) {
        let order: Vec<&str> = g.x0_order.iter().map(|&f| &*g.features[f].name).collect();
        let _ = writeln!(s, "  x0 concatenation order: {}", order.join(", "));
    }

    // Outputs.
    let _ = writeln!(
        s,
        "\noutputs ({}, {} floats per sample)",
        g.outputs.len(),
        model.output_width()
    );
    for o in &g.outputs {
        let what = match o.kind {
            OutputKind::Tower(t) => format!("tower {t}"),
            OutputKind::Product(a, b) => format!("tower {a} × tower {b}"),
        };
        let _ = writeln!(s, "  {:12} width {}  = {what}", o.name, o.width);
    }

    // Graph.
    let _ = writeln!(
        s,
        "\ngraph       {}, {} task{}, {} level{}",
        architecture(g),
        g.n_tasks,
        if g.n_tasks == 1 { "" } else { "s" },
        g.levels.len(),
        if g.levels.len() == 1 { "" } else { "s" }
    );
    if let Some(b) = g.bottom {
        let _ = writeln!(s, "  bottom    {}", mlp_text(&g.mlps[b]));
    }
    for (l, level) in g.levels.iter().enumerate() {
        let _ = writeln!(
            s,
            "  level {l}   {} expert{} per task × {} tasks + {} shared, expert width {}",
            level.n_task_experts,
            if level.n_task_experts == 1 { "" } else { "s" },
            g.n_tasks,
            level.shared_experts.len(),
            level.width
        );
        let experts: Vec<(String, usize)> = level
            .task_experts
            .iter()
            .enumerate()
            .flat_map(|(t, es)| {
                es.iter()
                    .enumerate()
                    .map(move |(j, &e)| (format!("task {t} expert {j}"), e))
            })
            .chain(
                level
                    .shared_experts
                    .iter()
                    .enumerate()
                    .map(|(j, &e)| (format!("shared expert {j}"), e)),
            )
            .collect();
        let shapes: Vec<String> = experts.iter().map(|&(_, e)| mlp_text(&g.mlps[e])).collect();
        if shapes.iter().all(|x| *x == shapes[0]) {
            let _ = writeln!(s, "    experts ({})  {}", experts.len(), shapes[0]);
        } else {
            for ((what, _), shape) in experts.iter().zip(&shapes) {
                let _ = writeln!(s, "    {what}: {shape}");
            }
        }
        for (t, &gm) in level.task_gates.iter().enumerate() {
            let _ = writeln!(s, "    gate task {t}  {}, softmax", mlp_text(&g.mlps[gm]));
        }
        if let Some(gm) = level.shared_gate {
            let _ = writeln!(s, "    gate shared  {}, softmax", mlp_text(&g.mlps[gm]));
        }
    }
    for (t, tower) in g.towers.iter().enumerate() {
        let _ = writeln!(
            s,
            "  tower {t}   reads {}: {}{}",
            tower_input_text(tower.input, t, g.levels.len()),
            mlp_text(&g.mlps[tower.mlp]),
            if tower.sigmoid { ", sigmoid" } else { "" }
        );
    }
    if !model.gates().is_empty() {
        let names: Vec<String> = model
            .gates()
            .iter()
            .map(|gs| format!("{} ({})", gs.name, gs.width))
            .collect();
        let _ = writeln!(
            s,
            "  gate weights ({} floats per sample with --gates): {}",
            model.gate_width(),
            names.join(", ")
        );
    }
    s.pop(); // the last newline; println adds it back
    s
}

fn mlp_json(m: &Mlp) -> Json {
    let layers = m
        .layers
        .iter()
        .map(|l| {
            let mut members = vec![
                ("in", Json::int(l.k as u64)),
                ("out", Json::int(l.n as u64)),
                ("activation", Json::str(l.act.name())),
                ("bias", Json::Bool(l.bias.is_some())),
                ("dtype", Json::str(l.weight.dtype.name())),
            ];
            if let Act::LeakyRelu(slope) = l.act {
                members.push(("slope", Json::float32(slope)));
            }
            Json::obj(members)
        })
        .collect();
    Json::obj([("layers", Json::Arr(layers))])
}

fn to_json(model: &Model, path: &str, crc: &DataCrc) -> Json {
    let g = model.graph();
    let (major, minor) = model.format_version();
    let inputs = g
        .features
        .iter()
        .map(|f| {
            Json::obj([
                ("name", Json::str(&*f.name)),
                ("kind", Json::str(f.kind.name())),
                ("width", Json::int(f.width as u64)),
                ("values_per_sample", Json::int(f.values_per_sample() as u64)),
                (
                    "max_len",
                    Json::opt((f.kind == InputKind::Sequence).then(|| Json::int(f.max_len as u64))),
                ),
                (
                    "vocab",
                    Json::opt((f.kind != InputKind::Dense).then(|| Json::int(f.vocab() as u64))),
                ),
                ("pooling", Json::opt(f.pooling.map(|p| Json::str(p.name())))),
                ("pad_id", Json::opt(f.pad_id.map(Json::int))),
                (
                    "table_dtype",
                    Json::opt(f.table.map(|t| Json::str(t.dtype.name()))),
                ),
                ("ids_through_f32", Json::Bool(f.ids_through_f32)),
            ])
        })
        .collect();
    let outputs = g
        .outputs
        .iter()
        .map(|o| {
            let (kind, towers) = match o.kind {
                OutputKind::Tower(t) => ("tower", vec![Json::int(t as u64)]),
                OutputKind::Product(a, b) => {
                    ("product", vec![Json::int(a as u64), Json::int(b as u64)])
                }
            };
            Json::obj([
                ("name", Json::str(&*o.name)),
                ("width", Json::int(o.width as u64)),
                ("kind", Json::str(kind)),
                ("towers", Json::Arr(towers)),
            ])
        })
        .collect();
    let mlps = |ids: &[usize]| Json::Arr(ids.iter().map(|&m| mlp_json(&g.mlps[m])).collect());
    let levels = g
        .levels
        .iter()
        .map(|l| {
            Json::obj([
                ("experts_per_task", Json::int(l.n_task_experts as u64)),
                (
                    "shared_experts_count",
                    Json::int(l.shared_experts.len() as u64),
                ),
                ("expert_width", Json::int(l.width as u64)),
                (
                    "task_experts",
                    Json::Arr(l.task_experts.iter().map(|es| mlps(es)).collect()),
                ),
                ("shared_experts", mlps(&l.shared_experts)),
                ("task_gates", mlps(&l.task_gates)),
                (
                    "shared_gate",
                    Json::opt(l.shared_gate.map(|m| mlp_json(&g.mlps[m]))),
                ),
            ])
        })
        .collect();
    let towers = g
        .towers
        .iter()
        .map(|t| {
            let input = match t.input {
                TowerInput::X0 => "x0",
                TowerInput::Bottom => "bottom",
                TowerInput::LastLevel => "last_level",
            };
            Json::obj([
                ("input", Json::str(input)),
                ("width", Json::int(g.mlps[t.mlp].out_width() as u64)),
                ("sigmoid", Json::Bool(t.sigmoid)),
                ("mlp", mlp_json(&g.mlps[t.mlp])),
            ])
        })
        .collect();
    let gates = model
        .gates()
        .iter()
        .map(|gs| {
            Json::obj([
                ("name", Json::str(&gs.name)),
                ("level", Json::int(gs.level as u64)),
                ("task", Json::opt(gs.task.map(|t| Json::int(t as u64)))),
                ("width", Json::int(gs.width as u64)),
            ])
        })
        .collect();
    let data = match crc {
        DataCrc::Ok => "ok",
        DataCrc::Skipped => "not_verified",
        DataCrc::Mismatch(_) => "mismatch",
    };
    Json::obj([
        ("path", Json::str(path)),
        ("name", Json::str(model.name())),
        ("format_version", Json::str(format!("{major}.{minor}"))),
        ("file_size", Json::int(model.file_size())),
        (
            "weight_dtype",
            Json::str(model.weight_dtype().map_or("mixed", |d| d.name())),
        ),
        (
            "checksums",
            Json::obj([("metadata", Json::str("ok")), ("data", Json::str(data))]),
        ),
        ("simd", Json::str(model.simd_level().name())),
        (
            "simd_available",
            Json::Arr(
                SimdLevel::available()
                    .iter()
                    .map(|l| Json::str(l.name()))
                    .collect(),
            ),
        ),
        ("parameters", Json::int(model.parameter_count())),
        ("flops_per_sample", Json::int(model.flops_per_sample())),
        (
            "scratch_bytes_per_sample",
            Json::int(model.scratch_floats_per_sample() as u64 * 4),
        ),
        ("tile_rows", Json::int(model.tile_rows() as u64)),
        ("architecture", Json::str(architecture(g))),
        ("inputs", Json::Arr(inputs)),
        (
            "x0_order",
            Json::Arr(
                g.x0_order
                    .iter()
                    .map(|&f| Json::str(&*g.features[f].name))
                    .collect(),
            ),
        ),
        ("x0_width", Json::int(g.x0_width as u64)),
        ("outputs", Json::Arr(outputs)),
        ("output_width", Json::int(model.output_width() as u64)),
        ("n_tasks", Json::int(g.n_tasks as u64)),
        ("bottom", Json::opt(g.bottom.map(|m| mlp_json(&g.mlps[m])))),
        ("levels", Json::Arr(levels)),
        ("towers", Json::Arr(towers)),
        ("gates", Json::Arr(gates)),
        ("gate_width", Json::int(model.gate_width() as u64)),
    ])
}
