//! Simulated device fleets and an end-to-end delivery verifier.
//!
//! [`run_fleet`] starts thousands of virtual devices, each with its own MQTT
//! connection and a realistic sensor model, publishing one SenML-CBOR reading
//! per message; it keeps a [`Ledger`] of every reading the broker
//! acknowledged. [`verify`] then looks each of them up in the collector's
//! query API and reports what is missing, duplicated or wrong.
//!
//! **Architecture Invariant:** `firmware-sim` reaches the broker only over
//! MQTT and the collector only over its public HTTP API, as real devices and
//! dashboards do. (`bench collector` connects to PostgreSQL only to create
//! and drop the schema its collector works in.)

mod bench;
pub mod cli;
mod config;
mod demo;
mod device;
mod fleet;
mod latency;
mod ledger;
pub mod payload;
mod pipeline;
mod progress;
pub mod sensors;
pub mod shutdown;
mod summary;
mod verify;

pub use config::{ConfigError, FleetConfig};
pub use fleet::{run_fleet, FleetError};
pub use latency::Latencies;
pub use ledger::{Ledger, LedgerError, Reading};
pub use summary::{Steady, Summary};
pub use verify::{
    verify, verify_within, Duplicate, ReadingKey, VerifyReport, WrongValue, TIME_TOLERANCE,
};
