//! `wsecho dial`, black box: the real binary against `wsecho serve` and against small
//! tungstenite peers written here, over loopback sockets. Every wait has a deadline.

use crate::common::{Finished, Running, Server, free_port, run, wsecho};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::mpsc;
use std::thread::{self};
use std::time::{Duration, Instant};
use tungstenite::error::Error as WsError;
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role};
use tungstenite::{Bytes, Message, WebSocket};

/// Backstop for one dial run; the tests' own bounds are tighter where timing matters.
pub(crate) const LIMIT: Duration = Duration::from_secs(10);
/// How long an in-test peer waits for the dial to connect, or for a read.
pub(crate) const PEER_LIMIT: Duration = Duration::from_secs(10);
/// `--wait` for runs that expect every echo. dial exits as soon as the last echo comes, so
/// this costs nothing; it only lets a stalled (loaded) server be seconds late, where dial's
/// default 1 s would end the run with echoes missing.
pub(crate) const WAIT: &str = "10";

// ---- running wsecho ---------------------------------------------------------------------

pub(crate) fn dial(args: &[&str]) -> Command {
    let mut cmd = Command::new(wsecho());
    cmd.arg("dial").args(args);
    cmd
}

/// `wsecho serve` on a fresh loopback port, killed on drop.
fn serve() -> Server {
    serve_with(&[])
}

/// `wsecho serve` with `extra` flags on a port of its own, killed on drop.
fn serve_with(extra: &[&str]) -> Server {
    crate::common::serve("dial-serve", extra)
}

fn addr(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

fn url(port: u16, path: &str) -> String {
    format!("ws://127.0.0.1:{port}{path}")
}

/// Runs `wsecho dial ARGS` to completion (no stdin).
fn run_dial(args: &[&str]) -> Finished {
    let done = run("wsecho dial", &mut dial(args), None, LIMIT);
    done.assert_no_panic();
    done
}

pub(crate) fn assert_exit(done: &Finished, code: i32) {
    assert_eq!(
        done.status.code(),
        Some(code),
        "expected exit {code}: {}",
        done.describe()
    );
}

/// Exit 1 with nothing on stdout and exactly one diagnostic line (besides 'connecting to')
/// that contains every one of `needles`.
fn assert_fails_with(done: &Finished, needles: &[&str]) {
    done.assert_no_panic();
    assert_exit(done, 1);
    assert_eq!(done.stdout, "", "stdout: {}", done.describe());
    let said = one_diagnostic(done);
    for needle in needles {
        assert!(
            said.contains(needle),
            "error line lacks {needle:?}: {}",
            done.describe()
        );
    }
}

/// Exit 2 (usage) with one line naming each of `needles` and pointing to the help.
fn assert_usage_error(done: &Finished, needles: &[&str]) {
    done.assert_no_panic();
    assert_exit(done, 2);
    let said = one_diagnostic(done);
    for needle in needles.iter().chain(&["--help"]) {
        assert!(
            said.contains(needle),
            "usage error lacks {needle:?}: {}",
            done.describe()
        );
    }
}

pub(crate) fn one_diagnostic(done: &Finished) -> String {
    let lines: Vec<&str> = done
        .stderr
        .lines()
        .filter(|l| !l.starts_with("connecting to "))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one diagnostic line: {}",
        done.describe()
    );
    lines[0].to_string()
}

// ---- in-test peers ----------------------------------------------------------------------

pub(crate) type Ws = WebSocket<TcpStream>;

/// A one-connection WebSocket server on a loopback port: accepts one client, upgrades it,
/// and runs `serve` on a thread; its result comes back on the receiver.
fn peer<T: Send + 'static>(
    serve: impl FnOnce(Ws) -> T + Send + 'static,
) -> (u16, mpsc::Receiver<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("local_addr").port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let stream = accept_within(&listener, PEER_LIMIT);
        stream
            .set_read_timeout(Some(PEER_LIMIT))
            .expect("set_read_timeout");
        let ws = tungstenite::accept(stream).expect("peer: WebSocket handshake");
        let _ = tx.send(serve(ws));
    });
    (port, rx)
}

pub(crate) fn accept_within(listener: &TcpListener, limit: Duration) -> TcpStream {
    listener.set_nonblocking(true).expect("set_nonblocking");
    let deadline = Instant::now() + limit;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).expect("set_nonblocking");
                return stream;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("peer: no connection within {limit:?}: {e}"),
        }
    }
}

/// The client's request head, read a byte at a time so nothing behind it is consumed; `None`
/// if the connection ends or fails first.
fn read_request_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(head)
}

