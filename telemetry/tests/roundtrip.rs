//! Property tests for the codecs: SenML packs from `encode_pack` resolve as a
//! simple reference model of RFC 8428 §4.5/§4.6 says and resolved packs
//! encode back to themselves, `SyncBatch` and `Envelope` survive their wire
//! form, and no input makes the well-formedness check or the
//! payload decoder panic, while well-formed CBOR within the depth limit
//! is always accepted.

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_bytes::ByteBuf;
use serde_cbor::Value as Cbor;
use telemetry::senml::{
    decode_pack, encode_pack, NotSenml, RawRecord, Record, Value, RELATIVE_TIME_LIMIT,
};
use telemetry::{
    check_well_formed, decode_batch, decode_payload, encode_batch, CborError, Envelope, Limits,
    SyncBatch,
};

/// Cases per property: enough to find the edges, few enough for a debug
/// build to run the whole crate's tests in seconds.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

const NOW: f64 = 1_700_000_000.5;

// ---------------------------------------------------------------- SenML

/// What RFC 8428 §4.5.1 allows as a resolved name, written independently of
/// the crate: `[A-Za-z0-9][A-Za-z0-9:./_-]*`.
fn model_valid_name(name: &str) -> bool {
    let ok = |c: u8, first: bool| c.is_ascii_alphanumeric() || (!first && b"-:./_".contains(&c));
    !name.is_empty() && name.bytes().enumerate().all(|(i, c)| ok(c, i == 0))
}

/// The reference resolution: base fields carry forward until overridden,
/// records of base fields only are context, and the result is in
/// chronological order (§4.6). Arithmetic is in the order the RFC states it
/// (base + field), so results compare exactly.
fn model_resolve(raws: &[RawRecord], now: f64) -> Result<Vec<Record>, NotSenml> {
    let mut base = RawRecord::default();
    let mut out = Vec::new();
    for (index, raw) in raws.iter().enumerate() {
        if raw.base_name.is_some() {
            base.base_name.clone_from(&raw.base_name);
        }
        base.base_time = raw.base_time.or(base.base_time);
        if raw.base_unit.is_some() {
            base.base_unit.clone_from(&raw.base_unit);
        }
        base.base_value = raw.base_value.or(base.base_value);
        base.base_sum = raw.base_sum.or(base.base_sum);
        if raw.value.is_none() && raw.sum.is_none() {
            if raw.name.is_some() || raw.unit.is_some() || raw.time.is_some() {
                return Err(NotSenml::NoValue { index });
            }
            continue;
        }
        let name = format!(
            "{}{}",
            base.base_name.as_deref().unwrap_or(""),
            raw.name.as_deref().unwrap_or("")
        );
        if !model_valid_name(&name) {
            return Err(NotSenml::BadName { index, name });
        }
        let mut time = base.base_time.unwrap_or(0.0) + raw.time.unwrap_or(0.0);
        if time < 268_435_456.0 {
            time += now;
        }
        let value = match &raw.value {
            Some(Value::Float(v)) => Some(Value::Float(v + base.base_value.unwrap_or(0.0))),
            other => other.clone(),
        };
        let sum = match (raw.sum, base.base_sum) {
            (None, None) => None,
            (s, bs) => Some(s.unwrap_or(0.0) + bs.unwrap_or(0.0)),
        };
        out.push(Record {
            name,
            time,
            unit: raw.unit.clone().or_else(|| base.base_unit.clone()),
            value,
            sum,
        });
    }
    if out.is_empty() {
        return Err(NotSenml::Empty);
    }
    out.sort_by(|a, b| a.time.total_cmp(&b.time));
    Ok(out)
}

/// Finite numbers of the sizes devices send; sums of two stay finite.
fn number() -> impl Strategy<Value = f64> {
    prop_oneof![
        (-1000i32..1000).prop_map(f64::from),
        -1.0e6..1.0e6f64,
        Just(0.0),
        Just(-0.0),
        Just(0.1),
    ]
}

