//! The published vectors of RFC 8949 run through `check_well_formed` and
//! `decode_payload`: every Appendix A example is accepted, every Appendix F
//! malformed example is rejected with an error (never a panic), plus the
//! limits the module adds on top (trailing bytes, empty input, nesting depth).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use telemetry::{check_well_formed, decode_payload, CborError, Limits, PayloadError};

/// The depth the brief and the gateway's default limits use.
const DEPTH: usize = 16;

/// RFC 8949 Appendix A, Table 6, in the order of the RFC: the encoded hex of
/// every example, its diagnostic notation in the comment.
const APPENDIX_A: &[&str] = &[
    "00",                                                         // 0
    "01",                                                         // 1
    "0a",                                                         // 10
    "17",                                                         // 23
    "1818",                                                       // 24
    "1819",                                                       // 25
    "1864",                                                       // 100
    "1903e8",                                                     // 1000
    "1a000f4240",                                                 // 1000000
    "1b000000e8d4a51000",                                         // 1000000000000
    "1bffffffffffffffff",                                         // 18446744073709551615
    "c249010000000000000000",                                     // 18446744073709551616
    "3bffffffffffffffff",                                         // -18446744073709551616
    "c349010000000000000000",                                     // -18446744073709551617
    "20",                                                         // -1
    "29",                                                         // -10
    "3863",                                                       // -100
    "3903e7",                                                     // -1000
    "f90000",                                                     // 0.0
    "f98000",                                                     // -0.0
    "f93c00",                                                     // 1.0
    "fb3ff199999999999a",                                         // 1.1
    "f93e00",                                                     // 1.5
    "f97bff",                                                     // 65504.0
    "fa47c35000",                                                 // 100000.0
    "fa7f7fffff",                                                 // 3.4028234663852886e+38
    "fb7e37e43c8800759c",                                         // 1.0e+300
    "f90001",                                                     // 5.960464477539063e-8
    "f90400",                                                     // 0.00006103515625
    "f9c400",                                                     // -4.0
    "fbc010666666666666",                                         // -4.1
    "f97c00",                                                     // Infinity
    "f97e00",                                                     // NaN
    "f9fc00",                                                     // -Infinity
    "fa7f800000",                                                 // Infinity
    "fa7fc00000",                                                 // NaN
    "faff800000",                                                 // -Infinity
    "fb7ff0000000000000",                                         // Infinity
    "fb7ff8000000000000",                                         // NaN
    "fbfff0000000000000",                                         // -Infinity
    "f4",                                                         // false
    "f5",                                                         // true
    "f6",                                                         // null
    "f7",                                                         // undefined
    "f0",                                                         // simple(16)
    "f8ff",                                                       // simple(255)
    "c074323031332d30332d32315432303a30343a30305a",               // 0("2013-03-21T20:04:00Z")
    "c11a514b67b0",                                               // 1(1363896240)
    "c1fb41d452d9ec200000",                                       // 1(1363896240.5)
    "d74401020304",                                               // 23(h'01020304')
    "d818456449455446",                                           // 24(h'6449455446')
    "d82076687474703a2f2f7777772e6578616d706c652e636f6d",         // 32("http://www.example.com")
    "40",                                                         // h''
    "4401020304",                                                 // h'01020304'
    "60",                                                         // ""
    "6161",                                                       // "a"
    "6449455446",                                                 // "IETF"
    "62225c",                                                     // "\"\\"
    "62c3bc",                                                     // "\u00fc"
    "63e6b0b4",                                                   // "\u6c34"
    "64f0908591",                                                 // "\ud800\udd51"
    "80",                                                         // []
    "83010203",                                                   // [1, 2, 3]
    "8301820203820405",                                           // [1, [2, 3], [4, 5]]
    "98190102030405060708090a0b0c0d0e0f101112131415161718181819", // [1, 2, 3, ..., 25]
    "a0",                                                         // {}
    "a201020304",                                                 // {1: 2, 3: 4}
    "a26161016162820203",                                         // {"a": 1, "b": [2, 3]}
    "826161a161626163",                                           // ["a", {"b": "c"}]
    "a56161614161626142616361436164614461656145", // {"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"}
    "5f42010243030405ff",                         // (_ h'0102', h'030405')
    "7f657374726561646d696e67ff",                 // (_ "strea", "ming")
    "9fff",                                       // [_ ]
    "9f018202039f0405ffff",                       // [_ 1, [2, 3], [_ 4, 5]]
    "9f01820203820405ff",                         // [_ 1, [2, 3], [4, 5]]
    "83018202039f0405ff",                         // [1, [2, 3], [_ 4, 5]]
    "83019f0203ff820405",                         // [1, [_ 2, 3], [4, 5]]
    "9f0102030405060708090a0b0c0d0e0f101112131415161718181819ff", // [_ 1, 2, 3, ..., 25]
    "bf61610161629f0203ffff",                     // {_ "a": 1, "b": [_ 2, 3]}
    "826161bf61626163ff",                         // ["a", {_ "b": "c"}]
    "bf6346756ef563416d7421ff",                   // {_ "Fun": true, "Amt": -2}
];