/// A peer that answers the upgrade with its 101 response, its lines ending in `eol`, and
/// `frames` (unmasked server frames) in one write, so they reach the client in the same read
/// as the response head; then reads until the connection ends.
fn peer_101_with(eol: &'static str, frames: Vec<u8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("local_addr").port();
    thread::spawn(move || {
        let mut stream = accept_within(&listener, PEER_LIMIT);
        stream
            .set_read_timeout(Some(PEER_LIMIT))
            .expect("set_read_timeout");
        let Some(head) = read_request_head(&mut stream) else {
            return;
        };
        let head = String::from_utf8_lossy(&head).into_owned();
        let key = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("sec-websocket-key")
                    .then(|| value.trim().to_string())
            })
            .expect("request without Sec-WebSocket-Key");
        let mut reply = format!(
            "HTTP/1.1 101 Switching Protocols{eol}Upgrade: websocket{eol}Connection: Upgrade{eol}Sec-WebSocket-Accept: {}{eol}{eol}",
            derive_accept_key(key.as_bytes())
        )
        .into_bytes();
        reply.extend_from_slice(&frames);
        stream.write_all(&reply).expect("write 101");
        let mut ws = WebSocket::from_raw_socket(stream, Role::Server, None);
        while ws.read().is_ok() {}
    });
    port
}

/// The peer's result; panics if it does not come within `limit` (or the peer panicked).
fn outcome<T>(rx: &mpsc::Receiver<T>, limit: Duration) -> T {
    rx.recv_timeout(limit)
        .unwrap_or_else(|e| panic!("in-test peer gave no result within {limit:?}: {e}"))
}

/// What an echoing peer saw.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    pub(crate) texts: Vec<String>,
    binaries: Vec<Vec<u8>>,
    /// The client's Close frame, once it sent one (`Some(None)`: Close without a code).
    close: Option<Option<CloseFrame>>,
}

/// Echoes every message back as it came until the connection ends; tungstenite answers the
/// client's Close.
pub(crate) fn echo(mut ws: Ws) -> Seen {
    let mut seen = Seen::default();
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                seen.texts.push(t.to_string());
                let _ = ws.send(Message::Text(t));
            }
            Ok(Message::Binary(b)) => {
                seen.binaries.push(b.to_vec());
                let _ = ws.send(Message::Binary(b));
            }
            Ok(Message::Close(frame)) => seen.close = Some(frame),
            Ok(_) => {}
            Err(_) => return seen,
        }
    }
}

/// Reads until dial's first tick. dial then has its connection open and runs its select loop,
/// where Ctrl-C sends Close (a signal that came before the handshake ended would make it exit
/// with status 1 instead); a `ready` sent right after the 101 would not prove that.
fn first_tick(ws: &mut Ws) {
    loop {
        match ws.read() {
            Ok(Message::Text(_)) => return,
            Ok(_) => {}
            Err(e) => panic!("peer: no tick from dial: {e}"),
        }
    }
}

