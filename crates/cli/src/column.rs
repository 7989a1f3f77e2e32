//! An owned input column: what `ple::Input` borrows.

/// One model input's values for a batch of samples, row-major (`values_per_sample` per sample):
/// ids for sparse and sequence inputs, floats for dense ones.
#[derive(Debug, Clone, PartialEq)]
pub enum InputColumn {
    Ids(Vec<i64>),
    Floats(Vec<f32>),
}

impl InputColumn {
    pub fn as_input(&self) -> ple::Input<'_> {
        match self {
            InputColumn::Ids(v) => ple::Input::Ids(v),
            InputColumn::Floats(v) => ple::Input::Floats(v),
        }
    }

    /// Number of values (not samples).
    pub fn len(&self) -> usize {
        match self {
            InputColumn::Ids(v) => v.len(),
            InputColumn::Floats(v) => v.len(),
        }
    }

    pub fn truncate(&mut self, len: usize) {
        match self {
            InputColumn::Ids(v) => v.truncate(len),
            InputColumn::Floats(v) => v.truncate(len),
        }
    }

    /// Appends `values[range]` of a column of the same kind.
    pub fn extend_from(&mut self, other: &InputColumn, range: std::ops::Range<usize>) {
        match (self, other) {
            (InputColumn::Ids(d), InputColumn::Ids(s)) => d.extend_from_slice(&s[range]),
            (InputColumn::Floats(d), InputColumn::Floats(s)) => d.extend_from_slice(&s[range]),
            _ => unreachable!("columns of one input have one kind"),
        }
    }
}
