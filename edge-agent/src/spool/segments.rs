//! The queue of blocks, in append-only segment files of the spool's own.
//!
//! sled keeps every value it was given in its in-memory tree for as long as
//! the value lives (its `cache_capacity` does not bound that), so a queue in
//! sled made the agent's memory grow with the backlog: about 200 bytes of
//! RSS per spooled reading. The queue is written once, read in order and
//! deleted from the front, which is what a log of segment files does with
//! memory that does not depend on the backlog at all: here only a summary of
//! each segment (a few dozen bytes per several megabytes of readings) stays
//! in memory. It also takes a full disk calmly: a failed append is cut off
//! again and nothing else is touched.
//!
//! ```text
//! <spool dir>/queue/<name: 20 digits>.seg   oldest first
//!   record:  magic "SPB1" | body length u32 LE | CRC-32 u32 LE of (first seq ++ body)
//!            | first seq u64 BE | body: one block (block.rs)
//! ```
//!
//! Invariants:
//! - a segment's name is at most every seq in it and above every seq in the
//!   segments before it, so the block holding seq `s` is in the last segment
//!   named `<= s`;
//! - only the last segment is appended to; a record counts (for readers, and
//!   its seqs as durable) only after the `fdatasync` that holds it, and a new
//!   segment file only after its directory entry is synced;
//! - the last segment is never deleted before an empty successor named past
//!   its last seq exists, so its name keeps a lower bound of the next seq
//!   across restarts;
//! - damage is never silently cut off: only a tail after which no whole
//!   record follows (a write torn by a crash) is truncated at open; damage
//!   with whole records after it stays, and readers report it once, to be set
//!   aside, and resume at the next whole record.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::block;

const MAGIC: [u8; 4] = *b"SPB1";
const RECORD_HEADER: usize = 20;
const SUBDIR: &str = "queue";
const EXTENSION: &str = "seg";

/// Largest segment file: the writer rolls past it (or past a sixteenth of
/// `max_bytes`, if smaller), and [`SegmentBuilder`] cuts its segments here.
pub(super) const MAX_SEGMENT_BYTES: u64 = 8 << 20;

/// The `corrupt_blocks` key of what was set aside from `offset` of
/// `segment`: both big-endian, so the tree sorts in queue order.
pub(super) fn place_key(segment: u64, offset: u64) -> [u8; 16] {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&segment.to_be_bytes());
    key[8..].copy_from_slice(&offset.to_be_bytes());
    key
}

/// The queue directory of the spool in `dir`.
pub(super) fn queue_dir(dir: &Path) -> PathBuf {
    dir.join(SUBDIR)
}

/// What the spool keeps in memory about one segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Segment {
    /// Bytes of whole, durable records; readers stop here.
    pub len: u64,
    pub blocks: u64,
    pub readings: u64,
    /// First seq of the first block; `None` for an empty segment.
    pub first_seq: Option<u64>,
    /// Last seq of the last block; 0 for an empty segment.
    pub last_seq: u64,
    /// Arrival of the first reading of the first block.
    pub oldest: Option<u64>,
    /// Arrival of the first reading of the last block.
    pub newest: u64,
    /// Per key id: blocks sealed with it, and the last seq among them.
    pub sealed: BTreeMap<u32, (u64, u64)>,
}

impl Segment {
    fn add(&mut self, first_seq: u64, header: &block::BlockHeader, record_len: u64) {
        self.len += record_len;
        self.blocks += 1;
        self.readings += u64::from(header.count);
        self.first_seq.get_or_insert(first_seq);
        self.last_seq = header.last_seq;
        self.oldest.get_or_insert(header.first_received_at);
        self.newest = header.first_received_at;
        if let Some(id) = header.key_id {
            let (blocks, last_seq) = self.sealed.entry(id).or_insert((0, 0));
            *blocks += 1;
            *last_seq = header.last_seq;
        }
    }

