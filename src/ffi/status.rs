//! Status codes, their static messages, and the thread's last detailed message.

use std::ffi::{c_char, CStr};

use super::{guard, thread_error_ptr};
use crate::error::Error;

/// The result of every fallible call. Values are stable: they never change meaning, and numbers
/// of retired statuses are never reused. Codes are grouped: 1-9 argument and internal errors,
/// 10-19 loading, 20-29 sessions and scoring. `ple_status_str` gives a fixed description, and the
/// detailed message names what was wrong (`ple_session_last_error`, `ple_last_error`).
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ple_status {
    /// Success.
    Ok = 0,
    /// A required pointer argument was NULL (or a buffer pointer was NULL with a nonzero length).
    NullArgument = 1,
    /// An argument is invalid in a way no other status describes (unknown flag bits, a misaligned
    /// or overlapping buffer, a malformed column list); the message says which.
    InvalidArgument = 2,
    /// An internal error (a Rust panic) was caught at the API boundary. The handles involved are
    /// still safe to free; please report the message. A scoring call that fails so may have
    /// written part of its outputs.
    Panic = 3,
    /// The operating system refused a resource the call needed (a pool's thread could not be
    /// started, or the model's memory could not be locked: see `PLE_OPEN_LOCK`); the message
    /// says which.
    System = 4,
    /// The caller cancelled the call (`ple_model_warm`'s progress callback returned nonzero, or
    /// its cancel flag was set).
    Cancelled = 5,
    /// The model file could not be opened or read, or is not a regular file (a device, FIFO,
    /// socket or directory).
    Io = 10,
    /// The bytes are not a .ple file (wrong magic, or shorter than the header).
    NotPle = 11,
    /// The file's major format version is not one this library reads (a newer file).
    UnsupportedVersion = 12,
    /// A checksum did not match: the file is corrupt, truncated or modified.
    Checksum = 13,
    /// The file breaks a rule of the format (the message says which).
    InvalidFile = 14,
    /// `max_batch` is 0 or larger than the library's limit.
    InvalidMaxBatch = 20,
    /// `batch` is larger than the session's `max_batch` (batch 0 is a valid no-op).
    BatchOutOfRange = 21,
    /// The number of input columns differs from the model's number of inputs.
    WrongInputCount = 22,
    /// A column holds ids where the model expects floats, or the reverse.
    WrongInputKind = 23,
    /// A buffer's length does not match `batch` times its per-sample width.
    WrongLength = 24,
    /// An id is outside its feature's embedding table (the message names the feature, sample and
    /// position).
    IdOutOfRange = 25,
    /// No input of the model has the given name.
    UnknownInput = 26,
    /// Another thread was inside a call on the same session: a session must be used by one thread
    /// at a time. The call did nothing and wrote nothing; its message is in `ple_last_error` (the
    /// session's own message belongs to the other thread's call).
    SessionBusy = 27,
    /// The caller's executor (`ple_pool_new_executor`) broke its contract: it returned before
    /// running every task, or ran a task twice at once. The outputs may be partly written.
    ExecutorFailed = 28,
    /// A ragged column is malformed: its offsets do not start at 0, decrease, or do not end at
    /// its number of values; or a sample holds more ids than the input's `max_len` (or, for an
    /// input without a pad id, not exactly `max_len`). The message names the input and sample.
    RaggedInput = 29,
}

impl ple_status {
    /// Every status, in numeric order.
    pub fn all() -> [ple_status; 21] {
        [
            ple_status::Ok,
            ple_status::NullArgument,
            ple_status::InvalidArgument,
            ple_status::Panic,
            ple_status::System,
            ple_status::Cancelled,
            ple_status::Io,
            ple_status::NotPle,
            ple_status::UnsupportedVersion,
            ple_status::Checksum,
            ple_status::InvalidFile,
            ple_status::InvalidMaxBatch,
            ple_status::BatchOutOfRange,
            ple_status::WrongInputCount,
            ple_status::WrongInputKind,
            ple_status::WrongLength,
            ple_status::IdOutOfRange,
            ple_status::UnknownInput,
            ple_status::SessionBusy,
            ple_status::ExecutorFailed,
            ple_status::RaggedInput,
        ]
    }

