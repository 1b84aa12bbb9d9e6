//! Benchmarks, each a `firmware-sim bench` subcommand: `ingest` (in-process
//! gateway), `drain` (catch-up after an outage, real binaries), `compare`
//! (the real gateway against Mosquitto, one load generator), `latency`
//! (publish to queryable in the collector, real binaries), `collector` (the
//! real collector alone: ingest and query, sled and PostgreSQL) and `suite`
//! (all of them, written to `bench/results/`). Load generator and systems
//! under test share the machine, so each run reports the CPU of both.

mod bytes;
mod collector;
mod compare;
mod drain;
mod forward;
mod ingest;
mod latency;
mod mosquitto;
mod postgres;
mod procs;
mod report;
mod suite;

pub use collector::{collector, CollectorArgs};
pub use compare::{compare, CompareArgs};
pub use drain::{drain, DrainArgs};
pub use forward::{forward, ForwardArgs};
pub use ingest::{ingest, BenchArgs};
pub use latency::{latency, LatencyArgs};
pub use suite::{suite, SuiteArgs};
