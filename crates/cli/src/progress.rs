//! A one-line progress display on stderr, shown only when stderr is a terminal (never in pipes,
//! logs or tests), first drawn after 300 ms (quick jobs show nothing), redrawn at most ten times
//! a second and erased when done.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    enabled: bool,
    label: String,
    start: Instant,
    last: Option<Instant>,
    drawn: bool,
}

impl Progress {
    /// A display titled `label`; `enabled` is ANDed with "stderr is a terminal".
    pub fn new(label: impl Into<String>, enabled: bool) -> Progress {
        Progress {
            enabled: enabled && std::io::stderr().is_terminal(),
            label: label.into(),
            start: Instant::now(),
            last: None,
            drawn: false,
        }
    }

    /// Shows `fraction` (0..=1) done with an optional note after the bar.
    pub fn update(&mut self, fraction: f64, note: &str) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        // Nothing for quick jobs: the first draw waits 300 ms.
        if now.duration_since(self.start) < Duration::from_millis(300) {
            return;
        }
        if let Some(last) = self.last {
            if now.duration_since(last) < Duration::from_millis(100) && fraction < 1.0 {
                return;
            }
        }
        self.last = Some(now);
        const WIDTH: usize = 30;
        let f = fraction.clamp(0.0, 1.0);
        let filled = (f * WIDTH as f64).round() as usize;
        let bar: String = "#".repeat(filled) + &"-".repeat(WIDTH - filled);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K{} [{bar}] {:3.0}% {note}",
            self.label,
            f * 100.0
        );
        let _ = err.flush();
        self.drawn = true;
    }

    /// Erases the line.
    pub fn finish(&mut self) {
        if self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.drawn = false;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
