//! Compiles the graph into a flat list of operations over one per-sample working row (the
//! "arena"): x0, every layer's output, every gate's weights and every mixture get a fixed column
//! range. A session holds `rows × width` floats and runs the list tile by tile; nothing is
//! decided while scoring.

use std::ops::Range;

use super::graph::{Graph, Layer, NodeKind, OutputKind, Source};
use crate::error::{invalid, Result};
use crate::format::{limits, DType};
use crate::kernels::int8;

/// One step of the forward pass. Columns are offsets into a sample's arena row.
#[derive(Debug, Clone)]
pub enum Op {
    /// `out[0..n] = act(in[0..k]·W + b)`.
    Dense {
        input: usize,
        layer: Layer,
        out: usize,
        /// For an int8 layer, where its quantized input lives.
        quant: Option<QuantSlot>,
    },
    /// Softmax in place over `n` columns (gate logits → weights).
    Softmax { col: usize, n: usize },
    /// `out[0..width] = Σ_e weights[e]·expert_e[0..width]`, experts listed in `Plan::expert_cols`.
    Mix {
        weights: usize,
        experts: Range<usize>,
        width: usize,
        out: usize,
    },
    /// Attention logits: `out[j] = (q_j · k_j) / temperature` for the `(q_j, k_j)` column pairs
    /// `Plan::expert_cols[pairs]` (flattened: q_0, k_0, q_1, k_1, ...), each `dim` wide.
    Dots {
        pairs: Range<usize>,
        dim: usize,
        temperature: f32,
        out: usize,
    },
    /// Element-wise sigmoid in place.
    Sigmoid { col: usize, n: usize },
    /// `out = a ⊙ b`.
    Product {
        a: usize,
        b: usize,
        n: usize,
        out: usize,
    },
}

/// Where an int8 layer's quantized input lives in a session's code buffer. Layers reading the
/// same input columns (a level's experts and gates all read the level's input) share one slot:
/// the first quantizes, the others reuse the codes (input columns are never rewritten).
#[derive(Debug, Clone, Copy)]
pub struct QuantSlot {
    /// Index of the slot's per-sample scale and zero point.
    pub slot: usize,
    /// Byte offset of the codes in a sample's code row (a multiple of 4).
    pub offset: usize,
    /// Whether this layer quantizes the input (the slot's first reader) or reuses its codes.
    pub fresh: bool,
}

/// Where one gate's weights live, for the optional gate output.
#[derive(Debug, Clone)]
pub struct GateSlot {
    pub name: String,
    pub level: usize,
    /// `Some(t)` for task t's gate, `None` for the shared gate.
    pub task: Option<usize>,
    pub col: usize,
    pub width: usize,
}

/// Samples per tile when the dense weights are small enough to stay in the last-level cache.
pub const TILE_ROWS: usize = 64;
/// Samples per tile when they are not: each tile reads every weight once, so when the weights
/// come from DRAM a larger tile halves that traffic per sample (measurements in docs/DESIGN.md,
/// "Memory").
pub const TILE_ROWS_STREAMING: usize = 128;
/// Dense weights above this size count as streaming from memory.
pub const STREAMING_WEIGHT_BYTES: usize = 8 << 20;

#[derive(Debug, Clone)]
pub struct Plan {
    /// Floats per sample in the arena.
    pub width: usize,
    /// Samples per tile: `TILE_ROWS`, or `TILE_ROWS_STREAMING` when the dense weights exceed
    /// `STREAMING_WEIGHT_BYTES` (they then come from DRAM on every tile).
    pub tile_rows: usize,
    /// `(feature index, x0 column)` in concatenation order (x0 starts at column 0).
    pub inputs: Vec<(usize, usize)>,
    pub ops: Vec<Op>,
    pub expert_cols: Vec<usize>,
    /// `(column, width)` of each output, in output order.
    pub outputs: Vec<(usize, usize)>,
    pub gates: Vec<GateSlot>,
    pub output_width: usize,
    pub gate_width: usize,
    /// Bytes of quantized int8-layer inputs per sample (every slot's codes).
    pub quant_row_bytes: usize,
    /// Quantized inputs (slots) per sample.
    pub quant_slots: usize,
}

