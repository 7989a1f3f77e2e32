//! `ple gates MODEL --input DATA`: how the gates use the experts over real inputs — per level and
//! gate, each expert's mean weight and spread, the gate's entropy, and warnings for unused
//! experts, tasks that ignore their own experts and collapsed gates. The same report as the
//! Python package's `gate_report` (same labels, same thresholds).

use std::fmt::Write as _;

use crate::args::GatesArgs;
use crate::error::CliError;
use crate::input::{self, Batch, InputSpec};
use ple::model::graph::OutputKind;
use ple::{Model, Session};

/// An expert whose mean weight is below this in every gate that can use it is unused.
const UNUSED_EXPERT: f64 = 0.01;
/// A task gate giving its own experts less than this in total ignores them.
const IGNORED_OWN: f64 = 0.05;
/// A gate whose mean entropy is below this fraction of a uniform gate's has collapsed.
const COLLAPSED_ENTROPY: f64 = 0.05;

/// One gate over all the rows read.
struct GateStats {
    level: usize,
    /// "task NAME" or "shared".
    gate: String,
    experts: Vec<String>,
    mean: Vec<f64>,
    std: Vec<f64>,
    /// Mean entropy in nats, and as a fraction of ln(n_experts).
    entropy: f64,
    normalized: f64,
}

pub fn run(args: &GatesArgs) -> Result<(), CliError> {
    let model = crate::open_model(&args.model, &crate::load_options(&args.load)?)?;
    if model.gate_width() == 0 {
        return Err(CliError::failed(format!(
            "model '{}' has no gates (it has no expert levels)",
            model.name()
        )));
    }
    let specs = InputSpec::for_model(&model, &args.pad_ids)?;
    let mut source = input::open(&args.inputs, args.input_format, &specs)?;
    let (rows, stats) = accumulate(&model, source.as_mut(), &specs, args.batch)?;
    if rows == 0 {
        return Err(CliError::failed("the input has no rows"));
    }
    let warnings = warnings(&model, &stats);
    if let Some(path) = &args.csv {
        write_file(path, &to_csv(&stats))?;
    }
    if let Some(path) = &args.svg {
        write_file(path, &to_svg(model.name(), rows, &stats))?;
    }
    crate::print_stdout(&to_text(model.name(), rows, &stats, &warnings))
}

fn write_file(path: &str, text: &str) -> Result<(), CliError> {
    std::fs::write(path, text).map_err(|e| CliError::failed(format!("cannot write {path}: {e}")))
}

/// Task names: the output each task's tower makes (task0, task1, ... otherwise).
fn task_names(model: &Model) -> Vec<String> {
    let g = model.graph();
    let mut names: Vec<String> = (0..g.n_tasks).map(|t| format!("task{t}")).collect();
    for o in g.outputs.iter().rev() {
        if let OutputKind::Tower(t) = o.kind {
            names[t] = o.name.to_string();
        }
    }
    names
}

/// Expert labels of every gate, in gate-column order (docs/FORMAT.md §3.7): task t's gate mixes
/// its own S experts then the SH shared ones; the shared gate every task's, task-major, then
/// the shared ones.
fn labels(model: &Model) -> Vec<(String, Vec<String>)> {
    let tasks = task_names(model);
    let graph = model.graph();
    model
        .gates()
        .iter()
        .map(|slot| {
            let level = &graph.levels[slot.level];
            let tasks = &tasks;
            let own = |t: usize| {
                (0..level.n_task_experts).map(move |j| format!("task {} expert {j}", tasks[t]))
            };
            let shared = (0..level.shared_experts.len()).map(|j| format!("shared {j}"));
            match slot.task {
                Some(t) => (format!("task {}", tasks[t]), own(t).chain(shared).collect()),
                None => (
                    "shared".to_string(),
                    (0..graph.n_tasks).flat_map(own).chain(shared).collect(),
                ),
            }
        })
        .collect()
}