    /// A whole record whose block header does not parse: its seqs are
    /// unknown beyond the first, which still keeps the segment from being
    /// taken for empty (and trimmed) before readers have set it aside.
    fn add_unreadable(&mut self, first_seq: u64, record_len: u64) {
        self.len += record_len;
        self.first_seq.get_or_insert(first_seq);
        self.last_seq = self.last_seq.max(first_seq);
    }

    /// Readings in the segment with a seq above `acked` (approximate in the
    /// block the acknowledgement stopped inside, where refused publishes
    /// leave seq gaps).
    pub fn unacked(&self, acked: u64) -> u64 {
        match self.first_seq {
            None => 0,
            Some(_) if self.last_seq <= acked => 0,
            Some(first) if first > acked => self.readings,
            Some(_) => (self.last_seq - acked).min(self.readings),
        }
    }
}

/// One item met while reading the queue in order.
pub(super) enum Item<'a> {
    /// A whole record: `bytes` is the block, as appended.
    Block {
        segment: u64,
        offset: u64,
        first_seq: u64,
        bytes: &'a [u8],
    },
    /// Bytes that are not a whole record, up to the next whole record (or
    /// the segment's end). Reported on every visit until the visitor
    /// calls [`Queue::mark_damaged`] for it.
    Damaged {
        segment: u64,
        offset: u64,
        bytes: &'a [u8],
    },
}

/// What the visitor of [`Queue::visit`] wants next.
pub(super) enum Next {
    Continue,
    /// Stop; the next read starting at this block's seqs may start here.
    Stop,
}

/// What [`Queue::open`] found.
#[derive(Debug, Default)]
pub(super) struct Opened {
    /// Every seq ever appended is below this (0: the queue never held one).
    pub next_seq: u64,
    /// Bytes of a torn tail cut off the last segment (a crash mid-append).
    pub torn_bytes: u64,
}

/// The segment files of one spool.
pub(super) struct Queue {
    dir: PathBuf,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    segments: BTreeMap<u64, Segment>,
    /// Where the last read stopped: a block's segment, offset and first seq.
    cursor: Option<(u64, u64, u64)>,
    /// Damage already reported in this process: (segment, offset) -> where
    /// the next whole record starts.
    damaged: BTreeMap<(u64, u64), u64>,
}

/// When the writer starts a new segment.
#[derive(Debug, Clone, Copy)]
pub(super) struct Roll {
    /// Size of a full segment.
    pub bytes: u64,
    /// Widest spread of arrival times (ms) in one segment.
    pub span_ms: u64,
}

impl Roll {
    #[cfg(test)]
    fn at(bytes: u64) -> Roll {
        Roll {
            bytes,
            span_ms: u64::MAX,
        }
    }
}

/// The writer's handle on the last segment.
#[derive(Default)]
pub(super) struct Appender {
    segment: Option<u64>,
    file: Option<File>,
}

impl Queue {
    /// Opens the queue of the spool in `dir` (creating its directory),
    /// reading every record header. The last segment is read whole, and a
    /// torn tail (no whole record after it) is cut off.
    pub fn open(dir: &Path) -> io::Result<(Queue, Opened)> {
        fs::create_dir_all(queue_dir(dir))?;
        Queue::open_as(dir, true)
    }

    /// Opens the queue of a spool that is only to be read (a quarantined
    /// one being salvaged): nothing is cut off or created; a torn tail is
    /// left out of the last segment's length. No queue directory: empty.
    pub fn open_read_only(dir: &Path) -> io::Result<Queue> {
        if !queue_dir(dir).is_dir() {
            return Ok(Queue {
                dir: queue_dir(dir),
                state: Mutex::default(),
            });
        }
        Queue::open_as(dir, false).map(|(queue, _)| queue)
    }

