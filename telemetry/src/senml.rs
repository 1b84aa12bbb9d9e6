//! SenML (RFC 8428) in its CBOR representation (§6): integer labels, base
//! field resolution (§4.6) and encoding for simulated devices.
//!
//! ```text
//! pack    := [ record, ... ]                      (a CBOR array of maps)
//! record  := { label => value, ... }
//! labels  := bver -1  bn -2  bt -3  bu -4  bv -5  bs -6
//!            n 0  u 1  v 2  vs 3  vb 4  s 5  t 6  ut 7  vd 8
//! resolved name  = bn + n           (must match [A-Za-z0-9][A-Za-z0-9:./_-]*)
//! resolved time  = bt + t           (< 2^28 means relative to "now", absent means now)
//! resolved value = bv + v | vs | vb | vd
//! resolved sum   = bs + s           (a missing one counts as 0; neither: no sum)
//! resolved pack  = records in chronological order, ties in pack order
//! ```
//!
//! Base fields apply to their own record and every later one until
//! overridden. Text labels are extensions: ignored, unless they end in `_`
//! ("must understand"), which makes the pack unusable here, as does a `bver`
//! newer than [`VERSION`] (§4.4).

use std::collections::BTreeMap;

use serde_cbor::Value as Cbor;

/// Label numbers from RFC 8428 Table 6.
pub mod label {
    pub const BVER: i128 = -1;
    pub const BN: i128 = -2;
    pub const BT: i128 = -3;
    pub const BU: i128 = -4;
    pub const BV: i128 = -5;
    pub const BS: i128 = -6;
    pub const N: i128 = 0;
    pub const U: i128 = 1;
    pub const V: i128 = 2;
    pub const VS: i128 = 3;
    pub const VB: i128 = 4;
    pub const S: i128 = 5;
    pub const T: i128 = 6;
    pub const UT: i128 = 7;
    pub const VD: i128 = 8;
}

/// Times below this many seconds are relative to "now" (RFC 8428 §4.5.3).
pub const RELATIVE_TIME_LIMIT: f64 = 268_435_456.0;

/// The SenML version RFC 8428 defines (the default of `bver`); packs that
/// declare a newer one are not used (§4.4).
pub const VERSION: u64 = 10;

/// A measured value: exactly one of SenML's value kinds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Value {
    Float(f64),
    Bool(bool),
    String(String),
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// One resolved SenML record: base fields applied, time absolute.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub name: String,
    /// Seconds since the Unix epoch.
    pub time: f64,
    pub unit: Option<String>,
    /// The value; `None` only when the record carries just a sum.
    pub value: Option<Value>,
    /// The integrated sum (`bs + s`), when present.
    pub sum: Option<f64>,
}

/// One SenML record as written on the wire, before resolution. Used by
/// simulated devices to build packs; every field is optional as in RFC 8428.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawRecord {
    pub base_name: Option<String>,
    pub base_time: Option<f64>,
    pub base_unit: Option<String>,
    pub base_value: Option<f64>,
    pub base_sum: Option<f64>,
    pub name: Option<String>,
    pub unit: Option<String>,
    pub value: Option<Value>,
    pub sum: Option<f64>,
    pub time: Option<f64>,
}

/// Why well-formed CBOR is not a SenML pack this gateway understands. The
/// payload is then carried as an opaque document, not rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotSenml {
    #[error("payload is not a cbor array of maps")]
    NotAPack,
    #[error("payload does not decode as plain cbor: {0}")]
    Undecodable(String),
    #[error("record {index}: label {label} has the wrong type")]
    WrongType { index: usize, label: String },
    #[error("record {index}: unknown must-understand label {label:?}")]
    MustUnderstand { index: usize, label: String },
    #[error("record {index}: invalid resolved name {name:?}")]
    BadName { index: usize, name: String },
    #[error("record {index}: has a name but no value or sum")]
    NoValue { index: usize },
    #[error("record {index}: more than one value field")]
    ManyValues { index: usize },
    #[error("record {index}: time or value is not finite")]
    NotFinite { index: usize },
    /// `bver` is newer than [`VERSION`]: the pack may mean more than this code
    /// knows, and RFC 8428 §4.4 says it must not be used.
    #[error("record {index}: senml version {version} is newer than {VERSION}")]
    Version { index: usize, version: u64 },
    #[error("pack holds no record")]
    Empty,
}