pub(crate) fn is_timeout(e: &WsError) -> bool {
    matches!(e, WsError::Io(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
}

// ---- time text --------------------------------------------------------------------------

/// Seconds since the epoch of an RFC 3339 UTC time such as `2026-11-26T15:50:15.123456Z`;
/// `None` if the text is not one.
fn rfc3339_secs(s: &str) -> Option<f64> {
    let (date, time) = s.strip_suffix('Z')?.split_once('T')?;
    let date: Vec<&str> = date.split('-').collect();
    let time: Vec<&str> = time.split(':').collect();
    if date.len() != 3 || time.len() != 3 || date[0].len() != 4 {
        return None;
    }
    if [date[1], date[2], time[0], time[1]]
        .iter()
        .any(|f| f.len() != 2)
    {
        return None;
    }
    let num = |f: &str| f.parse::<i64>().ok();
    let (y, m, d) = (num(date[0])?, num(date[1])?, num(date[2])?);
    let (hh, mm) = (num(time[0])?, num(time[1])?);
    let ss: f64 = time[2].parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss >= 61.0 {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hh * 3600 + mm * 60) as f64 + ss)
}

/// The times of `recv: TIME` lines; panics on any other line.
fn recv_times(done: &Finished) -> Vec<f64> {
    done.stdout
        .lines()
        .map(|line| {
            line.strip_prefix("recv: ")
                .and_then(rfc3339_secs)
                .unwrap_or_else(|| {
                    panic!(
                        "not a 'recv: <RFC 3339 time>' line: {line:?}\n{}",
                        done.describe()
                    )
                })
        })
        .collect()
}

#[test]
fn rfc3339_parser_used_by_these_tests_is_right() {
    assert_eq!(rfc3339_secs("1970-01-01T00:00:00.000000Z"), Some(0.0));
    assert_eq!(rfc3339_secs("2000-02-29T00:00:00.5Z"), Some(951_782_400.5));
    assert_eq!(rfc3339_secs("2026-11-26T15:50:15Z"), Some(1_795_708_215.0));
    assert_eq!(rfc3339_secs("2026-11-26 15:50:15Z"), None);
    assert_eq!(rfc3339_secs("hello"), None);
}

// ---- 1: dialing wsecho serve ------------------------------------------------------------

#[test]
fn dial_says_which_url_it_connects_to_on_stderr() {
    let server = serve();
    let done = run_dial(&[
        "--addr",
        &addr(server.port),
        "--count",
        "1",
        "--interval",
        "0.05",
    ]);
    assert_exit(&done, 0);
    let first = done.stderr.lines().next().unwrap_or("");
    assert_eq!(
        first,
        format!("connecting to ws://127.0.0.1:{}/echo", server.port),
        "{}",
        done.describe()
    );
}

/// The peer times the ticks with `Instant`: dial's own timestamps are wall-clock time, which
/// a clock step (a fresh VM) moves. No tick can come early, however the machine is loaded:
/// dial starts its ticker once connected and arms each tick a full interval after it took the
/// previous one, so tick k reaches the peer at least k s after dial was started. Late has no
/// such bound (load delays any one tick), so a gap may be up to 2.5 s.
#[test]
fn default_ticks_come_back_as_recv_lines_about_a_second_apart() {
    let (port, seen) = peer(|mut ws| {
        let mut ticks = Vec::new();
        loop {
            match ws.read() {
                Ok(Message::Text(t)) => {
                    ticks.push((Instant::now(), format!("recv: {t}\n")));
                    let _ = ws.send(Message::Text(t));
                }
                Ok(_) => {}
                Err(_) => return ticks,
            }
        }
    });
    let started = Instant::now();
    let done = run_dial(&[&url(port, "/echo"), "--count", "3", "--wait", WAIT]);
    assert_exit(&done, 0);
    assert_eq!(recv_times(&done).len(), 3, "{}", done.describe());
    let ticks = outcome(&seen, Duration::from_secs(5));
    let echoed: String = ticks.iter().map(|(_, line)| line.as_str()).collect();
    assert_eq!(done.stdout, echoed, "recv lines are not the ticks echoed");
    let after: Vec<Duration> = ticks.iter().map(|(at, _)| *at - started).collect();
    for (k, at) in (1u32..).zip(&after) {
        assert!(
            *at >= Duration::from_secs(k.into()),
            "tick {k} came {at:?} after dial started, before {k} s: {after:?}"
        );
    }
    for pair in after.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap <= Duration::from_millis(2500),
            "ticks {gap:?} apart, expected about 1 s: {after:?}"
        );
    }
}

// ---- 2: Ctrl-C ------------------------------------------------------------------------------

/// The peer answers the Close at once, so dial ends well within its 1 s close wait; 3 s
/// leaves a loaded machine room, while a dial that missed the signal runs on until killed.
/// Runs dial against a peer that, once it has dial's first tick (dial is then in its select
/// loop), signals the test and goes on with `then`; sends dial SIGINT at that signal. Returns
/// dial's output, how long after the signal it exited, and what `then` returns.
fn sigint_once_ticking<T: Send + 'static>(
    then: impl FnOnce(Ws) -> T + Send + 'static,
) -> (Finished, Duration, mpsc::Receiver<T>) {
    let (ready_tx, ready) = mpsc::channel();
    let (port, seen) = peer(move |mut ws| {
        first_tick(&mut ws);
        let _ = ready_tx.send(());
        then(ws)
    });
    let client = Running::start(
        "wsecho dial",
        dial(&[&url(port, "/echo"), "--interval", "0.05"]),
    );
    ready.recv_timeout(LIMIT).expect("dial sent no tick");
    client.sigint();
    let signalled = Instant::now();
    let (done, exited) = client.wait(Duration::from_secs(5));
    (done, exited - signalled, seen)
}

#[test]
fn sigint_sends_close_1000_and_exits_0_promptly() {
    let (done, took, seen) = sigint_once_ticking(echo);
    assert_exit(&done, 0);
    assert!(
        took < Duration::from_secs(3),
        "exited {took:?} after SIGINT: {}",
        done.describe()
    );
    let seen = outcome(&seen, Duration::from_secs(5));
    let frame = seen
        .close
        .flatten()
        .expect("the peer received no Close with a code");
    assert_eq!(u16::from(frame.code), 1000, "Close frame: {frame:?}");
}