    fn open_as(dir: &Path, repair: bool) -> io::Result<(Queue, Opened)> {
        let qdir = queue_dir(dir);
        let mut names = Vec::new();
        for entry in fs::read_dir(&qdir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == EXTENSION) {
                let name = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| invalid(format!("{} is not a segment name", path.display())))?;
                names.push(name);
            }
        }
        names.sort_unstable();
        let mut opened = Opened::default();
        let mut state = State::default();
        for (i, &name) in names.iter().enumerate() {
            let last = i + 1 == names.len();
            let path = segment_path(&qdir, name);
            let (segment, torn) = scan(&path, last, repair)?;
            if torn > 0 {
                opened.torn_bytes += torn;
            }
            opened.next_seq = opened.next_seq.max(name).max(segment.last_seq + 1);
            state.segments.insert(name, segment);
        }
        Ok((
            Queue {
                dir: qdir,
                state: Mutex::new(state),
            },
            opened,
        ))
    }

    /// Summaries of the segments, oldest first.
    pub fn segments(&self) -> Vec<(u64, Segment)> {
        let state = self.state.lock().expect("queue lock");
        state
            .segments
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }

    pub fn bytes(&self) -> u64 {
        let state = self.state.lock().expect("queue lock");
        state.segments.values().map(|s| s.len).sum()
    }

    /// Appends `blocks` (first seq, block bytes; seqs increasing) to the
    /// last segment and syncs them, starting a new segment first when the
    /// last one has `roll.bytes`, or readings that arrived `roll.span_ms`
    /// or more before these, or nothing but readings <= `acked`. On an
    /// error nothing is appended (a partial write is cut off again).
    /// Returns the bytes appended.
    pub fn append(
        &self,
        app: &mut Appender,
        blocks: &[(u64, Vec<u8>)],
        roll: Roll,
        acked: u64,
    ) -> io::Result<u64> {
        let Some((first_seq, first_block)) = blocks.first() else {
            return Ok(0);
        };
        let first_seq = *first_seq;
        let arrival = block::header(first_block)
            .map_err(|e| invalid(e.to_string()))?
            .first_received_at;
        let last = {
            let state = self.state.lock().expect("queue lock");
            state
                .segments
                .iter()
                .next_back()
                .map(|(k, s)| (*k, s.clone()))
        };
        let (name, segment, fresh) = match last {
            Some((name, segment))
                if segment.len < roll.bytes
                    && segment
                        .oldest
                        .is_none_or(|at| arrival.saturating_sub(at) < roll.span_ms)
                    && (segment.first_seq.is_none() || segment.last_seq > acked) =>
            {
                (name, segment, false)
            }
            _ => (first_seq, Segment::default(), true),
        };
        if app.segment != Some(name) {
            app.file = None;
        }
        let mut file = match app.file.take() {
            Some(file) => file,
            None => {
                let path = segment_path(&self.dir, name);
                let file = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)?;
                if fresh {
                    sync_dir(&self.dir)?;
                }
                file
            }
        };
        let mut buf = Vec::with_capacity(blocks.iter().map(|(_, b)| b.len() + RECORD_HEADER).sum());
        let mut added = segment.clone();
        for (seq, bytes) in blocks {
            let header = block::header(bytes).map_err(|e| invalid(e.to_string()))?;
            let start = buf.len();
            write_record(&mut buf, *seq, bytes);
            added.add(*seq, &header, (buf.len() - start) as u64);
        }
        let written = file
            .seek(SeekFrom::Start(segment.len))
            .and_then(|_| file.write_all(&buf))
            .and_then(|_| file.sync_data());
        if let Err(err) = written {
            // Cut off what did get written, so the segment ends on a whole
            // record; if even that fails, the next append starts over from
            // the durable length (seek, then overwrite).
            let _ = file.set_len(segment.len).and_then(|_| file.sync_data());
            return Err(err);
        }
        app.segment = Some(name);
        app.file = Some(file);
        let mut state = self.state.lock().expect("queue lock");
        state.segments.insert(name, added);
        Ok(buf.len() as u64)
    }

    /// Deletes the segments, oldest first, as long as `doomed` says so;
    /// returns how many bytes and unacknowledged readings went. The last
    /// segment is replaced by an empty successor first (see the invariants),
    /// so only the writer's thread (or a spool with no writes going on) may
    /// call this: the writer appends to the last segment.
    pub fn drop_while(
        &self,
        acked: u64,
        doomed: impl FnMut(&Segment) -> bool,
    ) -> io::Result<(u64, u64)> {
        self.remove_front(acked, true, doomed)
    }

    /// Deletes the segments, except the last, whose readings are all <=
    /// `acked`; returns the bytes freed. Safe beside the writer.
    pub fn trim(&self, acked: u64) -> io::Result<u64> {
        self.remove_front(acked, false, |segment| segment.last_seq <= acked)
            .map(|(bytes, _)| bytes)
    }

    /// [`Queue::drop_while`], and with `last: false`, [`Queue::trim`]: the
    /// last segment is kept.
    fn remove_front(
        &self,
        acked: u64,
        last: bool,
        mut doomed: impl FnMut(&Segment) -> bool,
    ) -> io::Result<(u64, u64)> {
        let mut gone = Vec::new();
        {
            let mut state = self.state.lock().expect("queue lock");
            while let Some((&name, segment)) = state.segments.iter().next() {
                if !doomed(segment) || (!last && state.segments.len() == 1) {
                    break;
                }
                if state.segments.len() == 1 {
                    let successor = name.max(segment.last_seq + 1);
                    if successor == name {
                        // Already an empty successor: nothing to delete.
                        break;
                    }
                    File::create(segment_path(&self.dir, successor))?;
                    sync_dir(&self.dir)?;
                    state.segments.insert(successor, Segment::default());
                }
                let segment = state.segments.remove(&name).expect("present");
                state.damaged.retain(|(s, _), _| *s != name);
                gone.push((name, segment));
            }
        }
        let mut bytes = 0;
        let mut readings = 0;
        for (name, segment) in gone {
            bytes += segment.len;
            readings += segment.unacked(acked);
            remove_file(&segment_path(&self.dir, name))?;
        }
        Ok((bytes, readings))
    }

    /// Reads the queue in order from the block holding `after + 1`, handing
    /// each record (or damaged range) to `visit` until it says stop.
    pub fn visit(&self, after: u64, mut visit: impl FnMut(Item<'_>) -> Next) -> io::Result<()> {
        let (plan, cursor, damaged) = {
            let state = self.state.lock().expect("queue lock");
            let start = state
                .segments
                .range(..=after.saturating_add(1))
                .next_back()
                .map_or(0, |(k, _)| *k);
            let plan: Vec<(u64, u64)> = state
                .segments
                .range(start..)
                .map(|(k, s)| (*k, s.len))
                .collect();
            (plan, state.cursor, state.damaged.clone())
        };
        let mut buf = Vec::new();
        for (i, (name, len)) in plan.into_iter().enumerate() {
            let mut offset = match cursor {
                Some((segment, offset, first_seq))
                    if i == 0 && segment == name && first_seq <= after.saturating_add(1) =>
                {
                    offset
                }
                _ => 0,
            };
            let path = segment_path(&self.dir, name);
            let file = match File::open(&path) {
                Ok(file) => file,
                // Trimmed since the plan was made: its readings were acknowledged.
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => return Err(err),
            };
            let mut reader = BufReader::with_capacity(64 * 1024, file);
            reader.seek(SeekFrom::Start(offset))?;
            while offset < len {
                if let Some(&next) = damaged.get(&(name, offset)) {
                    reader.seek(SeekFrom::Start(next))?;
                    offset = next;
                    continue;
                }
                match read_record(&mut reader, len - offset, &mut buf)? {
                    Some(first_seq) => {
                        let at = offset;
                        offset += (RECORD_HEADER + buf.len()) as u64;
                        let item = Item::Block {
                            segment: name,
                            offset: at,
                            first_seq,
                            bytes: &buf,
                        };
                        if let Next::Stop = visit(item) {
                            self.state.lock().expect("queue lock").cursor =
                                Some((name, at, first_seq));
                            return Ok(());
                        }
                    }
                    None => {
                        let next = resync(&path, offset, len)?;
                        let bytes = read_range(&path, offset, next)?;
                        let item = Item::Damaged {
                            segment: name,
                            offset,
                            bytes: &bytes,
                        };
                        if let Next::Stop = visit(item) {
                            return Ok(());
                        }
                        reader.seek(SeekFrom::Start(next))?;
                        offset = next;
                    }
                }
            }
        }
        Ok(())
    }

    /// Remembers (for this process) that readers skip from `offset` of
    /// `segment` to `next`; false if that was known already.
    pub fn mark_damaged(&self, segment: u64, offset: u64, next: u64) -> bool {
        let mut state = self.state.lock().expect("queue lock");
        state.damaged.insert((segment, offset), next).is_none()
    }
}