/// Decodes a SenML-CBOR pack and resolves it (RFC 8428 §4.6): base fields
/// applied, times absolute, records in chronological order. `now` (seconds
/// since the epoch) stands in for missing and relative times.
pub fn decode_pack(bytes: &[u8], now: f64) -> Result<Vec<Record>, NotSenml> {
    let doc: Cbor =
        serde_cbor::from_slice(bytes).map_err(|e| NotSenml::Undecodable(e.to_string()))?;
    let Cbor::Array(items) = doc else {
        return Err(NotSenml::NotAPack);
    };
    let mut base = RawRecord::default();
    let mut records = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let Cbor::Map(map) = item else {
            return Err(NotSenml::NotAPack);
        };
        let raw = parse_record(index, map)?;
        // Base fields carry over to later records until overridden (§4.6).
        base.base_name = raw.base_name.clone().or(base.base_name);
        base.base_time = raw.base_time.or(base.base_time);
        base.base_unit = raw.base_unit.clone().or(base.base_unit);
        base.base_value = raw.base_value.or(base.base_value);
        base.base_sum = raw.base_sum.or(base.base_sum);
        if let Some(record) = resolve(index, &base, raw, now)? {
            records.push(record);
        }
    }
    if records.is_empty() {
        return Err(NotSenml::Empty);
    }
    // Stable: records of one instant keep their order. Times are finite here.
    records.sort_by(|a, b| a.time.total_cmp(&b.time));
    Ok(records)
}

fn parse_record(index: usize, map: BTreeMap<Cbor, Cbor>) -> Result<RawRecord, NotSenml> {
    let wrong = |label: i128| NotSenml::WrongType {
        index,
        label: label.to_string(),
    };
    let mut raw = RawRecord::default();
    let mut values = 0;
    for (key, value) in map {
        let label = match key {
            Cbor::Integer(label) => label,
            Cbor::Text(text) if text.ends_with('_') => {
                return Err(NotSenml::MustUnderstand { index, label: text })
            }
            // Extension fields that need not be understood are ignored (§4.4).
            Cbor::Text(_) => continue,
            _ => return Err(NotSenml::NotAPack),
        };
        match label {
            label::BVER => {
                // §6: "For the version number, only an unsigned integer is allowed."
                let Cbor::Integer(version) = value else {
                    return Err(wrong(label));
                };
                let version = u64::try_from(version).map_err(|_| wrong(label))?;
                if version > VERSION {
                    return Err(NotSenml::Version { index, version });
                }
            }
            label::BN => raw.base_name = Some(text(value).ok_or(wrong(label))?),
            label::BT => raw.base_time = Some(number(&value).ok_or(wrong(label))?),
            label::BU => raw.base_unit = Some(text(value).ok_or(wrong(label))?),
            label::BV => raw.base_value = Some(number(&value).ok_or(wrong(label))?),
            label::BS => raw.base_sum = Some(number(&value).ok_or(wrong(label))?),
            label::N => raw.name = Some(text(value).ok_or(wrong(label))?),
            label::U => raw.unit = Some(text(value).ok_or(wrong(label))?),
            label::V => {
                values += 1;
                raw.value = Some(Value::Float(number(&value).ok_or(wrong(label))?));
            }
            label::VS => {
                values += 1;
                raw.value = Some(Value::String(text(value).ok_or(wrong(label))?));
            }
            label::VB => {
                values += 1;
                let Cbor::Bool(b) = value else {
                    return Err(wrong(label));
                };
                raw.value = Some(Value::Bool(b));
            }
            label::VD => {
                values += 1;
                let Cbor::Bytes(b) = value else {
                    return Err(wrong(label));
                };
                raw.value = Some(Value::Bytes(b));
            }
            label::S => raw.sum = Some(number(&value).ok_or(wrong(label))?),
            label::T => raw.time = Some(number(&value).ok_or(wrong(label))?),
            label::UT => {
                number(&value).ok_or(wrong(label))?;
            }
            // Unknown integer labels come from a later SenML version; ignore them.
            _ => {}
        }
    }
    if values > 1 {
        return Err(NotSenml::ManyValues { index });
    }
    Ok(raw)
}