/// dial gives the peer 1 s to answer its Close; 3 s leaves a loaded machine room. The peer
/// holds the connection until the test ends, so a dial that waited for it instead would still
/// be running at the 5 s limit.
#[test]
fn sigint_with_a_peer_that_never_answers_close_exits_0_after_at_most_a_second() {
    let (release, released) = mpsc::channel::<()>();
    let (done, took, _held) = sigint_once_ticking(move |ws| {
        // Read nothing more, answer nothing, keep the connection open until the test ends.
        let _ = released.recv_timeout(PEER_LIMIT);
        drop(ws);
    });
    assert_exit(&done, 0);
    // About 1 s; the bound leaves room for a loaded machine (3.13 s was seen at a load of
    // 29) and still fails a dial that waits for the peer, which holds on for PEER_LIMIT.
    assert!(
        took < Duration::from_secs(6),
        "exited {took:?} after SIGINT, expected within about 1 s: {}",
        done.describe()
    );
    drop(release);
}

/// Ctrl-C while the server has the request and does not answer: there is nothing open to
/// close, so dial exits at once with status 1, not after its 30 s `--connect-timeout`. (The
/// signal also interrupts dial's read of the response: that must not come out as a bogus
/// "invalid handshake response".)
#[test]
fn sigint_before_the_server_answers_the_handshake_exits_1_at_once() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("local_addr").port();
    let (asked_tx, asked) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    thread::spawn(move || {
        let mut stream = accept_within(&listener, PEER_LIMIT);
        if read_request_head(&mut stream).is_some() {
            let _ = asked_tx.send(());
            let _ = released.recv_timeout(PEER_LIMIT);
        }
    });
    let client = Running::start(
        "wsecho dial",
        dial(&[&url(port, "/echo"), "--connect-timeout", "30"]),
    );
    asked
        .recv_timeout(LIMIT)
        .expect("dial sent no upgrade request");
    client.sigint();
    let signalled = Instant::now();
    let (done, exited) = client.wait(LIMIT);
    assert_exit(&done, 1);
    assert!(
        done.stderr
            .contains("interrupted while no connection was open"),
        "{}",
        done.describe()
    );
    let took = exited - signalled;
    assert!(
        took < Duration::from_secs(3),
        "exited {took:?} after SIGINT: {}",
        done.describe()
    );
    drop(release);
}

// ---- 3: --count ----------------------------------------------------------------------------

#[test]
fn count_sends_n_messages_prints_n_echoes_and_exits_0() {
    let server = serve();
    let done = run_dial(&[
        "--addr",
        &addr(server.port),
        "--count",
        "5",
        "--interval",
        "0.05",
        "--wait",
        WAIT,
    ]);
    assert_exit(&done, 0);
    assert_eq!(recv_times(&done).len(), 5, "{}", done.describe());
}

#[test]
fn count_waits_for_echoes_that_come_late() {
    // Each echo goes out 150 ms after its message came, so the last arrives well after the
    // last tick, and dial must wait for it before it closes. The peer reads on meanwhile: a
    // Close that came before all three echoes had gone out would be dial not waiting (its
    // Close reply would still take the late echoes along, so the output cannot tell).
    // --wait 5: the default 1 s would leave a loaded machine well under a second.
    let (port, seen) = peer(|mut ws| {
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(5)))
            .expect("set_read_timeout");
        let give_up = Instant::now() + PEER_LIMIT;
        let mut due = VecDeque::new();
        let (mut texts, mut echoed, mut echoed_before_close) = (0, 0, None);
        while Instant::now() < give_up {
            while let Some((at, _)) = due.front() {
                if *at > Instant::now() {
                    break;
                }
                let (_, echo) = due.pop_front().expect("front");
                if ws.send(echo).is_ok() {
                    echoed += 1;
                }
            }
            match ws.read() {
                Ok(Message::Text(t)) => {
                    texts += 1;
                    let at = Instant::now() + Duration::from_millis(150);
                    due.push_back((at, Message::Text(t)));
                }
                Ok(Message::Close(_)) => echoed_before_close = Some(echoed),
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {}
                Err(_) => break,
            }
        }
        (texts, echoed_before_close)
    });
    let done = run_dial(&[
        &url(port, "/echo"),
        "--count",
        "3",
        "--interval",
        "0.05",
        "--wait",
        "5",
    ]);
    assert_exit(&done, 0);
    assert_eq!(recv_times(&done).len(), 3, "{}", done.describe());
    let (texts, echoed_before_close) = outcome(&seen, Duration::from_secs(5));
    assert_eq!(texts, 3, "messages the peer got");
    assert_eq!(
        echoed_before_close,
        Some(3),
        "echoes sent before dial's Close came: {}",
        done.describe()
    );
}

