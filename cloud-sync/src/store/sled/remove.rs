//! Retention and erasure on the sled store: removing a device's points and
//! documents (all of them, or those before a cutoff) and keeping its
//! summary in `devices` equal to what is left.
//!
//! ```text
//! for each device (keys of `devices`, plus device ids found in `points` and `documents`):
//!   repeat, under the ingest lock, until nothing is left to remove:
//!     gather up to CHUNK keys:  points    device 0x00 name 0x00 time(MIN) .. time(cutoff)   per series
//!                                         (a chunk reaching past the cutoff is rewritten with the points it keeps)
//!                               documents device 0x00 ms(0) .. ms(ceil(cutoff / 1e6))
//!     one transaction over points + documents + devices: the removals, and the
//!     summary's counts lowered by what was removed (a series at 0 is dropped)
//! erasure: the same with no cutoff, then the summary itself
//! flush, then the answer
//! ```
//!
//! Invariants: a summary changes in the same transaction as the rows it
//! counts, so counts never disagree with the data; the ingest lock is held
//! for one chunk at a time, so a large removal delays a batch by at most one
//! chunk. Dedup marks (`dedup`, `spools`) are left alone: they hold no
//! device data, and they make a gateway's resend of a removed envelope a
//! duplicate instead of a copy back. sled is a log-structured store: a
//! removed record's bytes stay in its files until sled rewrites the
//! segment, which this code does not force.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{Batch, Transactional, Tree};

use super::chunks::{decode_chunk, put_chunks};
use super::{backend, decode, encode, DeviceRecord, Inner};
use crate::model::{ErasureOutcome, ExpiryOutcome, ExpiryPolicy};
use crate::store::{keys, StoreError};

/// Keys removed per transaction: bounds how long a batch waits for the lock.
const CHUNK: usize = 10_000;

/// What one device lost.
#[derive(Debug, Default)]
struct Removed {
    points: u64,
    documents: u64,
    /// Series that lost at least one point.
    series: BTreeSet<Vec<u8>>,
}

impl Inner {
    pub(super) fn expire(&self, policy: &ExpiryPolicy) -> Result<ExpiryOutcome, StoreError> {
        let mut outcome = ExpiryOutcome::default();
        for device in self.device_ids()? {
            let Some(cutoff) = policy.cutoff(&device) else {
                continue;
            };
            let removed = self.remove(&device, Some(cutoff))?;
            if removed.points + removed.documents > 0 {
                outcome.devices += 1;
            }
            outcome.points += removed.points;
            outcome.documents += removed.documents;
        }
        self.db.flush().map_err(backend)?;
        Ok(outcome)
    }

    pub(super) fn erase_device(&self, device_id: &str) -> Result<ErasureOutcome, StoreError> {
        let removed = self.remove(device_id, None)?;
        {
            let _serial = self.ingest_lock.lock().unwrap_or_else(|e| e.into_inner());
            // Last: until here a crash leaves the device listed, and a repeated
            // erasure finishes the job.
            self.devices.remove(device_id).map_err(backend)?;
        }
        self.db.flush().map_err(backend)?;
        Ok(ErasureOutcome {
            points: removed.points,
            documents: removed.documents,
            measurements: removed.series.len() as u64,
        })
    }

    /// Every device id with a summary, a point or a document (a batch that
    /// died between its data and its marks leaves data without a summary).
    fn device_ids(&self) -> Result<BTreeSet<String>, StoreError> {
        let mut ids = BTreeSet::new();
        for entry in self.devices.iter().keys() {
            ids.insert(id_text("devices", &entry.map_err(backend)?)?);
        }
        for (tree, name) in [(&self.points, "points"), (&self.documents, "documents")] {
            for id in components(tree, name, &[])? {
                ids.insert(id_text(name, &id)?);
            }
        }
        Ok(ids)
    }

