//! `ple inspect MODEL`: what the file holds and what scoring it costs.

use std::fmt::Write as _;

use serde::Serialize;

use crate::args::InspectArgs;
use crate::error::CliError;
use crate::fmt;
use crate::progress::Progress;
use ple::model::graph::{Act, Graph, Mlp, Node, NodeKind, OutputKind, Source};
use ple::{InputKind, Model, Residency, SimdLevel};

/// Data checksum status.
enum DataCrc {
    Ok,
    Skipped,
    Mismatch(String),
}

pub fn run(args: &InspectArgs) -> Result<(), CliError> {
    let path = &args.model;
    let model = crate::open_model(path, &crate::load_options(&args.load)?)?;
    // Before the data checksum reads the whole file.
    let residency = model.residency().map_err(|e| crate::model_error(path, e))?;
    let crc = if args.no_verify_data {
        DataCrc::Skipped
    } else {
        match verify_with_progress(&model) {
            Ok(()) => DataCrc::Ok,
            Err(e @ ple::Error::Checksum { .. }) => DataCrc::Mismatch(e.to_string()),
            Err(e) => return Err(crate::model_error(path, e)),
        }
    };
    let text = if args.json {
        let report = InspectReport::new(&model, path, &crc, &residency);
        serde_json::to_string_pretty(&report).expect("the report serializes")
    } else {
        to_text(&model, path, &crc, &residency)
    };
    crate::print_stdout(&text)?;
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
    let base = if g.bottom.is_some() && !g.levels.is_empty() {
        format!("{base} over a shared bottom")
    } else {
        base.to_string()
    };
    if g.nodes.is_empty() {
        return base;
    }
    let attention = (g.nodes.iter())
        .filter(|n| matches!(n.kind, NodeKind::Attention { .. }))
        .count();
    let nodes = format!("{} graph nodes, {attention} attention", g.nodes.len());
    if g.levels.is_empty() && g.bottom.is_none() && attention > 0 {
        // Per-task MLPs chained by attention over the previous task's transferred vector.
        format!("task chain with attention transfer (AITM-like; {nodes})")
    } else {
        format!("{base} + {nodes}")
    }
}

/// What a node or tower reads: `x0`, `the bottom`, `level 1 (task 0)`, `node 3`.
fn source_text(source: Source, levels: usize) -> String {
    match source {
        Source::X0 => "x0".into(),
        Source::Bottom => "the bottom".into(),
        Source::Level(task) => format!("level {} (task {task})", levels.saturating_sub(1)),
        Source::Node(i) => format!("node {i}"),
    }
}

/// `x0` / `bottom` / `last_level` / `node` for `--json`.
fn source_kind(source: Source) -> &'static str {
    match source {
        Source::X0 => "x0",
        Source::Bottom => "bottom",
        Source::Level(_) => "last_level",
        Source::Node(_) => "node",
    }
}

/// `mlp 16 → 8 relu` or `attention over node 1, node 2 (temperature 2.828427): query …`.
fn node_text(g: &Graph, node: &Node) -> String {
    let inputs: Vec<String> = (node.inputs.iter())
        .map(|&s| source_text(s, g.levels.len()))
        .collect();
    match node.kind {
        NodeKind::Mlp(m) => format!("reads {}: {}", inputs[0], mlp_text(&g.mlps[m])),
        NodeKind::Attention {
            query,
            key,
            value,
            temperature,
        } => format!(
            "attention over {} (logits q·k / {temperature}, softmax): query {}, key {}, value {}",
            inputs.join(", "),
            mlp_text(&g.mlps[query]),
            mlp_text(&g.mlps[key]),
            mlp_text(&g.mlps[value])
        ),
    }
}

fn act_text(act: &Act) -> String {
    match act {
        Act::LeakyRelu(s) => format!("leaky_relu({s})"),
        a => a.name().to_string(),
    }
}