/// Where the record holding the block `bytes` at `offset` ends.
pub(super) fn record_end(offset: u64, bytes: &[u8]) -> u64 {
    offset + (RECORD_HEADER + bytes.len()) as u64
}

fn segment_path(qdir: &Path, name: u64) -> PathBuf {
    qdir.join(format!("{name:020}.{EXTENSION}"))
}

fn invalid(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason)
}

fn remove_file(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn checksum(first_seq: u64, body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&first_seq.to_be_bytes());
    hasher.update(body);
    hasher.finalize()
}

fn write_record(out: &mut Vec<u8>, first_seq: u64, body: &[u8]) {
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&checksum(first_seq, body).to_le_bytes());
    out.extend_from_slice(&first_seq.to_be_bytes());
    out.extend_from_slice(body);
}

/// Parses a whole record at the start of `bytes`: (first seq, body).
fn parse_record(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let header = bytes.get(..RECORD_HEADER)?;
    if header[..4] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    let first_seq = u64::from_be_bytes(header[12..20].try_into().expect("8 bytes"));
    let body = bytes.get(RECORD_HEADER..RECORD_HEADER + len)?;
    (checksum(first_seq, body) == crc).then_some((first_seq, body))
}

/// Reads the record at the reader's position into `body`, given `room`
/// bytes left in the segment: its first seq, or `None` if what is there is
/// not a whole record with a matching checksum (the reader's position is
/// then unspecified).
fn read_record(reader: &mut impl Read, room: u64, body: &mut Vec<u8>) -> io::Result<Option<u64>> {
    let mut header = [0u8; RECORD_HEADER];
    if room < RECORD_HEADER as u64 {
        return Ok(None);
    }
    reader.read_exact(&mut header)?;
    if header[..4] != MAGIC {
        return Ok(None);
    }
    let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as u64;
    if len > room - RECORD_HEADER as u64 {
        return Ok(None);
    }
    let crc = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    let first_seq = u64::from_be_bytes(header[12..20].try_into().expect("8 bytes"));
    body.resize(len as usize, 0);
    reader.read_exact(body)?;
    Ok((checksum(first_seq, body) == crc).then_some(first_seq))
}