fn resolve(
    index: usize,
    base: &RawRecord,
    raw: RawRecord,
    now: f64,
) -> Result<Option<Record>, NotSenml> {
    let has_own_fields = raw.name.is_some()
        || raw.unit.is_some()
        || raw.value.is_some()
        || raw.sum.is_some()
        || raw.time.is_some();
    if raw.value.is_none() && raw.sum.is_none() {
        // A record of base fields only sets context for the records after it.
        return if has_own_fields {
            Err(NotSenml::NoValue { index })
        } else {
            Ok(None)
        };
    }
    let name = format!(
        "{}{}",
        base.base_name.as_deref().unwrap_or(""),
        raw.name.as_deref().unwrap_or("")
    );
    if !valid_name(&name) {
        return Err(NotSenml::BadName { index, name });
    }
    let mut time = base.base_time.unwrap_or(0.0) + raw.time.unwrap_or(0.0);
    if time < RELATIVE_TIME_LIMIT {
        time += now;
    }
    let value = match raw.value {
        Some(Value::Float(v)) => Some(Value::Float(v + base.base_value.unwrap_or(0.0))),
        other => other,
    };
    // §4.5.4: either one alone is the sum; only with neither is there none.
    let sum = match (raw.sum, base.base_sum) {
        (None, None) => None,
        (s, bs) => Some(s.unwrap_or(0.0) + bs.unwrap_or(0.0)),
    };
    let finite = time.is_finite()
        && !matches!(value, Some(Value::Float(v)) if !v.is_finite())
        && sum.is_none_or(f64::is_finite);
    if !finite {
        return Err(NotSenml::NotFinite { index });
    }
    Ok(Some(Record {
        name,
        time,
        unit: raw.unit.or_else(|| base.base_unit.clone()),
        value,
        sum,
    }))
}

/// RFC 8428 §4.5.1: `[A-Za-z0-9][A-Za-z0-9:./_-]*`.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '.' | '/' | '_'))
}

fn text(value: Cbor) -> Option<String> {
    match value {
        Cbor::Text(s) => Some(s),
        _ => None,
    }
}

fn number(value: &Cbor) -> Option<f64> {
    match *value {
        Cbor::Integer(i) => Some(i as f64),
        Cbor::Float(f) => Some(f),
        _ => None,
    }
}

/// A resolved record written back as it resolved: absolute time, no base
/// fields. Decoding it again gives the same record whenever its time is
/// absolute (at or past 2^28 s, RFC 8428 §4.5.3).
impl From<&Record> for RawRecord {
    fn from(record: &Record) -> RawRecord {
        RawRecord {
            name: Some(record.name.clone()),
            time: Some(record.time),
            unit: record.unit.clone(),
            value: record.value.clone(),
            sum: record.sum,
            ..RawRecord::default()
        }
    }
}

/// Encodes records as a SenML-CBOR pack with integer labels, each record's
/// entries in CBOR's canonical key order and floats as short as they stay
/// exact (the bytes a `serde_cbor::Value` map would give), written straight
/// into one buffer: simulated fleets encode every reading this way.
pub fn encode_pack(records: &[RawRecord]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 64 * records.len());
    serde_cbor::to_writer(&mut out, &WirePack(records)).expect("a pack always serializes");
    out
}

struct WirePack<'a>(&'a [RawRecord]);

impl serde::Serialize for WirePack<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for record in self.0 {
            seq.serialize_element(&WireRecord(record))?;
        }
        seq.end()
    }
}

struct WireRecord<'a>(&'a RawRecord);

