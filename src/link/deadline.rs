//! The writing half of a connection, with a deadline on each whole write.

use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Instant;

/// The writing half of a TCP connection, for a [`Link`](super::Link): the reading thread reads the same
/// descriptor outside the lock (`&TcpStream` reads and writes without `&mut`).
///
/// The socket's send timeout (`SO_SNDTIMEO`, the write timeout) bounds each `send` call, and
/// tungstenite calls again with what is left after a partial write: on its own that would let
/// a peer that reads a trickle hold its thread and write buffer forever. So once a write has
/// come back short (its timeout ran out part-way, or a stop and continue cut it short), the
/// rest must go out within one more write timeout: a whole write (at most 64 KiB plus one
/// 64 KiB fragment) gets between one and two. No clock is read and no syscall added while
/// writes go out whole.
pub(crate) struct DeadlineWriter(pub(crate) Arc<TcpStream>);

impl DeadlineWriter {
    /// Sends the rest of `buf` after a short write, within one more write timeout (read back
    /// from the socket, then set back on it).
    fn finish(&self, buf: &[u8], mut done: usize) -> io::Result<usize> {
        let mut stream = &*self.0;
        let Some(timeout) = stream.write_timeout()? else {
            // No timeout: only a stop and continue cuts a send short; send the rest.
            stream.write_all(&buf[done..])?;
            return Ok(buf.len());
        };
        let deadline = Instant::now() + timeout;
        let result = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "write timed out: the peer is not reading fast enough",
                ));
            }
            if let Err(e) = stream.set_write_timeout(Some(left)) {
                break Err(e);
            }
            match stream.write(&buf[done..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) if done + n == buf.len() => break Ok(buf.len()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The timeout ran out with nothing more sent: the deadline has passed.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => break Err(e),
            }
        };
        let _ = stream.set_write_timeout(Some(timeout));
        result
    }
}

impl Write for DeadlineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let sent = loop {
            match (&*self.0).write(buf) {
                // A signal (Ctrl-C, SIGTERM) cut a blocked send short: not the peer's doing,
                // and the handler decides what happens next.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                sent => break sent?,
            }
        };
        match sent {
            n if n == buf.len() || n == 0 => Ok(n),
            n => self.finish(buf, n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::time::Duration;

    /// A connected pair on loopback whose writer has a small send buffer, so that a write of
    /// 1 MiB has to wait for the peer and each read of it frees room at once. (A small receive
    /// buffer on the peer would stall loopback TCP itself: the sender waits for a window as
    /// large as one it saw before.) Returns the writer (with a `timeout` write timeout) and
    /// the peer.
    fn small_buffered_pair(timeout: Duration) -> (DeadlineWriter, TcpStream) {
        #[allow(unsafe_code)]
        fn small_send_buffer(s: &TcpStream) {
            use std::os::fd::AsRawFd;
            let size: libc::c_int = 4096;
            // SAFETY: a valid socket and a c_int option value of the right size.
            let r = unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_SNDBUF,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(r, 0, "setsockopt: {}", io::Error::last_os_error());
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (peer, _) = listener.accept().unwrap();
        small_send_buffer(&stream);
        stream.set_write_timeout(Some(timeout)).unwrap();
        (DeadlineWriter(Arc::new(stream)), peer)
    }

    /// Reads `peer` in `chunk`-byte bites with `pause` between them, until EOF or an error;
    /// returns how much it read.
    fn read_slowly(
        mut peer: TcpStream,
        pause: Duration,
        chunk: usize,
    ) -> std::thread::JoinHandle<usize> {
        std::thread::spawn(move || {
            let mut buf = vec![0u8; chunk];
            let mut got = 0;
            while let Ok(n @ 1..) = peer.read(&mut buf) {
                got += n;
                std::thread::sleep(pause);
            }
            got
        })
    }

    #[test]
    fn a_peer_that_never_reads_fails_the_write_within_two_timeouts() {
        let (mut tcp, _peer) = small_buffered_pair(Duration::from_millis(200));
        let start = Instant::now();
        let err = tcp.write(&vec![0u8; 1 << 20]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn a_peer_that_reads_a_trickle_fails_the_write_although_every_send_made_progress() {
        // 1 KiB every 10 ms (100 KB/s): 1 MiB would take ten seconds, or longer, while the
        // write should fail after about two timeouts (0.4 s).
        let (mut tcp, peer) = small_buffered_pair(Duration::from_millis(200));
        let reader = read_slowly(peer, Duration::from_millis(10), 1024);
        let start = Instant::now();
        let err = tcp.write(&vec![0u8; 1 << 20]).unwrap_err();
        let took = start.elapsed();
        drop(tcp);
        let got = reader.join().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(took < Duration::from_secs(5), "failed only after {took:?}");
        assert!(
            got > 8 * 1024,
            "the peer read only {got} bytes: it was not trickling"
        );
    }

    #[test]
    fn a_write_that_stalls_once_and_then_goes_out_succeeds_whole() {
        // The peer reads nothing for longer than the timeout (as if we had been stopped and
        // continued), then everything at once: the first send comes back short, the rest
        // goes out within the second timeout.
        // The peer wakes 0.3 s after the first timeout and has 1.2 s to read the rest: room
        // for a loaded machine to wake it late.
        let timeout = Duration::from_millis(1500);
        let (mut tcp, peer) = small_buffered_pair(timeout);
        let (started, running) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            started.send(()).unwrap();
            std::thread::sleep(timeout + Duration::from_millis(300));
            read_slowly(peer, Duration::ZERO, 64 * 1024).join().unwrap()
        });
        running.recv().unwrap();
        let big = vec![7u8; 1 << 20];
        assert_eq!(tcp.write(&big).unwrap(), big.len());
        drop(tcp);
        assert_eq!(reader.join().unwrap(), big.len());
    }
}