/// Where the next whole record after damage at `offset` starts (`len` if none).
fn resync(path: &Path, offset: u64, len: u64) -> io::Result<u64> {
    let bytes = read_range(path, offset, len)?;
    Ok(next_whole_record(&bytes, 1).map_or(len, |at| offset + at as u64))
}

/// The first offset at or after `from` in `bytes` where a whole record starts.
fn next_whole_record(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len().saturating_sub(RECORD_HEADER - 1))
        .filter(|&i| bytes[i..i + 4] == MAGIC)
        .find(|&i| parse_record(&bytes[i..]).is_some())
}

fn read_range(path: &Path, from: u64, to: u64) -> io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::with_capacity(to.saturating_sub(from) as usize);
    file.take(to.saturating_sub(from)).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Summarises the segment at `path`. Blocks are counted from their headers
/// alone, except in the `last` segment, which is read whole: there a tail
/// with no whole record after it is a write torn by a crash, cut off here
/// if `repair` (returned: its bytes). Damage elsewhere is left for readers.
fn scan(path: &Path, last: bool, repair: bool) -> io::Result<(Segment, u64)> {
    let bytes = if last {
        fs::read(path)?
    } else {
        return scan_headers(path);
    };
    let mut segment = Segment::default();
    let mut at = 0;
    let mut torn = 0;
    while at < bytes.len() {
        match parse_record(&bytes[at..]) {
            Some((first_seq, body)) => {
                let record_len = RECORD_HEADER + body.len();
                match block::header(body) {
                    Ok(header) => segment.add(first_seq, &header, record_len as u64),
                    // A whole record whose block is bad: readers set it aside.
                    Err(_) => segment.add_unreadable(first_seq, record_len as u64),
                }
                at += record_len;
            }
            None => match next_whole_record(&bytes, at + 1) {
                Some(next) => {
                    segment.len += (next - at) as u64;
                    at = next;
                }
                None => {
                    torn = (bytes.len() - at) as u64;
                    if repair {
                        let file = OpenOptions::new().write(true).open(path)?;
                        file.set_len(at as u64)?;
                        file.sync_all()?;
                    }
                    break;
                }
            },
        }
    }
    Ok((segment, torn))
}