    /// The status for a core error. Exhaustive on purpose: a new `Error` variant must be given a
    /// status here (and a number above).
    pub fn of(e: &Error) -> ple_status {
        match e {
            Error::Io { .. } => ple_status::Io,
            Error::NotPle(_) => ple_status::NotPle,
            Error::UnsupportedVersion { .. } => ple_status::UnsupportedVersion,
            Error::Checksum { .. } => ple_status::Checksum,
            Error::InvalidFile(_) => ple_status::InvalidFile,
            Error::InvalidMaxBatch { .. } => ple_status::InvalidMaxBatch,
            Error::BatchTooLarge { .. } => ple_status::BatchOutOfRange,
            Error::WrongInputCount { .. } => ple_status::WrongInputCount,
            Error::WrongInputKind { .. } => ple_status::WrongInputKind,
            Error::WrongLength { .. } => ple_status::WrongLength,
            Error::IdOutOfRange { .. } => ple_status::IdOutOfRange,
            Error::UnknownInput(_) => ple_status::UnknownInput,
            Error::Ragged { .. } => ple_status::RaggedInput,
            Error::InvalidThreadCount { .. } => ple_status::InvalidArgument,
            Error::ThreadStart { .. } => ple_status::System,
            Error::Lock(_) => ple_status::System,
            Error::Cancelled => ple_status::Cancelled,
            Error::Panic { .. } => ple_status::Panic,
            Error::ExecutorContract(_) => ple_status::ExecutorFailed,
        }
    }

    /// The fixed description of this status.
    pub fn message(self) -> &'static CStr {
        match self {
            ple_status::Ok => c"success",
            ple_status::NullArgument => c"a required pointer argument is NULL",
            ple_status::InvalidArgument => c"invalid argument",
            ple_status::Panic => c"internal error (a panic was caught; please report it)",
            ple_status::System => {
                c"the operating system refused a resource (a thread, or locked memory)"
            }
            ple_status::Cancelled => c"cancelled by the caller",
            ple_status::Io => c"the model file could not be read",
            ple_status::NotPle => c"not a .ple file",
            ple_status::UnsupportedVersion => {
                c"unsupported .ple format version (the file is newer than this library)"
            }
            ple_status::Checksum => c"checksum mismatch (the file is corrupt)",
            ple_status::InvalidFile => c"invalid .ple file",
            ple_status::InvalidMaxBatch => c"invalid max_batch",
            ple_status::BatchOutOfRange => c"batch is larger than the session's max_batch",
            ple_status::WrongInputCount => c"wrong number of input columns",
            ple_status::WrongInputKind => c"input column of the wrong kind (ids vs floats)",
            ple_status::WrongLength => c"buffer length does not match the batch",
            ple_status::IdOutOfRange => c"id out of range of its embedding table",
            ple_status::UnknownInput => c"the model has no input of that name",
            ple_status::SessionBusy => c"the session is in use by another thread",
            ple_status::ExecutorFailed => {
                c"the pool's executor did not run every task exactly once"
            }
            ple_status::RaggedInput => {
                c"malformed ragged column (offsets, or a sequence longer than max_len)"
            }
        }
    }

    /// The status with this numeric value, if any.
    pub fn from_i32(code: i32) -> Option<ple_status> {
        ple_status::all().into_iter().find(|s| *s as i32 == code)
    }
}

/// The fixed, static description of a status code (never NULL; "unknown status" for a value that
/// is not a `ple_status`). Takes the code as a plain integer, so any value is safe to pass.
#[no_mangle]
pub extern "C" fn ple_status_str(status: i32) -> *const c_char {
    guard("ple_status_str", c"unknown status".as_ptr(), || {
        ple_status::from_i32(status).map_or(c"unknown status".as_ptr(), |s| s.message().as_ptr())
    })
}

/// The detailed message of the most recent failed call made on this thread (any function of this
/// library that returned a status other than OK, or returned NULL or 0 for an invalid argument),
/// or "" if none failed yet. Successful calls do not clear it. Never NULL; the text stays valid and
/// unchanged until the next failing call on this thread, so copy it if you need it longer.
#[no_mangle]
pub extern "C" fn ple_last_error() -> *const c_char {
    guard("ple_last_error", c"".as_ptr(), thread_error_ptr)
}