// ---- 4: --stdin ----------------------------------------------------------------------------

/// Runs `wsecho dial ARGS --wait WAIT` with `input` on stdin, to completion.
fn run_stdin(args: &[&str], input: &[u8]) -> Finished {
    let mut cmd = dial(args);
    cmd.args(["--wait", WAIT]);
    let done = run("wsecho dial --stdin", &mut cmd, Some(input.to_vec()), LIMIT);
    done.assert_no_panic();
    done
}

#[test]
fn stdin_line_comes_back_bare_when_stdout_is_a_pipe() {
    let server = serve();
    let done = run_stdin(&["--stdin", &server.echo_url()], b"hi\n");
    assert_exit(&done, 0);
    assert_eq!(done.stdout, "hi\n", "{}", done.describe());
}

#[test]
fn stdin_thousand_unicode_lines_round_trip_in_order() {
    let server = serve();
    let input: String = (0..1000)
        .map(|i| format!("{i:04} héllo wörld ✓ 日本語 🦀 {}\n", "x".repeat(i % 50)))
        .collect();
    let done = run_stdin(&["--stdin", &server.echo_url()], input.as_bytes());
    assert_exit(&done, 0);
    assert!(
        done.stdout == input,
        "stdout differs from stdin ({} vs {} lines): {}",
        done.stdout.lines().count(),
        input.lines().count(),
        done.describe()
    );
}

#[test]
fn stdin_binary_sends_binary_messages_and_prints_their_bytes() {
    let (port, seen) = peer(echo);
    let input: &[u8] = b"abc\n\xff\xfe\x00 not utf-8\nlast\n";
    let done = run_stdin(&["--stdin", "--binary", &url(port, "/echo")], input);
    assert_exit(&done, 0);
    assert_eq!(
        done.stdout,
        String::from_utf8_lossy(input),
        "{}",
        done.describe()
    );
    let seen = outcome(&seen, Duration::from_secs(5));
    assert!(seen.texts.is_empty(), "text messages: {:?}", seen.texts);
    let expected: Vec<Vec<u8>> = vec![
        b"abc".to_vec(),
        b"\xff\xfe\x00 not utf-8".to_vec(),
        b"last".to_vec(),
    ];
    assert_eq!(seen.binaries, expected);
}

#[test]
fn stdin_empty_exits_0_without_output() {
    let server = serve();
    let done = run_stdin(&["--stdin", &server.echo_url()], b"");
    assert_exit(&done, 0);
    assert_eq!(done.stdout, "", "{}", done.describe());
}

// ---- 5: the server closes first ----------------------------------------------------------

#[test]
fn server_shutting_down_with_1001_ends_dial_with_0() {
    let mut server = serve();
    let port = server.port;
    let mut client = Running::start(
        "wsecho dial",
        dial(&["--addr", &addr(port), "--interval", "0.1"]),
    );
    let first = client.next_line(LIMIT);
    assert!(first.starts_with("recv: "), "first line {first:?}");
    server.sigint();
    let (done, _) = client.wait(Duration::from_secs(5));
    assert_exit(&done, 0);
    assert!(done.stderr.contains("1001"), "{}", done.describe());
    let (served, _) = server.wait_exit(Duration::from_secs(5)).unwrap_or_else(|| {
        panic!(
            "wsecho serve still running 5 s after SIGINT\n{}",
            server.log()
        )
    });
    server.assert_no_panic();
    assert_eq!(
        served.code(),
        Some(0),
        "wsecho serve: {served}\n{}",
        server.log()
    );
}

#[test]
fn server_closing_with_4000_ends_dial_with_1() {
    let (port, _seen) = peer(|mut ws| {
        // Close instead of echoing the one tick (a Close right behind the 101 is another
        // test). With --count 1, dial sends nothing more: a tick written after our Close would
        // fail, and dial would then give the reader only 1 s to report the 4000.
        let _ = ws.read();
        let _ = ws.close(Some(CloseFrame {
            code: CloseCode::from(4000),
            reason: "custom".into(),
        }));
        while ws.read().is_ok() {}
    });
    let done = run_dial(&[
        &url(port, "/echo"),
        "--count",
        "1",
        "--interval",
        "0.05",
        "--wait",
        WAIT,
    ]);
    assert_fails_with(&done, &["4000"]);
}

