//! Points of one series stored in chunks: one `points` key holds the
//! points that one batch brought to that series, not one point.
//!
//! ```text
//! key    device_id 0x00 name 0x00 time(first point)
//! value  packed CBOR [ {0: offset, 1: value, 2: unit, 3: spool_ref, 4: seq}, ... ]
//!        offset = time - first time (ns); sorted, strictly increasing
//! legacy packed CBOR {0: value, 1: unit, 2: spool_ref, 3: seq}   (schema 1: one point at the key's time)
//! ```
//!
//! Why: every sled insert clones and re-logs a tree node, several
//! microseconds whatever the value's size; a batch of 1,000 readings from
//! 100 devices writes 100 keys instead of 1,000.
//!
//! Invariants:
//! - The chunks of a series are disjoint in time: a point lies in at most
//!   one chunk, the one with the greatest first time at or before it, so a
//!   point is found with one seek.
//! - A chunk is only ever rewritten with a superset of its points under
//!   the same key (ingest), or replaced by the points it keeps (retention).
//!   Readers drop a point that is not after the one they returned last: a
//!   scan that crosses a rewrite may meet a moved point twice, never zero times.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;

use serde::{Deserialize, Serialize};
use sled::{Batch, Tree};
use telemetry::Value;

use super::{backend, PointRecord};
use crate::model::TimeRange;
use crate::store::{keys, StoreError};

/// Most points written under one key: bounds the bytes a rewrite copies.
const MAX_CHUNK_POINTS: usize = 512;

/// A point with its time, as a chunk holds it.
pub(super) type TimedPoint = (i64, PointRecord);

/// One point of a chunk on disk (packed CBOR: integer field keys).
#[derive(Serialize)]
struct WireEntry<'a> {
    offset: u64,
    value: &'a Value,
    unit: &'a Option<String>,
    spool_ref: u64,
    seq: u64,
}

#[derive(Deserialize)]
struct OwnedWireEntry {
    offset: u64,
    value: Value,
    unit: Option<String>,
    spool_ref: u64,
    seq: u64,
}

fn corrupt(reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        tree: "points",
        reason: reason.into(),
    }
}

/// Encodes `points` (sorted by time, not empty) as a chunk: its key's
/// time and its value.
fn encode_chunk(points: &[TimedPoint]) -> (i64, Vec<u8>) {
    let first = points[0].0;
    let entries: Vec<WireEntry<'_>> = points
        .iter()
        .map(|(time, record)| WireEntry {
            offset: time.abs_diff(first),
            value: &record.value,
            unit: &record.unit,
            spool_ref: record.spool_ref,
            seq: record.seq,
        })
        .collect();
    let bytes = serde_cbor::ser::to_vec_packed(&entries).expect("chunks always serialize");
    (first, bytes)
}

/// The points of the chunk stored under `key` with `value`, in time order.
/// Reads a schema 1 record (a CBOR map) as a chunk of one point.
pub(super) fn decode_chunk(key: &[u8], value: &[u8]) -> Result<Vec<TimedPoint>, StoreError> {
    let first = keys::point_time(key).ok_or_else(|| corrupt("key shorter than a time"))?;
    let decode_err = |e: serde_cbor::Error| corrupt(e.to_string());
    // CBOR major type 5 (a map) is a legacy single point, type 4 (an array) a chunk.
    match value.first().map(|b| b >> 5) {
        Some(5) => {
            let record: PointRecord = serde_cbor::from_slice(value).map_err(decode_err)?;
            Ok(vec![(first, record)])
        }
        Some(4) => {
            let entries: Vec<OwnedWireEntry> = serde_cbor::from_slice(value).map_err(decode_err)?;
            let mut points = Vec::with_capacity(entries.len());
            for entry in entries {
                // An offset may exceed i64::MAX (a chunk from before 1970 to after).
                let time = i64::try_from(i128::from(first) + i128::from(entry.offset))
                    .map_err(|_| corrupt("chunk offset out of range"))?;
                if points.last().is_some_and(|&(last, _)| last >= time) {
                    return Err(corrupt("chunk times are not increasing"));
                }
                let record = PointRecord {
                    value: entry.value,
                    unit: entry.unit,
                    spool_ref: entry.spool_ref,
                    seq: entry.seq,
                };
                points.push((time, record));
            }
            if points.is_empty() {
                return Err(corrupt("empty chunk"));
            }
            Ok(points)
        }
        _ => Err(corrupt("neither a point nor a chunk")),
    }
}