/// RFC 8949 Appendix F.1, kind 1 ("too much data" is kind 2, trailing bytes,
/// tested below): the input ends in the head of a data item.
const END_OF_INPUT_IN_A_HEAD: &[&str] = &[
    "18",               // uint, 1-byte argument missing
    "19",               // uint, 2-byte argument missing
    "1a",               // uint, 4-byte argument missing
    "1b",               // uint, 8-byte argument missing
    "1901",             // uint, 2-byte argument cut short
    "1a0102",           // uint, 4-byte argument cut short
    "1b01020304050607", // uint, 8-byte argument cut short
    "38",               // nint, 1-byte argument missing
    "58",               // bstr, 1-byte length missing
    "78",               // tstr, 1-byte length missing
    "98",               // array, 1-byte length missing
    "9a01ff00",         // array, 4-byte length cut short
    "b8",               // map, 1-byte length missing
    "d8",               // tag, 1-byte tag number missing
    "f8",               // simple, 1-byte value missing
    "f900",             // half float cut short
    "fa0000",           // single float cut short
    "fb000000",         // double float cut short
];

/// RFC 8949 Appendix F.1, kind 1: definite-length strings with short data.
const DEFINITE_STRINGS_WITH_SHORT_DATA: &[&str] = &[
    "41",                       // bstr of 1 byte, no data
    "61",                       // tstr of 1 byte, no data
    "5affffffff00",             // bstr of 2^32-1 bytes, 1 present
    "5bffffffffffffffff010203", // bstr of 2^64-1 bytes, 3 present
    "7affffffff00",             // tstr of 2^32-1 bytes, 1 present
    "7b7fffffffffffffff010203", // tstr of 2^63-1 bytes, 3 present
];

/// RFC 8949 Appendix F.1, kind 1: definite-length maps and arrays not closed
/// with enough items.
const DEFINITE_CONTAINERS_NOT_CLOSED: &[&str] = &[
    "81",                 // [
    "818181818181818181", // [[[[[[[[[
    "8200",               // [0,
    "a1",                 // {
    "a20102",             // {1: 2,
    "a100",               // {0:
    "a2000000",           // {0: 0, 0:
];

/// RFC 8949 Appendix F.1, kind 1: a tag number not followed by tag content.
const TAG_WITHOUT_CONTENT: &[&str] = &[
    "c0", // 0(
];

/// RFC 8949 Appendix F.1, kind 1: indefinite-length strings not closed by a
/// "break" stop code.
const INDEFINITE_STRINGS_NOT_CLOSED: &[&str] = &[
    "5f4100", // (_ h'00'
    "7f6100", // (_ "\u0000"
];