/// dial's first output line when the peer's 101 head (lines ending in `eol`) comes with the
/// text frame "early" right behind it, then nothing. "At once" means without more input: a
/// frame left in the handshake's buffer would be lost, or wait for the next read, which only
/// the 30 s ping interval ends; `LIMIT` tells those apart from a loaded machine's delay.
fn first_line_with_early_frame_behind_101(eol: &'static str) -> String {
    let port = peer_101_with(eol, b"\x81\x05early".to_vec());
    let mut client = Running::start(
        "wsecho dial",
        dial(&[&url(port, "/echo"), "--interval", "100"]),
    );
    client.next_line(LIMIT)
}

#[test]
fn message_arriving_with_the_101_response_is_printed_at_once() {
    assert_eq!(
        first_line_with_early_frame_behind_101("\r\n"),
        "recv: early\n"
    );
}

#[test]
fn message_behind_a_101_whose_lines_end_in_bare_newlines_is_printed_too() {
    // httparse (and so tungstenite) accepts "\n" line endings; the head still ends at its
    // blank line, and the frame behind it belongs to the connection.
    assert_eq!(
        first_line_with_early_frame_behind_101("\n"),
        "recv: early\n"
    );
}

#[test]
fn close_arriving_with_the_101_response_ends_dial_at_once() {
    // Close 1001 "bye", right behind the response head. Left in the handshake's buffer, it
    // would be lost or wait for the next read (the 30 s ping interval): `LIMIT` is enough.
    let port = peer_101_with("\r\n", b"\x88\x05\x03\xe9bye".to_vec());
    let client = Running::start(
        "wsecho dial",
        dial(&[&url(port, "/echo"), "--interval", "100"]),
    );
    let (done, _) = client.wait(LIMIT);
    assert_exit(&done, 0);
    assert!(done.stderr.contains("1001"), "{}", done.describe());
}

// ---- 6: reading and writing at once ------------------------------------------------------

#[test]
fn pings_are_answered_while_ticking() {
    const TICKS: usize = 20;
    let (port, seen) = peer(|mut ws| {
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(5)))
            .expect("set_read_timeout");
        let give_up = Instant::now() + PEER_LIMIT;
        let (mut pings, mut pongs, mut texts) = (0u32, Vec::new(), 0usize);
        let mut next_ping = Instant::now();
        let mut ping = |ws: &mut Ws| {
            let _ = ws.send(Message::Ping(Bytes::from(pings.to_be_bytes().to_vec())));
            pings += 1;
        };
        while Instant::now() < give_up {
            // Ping every 50 ms until the last tick is echoed: every pong then precedes Close.
            if texts < TICKS && Instant::now() >= next_ping {
                ping(&mut ws);
                next_ping += Duration::from_millis(50);
            }
            match ws.read() {
                Ok(Message::Text(t)) => {
                    // And before each echo, so that there are pings however the threads are
                    // scheduled (a stalled peer may find all the ticks waiting at once).
                    ping(&mut ws);
                    texts += 1;
                    let _ = ws.send(Message::Text(t));
                }
                Ok(Message::Pong(p)) => pongs.push(p.to_vec()),
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {}
                Err(_) => break,
            }
        }
        (pings, pongs, texts)
    });
    let done = run_dial(&[
        &url(port, "/echo"),
        "--interval",
        "0.05",
        "--count",
        "20",
        "--wait",
        WAIT,
    ]);
    assert_exit(&done, 0);
    assert_eq!(recv_times(&done).len(), TICKS, "{}", done.describe());
    let (pings, pongs, texts) = outcome(&seen, Duration::from_secs(5));
    assert_eq!(texts, TICKS);
    assert!(pings as usize > TICKS, "only {pings} pings sent");
    let expected: Vec<Vec<u8>> = (0..pings).map(|i| i.to_be_bytes().to_vec()).collect();
    assert_eq!(pongs, expected, "pongs for {pings} pings");
}

#[test]
fn ticks_keep_coming_while_the_server_sends_nothing() {
    const TICKS: usize = 10;
    let (port, seen) = peer(|mut ws| {
        let connected = Instant::now();
        let mut arrivals = Vec::new();
        loop {
            match ws.read() {
                Ok(Message::Text(_)) => arrivals.push(connected.elapsed()),
                Ok(_) => {}
                Err(_) => return arrivals,
            }
        }
    });
    let done = run_dial(&[&url(port, "/echo"), "--interval", "0.1", "--count", "10"]);
    assert_exit(&done, 0);
    assert_eq!(
        done.stdout,
        "",
        "the peer sent nothing: {}",
        done.describe()
    );
    let arrivals = outcome(&seen, Duration::from_secs(5));
    assert_eq!(arrivals.len(), TICKS, "ticks received: {arrivals:?}");
    // 1 s at the interval; but each tick is armed when dial takes the previous one, so a
    // loaded machine's delays add up. Ticks waiting on a read from the server would take
    // the 30 s ping interval.
    assert!(
        arrivals[TICKS - 1] <= Duration::from_secs(5),
        "{TICKS} ticks at 0.1 s took {:?}: {arrivals:?}",
        arrivals[TICKS - 1]
    );
}