/// Bytes of a block enough for [`block::header`]: the plain header (21)
/// and, for a sealed block, the seal's key id, nonce and tag (44).
const BLOCK_HEAD: usize = 128;

/// Counts the blocks of a segment from record and block headers, seeking
/// over bodies. Damage (a header that does not parse) makes the rest of the
/// segment be read whole to find the next record.
fn scan_headers(path: &Path) -> io::Result<(Segment, u64)> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut segment = Segment::default();
    let mut at = 0u64;
    let mut head = [0u8; RECORD_HEADER + BLOCK_HEAD];
    while at < size {
        let want = (size - at).min(head.len() as u64) as usize;
        reader.read_exact(&mut head[..want])?;
        let parsed = (want >= RECORD_HEADER && head[..4] == MAGIC).then(|| {
            let len = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes")) as u64;
            let first_seq = u64::from_be_bytes(head[12..20].try_into().expect("8 bytes"));
            (len, first_seq)
        });
        let record_len = match parsed {
            Some((len, first_seq)) if at + RECORD_HEADER as u64 + len <= size => {
                let body = &head[RECORD_HEADER..want.min(RECORD_HEADER + len as usize)];
                let record_len = RECORD_HEADER as u64 + len;
                match block::header(body) {
                    Ok(header) => segment.add(first_seq, &header, record_len),
                    Err(_) => segment.add_unreadable(first_seq, record_len),
                }
                record_len
            }
            _ => {
                let next = resync(path, at, size)?;
                segment.len += next - at;
                next - at
            }
        };
        at += record_len;
        reader.seek(SeekFrom::Start(at))?;
    }
    Ok((segment, 0))
}

/// Writes blocks (in seq order) into new segments of about
/// [`MAX_SEGMENT_BYTES`] each, every one whole or not at all (see
/// [`write_segment`]): for importing a queue that sled held, and for the
/// copy an erasure makes.
pub(super) struct SegmentBuilder<'a> {
    dir: &'a Path,
    chunk: Vec<(u64, Vec<u8>)>,
    size: u64,
}

