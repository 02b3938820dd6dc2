//! Where the peer's byte stream stands between frames.
//!
//! tungstenite's `WebSocketContext` keeps the capacity its buffers grew to for the largest
//! message it ever saw, and offers no way to give it back: no shrink, and no public way to
//! ask whether it holds a partial frame or the first fragments of a message (its frame codec
//! and incomplete-message state are private). Replacing the context with a fresh one gives the
//! memory back, but only when nothing is in flight, or the bytes and fragments it held would be
//! lost. So [`Boundary`] follows the same bytes the context is fed, with tungstenite's own
//! public header parser (`FrameHeader::parse`), and tells [`Session::renew`] when the context
//! is at rest. If tungstenite ever exposes that state, this file can go.
//!
//! [`Session::renew`]: super::Session::renew

use std::io::Cursor;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::OpCode;

/// The longest frame header (RFC 6455: 2 + 8 length + 4 mask bytes).
const MAX_HEADER: usize = 14;

/// Where the peer's byte stream stands between frames, read with tungstenite's own header
/// parser: only so that [`Session::renew`](super::Session::renew) knows when the context
/// holds nothing in flight.
#[derive(Default)]
pub(crate) struct Boundary {
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
    /// The start of a frame header split across reads.
    header: [u8; MAX_HEADER],
    header_len: usize,
    /// Inside a fragmented data message (control frames may come in between).
    fragmented: bool,
    /// The stream stopped making sense; the context will refuse it too. Never at rest again.
    lost: bool,
}

impl Boundary {
    /// Follows `input`, the next bytes the context is fed.
    pub(crate) fn feed(&mut self, mut input: &[u8]) {
        while !input.is_empty() && !self.lost {
            if self.payload_left > 0 {
                let take = self.payload_left.min(input.len() as u64) as usize;
                self.payload_left -= take as u64;
                input = &input[take..];
                continue;
            }
            let have = self.header_len;
            let add = (MAX_HEADER - have).min(input.len());
            self.header[have..have + add].copy_from_slice(&input[..add]);
            let mut cursor = Cursor::new(&self.header[..have + add]);
            match FrameHeader::parse(&mut cursor) {
                Ok(Some((header, len))) => {
                    input = &input[cursor.position() as usize - have..];
                    self.header_len = 0;
                    self.payload_left = len;
                    if let OpCode::Data(_) = header.opcode {
                        self.fragmented = !header.is_final;
                    }
                }
                Ok(None) if add > 0 => {
                    self.header_len = have + add;
                    input = &input[add..];
                }
                Ok(None) | Err(_) => self.lost = true,
            }
        }
    }

    /// Between frames and outside any fragmented message.
    pub(crate) fn at_rest(&self) -> bool {
        !self.lost && self.payload_left == 0 && self.header_len == 0 && !self.fragmented
    }
}
