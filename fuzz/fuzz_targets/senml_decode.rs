//! Fuzz target: a device payload through the well-formedness check, the
//! payload classifier and the SenML decoder, checked by
//! `telemetry/tests/util/invariants.rs` (agreement between them, resolved
//! records that hold RFC 8428's rules and survive a round trip).
#![no_main]

// Each target uses one of the file's checks.
#[allow(dead_code)]
#[path = "../../telemetry/tests/util/invariants.rs"]
mod invariants;

libfuzzer_sys::fuzz_target!(|data: &[u8]| invariants::senml_decode(data));
