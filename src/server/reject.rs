//! Turning connections away without spending a thread on each.
//!
//! At capacity the accept loop must answer `503` and move on at once: it never waits on a
//! client. It writes the answer without blocking (a fresh socket's send buffer always has
//! room for it) and hands the socket to one thread that closes it gently: it drains what the
//! client sends for a moment before closing. Closing at once would make the kernel reset the
//! connection over the unread request, and the client could lose the 503 it was sent.

use crate::sys::{self, Wakeup};
use crossbeam_channel::{Receiver, Sender, TryRecvError, bounded};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// How long a turned-away socket is drained before it is closed.
const DRAIN_FOR: Duration = Duration::from_secs(1);
/// Sockets draining at once; past this (and a queue as long), new ones are closed straight
/// away.
const MAX_DRAINING: usize = 1024;

pub(crate) struct Rejecter {
    queue: Option<(Sender<TcpStream>, Arc<Wakeup>)>,
}

impl Rejecter {
    /// Starts the closing thread; without it, rejected sockets are simply closed.
    pub(crate) fn start() -> Rejecter {
        let Ok(wakeup) = Wakeup::new().map(Arc::new) else {
            return Rejecter { queue: None };
        };
        let (tx, rx) = bounded(MAX_DRAINING);
        let woken = wakeup.clone();
        let started = thread::Builder::new()
            .name("wsecho-reject".into())
            .stack_size(64 * 1024)
            .spawn(move || close_all_gently(&rx, &woken));
        Rejecter {
            queue: started.ok().map(|_| (tx, wakeup)),
        }
    }

    /// Answers 503 (at the connection cap, or out of threads) and closes `stream`, without
    /// blocking the caller.
    pub(crate) fn turn_away(&self, stream: TcpStream) {
        const RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 45\r\nConnection: close\r\n\r\n\
wsecho is at its connection limit; try again\n";
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let _ = (&stream).write(RESPONSE);
        let _ = stream.shutdown(Shutdown::Write);
        if let Some((queue, wakeup)) = &self.queue {
            // With the closing thread full or gone, the socket just closes here, dropped
            // with the error that hands it back.
            if queue.try_send(stream).is_ok() {
                wakeup.wake();
            }
        }
    }
}

/// The closing thread: drains every socket it is handed until its peer closes or
/// `DRAIN_FOR` has passed, then closes it. It sleeps in one `poll` over the draining sockets
/// and the wake-up that says a new one is queued, until one of them has something or the
/// earliest deadline comes; with nothing to drain, it sleeps on the queue.
fn close_all_gently(queue: &Receiver<TcpStream>, wakeup: &Wakeup) {
    let mut draining: Vec<(TcpStream, Instant)> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut scratch = [0u8; 4096];
    loop {
        if draining.is_empty() {
            match queue.recv() {
                Ok(stream) => draining.push((stream, Instant::now() + DRAIN_FOR)),
                Err(_) => return,
            }
        }
        // Clear before taking the queue: a socket queued from now on wakes the next poll.
        wakeup.clear();
        while draining.len() < MAX_DRAINING {
            match queue.try_recv() {
                Ok(stream) => draining.push((stream, Instant::now() + DRAIN_FOR)),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        let now = Instant::now();
        draining.retain(|(_, deadline)| now < *deadline);
        let Some(earliest) = draining.iter().map(|(_, deadline)| *deadline).min() else {
            continue;
        };
        fds.clear();
        fds.push(wakeup.pollfd());
        fds.extend(
            draining
                .iter()
                .map(|(stream, _)| sys::pollfd(stream.as_fd())),
        );
        match sys::poll(&mut fds, Some(earliest - now)) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // Cannot wait (out of memory for the poll set): close them all rather than spin.
            Err(_) => {
                draining.clear();
                continue;
            }
        }
        let mut ready = fds[1..].iter().map(|fd| fd.revents != 0);
        draining.retain(|(stream, _)| {
            !ready.next().unwrap_or(false) || drained_and_open(stream, &mut scratch)
        });
    }
}

/// Reads what is waiting (a bounded amount, so a flooding peer cannot keep this thread to
/// itself); false once the peer has closed or the socket failed.
fn drained_and_open(mut stream: &TcpStream, scratch: &mut [u8]) -> bool {
    for _ in 0..16 {
        match stream.read(scratch) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
    true
}
