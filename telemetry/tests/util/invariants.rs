//! What must hold for any bytes given to telemetry's decoders: the checks
//! behind the `senml_decode` and `sync_batch_decode` fuzz targets, shared
//! with `tests/fuzz_corpus.rs`, which replays the seeds and every reproducer
//! on stable. The fuzz crate compiles this same file (`#[path]`), so a fuzz
//! finding and its regression test run one check, not two copies.
//!
//! Each function panics on a broken invariant (that is what a fuzzer
//! reports) and returns quietly when the input is merely refused.

use telemetry::senml::{decode_pack, encode_pack, RawRecord, Record, Value, RELATIVE_TIME_LIMIT};
use telemetry::{
    check_well_formed, decode_batch, decode_payload, encode_batch, Decoded, Envelope, Limits,
    PayloadError,
};

/// The gateway's clock for every check: what stands in for missing and
/// relative times.
const NOW_MS: u64 = 1_800_000_000_000;

/// A device payload, as the gateway and the collector decode it.
pub fn senml_decode(data: &[u8]) {
    let limits = Limits::default();
    let now = NOW_MS as f64 / 1000.0;
    let checked = check_well_formed(data, limits.max_depth);
    let decoded = decode_payload(data, &limits, NOW_MS);
    let pack = decode_pack(data, now);

    // The payload decoder refuses exactly what the size bound and the
    // well-formedness check refuse, with their reasons.
    match (&decoded, &checked) {
        (Err(PayloadError::TooLarge { .. }), _) => assert!(data.len() > limits.max_bytes),
        (Err(PayloadError::Cbor(err)), Err(checked)) => assert_eq!(err, checked),
        (Ok(_), Ok(())) => {}
        (decoded, checked) => {
            panic!("decode_payload {decoded:?} but check_well_formed {checked:?}")
        }
    }
    // A deeper limit accepts everything a shallower one does.
    if checked.is_ok() {
        assert_eq!(check_well_formed(data, usize::MAX), Ok(()));
    }
    // Accepted payloads are classified by decode_pack, nothing else.
    match decoded {
        Ok(Decoded::Senml(records)) => assert_eq!(pack.as_ref(), Ok(&records)),
        Ok(Decoded::Opaque(reason)) => assert_eq!(pack.as_ref(), Err(&reason)),
        Err(_) => {}
    }
    if let Ok(records) = pack {
        resolved_records_hold(&records, now);
    }
}

/// RFC 8428 §4.5.1, written independently of the crate.
fn valid_name(name: &str) -> bool {
    let ok = |c: u8, first: bool| c.is_ascii_alphanumeric() || (!first && b"-:./_".contains(&c));
    !name.is_empty() && name.bytes().enumerate().all(|(i, c)| ok(c, i == 0))
}

/// What `decode_pack` promises of a pack it resolved, and that the resolved
/// records survive `encode_pack` and a second decode unchanged.
fn resolved_records_hold(records: &[Record], now: f64) {
    assert!(!records.is_empty(), "an empty pack resolved");
    for pair in records.windows(2) {
        assert!(pair[0].time <= pair[1].time, "records out of order");
    }
    for record in records {
        assert!(valid_name(&record.name), "invalid name {:?}", record.name);
        assert!(record.time.is_finite());
        assert!(record.value.is_some() || record.sum.is_some());
        if let Some(Value::Float(v)) = record.value {
            assert!(v.is_finite());
        }
        assert!(record.sum.is_none_or(f64::is_finite));
    }
    // A resolved time below 2^28 (a relative time far in the past) would be
    // read as relative again: such packs do not round-trip, by RFC 8428's design.
    if records.iter().any(|r| r.time < RELATIVE_TIME_LIMIT) {
        return;
    }
    let raws: Vec<RawRecord> = records.iter().map(RawRecord::from).collect();
    let again = decode_pack(&encode_pack(&raws), now);
    assert_eq!(
        again.as_deref(),
        Ok(records),
        "resolved pack does not round-trip"
    );
}

/// A sync batch body, as the collector decodes it; the same bytes as a
/// lone envelope.
pub fn sync_batch_decode(data: &[u8]) {
    if let Ok(batch) = decode_batch(data) {
        let bytes = encode_batch(&batch);
        let again = decode_batch(&bytes).expect("a decoded batch re-encodes to a decodable one");
        assert_eq!(again, batch);
        // One canonical form: encoding what was decoded is a fixed point.
        assert_eq!(encode_batch(&again), bytes);
        // map > array > map > payload: three levels at most.
        assert_eq!(check_well_formed(&bytes, 3), Ok(()));
    }
    if let Ok(envelope) = serde_cbor::from_slice::<Envelope>(data) {
        let bytes = serde_cbor::to_vec(&envelope).expect("an envelope always serializes");
        let again: Envelope = serde_cbor::from_slice(&bytes).expect("own encoding decodes");
        assert_eq!(again, envelope);
        assert_eq!(check_well_formed(&bytes, 1), Ok(()));
    }
}