/// Adds to `writes` the chunks holding `points` (sorted by time), at most
/// [`MAX_CHUNK_POINTS`] each: the first is keyed by the first point's time.
pub(super) fn put_chunks(writes: &mut Batch, prefix: &[u8], points: &[TimedPoint]) {
    for piece in points.chunks(MAX_CHUNK_POINTS) {
        let (first, bytes) = encode_chunk(piece);
        writes.insert(keys::point_key(prefix, first), bytes);
    }
}

/// What one batch reads and writes of one series: the stored chunks that
/// meet the batch's times, and the points it adds.
pub(super) struct SeriesChunks {
    prefix: Vec<u8>,
    /// Stored chunks by first time (those that may hold one of the batch's times).
    held: BTreeMap<i64, Vec<TimedPoint>>,
    added: Vec<TimedPoint>,
}

impl SeriesChunks {
    /// Reads the chunks of the series under `prefix` that may hold one of
    /// `times`: the chunk at or before the earliest, then one range scan over
    /// the batch's window (usually empty: new readings are newer than the
    /// stored ones); one seek per time when the window holds many more
    /// stored chunks than the batch brings points.
    pub(super) fn load(tree: &Tree, prefix: Vec<u8>, times: &[i64]) -> Result<Self, StoreError> {
        let mut series = SeriesChunks {
            prefix,
            held: BTreeMap::new(),
            added: Vec::new(),
        };
        let (Some(&first), Some(&last)) = (times.iter().min(), times.iter().max()) else {
            return Ok(series);
        };
        series.hold_chunk_at_or_before(tree, first)?;
        if first == last {
            // One time (a series with one point in the batch): no window to scan.
            return Ok(series);
        }
        let budget = 2 * times.len() + 16;
        let window = (
            Bound::Excluded(keys::point_key(&series.prefix, first)),
            Bound::Included(keys::point_key(&series.prefix, last)),
        );
        let mut scanned = Vec::new();
        for entry in tree.range(window) {
            if scanned.len() == budget {
                for &time in times {
                    series.hold_chunk_at_or_before(tree, time)?;
                }
                return Ok(series);
            }
            scanned.push(entry.map_err(backend)?);
        }
        for (key, value) in scanned {
            let points = decode_chunk(&key, &value)?;
            series.held.insert(points[0].0, points);
        }
        Ok(series)
    }

    /// Holds the stored chunk with the greatest first time at or before `time`.
    fn hold_chunk_at_or_before(&mut self, tree: &Tree, time: i64) -> Result<(), StoreError> {
        let range = keys::point_key(&self.prefix, i64::MIN)..=keys::point_key(&self.prefix, time);
        if let Some(entry) = tree.range(range).next_back() {
            let (key, value) = entry.map_err(backend)?;
            let points = decode_chunk(&key, &value)?;
            self.held.insert(points[0].0, points);
        }
        Ok(())
    }

    /// The first time of the held chunk whose span holds `time`.
    fn chunk_holding(&self, time: i64) -> Option<i64> {
        let (&first, points) = self.held.range(..=time).next_back()?;
        let last = points.last().map_or(first, |&(last, _)| last);
        (time <= last).then_some(first)
    }

    /// The stored point at `time`, if any.
    pub(super) fn held_point(&self, time: i64) -> Option<&PointRecord> {
        let points = &self.held[&self.chunk_holding(time)?];
        let index = points.binary_search_by_key(&time, |&(t, _)| t).ok()?;
        Some(&points[index].1)
    }

    /// Adds a point that no stored chunk holds.
    pub(super) fn add(&mut self, time: i64, record: PointRecord) {
        self.added.push((time, record));
    }