impl serde::Serialize for WireRecord<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let r = self.0;
        let entries = [
            r.base_sum.is_some(),
            r.base_value.is_some(),
            r.base_unit.is_some(),
            r.base_time.is_some(),
            r.base_name.is_some(),
            r.name.is_some(),
            r.unit.is_some(),
            r.value.is_some(),
            r.sum.is_some(),
            r.time.is_some(),
        ]
        .into_iter()
        .filter(|present| *present)
        .count();
        let mut map = serializer.serialize_map(Some(entries))?;
        // CBOR's canonical key order (RFC 7049 §3.9), as `serde_cbor::Value`
        // sorts map keys: n 0, u 1, v 2 | vs 3 | vb 4, s 5, t 6, vd 8, then
        // bn -2, bt -3, bu -4, bv -5, bs -6.
        if let Some(v) = &r.name {
            map.serialize_entry(&label::N, v)?;
        }
        if let Some(v) = &r.unit {
            map.serialize_entry(&label::U, v)?;
        }
        match &r.value {
            Some(Value::Float(v)) => map.serialize_entry(&label::V, v)?,
            Some(Value::String(v)) => map.serialize_entry(&label::VS, v)?,
            Some(Value::Bool(v)) => map.serialize_entry(&label::VB, v)?,
            Some(Value::Bytes(_)) | None => {}
        }
        if let Some(v) = r.sum {
            map.serialize_entry(&label::S, &v)?;
        }
        if let Some(v) = r.time {
            map.serialize_entry(&label::T, &v)?;
        }
        if let Some(Value::Bytes(v)) = &r.value {
            map.serialize_entry(&label::VD, serde_bytes::Bytes::new(v))?;
        }
        if let Some(v) = &r.base_name {
            map.serialize_entry(&label::BN, v)?;
        }
        if let Some(v) = r.base_time {
            map.serialize_entry(&label::BT, &v)?;
        }
        if let Some(v) = &r.base_unit {
            map.serialize_entry(&label::BU, v)?;
        }
        if let Some(v) = r.base_value {
            map.serialize_entry(&label::BV, &v)?;
        }
        if let Some(v) = r.base_sum {
            map.serialize_entry(&label::BS, &v)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: f64 = 1_700_000_000.0;

    fn int(i: i128) -> Cbor {
        Cbor::Integer(i)
    }

    fn text(s: &str) -> Cbor {
        Cbor::Text(s.to_string())
    }

    fn pack(records: Vec<Vec<(Cbor, Cbor)>>) -> Vec<u8> {
        let records = records
            .into_iter()
            .map(|fields| Cbor::Map(fields.into_iter().collect()))
            .collect();
        serde_cbor::to_vec(&Cbor::Array(records)).unwrap()
    }

    /// A pack of one record: `fields` plus the name "x" unless given.
    fn one(fields: Vec<(Cbor, Cbor)>) -> Result<Vec<Record>, NotSenml> {
        let mut fields = fields;
        if !fields.iter().any(|(k, _)| *k == int(label::N)) {
            fields.push((int(label::N), text("x")));
        }
        decode_pack(&pack(vec![fields]), NOW)
    }

    #[test]
    fn names_follow_rfc_8428_section_4_5_1() {
        for ok in [
            "a",
            "Z",
            "0",
            "urn:dev:ow:10e2073a01080063",
            "2001:db8::2/t",
            "a-b.c_d/e:f",
        ] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "", "-a", ":a", ".a", "/a", "_a", "a b", "a+b", "a#", "é", "a\u{0}", "a%",
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn invalid_resolved_name_is_bad_name() {
        assert_eq!(
            one(vec![(int(label::N), text("-x")), (int(label::V), int(1))]),
            Err(NotSenml::BadName {
                index: 0,
                name: "-x".into()
            })
        );
        // The base name counts: "a" + " b" holds a space.
        assert_eq!(
            one(vec![
                (int(label::BN), text("a")),
                (int(label::N), text(" b")),
                (int(label::V), int(1)),
            ]),
            Err(NotSenml::BadName {
                index: 0,
                name: "a b".into()
            })
        );
        // No name at all resolves to "", which is not a name.
        let nameless = pack(vec![vec![(int(label::V), int(1))]]);
        assert_eq!(
            decode_pack(&nameless, NOW),
            Err(NotSenml::BadName {
                index: 0,
                name: String::new()
            })
        );
    }

    #[test]
    fn must_understand_labels_make_the_pack_unusable() {
        assert_eq!(
            one(vec![(int(label::V), int(1)), (text("lat_"), int(2))]),
            Err(NotSenml::MustUnderstand {
                index: 0,
                label: "lat_".into()
            })
        );
        // Without the trailing '_' an extension is ignored, and so is an
        // integer label RFC 8428 does not define.
        let records = one(vec![
            (int(label::V), int(1)),
            (text("lat"), int(2)),
            (int(9), text("link")),
            (int(-7), int(0)),
        ])
        .unwrap();
        assert_eq!(records[0].value, Some(Value::Float(1.0)));
    }

    #[test]
    fn more_than_one_value_field_is_many_values() {
        let values = [
            (int(label::V), int(1)),
            (int(label::VS), text("s")),
            (int(label::VB), Cbor::Bool(true)),
            (int(label::VD), Cbor::Bytes(vec![1])),
        ];
        for i in 0..values.len() {
            for j in i + 1..values.len() {
                assert_eq!(
                    one(vec![values[i].clone(), values[j].clone()]),
                    Err(NotSenml::ManyValues { index: 0 }),
                    "{i} and {j}"
                );
            }
        }
        // A value and a sum are not two values.
        assert!(one(vec![values[0].clone(), (int(label::S), int(2))]).is_ok());
    }

    #[test]
    fn base_only_records_set_context_and_produce_nothing() {
        let bytes = pack(vec![
            vec![(int(label::BN), text("dev:")), (int(label::BU), text("V"))],
            vec![(int(label::N), text("a")), (int(label::V), int(1))],
            vec![
                (int(label::BN), text("other:")),
                (int(label::BVER), int(10)),
            ],
            vec![(int(label::N), text("b")), (int(label::V), int(2))],
        ]);
        let records = decode_pack(&bytes, NOW).unwrap();
        let names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["dev:a", "other:b"]);
        assert!(records.iter().all(|r| r.unit.as_deref() == Some("V")));
        // A pack of context alone holds no record.
        let context_only = pack(vec![vec![(int(label::BN), text("dev:"))]]);
        assert_eq!(decode_pack(&context_only, NOW), Err(NotSenml::Empty));
        assert_eq!(decode_pack(&[0x80], NOW), Err(NotSenml::Empty));
    }

    #[test]
    fn a_regular_field_without_value_or_sum_is_no_value() {
        for field in [
            (int(label::N), text("x")),
            (int(label::U), text("V")),
            (int(label::T), int(-1)),
        ] {
            let bytes = pack(vec![vec![field.clone()]]);
            assert_eq!(
                decode_pack(&bytes, NOW),
                Err(NotSenml::NoValue { index: 0 }),
                "{field:?}"
            );
        }
    }

    #[test]
    fn non_finite_times_values_and_sums_are_not_finite() {
        let cases = [
            vec![(int(label::V), Cbor::Float(f64::INFINITY))],
            vec![(int(label::V), Cbor::Float(f64::NAN))],
            vec![
                (int(label::V), int(1)),
                (int(label::T), Cbor::Float(f64::NAN)),
            ],
            vec![
                (int(label::V), int(1)),
                (int(label::BT), Cbor::Float(f64::NEG_INFINITY)),
            ],
            vec![(int(label::S), Cbor::Float(f64::INFINITY))],
            vec![
                (int(label::V), int(1)),
                (int(label::BS), Cbor::Float(f64::INFINITY)),
            ],
            // Finite fields whose sum overflows.
            vec![
                (int(label::BV), Cbor::Float(f64::MAX)),
                (int(label::V), Cbor::Float(f64::MAX)),
            ],
            vec![
                (int(label::V), int(1)),
                (int(label::BT), Cbor::Float(f64::MAX)),
                (int(label::T), Cbor::Float(f64::MAX)),
            ],
        ];
        for fields in cases {
            assert_eq!(
                one(fields.clone()),
                Err(NotSenml::NotFinite { index: 0 }),
                "{fields:?}"
            );
        }
    }

    #[test]
    fn fields_of_the_wrong_type_are_wrong_type() {
        let cases = [
            (label::BVER, Cbor::Float(10.0)),
            (label::BVER, int(-1)),
            (label::BN, int(1)),
            (label::BT, text("now")),
            (label::BU, int(1)),
            (label::BV, Cbor::Bool(true)),
            (label::BS, Cbor::Null),
            (label::U, Cbor::Bytes(vec![])),
            (label::V, text("1")),
            (label::VS, int(1)),
            (label::VB, int(1)),
            (label::VD, text("aGkgCg")),
            (label::S, text("1")),
            (label::T, Cbor::Array(vec![])),
            (label::UT, text("60")),
        ];
        for (label, value) in cases {
            // Something valid that makes the record a measurement.
            let filler = if [label::V, label::VS, label::VB, label::VD].contains(&label) {
                (int(label::S), int(0))
            } else {
                (int(label::V), int(1))
            };
            assert_eq!(
                one(vec![(int(label), value.clone()), filler]),
                Err(NotSenml::WrongType {
                    index: 0,
                    label: label.to_string()
                }),
                "{label} = {value:?}"
            );
        }
        let wrong_name = pack(vec![vec![(int(label::N), int(1)), (int(label::V), int(1))]]);
        assert_eq!(
            decode_pack(&wrong_name, NOW),
            Err(NotSenml::WrongType {
                index: 0,
                label: "0".into()
            })
        );
    }

    #[test]
    fn versions_up_to_10_are_read_and_newer_ones_refused() {
        for version in [0, 1, 5, 10] {
            assert!(one(vec![
                (int(label::BVER), int(version)),
                (int(label::V), int(1))
            ])
            .is_ok());
        }
        assert_eq!(
            one(vec![(int(label::BVER), int(11)), (int(label::V), int(1))]),
            Err(NotSenml::Version {
                index: 0,
                version: 11
            })
        );
    }

    #[test]
    fn documents_that_are_not_packs() {
        let map = serde_cbor::to_vec(&Cbor::Map(BTreeMap::new())).unwrap();
        assert_eq!(decode_pack(&map, NOW), Err(NotSenml::NotAPack));
        let array_of_ints = serde_cbor::to_vec(&Cbor::Array(vec![int(1)])).unwrap();
        assert_eq!(decode_pack(&array_of_ints, NOW), Err(NotSenml::NotAPack));
        let float_key = pack(vec![vec![(Cbor::Float(0.0), int(1))]]);
        assert_eq!(decode_pack(&float_key, NOW), Err(NotSenml::NotAPack));
        // simple(16) is well-formed CBOR that serde_cbor does not decode.
        assert!(matches!(
            decode_pack(&[0xf0], NOW),
            Err(NotSenml::Undecodable(_))
        ));
    }

    #[test]
    fn encode_pack_writes_integer_labels() {
        let bytes = encode_pack(&[RawRecord {
            base_name: Some("d:".into()),
            base_time: Some(1.5e9),
            base_unit: Some("V".into()),
            base_value: Some(1.0),
            base_sum: Some(2.0),
            name: Some("n".into()),
            unit: Some("A".into()),
            value: Some(Value::Bool(true)),
            sum: Some(3.0),
            time: Some(-1.0),
        }]);
        let Cbor::Array(records) = serde_cbor::from_slice(&bytes).unwrap() else {
            panic!("not an array");
        };
        let Cbor::Map(map) = &records[0] else {
            panic!("not a map");
        };
        let mut labels: Vec<i128> = map
            .keys()
            .map(|key| match key {
                Cbor::Integer(label) => *label,
                other => panic!("label {other:?} is not an integer"),
            })
            .collect();
        labels.sort_unstable();
        assert_eq!(labels, [-6, -5, -4, -3, -2, 0, 1, 4, 5, 6]);
        assert_eq!(map[&int(label::VB)], Cbor::Bool(true));
    }
}
