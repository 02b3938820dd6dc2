//! One WebSocket connection that one thread reads while other threads write.
//!
//! tungstenite's `WebSocket<S>` needs `&mut` to read and to write, so a thread blocked in
//! `read` holds the socket and nobody else could send: not the server's Close on shutdown, not
//! the client's tick while its reader waits. So the connection is cut in two layers:
//!
//! - **Protocol state**, behind one mutex: a [`Link`] holds tungstenite's `WebSocketContext`
//!   and the writing half of the transport; [`Session`] is the connection while that lock is
//!   held (read the messages in the input, send, close). Every frame, whoever sends it, goes
//!   through the one context under the lock, so frames never interleave, and pongs and close
//!   replies go out in the same turn as the bytes that asked for them. The `Boundary` beside
//!   the context tracks where the peer's byte stream stands between frames.
//! - **Transport**, outside the lock: the reading thread blocks on the socket into a
//!   [`ReadBuf`] (its timeout set through [`ReadTimeout`]), then hands the raw bytes it read to
//!   [`Link::with`]. Writes leave through a [`DeadlineWriter`], which bounds how long a peer
//!   that reads slowly may hold a write. [`close_gently`] ends a socket after a final answer.
//!
//! Who writes to the socket, and when, comes in two kinds. The server's connection thread
//! both reads and writes, so it writes through the lock: nobody else ever waits for it (the
//! goodbye at shutdown only tries it). The client reads on one thread and writes on another,
//! so its [`OutboxLink`] never writes under the lock: frames (under TLS, their encrypted
//! records) wait in an outbox and leave outside it (`outbox.rs` has the protocol), and the
//! reader can always get the lock.
//!
//! The two meet in one place, the [`Transport`] and its wire (`wire.rs`): what the context
//! reads from (the reader's bytes) and writes to (the transport's writer) while the lock is
//! held. Plain TCP passes bytes straight through. TLS slots in there without touching the echo
//! loop or the select loop: the reader still reads raw bytes outside the lock, and the wire
//! gains a decrypting step before bytes reach the context and an encrypting one after it
//! (rustls is, like the context, a state machine fed with bytes). The link is generic over the
//! transport, so plain TCP pays nothing for TLS.

mod boundary;
mod close;
mod deadline;
mod outbox;
mod read_buf;
mod session;
mod timeout;
mod wire;

pub(crate) use close::close_gently;
pub(crate) use deadline::DeadlineWriter;
pub(crate) use outbox::{Outbox, OutboxLink};
pub(crate) use read_buf::ReadBuf;
pub(crate) use session::{Link, Session};
pub(crate) use timeout::ReadTimeout;
#[cfg(feature = "tls")]
pub(crate) use timeout::UntilDeadline;
pub(crate) use wire::{AnyTransport, Transport};
#[cfg(feature = "tls")]
pub(crate) use wire::{NestedTransport, TlsTransport};

use tungstenite::protocol::WebSocketConfig;

/// The tungstenite configuration both sides use, for these message and frame limits.
pub(crate) fn config(max_message: usize, max_frame: usize) -> WebSocketConfig {
    /// Messages sent in one turn gather up to this much before they are written out.
    const WRITE_BATCH: usize = 64 * 1024;
    WebSocketConfig::default()
        // The reader hands over at most what one read returned; a small codec buffer keeps
        // tungstenite from zero-filling 128 KiB before every read.
        .read_buffer_size(1024)
        .write_buffer_size(WRITE_BATCH)
        // One batch plus one whole message (with its frame header): a peer that stops
        // reading costs at most this much before the write deadline drops it.
        .max_write_buffer_size(WRITE_BATCH.saturating_add(max_message).saturating_add(16))
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_frame))
}
