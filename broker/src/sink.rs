//! The contract between the MQTT codec and whatever makes publishes durable.

use std::time::Duration;

use bytes::Bytes;

/// Position of a submitted publish in the sink's durable order. Tickets grow
/// strictly; once ticket `t` is durable, so is every ticket below it that did
/// not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// What the sink is asked to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// A valid reading: spool it for upload.
    Reading,
    /// A publish the gateway refused: keep it for inspection, do not upload.
    Rejected { reason: String },
}

/// One publish as read off a device connection.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Device the topic names; for rejected topics, the MQTT client id.
    pub device_id: String,
    pub topic: String,
    /// Gateway clock at arrival, milliseconds since the epoch.
    pub received_at: u64,
    /// The payload exactly as the device sent it.
    pub payload: Bytes,
    pub qos: u8,
    pub disposition: Disposition,
}

/// Why the sink could not take or keep a publish. The codec answers by
/// closing the device's connection without a PUBACK, so the device retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The sink is shutting down; no more publishes are accepted.
    #[error("spool is closed")]
    Closed,
    /// The write holding this ticket failed (disk error, full disk).
    #[error("spool write failed: {0}")]
    WriteFailed(String),
    /// The ticket did not become durable in time.
    #[error("spool did not confirm the write within {0:?}")]
    Timeout(Duration),
}

/// Where accepted publishes go. Implemented by the edge-agent's spool.
pub trait IngestSink: Send + Sync + 'static {
    /// Queues a publish for the next group commit and returns its ticket.
    /// May block briefly when the sink's queue is full (back-pressure).
    fn submit(&self, incoming: Incoming) -> Result<Ticket, SinkError>;

    /// Cheap check whether `ticket` is already durable.
    fn is_durable(&self, ticket: Ticket) -> bool;

    /// Blocks the calling thread until `ticket` is durable, failed, or `timeout` passed.
    fn wait_durable(&self, ticket: Ticket, timeout: Duration) -> Result<(), SinkError>;

    /// A channel whose value is the highest ticket with an outcome (every
    /// ticket up to it is durable or failed), for waiting without blocking
    /// a thread. `None` (the default): only [`IngestSink::wait_durable`].
    fn outcomes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}
