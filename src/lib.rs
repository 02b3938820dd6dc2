//! wsecho: a WebSocket echo server and client you can leave running on a small box.
//!
//! What this crate promises, and keeps:
//! - **Synchronous.** Blocking `std::net` sockets, one OS thread per connection, no async
//!   runtime. A reader can follow one connection from top to bottom in one function.
//! - **Protocol by tungstenite.** Handshakes and framing come from `tungstenite`'s sync API;
//!   nothing here derives a `Sec-WebSocket-Accept` or encodes a frame by hand.
//! - **Bounded.** Every wait has a deadline, every buffer a cap, the number of connections a
//!   limit; a peer can stall or flood one connection, never the server.
//! - **Small.** Few dependencies, each for one job; one static binary for embedded Linux.
//! - **Contained.** A panic stays inside its connection thread; bad input gets an HTTP status,
//!   a WebSocket close code or one clear error line, never a crash.
//!
//! The `wsecho` binary is a thin command line over [`server`] and [`client`]; the library is
//! there for programs that need the same pieces, such as `examples/autobahn_client.rs`, which
//! runs the client side of the Autobahn TestSuite on the connection `wsecho dial` uses. The
//! tests drive the real binary over real sockets.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cidr;
pub mod client;
mod link;
pub mod log;
pub mod server;
pub mod sys;
pub mod time;
#[cfg(feature = "tls")]
pub mod tls;
