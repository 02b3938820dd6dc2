//! Black-box tests that `wsecho serve` survives abuse: stalled and oversized request
//! heads, the connection cap, peers that never read or never speak, protocol violations sent as
//! hand-made frames, connection churn, random bytes, and running out of descriptors.
//!
//! Every test runs the real binary on a loopback port with small deadlines, so the file runs in
//! seconds; every wait is bounded. Thread, descriptor and memory figures come from /proc.

use crate::common::{KillOnDrop, Server, read_listening_port, wsecho};
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// The server process

/// `wsecho serve --quiet ARGS...` on a port of its own.
fn serve(name: &str, args: &[&str]) -> Server {
    // Threads of ended connections wait --thread-linger for the next one; keep that short
    // so thread counts come back to their baseline within the tests' deadlines.
    let args: Vec<&str> = ["--quiet", "--thread-linger", "0.2"]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    crate::common::serve(name, &args)
}

/// A numeric field of /proc/PID/status (`Threads`, `VmRSS` in KiB, ...).
fn status_field(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("bad line '{line}'"))
}

fn threads(pid: u32) -> u64 {
    status_field(pid, "Threads")
}

fn rss_kib(pid: u32) -> u64 {
    status_field(pid, "VmRSS")
}

fn fds(pid: u32) -> u64 {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/fd: {e}"))
        .count() as u64
}

/// User plus system CPU time of the process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the comm.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Threads and descriptors once the server is quiet: the same reading three times in a row.
fn settled_counts(pid: u32) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut last = (threads(pid), fds(pid));
    let mut same = 0;
    while same < 3 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
        let now = (threads(pid), fds(pid));
        if now == last {
            same += 1;
        } else {
            same = 0;
            last = now;
        }
    }
    last
}

