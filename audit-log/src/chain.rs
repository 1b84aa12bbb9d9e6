//! The audit log's line format and hash chain, shared by the collector
//! (`cloud-sync`: token changes, erasures, retention runs, data reads) and
//! the gateway (`edge-agent`: spool erasure, key rotation, credentials).
//! Pure: the callers read and write the files; this module builds, parses
//! and checks lines.
//!
//! ```text
//! file   := line*                       each line ends with "\n" (0x0a); UTF-8; no blank lines
//! line   := one JSON object, compact, with exactly these fields:
//!           {"seq":1,"at":"2026-11-29T01:40:48.123Z","actor":"3f9a2c1b","action":"device.erase",
//!            "details":{"device":"dev-1","points":12},"prev":"0000…0000"}
//! seq     u64     the line number, 1-based: line n has seq n
//! at      text    when, RFC 3339 in UTC, set by the writer's clock
//! actor   text    who: a token id, "cli" (a command run on the host), "system" (a background task),
//!                 "anonymous" (a read when reads need no token)
//! action  text    what, dotted: "token.add", "token.revoke", "device.erase", "retention.run",
//!                 "data.read", "spool.erase", "keys.rotate", ...
//! details object  the action's parameters and counts; never payload values, passwords or tokens
//! prev    text    64 lowercase hex digits: SHA-256 of the previous line's bytes (without its "\n");
//!                 on line 1 the genesis value, 64 zeros (GENESIS)
//! ```
//!
//! What the chain detects, reading the file alone ([`verify`]): a changed,
//! removed, inserted or reordered line anywhere before the last line (the
//! next line's `prev` or `seq` no longer matches; the reported line number
//! is the first line whose check fails, so an edit of line n is reported at
//! line n + 1), a removed first line (line 1's `prev` is not the genesis
//! value), and a line that is not a record.
//!
//! What it does not detect: removing the last lines (a shorter chain is a
//! valid chain), or a rewrite of every line from some point on by someone
//! who recomputes the hashes (there is no key). Both are caught by comparing
//! the head (the last `seq` and line hash, which [`verify`] returns) with a
//! copy kept elsewhere, e.g. the head printed by an earlier verification.
//!
//! Invariants the writers keep: one writer at a time appends (the callers
//! lock the file), every line is built by [`Head::append`] from the head of
//! the file as it is, and a line is written whole with its "\n".

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev` of line 1: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The JSON object of one line's `details`.
pub type Details = serde_json::Map<String, serde_json::Value>;

/// One line of the audit log, field for field (see the module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The line number, 1-based.
    pub seq: u64,
    /// RFC 3339 UTC time of the action.
    pub at: String,
    /// A token id, `cli`, `system` or `anonymous`.
    pub actor: String,
    /// Dotted action name, such as `device.erase`.
    pub action: String,
    /// Parameters and counts of the action.
    pub details: Details,
    /// SHA-256 of the previous line, lowercase hex; [`GENESIS`] on line 1.
    pub prev: String,
}

/// Where a chain stands: the last line's `seq` and hash. What a writer
/// needs to append, and what a verification ends with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// `seq` of the last line; 0 for an empty log.
    pub seq: u64,
    /// SHA-256 of the last line, lowercase hex; [`GENESIS`] for an empty log.
    pub hash: String,
}

impl Default for Head {
    fn default() -> Self {
        Head::genesis()
    }
}

impl Head {
    /// The head of an empty log.
    pub fn genesis() -> Head {
        Head {
            seq: 0,
            hash: GENESIS.to_owned(),
        }
    }

    /// The head after `last_line` (the file's last line, without its "\n"):
    /// what a writer reopening a log continues from. Checks the line's
    /// format, not the chain before it (that is [`verify`]'s job).
    pub fn after(last_line: &str) -> Result<Head, BrokenKind> {
        let record = parse_line(last_line)?;
        Ok(Head {
            seq: record.seq,
            hash: line_hash(last_line),
        })
    }

    /// Builds the next line (without "\n") and moves the head past it.
    pub fn append(&mut self, at: &str, actor: &str, action: &str, details: Details) -> String {
        let record = Record {
            seq: self.seq + 1,
            at: at.to_owned(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            details,
            prev: std::mem::take(&mut self.hash),
        };
        let line = serde_json::to_string(&record).expect("a record always serializes");
        self.seq = record.seq;
        self.hash = line_hash(&line);
        line
    }
}

/// SHA-256 of a line's bytes (without its "\n"), lowercase hex.
pub fn line_hash(line: &str) -> String {
    hex::encode(Sha256::digest(line.as_bytes()))
}

/// Parses one line (without its "\n") into its record.
pub fn parse_line(line: &str) -> Result<Record, BrokenKind> {
    let record: Record =
        serde_json::from_str(line).map_err(|err| BrokenKind::NotARecord(err.to_string()))?;
    let hex_ok = record.prev.len() == 64
        && record
            .prev
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex_ok {
        return Err(BrokenKind::NotARecord(
            "prev must be 64 lowercase hex digits".into(),
        ));
    }
    Ok(record)
}

/// The first line of a log that fails a check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct Broken {
    /// 1-based line number in the file.
    pub line: u64,
    pub kind: BrokenKind,
}

/// Why a line fails. Any of them means the log was damaged or tampered
/// with at or before that line; an operator must look (compare with a
/// backup), the log cannot be repaired by the program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokenKind {
    /// Not a JSON record of this format (or not UTF-8).
    #[error("not an audit record: {0}")]
    NotARecord(String),
    /// `seq` is not the line number: a line before it was removed or inserted.
    #[error("seq is {found}, expected {expected}: a line before it was removed or inserted")]
    Seq { expected: u64, found: u64 },
    /// Line 1's `prev` is not [`GENESIS`]: the log does not start at its first line.
    #[error("prev is not the genesis value: the lines before it were removed")]
    NotGenesis,
    /// `prev` is not the hash of the line before.
    #[error("prev is not the hash of line {previous}: line {previous} was changed, or a line after it removed")]
    Prev { previous: u64 },
}

/// Checks lines one at a time, for callers that read a file as they go.
#[derive(Debug, Clone, Default)]
pub struct Verifier {
    head: Head,
}

impl Verifier {
    pub fn new() -> Verifier {
        Verifier::default()
    }

    /// Checks the next line (without its "\n") against the chain so far.
    pub fn push(&mut self, line: &str) -> Result<(), Broken> {
        let number = self.head.seq + 1;
        let broken = |kind| Broken { line: number, kind };
        let record = parse_line(line).map_err(broken)?;
        // The seq first: a removed line shows as a gap, the clearest message.
        if record.seq != number {
            return Err(broken(BrokenKind::Seq {
                expected: number,
                found: record.seq,
            }));
        }
        if record.prev != self.head.hash {
            return Err(broken(if number == 1 {
                BrokenKind::NotGenesis
            } else {
                BrokenKind::Prev {
                    previous: number - 1,
                }
            }));
        }
        self.head = Head {
            seq: number,
            hash: line_hash(line),
        };
        Ok(())
    }

    /// The head after the lines pushed so far.
    pub fn head(&self) -> &Head {
        &self.head
    }
}

/// Checks a whole log, given as its lines without "\n"; returns its head
/// (the number of lines is `head.seq`) or the first line that fails.
pub fn verify<I, S>(lines: I) -> Result<Head, Broken>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut verifier = Verifier::new();
    for line in lines {
        verifier.push(line.as_ref())?;
    }
    Ok(verifier.head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn details(pairs: &[(&str, serde_json::Value)]) -> Details {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    /// A log of `n` lines.
    fn log(n: u64) -> Vec<String> {
        let mut head = Head::genesis();
        (0..n)
            .map(|i| {
                head.append(
                    "2026-11-29T01:40:48.123Z",
                    "cli",
                    "token.add",
                    details(&[("id", format!("id{i}").into())]),
                )
            })
            .collect()
    }

    #[test]
    fn the_format_is_pinned() {
        // Other programs (edge-agent) write the same lines: this is the format.
        let mut head = Head::genesis();
        let line = head.append(
            "2026-11-29T01:40:48.123Z",
            "3f9a2c1b",
            "device.erase",
            details(&[("device", "dev-1".into()), ("points", 12.into())]),
        );
        assert_eq!(
            line,
            format!(
                "{{\"seq\":1,\"at\":\"2026-11-29T01:40:48.123Z\",\"actor\":\"3f9a2c1b\",\
                 \"action\":\"device.erase\",\"details\":{{\"device\":\"dev-1\",\"points\":12}},\
                 \"prev\":\"{GENESIS}\"}}"
            )
        );
        // sha256sum of the line above, computed independently.
        assert_eq!(
            head.hash,
            "0a03bc22f855a9c60dfb30f552b77a631ff91653aada4b0fe456bb1da016f761"
        );
        assert_eq!(head.seq, 1);
        assert_eq!(parse_line(&line).unwrap().details["points"], 12);
    }

    #[test]
    fn an_untouched_log_verifies_and_reopens_at_its_head() {
        let lines = log(5);
        let head = verify(&lines).unwrap();
        assert_eq!(head.seq, 5);
        assert_eq!(head.hash, line_hash(&lines[4]));
        assert_eq!(Head::after(&lines[4]).unwrap(), head);
        // A writer that continues from the head keeps the chain whole.
        let mut reopened = Head::after(&lines[4]).unwrap();
        let mut more = lines.clone();
        more.push(reopened.append("t", "system", "retention.run", Details::new()));
        assert_eq!(verify(&more).unwrap().seq, 6);
        assert_eq!(verify(Vec::<String>::new()).unwrap(), Head::genesis());
    }

    #[test]
    fn a_changed_line_is_reported_at_the_next_line() {
        let mut lines = log(4);
        lines[1] = lines[1].replace("id1", "id9");
        let err = verify(&lines).unwrap_err();
        assert_eq!(err.line, 3);
        assert_eq!(err.kind, BrokenKind::Prev { previous: 2 });
        assert!(err.to_string().contains("line 2 was changed"), "{err}");
    }

    #[test]
    fn removed_inserted_and_reordered_lines_are_reported() {
        let lines = log(4);
        let mut removed = lines.clone();
        removed.remove(1);
        let err = verify(&removed).unwrap_err();
        assert_eq!(
            (err.line, err.kind),
            (
                2,
                BrokenKind::Seq {
                    expected: 2,
                    found: 3
                }
            )
        );

        let mut first_removed = lines.clone();
        first_removed.remove(0);
        assert_eq!(verify(&first_removed).unwrap_err().line, 1);

        let mut swapped = lines.clone();
        swapped.swap(1, 2);
        assert_eq!(verify(&swapped).unwrap_err().line, 2);

        let mut garbage = lines.clone();
        garbage.insert(2, "{\"seq\": 3}".into());
        let err = verify(&garbage).unwrap_err();
        assert_eq!(err.line, 3);
        assert!(matches!(err.kind, BrokenKind::NotARecord(_)), "{err}");
    }

    #[test]
    fn a_removed_last_line_is_not_detected_by_the_chain_alone() {
        // Documented limit: only a head kept elsewhere shows a truncation.
        let lines = log(4);
        let full = verify(&lines).unwrap();
        let truncated = verify(&lines[..3]).unwrap();
        assert_eq!(truncated.seq, 3);
        assert_ne!(truncated, full);
    }

    #[test]
    fn a_recomputed_line_still_breaks_the_seq_or_the_next_prev() {
        // Rebuilding one line with a correct prev does not help: its hash changes.
        let lines = log(3);
        let first = parse_line(&lines[0]).unwrap();
        let mut forged = Head::genesis();
        let mut edited = first.details.clone();
        edited.insert("id".into(), "forged".into());
        let mut changed = lines.clone();
        changed[0] = forged.append(&first.at, &first.actor, &first.action, edited);
        assert_eq!(verify(&changed).unwrap_err().line, 2);
    }

    #[test]
    fn malformed_fields_are_not_records() {
        let line = &log(1)[0];
        for bad in [
            line.replace("\"actor\"", "\"who\""),
            line.replace('}', ",\"extra\":1}"),
            line.replace(GENESIS, "xyz"),
            line.replace(GENESIS, &GENESIS.to_uppercase().replace('0', "A")),
            "[]".to_string(),
            String::new(),
        ] {
            assert!(
                matches!(parse_line(&bad), Err(BrokenKind::NotARecord(_))),
                "{bad}"
            );
        }
    }
}
