//! The outcome of a fleet run: counts, elapsed time, the ledger of
//! acknowledged readings, and the table printed at the end.

use std::io::Write;
use std::time::Duration;

use crate::latency::Latencies;
use crate::ledger::Ledger;

/// What a fleet run achieved.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Distinct readings written to a connection at least once (a resend is
    /// not counted again).
    pub sent: u64,
    /// Readings the broker acknowledged: a PUBACK for QoS 1; for QoS 0, a
    /// reading counts once it was written. Equals `ledger.len()` when the
    /// ledger is kept.
    pub acked: u64,
    /// Connection attempts and connections that failed (each followed by a
    /// reconnect with backoff).
    pub errors: u64,
    /// From the start of the run until the last device stopped.
    pub elapsed: Duration,
    /// Every acknowledged reading, sorted by device, name and time (empty
    /// when the fleet was run without `keep_ledger`).
    pub ledger: Ledger,
    /// Written-to-PUBACK time of every acknowledged QoS 1 publish (empty
    /// unless the fleet was run with `record_latency`).
    pub latency: Latencies,
    /// Acknowledgements between the fleet's `warmup` and the end of its
    /// `duration`; `None` without a duration or when the run stopped early.
    pub steady: Option<Steady>,
}

/// Acknowledgements over the steady part of a timed run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Steady {
    pub acked: u64,
    pub elapsed: Duration,
}

impl Steady {
    /// Acknowledged readings per second over the window.
    pub fn rate(&self) -> f64 {
        self.acked as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

impl Summary {
    /// Acknowledged readings per second over the whole run.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.acked as f64 / secs
        } else {
            0.0
        }
    }

    /// Readings written but never acknowledged (the run ended first).
    pub fn unacked(&self) -> u64 {
        self.sent.saturating_sub(self.acked)
    }

    /// Prints the end-of-run table.
    pub fn print_table(&self, w: &mut impl Write) -> std::io::Result<()> {
        let elapsed = Duration::from_millis(self.elapsed.as_millis() as u64);
        let rows = [
            ("sent", self.sent.to_string()),
            ("acknowledged", self.acked.to_string()),
            ("sent, not acked", self.unacked().to_string()),
            ("connection errors", self.errors.to_string()),
            ("elapsed", humantime::format_duration(elapsed).to_string()),
            ("msg/s", format!("{:.0}", self.rate())),
        ];
        for (label, value) in rows {
            writeln!(w, "{label:<18} {value:>14}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_rate() {
        let summary = Summary {
            sent: 1000,
            acked: 990,
            errors: 3,
            elapsed: Duration::from_micros(2_500_400),
            ledger: Ledger::new(),
            latency: Latencies::new(),
            steady: None,
        };
        assert_eq!(summary.rate().round(), 396.0);
        let mut out = Vec::new();
        summary.print_table(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let expected = "\
sent                         1000
acknowledged                  990
sent, not acked                10
connection errors               3
elapsed                  2s 500ms
msg/s                         396
";
        assert_eq!(text, expected);
    }

    #[test]
    fn zero_elapsed_has_zero_rate() {
        let summary = Summary {
            sent: 0,
            acked: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            ledger: Ledger::new(),
            latency: Latencies::new(),
            steady: None,
        };
        assert_eq!(summary.rate(), 0.0);
    }
}
