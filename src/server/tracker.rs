//! Who is connected, and telling them all goodbye at shutdown.
//!
//! Every accepted connection holds a [`Ticket`] for as long as its thread runs; dropping it
//! (also while a panic unwinds) gives the slot back, so the connection cap can never leak.
//! A WebSocket connection registers its [`Link`] on its ticket, which is how the stopping
//! thread can send each one a Close 1001 while its own thread is blocked reading.

use crate::link::{Link, Tcp};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

pub(crate) struct Tracker {
    conns: Mutex<Conns>,
    changed: Condvar,
    stopping: AtomicBool,
}

#[derive(Default)]
struct Conns {
    /// Someone waits in `wait_until_empty` (only at shutdown): only then does a closing
    /// connection notify, since a notify costs a system call even when nobody waits.
    watched: bool,
    open: usize,
    next_id: u64,
    links: HashMap<u64, Arc<Link<Tcp>>>,
}

/// One admitted connection's slot.
pub(crate) struct Ticket {
    tracker: Arc<Tracker>,
    id: u64,
}

/// The Close a stopping server sends.
pub(crate) fn going_away() -> CloseFrame {
    CloseFrame {
        code: CloseCode::Away,
        reason: "server shutting down".into(),
    }
}

impl Tracker {
    pub(crate) fn new() -> Self {
        Tracker {
            conns: Mutex::new(Conns::default()),
            changed: Condvar::new(),
            stopping: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Conns> {
        self.conns
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A slot for a new connection, or `None` when `max` are open.
    pub(crate) fn admit(self: &Arc<Self>, max: usize) -> Option<Ticket> {
        let mut conns = self.lock();
        if conns.open >= max {
            return None;
        }
        conns.open += 1;
        conns.next_id += 1;
        Some(Ticket {
            tracker: self.clone(),
            id: conns.next_id,
        })
    }

    /// Marks the server as stopping; true for the first call only.
    pub(crate) fn begin_stop(&self) -> bool {
        !self.stopping.swap(true, Ordering::SeqCst)
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Sends Close 1001 to every registered connection. A connection whose lock is held (its
    /// thread is writing) is retried until `deadline`; its own thread also checks
    /// [`Tracker::stopping`] after every turn, so one of the two always sends it.
    pub(crate) fn say_goodbye(&self, deadline: Instant) {
        let mut pending: Vec<Arc<Link<Tcp>>> = self.lock().links.values().cloned().collect();
        while !pending.is_empty() && Instant::now() < deadline {
            pending.retain(|link| {
                link.try_with(|session| {
                    if session.can_write() {
                        let _ = session.close(going_away());
                    }
                })
                .is_none()
            });
            if !pending.is_empty() {
                thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// Waits until no connection is open or `deadline` passes; returns how many are open.
    pub(crate) fn wait_until_empty(&self, deadline: Instant) -> usize {
        let mut conns = self.lock();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if conns.open == 0 || left.is_zero() {
                conns.watched = false;
                return conns.open;
            }
            conns.watched = true;
            conns = self
                .changed
                .wait_timeout(conns, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// How many connections are open now.
    #[cfg(test)]
    pub(crate) fn open(&self) -> usize {
        self.lock().open
    }
}

impl Ticket {
    /// Makes the connection reachable for the goodbye at shutdown.
    pub(crate) fn register(&self, link: Arc<Link<Tcp>>) {
        self.tracker.lock().links.insert(self.id, link);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut conns = self.tracker.lock();
        conns.links.remove(&self.id);
        conns.open -= 1;
        if conns.watched {
            self.tracker.changed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_comes_back_when_a_ticket_is_dropped_even_by_a_panic() {
        let tracker = Arc::new(Tracker::new());
        let first = tracker.admit(2).unwrap();
        let second = tracker.admit(2).unwrap();
        assert!(tracker.admit(2).is_none());
        drop(first);
        let third = tracker.admit(2).unwrap();
        let panicked = thread::spawn(move || {
            let _held = second;
            panic!("a connection thread panics");
        })
        .join();
        assert!(panicked.is_err());
        assert_eq!(tracker.open(), 1);
        drop(third);
        assert_eq!(tracker.wait_until_empty(Instant::now()), 0);
    }
}