impl Plan {
    /// Floats of session memory per sample: the working row, then (for int8 layers) the
    /// quantized inputs' codes (`quant_row_bytes`, a multiple of 4) and each slot's scale and
    /// zero point.
    pub fn floats_per_row(&self) -> usize {
        self.width + self.quant_row_bytes / 4 + 2 * self.quant_slots
    }
}

struct Builder<'g> {
    g: &'g Graph,
    width: usize,
    ops: Vec<Op>,
    expert_cols: Vec<usize>,
}

impl Builder<'_> {
    fn alloc(&mut self, n: usize) -> usize {
        let col = self.width;
        self.width += n;
        col
    }

    /// Emits the layers of MLP `m` reading column `input`; returns its output column.
    fn mlp(&mut self, m: usize, mut input: usize) -> usize {
        for layer in &self.g.mlps[m].layers {
            let out = self.alloc(layer.n);
            self.ops.push(Op::Dense {
                input,
                layer: *layer,
                out,
                quant: None,
            });
            input = out;
        }
        input
    }

    /// Emits an attention node over the values at `inputs`; returns its output column.
    fn attention(&mut self, kind: NodeKind, inputs: &[usize]) -> usize {
        let NodeKind::Attention {
            query,
            key,
            value,
            temperature,
        } = kind
        else {
            unreachable!("attention() is called for attention nodes")
        };
        let mut pairs = Vec::with_capacity(2 * inputs.len());
        let mut values = Vec::with_capacity(inputs.len());
        for &x in inputs {
            pairs.push(self.mlp(query, x));
            pairs.push(self.mlp(key, x));
            values.push(self.mlp(value, x));
        }
        let n = inputs.len();
        let logits = self.alloc(n);
        let start = self.expert_cols.len();
        self.expert_cols.extend_from_slice(&pairs);
        self.ops.push(Op::Dots {
            pairs: start..self.expert_cols.len(),
            dim: self.g.mlps[query].out_width(),
            temperature,
            out: logits,
        });
        self.ops.push(Op::Softmax { col: logits, n });
        let start = self.expert_cols.len();
        self.expert_cols.extend_from_slice(&values);
        let width = self.g.mlps[value].out_width();
        let out = self.alloc(width);
        self.ops.push(Op::Mix {
            weights: logits,
            experts: start..self.expert_cols.len(),
            width,
            out,
        });
        out
    }

    /// Emits a gate: logits MLP, softmax, mixture of `experts`. Returns the mixture column.
    fn gate(&mut self, m: usize, input: usize, experts: &[usize], width: usize) -> (usize, usize) {
        let logits = self.mlp(m, input);
        self.ops.push(Op::Softmax {
            col: logits,
            n: experts.len(),
        });
        let start = self.expert_cols.len();
        self.expert_cols.extend_from_slice(experts);
        let out = self.alloc(width);
        self.ops.push(Op::Mix {
            weights: logits,
            experts: start..self.expert_cols.len(),
            width,
            out,
        });
        (logits, out)
    }
}

