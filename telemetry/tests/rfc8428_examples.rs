//! The examples of RFC 8428 §5.1 in their CBOR representation (§6, integer
//! labels), decoded with `senml::decode_pack` and checked against the
//! resolution rules of §4.5 and §4.6 and the resolved data of §5.1.4.
//!
//! The JSON of each example is quoted in its doc comment; the CBOR is built
//! label by label with `serde_cbor::Value`, numbers that are integers in the
//! JSON as CBOR integers, as a SenML-CBOR encoder would.

use serde_cbor::Value as Cbor;
use telemetry::senml::{decode_pack, label, NotSenml, Record, Value};
use telemetry::{decode_payload, Decoded, Limits};

/// The receiver's clock, seconds since the epoch: what "now" resolves to.
const NOW: f64 = 1_700_000_000.25;

fn text(s: &str) -> Cbor {
    Cbor::Text(s.to_string())
}

fn float(f: f64) -> Cbor {
    Cbor::Float(f)
}

fn int(i: i128) -> Cbor {
    Cbor::Integer(i)
}

/// One SenML record: a CBOR map from integer labels to values.
fn record(fields: &[(i128, Cbor)]) -> Cbor {
    Cbor::Map(
        fields
            .iter()
            .map(|(label, value)| (Cbor::Integer(*label), value.clone()))
            .collect(),
    )
}

/// A SenML pack: the CBOR array of its records.
fn pack(records: &[Cbor]) -> Vec<u8> {
    serde_cbor::to_vec(&Cbor::Array(records.to_vec())).expect("a cbor value serializes")
}

fn resolved(name: &str, time: f64, unit: Option<&str>, value: Value) -> Record {
    Record {
        name: name.to_string(),
        time,
        unit: unit.map(str::to_string),
        value: Some(value),
        sum: None,
    }
}

fn decode(bytes: &[u8]) -> Vec<Record> {
    decode_pack(bytes, NOW).unwrap_or_else(|e| panic!("not senml: {e}"))
}

/// Parses a hex dump as printed in RFCs: offset, hex bytes, `|ascii|`.
fn from_dump(dump: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for line in dump.lines() {
        let hex_part = line.split('|').next().unwrap_or("");
        for byte in hex_part.split_whitespace().skip(1) {
            out.push(u8::from_str_radix(byte, 16).expect("hex byte in the dump"));
        }
    }
    out
}

/// §5.1.1 Single Datapoint, a temperature "now":
/// `[{"n":"urn:dev:ow:10e2073a01080063","u":"Cel","v":23.1}]`
#[test]
fn single_datapoint() {
    let bytes = pack(&[record(&[
        (label::N, text("urn:dev:ow:10e2073a01080063")),
        (label::U, text("Cel")),
        (label::V, float(23.1)),
    ])]);
    assert_eq!(
        decode(&bytes),
        vec![resolved(
            "urn:dev:ow:10e2073a01080063",
            NOW,
            Some("Cel"),
            Value::Float(23.1)
        )]
    );
}

/// §5.1.2 Multiple Datapoints, voltage and current "now":
/// `[{"bn":"urn:dev:ow:10e2073a01080063:","n":"voltage","u":"V","v":120.1},
///   {"n":"current","u":"A","v":1.2}]`
#[test]
fn multiple_datapoints_now() {
    let bytes = pack(&[
        record(&[
            (label::BN, text("urn:dev:ow:10e2073a01080063:")),
            (label::N, text("voltage")),
            (label::U, text("V")),
            (label::V, float(120.1)),
        ]),
        record(&[
            (label::N, text("current")),
            (label::U, text("A")),
            (label::V, float(1.2)),
        ]),
    ]);
    assert_eq!(
        decode(&bytes),
        vec![
            resolved(
                "urn:dev:ow:10e2073a01080063:voltage",
                NOW,
                Some("V"),
                Value::Float(120.1)
            ),
            resolved(
                "urn:dev:ow:10e2073a01080063:current",
                NOW,
                Some("A"),
                Value::Float(1.2)
            ),
        ]
    );
}

