//! An owned input column: what `ple::Input` borrows.

/// One model input's values for a batch of samples, row-major (`values_per_sample` per sample):
/// ids for sparse and sequence inputs, floats for dense ones; or, for a sequence whose model pads
/// with a pad id, its ids ragged (no padding: `offsets[s]..offsets[s + 1]` are sample `s`'s).
#[derive(Debug, Clone, PartialEq)]
pub enum InputColumn {
    Ids(Vec<i64>),
    Floats(Vec<f32>),
    Ragged {
        ids: Vec<i64>,
        offsets: Vec<i64>,
    },
    /// Embedding vectors of a sequence, ragged (inputs without a table in the file).
    RaggedFloats {
        floats: Vec<f32>,
        offsets: Vec<i64>,
    },
}

impl InputColumn {
    pub fn as_input(&self) -> ple::Input<'_> {
        match self {
            InputColumn::Ids(v) => ple::Input::Ids(v),
            InputColumn::Floats(v) => ple::Input::Floats(v),
            InputColumn::Ragged { ids, offsets } => ple::Input::RaggedIds { ids, offsets },
            InputColumn::RaggedFloats { floats, offsets } => {
                ple::Input::RaggedFloats { floats, offsets }
            }
        }
    }

    /// Number of values (not samples).
    pub fn len(&self) -> usize {
        match self {
            InputColumn::Ids(v) => v.len(),
            InputColumn::Floats(v) => v.len(),
            InputColumn::Ragged { ids, .. } => ids.len(),
            InputColumn::RaggedFloats { floats, .. } => floats.len(),
        }
    }

    /// Keeps the first `len` values, a length `len()` returned at a sample boundary (a ragged
    /// column keeps the samples that end there).
    pub fn truncate(&mut self, len: usize) {
        match self {
            InputColumn::Ids(v) => v.truncate(len),
            InputColumn::Floats(v) => v.truncate(len),
            InputColumn::Ragged { ids, offsets } => {
                ids.truncate(len);
                offsets.truncate(offsets.partition_point(|&o| o as usize <= len).max(1));
            }
            InputColumn::RaggedFloats { .. } => unreachable!("random columns only, never cut"),
        }
    }

    /// Appends `values[range]` of a column of the same kind.
    pub fn extend_from(&mut self, other: &InputColumn, range: std::ops::Range<usize>) {
        if let (InputColumn::Ragged { .. }, InputColumn::Ids(_)) = (&*self, other) {
            // .npy arrays are rectangular, already padded: their batches stay padded.
            *self = InputColumn::Ids(Vec::new());
        }
        match (self, other) {
            (InputColumn::Ids(d), InputColumn::Ids(s)) => d.extend_from_slice(&s[range]),
            (InputColumn::Floats(d), InputColumn::Floats(s)) => d.extend_from_slice(&s[range]),
            _ => unreachable!("columns of one input have one kind"),
        }
    }
}