fn accumulate(
    model: &Model,
    source: &mut dyn input::RowSource,
    specs: &[InputSpec],
    max_batch: usize,
) -> Result<(usize, Vec<GateStats>), CliError> {
    let mut session = Session::new(model, max_batch)?;
    let (ow, gw) = (model.output_width(), model.gate_width());
    let mut scores = vec![0f32; max_batch * ow];
    let mut gates = vec![0f32; max_batch * gw];
    let (mut sum, mut sum_sq) = (vec![0f64; gw], vec![0f64; gw]);
    let mut entropy = vec![0f64; model.gates().len()];
    // Each gate's columns in a gate row: the gates one after another, in `Model::gates` order.
    let offsets: Vec<usize> = model
        .gates()
        .iter()
        .scan(0, |at, slot| {
            let start = *at;
            *at += slot.width;
            Some(start)
        })
        .collect();
    let mut batch = Batch::new(specs);
    let mut rows = 0usize;
    loop {
        let n = source.fill(&mut batch, max_batch)?;
        if n == 0 {
            break;
        }
        let inputs: Vec<_> = batch.columns.iter().map(|c| c.as_input()).collect();
        session
            .run(
                &inputs,
                n,
                &mut scores[..n * ow],
                Some(&mut gates[..n * gw]),
            )
            .map_err(|e| crate::score::scoring_error(e, source, &batch, specs))?;
        for row in gates[..n * gw].chunks_exact(gw) {
            for (c, &w) in row.iter().enumerate() {
                sum[c] += w as f64;
                sum_sq[c] += w as f64 * w as f64;
            }
            for (g, slot) in model.gates().iter().enumerate() {
                let w = &row[offsets[g]..offsets[g] + slot.width];
                entropy[g] -= w
                    .iter()
                    .filter(|&&p| p > 0.0)
                    .map(|&p| p as f64 * (p as f64).ln())
                    .sum::<f64>();
            }
        }
        rows += n;
    }
    let r = rows.max(1) as f64;
    let stats = model
        .gates()
        .iter()
        .zip(offsets)
        .zip(labels(model))
        .zip(entropy)
        .map(|(((slot, at), (gate, experts)), h)| {
            let cols = at..at + slot.width;
            let mean: Vec<f64> = sum[cols.clone()].iter().map(|s| s / r).collect();
            let std = sum_sq[cols]
                .iter()
                .zip(&mean)
                .map(|(sq, m)| (sq / r - m * m).max(0.0).sqrt())
                .collect();
            let h = h / r;
            let normalized = if slot.width > 1 {
                h / (slot.width as f64).ln()
            } else {
                1.0
            };
            GateStats {
                level: slot.level,
                gate,
                experts,
                mean,
                std,
                entropy: h,
                normalized,
            }
        })
        .collect();
    Ok((rows, stats))
}

fn warnings(model: &Model, stats: &[GateStats]) -> Vec<String> {
    let mut out = Vec::new();
    for (li, level) in model.graph().levels.iter().enumerate() {
        let s = level.n_task_experts;
        let has_shared = !level.shared_experts.is_empty();
        let mut best: Vec<(&str, f64)> = Vec::new();
        for g in stats.iter().filter(|g| g.level == li) {
            for (e, &m) in g.experts.iter().zip(&g.mean) {
                match best.iter_mut().find(|(name, _)| *name == e.as_str()) {
                    Some((_, b)) => *b = b.max(m),
                    None => best.push((e, m)),
                }
            }
            if g.experts.len() > 1 && g.normalized < COLLAPSED_ENTROPY {
                let top = (0..g.mean.len())
                    .max_by(|&a, &b| g.mean[a].total_cmp(&g.mean[b]))
                    .map_or("", |i| g.experts[i].as_str());
                out.push(format!(
                    "level {li}: the {} gate has collapsed onto '{top}' (entropy {:.1}% of uniform): \
                     the other experts it can use contribute almost nothing",
                    g.gate,
                    100.0 * g.normalized
                ));
            }
            if g.gate.starts_with("task ") && s > 0 && has_shared {
                let own: f64 = g.mean[..s].iter().sum();
                if own < IGNORED_OWN {
                    out.push(format!(
                        "level {li}: {} ignores its own experts (they get {:.1}% of its gate): it relies \
                         on the shared experts alone",
                        g.gate,
                        100.0 * own
                    ));
                }
            }
        }
        for (e, b) in best {
            if b < UNUSED_EXPERT {
                out.push(format!(
                    "level {li}: expert '{e}' is unused (mean weight below {:.0}% in every gate that can use it)",
                    100.0 * UNUSED_EXPERT
                ));
            }
        }
    }
    out
}