/// The hex dump of §6, "the CBOR example for the same sensor measurement as in
/// Section 5.1.2": the second §5.1.2 example, current at Tue Jun 8 18:01:16.001
/// UTC 2010 and each second for the 5 seconds before.
const SECTION_6_DUMP: &str = "\
0000 87 a7 21 78 1b 75 72 6e 3a 64 65 76 3a 6f 77 3a |..!x.urn:dev:ow:|
0010 31 30 65 32 30 37 33 61 30 31 30 38 30 30 36 3a |10e2073a0108006:|
0020 22 fb 41 d3 03 a1 5b 00 10 62 23 61 41 20 05 00 |\".A...[..b#aA ..|
0030 67 76 6f 6c 74 61 67 65 01 61 56 02 fb 40 5e 06 |gvoltage.aV..@^.|
0040 66 66 66 66 66 a3 00 67 63 75 72 72 65 6e 74 06 |fffff..gcurrent.|
0050 24 02 fb 3f f3 33 33 33 33 33 33 a3 00 67 63 75 |$..?.333333..gcu|
0060 72 72 65 6e 74 06 23 02 fb 3f f4 cc cc cc cc cc |rrent.#..?......|
0070 cd a3 00 67 63 75 72 72 65 6e 74 06 22 02 fb 3f |...gcurrent.\"..?|
0080 f6 66 66 66 66 66 66 a3 00 67 63 75 72 72 65 6e |.ffffff..gcurren|
0090 74 06 21 02 f9 3e 00 a3 00 67 63 75 72 72 65 6e |t.!..>...gcurren|
00a0 74 06 20 02 fb 3f f9 99 99 99 99 99 9a a3 00 67 |t. ..?.........g|
00b0 63 75 72 72 65 6e 74 06 00 02 fb 3f fb 33 33 33 |current....?.333|
00c0 33 33 33                                        |333|";

/// The resolved records of the second §5.1.2 example, in chronological order
/// (§4.6): bt + t, the base unit "A" where a record has no unit of its own.
fn multiple_datapoints_over_time_resolved() -> Vec<Record> {
    let name = |n: &str| format!("urn:dev:ow:10e2073a0108006:{n}");
    let current = |time: f64, v: f64| resolved(&name("current"), time, Some("A"), Value::Float(v));
    vec![
        current(1.276020071001e9, 1.2),
        current(1.276020072001e9, 1.3),
        current(1.276020073001e9, 1.4),
        current(1.276020074001e9, 1.5),
        current(1.276020075001e9, 1.6),
        // Equal times keep their order in the pack.
        resolved(
            &name("voltage"),
            1.276020076001e9,
            Some("V"),
            Value::Float(120.1),
        ),
        current(1.276020076001e9, 1.7),
    ]
}

/// §6: the published SenML-CBOR bytes decode to the second §5.1.2 example.
#[test]
fn section_6_cbor_dump() {
    let bytes = from_dump(SECTION_6_DUMP);
    assert_eq!(bytes.len(), 0xc3, "the dump ends at offset 00c3");
    assert_eq!(decode(&bytes), multiple_datapoints_over_time_resolved());
    // The gateway's path gives the same records, "now" from its clock.
    assert_eq!(
        decode_payload(&bytes, &Limits::default(), 1_700_000_000_250),
        Ok(Decoded::Senml(multiple_datapoints_over_time_resolved()))
    );
}

/// §5.1.2, second example, built from its JSON:
/// `[{"bn":"urn:dev:ow:10e2073a0108006:","bt":1.276020076001e+09,
///    "bu":"A","bver":5,"n":"voltage","u":"V","v":120.1},
///   {"n":"current","t":-5,"v":1.2}, {"n":"current","t":-4,"v":1.3},
///   {"n":"current","t":-3,"v":1.4}, {"n":"current","t":-2,"v":1.5},
///   {"n":"current","t":-1,"v":1.6}, {"n":"current","v":1.7}]`
#[test]
fn multiple_datapoints_over_time() {
    let mut records = vec![record(&[
        (label::BN, text("urn:dev:ow:10e2073a0108006:")),
        (label::BT, float(1.276020076001e9)),
        (label::BU, text("A")),
        (label::BVER, int(5)),
        (label::N, text("voltage")),
        (label::U, text("V")),
        (label::V, float(120.1)),
    ])];
    for (t, v) in [(-5, 1.2), (-4, 1.3), (-3, 1.4), (-2, 1.5), (-1, 1.6)] {
        records.push(record(&[
            (label::N, text("current")),
            (label::T, int(t)),
            (label::V, float(v)),
        ]));
    }
    records.push(record(&[
        (label::N, text("current")),
        (label::V, float(1.7)),
    ]));
    assert_eq!(
        decode(&pack(&records)),
        multiple_datapoints_over_time_resolved()
    );
}