    /// Removes the points of `device_id` older than `cutoff` (ns) and the
    /// documents received before it; everything with `None`.
    fn remove(&self, device_id: &str, cutoff: Option<i64>) -> Result<Removed, StoreError> {
        let prefix = keys::document_prefix(device_id);
        let mut total = Removed::default();
        loop {
            let _serial = self.ingest_lock.lock().unwrap_or_else(|e| e.into_inner());
            let mut points = Batch::default();
            let mut documents = Batch::default();
            let mut per_series: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
            let mut gathered = 0;
            'series: for name in components(&self.points, "points", &prefix)? {
                let mut series = prefix.clone();
                series.extend_from_slice(&name);
                series.push(0);
                let start = Bound::Included(keys::point_key(&series, i64::MIN));
                let end = match cutoff {
                    Some(cutoff) => Bound::Excluded(keys::point_key(&series, cutoff)),
                    None => Bound::Included(keys::point_key(&series, i64::MAX)),
                };
                for entry in self.points.range((start, end)) {
                    if gathered == CHUNK {
                        break 'series;
                    }
                    let (key, value) = entry.map_err(backend)?;
                    let removed = trim_chunk(&mut points, &series, &key, &value, cutoff)?;
                    *per_series.entry(name.clone()).or_default() += removed;
                    gathered += 1;
                }
            }
            let mut document_count = 0;
            let document_keys: Box<dyn Iterator<Item = sled::Result<sled::IVec>>> = match cutoff {
                Some(cutoff) => {
                    let end =
                        keys::document_bound(&prefix, ExpiryPolicy::documents_before_ms(cutoff));
                    let start = keys::document_bound(&prefix, 0);
                    Box::new(self.documents.range(start..end).keys())
                }
                None => Box::new(self.documents.scan_prefix(&prefix).keys()),
            };
            for key in document_keys {
                if gathered == CHUNK {
                    break;
                }
                documents.remove(key.map_err(backend)?);
                document_count += 1;
                gathered += 1;
            }
            if gathered == 0 {
                return Ok(total);
            }
            let summary = self.discounted(device_id, &per_series, document_count)?;
            (&self.points, &self.documents, &self.devices)
                .transaction(|(p, d, devices)| {
                    p.apply_batch(&points)?;
                    d.apply_batch(&documents)?;
                    if let Some(record) = &summary {
                        devices.insert(device_id.as_bytes(), record.as_slice())?;
                    }
                    Ok::<_, ConflictableTransactionError<()>>(())
                })
                .map_err(|e| match e {
                    TransactionError::Storage(e) => backend(e),
                    TransactionError::Abort(()) => unreachable!("removals never abort"),
                })?;
            total.points += per_series.values().sum::<u64>();
            total.documents += document_count;
            total.series.extend(per_series.into_keys());
        }
    }

    /// The device's summary with `removed` points per series and `documents`
    /// fewer, encoded; `None` when the device has no summary (its data came
    /// from a batch that never counted it).
    fn discounted(
        &self,
        device_id: &str,
        removed: &BTreeMap<Vec<u8>, u64>,
        documents: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(bytes) = self.devices.get(device_id).map_err(backend)? else {
            return Ok(None);
        };
        let mut record: DeviceRecord = decode("devices", &bytes)?;
        for (name, n) in removed {
            let name = id_text("points", name)?;
            if let Some(count) = record.measurements.get_mut(&name) {
                *count = count.saturating_sub(*n);
                if *count == 0 {
                    record.measurements.remove(&name);
                }
            }
        }
        record.documents = record.documents.saturating_sub(documents);
        Ok(Some(encode(&record)))
    }
}

/// Adds to `points` the writes that remove the points of the chunk under
/// `key` older than `cutoff` (all of them with `None`): the chunk goes, and
/// the points it keeps, if any, move to a chunk keyed by the first of them.
/// Returns how many points were removed.
fn trim_chunk(
    points: &mut Batch,
    series: &[u8],
    key: &[u8],
    value: &[u8],
    cutoff: Option<i64>,
) -> Result<u64, StoreError> {
    let mut held = decode_chunk(key, value)?;
    let kept = match cutoff {
        Some(cutoff) => held.split_off(held.partition_point(|&(time, _)| time < cutoff)),
        None => Vec::new(),
    };
    points.remove(key);
    put_chunks(points, series, &kept);
    Ok(held.len() as u64)
}

/// The distinct key parts that follow `prefix` up to the next 0x00, in key
/// order: device ids at the top of `points` or `documents`, series names
/// under `device_id 0x00`. One seek per part, not one read per key.
fn components(tree: &Tree, name: &'static str, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut out = Vec::new();
    let mut from = prefix.to_vec();
    while let Some(entry) = tree.range(from.clone()..).keys().next() {
        let key = entry.map_err(backend)?;
        if !key.starts_with(prefix) {
            break;
        }
        let rest = &key[prefix.len()..];
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| StoreError::Corrupt {
                tree: name,
                reason: "key without a 0x00 separator".into(),
            })?;
        let part = rest[..end].to_vec();
        // Past every key of `prefix part 0x00 ...`.
        from = prefix.to_vec();
        from.extend_from_slice(&part);
        from.push(1);
        out.push(part);
    }
    Ok(out)
}

fn id_text(tree: &'static str, bytes: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| StoreError::Corrupt {
        tree,
        reason: "an id is not UTF-8".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_skip_to_the_next_part() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("t").unwrap();
        for device in ["a", "a.b", "b"] {
            for name in ["x", "y"] {
                for t in [1, 2, 3] {
                    let key = keys::point_key(&keys::series_prefix(device, name), t);
                    tree.insert(key, b"").unwrap();
                }
            }
        }
        let parts = |prefix: &[u8]| components(&tree, "t", prefix).unwrap();
        assert_eq!(
            parts(b""),
            vec![b"a".to_vec(), b"a.b".to_vec(), b"b".to_vec()]
        );
        assert_eq!(parts(b"a\0"), vec![b"x".to_vec(), b"y".to_vec()]);
        assert!(parts(b"c\0").is_empty());
    }
}