fn to_text(name: &str, rows: usize, stats: &[GateStats], warnings: &[String]) -> String {
    let mut s =
        format!("gate report of '{name}' over {rows} samples (mean weight ± std per expert)\n");
    let mut level = usize::MAX;
    for g in stats {
        if g.level != level {
            level = g.level;
            let _ = writeln!(s, "level {level}");
        }
        let _ = writeln!(
            s,
            "  {} gate: entropy {:.3} nats ({:.0}% of uniform)",
            g.gate,
            g.entropy,
            100.0 * g.normalized
        );
        for ((e, m), sd) in g.experts.iter().zip(&g.mean).zip(&g.std) {
            let bar = "#".repeat((m * 20.0).round() as usize);
            let _ = writeln!(s, "    {e:<28} {m:6.3} ± {sd:5.3}  {bar}");
        }
    }
    if warnings.is_empty() {
        s += "no warnings: every expert is used and no gate has collapsed";
    } else {
        s += "warnings:";
        for w in warnings {
            let _ = write!(s, "\n  - {w}");
        }
    }
    s
}

fn to_csv(stats: &[GateStats]) -> String {
    let mut s = String::from("level,gate,expert,mean,std,gate_entropy,gate_normalized_entropy\n");
    for g in stats {
        for ((e, m), sd) in g.experts.iter().zip(&g.mean).zip(&g.std) {
            let _ = writeln!(
                s,
                "{},{},{},{m},{sd},{},{}",
                g.level, g.gate, e, g.entropy, g.normalized
            );
        }
    }
    s
}

/// The task × expert heatmap of every level, side by side: one cell per (gate, expert), its
/// colour the mean weight on a white-to-blue scale, its value written in it.
fn to_svg(name: &str, rows: usize, stats: &[GateStats]) -> String {
    const CELL_W: usize = 64;
    const CELL_H: usize = 28;
    const LABEL_W: usize = 110;
    const TOP: usize = 64;
    let escape = |t: &str| {
        t.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let levels: Vec<usize> = {
        let mut v: Vec<usize> = stats.iter().map(|g| g.level).collect();
        v.dedup();
        v
    };
    let mut body = String::new();
    let (mut x0, mut height) = (10usize, 0usize);
    for &level in &levels {
        let gates: Vec<&GateStats> = stats.iter().filter(|g| g.level == level).collect();
        // Columns in the shared gate's order: task experts task-major, then the shared ones.
        let mut cols: Vec<&str> = Vec::new();
        for g in &gates {
            for e in &g.experts {
                if !cols.contains(&e.as_str()) {
                    cols.push(e);
                }
            }
        }
        cols.sort_by_key(|e| e.starts_with("shared "));
        let gx = x0 + LABEL_W;
        let _ = writeln!(
            body,
            r#"<text x="{}" y="{}" font-size="13" font-weight="bold">level {level}</text>"#,
            gx,
            TOP - 22
        );
        for (c, e) in cols.iter().enumerate() {
            let short = e
                .trim_start_matches("task ")
                .replace(" expert ", " #")
                .replace("shared ", "shared #");
            let _ = writeln!(
                body,
                r#"<text x="{}" y="{}" font-size="10" text-anchor="middle">{}</text>"#,
                gx + c * CELL_W + CELL_W / 2,
                TOP - 6,
                escape(&short)
            );
        }
        for (r, g) in gates.iter().enumerate() {
            let y = TOP + r * CELL_H;
            let _ = writeln!(
                body,
                r#"<text x="{}" y="{}" font-size="11" text-anchor="end">{}</text>"#,
                gx - 6,
                y + CELL_H / 2 + 4,
                escape(&g.gate)
            );
            for (e, m) in g.experts.iter().zip(&g.mean) {
                let c = cols.iter().position(|x| x == e).unwrap_or(0);
                let shade = |hi: f64| (255.0 - (255.0 - hi) * m.clamp(0.0, 1.0)).round() as u8;
                let (red, green, blue) = (shade(33.0), shade(102.0), shade(172.0));
                let ink = if *m > 0.55 { "white" } else { "black" };
                let x = gx + c * CELL_W;
                let _ = writeln!(
                    body,
                    r##"<rect x="{x}" y="{y}" width="{CELL_W}" height="{CELL_H}" fill="#{red:02x}{green:02x}{blue:02x}" stroke="#999"/><text x="{}" y="{}" font-size="11" text-anchor="middle" fill="{ink}">{m:.2}</text>"##,
                    x + CELL_W / 2,
                    y + CELL_H / 2 + 4
                );
            }
        }
        height = height.max(TOP + gates.len() * CELL_H + 10);
        x0 = gx + cols.len() * CELL_W + 20;
    }
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{x0}\" height=\"{}\" font-family=\"sans-serif\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"14\" font-size=\"12\">{}: mean gate weight over {rows} samples</text>\n{body}</svg>\n",
        height + 10,
        escape(name)
    )
}
