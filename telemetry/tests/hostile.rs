//! Bytes from outside, random or damaged: every decoder answers with a
//! value or an error, never a panic, and the well-formedness check agrees
//! with the decoders it guards. (Runs on stable with every test run; the
//! cargo-fuzz targets in `fuzz/` go further. The RFC 8949 Appendix F
//! vectors are in `rfc8949_vectors.rs`.)

use proptest::collection::vec;
use proptest::prelude::*;
use telemetry::senml::{decode_pack, encode_pack, RawRecord, Value};
use telemetry::{check_well_formed, decode_batch, decode_payload, Limits};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 2_000,
        ..ProptestConfig::default()
    }
}

/// A valid SenML pack to damage.
fn pack(values: &[f64]) -> Vec<u8> {
    let records: Vec<RawRecord> = values
        .iter()
        .enumerate()
        .map(|(i, v)| RawRecord {
            base_name: (i == 0).then(|| "urn:dev:x:".to_string()),
            base_time: (i == 0).then_some(1.7e9),
            name: Some(format!("m{i}")),
            unit: Some("Cel".into()),
            value: Some(Value::Float(*v)),
            time: Some(i as f64),
            ..RawRecord::default()
        })
        .collect();
    encode_pack(&records)
}

/// Every decoder the gateway and the collector run on outside bytes.
fn decode_everything(bytes: &[u8]) {
    let limits = Limits::default();
    let well_formed = check_well_formed(bytes, limits.max_depth).is_ok();
    let _ = decode_pack(bytes, 1.8e9);
    let decoded = decode_payload(bytes, &limits, 1_800_000_000_000);
    let _ = decode_batch(bytes);
    // What the check refuses, the payload decoder must refuse too.
    if !well_formed {
        assert!(
            decoded.is_err(),
            "decode_payload took bytes the check refused"
        );
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        decode_everything(&bytes);
    }

    #[test]
    fn damaged_packs_never_panic(
        values in vec(-1e6f64..1e6, 1..6),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = pack(&values);
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        decode_everything(&bytes);
        // A damaged pack cut short anywhere.
        let end = cut.index(bytes.len() + 1);
        decode_everything(&bytes[..end]);
    }

    #[test]
    fn deep_nesting_is_refused_not_recursed(depth in 17usize..5_000) {
        // [[[[ ... ]]]]: one array head per level, then the innermost empty array.
        let mut bytes = vec![0x81; depth];
        bytes.push(0x80);
        prop_assert!(check_well_formed(&bytes, Limits::default().max_depth).is_err());
        decode_everything(&bytes);
    }
}