    /// The writes that store the added points and keep chunks disjoint: a
    /// point inside a stored chunk's span rewrites that chunk (same key,
    /// more points); the others form new chunks, cut wherever a stored
    /// chunk starts between two of them.
    pub(super) fn write_into(mut self, writes: &mut Batch) {
        self.added.sort_unstable_by_key(|&(time, _)| time);
        let mut grown: BTreeMap<i64, Vec<TimedPoint>> = BTreeMap::new();
        let mut run: Vec<TimedPoint> = Vec::new();
        for (time, record) in std::mem::take(&mut self.added) {
            if let Some(first) = self.chunk_holding(time) {
                grown
                    .entry(first)
                    .or_insert_with(|| self.held[&first].clone())
                    .push((time, record));
                continue;
            }
            let cut = run.last().is_some_and(|&(previous, _)| {
                let between = (Bound::Excluded(previous), Bound::Excluded(time));
                self.held.range(between).next().is_some()
            });
            if cut {
                put_chunks(writes, &self.prefix, &run);
                run.clear();
            }
            run.push((time, record));
        }
        if !run.is_empty() {
            put_chunks(writes, &self.prefix, &run);
        }
        for mut points in grown.into_values() {
            points.sort_unstable_by_key(|&(time, _)| time);
            put_chunks(writes, &self.prefix, &points);
        }
    }
}

/// Which way a [`SeriesPoints`] walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    Forward,
    Backward,
}

/// The points of one series in a time range, read chunk by chunk.
pub(super) struct SeriesPoints {
    chunks: sled::Iter,
    direction: Direction,
    range: TimeRange,
    pending: VecDeque<TimedPoint>,
    /// The time returned last: a point not past it is a copy met twice.
    last: Option<i64>,
}

impl SeriesPoints {
    /// Walks the points of the series under `prefix` in `range`: from the
    /// chunk at or before the range's start, which may reach into it.
    pub(super) fn new(
        tree: &Tree,
        prefix: &[u8],
        range: TimeRange,
        direction: Direction,
    ) -> Result<Self, StoreError> {
        let from = range.from.unwrap_or(i64::MIN);
        let start = match tree
            .range(keys::point_key(prefix, i64::MIN)..=keys::point_key(prefix, from))
            .next_back()
        {
            Some(entry) => entry.map_err(backend)?.0.to_vec(),
            None => keys::point_key(prefix, from),
        };
        let end = match range.to {
            Some(to) => Bound::Excluded(keys::point_key(prefix, to)),
            None => Bound::Included(keys::point_key(prefix, i64::MAX)),
        };
        Ok(SeriesPoints {
            chunks: tree.range((Bound::Included(start), end)),
            direction,
            range,
            pending: VecDeque::new(),
            last: None,
        })
    }

    fn fill(&mut self) -> Option<Result<(), StoreError>> {
        let entry = match self.direction {
            Direction::Forward => self.chunks.next()?,
            Direction::Backward => self.chunks.next_back()?,
        };
        Some(entry.map_err(backend).and_then(|(key, value)| {
            let mut points = decode_chunk(&key, &value)?;
            if self.direction == Direction::Backward {
                points.reverse();
            }
            self.pending = points.into();
            Ok(())
        }))
    }

    fn in_order(&self, time: i64) -> bool {
        match (self.last, self.direction) {
            (None, _) => true,
            (Some(last), Direction::Forward) => time > last,
            (Some(last), Direction::Backward) => time < last,
        }
    }
}

