//! A socket-free way into the codec wrapper: bytes a client sent, read by a
//! fresh [`IngestCodec`] connection exactly as rumqttd's `Network::read`
//! does. For the fuzz targets in `fuzz/` and the regression tests that replay
//! what they found; not part of the broker's API, and production never calls it.
//!
//! ```text
//! feed `chunk` bytes ─▶ read_mut until InsufficientBytes ─▶ feed more ─▶ …
//!                        any other error: the connection would close; stop
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use rumqttd::protocol::{Error, Packet, Protocol};
use telemetry::Limits;

use crate::codec::IngestCodec;
use crate::metrics::BrokerMetrics;
use crate::sink::{Incoming, IngestSink, SinkError, Ticket};

/// What one connection made of a client's bytes.
#[derive(Debug)]
pub struct Replay {
    /// Packets the codec handed to rumqttd, in order.
    pub packets: Vec<Packet>,
    /// What the codec submitted to the spool, in order.
    pub submitted: Vec<Incoming>,
    /// The error that would have closed the connection; `None` when every
    /// byte was read or the rest waits for more.
    pub error: Option<Error>,
    /// Bytes left unread in the connection's buffer at the end.
    pub unread: usize,
}

/// A spool that keeps everything and calls it durable at once.
#[derive(Default)]
struct Recorder(Mutex<Vec<Incoming>>);

impl IngestSink for Recorder {
    fn submit(&self, incoming: Incoming) -> Result<Ticket, SinkError> {
        let mut items = self.0.lock().map_err(|_| SinkError::Closed)?;
        items.push(incoming);
        Ok(Ticket(items.len() as u64))
    }

    fn is_durable(&self, _: Ticket) -> bool {
        true
    }

    fn wait_durable(&self, _: Ticket, _: Duration) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Reads `bytes` as one client connection with the default [`Limits`] and
/// the broker's packet size bound, handing them over `chunk` bytes at a time
/// (at least one) as TCP might. `authenticated` binds topics to the
/// CONNECT username as a device file does.
#[doc(hidden)]
pub fn read_client_bytes(bytes: &[u8], chunk: usize, authenticated: bool) -> Replay {
    let sink = Arc::new(Recorder::default());
    let limits = Limits::default();
    let template = IngestCodec::new(
        sink.clone(),
        limits,
        Duration::from_secs(1),
        BrokerMetrics::default(),
        authenticated,
        Arc::default(),
    );
    // rumqttd clones the template per accepted connection; so do we.
    let mut codec = template.clone();
    // As `server::max_packet_size`: room for headers on top of the payload limit.
    let max_size = limits.max_bytes + 1024;
    let mut buffer = BytesMut::new();
    let mut packets = Vec::new();
    let mut error = None;
    'feed: for piece in bytes.chunks(chunk.max(1)) {
        buffer.extend_from_slice(piece);
        loop {
            match codec.read_mut(&mut buffer, max_size) {
                Ok(packet) => packets.push(packet),
                Err(Error::InsufficientBytes(_)) => break,
                Err(err) => {
                    error = Some(err);
                    break 'feed;
                }
            }
        }
    }
    let submitted = sink.0.lock().map(|s| s.clone()).unwrap_or_default();
    Replay {
        packets,
        submitted,
        error,
        unread: buffer.len(),
    }
}
