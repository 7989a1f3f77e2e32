//! One error type for the whole library. Messages name what was wrong (which tensor, which offset,
//! which feature, which sample) so a user can act on them.
//!
//! Errors raised while scoring carry only integers, `&'static str` and `Arc<str>` (cloning an `Arc`
//! does not allocate), so the scoring path stays allocation-free even when it fails.

use std::sync::Arc;

/// Everything that can go wrong when loading a model or scoring with it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// The bytes are not a `.ple` file (wrong magic) or are too short to be one.
    #[error("not a .ple file: {0}")]
    NotPle(&'static str),

    /// The file is a `.ple` file of a major version this reader does not know.
    #[error(
        "unsupported .ple format version {major}.{minor} (this reader supports {supported}.x)"
    )]
    UnsupportedVersion {
        major: u16,
        minor: u16,
        supported: u16,
    },

    /// A checksum did not match: the file is corrupt or was truncated or modified.
    #[error("{section} checksum mismatch: stored {stored:#010x}, computed {computed:#010x} (the file is corrupt)")]
    Checksum {
        section: &'static str,
        stored: u32,
        computed: u32,
    },

    /// The file breaks a rule of docs/FORMAT.md; the message says which.
    #[error("invalid .ple file: {0}")]
    InvalidFile(String),

    /// `Session::new` was given a zero or oversized maximum batch.
    #[error("invalid max_batch {max_batch}: must be between 1 and {limit}")]
    InvalidMaxBatch { max_batch: usize, limit: usize },

    /// A scoring call asked for more samples than the session was created for.
    #[error("batch of {batch} exceeds the session's max_batch of {max_batch}")]
    BatchTooLarge { batch: usize, max_batch: usize },

    /// The number of input columns does not match the model's features.
    #[error("expected {expected} input columns (one per feature), got {got}")]
    WrongInputCount { expected: usize, got: usize },

    /// An input column holds ids where floats were expected, or the reverse.
    #[error("input '{feature}' expects {expected}")]
    WrongInputKind {
        feature: Arc<str>,
        expected: &'static str,
    },

    /// A buffer's length does not match batch × width.
    #[error("{what} has length {got}, expected {expected} for this batch")]
    WrongLength {
        what: BufferName,
        expected: usize,
        got: usize,
    },

    /// An id is outside its embedding table.
    #[error("input '{feature}', sample {sample}, position {position}: id {id} is out of range (the table has {vocab} rows)")]
    IdOutOfRange {
        feature: Arc<str>,
        sample: usize,
        position: usize,
        id: i64,
        vocab: usize,
    },

    /// A ragged column is malformed (its offsets), or one of its samples holds a number of ids
    /// the input does not take. Names the input and the sample.
    #[error("input '{feature}', sample {sample}: {problem}")]
    Ragged {
        feature: Arc<str>,
        sample: usize,
        problem: RaggedProblem,
    },

    /// A lookup by name found nothing.
    #[error("the model has no input named '{0}'")]
    UnknownInput(String),

    /// A pool was asked for more threads than the library allows (or an executor declared 0).
    #[error("invalid thread count {threads}: must be between 1 and {limit}")]
    InvalidThreadCount { threads: usize, limit: usize },

    /// The operating system refused to start a pool's thread.
    #[error("cannot start a pool thread: {source}")]
    ThreadStart {
        #[source]
        source: std::io::Error,
    },

    /// Scoring panicked (a bug in the library: please report it). The session and its pool stay
    /// usable; the outputs of the failed call may be partly written.
    #[error("internal error while scoring (a panic, please report it): {message}")]
    Panic { message: Arc<str> },

    /// The model's pages could not be locked in RAM (`LoadOptions::lock`); the message names
    /// `RLIMIT_MEMLOCK`, the usual cause.
    #[error("cannot lock the model in memory: {0}")]
    Lock(#[source] std::io::Error),

    /// The caller stopped the call (a warm-up's progress callback asked it to).
    #[error("cancelled by the caller")]
    Cancelled,

    /// The caller's executor (`Pool::from_executor`) broke its contract: it returned before
    /// running every task, or ran one task twice at once. The outputs may be partly written.
    #[error("the pool's executor broke its contract: {0}")]
    ExecutorContract(&'static str),
}

/// What is wrong with one sample of a ragged column (`Error::Ragged`), without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaggedProblem {
    /// `offsets[0]` is not 0.
    FirstOffset { first: i64 },
    /// `offsets[sample] > offsets[sample + 1]`.
    Decreasing { start: i64, end: i64 },
    /// `offsets[batch]` differs from the number of values.
    LastOffset { last: i64, values: usize },
    /// `offsets[batch]` vectors of `width` floats differ from the floats a ragged vector column
    /// holds.
    LastOffsetVectors {
        last: i64,
        floats: usize,
        width: usize,
    },
    /// The sample holds more ids than the input's `max_len`.
    TooLong { len: usize, max_len: usize },
    /// An input without a pad id counts every position, so a sample must hold exactly `max_len`.
    NotFull { len: usize, max_len: usize },
}

impl std::fmt::Display for RaggedProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            RaggedProblem::FirstOffset { first } => {
                write!(f, "offsets[0] is {first}, it must be 0")
            }
            RaggedProblem::Decreasing { start, end } => write!(
                f,
                "its offsets decrease (start {start}, end {end}): offsets must not decrease"
            ),
            RaggedProblem::LastOffset { last, values } => write!(
                f,
                "the last offset is {last} but the column holds {values} values (they must be equal)"
            ),
            RaggedProblem::LastOffsetVectors {
                last,
                floats,
                width,
            } => write!(
                f,
                "the last offset is {last} vectors but the column holds {floats} floats ({width} per vector)"
            ),
            RaggedProblem::TooLong { len, max_len } => write!(
                f,
                "{len} ids, more than the input's max_len of {max_len} (cut the sequence before scoring, e.g. to its most recent {max_len} ids)"
            ),
            RaggedProblem::NotFull { len, max_len } => write!(
                f,
                "{len} ids, but the input has no pad id: every position counts in its pooling, so each sample must hold exactly max_len = {max_len} ids (pad with the id used in training)"
            ),
        }
    }
}

/// Names a caller buffer in a `WrongLength` error without allocating.
#[derive(Debug, Clone)]
pub enum BufferName {
    Input(Arc<str>),
    /// The offsets of a ragged input column.
    Offsets(Arc<str>),
    Output,
    Gates,
}

impl std::fmt::Display for BufferName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BufferName::Input(name) => write!(f, "input '{name}'"),
            BufferName::Offsets(name) => write!(f, "the offsets of input '{name}' (batch + 1)"),
            BufferName::Output => f.write_str("the output buffer"),
            BufferName::Gates => f.write_str("the gate-weights buffer"),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shorthand for a format error with a formatted message (load time only).
macro_rules! invalid {
    ($($arg:tt)*) => { $crate::error::Error::InvalidFile(format!($($arg)*)) };
}
pub(crate) use invalid;