/// `40 → 64 relu → 32 relu → 1` (identity activations are not written); a layer whose weights are
/// not f32 says so: `40 → 64 relu i8 → 1`, and an int8 layer with input scales (format 1.2):
/// `40 → 64 relu i8 scaled → 1`.
fn mlp_text(m: &Mlp) -> String {
    let mut s = m.in_width().to_string();
    for l in &m.layers {
        let _ = write!(s, " → {}", l.n);
        if !matches!(l.act, Act::Identity) {
            let _ = write!(s, " {}", act_text(&l.act));
        }
        if l.weight.dtype != ple::DType::F32 {
            let _ = write!(s, " {}", l.weight.dtype.name());
        }
        if l.input_scale.is_some() {
            s.push_str(" scaled");
        }
    }
    s
}

fn dtype_text(model: &Model) -> &'static str {
    model.weight_dtype().map_or("mixed", |d| d.name())
}

/// "1.2 GiB of 4.0 GiB (30%); tables 1.1 GiB of 3.9 GiB (28%)[, locked]".
fn residency_text(model: &Model, r: &Residency) -> String {
    let part = |have: u64, of: u64| {
        let pct = if of == 0 {
            100.0
        } else {
            100.0 * have as f64 / of as f64
        };
        format!("{} of {} ({pct:.0}%)", fmt::bytes(have), fmt::bytes(of))
    };
    format!(
        "{}; tables {}{}",
        part(r.resident_bytes, r.total_bytes),
        part(r.table_resident_bytes, r.table_bytes),
        if model.is_locked() { ", locked" } else { "" }
    )
}

fn checksum_text(crc: &DataCrc) -> String {
    match crc {
        DataCrc::Ok => "metadata ok, data ok".into(),
        DataCrc::Skipped => "metadata ok, data not verified (--no-verify-data)".into(),
        DataCrc::Mismatch(m) => format!("metadata ok, DATA CORRUPT: {m}"),
    }
}