// ---- 7: errors ----------------------------------------------------------------------------

#[test]
fn refused_connection_is_one_line_and_exit_1() {
    let port = free_port();
    let done = run_dial(&["--addr", &addr(port)]);
    assert_fails_with(&done, &["cannot connect", "refused"]);
}

#[test]
fn unresolvable_host_is_one_line_and_exit_1() {
    let done = run_dial(&["ws://nonexistent.invalid/echo"]);
    assert_fails_with(&done, &["cannot resolve", "nonexistent.invalid"]);
}

#[test]
fn silent_server_times_out_the_handshake_with_exit_1() {
    // The kernel completes the TCP handshake; nobody ever answers the upgrade request.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local_addr").port();
    let start = Instant::now();
    let done = run_dial(&[&url(port, "/echo"), "--connect-timeout", "0.5"]);
    let took = start.elapsed();
    done.assert_no_panic();
    assert_exit(&done, 1);
    let said = one_diagnostic(&done);
    assert!(
        ["in time", "no answer", "timed out"]
            .iter()
            .any(|s| said.contains(s)),
        "message does not say it timed out: {}",
        done.describe()
    );
    assert!(
        said.contains("(raise --connect-timeout)"),
        "no hint: {}",
        done.describe()
    );
    // 0.5 s, and seconds for a loaded machine; ignoring the flag would take the default 10 s.
    assert!(
        took < Duration::from_secs(5),
        "took {took:?}: {}",
        done.describe()
    );
    drop(listener);
}

#[test]
fn foreign_origin_is_refused_with_403() {
    let server = serve();
    let done = run_dial(&[
        "--addr",
        &addr(server.port),
        "--origin",
        "http://evil.example",
    ]);
    assert_fails_with(
        &done,
        &["server refused the WebSocket upgrade: 403 Forbidden"],
    );
}

#[test]
fn wrong_path_is_refused_with_404() {
    let server = serve();
    let done = run_dial(&[&url(server.port, "/nope")]);
    assert_fails_with(&done, &["404"]);
}

#[test]
fn http_scheme_is_refused_clearly() {
    let done = run_dial(&["http://127.0.0.1:1/echo"]);
    assert_fails_with(&done, &["unsupported scheme", "http"]);
}

#[test]
fn malformed_url_is_refused() {
    let done = run_dial(&["ws://a b/echo"]);
    assert_fails_with(&done, &["malformed URL"]);
}

#[test]
fn header_without_colon_is_refused() {
    let port = free_port();
    let done = run_dial(&["--addr", &addr(port), "-H", "novalue"]);
    assert_fails_with(&done, &["invalid header", "novalue"]);
}

#[test]
fn unknown_flag_is_a_usage_error_naming_it() {
    let port = free_port();
    for args in [vec!["--bogus"], vec!["--addr", &addr(port), "--bogus"]] {
        let done = run_dial(&args);
        assert_usage_error(&done, &["--bogus", "unknown flag"]);
    }
}

#[test]
fn count_that_is_not_a_number_is_a_usage_error() {
    let done = run_dial(&["--addr", &addr(free_port()), "--count", "abc"]);
    assert_usage_error(&done, &["--count", "abc", "number"]);
    assert!(
        !done.stderr.contains("UTF-8"),
        "misleading: {}",
        done.describe()
    );
}

#[test]
fn interval_without_value_is_a_usage_error() {
    let done = run_dial(&["--addr", &addr(free_port()), "--interval"]);
    assert_usage_error(&done, &["--interval"]);
}

#[test]
fn binary_without_stdin_is_a_usage_error() {
    let done = run_dial(&["--addr", &addr(free_port()), "--binary"]);
    assert_usage_error(&done, &["--binary", "--stdin"]);
}

// ---- 8: help ------------------------------------------------------------------------------

#[test]
fn help_exits_0_and_documents_exit_codes() {
    let done = run_dial(&["--help"]);
    assert_exit(&done, 0);
    let help = &done.stdout;
    let (_, codes) = help
        .split_once("Exit status")
        .unwrap_or_else(|| panic!("no 'Exit status' section: {}", done.describe()));
    for code in ["0", "1", "2"] {
        assert!(
            codes
                .split(|c: char| !c.is_ascii_digit())
                .any(|w| w == code),
            "exit status {code} undocumented: {}",
            done.describe()
        );
    }
    for flag in ["--count", "--stdin", "--interval", "--connect-timeout"] {
        assert!(
            help.contains(flag),
            "{flag} undocumented: {}",
            done.describe()
        );
    }
}