/// Times: relative offsets, absolute epoch seconds, and the 2^28 boundary.
fn time() -> impl Strategy<Value = f64> {
    prop_oneof![
        -3600.0..3600.0f64,
        1.0e9..2.0e9f64,
        Just(268_435_455.0),
        Just(268_435_456.0),
    ]
}

fn name_part() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9:./_-]{0,12}"
}

fn unit() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Cel".to_string()),
        Just("%RH".to_string()),
        "[ -~]{0,6}"
    ]
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => number().prop_map(Value::Float),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => "\\PC{0,12}".prop_map(Value::String),
        1 => vec(any::<u8>(), 0..12).prop_map(Value::Bytes),
    ]
}

/// A measurement (most records), or a record of base fields only.
fn raw_record() -> impl Strategy<Value = RawRecord> {
    let base = (
        proptest::option::weighted(0.3, name_part()),
        proptest::option::weighted(0.3, time()),
        proptest::option::weighted(0.2, unit()),
        proptest::option::weighted(0.2, number()),
        proptest::option::weighted(0.2, number()),
    );
    let own = (
        proptest::option::weighted(0.8, name_part()),
        proptest::option::weighted(0.5, unit()),
        proptest::option::weighted(0.85, value()),
        proptest::option::weighted(0.3, number()),
        proptest::option::weighted(0.5, time()),
    );
    (base, own, any::<bool>()).prop_map(
        |((base_name, base_time, base_unit, base_value, base_sum), own, base_only)| {
            let (name, unit, value, sum, time) = if base_only {
                (None, None, None, None, None)
            } else {
                own
            };
            RawRecord {
                base_name,
                base_time,
                base_unit,
                base_value,
                base_sum,
                name,
                unit,
                value,
                sum,
                time,
            }
        },
    )
}

/// The pack `encode_pack` wrote before it serialized records directly: a
/// `serde_cbor::Value` map per record, entries ordered by the map.
fn encode_pack_through_values(records: &[RawRecord]) -> Vec<u8> {
    let labelled = |record: &RawRecord| {
        let value = record.value.as_ref().map(|value| match value {
            Value::Float(v) => (2, Cbor::Float(*v)),
            Value::String(v) => (3, Cbor::Text(v.clone())),
            Value::Bool(v) => (4, Cbor::Bool(*v)),
            Value::Bytes(v) => (8, Cbor::Bytes(v.clone())),
        });
        [
            (-2, record.base_name.clone().map(Cbor::Text)),
            (-3, record.base_time.map(Cbor::Float)),
            (-4, record.base_unit.clone().map(Cbor::Text)),
            (-5, record.base_value.map(Cbor::Float)),
            (-6, record.base_sum.map(Cbor::Float)),
            (0, record.name.clone().map(Cbor::Text)),
            (1, record.unit.clone().map(Cbor::Text)),
            (5, record.sum.map(Cbor::Float)),
            (6, record.time.map(Cbor::Float)),
        ]
        .into_iter()
        .chain(value.map(|(label, v)| (label, Some(v))))
        .filter_map(|(label, v)| Some((Cbor::Integer(label), v?)))
        .collect::<std::collections::BTreeMap<_, _>>()
    };
    let pack = records.iter().map(|r| Cbor::Map(labelled(r))).collect();
    serde_cbor::to_vec(&Cbor::Array(pack)).unwrap()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn packs_are_written_byte_for_byte_as_through_cbor_values(raws in vec(raw_record(), 0..8)) {
        prop_assert_eq!(encode_pack(&raws), encode_pack_through_values(&raws));
    }

    #[test]
    fn encoded_packs_resolve_as_the_model_says(raws in vec(raw_record(), 0..8)) {
        let bytes = encode_pack(&raws);
        prop_assert_eq!(decode_pack(&bytes, NOW), model_resolve(&raws, NOW));
        // What a simulator encodes always passes the gateway's checks.
        prop_assert!(decode_payload(&bytes, &Limits::default(), 1_700_000_000_500).is_ok());
    }

    #[test]
    fn packs_of_valid_measurements_always_resolve(
        first_base in name_part(),
        raws in vec(raw_record(), 1..8),
    ) {
        // With a base name in front every resolved name is valid, so only a
        // record with a name, unit or time but no value can spoil the pack.
        let mut raws = raws;
        raws[0].base_name = Some(first_base);
        for raw in &mut raws {
            if raw.value.is_none() && raw.sum.is_none() {
                raw.name = None;
                raw.unit = None;
                raw.time = None;
            }
        }
        let expected = model_resolve(&raws, NOW);
        if raws.iter().all(|r| r.value.is_none() && r.sum.is_none()) {
            prop_assert_eq!(expected.clone(), Err(NotSenml::Empty));
        } else {
            prop_assert!(expected.is_ok());
        }
        prop_assert_eq!(decode_pack(&encode_pack(&raws), NOW), expected);
    }

    #[test]
    fn resolved_packs_encode_and_decode_as_themselves(raws in vec(raw_record(), 1..8)) {
        // decode → encode → decode: resolved records written back with
        // absolute times and no base fields resolve to the same records.
        let Ok(records) = decode_pack(&encode_pack(&raws), NOW) else {
            return Ok(());
        };
        // The time strategy keeps resolved times at or past 2^28, so every
        // one stays absolute when written back.
        prop_assert!(records.iter().all(|r| r.time >= RELATIVE_TIME_LIMIT));
        let written: Vec<RawRecord> = records
            .iter()
            .map(RawRecord::from)
            .collect();
        prop_assert_eq!(decode_pack(&encode_pack(&written), NOW), Ok(records));
    }
}

