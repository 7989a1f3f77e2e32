//! Random valid inputs for `check` and `bench`: a seeded SplitMix64 generator (deterministic, no
//! dependency) and input columns that pass every check a session makes.

use ple::{InputKind, Model};

use crate::column::InputColumn;

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
    /// Uniform in `[-1, 1)`.
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Random valid columns for `batch` samples: dense values in [-1, 1), ids uniform over the table,
/// sequences of random length padded with the pad id when the feature has one (full length
/// otherwise).
pub fn random_columns(model: &Model, batch: usize, rng: &mut Rng) -> Vec<InputColumn> {
    model
        .inputs()
        .iter()
        .map(|f| match f.kind {
            InputKind::Dense => {
                InputColumn::Floats((0..batch * f.width).map(|_| rng.unit()).collect())
            }
            // No table in the file: the caller passes embedding vectors, here random ones (a
            // sparse input's, or full-length ragged sequences: valid with or without a pad id).
            InputKind::Sparse if f.table.is_none() => {
                InputColumn::Floats((0..batch * f.width).map(|_| rng.unit()).collect())
            }
            InputKind::Sequence if f.table.is_none() => InputColumn::RaggedFloats {
                floats: (0..batch * f.max_len * f.width)
                    .map(|_| rng.unit())
                    .collect(),
                offsets: (0..=batch).map(|s| (s * f.max_len) as i64).collect(),
            },
            InputKind::Sparse | InputKind::Sequence => {
                let vocab = f.vocab().max(1) as u64;
                let l = f.values_per_sample();
                let mut ids = Vec::with_capacity(batch * l);
                for _ in 0..batch {
                    let len = match f.pad_id {
                        Some(_) if l > 1 => 1 + rng.below(l as u64) as usize,
                        _ => l,
                    };
                    for p in 0..l {
                        ids.push(match f.pad_id {
                            Some(pad) if p >= len => pad,
                            _ => {
                                let id = rng.below(vocab) as i64;
                                // Ids routed through f32 may round up past the table.
                                if f.ids_through_f32 && id as f32 as i64 >= vocab as i64 {
                                    0
                                } else {
                                    id
                                }
                            }
                        });
                    }
                }
                InputColumn::Ids(ids)
            }
        })
        .collect()
}
