//! Shared by the broker's integration tests.

use std::sync::Mutex;
use std::time::Duration;

use broker::{Incoming, IngestSink, SinkError, Ticket};

/// Takes everything and calls it durable at once.
#[derive(Default)]
pub struct InstantSink {
    pub items: Mutex<Vec<Incoming>>,
}

impl IngestSink for InstantSink {
    fn submit(&self, incoming: Incoming) -> Result<Ticket, SinkError> {
        let mut items = self.items.lock().unwrap();
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
