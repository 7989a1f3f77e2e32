//! The C ABI: `include/ple.h` is generated from this module by cbindgen (see `cbindgen.toml` and
//! `tests/header.rs`) and documented in `docs/C_API.md`.
//!
//! Shape (the conventions themselves are stated once, at the top of the header, from
//! `cbindgen.toml`):
//!
//! - [`ple_model`] is an immutable, reference-counted handle (`Arc`), shared by every thread:
//!   `ple_model_open*` / `ple_model_clone` / `ple_model_free`, and `const` introspection.
//! - [`ple_session`] is a single-owner handle (`Box`) holding one thread's working memory and the
//!   detailed message of its last failure: `ple_session_new` / `ple_session_run*` /
//!   `ple_session_free`. It keeps its model alive.
//! - Every fallible function returns a [`ple_status`] (`OK = 0`), writes its outputs only on
//!   success, and records a detailed message: per session for session calls, and per thread for
//!   every call (`ple_last_error`).
//!
//! Every entry point is an ordinary `#[no_mangle] extern "C" fn` whose body runs inside
//! [`guard`] (`catch_unwind`: a panic becomes `PLE_STATUS_PANIC`, or the documented fallback
//! value) after its NULL and length checks. The scoring path allocates nothing, failures
//! included: messages are formatted with `core::fmt::Write` into fixed-size buffers.
#![allow(non_camel_case_types)]

use std::cell::RefCell;
use std::ffi::c_char;
use std::fmt::{self, Write as _};
use std::panic::{catch_unwind, AssertUnwindSafe};

// Declaration order is the header's order.
mod model;
mod pool;
mod session;
mod status;
mod version;

pub use model::*;
pub use pool::*;
pub use session::*;
pub use status::*;
pub use version::*;

/// Bytes (including the terminating NUL) of a detailed error message; longer messages are cut at
/// a character boundary and end with "...".
pub(crate) const MESSAGE_CAPACITY: usize = 512;

/// A NUL-terminated message in a fixed buffer, written with `core::fmt::Write` (never allocates).
pub(crate) struct Message {
    buf: [u8; MESSAGE_CAPACITY],
    len: usize,
    truncated: bool,
}

impl Message {
    pub(crate) const fn new() -> Message {
        Message {
            buf: [0; MESSAGE_CAPACITY],
            len: 0,
            truncated: false,
        }
    }

    /// Replaces the message with `args`.
    pub(crate) fn set(&mut self, args: fmt::Arguments<'_>) {
        self.len = 0;
        self.truncated = false;
        // `write_str` never fails; a too-long message is cut.
        let _ = self.write_fmt(args);
        if self.truncated {
            let keep = floor_char_boundary(&self.buf[..self.len], MESSAGE_CAPACITY - 4);
            self.buf[keep..keep + 3].copy_from_slice(b"...");
            self.len = keep + 3;
        }
        self.buf[self.len] = 0;
    }

    pub(crate) fn copy_from(&mut self, other: &Message) {
        self.buf[..=other.len].copy_from_slice(&other.buf[..=other.len]);
        self.len = other.len;
        self.truncated = other.truncated;
    }

    #[cfg(test)]
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }

    pub(crate) fn as_ptr(&self) -> *const c_char {
        self.buf.as_ptr().cast()
    }
}

impl fmt::Write for Message {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = MESSAGE_CAPACITY - 1 - self.len;
        let take = if s.len() <= room {
            s.len()
        } else {
            self.truncated = true;
            floor_char_boundary(s.as_bytes(), room)
        };
        self.buf[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

/// The largest `i <= max` that does not split a UTF-8 sequence of `bytes` (which is valid UTF-8).
fn floor_char_boundary(bytes: &[u8], max: usize) -> usize {
    let mut i = max.min(bytes.len());
    while i > 0 && i < bytes.len() && (bytes[i] & 0xC0) == 0x80 {
        i -= 1;
    }
    i
}

thread_local! {
    /// The detailed message of this thread's last failed call. `const`-initialised and without
    /// a destructor, so using it never allocates.
    static LAST_ERROR: RefCell<Message> = const { RefCell::new(Message::new()) };
}

/// Records `args` as this thread's last error and returns `status`.
pub(crate) fn fail(status: ple_status, args: fmt::Arguments<'_>) -> ple_status {
    let _ = LAST_ERROR.try_with(|m| {
        if let Ok(mut m) = m.try_borrow_mut() {
            m.set(args);
        }
    });
    status
}

/// Copies `msg` into this thread's last error.
pub(crate) fn set_thread_error(msg: &Message) {
    let _ = LAST_ERROR.try_with(|m| {
        if let Ok(mut m) = m.try_borrow_mut() {
            m.copy_from(msg);
        }
    });
}

/// Copies this thread's last error into `msg`.
pub(crate) fn get_thread_error(msg: &mut Message) {
    let _ = LAST_ERROR.try_with(|m| {
        if let Ok(m) = m.try_borrow() {
            msg.copy_from(&m);
        }
    });
}

/// This thread's last error, as a C string that stays valid until the thread's next failing call.
pub(crate) fn thread_error_ptr() -> *const c_char {
    LAST_ERROR
        .try_with(|m| m.try_borrow().map(|m| m.as_ptr()).ok())
        .ok()
        .flatten()
        .unwrap_or(c"".as_ptr())
}

/// Runs an entry point's body, turning a panic into `fallback` (after recording the panic's
/// message as this thread's last error). Every `extern "C"` function's body runs in here.
pub(crate) fn guard<R>(fn_name: &str, fallback: R, body: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(r) => r,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(no message)");
            fail(
                ple_status::Panic,
                format_args!(
                    "internal error in {fn_name} (a Rust panic, please report it): {what}"
                ),
            );
            fallback
        }
    }
}

/// Writes `bytes` (a C string's contents) for a message, replacing invalid UTF-8, without
/// allocating.
pub(crate) struct Lossy<'a>(pub(crate) &'a [u8]);

impl fmt::Display for Lossy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            f.write_str(chunk.valid())?;
            if !chunk.invalid().is_empty() {
                f.write_char(char::REPLACEMENT_CHARACTER)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_truncates_at_a_char_boundary() {
        let mut m = Message::new();
        m.set(format_args!("{}", "é".repeat(400)));
        assert!(m.as_str().ends_with("..."), "{}", m.as_str());
        assert!(m.len < MESSAGE_CAPACITY);
        assert_eq!(m.buf[m.len], 0);
        m.set(format_args!("short {}", 1));
        assert_eq!(m.as_str(), "short 1");
    }

    #[test]
    fn guard_turns_a_panic_into_the_fallback() {
        let r = guard("ple_test", ple_status::Panic, || -> ple_status {
            panic!("boom")
        });
        assert_eq!(r, ple_status::Panic);
        let mut m = Message::new();
        get_thread_error(&mut m);
        assert!(m.as_str().contains("ple_test"), "{}", m.as_str());
        assert!(m.as_str().contains("boom"), "{}", m.as_str());
    }
}