// ---------------------------------------------------------------- SyncBatch

fn envelope() -> impl Strategy<Value = Envelope> {
    (
        any::<u64>(),
        "\\PC{0,20}",
        "\\PC{0,40}",
        any::<u64>(),
        vec(any::<u8>(), 0..64),
    )
        .prop_map(|(seq, device_id, topic, received_at, payload)| Envelope {
            seq,
            device_id,
            topic,
            received_at,
            payload: ByteBuf::from(payload),
        })
}

fn batch() -> impl Strategy<Value = SyncBatch> {
    (
        "\\PC{0,20}",
        "[0-9a-f]{32}",
        any::<u64>(),
        vec(envelope(), 0..6),
    )
        .prop_map(|(gateway_id, spool_id, backlog, envelopes)| SyncBatch {
            gateway_id,
            spool_id,
            backlog,
            envelopes,
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn sync_batches_survive_the_wire(batch in batch()) {
        let bytes = encode_batch(&batch);
        prop_assert_eq!(decode_batch(&bytes).expect("own encoding decodes"), batch);
        // The wire form is itself one well-formed CBOR item.
        prop_assert_eq!(check_well_formed(&bytes, 4), Ok(()));
    }

    #[test]
    fn envelopes_survive_the_wire(envelope in envelope()) {
        // An envelope alone is what the spool's blocks hold a list of.
        let bytes = serde_cbor::to_vec(&envelope).expect("an envelope always serializes");
        let again: Envelope = serde_cbor::from_slice(&bytes).expect("own encoding decodes");
        prop_assert_eq!(&again, &envelope);
        // One canonical form, one level deep (the payload is a byte string).
        prop_assert_eq!(serde_cbor::to_vec(&again).expect("serializes"), bytes.clone());
        prop_assert_eq!(check_well_formed(&bytes, 1), Ok(()));
    }

    #[test]
    fn cut_batches_fail_without_panicking(batch in batch(), cut in any::<prop::sample::Index>()) {
        let bytes = encode_batch(&batch);
        let cut = cut.index(bytes.len());
        prop_assert!(decode_batch(&bytes[..cut]).is_err());
    }
}

// ---------------------------------------------------------------- hostile bytes

/// Header bytes that open, close or tangle structure, to make random input
/// reach deeper than uniform bytes would.
const INTERESTING: &[u8] = &[
    0x00, 0x17, 0x18, 0x1b, 0x1c, 0x1f, 0x20, 0x3b, 0x3f, 0x40, 0x41, 0x5b, 0x5f, 0x60, 0x61, 0x7b,
    0x7f, 0x80, 0x81, 0x9b, 0x9f, 0xa0, 0xa1, 0xbb, 0xbf, 0xc0, 0xc2, 0xd8, 0xdb, 0xdf, 0xe0, 0xf4,
    0xf7, 0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xff,
];

fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![any::<u8>(), proptest::sample::select(INTERESTING)];
    vec(byte, 0..48)
}

/// Valid CBOR damaged in one place: truncated, a byte changed, or a byte added.
fn damaged(bytes: Vec<u8>, at: prop::sample::Index, with: u8, how: u8) -> Vec<u8> {
    let mut bytes = bytes;
    let i = at.index(bytes.len() + 1);
    match how % 3 {
        0 => bytes.truncate(i),
        1 if i < bytes.len() => bytes[i] = with,
        _ => bytes.insert(i, with),
    }
    bytes
}

/// Any serde_cbor value tree serde_cbor can encode (tags are left out: without
/// its "tags" feature serde_cbor drops them when encoding).
fn cbor_value() -> impl Strategy<Value = Cbor> {
    let leaf = prop_oneof![
        Just(Cbor::Null),
        any::<bool>().prop_map(Cbor::Bool),
        (-(1i128 << 64)..(1i128 << 64)).prop_map(Cbor::Integer),
        any::<f64>().prop_map(Cbor::Float),
        vec(any::<u8>(), 0..8).prop_map(Cbor::Bytes),
        "\\PC{0,8}".prop_map(Cbor::Text),
    ];
    leaf.prop_recursive(6, 48, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Cbor::Array),
            btree_map(inner.clone(), inner, 0..4).prop_map(Cbor::Map),
        ]
    })
}