/// §5.1.3 Multiple Measurements: humidity, position and battery of a mobile
/// device from Mon Oct 31 13:24:24 UTC 2011.
/// `[{"bn":"urn:dev:ow:10e2073a01080063","bt":1.320067464e+09,"bu":"%RH","v":20},
///   {"u":"lon","v":24.30621}, {"u":"lat","v":60.07965},
///   {"t":60,"v":20.3}, {"u":"lon","t":60,"v":24.30622}, {"u":"lat","t":60,"v":60.07965},
///   {"t":120,"v":20.7}, {"u":"lon","t":120,"v":24.30623}, {"u":"lat","t":120,"v":60.07966},
///   {"u":"%EL","t":150,"v":98},
///   {"t":180,"v":21.2}, {"u":"lon","t":180,"v":24.30628}, {"u":"lat","t":180,"v":60.07967}]`
fn multiple_measurements() -> Vec<u8> {
    let mut records = vec![record(&[
        (label::BN, text("urn:dev:ow:10e2073a01080063")),
        (label::BT, float(1.320067464e9)),
        (label::BU, text("%RH")),
        (label::V, int(20)),
    ])];
    let rows: &[(Option<&str>, Option<i128>, Cbor)] = &[
        (Some("lon"), None, float(24.30621)),
        (Some("lat"), None, float(60.07965)),
        (None, Some(60), float(20.3)),
        (Some("lon"), Some(60), float(24.30622)),
        (Some("lat"), Some(60), float(60.07965)),
        (None, Some(120), float(20.7)),
        (Some("lon"), Some(120), float(24.30623)),
        (Some("lat"), Some(120), float(60.07966)),
        (Some("%EL"), Some(150), int(98)),
        (None, Some(180), float(21.2)),
        (Some("lon"), Some(180), float(24.30628)),
        (Some("lat"), Some(180), float(60.07967)),
    ];
    for (unit, time, value) in rows {
        let mut fields = Vec::new();
        if let Some(unit) = unit {
            fields.push((label::U, text(unit)));
        }
        if let Some(time) = time {
            fields.push((label::T, int(*time)));
        }
        fields.push((label::V, value.clone()));
        records.push(record(&fields));
    }
    pack(&records)
}

/// §5.1.4 Resolved Data: the §5.1.3 example in resolved form.
/// `[{"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067464e+09,"v":20},
///   {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067464e+09,"v":24.30621}, ...]`
#[test]
fn resolved_data() {
    let n = "urn:dev:ow:10e2073a01080063";
    let r = |unit: &str, time: f64, v: f64| resolved(n, time, Some(unit), Value::Float(v));
    assert_eq!(
        decode(&multiple_measurements()),
        vec![
            r("%RH", 1.320067464e9, 20.0),
            r("lon", 1.320067464e9, 24.30621),
            r("lat", 1.320067464e9, 60.07965),
            r("%RH", 1.320067524e9, 20.3),
            r("lon", 1.320067524e9, 24.30622),
            r("lat", 1.320067524e9, 60.07965),
            r("%RH", 1.320067584e9, 20.7),
            r("lon", 1.320067584e9, 24.30623),
            r("lat", 1.320067584e9, 60.07966),
            r("%EL", 1.320067614e9, 98.0),
            r("%RH", 1.320067644e9, 21.2),
            r("lon", 1.320067644e9, 24.30628),
            r("lat", 1.320067644e9, 60.07967),
        ]
    );
}

