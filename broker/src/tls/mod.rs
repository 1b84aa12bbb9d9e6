//! MQTT over TLS: settings and file loading (`config.rs`), the front that
//! terminates TLS off rumqttd's accept loop (`front.rs`), and the device
//! identity a client certificate carries (`identity.rs`).

mod config;
pub(crate) mod front;
mod identity;

pub use config::{TlsConfig, TlsError};
pub use identity::IdentityError;
