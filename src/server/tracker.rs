//! Who is connected, and telling them all goodbye at shutdown.
//!
//! Every accepted connection holds a [`Ticket`] for as long as its thread runs; dropping it
//! (also while a panic unwinds) gives the slot back, so the connection cap can never leak.
//! A WebSocket connection registers its [`Link`] on its ticket, which is how the stopping
//! thread can send each one a Close 1001 while its own thread is blocked reading.

use crate::link::{Link, Transport};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

/// The registry is split so that connections starting and ending at once rarely wait on each
/// other: admission is one atomic, and a connection locks only its own shard of the registry.
const SHARDS: usize = 16;

type Shard = Mutex<HashMap<u64, Arc<dyn Farewell>>>;

/// A registered connection, plain or TLS, as the goodbye sees it.
pub(crate) trait Farewell: Send + Sync {
    /// Sends Close 1001 unless the connection is busy (its lock held) or already closing.
    fn say_goodbye(&self);
}

impl<W: Transport + Send> Farewell for Link<W> {
    fn say_goodbye(&self) {
        self.try_with(&[], |session| {
            if session.can_write() {
                let _ = session.close(going_away());
            }
        });
    }
}

pub(crate) struct Tracker {
    open: AtomicUsize,
    next_id: AtomicU64,
    shards: [Shard; SHARDS],
    stopping: AtomicBool,
    /// Someone waits in `wait_until_empty` (only at shutdown): only then does a closing
    /// connection notify, since a notify costs a system call even when nobody waits.
    watched: AtomicBool,
    emptied: Mutex<()>,
    changed: Condvar,
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Tracker {
    pub(crate) fn new() -> Self {
        Tracker {
            open: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            stopping: AtomicBool::new(false),
            watched: AtomicBool::new(false),
            emptied: Mutex::new(()),
            changed: Condvar::new(),
        }
    }

    /// A slot for a new connection, or `None` when `max` are open.
    pub(crate) fn admit(self: &Arc<Self>, max: usize) -> Option<Ticket> {
        self.open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        Some(Ticket {
            tracker: self.clone(),
            id,
        })
    }

    /// Marks the server as stopping; true for the first call only.
    pub(crate) fn begin_stop(&self) -> bool {
        !self.stopping.swap(true, Ordering::SeqCst)
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Sends Close 1001 to every registered connection that is not busy. One whose lock is
    /// held (its thread is in a turn, perhaps blocked writing) is left to its own thread,
    /// which checks [`Tracker::stopping`] after every turn and says goodbye itself, so that
    /// nobody waits for the lock here. One that registers after its shard was read sees
    /// `stopping` set too (the stop is flagged first, and registration and this read take the
    /// same shard lock).
    pub(crate) fn say_goodbye(&self) {
        let links: Vec<Arc<dyn Farewell>> = self
            .shards
            .iter()
            .flat_map(|shard| lock(shard).values().cloned().collect::<Vec<_>>())
            .collect();
        for link in links {
            link.say_goodbye();
        }
    }

    /// Waits until no connection is open or `deadline` passes; returns how many are open.
    pub(crate) fn wait_until_empty(&self, deadline: Instant) -> usize {
        self.watched.store(true, Ordering::SeqCst);
        let mut guard = lock(&self.emptied);
        loop {
            let open = self.open.load(Ordering::SeqCst);
            let left = deadline.saturating_duration_since(Instant::now());
            if open == 0 || left.is_zero() {
                self.watched.store(false, Ordering::SeqCst);
                return open;
            }
            guard = self
                .changed
                .wait_timeout(guard, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// How many connections are open now.
    #[cfg(test)]
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl Ticket {
    /// Makes the connection reachable for the goodbye at shutdown.
    pub(crate) fn register(&self, link: Arc<dyn Farewell>) {
        lock(self.tracker.shard(self.id)).insert(self.id, link);
    }
}

impl Tracker {
    fn shard(&self, id: u64) -> &Shard {
        &self.shards[(id % SHARDS as u64) as usize]
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let tracker = &self.tracker;
        lock(tracker.shard(self.id)).remove(&self.id);
        tracker.open.fetch_sub(1, Ordering::SeqCst);
        if tracker.watched.load(Ordering::SeqCst) {
            // Taking the waiter's lock orders this notify after its check of `open`.
            let _guard = lock(&tracker.emptied);
            tracker.changed.notify_all();
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
        let panicked = std::thread::spawn(move || {
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
