use bytes::BytesMut;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    time::timeout,
};

use std::{
    collections::VecDeque,
    io::{self, ErrorKind},
};
use tokio::time::{error::Elapsed, Duration};

use crate::protocol::{self, Packet, Protocol, PubAck, PubAckReason, QoS, ReadyToWrite, Route};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O = {0}")]
    Io(#[from] io::Error),
    #[error("Invalid data = {0}")]
    Protocol(#[from] protocol::Error),
    #[error["Keep alive timeout"]]
    KeepAlive(#[from] Elapsed),
}

/// Network transforms packets <-> frames efficiently. It takes
/// advantage of pre-allocation, buffering and vectorization when
/// appropriate to achieve performance
pub struct Network<P> {
    /// Socket for IO
    socket: Box<dyn N>,
    /// Buffered reads
    read: BytesMut,
    /// Buffered writes
    write: BytesMut,
    /// Maximum packet size
    max_incoming_size: usize,
    /// Maximum connection buffer count. TODO: Change this to use bytes for deterministicness
    max_connection_buffer_len: usize,
    /// Keep alive timeout
    keepalive: Duration,
    /// Protocol
    protocol: P,
}

impl<P: Protocol> Network<P> {
    pub fn new(
        socket: Box<dyn N>,
        max_incoming_size: usize,
        max_connection_buffer_len: usize,
        protocol: P,
    ) -> Network<P> {
        Network {
            socket,
            // PATCH(edge-telemetry) #4, #8: smaller buffers per connection
            // (upstream: 10 KiB each); both grow when a packet needs more.
            // 2 KiB still takes a burst of ten 130-byte publishes in one read;
            // a batch of 100 PUBACKs is 400 bytes.
            read: BytesMut::with_capacity(2 * 1024),
            write: BytesMut::with_capacity(512),
            max_incoming_size,
            max_connection_buffer_len,
            // Overwritten by keepalive value in connect packet, otherwise we
            // would wait indefinitely until we get a packet / network error
            // when we call read.
            keepalive: Duration::MAX,
            protocol,
        }
    }

    pub fn set_keepalive(&mut self, keepalive: u16) {
        let keepalive = Duration::from_secs(keepalive as u64);
        self.keepalive = keepalive + keepalive.mul_f32(0.5);
    }

    /// Reads more than 'required' bytes to frame a packet into self.read buffer
    async fn read_bytes(&mut self, required: usize) -> io::Result<usize> {
        // TODO: Fix this cancellation bug and write unit test
        let mut total_read = 0;
        loop {
            let read = self.socket.read_buf(&mut self.read).await?;
            if 0 == read {
                let error = if self.read.is_empty() {
                    io::Error::new(ErrorKind::ConnectionAborted, "connection closed by peer")
                } else {
                    io::Error::new(ErrorKind::ConnectionReset, "connection reset by peer")
                };

                return Err(error);
            }

            total_read += read;
            if total_read >= required {
                return Ok(total_read);
            }
        }
    }

    /// Waits on network for 1 packet
    pub async fn read(&mut self) -> Result<Packet, Error> {
        loop {
            let required = match Protocol::read_mut(
                &mut self.protocol,
                &mut self.read,
                self.max_incoming_size,
            ) {
                Ok(packet) => return Ok(packet),
                Err(protocol::Error::InsufficientBytes(required)) => required,
                Err(e) => return Err(e.into()),
            };

            // read more packets until a frame can be created. This function
            // blocks until a frame can be created. Use this in a select! branch
            timeout(self.keepalive, self.read_bytes(required)).await??;
        }
    }

    /// Read packets in bulk. This allow replies to be in bulk. This method is used
    /// after the connection is established to read a bunch of incoming packets
    ///
    /// PATCH(edge-telemetry) #7: `first` (already read) and every packet read
    /// here go where the protocol routes them: to `packets` for the router,
    /// or, for a publish it keeps, nowhere but a PUBACK in `answers` (QoS 1).
    /// Returns how many went to the router. At most
    /// `max_connection_buffer_len` packets are read per call, wherever they went.
    pub fn readv(
        &mut self,
        first: Packet,
        packets: &mut VecDeque<Packet>,
        answers: &mut VecDeque<Packet>,
    ) -> Result<usize, Error> {
        let mut routed = 0;
        let mut read = 1;
        let mut next = Some(first);
        while let Some(packet) = next.take() {
            match (self.protocol.route(&packet), &packet) {
                (Route::Keep, Packet::Publish(publish, _)) if publish.qos == QoS::AtMostOnce => {}
                (Route::Keep, Packet::Publish(publish, _)) if publish.qos == QoS::AtLeastOnce => {
                    let ack = PubAck {
                        pkid: publish.pkid,
                        reason: PubAckReason::Success,
                    };
                    answers.push_back(Packet::PubAck(ack, None));
                }
                _ => {
                    packets.push_back(packet);
                    routed += 1;
                }
            }
            if read >= self.max_connection_buffer_len
                || packets.len() >= self.max_connection_buffer_len
            {
                break;
            }
            match self
                .protocol
                .read_mut(&mut self.read, self.max_incoming_size)
            {
                Ok(packet) => {
                    read += 1;
                    next = Some(packet);
                }
                Err(protocol::Error::InsufficientBytes(_)) => {}
                Err(e) => return Err(io::Error::new(ErrorKind::InvalidData, e.to_string()).into()),
            }
        }
        Ok(routed)
    }

    pub async fn write(&mut self, packet: Packet) -> Result<(), Error> {
        Protocol::write(&self.protocol, packet, &mut self.write)?;
        self.socket.write_all(&self.write).await?;
        self.write.clear();
        Ok(())
    }

    /// PATCH(edge-telemetry) #7: the protocol's [`Protocol::ready_to_write`].
    pub fn ready_to_write(&self, packets: &VecDeque<Packet>) -> Option<ReadyToWrite> {
        self.protocol.ready_to_write(packets)
    }

    pub async fn writev(&mut self, packets: VecDeque<Packet>) -> Result<(), Error> {
        // PATCH(edge-telemetry) #6: let the protocol hold the batch back
        // (asynchronously) before any of it is encoded.
        if let Some(ready) = self.protocol.ready_to_write(&packets) {
            ready.await;
        }
        for packet in packets {
            Protocol::write(&self.protocol, packet, &mut self.write)?;
        }
        self.socket.write_all(&self.write).await?;
        self.write.clear();
        Ok(())
    }
}

pub trait N: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T> N for T where T: AsyncRead + AsyncWrite + Unpin + Send {}