/// RFC 8949 Appendix F.1, kind 1: indefinite-length maps and arrays not
/// closed by a "break" stop code.
const INDEFINITE_CONTAINERS_NOT_CLOSED: &[&str] = &[
    "9f",                 // [_
    "9f0102",             // [_ 1, 2
    "bf",                 // {_
    "bf01020102",         // {_ 1: 2, 1: 2
    "819f",               // [[_
    "9f8000",             // [_ [], 0
    "9f9f9f9f9fffffffff", // [_ [_ [_ [_ [_ ]]]]
    "9f819f819f9fffffff", // [_ [[_ [[_ [_ ]]]
];

/// RFC 8949 Appendix F.1, kind 3, subkind 1: reserved additional information
/// values 28 to 30, for each of the eight major types.
const RESERVED_ADDITIONAL_INFORMATION: &[&str] = &[
    "1c", "1d", "1e", // major type 0
    "3c", "3d", "3e", // major type 1
    "5c", "5d", "5e", // major type 2
    "7c", "7d", "7e", // major type 3
    "9c", "9d", "9e", // major type 4
    "bc", "bd", "be", // major type 5
    "dc", "dd", "de", // major type 6
    "fc", "fd", "fe", // major type 7
];

/// RFC 8949 Appendix F.1, kind 3, subkind 2: reserved two-byte encodings of
/// simple values (below 32, which have a one-byte encoding or none).
const RESERVED_TWO_BYTE_SIMPLE_VALUES: &[&str] = &[
    "f800", // simple(0) in two bytes
    "f801", // simple(1) in two bytes
    "f818", // simple(24) in two bytes
    "f81f", // simple(31) in two bytes
];

/// RFC 8949 Appendix F.1, kind 3, subkind 3: indefinite-length string chunks
/// not of the correct type, or not of definite length.
const BAD_INDEFINITE_STRING_CHUNKS: &[&str] = &[
    "5f00ff",       // (_ 0)
    "5f21ff",       // (_ -2)
    "5f6100ff",     // (_ "\u0000")
    "5f80ff",       // (_ [])
    "5fa0ff",       // (_ {})
    "5fc000ff",     // (_ 0(0))
    "5fe0ff",       // (_ simple(0))
    "7f4100ff",     // (_ h'00')
    "5f5f4100ffff", // (_ (_ h'00'))
    "7f7f6100ffff", // (_ (_ "\u0000"))
];

/// RFC 8949 Appendix F.1, kind 3, subkind 4: a break where none can be.
const MISPLACED_BREAKS: &[&str] = &[
    // On its own, outside any indefinite-length item.
    "ff",
    // In a definite-length array or map.
    "81ff",                 // [break
    "8200ff",               // [0, break
    "a1ff",                 // {break
    "a1ff00",               // {break 0
    "a100ff",               // {0: break
    "a20000ff",             // {0: 0, break
    "9f81ff",               // [_ [break
    "9f829f819f9fffffffff", // [_ [[_ [[_ [_ ]]] break
    // In an indefinite-length map after a key only (odd number of items).
    "bf00ff",     // {_ 0 break
    "bf000000ff", // {_ 0: 0, 0 break
];

/// RFC 8949 Appendix F.1, kind 3, subkind 5: major types 0, 1 and 6 with
/// additional information 31 (there is no indefinite-length integer or tag).
const INDEFINITE_LENGTH_FOR_INTEGER_OR_TAG: &[&str] = &[
    "1f", // uint, ai 31
    "3f", // nint, ai 31
    "df", // tag, ai 31
];

/// Not from the RFC's list: further malformations of the same kinds this
/// module must also refuse.
const MORE_MALFORMED: &[&str] = &[
    "c0ff",     // a tag whose content is a break
    "d9ffff",   // 65535( with no content
    "9fc0ff",   // [_ 0(break
    "bf00c0ff", // {_ 0: 0(break
    "5f41",     // (_ h' with the chunk cut short
    "62c328",   // text string that is not UTF-8
];

/// Runs `f` and turns a panic into a failure message naming the vector.
fn no_panic<T>(hex: &str, what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| format!("{hex}: {what} panicked"))
}

