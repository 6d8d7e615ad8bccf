//! Progress of long work: a bar for a person at a terminal, log lines for everyone else
//! (a scheduler's log keeps one line per epoch, not a bar redrawn a thousand times).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use strata_train::{EpochStats, Progress};

use crate::cli::{GlobalArgs, LogFormat};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Bars on stderr.
    Bars,
    /// Log lines only.
    Logs,
}

impl Style {
    pub fn of(args: &GlobalArgs) -> Self {
        if args.log_format == LogFormat::Text && !args.quiet && std::io::stderr().is_terminal() {
            Self::Bars
        } else {
            Self::Logs
        }
    }
}

/// Training progress: a bar per epoch, and one log line when each ends.
#[derive(Debug)]
pub struct EpochProgress {
    style: Style,
    bar: Option<ProgressBar>,
}

impl EpochProgress {
    pub fn new(style: Style) -> Self {
        Self { style, bar: None }
    }
}

impl Progress for EpochProgress {
    fn epoch_start(&mut self, epoch: u64, epochs: u64, rows: u64) {
        if self.style == Style::Bars {
            let bar = ProgressBar::new(rows);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {human_pos}/{human_len} rows {per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("epoch {epoch}/{epochs}"));
            self.bar = Some(bar);
        }
    }

    fn rows_done(&mut self, rows: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(rows);
        }
    }

    fn epoch_end(&mut self, s: &EpochStats) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        tracing::info!(
            epoch = s.epoch,
            train_loss = s.train_loss,
            train_accuracy = s.train_accuracy,
            validation_loss = s.validation_loss,
            validation_accuracy = s.validation_accuracy,
            rows_per_second = s.rows_per_second.round(),
            seconds = s.seconds,
            "epoch done"
        );
    }
}