/// Polls up to `within` for threads and descriptors to be back at `baseline` (±1; fewer
/// threads is fine too: the baseline may include threads still lingering from warm-up).
fn wait_for_baseline(server: &Server, baseline: (u64, u64), within: Duration) {
    let pid = server.pid();
    let deadline = Instant::now() + within;
    loop {
        let now = (threads(pid), fds(pid));
        if now.0 <= baseline.0 + 1 && now.1.abs_diff(baseline.1) <= 1 {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "threads/fds {now:?} not back to baseline {baseline:?} after {within:?}\n{}",
                server.log()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Raw TCP, HTTP and WebSocket frames

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A loopback connection whose reads and writes give up after 5 s.
fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr(port), Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

fn upgrade_request(port: u16) -> String {
    format!(
        "GET /echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Writes `request` and reads the answer until the server closes (bounded by `within`).
fn exchange(port: u16, request: &[u8], within: Duration) -> String {
    let mut s = connect(port);
    s.write_all(request).expect("write request");
    read_to_end_within(&mut s, within)
}

/// Everything until EOF, a reset or `within`; lossy text.
fn read_to_end_within(s: &mut TcpStream, within: Duration) -> String {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            panic!(
                "no EOF within {within:?}; got so far: {:?}",
                String::from_utf8_lossy(&out)
            );
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // A reset after the answer still leaves the answer we read.
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of an HTTP response, 0 if there is none.
fn status_of(response: &str) -> u16 {
    response
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn get_page(port: u16) -> String {
    exchange(
        port,
        format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes(),
        Duration::from_secs(5),
    )
}

/// One WebSocket frame: FIN, the three RSV bits (RSV1 = 0b100), the opcode, an optional mask.
fn frame(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | ((rsv & 7) << 4) | (opcode & 0xf)];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A complete, masked client frame.
fn client(opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(true, 0, opcode, Some(MASK), payload)
}

fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

/// A frame as the server sent it.
#[derive(Debug)]
struct Frame {
    first: u8,
    masked: bool,
    payload: Vec<u8>,
}

impl Frame {
    fn opcode(&self) -> u8 {
        self.first & 0xf
    }

    fn close_code(&self) -> Option<u16> {
        (self.opcode() == 8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// What a bounded read of one frame found.
#[derive(Debug)]
enum Event {
    Frame(Frame),
    Eof,
    TimedOut,
    Failed(ErrorKind),
}

/// An upgraded connection spoken to with hand-made frames. Nothing here answers pings.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    /// Connects and upgrades with a raw request; panics unless the answer is 101.
    fn upgrade(port: u16) -> Raw {
        let mut s = connect(port);
        s.write_all(upgrade_request(port).as_bytes())
            .expect("write upgrade request");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(Instant::now() < deadline, "no response head within 5 s");
            match s.read(&mut chunk) {
                Ok(0) => panic!(
                    "EOF before the response head: {:?}",
                    String::from_utf8_lossy(&buf)
                ),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("reading the response head: {e}"),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        assert_eq!(status_of(&head), 101, "upgrade refused:\n{head}");
        Raw {
            s,
            buf: buf[end..].to_vec(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("write frame");
    }

    /// The next frame, EOF, an error, or `TimedOut` after `within`.
    fn next(&mut self, within: Duration) -> Event {
        let deadline = Instant::now() + within;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some(frame) = self.parse() {
                return Event::Frame(frame);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Event::TimedOut;
            }
            self.s.set_read_timeout(Some(left)).unwrap();
            match self.s.read(&mut chunk) {
                Ok(0) => return Event::Eof,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Event::TimedOut;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Event::Failed(e.kind()),
            }
        }
    }

    fn parse(&mut self) -> Option<Frame> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let masked = b[1] & 0x80 != 0;
        let (len, mut at) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (
                u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        let mask = if masked {
            if b.len() < at + 4 {
                return None;
            }
            at += 4;
            Some([b[at - 4], b[at - 3], b[at - 2], b[at - 1]])
        } else {
            None
        };
        if b.len() < at + len {
            return None;
        }
        let mut payload = b[at..at + len].to_vec();
        if let Some(m) = mask {
            payload
                .iter_mut()
                .enumerate()
                .for_each(|(i, x)| *x ^= m[i % 4]);
        }
        let first = b[0];
        self.buf.drain(..at + len);
        Some(Frame {
            first,
            masked,
            payload,
        })
    }

    /// The next frame, which must arrive within `within`.
    fn frame(&mut self, within: Duration) -> Frame {
        match self.next(within) {
            Event::Frame(f) => f,
            other => panic!("expected a frame within {within:?}, got {other:?}"),
        }
    }

    /// Reads the server's Close: a final, unmasked close frame with `code`, then EOF.
    fn expect_close(&mut self, code: u16) {
        let f = self.frame(Duration::from_secs(3));
        assert_eq!(f.first, 0x88, "expected a Close frame (0x88), got {f:?}");
        assert!(!f.masked, "server frames must not be masked: {f:?}");
        assert_eq!(
            f.close_code(),
            Some(code),
            "wrong close code; reason {:?}",
            String::from_utf8_lossy(f.payload.get(2..).unwrap_or_default())
        );
        self.expect_eof(Duration::from_secs(3));
    }

    /// The server ends the TCP connection (EOF or reset) within `within`.
    fn expect_eof(&mut self, within: Duration) {
        match self.next(within) {
            Event::Eof | Event::Failed(ErrorKind::ConnectionReset) => {}
            other => panic!("expected the connection to end within {within:?}, got {other:?}"),
        }
    }

    /// Sends a text message and expects it back.
    fn echo(&mut self, text: &str) {
        self.send(&client(1, text.as_bytes()));
        let f = self.frame(Duration::from_secs(5));
        assert_eq!((f.first, f.payload.as_slice()), (0x81, text.as_bytes()));
    }

    /// The closing handshake from our side: Close 1000, the server's Close 1000, EOF.
    fn close(mut self) {
        self.send(&client(8, &close_payload(1000, "")));
        self.expect_close(1000);
    }
}

/// Sends `bytes` on a fresh upgraded connection and expects Close `code`, then EOF.
fn expect_close_code(server: &Server, bytes: &[u8], code: u16) {
    let mut raw = Raw::upgrade(server.port);
    raw.send(bytes);
    raw.expect_close(code);
}

/// A tungstenite client over a plain `TcpStream` with 5 s read and write timeouts.
fn ws_connect(port: u16) -> Result<tungstenite::WebSocket<TcpStream>, String> {
    let stream = connect(port);
    tungstenite::client(format!("ws://127.0.0.1:{port}/echo"), stream)
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

fn ws_echo(ws: &mut tungstenite::WebSocket<TcpStream>, text: &str) {
    ws.send(tungstenite::Message::text(text)).expect("send");
    loop {
        match ws.read().expect("read echo") {
            tungstenite::Message::Text(t) => {
                assert_eq!(t.as_str(), text);
                return;
            }
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => {}
            other => panic!("expected the echo of {text:?}, got {other:?}"),
        }
    }
}

/// A small xorshift64 generator: random enough for garbage, the same every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Stalled request heads

#[test]
fn stalled_request_head_is_cut_at_handshake_timeout_while_others_are_served() {
    // Bounds are seconds wide (a loaded CI box may stall this thread for a while) yet apart:
    // the page well before the 3 s timeout, the stalled heads at it, not before.
    let server = serve("stalled-head", &["--handshake-timeout", "3"]);
    // Before the stalled connections exist, so no server deadline starts earlier.
    let start = Instant::now();
    let mut stalled: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = connect(server.port);
            s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    // A normal client at the same time is served at once, not after the stalled ones.
    let page = get_page(server.port);
    let served_after = start.elapsed();
    assert_eq!(status_of(&page), 200, "page: {page}");
    assert!(
        served_after < Duration::from_secs(2),
        "the page took {served_after:?} while heads were stalled"
    );
    for s in &mut stalled {
        let answer = read_to_end_within(s, Duration::from_secs(5));
        let cut_after = start.elapsed();
        assert!(
            answer.is_empty() || status_of(&answer) == 408,
            "expected 408 or EOF, got {answer:?}"
        );
        assert!(
            cut_after >= Duration::from_millis(2900) && cut_after < Duration::from_secs(5),
            "stalled head cut after {cut_after:?}, handshake timeout is 3 s"
        );
    }
}

#[test]
fn trickled_request_head_is_cut_at_handshake_timeout() {
    let server = serve("trickled-head", &["--handshake-timeout", "1"]);
    // Before connecting, so the server's deadline cannot start earlier.
    let start = Instant::now();
    let mut s = connect(server.port);
    // One byte every 50 ms, for far longer than the deadline (about 10 s for the whole head):
    // progress does not extend it. A deadline renewed by each byte would cut only after the
    // last one, long past the bound below.
    let mut head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ".to_vec();
    head.resize(200, b'a');
    for b in head {
        if s.write_all(&[b]).is_err() {
            break;
        }
        thread::sleep(Duration::from_millis(50));
        // Stop trickling once the server has answered.
        s.set_nonblocking(true).unwrap();
        let mut probe = [0u8; 1];
        let answered =
            !matches!(s.peek(&mut probe), Err(ref e) if e.kind() == ErrorKind::WouldBlock);
        s.set_nonblocking(false).unwrap();
        if answered {
            break;
        }
    }
    let answer = read_to_end_within(&mut s, Duration::from_secs(5));
    let cut_after = start.elapsed();
    assert!(
        answer.is_empty() || status_of(&answer) == 408,
        "expected 408 or EOF, got {answer:?}"
    );
    assert!(
        cut_after >= Duration::from_millis(900) && cut_after < Duration::from_secs(4),
        "trickled head cut after {cut_after:?}, handshake timeout is 1 s"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. The connection cap

#[test]
fn connections_over_max_conns_get_503_with_retry_after_and_capacity_returns() {
    let server = serve("cap", &["--max-conns", "4"]);
    let port = server.port;
    // The start-up probe may hold a slot for a moment: retry a refused connection briefly.
    let connect_within = |within: Duration| {
        let deadline = Instant::now() + within;
        loop {
            match ws_connect(port) {
                Ok(ws) => return ws,
                Err(e) if Instant::now() > deadline => panic!("cannot upgrade: {e}"),
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        }
    };
    let mut held: Vec<_> = (0..4)
        .map(|_| connect_within(Duration::from_secs(5)))
        .collect();

    let answer = exchange(
        port,
        upgrade_request(port).as_bytes(),
        Duration::from_secs(3),
    );
    assert_eq!(status_of(&answer), 503, "fifth connection: {answer:?}");
    assert!(
        answer.to_ascii_lowercase().contains("\r\nretry-after:"),
        "503 without Retry-After: {answer:?}"
    );

    for (i, ws) in held.iter_mut().enumerate() {
        ws_echo(ws, &format!("held {i}"));
    }

    let mut first = held.remove(0);
    first.close(None).expect("close");
    loop {
        match first.read() {
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("closing: {e}"),
        }
    }
    let mut again = connect_within(Duration::from_secs(5));
    ws_echo(&mut again, "capacity is back");
    for (i, ws) in held.iter_mut().enumerate() {
        ws_echo(ws, &format!("still held {i}"));
    }
}

/// A client turned away while it is still sending its request body (an upload, say) gets
/// the whole 503: the server reads what it sends for a while before closing, instead of
/// closing over unread bytes, which resets the connection and fails the client's write
/// before it ever reads the answer. And the server does let go of the socket afterwards.
#[test]
fn a_client_turned_away_while_sending_its_body_gets_the_whole_503_and_is_let_go() {
    let server = serve("cap-body", &["--max-conns", "1"]);
    let port = server.port;
    // The start-up probe may hold the slot for a moment: retry a refused connection briefly.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut held = loop {
        match ws_connect(port) {
            Ok(ws) => break ws,
            Err(e) if Instant::now() > deadline => panic!("cannot upgrade: {e}"),
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    };
    ws_echo(&mut held, "holding the only slot");

    // Far more than the socket buffers hold, so most of it is sent after the 503.
    let body = vec![b'x'; 4 << 20];
    let mut s = connect(port);
    let head = format!(
        "POST /echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("write head");
    s.write_all(&body)
        .expect("the server cut the connection while the client was sending its body");
    let answer = read_to_end_within(&mut s, Duration::from_secs(10));
    assert_eq!(
        answer,
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 45\r\nConnection: close\r\n\r\n\
wsecho is at its connection limit; try again\n"
    );
    // The server lets go of the socket once its time to drain is up (a second): a client
    // that goes on sending is then reset.
    let chunk = [b'x'; 64 * 1024];
    let start = Instant::now();
    let ended = loop {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the server still holds the turned-away socket after 20 s"
        );
        match s.write(&chunk) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            ended.kind(),
            ErrorKind::BrokenPipe | ErrorKind::ConnectionReset
        ),
        "{ended}"
    );
    ws_echo(&mut held, "the slot is still held");
}

// ---------------------------------------------------------------------------------------------
// 3. A peer that never reads

#[test]
fn peer_that_never_reads_is_dropped_after_write_timeout_with_bounded_memory() {
    let mut server = serve(
        "never-reads",
        &[
            "--write-timeout",
            "0.5",
            "--max-message",
            "2M",
            "--ping-interval",
            "5",
            "--idle-timeout",
            "10",
        ],
    );
    let pid = server.pid();
    let baseline = settled_counts(pid);
    let rss_before = rss_kib(pid);
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status"))
                    && let Some(kib) = status
                        .lines()
                        .find(|l| l.starts_with("VmRSS:"))
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|v| v.parse::<u64>().ok())
                {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(5));
            }
        })
    };

    let mut raw = Raw::upgrade(server.port);
    raw.s
        .set_write_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let message = client(2, &vec![0x5a; 1 << 20]);
    let start = Instant::now();
    let mut first_stall: Option<Instant> = None;
    let (mut offset, mut sent) = (0, 0u64);
    let ended = loop {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "still writing after 20 s ({sent} messages sent): the server never dropped us"
        );
        match raw.s.write(&message[offset..]) {
            Ok(n) => {
                offset += n;
                if offset == message.len() {
                    offset = 0;
                    sent += 1;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                first_stall.get_or_insert_with(Instant::now);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => break e,
        }
    };
    let dropped_after = start.elapsed();
    let stalled_for = first_stall.map(|t| t.elapsed());
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak_kib = peak.load(Ordering::Relaxed);
    // The server's own account of why it dropped us (the log is flushed within 50 ms).
    let deadline = Instant::now() + Duration::from_secs(5);
    let why = loop {
        let log = server.log_text();
        if let Some(line) = log.lines().find(|l| l.starts_with("close ")) {
            break line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no close line:\n{}",
            server.log()
        );
        thread::sleep(Duration::from_millis(20));
    };
    eprintln!(
        "never-reads: {sent} MiB sent, dropped after {dropped_after:?} ({ended}), \
         {stalled_for:?} after our first stalled write; RSS {rss_before} KiB before, \
         peak {peak_kib} KiB; server: {why}"
    );
    assert!(
        why.contains("timed out"),
        "dropped for another reason: {why}"
    );
    assert!(
        matches!(
            ended.kind(),
            ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
        ),
        "unexpected write error: {ended}"
    );
    if let Some(stalled) = stalled_for {
        assert!(
            stalled < Duration::from_secs(3),
            "dropped {stalled:?} after our writes stalled; write timeout is 0.5 s"
        );
    }
    assert!(
        peak_kib < 64 * 1024,
        "server RSS peaked at {peak_kib} KiB (before: {rss_before} KiB)"
    );
    assert!(server.exited().is_none(), "server died:\n{}", server.log());
    wait_for_baseline(&server, baseline, Duration::from_secs(5));
    assert_eq!(status_of(&get_page(server.port)), 200);
}

/// A peer that reads, but only a trickle, is dropped like one that stopped reading, and the
/// server carries on. (On loopback the kernel's large send buffer wakes a blocked writer only
/// after a big drain, so here the write usually times out with no progress at all; the unit
/// tests in `src/link/deadline.rs`, with a small send buffer, pin that steady progress does not help.)
#[test]
fn trickling_reader_is_dropped_when_a_write_outlasts_the_write_timeout() {
    let mut server = serve(
        "trickle",
        &[
            "--write-timeout",
            "0.5",
            "--max-message",
            "32M",
            "--ping-interval",
            "5",
            "--idle-timeout",
            "10",
        ],
    );
    let mut raw = Raw::upgrade(server.port);
    // 16 MiB back is more than the kernel's buffers on both sides hold (4 MiB of send buffer
    // at most here), so the server's writes must wait for us.
    raw.s
        .set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    raw.send(&client(2, &vec![0x5a; 16 << 20]));
    // 1 KiB every 20 ms, about 50 KB/s: a 64 KiB write takes over a second to drain. What the
    // kernel already buffered for us takes minutes to read at this pace, so the server's log,
    // not our EOF, says when it let go.
    let start = Instant::now();
    let mut got = 0usize;
    let mut chunk = [0u8; 1024];
    let why = loop {
        if let Some(line) = server.log_text().lines().find(|l| l.starts_with("close ")) {
            break line.to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "still connected after 15 s of trickling ({got} bytes read): a trickle holds the connection"
        );
        for _ in 0..5 {
            match raw.s.read(&mut chunk) {
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("reading the echo: {e}"),
            }
            thread::sleep(Duration::from_millis(20));
        }
    };
    eprintln!(
        "trickle: dropped after {:?} and {got} bytes read; server: {why}",
        start.elapsed()
    );
    assert!(
        why.contains("timed out"),
        "dropped for another reason: {why}"
    );
    assert!(server.exited().is_none(), "server died:\n{}", server.log());
}

// ---------------------------------------------------------------------------------------------
// 4. Keepalive

const KEEPALIVE: [&str; 4] = ["--ping-interval", "0.2", "--idle-timeout", "0.5"];

#[test]
fn silent_peer_is_pinged_then_closed_with_1001_at_idle_timeout() {
    let server = serve("silent", &KEEPALIVE);
    // The server's timers start when it sends the 101: lower bounds count from before our
    // request (nothing can come earlier), upper bounds from after we read the 101 (nothing
    // due can come later), so a stall of this thread in between cannot fail either.
    let requested = Instant::now();
    let mut raw = Raw::upgrade(server.port);
    let upgraded = Instant::now();
    let ping = raw.frame(Duration::from_secs(3));
    let (pinged_after, pinged_within) = (requested.elapsed(), upgraded.elapsed());
    assert_eq!(ping.first, 0x89, "expected a Ping first, got {ping:?}");
    assert!(
        pinged_after >= Duration::from_millis(150) && pinged_within < Duration::from_secs(2),
        "pinged {pinged_after:?} after the request, {pinged_within:?} after the 101; \
         ping interval is 0.2 s"
    );
    let close = raw.frame(Duration::from_secs(3));
    let (closed_after, closed_within) = (requested.elapsed(), upgraded.elapsed());
    assert_eq!(close.first, 0x88, "expected a Close, got {close:?}");
    assert_eq!(close.close_code(), Some(1001), "{close:?}");
    assert!(
        closed_after >= Duration::from_millis(450) && closed_within < Duration::from_secs(3),
        "closed {closed_after:?} after the request, {closed_within:?} after the 101; \
         idle timeout is 0.5 s"
    );
    raw.expect_eof(Duration::from_secs(2));
}

/// Here the server waits a whole second for each pong, not 0.3 s as with `KEEPALIVE`: a
/// stall of this thread must not pass for a peer that stopped answering.
#[test]
fn peer_that_answers_pings_stays_open_past_idle_timeout() {
    let server = serve(
        "answers-pings",
        &["--ping-interval", "0.4", "--idle-timeout", "2.4"],
    );
    let mut raw = Raw::upgrade(server.port);
    // Twice the idle timeout: a peer that did not answer would be closed within it. A pong
    // may come up to 2 s after its ping: room for a loaded machine to stall this thread.
    let until = Instant::now() + Duration::from_millis(5000);
    let mut pings = 0;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match raw.next(left) {
            Event::Frame(f) if f.first == 0x89 => {
                pings += 1;
                raw.send(&client(0xA, &f.payload));
            }
            Event::TimedOut => break,
            other => panic!("after {pings} pings answered, got {other:?}"),
        }
    }
    assert!(
        pings >= 2,
        "only {pings} pings in 5 s with a 0.4 s interval"
    );
    raw.echo("still here");
    raw.close();
}

// ---------------------------------------------------------------------------------------------
// 5. Close codes for broken rules

const SMALL: [&str; 2] = ["--max-message", "1K"];

#[test]
fn message_over_max_message_gets_1009() {
    let server = serve("too-big", &SMALL);
    expect_close_code(&server, &client(2, &[7; 1025]), 1009);
}

#[test]
fn fragmented_message_over_max_message_gets_1009() {
    let server = serve("too-big-fragments", &SMALL);
    let mut bytes = frame(false, 0, 2, Some(MASK), &[7; 600]);
    bytes.extend(frame(true, 0, 0, Some(MASK), &[7; 600]));
    expect_close_code(&server, &bytes, 1009);
}

#[test]
fn message_of_exactly_max_message_is_echoed() {
    let server = serve("exactly-max", &SMALL);
    let mut raw = Raw::upgrade(server.port);
    raw.send(&client(2, &[7; 1024]));
    let f = raw.frame(Duration::from_secs(3));
    assert_eq!((f.first, f.payload.len()), (0x82, 1024), "{:?}", f.first);
    raw.close();
}

#[test]
fn invalid_utf8_text_gets_1007() {
    let server = serve("bad-utf8", &[]);
    expect_close_code(&server, &client(1, &[0xC3, 0x28]), 1007);
}

#[test]
fn unmasked_client_frame_gets_1002() {
    let server = serve("unmasked", &[]);
    expect_close_code(&server, &frame(true, 0, 1, None, b"hello"), 1002);
}

#[test]
fn reserved_bit_rsv1_gets_1002() {
    let server = serve("rsv1", &[]);
    expect_close_code(&server, &frame(true, 0b100, 1, Some(MASK), b"hello"), 1002);
}

#[test]
fn reserved_opcodes_get_1002() {
    let server = serve("reserved-opcode", &[]);
    expect_close_code(&server, &client(0x3, b"hello"), 1002);
    expect_close_code(&server, &client(0xB, b""), 1002);
}

#[test]
fn fragmented_control_frame_gets_1002() {
    let server = serve("fragmented-ping", &[]);
    expect_close_code(&server, &frame(false, 0, 0x9, Some(MASK), b"p"), 1002);
}

#[test]
fn close_1000_is_answered_with_close_1000() {
    let server = serve("close-1000", &[]);
    let mut raw = Raw::upgrade(server.port);
    raw.echo("before closing");
    raw.send(&client(8, &close_payload(1000, "bye")));
    raw.expect_close(1000);
}

// ---------------------------------------------------------------------------------------------
// 6. Churn

#[test]
fn thousands_of_connections_leave_threads_and_fds_at_baseline() {
    const THREADS: usize = 4;
    const CYCLES: usize = 500;
    let mut server = serve("churn", &["--handshake-timeout", "2"]);
    let (port, pid) = (server.port, server.pid());
    // Warm up (the log flusher, the rejecter) before taking the baseline.
    Raw::upgrade(port).close();
    assert_eq!(status_of(&get_page(port)), 200);
    let baseline = settled_counts(pid);
    let start = Instant::now();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            thread::spawn(move || {
                for i in 0..CYCLES {
                    let mut raw = Raw::upgrade(port);
                    raw.echo(&format!("worker {t} cycle {i}"));
                    raw.close();
                    match i % 20 {
                        // A plain page GET.
                        5 => assert_eq!(status_of(&get_page(port)), 200),
                        // Gone in the middle of the request head.
                        10 => {
                            let mut s = connect(port);
                            let _ = s.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpg");
                        }
                        // Gone right after a complete upgrade request, 101 unread.
                        15 => {
                            let mut s = connect(port);
                            let _ = s.write_all(upgrade_request(port).as_bytes());
                        }
                        // Connected, said nothing, gone.
                        19 => drop(connect(port)),
                        _ => {}
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a churn worker failed");
    }
    let took = start.elapsed();
    let peak_after = (threads(pid), fds(pid));
    wait_for_baseline(&server, baseline, Duration::from_secs(5));
    eprintln!(
        "churn: {} echo cycles in {took:?}; baseline threads/fds {baseline:?}, right after \
         {peak_after:?}, RSS {} KiB",
        THREADS * CYCLES,
        rss_kib(pid)
    );
    assert!(server.exited().is_none(), "server died:\n{}", server.log());
    server.assert_no_panic();
}

// ---------------------------------------------------------------------------------------------
// 7. Garbage

#[test]
fn random_bytes_never_kill_the_server() {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 75;
    let mut server = serve(
        "garbage",
        &[
            "--handshake-timeout",
            "0.5",
            "--ping-interval",
            "0.2",
            "--idle-timeout",
            "0.5",
        ],
    );
    let (port, pid) = (server.port, server.pid());
    Raw::upgrade(port).close();
    let baseline = settled_counts(pid);
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            thread::spawn(move || {
                let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (t + 1).wrapping_mul(0xD1B5));
                for _ in 0..PER_THREAD {
                    let len = rng.below(8 * 1024 + 1) as usize;
                    let kind = rng.below(4);
                    let mut s = match kind {
                        // Random bytes instead of a request.
                        0 => {
                            let mut s = connect(port);
                            let _ = s.write_all(&rng.bytes(len));
                            s
                        }
                        // A plausible request line, then garbage.
                        1 => {
                            let mut s = connect(port);
                            let mut bytes = b"GET /echo HTTP/1.1\r\n".to_vec();
                            bytes.extend(rng.bytes(len));
                            let _ = s.write_all(&bytes);
                            s
                        }
                        // Random bytes after a valid upgrade.
                        2 => {
                            let mut raw = Raw::upgrade(port);
                            let _ = raw.s.write_all(&rng.bytes(len));
                            raw.s
                        }
                        // Well-formed frame headers with random opcodes, bits and payloads.
                        _ => {
                            let mut raw = Raw::upgrade(port);
                            let mut bytes = Vec::new();
                            while bytes.len() < len {
                                let n = rng.below(300) as usize;
                                let first = rng.next();
                                let rsv = if first & 0x70 == 0 {
                                    (first >> 8) as u8
                                } else {
                                    0
                                };
                                let opcode = [0u8, 1, 2, 8, 9, 10][rng.below(6) as usize];
                                bytes.extend(frame(
                                    first & 1 == 0,
                                    rsv,
                                    opcode,
                                    Some(MASK),
                                    &rng.bytes(n),
                                ));
                            }
                            let _ = raw.s.write_all(&bytes);
                            raw.s
                        }
                    };
                    if rng.below(2) == 0 {
                        // Half close and read whatever comes until the server ends it.
                        let _ = s.shutdown(Shutdown::Write);
                        let _ = read_to_end_within(&mut s, Duration::from_secs(3));
                    }
                    // Otherwise just vanish (often a reset, with unread data on either side).
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a garbage worker failed");
    }
    assert!(server.exited().is_none(), "server died:\n{}", server.log());
    assert_eq!(status_of(&get_page(port)), 200);
    let mut ws = ws_connect(port).expect("upgrade after the garbage");
    ws_echo(&mut ws, "still echoing");
    drop(ws);
    wait_for_baseline(&server, baseline, Duration::from_secs(5));
    server.assert_no_panic();
}

#[test]
fn request_head_of_20_kib_gets_431() {
    let server = serve("big-head", &[]);
    let mut request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 20 * 1024));
    request.extend_from_slice(b"\r\n\r\n");
    let answer = exchange(server.port, &request, Duration::from_secs(5));
    assert_eq!(status_of(&answer), 431, "{answer:?}");
}

#[test]
fn request_with_100_header_lines_gets_431() {
    let server = serve("many-headers", &[]);
    let mut request = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..100 {
        request.push_str(&format!("X-H{i}: v\r\n"));
    }
    request.push_str("\r\n");
    let answer = exchange(server.port, request.as_bytes(), Duration::from_secs(5));
    assert_eq!(status_of(&answer), 431, "{answer:?}");
}

// ---------------------------------------------------------------------------------------------
// 8. Out of descriptors

#[test]
fn out_of_descriptors_backs_off_and_recovers() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        crate::common::prerequisite_missing("prlimit (Debian package util-linux)");
        return;
    }
    let mut cmd = Command::new("prlimit");
    cmd.args([
        "--nofile=32:32",
        wsecho(),
        "serve",
        "--quiet",
        "--thread-linger",
        "0.2",
    ])
    .args(["--addr", "127.0.0.1:0"])
    .args(["--max-conns", "100", "--handshake-timeout", "10"]);
    let mut server = Server::launch("no-fds", cmd);
    let (port, pid) = (server.port, server.pid());
    let held: Vec<TcpStream> = (0..60).map(|_| connect(port)).collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.log_text().contains("accept failed") {
        assert!(
            Instant::now() < deadline,
            "no accept failure logged with 60 connections and 32 descriptors (fds {}):\n{}",
            fds(pid),
            server.log()
        );
        thread::sleep(Duration::from_millis(20));
    }
    // Backing off, not spinning: little CPU while the descriptors stay used up.
    let ticks = cpu_ticks(pid);
    thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(pid) - ticks;
    assert!(
        spent < 30,
        "{spent} clock ticks of CPU in 1 s out of descriptors"
    );
    assert!(
        server.exited().is_none(),
        "server exited:\n{}",
        server.log()
    );
    let at_limit = fds(pid);
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = connect(port);
        let request = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
        let answer = match s.write_all(request.as_bytes()) {
            Ok(()) => read_to_end_within(&mut s, Duration::from_secs(3)),
            Err(_) => String::new(),
        };
        if status_of(&answer) == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not serving 5 s after the descriptors were freed: {answer:?}\n{}",
            server.log()
        );
        thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "no-fds: {at_limit} descriptors at the limit, {spent} ticks of CPU in 1 s backing off"
    );
    assert!(
        server.exited().is_none(),
        "server exited:\n{}",
        server.log()
    );
}

#[test]
fn connection_gives_back_the_memory_of_a_16_mib_echo_once_quiet() {
    let server = serve("big-then-quiet", &[]);
    let pid = server.pid();
    let mut ws = ws_connect(server.port).expect("upgrade");
    ws_echo(&mut ws, "warm up");
    thread::sleep(Duration::from_millis(300));
    let before = rss_kib(pid);
    let big: Vec<u8> = (0..16 << 20).map(|i| (i % 251) as u8).collect();
    ws.send(tungstenite::Message::binary(big.clone()))
        .expect("send 16 MiB");
    match ws.read().expect("read the 16 MiB echo") {
        tungstenite::Message::Binary(echo) => assert!(echo == big, "echo differs"),
        other => panic!("expected the binary echo, got {other:?}"),
    }
    // The connection stays open and idle; a second after the message it gives its buffers
    // back. Before, it kept about 33 MiB for good.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = rss_kib(pid);
        if now < before + 2048 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "RSS still {now} KiB, {} KiB over the {before} KiB before the 16 MiB echo",
            now - before
        );
        thread::sleep(Duration::from_millis(100));
    }
    ws_echo(&mut ws, "still works after the buffers were renewed");
}

#[test]
fn frames_sent_right_behind_the_upgrade_request_are_echoed_at_once() {
    let server = serve("pipelined", &[]);
    let mut s = connect(server.port);
    let mut bytes = upgrade_request(server.port).into_bytes();
    bytes.extend(client(0x1, b"hello"));
    s.write_all(&bytes).expect("write request and frame");
    // The 101, then the echo, with nothing more sent: the bytes behind the request must not
    // wait for a next read.
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(3);
    let echo = [0x81, 5, b'h', b'e', b'l', b'l', b'o'];
    while !got.windows(echo.len()).any(|w| w == echo) {
        assert!(
            Instant::now() < deadline,
            "no echo within 3 s; got {:?}",
            String::from_utf8_lossy(&got)
        );
        match s.read(&mut chunk) {
            Ok(0) => panic!(
                "closed before the echo: {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("read: {e}; got {:?}", String::from_utf8_lossy(&got)),
        }
    }
    assert!(
        got.starts_with(b"HTTP/1.1 101"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}

#[test]
fn idle_timeout_not_longer_than_ping_interval_is_a_usage_error() {
    let done = crate::common::run(
        "wsecho serve",
        Command::new(wsecho()).args(["serve", "--ping-interval", "2", "--idle-timeout", "1"]),
        None,
        Duration::from_secs(5),
    );
    assert_eq!(done.status.code(), Some(2), "{}", done.describe());
    assert!(
        done.stderr.contains("--idle-timeout"),
        "{}",
        done.describe()
    );
}

#[test]
fn a_stderr_nobody_reads_neither_stalls_echoes_nor_shutdown() {
    // Not --quiet: every message logs a line, into a pipe this test reads only up to the
    // `listening on` line that says which port the kernel gave the server.
    let mut child = KillOnDrop::spawn(
        "wsecho serve",
        Command::new(wsecho())
            .args(["serve", "--addr", "127.0.0.1:0", "--grace", "0.5"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let mut stderr = child.stderr.take().expect("stderr pipe");
    let port = read_listening_port(&mut stderr, Duration::from_secs(20));
    let mut ws = ws_connect(port).expect("upgrade");
    let text = "x".repeat(500);
    for _ in 0..1000 {
        ws_echo(&mut ws, &text); // ~500 KiB of log lines: far over a pipe's 64 KiB
    }
    drop(ws);
    child.sigint();
    let stopped = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(4),
            "still running 4 s after SIGINT"
        );
        thread::sleep(Duration::from_millis(20));
    }
    drop(stderr);
}
