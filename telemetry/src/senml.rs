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
//! resolved value = bv + v | vs | vb | vd,  resolved sum = bs + s
//! ```
//!
//! Base fields apply to their own record and every later one until
//! overridden. Text labels are extensions: ignored, unless they end in `_`
//! ("must understand"), which makes the pack unusable here.

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
    #[error("pack holds no record")]
    Empty,
}

/// Decodes a SenML-CBOR pack and resolves it. `now` (seconds since the epoch)
/// stands in for missing and relative times, as RFC 8428 prescribes.
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
                if !matches!(value, Cbor::Integer(_)) {
                    return Err(wrong(label));
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
    let sum = raw.sum.map(|s| s + base.base_sum.unwrap_or(0.0));
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

/// Encodes records as a SenML-CBOR pack with integer labels.
pub fn encode_pack(records: &[RawRecord]) -> Vec<u8> {
    let pack: Vec<Cbor> = records.iter().map(|r| Cbor::Map(raw_to_map(r))).collect();
    serde_cbor::to_vec(&Cbor::Array(pack)).expect("a cbor value always serializes")
}

fn raw_to_map(r: &RawRecord) -> BTreeMap<Cbor, Cbor> {
    let mut m = BTreeMap::new();
    let mut put = |label: i128, v: Option<Cbor>| {
        if let Some(v) = v {
            m.insert(Cbor::Integer(label), v);
        }
    };
    put(label::BN, r.base_name.clone().map(Cbor::Text));
    put(label::BT, r.base_time.map(Cbor::Float));
    put(label::BU, r.base_unit.clone().map(Cbor::Text));
    put(label::BV, r.base_value.map(Cbor::Float));
    put(label::BS, r.base_sum.map(Cbor::Float));
    put(label::N, r.name.clone().map(Cbor::Text));
    put(label::U, r.unit.clone().map(Cbor::Text));
    put(label::S, r.sum.map(Cbor::Float));
    put(label::T, r.time.map(Cbor::Float));
    match &r.value {
        Some(Value::Float(v)) => put(label::V, Some(Cbor::Float(*v))),
        Some(Value::String(s)) => put(label::VS, Some(Cbor::Text(s.clone()))),
        Some(Value::Bool(b)) => put(label::VB, Some(Cbor::Bool(*b))),
        Some(Value::Bytes(b)) => put(label::VD, Some(Cbor::Bytes(b.clone()))),
        None => {}
    }
    m
}
