//! TLS for both sides: rustls with the ring provider, driven by hand as a state machine.
//!
//! Files here turn paths into configurations ([`server`], [`client`], [`pem`]), keep a server's
//! certificate swappable while it runs ([`reload`]), drive one connection's TLS over the
//! connection layer's split (one thread reads the socket outside the lock, writers encrypt under
//! it: [`session`]), and say what went wrong in terms a user can act on ([`error`]). Nothing
//! here names a command-line flag: errors carry data and the command line adds the hint.

pub mod client;
pub mod error;
mod insecure;
pub mod pem;
pub mod reload;
pub mod server;
pub mod session;
pub mod sniff;
pub mod subject;
#[cfg(test)]
mod tests;

pub use client::{Identity, Trust, client_config};
pub use error::Error;
pub use reload::CertSlot;
pub use server::{ServerFiles, ServerTls};
pub use session::{Blocking, Session, Stream};

use std::sync::Arc;

/// The one protocol name both sides offer and accept: WebSocket upgrades ride on HTTP/1.1.
const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// The crypto provider, chosen explicitly: rustls panics at `builder()` unless the build
/// enables exactly one provider, and pulling in another crate's feature could change that.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
