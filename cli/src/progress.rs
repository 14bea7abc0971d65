//! Progress on stderr: an `indicatif` bar on a terminal, plain log lines otherwise (a log
//! file or a pipe gets whole lines, at the pace each command chooses).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

pub struct Progress {
    bar: Option<ProgressBar>,
    /// Plain mode: when the last line was written.
    last_line: Option<Instant>,
    /// Terminal mode: the latest state as a log line, printed when the bar finishes.
    summary: String,
}

impl Progress {
    /// `template` is indicatif's (e.g. `"step {pos}/{len} [{bar:30}] {msg}"`); it is only
    /// used on a terminal.
    pub fn new(total: u64, template: &str) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self {
                bar: None,
                last_line: None,
                summary: String::new(),
            };
        }
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
            .with_style(style);
        bar.enable_steady_tick(Duration::from_millis(250));
        Self {
            bar: Some(bar),
            last_line: None,
            summary: String::new(),
        }
    }

    /// Sets the position and the bar's message; without a terminal, writes `line()` as a
    /// log line when `log` is true.
    pub fn set(&mut self, done: u64, msg: &str, log: bool, line: impl FnOnce() -> String) {
        match &self.bar {
            Some(b) => {
                b.set_position(done);
                b.set_message(msg.to_string());
                if log {
                    self.summary = line();
                }
            }
            None if log => {
                eprintln!("{}", line());
                self.last_line = Some(Instant::now());
            }
            None => {}
        }
    }

    /// Without a terminal: whether `every` has passed since the last line (or none was
    /// written yet).
    #[cfg(feature = "video")]
    pub fn due(&self, every: Duration) -> bool {
        self.last_line.is_none_or(|t| t.elapsed() >= every)
    }

    /// Prints a line above the bar (or as is without a terminal).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Replaces the bar by its last state as a line (the plain mode's last line).
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
            if !self.summary.is_empty() {
                eprintln!("{}", self.summary);
            }
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // A bar left by an error must not stay half drawn under the error line.
        if let Some(b) = &self.bar {
            if !b.is_finished() {
                b.finish_and_clear();
            }
        }
    }
}

/// `95s`, `3m05s`, `1h02m`.
pub fn duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s / 60 % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(4.4), "4s");
        assert_eq!(duration(185.0), "3m05s");
        assert_eq!(duration(3720.0), "1h02m");
        assert_eq!(duration(-1.0), "0s");
    }
}
