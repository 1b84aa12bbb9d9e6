//! `bench forward`: forwarding device readings to HTTP, ours (edge-agent
//! uploading to the real cloud-sync) against what a small deployment would
//! otherwise wire up (Mosquitto and a Node-RED flow, `mqtt in` → `http
//! request`, posting to a counting sink): readings/s delivered, and what
//! each loses while the receiving end is down.

mod measure;
mod node_red;
mod pipeline;
mod sink;
mod table;

pub use measure::{forward, ForwardArgs};