/// §5.1.5 Multiple Data Types:
/// `[{"bn":"urn:dev:ow:10e2073a01080063:","n":"temp","u":"Cel","v":23.1},
///   {"n":"label","vs":"Machine Room"}, {"n":"open","vb":false},
///   {"n":"nfc-reader","vd":"aGkgCg"}]`
/// (in CBOR the data value is a byte string: base64url "aGkgCg" is "hi \n").
#[test]
fn multiple_data_types() {
    let bytes = pack(&[
        record(&[
            (label::BN, text("urn:dev:ow:10e2073a01080063:")),
            (label::N, text("temp")),
            (label::U, text("Cel")),
            (label::V, float(23.1)),
        ]),
        record(&[(label::N, text("label")), (label::VS, text("Machine Room"))]),
        record(&[(label::N, text("open")), (label::VB, Cbor::Bool(false))]),
        record(&[
            (label::N, text("nfc-reader")),
            (label::VD, Cbor::Bytes(b"hi \n".to_vec())),
        ]),
    ]);
    let n = |s: &str| format!("urn:dev:ow:10e2073a01080063:{s}");
    assert_eq!(
        decode(&bytes),
        vec![
            resolved(&n("temp"), NOW, Some("Cel"), Value::Float(23.1)),
            resolved(&n("label"), NOW, None, Value::String("Machine Room".into())),
            resolved(&n("open"), NOW, None, Value::Bool(false)),
            resolved(&n("nfc-reader"), NOW, None, Value::Bytes(b"hi \n".to_vec())),
        ]
    );
}

/// §5.1.6 Collection of Resources, fetched at Mon Oct 31 16:27:09 UTC 2011;
/// "the last record would use the Base Name from the 3rd record but the Base
/// Time from the first record":
/// `[{"bn":"2001:db8::2/","bt":1.320078429e+09,"n":"temperature","u":"Cel","v":25.2},
///   {"n":"humidity","u":"%RH","v":30},
///   {"bn":"2001:db8::1/","n":"temperature","u":"Cel","v":12.3},
///   {"n":"humidity","u":"%RH","v":67}]`
#[test]
fn collection_of_resources() {
    let bytes = pack(&[
        record(&[
            (label::BN, text("2001:db8::2/")),
            (label::BT, float(1.320078429e9)),
            (label::N, text("temperature")),
            (label::U, text("Cel")),
            (label::V, float(25.2)),
        ]),
        record(&[
            (label::N, text("humidity")),
            (label::U, text("%RH")),
            (label::V, int(30)),
        ]),
        record(&[
            (label::BN, text("2001:db8::1/")),
            (label::N, text("temperature")),
            (label::U, text("Cel")),
            (label::V, float(12.3)),
        ]),
        record(&[
            (label::N, text("humidity")),
            (label::U, text("%RH")),
            (label::V, int(67)),
        ]),
    ]);
    let t = 1_320_078_429.0;
    assert_eq!(
        decode(&bytes),
        vec![
            resolved(
                "2001:db8::2/temperature",
                t,
                Some("Cel"),
                Value::Float(25.2)
            ),
            resolved("2001:db8::2/humidity", t, Some("%RH"), Value::Float(30.0)),
            resolved(
                "2001:db8::1/temperature",
                t,
                Some("Cel"),
                Value::Float(12.3)
            ),
            resolved("2001:db8::1/humidity", t, Some("%RH"), Value::Float(67.0)),
        ]
    );
}

/// §5.1.7 Setting an Actuator, a thermostat; the first record holds only the
/// base name:
/// `[{"bn":"urn:dev:ow:10e2073a01080063:"},
///   {"n":"temp","u":"Cel","v":23.1}, {"n":"heat","u":"/","v":1},
///   {"n":"fan","u":"/","v":0}]`
#[test]
fn setting_an_actuator() {
    let bytes = pack(&[
        record(&[(label::BN, text("urn:dev:ow:10e2073a01080063:"))]),
        record(&[
            (label::N, text("temp")),
            (label::U, text("Cel")),
            (label::V, float(23.1)),
        ]),
        record(&[
            (label::N, text("heat")),
            (label::U, text("/")),
            (label::V, int(1)),
        ]),
        record(&[
            (label::N, text("fan")),
            (label::U, text("/")),
            (label::V, int(0)),
        ]),
    ]);
    let n = |s: &str| format!("urn:dev:ow:10e2073a01080063:{s}");
    assert_eq!(
        decode(&bytes),
        vec![
            resolved(&n("temp"), NOW, Some("Cel"), Value::Float(23.1)),
            resolved(&n("heat"), NOW, Some("/"), Value::Float(1.0)),
            resolved(&n("fan"), NOW, Some("/"), Value::Float(0.0)),
        ]
    );
}

