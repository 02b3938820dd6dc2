//! What `--stdin` sent and the server has not echoed yet, for sending again after a reconnect.
//!
//! An echo server echoes in order, so the oldest message still waiting is the one the next
//! echo must match. The reader thread takes it off the queue (after checking the echo is it)
//! and only then prints it, so a line is printed exactly when it leaves the queue: an echo
//! dial read is never sent again, and a line whose echo was lost with its connection (the
//! server may have echoed it; dial never read that) is still queued and sent again on the
//! next connection. Nothing is printed twice unless the queue is wrong.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use tungstenite::Message;

/// Messages sent and not yet echoed, oldest first. Shared by the sending (main) thread and
/// the reader thread of the current connection; one reader at a time (the last connection's
/// reader has ended before the next one starts).
#[derive(Default)]
pub(crate) struct InFlight {
    queue: Mutex<VecDeque<Message>>,
}

impl InFlight {
    /// `message` is about to be sent (for the first time).
    pub(crate) fn sent(&self, message: Message) {
        self.lock().push_back(message);
    }

    /// `echo` came back: takes the oldest waiting message off the queue if it is its echo;
    /// otherwise leaves the queue alone and returns how many were waiting.
    pub(crate) fn echoed(&self, echo: &Message) -> Result<(), usize> {
        let mut queue = self.lock();
        match queue.front() {
            Some(oldest) if oldest == echo => {
                queue.pop_front();
                Ok(())
            }
            _ => Err(queue.len()),
        }
    }

    /// The messages still waiting, oldest first, to send again on a new connection. (They
    /// stay queued: their echoes are still due.)
    pub(crate) fn waiting(&self) -> Vec<Message> {
        self.lock().iter().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Message>> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_leave_in_order_and_a_stranger_is_refused() {
        let flight = InFlight::default();
        flight.sent(Message::text("a"));
        flight.sent(Message::text("b"));
        assert_eq!(flight.echoed(&Message::text("b")), Err(2));
        assert_eq!(flight.echoed(&Message::text("a")), Ok(()));
        assert_eq!(flight.waiting(), vec![Message::text("b")]);
        assert_eq!(flight.echoed(&Message::text("b")), Ok(()));
        assert_eq!(flight.echoed(&Message::text("b")), Err(0));
        assert!(flight.waiting().is_empty());
    }
}
