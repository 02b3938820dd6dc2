//! Threads for connections: every connection has a thread of its own for its whole life, and
//! a thread whose connection ended waits a while for the next one instead of exiting.
//!
//! Spawning a thread costs a dozen system calls (clone, the stack's mmap and guard page, the
//! signal stack, robust list, rseq, then munmap at exit): more than the handshake itself.
//! Handing a new connection to a thread that is already waiting costs a futex wake. The
//! hand-off is a zero-capacity channel: `try_send` succeeds only when a thread is waiting in
//! `recv`, so a connection never queues behind another; without a waiting thread a new one is
//! spawned, exactly as without reuse.

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

/// A connection's work, run on its own thread.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// Threads waiting at most; past this, a thread whose connection ended exits at once, so a
/// burst of connections does not leave thousands of idle stacks behind.
const MAX_IDLE: usize = 128;

pub(crate) struct Workers {
    handoff: Sender<Job>,
    waiting: Receiver<Job>,
    idle: Arc<AtomicUsize>,
    stack_size: usize,
    /// How long a thread waits for a next connection before it exits.
    keep_idle: Duration,
}

impl Workers {
    pub(crate) fn new(stack_size: usize, keep_idle: Duration) -> Workers {
        let (handoff, waiting) = bounded(0);
        let idle = Arc::new(AtomicUsize::new(0));
        Workers {
            handoff,
            waiting,
            idle,
            stack_size,
            keep_idle,
        }
    }

    /// Runs `job` on a waiting thread, or on a new one. Fails (dropping the job) only if no
    /// thread could be started: out of memory, or over the process's thread limit.
    pub(crate) fn run(&self, job: Job) -> io::Result<()> {
        let job = match self.handoff.try_send(job) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => job,
        };
        let waiting = self.waiting.clone();
        let idle = self.idle.clone();
        let keep_idle = self.keep_idle;
        thread::Builder::new()
            .name("wsecho-conn".into())
            .stack_size(self.stack_size)
            .spawn(move || {
                job();
                serve_more(&waiting, &idle, keep_idle);
            })
            .map(drop)
    }
}

/// After its first connection, a thread takes further ones while it is wanted.
fn serve_more(waiting: &Receiver<Job>, idle: &AtomicUsize, keep_idle: Duration) {
    loop {
        if idle.fetch_add(1, Ordering::SeqCst) >= MAX_IDLE {
            idle.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        let next = waiting.recv_timeout(keep_idle);
        idle.fetch_sub(1, Ordering::SeqCst);
        match next {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_finished_thread_takes_the_next_job() {
        let workers = Workers::new(64 * 1024, Duration::from_secs(10));
        let (tx, rx) = mpsc::channel();
        let tx2 = tx.clone();
        workers
            .run(Box::new(move || tx.send(thread::current().id()).unwrap()))
            .unwrap();
        let first = rx.recv().unwrap();
        // Offer the second job until a waiting thread takes it: the thread counts itself
        // idle just before it blocks in `recv`, and an offer in between finds nobody (then
        // `run` would rightly spawn a new thread, and this test would fail by chance).
        let mut job: Job = Box::new(move || tx2.send(thread::current().id()).unwrap());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while let Err(TrySendError::Full(back)) = workers.handoff.try_send(job) {
            assert!(
                std::time::Instant::now() < deadline,
                "no thread came back for a second job"
            );
            job = back;
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(rx.recv().unwrap(), first);
    }

    #[test]
    fn busy_threads_mean_a_new_thread() {
        let workers = Workers::new(64 * 1024, Duration::from_secs(10));
        let (release, hold) = bounded::<()>(0);
        let (tx, rx) = mpsc::channel();
        for _ in 0..3 {
            let hold = hold.clone();
            let tx = tx.clone();
            workers
                .run(Box::new(move || {
                    tx.send(thread::current().id()).unwrap();
                    let _ = hold.recv();
                }))
                .unwrap();
        }
        let ids: std::collections::HashSet<_> = (0..3).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(ids.len(), 3);
        drop(release);
    }
}
