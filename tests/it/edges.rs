//! The edges of HTTP and WebSocket, black box: the real binary against raw-socket peers that
//! send exact bytes (a slow 101, a `Connection` token list, a `100 Continue`, a forged close
//! reason, a request with two `Host` headers, a Close with data behind it). Every wait has a
//! deadline, and every process and peer thread dies with its test.

use crate::common::{Finished, KillOnDrop, Server, run, wsecho};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};
use tungstenite::handshake::derive_accept_key;

/// Backstop for one dial run; the tests' own bounds are tighter where timing matters.
const LIMIT: Duration = Duration::from_secs(15);
/// How long an in-test peer waits for a connection or a read.
const PEER_LIMIT: Duration = Duration::from_secs(10);

fn dial(args: &[&str]) -> Command {
    let mut cmd = Command::new(wsecho());
    cmd.arg("dial").args(args);
    cmd
}

fn run_dial(args: &[&str]) -> Finished {
    let done = run("wsecho dial", &mut dial(args), None, LIMIT);
    assert!(
        !done.stderr.contains("panicked"),
        "wsecho panicked: {}",
        done.describe()
    );
    done
}

fn assert_exit(done: &Finished, code: i32) {
    assert_eq!(
        done.status.code(),
        Some(code),
        "expected exit {code}: {}",
        done.describe()
    );
}

// ---- raw peers for dial -----------------------------------------------------------------

/// An unmasked server frame (payload under 126 bytes).
fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut frame = vec![0x80 | opcode, payload.len() as u8];
    frame.extend_from_slice(payload);
    frame
}

fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    server_frame(0x8, &payload)
}

/// The client's request head, read a byte at a time so nothing behind it is consumed.
fn read_request_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

fn header_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// What a raw dial peer does once it has the request: `answer` gets the request head and
/// the accept key and writes whatever it likes, then the peer reads until the connection
/// ends (or holds it without reading, if `answer` says so by returning false).
fn raw_peer(
    answer: impl FnOnce(&mut TcpStream, &str, &str) -> bool + Send + 'static,
) -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("local_addr").port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        listener.set_nonblocking(true).expect("nonblocking");
        let deadline = Instant::now() + PEER_LIMIT;
        let mut stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("peer: no connection: {e}"),
            }
        };
        stream.set_nonblocking(false).expect("blocking");
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(PEER_LIMIT))
            .expect("read timeout");
        let Some(head) = read_request_head(&mut stream) else {
            return;
        };
        let key = header_value(&head, "sec-websocket-key").unwrap_or("");
        let accept = derive_accept_key(key.as_bytes());
        let _ = tx.send(head.clone());
        if answer(&mut stream, &head, &accept) {
            let mut sink = [0u8; 4096];
            while matches!(stream.read(&mut sink), Ok(1..)) {}
        } else {
            thread::sleep(PEER_LIMIT + LIMIT);
        }
    });
    (port, rx)
}

fn url(port: u16) -> String {
    format!("ws://127.0.0.1:{port}/echo")
}

/// A 101 with `extra` header lines (each ending in CRLF) besides `Upgrade` and the key.
fn response_101(accept: &str, connection: &str, extra: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: {connection}\r\n\
Sec-WebSocket-Accept: {accept}\r\n{extra}\r\n"
    )
}

/// A peer that answers with `head_before` (interim responses, say) and then the 101 built by
/// `response`, then a text frame `hello` and Close 1000, all in one write; dial should print
/// `recv: hello` and exit 0.
fn dial_against(response: impl FnOnce(&str) -> String + Send + 'static) -> Finished {
    let (port, _) = raw_peer(move |stream, _, accept| {
        let mut bytes = response(accept).into_bytes();
        bytes.extend(server_frame(0x1, b"hello"));
        bytes.extend(close_frame(1000, ""));
        let _ = stream.write_all(&bytes);
        true
    });
    run_dial(&[&url(port), "--connect-timeout", "10"])
}

fn assert_hello_then_1000(done: &Finished) {
    assert_exit(done, 0);
    assert_eq!(done.stdout, "recv: hello\n", "{}", done.describe());
    assert!(
        done.stderr.contains("server closed the connection: 1000"),
        "{}",
        done.describe()
    );
}