fn to_text(model: &Model, path: &str, crc: &DataCrc, residency: &Residency) -> String {
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
    let _ = writeln!(s, "resident    {}", residency_text(model, residency));
    let _ = writeln!(
        s,
        "simd        {} (available: {}){}",
        model.simd_level().name(),
        crate::available_levels(),
        if model.has_int8_layers() {
            format!("; int8 layers: {}", model.int8_level().name())
        } else {
            String::new()
        }
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
    for (i, node) in g.nodes.iter().enumerate() {
        let _ = writeln!(s, "  node {i}    {}", node_text(g, node));
    }
    for (t, tower) in g.towers.iter().enumerate() {
        let _ = writeln!(
            s,
            "  tower {t}   reads {}: {}{}",
            source_text(tower.input, g.levels.len()),
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

// ---- `--json`: the fields docs/CLI.md lists, in that order ---------------------------------

#[derive(Serialize)]
struct ResidencyReport {
    total_bytes: u64,
    resident_bytes: u64,
    table_bytes: u64,
    table_resident_bytes: u64,
    locked: bool,
}

#[derive(Serialize)]
struct InspectReport<'a> {
    path: &'a str,
    name: &'a str,
    format_version: String,
    file_size: u64,
    weight_dtype: &'static str,
    checksums: Checksums,
    simd: &'static str,
    simd_available: Vec<&'static str>,
    residency: ResidencyReport,
    parameters: u64,
    flops_per_sample: u64,
    scratch_bytes_per_sample: usize,
    tile_rows: usize,
    architecture: String,
    inputs: Vec<InputReport<'a>>,
    x0_order: Vec<&'a str>,
    x0_width: usize,
    outputs: Vec<OutputReport<'a>>,
    output_width: usize,
    n_tasks: usize,
    bottom: Option<MlpReport>,
    levels: Vec<LevelReport>,
    /// Graph nodes (format 1.3); omitted when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    nodes: Vec<NodeReport>,
    towers: Vec<TowerReport>,
    gates: Vec<GateReport<'a>>,
    gate_width: usize,
}

#[derive(Serialize)]
struct Checksums {
    metadata: &'static str,
    /// `ok`, `not_verified` or `mismatch`.
    data: &'static str,
}

#[derive(Serialize)]
struct InputReport<'a> {
    name: &'a str,
    kind: &'static str,
    width: usize,
    values_per_sample: usize,
    max_len: Option<usize>,
    vocab: Option<usize>,
    pooling: Option<&'static str>,
    pad_id: Option<i64>,
    table_dtype: Option<&'static str>,
    ids_through_f32: bool,
}

#[derive(Serialize)]
struct OutputReport<'a> {
    name: &'a str,
    width: usize,
    /// `tower` or `product`.
    kind: &'static str,
    towers: Vec<usize>,
}

#[derive(Serialize)]
struct MlpReport {
    layers: Vec<LayerReport>,
}

#[derive(Serialize)]
struct LayerReport {
    #[serde(rename = "in")]
    inputs: usize,
    out: usize,
    activation: &'static str,
    bias: bool,
    dtype: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    slope: Option<f32>,
}

#[derive(Serialize)]
struct LevelReport {
    experts_per_task: usize,
    shared_experts_count: usize,
    expert_width: usize,
    task_experts: Vec<Vec<MlpReport>>,
    shared_experts: Vec<MlpReport>,
    task_gates: Vec<MlpReport>,
    shared_gate: Option<MlpReport>,
}

#[derive(Serialize)]
struct TowerReport {
    /// `x0`, `bottom`, `last_level` or `node`.
    input: &'static str,
    /// The node read, when `input` is `node`.
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<usize>,
    width: usize,
    sigmoid: bool,
    mlp: MlpReport,
}

#[derive(Serialize)]
struct NodeReport {
    /// `mlp` or `attention`.
    op: &'static str,
    /// Each input: `x0`, `bottom`, `last_level:<task>` or `node:<index>`.
    inputs: Vec<String>,
    width: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    mlp: Option<MlpReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<MlpReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<MlpReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<MlpReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
}

impl NodeReport {
    fn new(g: &Graph, node: &Node) -> NodeReport {
        let mlp = |m: usize| Some(MlpReport::new(&g.mlps[m]));
        let inputs = (node.inputs.iter())
            .map(|&s| match s {
                Source::Level(t) => format!("last_level:{t}"),
                Source::Node(i) => format!("node:{i}"),
                other => source_kind(other).to_string(),
            })
            .collect();
        let mut r = NodeReport {
            op: "mlp",
            inputs,
            width: node.width,
            mlp: None,
            query: None,
            key: None,
            value: None,
            temperature: None,
        };
        match node.kind {
            NodeKind::Mlp(m) => r.mlp = mlp(m),
            NodeKind::Attention {
                query,
                key,
                value,
                temperature,
            } => {
                r.op = "attention";
                (r.query, r.key, r.value) = (mlp(query), mlp(key), mlp(value));
                r.temperature = Some(temperature);
            }
        }
        r
    }
}

#[derive(Serialize)]
struct GateReport<'a> {
    name: &'a str,
    level: usize,
    task: Option<usize>,
    width: usize,
}

impl MlpReport {
    fn new(m: &Mlp) -> MlpReport {
        let layers = m
            .layers
            .iter()
            .map(|l| LayerReport {
                inputs: l.k,
                out: l.n,
                activation: l.act.name(),
                bias: l.bias.is_some(),
                dtype: l.weight.dtype.name(),
                slope: match l.act {
                    Act::LeakyRelu(slope) => Some(slope),
                    _ => None,
                },
            })
            .collect();
        MlpReport { layers }
    }
}

