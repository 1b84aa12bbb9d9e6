//! The data model and wire codecs shared by every crate: SenML-CBOR payloads
//! (RFC 8428), the gateway's `Envelope` and the uplink's `SyncBatch`.
//!
//! **Architecture Invariant:** this crate does no I/O; it only turns bytes into
//! values and back, with typed errors and bounded work for hostile input.

mod cbor;
mod device;
mod envelope;
mod payload;
pub mod senml;

pub use cbor::{check_well_formed, CborError};
pub use device::{validate_device_id, DeviceIdError, MAX_DEVICE_ID_LEN};
pub use envelope::{decode_batch, encode_batch, BatchResponse, Envelope, SyncBatch, WireError};
pub use payload::{decode_payload, Decoded, Limits, PayloadError};
pub use senml::{Record, Value};
