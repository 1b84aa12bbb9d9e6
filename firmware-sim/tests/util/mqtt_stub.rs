//! A minimal MQTT 3.1.1 broker for tests: accepts any client, records every
//! PUBLISH and answers with PUBACK, unless told to misbehave (drop each
//! client's first connection after some publishes, or never acknowledge).
//! Built on rumqttc's packet codec; no routing, no subscriptions.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{ConnAck, ConnectReturnCode, Packet, PubAck};
use rumqttc::mqttbytes::Error as CodecError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_PACKET: usize = 64 * 1024;

/// How the stub treats its clients.
#[derive(Debug, Clone, Copy)]
pub struct Behaviour {
    /// Close each client's first connection, without acknowledging, when it
    /// has published this many messages on it.
    pub drop_first_connection_after: Option<usize>,
    /// Answer QoS 1 publishes with PUBACK.
    pub ack: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            drop_first_connection_after: None,
            ack: true,
        }
    }
}

/// One PUBLISH as the stub received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub client_id: String,
    pub username: Option<String>,
    pub topic: String,
    pub qos: u8,
    pub payload: Bytes,
}

#[derive(Debug, Default)]
struct State {
    received: Vec<Received>,
    connections: HashMap<String, usize>,
}

pub struct StubBroker {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl StubBroker {
    pub async fn start(behaviour: Behaviour) -> StubBroker {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, behaviour, shared.clone()));
            }
        });
        StubBroker { addr, state, task }
    }

    /// `host:port` for `FleetConfig::broker`.
    pub fn broker(&self) -> String {
        self.addr.to_string()
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// How many times each client id connected.
    pub fn connections(&self) -> HashMap<String, usize> {
        self.state.lock().unwrap().connections.clone()
    }
}

impl Drop for StubBroker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, behaviour: Behaviour, state: Arc<Mutex<State>>) {
    let mut buf = BytesMut::with_capacity(4096);
    let mut out = BytesMut::new();
    let mut client: Option<(String, Option<String>, usize)> = None;
    let mut published_here = 0;
    loop {
        let packet = match Packet::read(&mut buf, MAX_PACKET) {
            Ok(packet) => packet,
            Err(CodecError::InsufficientBytes(_)) => {
                // Answer in batches, as a broker does, but never sit on an
                // answer while waiting for more input.
                if !out.is_empty() {
                    if stream.write_all(&out).await.is_err() {
                        return;
                    }
                    out.clear();
                }
                match stream.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
            Err(_) => return,
        };
        match packet {
            Packet::Connect(connect) => {
                let nth = {
                    let mut state = state.lock().unwrap();
                    let count = state
                        .connections
                        .entry(connect.client_id.clone())
                        .or_default();
                    *count += 1;
                    *count
                };
                let username = connect.login.map(|l| l.username);
                client = Some((connect.client_id, username, nth));
                Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false))
                    .write(&mut out, MAX_PACKET)
                    .unwrap();
            }
            Packet::Publish(publish) => {
                let Some((client_id, username, nth)) = &client else {
                    return;
                };
                state.lock().unwrap().received.push(Received {
                    client_id: client_id.clone(),
                    username: username.clone(),
                    topic: publish.topic.clone(),
                    qos: publish.qos as u8,
                    payload: publish.payload.clone(),
                });
                published_here += 1;
                if *nth == 1 && behaviour.drop_first_connection_after == Some(published_here) {
                    return;
                }
                if behaviour.ack && publish.qos as u8 == 1 {
                    Packet::PubAck(PubAck::new(publish.pkid))
                        .write(&mut out, MAX_PACKET)
                        .unwrap();
                }
            }
            Packet::PingReq => {
                Packet::PingResp.write(&mut out, MAX_PACKET).unwrap();
            }
            Packet::Disconnect => return,
            _ => {}
        }
    }
}