/// §5.1.7, two lights dimmed at once and switched off 100 ms later, the
/// current time being 1320078429:
/// `[{"bt":1.320078429e+09,"bu":"/","n":"2001:db8::3","v":0.5},
///   {"n":"2001:db8::4","v":0.5},
///   {"n":"2001:db8::3","t":0.1,"v":0}, {"n":"2001:db8::4","t":0.1,"v":0}]`
#[test]
fn lights_switched_off_in_100_ms() {
    let bytes = pack(&[
        record(&[
            (label::BT, float(1.320078429e9)),
            (label::BU, text("/")),
            (label::N, text("2001:db8::3")),
            (label::V, float(0.5)),
        ]),
        record(&[(label::N, text("2001:db8::4")), (label::V, float(0.5))]),
        record(&[
            (label::N, text("2001:db8::3")),
            (label::T, float(0.1)),
            (label::V, int(0)),
        ]),
        record(&[
            (label::N, text("2001:db8::4")),
            (label::T, float(0.1)),
            (label::V, int(0)),
        ]),
    ]);
    let (now, later) = (1_320_078_429.0, 1_320_078_429.1);
    assert_eq!(
        decode(&bytes),
        vec![
            resolved("2001:db8::3", now, Some("/"), Value::Float(0.5)),
            resolved("2001:db8::4", now, Some("/"), Value::Float(0.5)),
            resolved("2001:db8::3", later, Some("/"), Value::Float(0.0)),
            resolved("2001:db8::4", later, Some("/"), Value::Float(0.0)),
        ]
    );
}

/// One measurement named "x" with the given time fields, resolved.
fn time_of(fields: &[(i128, Cbor)]) -> f64 {
    let mut fields = fields.to_vec();
    fields.push((label::N, text("x")));
    fields.push((label::V, int(1)));
    decode(&pack(&[record(&fields)]))[0].time
}

/// §4.5.3: bt + t, a missing one being zero; below 2^28 the sum is relative to
/// "now" (zero is "roughly now", negative the past, positive the future); from
/// 2^28 on it is seconds since the epoch.
#[test]
fn relative_and_absolute_times() {
    assert_eq!(time_of(&[]), NOW);
    assert_eq!(time_of(&[(label::T, int(0))]), NOW);
    assert_eq!(time_of(&[(label::T, int(-5))]), NOW - 5.0);
    assert_eq!(time_of(&[(label::T, float(-0.5))]), NOW - 0.5);
    assert_eq!(time_of(&[(label::BT, int(-60))]), NOW - 60.0);
    assert_eq!(
        time_of(&[(label::BT, int(-60)), (label::T, int(10))]),
        NOW - 50.0
    );
    assert_eq!(time_of(&[(label::T, float(0.02))]), NOW + 0.02);
    assert_eq!(
        time_of(&[(label::T, int(268_435_455))]),
        NOW + 268_435_455.0
    );
    assert_eq!(time_of(&[(label::T, int(268_435_456))]), 268_435_456.0);
    assert_eq!(
        time_of(&[(label::BT, float(1.0e9)), (label::T, int(-5))]),
        999_999_995.0
    );
    // The sum decides: an absolute base time minus enough is relative again.
    assert_eq!(
        time_of(&[(label::BT, int(268_435_456)), (label::T, int(-1))]),
        NOW + 268_435_455.0
    );
}

/// §4.6: "the Records need to be in chronological order in the Pack" once
/// resolved; records with equal times keep their order.
#[test]
fn resolved_records_are_in_chronological_order() {
    let bytes = pack(&[
        record(&[
            (label::BN, text("d:")),
            (label::N, text("late")),
            (label::T, int(-1)),
            (label::V, int(1)),
        ]),
        record(&[
            (label::N, text("early")),
            (label::T, int(-3)),
            (label::V, int(2)),
        ]),
        record(&[
            (label::N, text("also-late")),
            (label::T, int(-1)),
            (label::V, int(3)),
        ]),
    ]);
    let names: Vec<String> = decode(&bytes).into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["d:early", "d:late", "d:also-late"]);
}