fn bytes(hex: &str) -> Vec<u8> {
    hex::decode(hex).unwrap_or_else(|e| panic!("bad hex in the test table {hex:?}: {e}"))
}

/// Checks every vector of `table` is rejected by `check_well_formed`, and
/// returns one message per vector that is not.
fn rejections(table: &[&str], expected: fn(&CborError) -> bool) -> Vec<String> {
    let mut failures = Vec::new();
    for hex in table {
        let input = bytes(hex);
        match no_panic(hex, "check_well_formed", || {
            check_well_formed(&input, DEPTH)
        }) {
            Err(panic) => failures.push(panic),
            Ok(Ok(())) => failures.push(format!("{hex}: accepted")),
            Ok(Err(e)) if !expected(&e) => failures.push(format!("{hex}: unexpected error {e:?}")),
            Ok(Err(_)) => {}
        }
        // The payload path must reject it the same way.
        match no_panic(hex, "decode_payload", || {
            decode_payload(&input, &Limits::default(), 0)
        }) {
            Err(panic) => failures.push(panic),
            Ok(Err(PayloadError::Cbor(_))) => {}
            Ok(other) => failures.push(format!("{hex}: decode_payload gave {other:?}")),
        }
    }
    failures
}

fn truncated(e: &CborError) -> bool {
    *e == CborError::Truncated
}

fn malformed(e: &CborError) -> bool {
    matches!(e, CborError::Malformed { .. })
}

fn assert_none(failures: Vec<String>) {
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_appendix_a_example_is_well_formed_and_decodes() {
    let mut failures = Vec::new();
    for hex in APPENDIX_A {
        let input = bytes(hex);
        match no_panic(hex, "check_well_formed", || {
            check_well_formed(&input, DEPTH)
        }) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("{hex}: rejected: {e}")),
            Err(panic) => failures.push(panic),
        }
        match no_panic(hex, "decode_payload", || {
            decode_payload(&input, &Limits::default(), 1_700_000_000_000)
        }) {
            Ok(Ok(_senml_or_opaque)) => {}
            Ok(Err(e)) => failures.push(format!("{hex}: decode_payload rejected it: {e}")),
            Err(panic) => failures.push(panic),
        }
    }
    assert_none(failures);
}

#[test]
fn appendix_a_has_every_example() {
    // RFC 8949 Appendix A lists 81 encodings (RFC 7049 also had simple(24),
    // f818, which RFC 8949 made malformed); a lost line would go unnoticed.
    assert_eq!(APPENDIX_A.len(), 81);
}

#[test]
fn end_of_input_is_truncated() {
    for table in [
        END_OF_INPUT_IN_A_HEAD,
        DEFINITE_STRINGS_WITH_SHORT_DATA,
        DEFINITE_CONTAINERS_NOT_CLOSED,
        TAG_WITHOUT_CONTENT,
        INDEFINITE_STRINGS_NOT_CLOSED,
        INDEFINITE_CONTAINERS_NOT_CLOSED,
    ] {
        assert_none(rejections(table, truncated));
    }
}

#[test]
fn syntax_errors_are_malformed() {
    for table in [
        RESERVED_ADDITIONAL_INFORMATION,
        RESERVED_TWO_BYTE_SIMPLE_VALUES,
        BAD_INDEFINITE_STRING_CHUNKS,
        MISPLACED_BREAKS,
        INDEFINITE_LENGTH_FOR_INTEGER_OR_TAG,
    ] {
        assert_none(rejections(table, malformed));
    }
}

#[test]
fn every_two_byte_simple_value_below_32_is_malformed() {
    let all: Vec<String> = (0u8..32).map(|n| format!("f8{n:02x}")).collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    assert_none(rejections(&all, malformed));
    // From 32 on, the two-byte form is the only one and is well-formed.
    for n in 32..=255u8 {
        assert_eq!(check_well_formed(&[0xf8, n], DEPTH), Ok(()), "simple({n})");
    }
}

#[test]
fn more_malformed_items_are_rejected() {
    assert_none(rejections(MORE_MALFORMED, |_| true));
}

