//! Fuzz target: a `POST /v1/batches` body through `decode_batch` (and the
//! same bytes as a lone `Envelope`), checked by
//! `telemetry/tests/util/invariants.rs`: what decodes re-encodes to itself.
#![no_main]

// Each target uses one of the file's checks.
#[allow(dead_code)]
#[path = "../../telemetry/tests/util/invariants.rs"]
mod invariants;

libfuzzer_sys::fuzz_target!(|data: &[u8]| invariants::sync_batch_decode(data));