impl SegmentBuilder<'_> {
    pub fn new(dir: &Path) -> SegmentBuilder<'_> {
        SegmentBuilder {
            dir,
            chunk: Vec::new(),
            size: 0,
        }
    }

    pub fn push(&mut self, first_seq: u64, block: Vec<u8>) -> io::Result<()> {
        self.size += block.len() as u64;
        self.chunk.push((first_seq, block));
        if self.size < MAX_SEGMENT_BYTES {
            return Ok(());
        }
        self.size = 0;
        write_segment(self.dir, &std::mem::take(&mut self.chunk))
    }

    pub fn finish(self) -> io::Result<()> {
        write_segment(self.dir, &self.chunk)
    }
}

/// Writes `blocks` as one new segment named by the first one's seq, whole
/// or not at all (a temporary file, synced, then renamed). A segment of
/// that name already there is left as it is (an import that completed
/// before a crash).
fn write_segment(dir: &Path, blocks: &[(u64, Vec<u8>)]) -> io::Result<()> {
    let Some(&(name, _)) = blocks.first() else {
        return Ok(());
    };
    let qdir = queue_dir(dir);
    fs::create_dir_all(&qdir)?;
    let path = segment_path(&qdir, name);
    if path.exists() {
        return Ok(());
    }
    let mut buf = Vec::new();
    for (seq, bytes) in blocks {
        write_record(&mut buf, *seq, bytes);
    }
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(&buf)?;
    file.sync_all()?;
    fs::rename(&tmp, &path)?;
    sync_dir(&qdir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::seal::KeyRing;
    use telemetry::Envelope;

    fn block(first: u64, count: u64) -> (u64, Vec<u8>) {
        let envelopes: Vec<Envelope> = (first..first + count)
            .map(|seq| Envelope {
                seq,
                device_id: "d".into(),
                topic: "devices/d/telemetry".into(),
                received_at: 1_000 + seq,
                payload: serde_bytes::ByteBuf::from(vec![seq as u8; 10]),
            })
            .collect();
        (first, block::encode(&envelopes, &KeyRing::none()))
    }

    fn seqs(queue: &Queue, after: u64) -> Vec<u64> {
        let mut out = Vec::new();
        queue
            .visit(after, |item| {
                if let Item::Block { bytes, .. } = item {
                    let envelopes = block::decode(bytes, &KeyRing::none()).unwrap();
                    out.extend(envelopes.iter().map(|e| e.seq).filter(|s| *s > after));
                }
                Next::Continue
            })
            .unwrap();
        out
    }

    #[test]
    fn blocks_come_back_in_order_across_segments_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, opened) = Queue::open(dir.path()).unwrap();
        assert_eq!(opened.next_seq, 0);
        let mut app = Appender::default();
        for first in (1..=50).step_by(5) {
            // A tiny roll size: every append starts a segment.
            queue
                .append(&mut app, &[block(first, 5)], Roll::at(1), 0)
                .unwrap();
        }
        assert_eq!(queue.segments().len(), 10);
        assert_eq!(seqs(&queue, 0), (1..=50).collect::<Vec<_>>());
        assert_eq!(seqs(&queue, 22), (23..=50).collect::<Vec<_>>());
        drop(queue);
        let (queue, opened) = Queue::open(dir.path()).unwrap();
        assert_eq!((opened.next_seq, opened.torn_bytes), (51, 0));
        assert_eq!(seqs(&queue, 40), (41..=50).collect::<Vec<_>>());
        assert!(queue.trim(30).unwrap() > 0);
        assert_eq!(queue.segments()[0].0, 31);
        assert_eq!(seqs(&queue, 0), (31..=50).collect::<Vec<_>>());
    }

    #[test]
    fn sealed_blocks_in_earlier_segments_are_counted_from_their_headers() {
        let dir = tempfile::tempdir().unwrap();
        // Key 1: 32 bytes of 0x01, base64.
        let keys = KeyRing::parse(
            "test",
            "1 2026-01-01 AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
        )
        .unwrap();
        let (queue, _) = Queue::open(dir.path()).unwrap();
        let mut app = Appender::default();
        for first in (1..=30).step_by(10) {
            let envelopes: Vec<Envelope> = (first..first + 10)
                .map(|seq| Envelope {
                    seq,
                    device_id: "d".into(),
                    topic: "devices/d/telemetry".into(),
                    received_at: 1_000,
                    payload: serde_bytes::ByteBuf::from(vec![0; 100]),
                })
                .collect();
            let block = (first, block::encode(&envelopes, &keys));
            queue.append(&mut app, &[block], Roll::at(1), 0).unwrap();
        }
        let before = queue.segments();
        drop((queue, app));
        let (queue, _) = Queue::open(dir.path()).unwrap();
        assert_eq!(queue.segments(), before);
        let readings: u64 = before.iter().map(|(_, s)| s.readings).sum();
        assert_eq!(readings, 30);
        assert!(before.iter().all(|(_, s)| s.sealed.contains_key(&1)));
    }

    #[test]
    fn the_last_segment_leaves_a_successor_that_keeps_the_next_seq() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, _) = Queue::open(dir.path()).unwrap();
        let mut app = Appender::default();
        queue
            .append(&mut app, &[block(1, 10)], Roll::at(u64::MAX), 0)
            .unwrap();
        let (bytes, readings) = queue.drop_while(0, |_| true).unwrap();
        assert!(bytes > 0);
        assert_eq!(readings, 10);
        drop(queue);
        let (queue, opened) = Queue::open(dir.path()).unwrap();
        assert_eq!(opened.next_seq, 11, "seqs are not reused after a drop");
        let mut app = Appender::default();
        queue
            .append(&mut app, &[block(11, 2)], Roll::at(u64::MAX), 0)
            .unwrap();
        assert_eq!(seqs(&queue, 0), vec![11, 12]);
    }

    #[test]
    fn a_torn_tail_is_cut_and_damage_in_the_middle_is_skipped_once() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, _) = Queue::open(dir.path()).unwrap();
        let mut app = Appender::default();
        for first in [1, 4, 7] {
            queue
                .append(&mut app, &[block(first, 3)], Roll::at(u64::MAX), 0)
                .unwrap();
        }
        drop((queue, app));
        let path = segment_path(&queue_dir(dir.path()), 1);
        let mut bytes = fs::read(&path).unwrap();
        let whole = bytes.len();
        // A crash in the middle of a fourth append.
        let (_, extra) = block(10, 3);
        let mut record = Vec::new();
        write_record(&mut record, 10, &extra);
        bytes.extend_from_slice(&record[..record.len() / 2]);
        // And a flipped byte in the second record's body.
        let second = bytes.windows(4).skip(1).position(|w| w == MAGIC).unwrap() + 1;
        bytes[second + RECORD_HEADER + 30] ^= 0xff;
        fs::write(&path, &bytes).unwrap();

        let (queue, opened) = Queue::open(dir.path()).unwrap();
        assert_eq!(opened.torn_bytes as usize, bytes.len() - whole);
        assert_eq!(fs::metadata(&path).unwrap().len() as usize, whole);
        let mut damaged = 0;
        let mut seen = Vec::new();
        queue
            .visit(0, |item| {
                match item {
                    Item::Damaged {
                        segment,
                        offset,
                        bytes,
                    } => {
                        damaged += 1;
                        queue.mark_damaged(segment, offset, offset + bytes.len() as u64);
                    }
                    Item::Block { first_seq, .. } => seen.push(first_seq),
                }
                Next::Continue
            })
            .unwrap();
        assert_eq!((damaged, seen), (1, vec![1, 7]));
        let mut again = 0;
        queue
            .visit(0, |item| {
                if let Item::Damaged { .. } = item {
                    again += 1;
                }
                Next::Continue
            })
            .unwrap();
        assert_eq!(again, 0, "damage marked as dealt with is skipped");
    }
}
