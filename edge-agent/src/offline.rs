//! The offline spool commands (`edge-agent spool ...`): they open the spool
//! files directly, so they refuse to run while an agent holds them.
//! Output is a readable table by default and JSON with `--json`.

use crate::now_ms;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Serialize;
use telemetry::{decode_payload, Decoded, Envelope, Limits, Value};

use crate::metrics::SpoolMetrics;
use crate::spool::{Spool, SpoolError, SpoolOptions};

/// Opens the spool for an offline command, with a clear message if the agent has it.
pub fn open(dir: &Path, options: SpoolOptions) -> anyhow::Result<Spool> {
    if !dir.exists() {
        bail!("no spool at {}", dir.display());
    }
    Spool::open(dir, options, SpoolMetrics::default()).map_err(|err| explain(err, dir, "open"))
}

/// A spool error for an offline command: "stop the agent first" when the
/// running agent holds sled's lock, else the error with what was tried
/// (`what`: "open", "erase from").
pub fn explain(err: SpoolError, dir: &Path, what: &str) -> anyhow::Error {
    if err.to_string().contains("could not acquire lock") {
        anyhow::anyhow!(
            "the spool at {} is in use: stop the agent first",
            dir.display()
        )
    } else {
        anyhow::Error::new(err).context(format!("cannot {what} the spool at {}", dir.display()))
    }
}

/// One reading as the CLI shows it.
#[derive(Debug, Serialize)]
pub struct ReadingView {
    pub seq: u64,
    pub device_id: String,
    pub topic: String,
    pub received_at: u64,
    /// The payload in hex, exactly as the device sent it.
    pub payload: String,
    /// The SenML records, resolved; empty for an opaque or invalid payload.
    pub records: Vec<RecordView>,
}

#[derive(Debug, Serialize)]
pub struct RecordView {
    pub name: String,
    pub time: f64,
    pub value: serde_json::Value,
    pub unit: Option<String>,
}

impl ReadingView {
    pub fn new(envelope: &Envelope) -> ReadingView {
        let records =
            match decode_payload(&envelope.payload, &Limits::default(), envelope.received_at) {
                Ok(Decoded::Senml(records)) => records
                    .into_iter()
                    .map(|r| RecordView {
                        name: r.name,
                        time: r.time,
                        value: match r.value {
                            Some(Value::Float(v)) => serde_json::json!(v),
                            Some(Value::Bool(b)) => serde_json::json!(b),
                            Some(Value::String(s)) => serde_json::json!(s),
                            Some(Value::Bytes(b)) => serde_json::json!(hex::encode(b)),
                            None => serde_json::json!(r.sum),
                        },
                        unit: r.unit,
                    })
                    .collect(),
                _ => Vec::new(),
            };
        ReadingView {
            seq: envelope.seq,
            device_id: envelope.device_id.clone(),
            topic: envelope.topic.clone(),
            received_at: envelope.received_at,
            payload: hex::encode(&envelope.payload),
            records,
        }
    }

    fn summary(&self) -> String {
        if self.records.is_empty() {
            return format!("opaque {} bytes", self.payload.len() / 2);
        }
        self.records
            .iter()
            .map(|r| {
                format!(
                    "{}={}{}",
                    r.name,
                    r.value,
                    r.unit
                        .as_deref()
                        .map(|u| format!(" {u}"))
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub fn stats(spool: &Spool, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let report = spool.inspect()?;
    if json {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
        return Ok(());
    }
    let age = report
        .oldest_received_at
        .map(|t| format!("{:.0} s", now_ms().saturating_sub(t) as f64 / 1000.0))
        .unwrap_or_else(|| "-".into());
    let rows = [
        ("path", report.path.clone()),
        ("spool id", report.spool_id.clone()),
        ("pending readings", report.stats.pending.to_string()),
        ("bytes", report.stats.bytes.to_string()),
        ("blocks", report.blocks.to_string()),
        (
            "sealed blocks",
            if report.sealed_blocks.is_empty() {
                "none (not encrypted)".to_string()
            } else {
                report
                    .sealed_blocks
                    .iter()
                    .map(|(id, n)| format!("{n} with key {id}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ),
        ("oldest reading age", age),
        ("acked seq", report.stats.acked_seq.to_string()),
        ("last durable seq", report.stats.durable_seq.to_string()),
        ("dead letters", report.dead_letters.to_string()),
        ("corrupt blocks", report.corrupt_blocks.to_string()),
    ];
    for (name, value) in rows {
        writeln!(out, "{name:<20} {value}")?;
    }
    Ok(())
}

pub fn peek(spool: &Spool, count: usize, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let readings: Vec<ReadingView> = spool
        .read_after(0, count, usize::MAX)?
        .iter()
        .map(ReadingView::new)
        .collect();
    if json {
        serde_json::to_writer_pretty(&mut *out, &readings)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:>10}  {:<24} {:>15}  reading",
        "seq", "device", "received_at"
    )?;
    for r in &readings {
        writeln!(
            out,
            "{:>10}  {:<24} {:>15}  {}",
            r.seq,
            r.device_id,
            r.received_at,
            r.summary()
        )?;
    }
    Ok(())
}

/// Writes every pending reading as JSON lines to `path` (or stdout).
pub fn export(spool: &Spool, path: Option<&PathBuf>, out: &mut impl Write) -> anyhow::Result<u64> {
    let mut file;
    let mut stdout;
    let sink: &mut dyn Write = match path {
        Some(path) => {
            file = std::io::BufWriter::new(
                std::fs::File::create(path)
                    .with_context(|| format!("cannot create {}", path.display()))?,
            );
            &mut file
        }
        None => {
            stdout = &mut *out;
            &mut stdout
        }
    };
    let mut after = 0;
    let mut written = 0;
    loop {
        let page = spool.read_after(after, 10_000, usize::MAX)?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for envelope in &page {
            serde_json::to_writer(&mut *sink, &ReadingView::new(envelope))?;
            writeln!(sink)?;
            written += 1;
        }
    }
    sink.flush()?;
    Ok(written)
}

pub fn dead_letters(spool: &Spool, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let letters = spool.dead_letters()?;
    if json {
        let views: Vec<_> = letters
            .iter()
            .map(|l| serde_json::json!({"reason": l.reason, "reading": ReadingView::new(&l.envelope)}))
            .collect();
        serde_json::to_writer_pretty(&mut *out, &views)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "{:>10}  {:<24} reason", "seq", "device")?;
    for l in &letters {
        writeln!(
            out,
            "{:>10}  {:<24} {}",
            l.envelope.seq, l.envelope.device_id, l.reason
        )?;
    }
    writeln!(out, "{} dead letters", letters.len())?;
    Ok(())
}
