//! Shared helpers of the integration tests: a tiny scriptable MQTT 3.1.1
//! broker and a fake collector query API, both on 127.0.0.1:0.

#![allow(dead_code)] // each test binary uses a different part

pub mod collector;
pub mod mqtt_stub;
pub mod procs;
