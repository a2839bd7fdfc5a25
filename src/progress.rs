//! Progress of long sync runs on a terminal (nothing when not a terminal).

use std::io::IsTerminal;
use std::sync::Arc;

use chartsync_satellite::jobs::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A spinner with a count, drawn on stderr only when it is a terminal.
pub struct Reporter {
    bar: ProgressBar,
}

/// A reporter for the current terminal.
pub fn reporter() -> Reporter {
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    Reporter { bar }
}

impl Reporter {
    /// The callback jobs call.
    pub fn report(&self) -> Progress {
        let bar = self.bar.clone();
        Arc::new(move |job: &str, done: u64| bar.set_message(format!("{job}: {done} records")))
    }

    /// Clears the line.
    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}
