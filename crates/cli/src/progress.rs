//! A one-line progress bar on stderr (indicatif), shown only when stderr is a terminal (never in
//! pipes, logs or tests), first drawn after 300 ms (quick jobs show nothing), redrawn at most ten
//! times a second and erased when done.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Resolution of the bar's position.
const STEPS: u64 = 1000;

pub struct Progress {
    /// `None` when disabled or stderr is not a terminal.
    bar: Option<ProgressBar>,
    start: Instant,
    drawing: bool,
}

impl Progress {
    /// A bar titled `label`; `enabled` is ANDed with "stderr is a terminal".
    pub fn new(label: impl Into<String>, enabled: bool) -> Progress {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(STEPS), ProgressDrawTarget::hidden());
            let style = ProgressStyle::with_template("{prefix} [{bar:30}] {percent:>3}% {msg}")
                .expect("a valid template")
                .progress_chars("#>-");
            bar.set_style(style);
            bar.set_prefix(label.into());
            bar
        });
        Progress {
            bar,
            start: Instant::now(),
            drawing: false,
        }
    }

    /// Shows `fraction` (0..=1) done, with a note after the bar.
    pub fn update(&mut self, fraction: f64, note: &str) {
        let Some(bar) = &self.bar else {
            return;
        };
        bar.set_position((fraction.clamp(0.0, 1.0) * STEPS as f64) as u64);
        bar.set_message(note.to_string());
        if !self.drawing && self.start.elapsed() >= Duration::from_millis(300) {
            bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(10));
            bar.tick();
            self.drawing = true;
        }
    }

    /// Erases the bar.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