#[test]
fn empty_input_is_truncated() {
    assert_eq!(check_well_formed(&[], DEPTH), Err(CborError::Truncated));
    assert_eq!(
        decode_payload(&[], &Limits::default(), 0),
        Err(PayloadError::Cbor(CborError::Truncated))
    );
}

#[test]
fn bytes_after_the_item_are_rejected() {
    let cases: &[(&str, usize)] = &[
        ("0000", 1),               // 0, then 0
        ("80ff", 1),               // [], then a break
        ("9fff00", 1),             // [_ ], then 0
        ("a0a0a0", 2),             // {}, then two more maps
        ("6161616161", 3),         // "a", then "aa" unframed
        ("83010203ffffffffff", 5), // [1, 2, 3], then five breaks
    ];
    for (hex, extra) in cases {
        assert_eq!(
            check_well_formed(&bytes(hex), DEPTH),
            Err(CborError::TrailingBytes(*extra)),
            "{hex}"
        );
    }
    // Every Appendix A example followed by one more byte.
    for hex in APPENDIX_A {
        let mut input = bytes(hex);
        input.push(0x00);
        assert_eq!(
            check_well_formed(&input, DEPTH),
            Err(CborError::TrailingBytes(1)),
            "{hex} 00"
        );
    }
}

/// `n` levels of `open` around `leaf`, closed by `close` after the leaf.
fn nest(open: &[u8], n: usize, leaf: &[u8], close: &[u8]) -> Vec<u8> {
    let mut out = open.repeat(n);
    out.extend_from_slice(leaf);
    out.extend(close.repeat(n));
    out
}

/// Each way of adding one level of nesting: (name, opening bytes, closing bytes).
const LEVELS: &[(&str, &[u8], &[u8])] = &[
    ("definite array", &[0x81], &[]),
    ("indefinite array", &[0x9f], &[0xff]),
    ("definite map value", &[0xa1, 0x00], &[]),
    ("indefinite map value", &[0xbf, 0x00], &[0xff]),
    ("tag", &[0xc1], &[]),
    ("two-byte tag", &[0xd8, 0x20], &[]),
];

/// Innermost items and the levels they add themselves: a scalar none, an
/// empty container one.
const LEAVES: &[(&str, &[u8], usize)] = &[
    ("0", &[0x00], 0),
    ("[]", &[0x80], 1),
    ("[_ ]", &[0x9f, 0xff], 1),
    ("{}", &[0xa0], 1),
    ("{_ }", &[0xbf, 0xff], 1),
];

#[test]
fn depth_limit_is_exact_for_arrays_maps_and_tags() {
    for (name, open, close) in LEVELS {
        for (leaf_name, leaf, leaf_levels) in LEAVES {
            for limit in [1, 2, 3, 7, DEPTH, 64] {
                let opens = limit - leaf_levels;
                let at_limit = nest(open, opens, leaf, close);
                assert_eq!(
                    check_well_formed(&at_limit, limit),
                    Ok(()),
                    "{opens} levels of {name} around {leaf_name} at limit {limit}"
                );
                let over = nest(open, opens + 1, leaf, close);
                assert_eq!(
                    check_well_formed(&over, limit),
                    Err(CborError::TooDeep { limit }),
                    "{} levels of {name} around {leaf_name} at limit {limit}",
                    opens + 1
                );
            }
        }
    }
}

#[test]
fn depth_limit_counts_mixed_nesting() {
    // [_ {0: 1([ "x" ])}] is four levels: array, map, tag, array.
    let four = bytes("9fa100c1816178ff");
    assert_eq!(check_well_formed(&four, 4), Ok(()));
    assert_eq!(
        check_well_formed(&four, 3),
        Err(CborError::TooDeep { limit: 3 })
    );
    // A map key nests as deep as its value.
    let key = bytes("a18100f6"); // {[0]: null}
    assert_eq!(check_well_formed(&key, 2), Ok(()));
    assert_eq!(
        check_well_formed(&key, 1),
        Err(CborError::TooDeep { limit: 1 })
    );
}

