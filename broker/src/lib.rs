//! The gateway's MQTT side: rumqttd 0.20 embedded behind a codec of ours that
//! hands every PUBLISH to an [`IngestSink`] (the spool) as it is read, and
//! holds each PUBACK/PUBREC until the sink reports the publish durable.
//!
//! **Architecture Invariant:** this crate knows nothing of sled or HTTP; the
//! spool plugs in through [`IngestSink`], so the durability contract lives in
//! one trait: `submit` returns a ticket, `wait_durable` returns once it is on disk.

mod auth;
mod codec;
mod metrics;
#[doc(hidden)]
pub mod replay;
mod server;
mod sink;
mod subscriptions;
mod tls;
mod topic;

pub use auth::{AuthError, DeviceRegistry};
pub use codec::IngestCodec;
pub use metrics::{BrokerMetrics, QosLabel, ReasonLabel};
pub use server::{Broker, BrokerConfig, BrokerError};
pub use sink::{Disposition, Incoming, IngestSink, SinkError, Ticket};
pub use tls::{IdentityError, TlsConfig, TlsError};
pub use topic::device_id_from_topic;