pub fn build(g: &Graph, bytes: &[u8]) -> Result<Plan> {
    let mut b = Builder {
        g,
        width: 0,
        ops: Vec::new(),
        expert_cols: Vec::new(),
    };
    let x0 = b.alloc(g.x0_width);
    let mut inputs = Vec::with_capacity(g.features.len());
    let mut col = x0;
    for &f in &g.x0_order {
        inputs.push((f, col));
        col += g.features[f].width;
    }

    let bottom = g.bottom.map(|m| b.mlp(m, x0));
    let trunk = bottom.unwrap_or(x0);
    let t = g.n_tasks;
    let mut sel = vec![trunk; t + 1];
    let mut gates = Vec::new();
    for (l, level) in g.levels.iter().enumerate() {
        let task_out: Vec<Vec<usize>> = (0..t)
            .map(|task| {
                level.task_experts[task]
                    .iter()
                    .map(|&e| b.mlp(e, sel[task]))
                    .collect()
            })
            .collect();
        let shared_out: Vec<usize> = level
            .shared_experts
            .iter()
            .map(|&e| b.mlp(e, sel[t]))
            .collect();
        let mut next = Vec::with_capacity(t + 1);
        for task in 0..t {
            let experts: Vec<usize> = task_out[task].iter().chain(&shared_out).copied().collect();
            let (w, out) = b.gate(level.task_gates[task], sel[task], &experts, level.width);
            gates.push(GateSlot {
                name: format!("level{l}.task{task}"),
                level: l,
                task: Some(task),
                col: w,
                width: experts.len(),
            });
            next.push(out);
        }
        if let Some(sg) = level.shared_gate {
            let experts: Vec<usize> = task_out
                .iter()
                .flatten()
                .chain(&shared_out)
                .copied()
                .collect();
            let (w, out) = b.gate(sg, sel[t], &experts, level.width);
            gates.push(GateSlot {
                name: format!("level{l}.shared"),
                level: l,
                task: None,
                col: w,
                width: experts.len(),
            });
            next.push(out);
        }
        sel = next;
    }

    let mut node_out: Vec<usize> = Vec::with_capacity(g.nodes.len());
    let column = |source: Source, node_out: &[usize]| match source {
        Source::X0 => x0,
        Source::Bottom => trunk,
        Source::Level(task) => sel[task],
        Source::Node(i) => node_out[i],
    };
    for node in &g.nodes {
        let inputs: Vec<usize> = node.inputs.iter().map(|&s| column(s, &node_out)).collect();
        let out = match node.kind {
            NodeKind::Mlp(m) => b.mlp(m, inputs[0]),
            kind @ NodeKind::Attention { .. } => b.attention(kind, &inputs),
        };
        node_out.push(out);
    }

    let mut tower_out = Vec::with_capacity(t);
    for tower in &g.towers {
        let input = column(tower.input, &node_out);
        let out = b.mlp(tower.mlp, input);
        if tower.sigmoid {
            b.ops.push(Op::Sigmoid {
                col: out,
                n: g.mlps[tower.mlp].out_width(),
            });
        }
        tower_out.push(out);
    }

    let mut outputs = Vec::with_capacity(g.outputs.len());
    for o in &g.outputs {
        let col = match o.kind {
            OutputKind::Tower(a) => tower_out[a],
            OutputKind::Product(a, c) => {
                let out = b.alloc(o.width);
                b.ops.push(Op::Product {
                    a: tower_out[a],
                    b: tower_out[c],
                    n: o.width,
                    out,
                });
                out
            }
        };
        outputs.push((col, o.width));
    }

    if b.width > limits::SCRATCH_PER_SAMPLE {
        return Err(invalid!(
            "the model needs {} floats of working memory per sample, over the limit of {}",
            b.width,
            limits::SCRATCH_PER_SAMPLE
        ));
    }
    let output_width = outputs.iter().map(|o| o.1).sum();
    let gate_width = gates.iter().map(|g| g.width).sum();
    let dense_weight_bytes: usize = b
        .ops
        .iter()
        .map(|op| match op {
            Op::Dense { layer, .. } if layer.weight.dtype == DType::I8 => {
                int8::weight_bytes(layer.k, layer.n)
            }
            Op::Dense { layer, .. } => {
                layer.k * layer.n.div_ceil(16) * 16 * layer.weight.dtype.size() as usize
            }
            _ => 0,
        })
        .sum();
    let streaming = dense_weight_bytes > STREAMING_WEIGHT_BYTES;
    let (quant_row_bytes, quant_slots) = assign_quant_slots(&mut b.ops, bytes);
    Ok(Plan {
        width: b.width,
        tile_rows: if streaming {
            TILE_ROWS_STREAMING
        } else {
            TILE_ROWS
        },
        inputs,
        ops: b.ops,
        expert_cols: b.expert_cols,
        outputs,
        gates,
        output_width,
        gate_width,
        quant_row_bytes,
        quant_slots,
    })
}