#[test]
#[allow(clippy::result_large_err)] // tungstenite's callback type, not ours
fn headers_origin_and_subprotocol_reach_the_server_and_the_chosen_subprotocol_is_accepted() {
    use tungstenite::handshake::server::{Request, Response};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("local_addr").port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let stream = accept_within(&listener, PEER_LIMIT);
        stream
            .set_read_timeout(Some(PEER_LIMIT))
            .expect("set_read_timeout");
        let mut seen = Vec::new();
        let callback = |request: &Request, mut response: Response| {
            for name in ["x-trace", "origin", "sec-websocket-protocol"] {
                let value = request.headers().get(name).and_then(|v| v.to_str().ok());
                seen.push(format!("{name}={}", value.unwrap_or("-")));
            }
            let chosen = tungstenite::http::HeaderValue::from_static("chat");
            response
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", chosen);
            Ok(response)
        };
        let ws = tungstenite::accept_hdr(stream, callback).expect("peer: WebSocket handshake");
        let _ = echo(ws);
        let _ = tx.send(seen);
    });
    let done = run_stdin(
        &[
            &url(port, "/echo"),
            "--stdin",
            "-H",
            "X-Trace: abc 123",
            "--origin",
            "http://app.example",
            "--subprotocol",
            "chat",
        ],
        b"hello\n",
    );
    assert_exit(&done, 0);
    assert_eq!(done.stdout, "hello\n", "{}", done.describe());
    let seen = outcome(&rx, PEER_LIMIT);
    assert_eq!(
        seen,
        [
            "x-trace=abc 123",
            "origin=http://app.example",
            "sec-websocket-protocol=chat"
        ]
    );
}

#[test]
fn bulk_stdin_with_large_lines_round_trips_without_stalling() {
    // A writer blocked on a full socket must not keep the reader from draining the echoes
    // (each side would wait for the other until a write timeout). Both write timeouts (the
    // server's --write-timeout, dial's --ping-interval) are 120 s, so such a deadlock hangs
    // past the 60 s allowed here instead of ending early; the round trip takes about 1 s
    // unloaded, 8 s on 2 cores with 14 busy loops.
    let server = serve_with(&["--write-timeout", "120"]);
    let mut input = Vec::new();
    for i in 0..40u8 {
        input.extend(std::iter::repeat_n(b'a' + i % 26, 1 << 20));
        input.push(b'\n');
    }
    let mut cmd = dial(&[
        &url(server.port, "/echo"),
        "--stdin",
        "--ping-interval",
        "120",
        "--wait",
        "30",
    ]);
    let done = run(
        "wsecho dial --stdin",
        &mut cmd,
        Some(input.clone()),
        Duration::from_secs(60),
    );
    done.assert_no_panic();
    assert_exit(&done, 0);
    assert!(
        done.stdout.as_bytes() == input.as_slice(),
        "echoes differ: {} of {} bytes",
        done.stdout.len(),
        input.len()
    );
}

#[test]
fn output_closed_by_the_reader_of_stdout_is_a_normal_end() {
    let server = serve();
    let script = r#"seq 1 100000 | "$0" dial --stdin "$1" | head -n 1; exit "${PIPESTATUS[1]}""#;
    let done = run(
        "dial | head -n 1",
        Command::new("bash").args(["-c", script, wsecho(), &url(server.port, "/echo")]),
        None,
        LIMIT,
    );
    assert_eq!(done.stdout, "1\n", "{}", done.describe());
    assert_eq!(done.status.code(), Some(0), "{}", done.describe());
}

#[test]
fn a_server_trickling_its_handshake_answer_is_cut_at_the_connect_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("local_addr").port();
    thread::spawn(move || {
        let mut stream = accept_within(&listener, PEER_LIMIT);
        let mut request = [0u8; 1024];
        let _ = stream.read(&mut request);
        // One byte of a plausible head every 100 ms, for longer than the test waits.
        for &b in b"HTTP/1.1 101 Switching Protocols\r\nX-Slow: yes yes yes yes yes yes\r\n"
            .iter()
            .cycle()
            .take(200)
        {
            if stream.write_all(&[b]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    let started = Instant::now();
    let done = run_dial(&[&url(port, "/echo"), "--connect-timeout", "0.5"]);
    assert_fails_with(&done, &["in time"]);
    // 0.5 s, and seconds for a loaded machine; a deadline per read would let the trickle go
    // on for its 20 s.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}