// ---- dial: what it prints of the server's text --------------------------------------------

/// The lines dial wrote to stderr, besides its own `connecting to` first line.
fn stderr_after_connecting(done: &Finished) -> Vec<&str> {
    done.stderr.lines().skip(1).collect()
}

#[test]
fn a_close_reason_cannot_forge_a_line_or_reach_the_terminal() {
    let reason = "first\nwsecho: forged second line\x1b[2J\x1b[31m\r";
    let (port, _) = raw_peer(move |stream, _, accept| {
        let mut bytes = response_101(accept, "Upgrade", "").into_bytes();
        bytes.extend(close_frame(4000, reason));
        let _ = stream.write_all(&bytes);
        true
    });
    let done = run_dial(&[&url(port)]);
    assert_exit(&done, 1);
    let lines = stderr_after_connecting(&done);
    assert_eq!(
        lines,
        [
            r"wsecho: server closed the connection: 4000 (first\nwsecho: forged second line\u{1b}[2J\u{1b}[31m\r)"
        ],
        "{}",
        done.describe()
    );
}

#[test]
fn a_normal_close_reason_cannot_forge_a_connecting_line() {
    let (port, _) = raw_peer(move |stream, _, accept| {
        let mut bytes = response_101(accept, "Upgrade", "").into_bytes();
        bytes.extend(close_frame(1000, "bye\nconnecting to ws://forged/"));
        let _ = stream.write_all(&bytes);
        true
    });
    let done = run_dial(&[&url(port)]);
    assert_exit(&done, 0);
    assert_eq!(
        stderr_after_connecting(&done),
        [r"server closed the connection: 1000 (bye\nconnecting to ws://forged/)"],
        "{}",
        done.describe()
    );
}

#[test]
fn recv_lines_escape_control_characters_from_the_server() {
    let (port, _) = raw_peer(move |stream, _, accept| {
        let mut bytes = response_101(accept, "Upgrade", "").into_bytes();
        bytes.extend(server_frame(
            0x1,
            "a\x1b[31mb\nrecv: forged\u{9b}".as_bytes(),
        ));
        bytes.extend(close_frame(1000, ""));
        let _ = stream.write_all(&bytes);
        true
    });
    let done = run_dial(&[&url(port)]);
    assert_exit(&done, 0);
    assert_eq!(
        done.stdout,
        "recv: a\\u{1b}[31mb\\nrecv: forged\\u{9b}\n",
        "{}",
        done.describe()
    );
}

#[test]
fn stdin_mode_into_a_pipe_passes_the_servers_bytes_on_exactly() {
    let text = "a\x1b[31mb\rc\u{9b}";
    let (port, _) = raw_peer(move |stream, _, accept| {
        let mut bytes = response_101(accept, "Upgrade", "").into_bytes();
        bytes.extend(server_frame(0x1, text.as_bytes()));
        bytes.extend(close_frame(1000, ""));
        let _ = stream.write_all(&bytes);
        true
    });
    let mut cmd = dial(&[&url(port), "--stdin"]);
    // stdin stays open (no end of input), so it is the server's Close that ends dial.
    let done = run("wsecho dial --stdin", &mut cmd, Some(Vec::new()), LIMIT);
    assert_eq!(done.stdout, format!("{text}\n"), "{}", done.describe());
}

#[test]
fn an_extension_the_server_names_unasked_fails_the_handshake() {
    let (port, _) = raw_peer(move |stream, _, accept| {
        let head = response_101(
            accept,
            "Upgrade",
            "Sec-WebSocket-Extensions: permessage-deflate\r\n",
        );
        let _ = stream.write_all(head.as_bytes());
        true
    });
    let done = run_dial(&[&url(port)]);
    assert_exit(&done, 1);
    assert!(
        done.stderr.contains("extension 'permessage-deflate'") && done.stdout.is_empty(),
        "{}",
        done.describe()
    );
}

// ---- dial: how the 101 may arrive ---------------------------------------------------------