/// §4.5.4: base value plus value; the base value applies to numeric values only.
#[test]
fn base_value_is_added_to_numeric_values() {
    let bytes = pack(&[
        record(&[
            (label::BN, text("tank:")),
            (label::BV, float(20.0)),
            (label::N, text("a")),
            (label::V, float(1.5)),
        ]),
        record(&[(label::N, text("b")), (label::V, int(-3))]),
        record(&[(label::N, text("c")), (label::VS, text("full"))]),
        record(&[(label::N, text("d")), (label::VB, Cbor::Bool(true))]),
    ]);
    let values: Vec<Option<Value>> = decode(&bytes).into_iter().map(|r| r.value).collect();
    assert_eq!(
        values,
        [
            Some(Value::Float(21.5)),
            Some(Value::Float(17.0)),
            Some(Value::String("full".into())),
            Some(Value::Bool(true)),
        ]
    );
}

/// §4.5.4: "If only one of the Base Sum or Sum value is present, the missing
/// field is considered to have a value of zero. [...] If neither the Base Sum
/// or Sum are present, then the measurement does not have a sum value."
#[test]
fn base_sum_and_sum() {
    let bytes = pack(&[
        // No base sum yet: the sum is the record's own.
        record(&[
            (label::BN, text("meter:")),
            (label::N, text("first")),
            (label::U, text("J")),
            (label::S, int(7)),
        ]),
        // Neither: no sum.
        record(&[(label::N, text("power")), (label::V, int(3))]),
        // Both: added.
        record(&[
            (label::BS, float(1000.0)),
            (label::N, text("energy")),
            (label::S, float(5.5)),
        ]),
        // Only the base sum (carried from the record before): the sum is the base sum.
        record(&[(label::N, text("power")), (label::V, int(4))]),
    ]);
    let got: Vec<(String, Option<Value>, Option<f64>)> = decode(&bytes)
        .into_iter()
        .map(|r| (r.name, r.value, r.sum))
        .collect();
    assert_eq!(
        got,
        [
            ("meter:first".to_string(), None, Some(7.0)),
            ("meter:power".to_string(), Some(Value::Float(3.0)), None),
            ("meter:energy".to_string(), None, Some(1005.5)),
            (
                "meter:power".to_string(),
                Some(Value::Float(4.0)),
                Some(1000.0)
            ),
        ]
    );
}

/// §4.4: a version newer than the 10 of RFC 8428 makes the pack unusable;
/// older or equal versions are read (§5.1.2 itself says "bver":5).
#[test]
fn newer_version_is_not_used() {
    let with_version = |bver: i128| {
        pack(&[record(&[
            (label::BVER, int(bver)),
            (label::N, text("x")),
            (label::V, int(1)),
        ])])
    };
    assert!(decode_pack(&with_version(5), NOW).is_ok());
    assert!(decode_pack(&with_version(10), NOW).is_ok());
    assert_eq!(
        decode_pack(&with_version(11), NOW),
        Err(NotSenml::Version {
            index: 0,
            version: 11
        })
    );
    // A later record may not raise it either.
    let later = pack(&[
        record(&[(label::N, text("x")), (label::V, int(1))]),
        record(&[
            (label::BVER, int(12)),
            (label::N, text("y")),
            (label::V, int(2)),
        ]),
    ]);
    assert_eq!(
        decode_pack(&later, NOW),
        Err(NotSenml::Version {
            index: 1,
            version: 12
        })
    );
}

/// §6: text labels are extensions; one ending in '_' must be understood, so
/// the pack is refused; other unknown text labels are ignored (§4.4).
#[test]
fn extension_labels() {
    let ignored = pack(&[Cbor::Map(
        [
            (int(label::N), text("x")),
            (int(label::V), int(1)),
            (text("foo"), text("bar")),
        ]
        .into_iter()
        .collect(),
    )]);
    assert_eq!(decode(&ignored).len(), 1);
    let must_understand = pack(&[Cbor::Map(
        [
            (int(label::N), text("x")),
            (int(label::V), int(1)),
            (text("foo_"), text("bar")),
        ]
        .into_iter()
        .collect(),
    )]);
    assert_eq!(
        decode_pack(&must_understand, NOW),
        Err(NotSenml::MustUnderstand {
            index: 0,
            label: "foo_".into()
        })
    );
}