impl<'a> InspectReport<'a> {
    fn new(
        model: &'a Model,
        path: &'a str,
        crc: &DataCrc,
        residency: &Residency,
    ) -> InspectReport<'a> {
        let g = model.graph();
        let (major, minor) = model.format_version();
        let mlp = |m: usize| MlpReport::new(&g.mlps[m]);
        let mlps = |ids: &[usize]| ids.iter().map(|&m| mlp(m)).collect::<Vec<_>>();
        let inputs = g
            .features
            .iter()
            .map(|f| InputReport {
                name: &f.name,
                kind: f.kind.name(),
                width: f.width,
                values_per_sample: f.values_per_sample(),
                max_len: (f.kind == InputKind::Sequence).then_some(f.max_len),
                vocab: (f.kind != InputKind::Dense).then(|| f.vocab()),
                pooling: f.pooling.map(|p| p.name()),
                pad_id: f.pad_id,
                table_dtype: f.table.map(|t| t.dtype.name()),
                ids_through_f32: f.ids_through_f32,
            })
            .collect();
        let outputs = g
            .outputs
            .iter()
            .map(|o| {
                let (kind, towers) = match o.kind {
                    OutputKind::Tower(t) => ("tower", vec![t]),
                    OutputKind::Product(a, b) => ("product", vec![a, b]),
                };
                OutputReport {
                    name: &o.name,
                    width: o.width,
                    kind,
                    towers,
                }
            })
            .collect();
        let levels = g
            .levels
            .iter()
            .map(|l| LevelReport {
                experts_per_task: l.n_task_experts,
                shared_experts_count: l.shared_experts.len(),
                expert_width: l.width,
                task_experts: l.task_experts.iter().map(|es| mlps(es)).collect(),
                shared_experts: mlps(&l.shared_experts),
                task_gates: mlps(&l.task_gates),
                shared_gate: l.shared_gate.map(mlp),
            })
            .collect();
        let towers = g
            .towers
            .iter()
            .map(|t| TowerReport {
                input: source_kind(t.input),
                node: match t.input {
                    Source::Node(i) => Some(i),
                    _ => None,
                },
                width: g.mlps[t.mlp].out_width(),
                sigmoid: t.sigmoid,
                mlp: mlp(t.mlp),
            })
            .collect();
        let gates = model
            .gates()
            .iter()
            .map(|gs| GateReport {
                name: &gs.name,
                level: gs.level,
                task: gs.task,
                width: gs.width,
            })
            .collect();
        InspectReport {
            path,
            name: model.name(),
            format_version: format!("{major}.{minor}"),
            file_size: model.file_size(),
            weight_dtype: model.weight_dtype().map_or("mixed", |d| d.name()),
            checksums: Checksums {
                metadata: "ok",
                data: match crc {
                    DataCrc::Ok => "ok",
                    DataCrc::Skipped => "not_verified",
                    DataCrc::Mismatch(_) => "mismatch",
                },
            },
            simd: model.simd_level().name(),
            simd_available: SimdLevel::available().iter().map(|l| l.name()).collect(),
            residency: ResidencyReport {
                total_bytes: residency.total_bytes,
                resident_bytes: residency.resident_bytes,
                table_bytes: residency.table_bytes,
                table_resident_bytes: residency.table_resident_bytes,
                locked: model.is_locked(),
            },
            parameters: model.parameter_count(),
            flops_per_sample: model.flops_per_sample(),
            scratch_bytes_per_sample: model.scratch_floats_per_sample() * 4,
            tile_rows: model.tile_rows(),
            architecture: architecture(g),
            inputs,
            x0_order: g.x0_order.iter().map(|&f| &*g.features[f].name).collect(),
            x0_width: g.x0_width,
            outputs,
            output_width: model.output_width(),
            n_tasks: g.n_tasks,
            bottom: g.bottom.map(mlp),
            levels,
            nodes: g.nodes.iter().map(|n| NodeReport::new(g, n)).collect(),
            towers,
            gates,
            gate_width: model.gate_width(),
        }
    }
}
