//! Fuzz target: a client's byte stream through the broker's codec wrapper
//! around rumqttd's v4 codec (`broker::replay`), checked by
//! `broker/tests/util/invariants.rs`: framing independent of TCP segments,
//! publishes spooled byte for byte, packets that re-encode as themselves.
#![no_main]

// Each target uses one of the file's checks.
#[allow(dead_code)]
#[path = "../../broker/tests/util/invariants.rs"]
mod invariants;

libfuzzer_sys::fuzz_target!(|data: &[u8]| invariants::broker_codec(data));