/// Gives every int8 layer a slot for its quantized input, one per distinct input: columns,
/// width and input scales (none, or the same values: the same tensor or equal contents, so that
/// the layers of a level reading x0 with one r share one quantization pass); returns the bytes
/// per sample and the number of slots.
fn assign_quant_slots(ops: &mut [Op], bytes: &[u8]) -> (usize, usize) {
    // The scales' bytes (checked in range at load).
    let scales = |l: &Layer| {
        l.input_scale
            .map(|r| &bytes[r.offset..r.offset + 4 * r.cols])
    };
    let mut slots: Vec<(usize, usize, Option<&[u8]>, usize)> = Vec::new(); // (input, k, r, offset)
    let mut row = 0;
    for op in ops {
        if let Op::Dense {
            input,
            layer,
            quant,
            ..
        } = op
        {
            if layer.weight.dtype != DType::I8 {
                continue;
            }
            let key = (*input, layer.k, scales(layer));
            *quant = Some(match slots.iter().position(|s| (s.0, s.1, s.2) == key) {
                Some(slot) => QuantSlot {
                    slot,
                    offset: slots[slot].3,
                    fresh: false,
                },
                None => {
                    slots.push((key.0, key.1, key.2, row));
                    row += int8::row_bytes(layer.k);
                    QuantSlot {
                        slot: slots.len() - 1,
                        offset: row - int8::row_bytes(layer.k),
                        fresh: true,
                    }
                }
            });
        }
    }
    (row, slots.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::graph::{Act, TensorRef};

    /// An int8 layer reading `k` columns, with input scales at byte `scale_at` of the file.
    fn layer(k: usize, scale_at: Option<usize>) -> Layer {
        let t = |offset, dtype, cols| TensorRef {
            offset,
            dtype,
            rows: 1,
            cols,
        };
        Layer {
            k,
            n: 64,
            weight: TensorRef {
                rows: k,
                ..t(0, DType::I8, 64)
            },
            bias: None,
            act: Act::Relu,
            input_scale: scale_at.map(|at| t(at, DType::F32, k)),
        }
    }

    fn dense(input: usize, layer: Layer) -> Op {
        Op::Dense {
            input,
            layer,
            out: 1000,
            quant: None,
        }
    }

    #[test]
    fn layers_share_a_quantization_pass_only_with_equal_input_scales() {
        // Three r vectors of 8 floats: at 0 and 32 equal contents, at 64 different.
        let mut bytes = vec![0u8; 96];
        for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
            let v = if i >= 16 { 0.25f32 } else { 2.0 };
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        let mut ops = vec![
            dense(0, layer(8, Some(0))),
            dense(0, layer(8, Some(0))),  // the same tensor: shares
            dense(0, layer(8, Some(32))), // equal contents: shares
            dense(0, layer(8, Some(64))), // other values: its own pass
            dense(0, layer(8, None)),     // no scales: its own pass
            dense(0, layer(8, None)),     // shares with the previous
            dense(8, layer(8, Some(0))),  // other columns: its own pass
        ];
        let (row, slots) = assign_quant_slots(&mut ops, &bytes);
        let got: Vec<(usize, bool)> = (ops.iter())
            .map(|op| match op {
                Op::Dense { quant: Some(q), .. } => (q.slot, q.fresh),
                _ => unreachable!(),
            })
            .collect();
        let want = [
            (0, true),
            (0, false),
            (0, false),
            (1, true),
            (2, true),
            (2, false),
            (3, true),
        ];
        assert_eq!(got, want);
        assert_eq!((row, slots), (4 * int8::row_bytes(8), 4));
    }
}
