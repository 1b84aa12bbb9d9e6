//! Byte encodings of the sled store's keys (see `store/sled.rs` for the trees).
//!
//! ```text
//! time(t)  := (t as u64 XOR 1<<63) big-endian, 8 bytes   signed ns, sorts in time order
//! origin   := gateway_id 0x00 spool_id 0x00 seq (u64 BE)        names one envelope
//! points   := device_id 0x00 name 0x00 time(t)
//! dedup    := gateway_id 0x00 spool_id 0x00 first_seq (u64 BE)  an interval of marked seqs
//! document := device_id 0x00 received_at (u64 ms BE) origin
//! ```
//!
//! Invariants: device ids, gateway ids, spool ids and SenML names never hold
//! 0x00 (they are validated before they get here), so `device_id 0x00` and
//! `device_id 0x00 name 0x00` are exact prefixes: a range scan under one
//! never reaches another device or measurement, and keys sort by time within it.

/// Separator between the variable-length parts of a key.
const SEP: u8 = 0x00;

/// Flips the sign bit so that signed times sort as unsigned big-endian bytes.
pub fn time_bytes(nanos: i64) -> [u8; 8] {
    ((nanos as u64) ^ (1 << 63)).to_be_bytes()
}

/// Inverse of [`time_bytes`].
pub fn time_from_bytes(bytes: [u8; 8]) -> i64 {
    (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64
}

/// `device_id 0x00 name 0x00`: every point of one series lies under it.
pub fn series_prefix(device_id: &str, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(device_id.len() + name.len() + 10);
    key.extend_from_slice(device_id.as_bytes());
    key.push(SEP);
    key.extend_from_slice(name.as_bytes());
    key.push(SEP);
    key
}

/// `series prefix + time(t)`.
pub fn point_key(prefix: &[u8], nanos: i64) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 8);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&time_bytes(nanos));
    key
}

/// The time at the end of a point key.
pub fn point_time(key: &[u8]) -> Option<i64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(time_from_bytes(tail))
}

/// `gateway_id 0x00 spool_id 0x00`: every dedup interval of one spool lies under it.
pub fn spool_prefix(gateway_id: &str, spool_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(gateway_id.len() + spool_id.len() + 10);
    key.extend_from_slice(gateway_id.as_bytes());
    key.push(SEP);
    key.extend_from_slice(spool_id.as_bytes());
    key.push(SEP);
    key
}

/// `spool prefix + seq`: an envelope's origin, and the key of a dedup interval starting at `seq`.
pub fn seq_key(spool_prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(spool_prefix.len() + 8);
    key.extend_from_slice(spool_prefix);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The seq at the end of a dedup key.
pub fn seq_of(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// `device_id 0x00`: every document of one device lies under it.
pub fn document_prefix(device_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(device_id.len() + 1);
    key.extend_from_slice(device_id.as_bytes());
    key.push(SEP);
    key
}

/// `device_id 0x00 received_at`: the bound of a document time range.
pub fn document_bound(prefix: &[u8], received_at_ms: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 8);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&received_at_ms.to_be_bytes());
    key
}

/// The full key of one document.
pub fn document_key(
    device_id: &str,
    received_at_ms: u64,
    gateway_id: &str,
    spool_id: &str,
    seq: u64,
) -> Vec<u8> {
    let mut key = document_bound(&document_prefix(device_id), received_at_ms);
    key.extend_from_slice(&seq_key(&spool_prefix(gateway_id, spool_id), seq));
    key
}

/// The parts of a document key: `(device_id, received_at_ms, gateway_id, spool_id, seq)`.
pub fn parse_document_key(key: &[u8]) -> Option<(String, u64, String, String, u64)> {
    let sep = key.iter().position(|&b| b == SEP)?;
    let device_id = std::str::from_utf8(&key[..sep]).ok()?.to_owned();
    let rest = &key[sep + 1..];
    let received_at = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let rest = &rest[8..];
    let (ids, seq) = rest.split_at(rest.len().checked_sub(9)?);
    if seq.first() != Some(&SEP) {
        return None;
    }
    let seq = u64::from_be_bytes(seq[1..].try_into().ok()?);
    let mut ids = ids.splitn(2, |&b| b == SEP);
    let gateway_id = std::str::from_utf8(ids.next()?).ok()?.to_owned();
    let spool_id = std::str::from_utf8(ids.next()?).ok()?.to_owned();
    Some((device_id, received_at, gateway_id, spool_id, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_bytes_sort_like_times() {
        let times = [
            i64::MIN,
            -5_000,
            -1,
            0,
            1,
            1_700_000_000_000_000_000,
            i64::MAX,
        ];
        for pair in times.windows(2) {
            assert!(time_bytes(pair[0]) < time_bytes(pair[1]), "{pair:?}");
        }
        for t in times {
            assert_eq!(time_from_bytes(time_bytes(t)), t);
        }
    }

    #[test]
    fn series_prefixes_do_not_overlap() {
        // "temp" must not see the points of "temp2", nor device "a" those of "a.b".
        let a = point_key(&series_prefix("dev", "temp"), i64::MAX);
        let b = point_key(&series_prefix("dev", "temp2"), i64::MIN);
        assert!(!b.starts_with(&series_prefix("dev", "temp")));
        assert!(a < b);
        assert!(!series_prefix("a.b", "x").starts_with(&document_prefix("a")));
    }

    #[test]
    fn point_time_reads_the_tail() {
        let key = point_key(&series_prefix("d", "n"), -42);
        assert_eq!(point_time(&key), Some(-42));
        assert_eq!(point_time(&[1, 2]), None);
    }

    #[test]
    fn seq_keys_sort_by_seq_within_a_spool() {
        let prefix = spool_prefix("gw", "ab");
        assert!(seq_key(&prefix, 255) < seq_key(&prefix, 256));
        assert_eq!(seq_of(&seq_key(&prefix, 77)), Some(77));
        assert!(!seq_key(&spool_prefix("gw2", "ab"), 0).starts_with(&spool_prefix("gw", "ab")));
    }

    #[test]
    fn document_keys_round_trip() {
        let key = document_key("dev-1", 1_700_000_000_000, "gw", "ab12", 9);
        assert_eq!(
            parse_document_key(&key),
            Some((
                "dev-1".into(),
                1_700_000_000_000,
                "gw".into(),
                "ab12".into(),
                9
            ))
        );
        assert!(key.starts_with(&document_bound(
            &document_prefix("dev-1"),
            1_700_000_000_000
        )));
        assert_eq!(parse_document_key(b"nonsense"), None);
    }
}
