//! Benchmarks, each a `firmware-sim bench` subcommand: `ingest` (in-process
//! gateway), `drain` (catch-up after an outage, real binaries), `compare`
//! (the real gateway against Mosquitto, one load generator) and `suite`
//! (all of them, written to `bench/results/`). Load generator and systems
//! under test share the machine, so each run reports the CPU of both.

mod bytes;
mod compare;
mod drain;
mod ingest;
mod mosquitto;
mod procs;
mod report;
mod suite;

pub use compare::{compare, CompareArgs};
pub use drain::{drain, DrainArgs};
pub use ingest::{ingest, BenchArgs};
pub use suite::{suite, SuiteArgs};