#[test]
fn an_empty_container_is_a_level_like_any_other() {
    // Definite or indefinite, empty or not: [[]] and [[_ ]] are two levels.
    for hex in ["80", "9fff", "a0", "bfff", "c100"] {
        assert_eq!(check_well_formed(&bytes(hex), 1), Ok(()), "{hex}");
        assert_eq!(
            check_well_formed(&bytes(hex), 0),
            Err(CborError::TooDeep { limit: 0 }),
            "{hex}"
        );
    }
    for hex in ["8180", "819fff", "9f80ff", "a100a0", "bf00bfffff", "c180"] {
        assert_eq!(check_well_formed(&bytes(hex), 2), Ok(()), "{hex}");
        assert_eq!(
            check_well_formed(&bytes(hex), 1),
            Err(CborError::TooDeep { limit: 1 }),
            "{hex}"
        );
    }
    // Zero allows a scalar or a string, even an indefinite one, and nothing else.
    for hex in ["00", "f6", "40", "5fff", "7f6161ff"] {
        assert_eq!(check_well_formed(&bytes(hex), 0), Ok(()), "{hex}");
    }
}

#[test]
fn indefinite_strings_do_not_count_as_depth() {
    // Sixteen arrays around (_ h'00', h'01'): still depth 16.
    let input = nest(&[0x81], DEPTH, &bytes("5f41004101ff"), &[]);
    assert_eq!(check_well_formed(&input, DEPTH), Ok(()));
}

#[test]
fn default_limits_reject_seventeen_levels() {
    let sixteen = nest(&[0x81], 16, &[0x00], &[]);
    let seventeen = nest(&[0x81], 17, &[0x00], &[]);
    let limits = Limits::default();
    assert!(decode_payload(&sixteen, &limits, 0).is_ok());
    assert_eq!(
        decode_payload(&seventeen, &limits, 0),
        Err(PayloadError::Cbor(CborError::TooDeep { limit: 16 }))
    );
}

/// Generous bound for work that takes milliseconds: catches quadratic time
/// (seconds to minutes at this size) without failing on a busy machine.
const QUICK: Duration = Duration::from_secs(3);

#[test]
fn hundred_thousand_nested_arrays_are_rejected_quickly() {
    let input = vec![0x81; 100_000];
    let start = Instant::now();
    assert_eq!(
        check_well_formed(&input, DEPTH),
        Err(CborError::TooDeep { limit: DEPTH })
    );
    let roomy = Limits {
        max_bytes: 1 << 20,
        max_depth: DEPTH,
    };
    assert_eq!(
        decode_payload(&input, &roomy, 0),
        Err(PayloadError::Cbor(CborError::TooDeep { limit: DEPTH }))
    );
    assert!(start.elapsed() < QUICK, "took {:?}", start.elapsed());
    // With the default limits the size check refuses it before any parsing.
    assert_eq!(
        decode_payload(&input, &Limits::default(), 0),
        Err(PayloadError::TooLarge {
            size: 100_000,
            limit: 64 * 1024
        })
    );
}

#[test]
fn hundred_thousand_nested_arrays_without_a_limit_use_no_call_stack() {
    // With no effective limit the checker walks all 100,000 levels: its stack
    // is on the heap and its work linear, so this neither overflows nor crawls.
    let unclosed = vec![0x81; 100_000];
    let closed = nest(&[0x81], 100_000, &[0x00], &[]);
    let indefinite = nest(&[0x9f], 100_000, &[], &[0xff]);
    let start = Instant::now();
    assert_eq!(
        check_well_formed(&unclosed, usize::MAX),
        Err(CborError::Truncated)
    );
    assert_eq!(check_well_formed(&closed, usize::MAX), Ok(()));
    assert_eq!(check_well_formed(&indefinite, usize::MAX), Ok(()));
    assert!(start.elapsed() < QUICK, "took {:?}", start.elapsed());
}