impl Iterator for SeriesPoints {
    type Item = Result<TimedPoint, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.pending.pop_front() {
                Some((time, record)) => {
                    if self.range.contains(time) && self.in_order(time) {
                        self.last = Some(time);
                        return Some(Ok((time, record)));
                    }
                }
                None => {
                    if let Err(err) = self.fill()? {
                        return Some(Err(err));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64) -> PointRecord {
        PointRecord {
            value: Value::Float(seq as f64),
            unit: None,
            spool_ref: 1,
            seq,
        }
    }

    fn open() -> (tempfile::TempDir, Tree) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("points").unwrap();
        (dir, tree)
    }

    fn store(tree: &Tree, prefix: &[u8], times: &[i64]) {
        let mut series = SeriesChunks::load(tree, prefix.to_vec(), times).unwrap();
        for &t in times {
            if series.held_point(t).is_none() {
                series.add(t, record(t as u64));
            }
        }
        let mut writes = Batch::default();
        series.write_into(&mut writes);
        tree.apply_batch(writes).unwrap();
    }

    fn all(tree: &Tree, prefix: &[u8], direction: Direction) -> Vec<i64> {
        SeriesPoints::new(tree, prefix, TimeRange::default(), direction)
            .unwrap()
            .map(|p| p.unwrap().0)
            .collect()
    }

    fn chunk_spans(tree: &Tree) -> Vec<(i64, i64)> {
        tree.iter()
            .map(|e| {
                let (k, v) = e.unwrap();
                let points = decode_chunk(&k, &v).unwrap();
                (points[0].0, points.last().unwrap().0)
            })
            .collect()
    }

    #[test]
    fn chunks_round_trip_and_legacy_points_read_as_one() {
        let points = vec![
            (i64::MIN, record(1)),
            (-5, record(1)),
            (i64::MAX, record(2)),
        ];
        let (first, bytes) = encode_chunk(&points);
        let key = keys::point_key(b"d\0n\0", first);
        assert_eq!(decode_chunk(&key, &bytes).unwrap(), points);
        let legacy = serde_cbor::ser::to_vec_packed(&record(3)).unwrap();
        assert_eq!(
            decode_chunk(&key, &legacy).unwrap(),
            vec![(i64::MIN, record(3))]
        );
        assert!(decode_chunk(&key, &[0x80]).is_err());
    }

    #[test]
    fn late_points_join_the_chunk_that_spans_them_and_chunks_stay_disjoint() {
        let (_dir, tree) = open();
        let prefix = keys::series_prefix("d", "n");
        store(&tree, &prefix, &[10, 20, 30]);
        store(&tree, &prefix, &[40, 50]);
        // 25 falls inside [10, 30]; 35 between two chunks; 5 and 60 outside.
        store(&tree, &prefix, &[5, 25, 35, 45, 60]);
        assert_eq!(
            all(&tree, &prefix, Direction::Forward),
            vec![5, 10, 20, 25, 30, 35, 40, 45, 50, 60]
        );
        assert_eq!(
            all(&tree, &prefix, Direction::Backward),
            vec![60, 50, 45, 40, 35, 30, 25, 20, 10, 5]
        );
        let spans = chunk_spans(&tree);
        for pair in spans.windows(2) {
            assert!(pair[0].1 < pair[1].0, "{spans:?}");
        }
    }

    #[test]
    fn a_range_starts_inside_the_chunk_before_it() {
        let (_dir, tree) = open();
        let prefix = keys::series_prefix("d", "n");
        store(&tree, &prefix, &[10, 20, 30, 40]);
        let range = TimeRange {
            from: Some(15),
            to: Some(40),
        };
        let times: Vec<i64> = SeriesPoints::new(&tree, &prefix, range, Direction::Forward)
            .unwrap()
            .map(|p| p.unwrap().0)
            .collect();
        assert_eq!(times, vec![20, 30]);
    }

    #[test]
    fn the_window_lookups_find_the_same_chunks_as_the_scan() {
        let (_dir, tree) = open();
        let prefix = keys::series_prefix("d", "n");
        // Many stored chunks inside the window of a two-point batch.
        for t in 0..100 {
            store(&tree, &prefix, &[t * 10]);
        }
        store(&tree, &prefix, &[5, 995, 1000]);
        let series = SeriesChunks::load(&tree, prefix.clone(), &[0, 500, 501, 1000]).unwrap();
        assert!(series.held_point(0).is_some());
        assert!(series.held_point(500).is_some());
        assert!(series.held_point(501).is_none());
        assert!(series.held_point(1000).is_some());
        assert_eq!(all(&tree, &prefix, Direction::Forward).len(), 103);
    }

    #[test]
    fn big_batches_are_cut_into_bounded_chunks() {
        let (_dir, tree) = open();
        let prefix = keys::series_prefix("d", "n");
        let times: Vec<i64> = (0..1200).collect();
        store(&tree, &prefix, &times);
        assert_eq!(tree.len(), 3);
        assert_eq!(all(&tree, &prefix, Direction::Forward), times);
    }
}
