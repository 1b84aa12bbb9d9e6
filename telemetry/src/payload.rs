//! Classification of a device payload: rejected (too large, not well-formed
//! CBOR, too deep), a SenML pack, or an opaque CBOR document.

use crate::cbor::{check_well_formed, CborError};
use crate::senml::{decode_pack, NotSenml, Record};

/// Bounds on what a device may send; both checked before any decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload accepted, in bytes (default 64 KiB).
    pub max_bytes: usize,
    /// Deepest nesting of arrays, maps and tags accepted (default 16).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 64 * 1024,
            max_depth: 16,
        }
    }
}

/// Why a payload is rejected. The device sent something no reader can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Larger than [`Limits::max_bytes`].
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    /// Not one well-formed CBOR data item, or nested too deep.
    #[error(transparent)]
    Cbor(#[from] CborError),
}

/// What an accepted payload holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A SenML pack, resolved into records.
    Senml(Vec<Record>),
    /// Well-formed CBOR that is not SenML, carried losslessly; the reason says why.
    Opaque(NotSenml),
}

/// Checks a payload against `limits` and decodes it. `received_at_ms` is the
/// gateway's clock when it arrived: the "now" of records without a time.
pub fn decode_payload(
    bytes: &[u8],
    limits: &Limits,
    received_at_ms: u64,
) -> Result<Decoded, PayloadError> {
    if bytes.len() > limits.max_bytes {
        return Err(PayloadError::TooLarge {
            size: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    check_well_formed(bytes, limits.max_depth)?;
    let now = received_at_ms as f64 / 1000.0;
    Ok(match decode_pack(bytes, now) {
        Ok(records) => Decoded::Senml(records),
        Err(reason) => Decoded::Opaque(reason),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::senml::{encode_pack, RawRecord, Value};

    #[test]
    fn the_size_limit_is_inclusive() {
        let limits = Limits {
            max_bytes: 3,
            max_depth: 16,
        };
        // "ab" is 3 bytes of CBOR, "abc" 4.
        assert!(decode_payload(&[0x62, b'a', b'b'], &limits, 0).is_ok());
        assert_eq!(
            decode_payload(&[0x63, b'a', b'b', b'c'], &limits, 0),
            Err(PayloadError::TooLarge { size: 4, limit: 3 })
        );
    }

    #[test]
    fn well_formed_cbor_that_is_not_senml_is_opaque() {
        assert_eq!(
            decode_payload(&[0xa0], &Limits::default(), 0),
            Ok(Decoded::Opaque(NotSenml::NotAPack))
        );
    }

    #[test]
    fn records_without_time_are_stamped_with_the_arrival_time() {
        let pack = encode_pack(&[RawRecord {
            name: Some("t".into()),
            value: Some(Value::Float(1.0)),
            ..RawRecord::default()
        }]);
        let Ok(Decoded::Senml(records)) =
            decode_payload(&pack, &Limits::default(), 1_700_000_000_250)
        else {
            panic!("not senml");
        };
        assert_eq!(records[0].time, 1_700_000_000.25);
    }

    #[test]
    fn depth_is_checked_before_senml_decoding() {
        let limits = Limits {
            max_bytes: 1024,
            max_depth: 1,
        };
        // [{0: "x", 2: 1}] is two levels deep.
        let pack = encode_pack(&[RawRecord {
            name: Some("x".into()),
            value: Some(Value::Float(1.0)),
            ..RawRecord::default()
        }]);
        assert_eq!(
            decode_payload(&pack, &limits, 0),
            Err(PayloadError::Cbor(CborError::TooDeep { limit: 1 }))
        );
    }
}
