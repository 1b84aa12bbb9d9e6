//! The ledger: every reading the fleet knows the broker took (a PUBACK for
//! QoS 1, written to the socket for QoS 0), kept so a later `verify` can look
//! each one up in the collector.
//!
//! ```text
//! file  := line*                     (JSON lines, UTF-8, one reading a line)
//! line  := {"device_id":"sim-00003","name":"door","time":1732829101.123,
//!           "value":{"bool":false},"unit":null}\n
//! value := {"float":f64} | {"bool":b} | {"string":s} | {"bytes":[u8,...]}
//! time  := seconds since the Unix epoch, millisecond precision
//! ```
//!
//! Invariant: per (device_id, name) the times are distinct, since a device
//! never gives two readings the same millisecond.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use telemetry::senml::Value;

/// One reading as a device published it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub device_id: String,
    /// SenML record name, e.g. `temperature`.
    pub name: String,
    /// Seconds since the Unix epoch, millisecond precision (the pack's `bt`).
    pub time: f64,
    pub value: Value,
    /// SenML unit, e.g. `Cel`; `None` for a switch.
    pub unit: Option<String>,
}

/// Why a ledger file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The file could not be created, written, opened or read; check the path
    /// and permissions.
    // The io error is part of the message, not a `source`, so that an
    // error chain printed with `{:#}` does not repeat it.
    #[error("ledger {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A line is not a reading (wrong file, or truncated by a crash); the
    /// ledger cannot be trusted for a verification.
    #[error("ledger {path} line {line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// The readings of a run, in the order they were recorded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ledger {
    readings: Vec<Reading>,
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::default()
    }

    pub fn push(&mut self, reading: Reading) {
        self.readings.push(reading);
    }

    pub fn len(&self) -> usize {
        self.readings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.readings.is_empty()
    }

    pub fn readings(&self) -> &[Reading] {
        &self.readings
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Reading> {
        self.readings.iter()
    }

    /// Orders readings by device, name and time: the order `save` writes.
    pub fn sort(&mut self) {
        self.readings.sort_by(|a, b| {
            (&a.device_id, &a.name)
                .cmp(&(&b.device_id, &b.name))
                .then(a.time.total_cmp(&b.time))
        });
    }

    /// Writes the ledger as JSON lines, replacing `path`.
    pub fn save(&self, path: impl AsRef<Path>) -> anyhow::Result<()> {
        let path = path.as_ref();
        let io = |error| LedgerError::Io {
            path: path.to_owned(),
            error,
        };
        let mut out = BufWriter::new(File::create(path).map_err(io)?);
        for reading in &self.readings {
            serde_json::to_writer(&mut out, reading).map_err(|e| io(std::io::Error::other(e)))?;
            out.write_all(b"\n").map_err(io)?;
        }
        out.into_inner()
            .map_err(|e| io(e.into_error()))?
            .sync_all()
            .map_err(io)?;
        Ok(())
    }

    /// Reads a ledger written by [`Ledger::save`]. Blank lines are skipped;
    /// anything else that is not a reading with a valid device id is an error.
    pub fn load(path: impl AsRef<Path>) -> anyhow::Result<Ledger> {
        let path = path.as_ref();
        let io = |error| LedgerError::Io {
            path: path.to_owned(),
            error,
        };
        let parse = |line: usize, message: String| LedgerError::Parse {
            path: path.to_owned(),
            line,
            message,
        };
        let file = File::open(path).map_err(io)?;
        let mut ledger = Ledger::new();
        for (index, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(io)?;
            if line.trim().is_empty() {
                continue;
            }
            let reading: Reading =
                serde_json::from_str(&line).map_err(|e| parse(index + 1, e.to_string()))?;
            telemetry::validate_device_id(&reading.device_id)
                .map_err(|e| parse(index + 1, e.to_string()))?;
            if !reading.time.is_finite() {
                return Err(parse(index + 1, "time is not finite".to_owned()).into());
            }
            ledger.push(reading);
        }
        Ok(ledger)
    }
}

impl FromIterator<Reading> for Ledger {
    fn from_iter<I: IntoIterator<Item = Reading>>(iter: I) -> Ledger {
        Ledger {
            readings: iter.into_iter().collect(),
        }
    }
}

impl Extend<Reading> for Ledger {
    fn extend<I: IntoIterator<Item = Reading>>(&mut self, iter: I) {
        self.readings.extend(iter);
    }
}

impl<'a> IntoIterator for &'a Ledger {
    type Item = &'a Reading;
    type IntoIter = std::slice::Iter<'a, Reading>;

    fn into_iter(self) -> Self::IntoIter {
        self.readings.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensors::Sensor;

    fn sample_ledger() -> Ledger {
        let mut ledger = Ledger::new();
        for index in 0..8 {
            let mut sensor = Sensor::for_device(5, index);
            for k in 0..50u64 {
                ledger.push(Reading {
                    device_id: format!("sim-{index:05}"),
                    name: sensor.kind().name().to_owned(),
                    time: (1_732_829_101_000 + k * 7 + index as u64) as f64 / 1000.0,
                    value: sensor.sample(),
                    unit: sensor.kind().unit().map(str::to_owned),
                });
            }
        }
        ledger.push(Reading {
            device_id: "odd.one_".into(),
            name: "label".into(),
            time: 1.5,
            value: Value::String("a \"quoted\"\nline".into()),
            unit: None,
        });
        ledger
    }

    #[test]
    fn save_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let ledger = sample_ledger();
        ledger.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), ledger.len());
        assert!(text.starts_with(
            r#"{"device_id":"sim-00000","name":"temperature","time":1732829101.0,"value":{"float":"#
        ));
        assert_eq!(Ledger::load(&path).unwrap(), ledger);
    }

    #[test]
    fn load_names_the_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let good = r#"{"device_id":"d1","name":"n","time":1.0,"value":{"bool":true},"unit":null}"#;
        std::fs::write(&path, format!("{good}\n\n{good}\nnot json\n")).unwrap();
        let err = Ledger::load(&path).unwrap_err().to_string();
        assert!(err.contains("line 4"), "{err}");

        let bad_id = good.replace("d1", "d/1");
        std::fs::write(&path, bad_id).unwrap();
        let err = Ledger::load(&path).unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("device id"), "{err}");
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let err = Ledger::load("/nonexistent/ledger.jsonl")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("ledger /nonexistent/ledger.jsonl:"),
            "{err}"
        );
    }

    #[test]
    fn sort_orders_by_device_name_time() {
        let mut ledger: Ledger = sample_ledger().readings().iter().rev().cloned().collect();
        ledger.sort();
        let keys: Vec<_> = ledger
            .iter()
            .map(|r| (r.device_id.clone(), r.time))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        assert_eq!(keys, sorted);
    }
}