#[test]
fn a_101_sent_one_byte_per_write_5_ms_apart_is_accepted() {
    let (port, _) = raw_peer(move |stream, _, accept| {
        for b in response_101(accept, "Upgrade", "").bytes() {
            if stream.write_all(&[b]).is_err() {
                return true;
            }
            thread::sleep(Duration::from_millis(5));
        }
        let mut frames = server_frame(0x1, b"hello");
        frames.extend(close_frame(1000, ""));
        let _ = stream.write_all(&frames);
        true
    });
    let done = run_dial(&[&url(port), "--connect-timeout", "10"]);
    assert_hello_then_1000(&done);
}

#[test]
fn connection_keep_alive_upgrade_is_a_token_list_that_holds_upgrade() {
    let done = dial_against(|accept| response_101(accept, "keep-alive, Upgrade", ""));
    assert_hello_then_1000(&done);
}

#[test]
fn connection_split_over_two_lines_is_one_list() {
    let done = dial_against(|accept| response_101(accept, "keep-alive", "Connection: upgrade\r\n"));
    assert_hello_then_1000(&done);
}

#[test]
fn a_100_continue_before_the_101_is_skipped() {
    let done = dial_against(|accept| {
        format!(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n{}",
            response_101(accept, "Upgrade", "")
        )
    });
    assert_hello_then_1000(&done);
}

// ---- dial: Ctrl-C against a write that cannot finish --------------------------------------