/// The depth `check_well_formed` documents: arrays and maps nested in one
/// another, empty ones included.
fn cbor_depth(value: &Cbor) -> usize {
    match value {
        Cbor::Array(items) => 1 + items.iter().map(cbor_depth).max().unwrap_or(0),
        Cbor::Map(map) => {
            1 + map
                .iter()
                .map(|(k, v)| cbor_depth(k).max(cbor_depth(v)))
                .max()
                .unwrap_or(0)
        }
        Cbor::Tag(_, inner) => 1 + cbor_depth(inner),
        _ => 0,
    }
}

/// A tree for the hand-written encoder below: what serde_cbor cannot write
/// (tags, indefinite lengths, chunked strings).
#[derive(Debug, Clone)]
enum Tree {
    Int(u64),
    Chunks(Vec<Vec<u8>>, bool),
    Array(Vec<Tree>, bool),
    Map(Vec<(Tree, Tree)>, bool),
    Tag(u64, Box<Tree>),
}

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = prop_oneof![
        any::<u64>().prop_map(Tree::Int),
        (vec(vec(any::<u8>(), 0..4), 0..3), any::<bool>()).prop_map(|(c, t)| Tree::Chunks(c, t)),
    ];
    leaf.prop_recursive(8, 48, 3, |inner| {
        prop_oneof![
            (vec(inner.clone(), 0..3), any::<bool>()).prop_map(|(v, i)| Tree::Array(v, i)),
            (vec((inner.clone(), inner.clone()), 0..3), any::<bool>())
                .prop_map(|(v, i)| Tree::Map(v, i)),
            (any::<u64>(), inner).prop_map(|(t, v)| Tree::Tag(t, Box::new(v))),
        ]
    })
}

fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xff => out.extend([m | 24, n as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend((n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend((n as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend(n.to_be_bytes());
        }
    }
}

fn encode_tree(tree: &Tree, out: &mut Vec<u8>) {
    match tree {
        Tree::Int(n) => head(out, 0, *n),
        // Byte chunks as one indefinite string when asked, else concatenated.
        Tree::Chunks(chunks, true) => {
            out.push(0x5f);
            for chunk in chunks {
                head(out, 2, chunk.len() as u64);
                out.extend(chunk);
            }
            out.push(0xff);
        }
        Tree::Chunks(chunks, false) => {
            let all = chunks.concat();
            head(out, 2, all.len() as u64);
            out.extend(all);
        }
        Tree::Array(items, indefinite) => {
            if *indefinite {
                out.push(0x9f);
            } else {
                head(out, 4, items.len() as u64);
            }
            items.iter().for_each(|item| encode_tree(item, out));
            if *indefinite {
                out.push(0xff);
            }
        }
        Tree::Map(pairs, indefinite) => {
            if *indefinite {
                out.push(0xbf);
            } else {
                head(out, 5, pairs.len() as u64);
            }
            for (k, v) in pairs {
                encode_tree(k, out);
                encode_tree(v, out);
            }
            if *indefinite {
                out.push(0xff);
            }
        }
        Tree::Tag(tag, inner) => {
            head(out, 6, *tag);
            encode_tree(inner, out);
        }
    }
}

/// Depth as documented: definite or indefinite, empty or not, every array,
/// map and tag is a level; strings, chunked or not, are none.
fn tree_depth(tree: &Tree) -> usize {
    match tree {
        Tree::Int(_) | Tree::Chunks(..) => 0,
        Tree::Array(items, _) => 1 + items.iter().map(tree_depth).max().unwrap_or(0),
        Tree::Map(pairs, _) => {
            1 + pairs
                .iter()
                .map(|(k, v)| tree_depth(k).max(tree_depth(v)))
                .max()
                .unwrap_or(0)
        }
        Tree::Tag(_, inner) => 1 + tree_depth(inner),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn hostile_bytes_never_panic(bytes in hostile_bytes(), depth in 0usize..20) {
        let _ = check_well_formed(&bytes, depth);
        let limits = Limits { max_bytes: 64 * 1024, max_depth: depth };
        let _ = decode_payload(&bytes, &limits, 1_700_000_000_000);
    }

    #[test]
    fn serde_cbor_values_are_accepted_within_the_depth_limit(
        value in cbor_value(),
        limit in 0usize..8,
    ) {
        let bytes = serde_cbor::to_vec(&value).expect("serde_cbor encodes its own values");
        let expected = if cbor_depth(&value) <= limit {
            Ok(())
        } else {
            Err(CborError::TooDeep { limit })
        };
        prop_assert_eq!(check_well_formed(&bytes, limit), expected.clone());
        prop_assert_eq!(
            decode_payload(&bytes, &Limits { max_bytes: 1 << 20, max_depth: limit }, 0).is_ok(),
            expected.is_ok()
        );
    }

    #[test]
    fn tags_and_indefinite_items_are_accepted_within_the_depth_limit(
        tree in tree(),
        limit in 0usize..10,
    ) {
        let mut bytes = Vec::new();
        encode_tree(&tree, &mut bytes);
        let expected = if tree_depth(&tree) <= limit {
            Ok(())
        } else {
            Err(CborError::TooDeep { limit })
        };
        prop_assert_eq!(check_well_formed(&bytes, limit), expected);
    }

    #[test]
    fn damaged_cbor_never_panics(
        value in cbor_value(),
        at in any::<prop::sample::Index>(),
        with in prop_oneof![any::<u8>(), proptest::sample::select(INTERESTING)],
        how in any::<u8>(),
    ) {
        let bytes = damaged(serde_cbor::to_vec(&value).expect("encodes"), at, with, how);
        let _ = check_well_formed(&bytes, 16);
        let _ = decode_payload(&bytes, &Limits::default(), 0);
    }

    #[test]
    fn damaged_senml_never_panics(
        raws in vec(raw_record(), 1..4),
        at in any::<prop::sample::Index>(),
        with in prop_oneof![any::<u8>(), proptest::sample::select(INTERESTING)],
        how in any::<u8>(),
    ) {
        let bytes = damaged(encode_pack(&raws), at, with, how);
        let _ = check_well_formed(&bytes, 16);
        let _ = decode_payload(&bytes, &Limits::default(), 0);
        let _ = decode_pack(&bytes, NOW);
    }
}