/// dial `--stdin` fed endless 64 KiB lines, against a peer that upgrades and then never
/// reads; once dial has stopped taking input (its write is blocked), SIGINT comes as Ctrl-C
/// sends it, to the process. dial must exit 0 within about a second (3 s here, for a loaded
/// machine), not after its write timeout (30 s) and not with the write failed (exit 1).
/// Every thread of dial blocks the signal but the one that waits for it, so the kernel has no
/// other thread to hand it to (a signal aimed at one thread with tgkill would wait for ever:
/// nothing sends those).
fn sigint_during_a_blocked_write() {
    let (port, _) = raw_peer(|stream, _, accept| {
        let _ = stream.write_all(response_101(accept, "Upgrade", "").as_bytes());
        false
    });
    let mut dial = KillOnDrop::spawn(
        "dial",
        dial(&[&url(port), "--stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let child = &mut dial.0;
    let mut stdin = child.stdin.take().expect("stdin");
    let fed = Arc::new(AtomicUsize::new(0));
    let feeding = fed.clone();
    thread::spawn(move || {
        let line = [b'x'; 64 * 1024 - 1];
        while stdin.write_all(&line).is_ok() && stdin.write_all(b"\n").is_ok() {
            feeding.fetch_add(1, Ordering::SeqCst);
        }
    });
    // dial is blocked once it has taken no line for half a second.
    let deadline = Instant::now() + LIMIT;
    let mut last = (usize::MAX, Instant::now());
    loop {
        let now = fed.load(Ordering::SeqCst);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_millis(500) && now > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "dial never stopped taking input");
        thread::sleep(Duration::from_millis(20));
    }
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill on our own child, which is not reaped yet.
    let rc = unsafe { libc::kill(pid, libc::SIGINT) };
    assert_eq!(rc, 0, "kill: {}", io::Error::last_os_error());
    let signalled = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if signalled.elapsed() > Duration::from_secs(3) {
            panic!("dial still running 3 s after SIGINT");
        }
        thread::sleep(Duration::from_millis(5));
    };
    let mut stderr = String::new();
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr);
    assert_eq!(status.code(), Some(0), "{status}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn sigint_wins_over_a_blocked_write() {
    sigint_during_a_blocked_write();
}

// ---- serve: request heads ---------------------------------------------------------------

fn serve() -> Server {
    crate::common::serve("edges-serve", &[])
}

/// Sends `request` and returns the status line of the answer.
fn status_of(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(PEER_LIMIT)).expect("read timeout");
    s.write_all(request.as_bytes()).expect("write request");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(2).any(|w| w == b"\r\n") {
        match s.read(&mut buf) {
            Ok(n @ 1..) => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    text.lines().next().unwrap_or("").to_string()
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// An upgrade for `target` with `headers` (each line ending in CRLF) and the key and version.
fn upgrade(target: &str, headers: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\n{headers}Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

#[test]
fn request_heads_at_the_edges_get_the_statuses_rfc_7230_asks_for() {
    let server = serve();
    let port = server.port;
    let host = format!("Host: 127.0.0.1:{port}\r\n");
    let both = "Upgrade: websocket\r\nConnection: Upgrade\r\n";
    for (what, request, status) in [
        (
            "no Host",
            upgrade("/echo", both),
            "HTTP/1.1 400 Bad Request",
        ),
        (
            "two Host headers",
            upgrade("/echo", &format!("{host}Host: evil\r\n{both}")),
            "HTTP/1.1 400 Bad Request",
        ),
        (
            "absolute-form target",
            upgrade(
                &format!("http://127.0.0.1:{port}/echo"),
                &format!("{host}{both}"),
            ),
            "HTTP/1.1 101 Switching Protocols",
        ),
        (
            "absolute-form target naming another host than Host",
            upgrade("http://evil/echo", &format!("{host}{both}")),
            "HTTP/1.1 400 Bad Request",
        ),
        (
            "Connection over two lines",
            upgrade(
                "/echo",
                &format!(
                    "{host}Upgrade: websocket\r\nConnection: keep-alive\r\nConnection: Upgrade\r\n"
                ),
            ),
            "HTTP/1.1 101 Switching Protocols",
        ),
        (
            "Upgrade over two lines",
            upgrade(
                "/echo",
                &format!("{host}Upgrade: h2c\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"),
            ),
            "HTTP/1.1 101 Switching Protocols",
        ),
        (
            "Upgrade: websocket, h2c",
            upgrade(
                "/echo",
                &format!("{host}Upgrade: websocket, h2c\r\nConnection: Upgrade\r\n"),
            ),
            "HTTP/1.1 101 Switching Protocols",
        ),
        (
            "Upgrade without websocket",
            upgrade(
                "/echo",
                &format!("{host}Upgrade: h2c\r\nConnection: Upgrade\r\n"),
            ),
            "HTTP/1.1 426 Upgrade Required",
        ),
    ] {
        assert_eq!(
            status_of(port, &request),
            status,
            "{what}: {request:?}\n{}",
            server.log()
        );
    }
}

#[test]
fn an_absolute_form_page_request_is_served() {
    let server = serve();
    let port = server.port;
    let request =
        format!("GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    assert_eq!(status_of(port, &request), "HTTP/1.1 200 OK");
}

// ---- serve: the peer's Close with data behind it ------------------------------------------

/// A masked client frame.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11u8, 0x22, 0x33, 0x44];
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// A peer that sends Close and goes on sending (it should not) must still get serve's Close
/// reply and then the end of the stream, not a reset that makes its stack throw the reply
/// away.
#[test]
fn a_peer_that_sends_after_its_close_still_gets_the_close_reply() {
    let server = serve();
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    s.set_read_timeout(Some(PEER_LIMIT)).expect("read timeout");
    let host = format!("Host: 127.0.0.1:{}\r\n", server.port);
    s.write_all(
        upgrade(
            "/echo",
            &format!("{host}Upgrade: websocket\r\nConnection: Upgrade\r\n"),
        )
        .as_bytes(),
    )
    .expect("upgrade");
    let head = read_response_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let mut close = client_frame(0x8, &1000u16.to_be_bytes());
    let after = client_frame(0x2, &[7u8; 4000]);
    for _ in 0..16 {
        close.extend_from_slice(&after);
    }
    s.write_all(&close).expect("write Close and more");
    // More after a pause, as a peer that ignores its own Close would: by then serve has
    // answered and, without draining, closed the socket over these unread bytes.
    let writer = s.try_clone().expect("clone");
    let keep_sending = thread::spawn(move || {
        let mut writer = writer;
        for _ in 0..50 {
            thread::sleep(Duration::from_millis(10));
            if writer.write_all(&after).is_err() {
                return;
            }
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let ended = loop {
        match s.read(&mut buf) {
            Ok(0) => break "end of stream".to_string(),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break e.to_string(),
        }
    };
    let _ = keep_sending.join();
    assert!(
        got.starts_with(&[0x88, 0x02, 0x03, 0xe8]),
        "no Close 1000 reply before the connection ended ({ended}): {got:02x?}"
    );
    // A reset instead of an orderly end is what makes a peer's stack throw the Close away
    // (browsers and Go report 1006 when their write or read fails with it).
    assert_eq!(
        ended, "end of stream",
        "the connection was not closed cleanly"
    );
}

fn read_response_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}
