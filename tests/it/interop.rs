//! Interop with real peers: wsecho against WebSocket programs built on
//! independent libraries: Go gorilla/websocket, Python `websockets`, Node `ws`.
//! The peers live in tests/peers/ and are installed by tests/peers/setup.sh, so
//! every test here is ignored by default (plain `cargo test` stays hermetic):
//!
//!     bash tests/peers/setup.sh && cargo test --test it interop -- --include-ignored
//!
//! A missing peer fails the test with a message naming setup.sh.

use crate::common::{Feed, Finished, Output, Server, free_port, repo_root, run, run_fed, wsecho};
use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{ChildStdin, Command, ExitStatus};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

pub(crate) const NEEDS: &str = "run tests/peers/setup.sh first";
/// Every peer client has its own 20 s deadline; this one is a backstop.
pub(crate) const CLIENT_LIMIT: Duration = Duration::from_secs(30);
/// dial's `--wait` for runs that expect every echo. dial exits at the last echo anyway; its
/// default 1 s would cut short a run whose peer a loaded machine stalls (and, in the
/// /closeNNNN tests, send dial's Close before the echo, which the peer would answer instead
/// of sending its own code).
pub(crate) const WAIT: &str = "10";

// ---- the peers ---------------------------------------------------------------

pub(crate) fn peer_file(rel: &str) -> PathBuf {
    let path = repo_root().join(rel);
    assert!(path.exists(), "peer missing: {} ({NEEDS})", path.display());
    path
}

pub(crate) fn go_server_cmd(port: u16) -> Command {
    let mut cmd = Command::new(peer_file("target/peers/go-echo-server"));
    cmd.arg("-addr")
        .arg(format!("127.0.0.1:{port}"))
        .arg("-log");
    cmd
}

pub(crate) fn py_server_cmd(port: u16) -> Command {
    let mut cmd = Command::new(peer_file("target/peers/venv/bin/python"));
    cmd.arg(peer_file("tests/peers/py/server.py"))
        .arg(port.to_string());
    cmd
}

pub(crate) fn go_client_cmd(url: &str) -> Command {
    let mut cmd = Command::new(peer_file("target/peers/go-echo-client"));
    cmd.arg("-url").arg(url);
    cmd
}

pub(crate) fn py_client_cmd(url: &str) -> Command {
    let mut cmd = Command::new(peer_file("target/peers/venv/bin/python"));
    cmd.arg(peer_file("tests/peers/py/client.py")).arg(url);
    cmd
}

pub(crate) fn node_client_cmd(url: &str) -> Command {
    peer_file("tests/peers/node/node_modules/ws/package.json");
    let mut cmd = Command::new("node");
    cmd.arg(peer_file("tests/peers/node/client.mjs")).arg(url);
    cmd
}

fn start_go_server() -> Server {
    let port = free_port();
    Server::start("go-echo-server", go_server_cmd(port), port)
}

fn start_py_server() -> Server {
    let port = free_port();
    Server::start("py-echo-server", py_server_cmd(port), port)
}

fn start_wsecho_serve() -> Server {
    crate::common::serve("wsecho-serve", &[])
}

/// Runs a peer client against `server`; it must exit 0 and print `ok` last.
fn client_passes(name: &str, mut cmd: Command, server: &Server) {
    let done = run(name, &mut cmd, None, CLIENT_LIMIT);
    let last = done.stdout.lines().last().unwrap_or("");
    assert!(
        done.status.success() && last == "ok",
        "{name} against {} ({}) failed\n{}\n{}",
        server.name,
        server.echo_url(),
        done.describe(),
        server.log()
    );
}

// ---- peer clients -> wsecho serve ----------------------------------------------

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn go_client_to_wsecho_serve() {
    let server = start_wsecho_serve();
    client_passes("go-echo-client", go_client_cmd(&server.echo_url()), &server);
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn python_client_to_wsecho_serve() {
    let server = start_wsecho_serve();
    client_passes("py-echo-client", py_client_cmd(&server.echo_url()), &server);
}

/// RFC 6455 §5.5.1: the endpoint answering a Close typically echoes its code.
#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn python_client_close_code_4000_to_wsecho_serve() {
    let server = start_wsecho_serve();
    let mut cmd = py_client_cmd(&server.echo_url());
    cmd.args(["--close-code", "4000"]);
    client_passes("py-echo-client --close-code 4000", cmd, &server);
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn node_client_to_wsecho_serve() {
    let server = start_wsecho_serve();
    client_passes(
        "node-echo-client",
        node_client_cmd(&server.echo_url()),
        &server,
    );
}

// ---- wsecho dial -> peer servers -----------------------------------------------

/// 200 distinct non-empty lines, most with non-ASCII text.
pub(crate) fn stdin_lines() -> Vec<String> {
    (0..200)
        .map(|i| match i % 4 {
            0 => format!("line {i}"),
            1 => format!("line {i}: héllo wörld — 你好 🌍 Ωμέγα"),
            2 => format!("line {i}: {}", "x".repeat(i * 3)),
            _ => format!("line {i}: tab\there, \"quotes\" and \\backslash"),
        })
        .collect()
}

fn dial(server: &Server, extra: &[&str], stdin: Option<Vec<u8>>) -> Finished {
    let mut cmd = Command::new(wsecho());
    cmd.arg("dial")
        .arg(server.echo_url())
        .args(extra)
        .args(["--wait", WAIT]);
    let what = format!("wsecho dial {} {}", server.echo_url(), extra.join(" "));
    run(&what, &mut cmd, stdin, CLIENT_LIMIT)
}

fn dial_stdin_round_trip(server: Server, extra: &[&str]) {
    let lines = stdin_lines();
    let input = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    let done = dial(&server, extra, Some(input.into_bytes()));
    let context = format!(
        "wsecho dial {extra:?} -> {}\n{}\n{}",
        server.name,
        done.describe(),
        server.log()
    );
    assert!(done.status.success(), "nonzero exit: {context}");
    let got: Vec<&str> = done.stdout.lines().collect();
    for (i, (got, want)) in got.iter().zip(&lines).enumerate() {
        assert_eq!(got, want, "stdout line {i} (0-based) differs: {context}");
    }
    assert_eq!(
        got.len(),
        lines.len(),
        "want {} stdout lines, got {}: {context}",
        lines.len(),
        got.len()
    );
}

fn dial_count(server: Server) {
    let done = dial(&server, &["--count", "3", "--interval", "0.2"], None);
    let context = format!(
        "wsecho dial --count 3 -> {}\n{}\n{}",
        server.name,
        done.describe(),
        server.log()
    );
    assert!(done.status.success(), "nonzero exit: {context}");
    let recv = done
        .stdout
        .lines()
        .filter(|l| l.starts_with("recv:"))
        .count();
    assert_eq!(recv, 3, "want 3 `recv:` lines on stdout: {context}");
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn wsecho_dial_stdin_to_go_server() {
    dial_stdin_round_trip(start_go_server(), &["--stdin"]);
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn wsecho_dial_stdin_to_python_server() {
    dial_stdin_round_trip(start_py_server(), &["--stdin"]);
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn wsecho_dial_stdin_binary_to_go_server() {
    dial_stdin_round_trip(start_go_server(), &["--stdin", "--binary"]);
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn wsecho_dial_stdin_binary_to_python_server() {
    dial_stdin_round_trip(start_py_server(), &["--stdin", "--binary"]);
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn wsecho_dial_count_to_go_server() {
    dial_count(start_go_server());
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn wsecho_dial_count_to_python_server() {
    dial_count(start_py_server());
}

// ---- calibration: the peers against each other, no wsecho involved ------------------
// These prove the peers themselves speak WebSocket to each other: when they pass and a test
// above fails, the failure is wsecho's, not the peer's.

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn calibration_go_client_to_python_server() {
    let server = start_py_server();
    client_passes("go-echo-client", go_client_cmd(&server.echo_url()), &server);
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn calibration_python_client_to_go_server() {
    let server = start_go_server();
    client_passes("py-echo-client", py_client_cmd(&server.echo_url()), &server);
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn calibration_node_client_to_go_server() {
    let server = start_go_server();
    client_passes(
        "node-echo-client",
        node_client_cmd(&server.echo_url()),
        &server,
    );
}

// ---- wsecho dial -> peer servers: a large message, pings, close codes ---------------

/// How a `wsecho dial` run by [`dial_fed`] ended; stdout is kept as bytes (binary echoes).
pub(crate) struct Dialed {
    pub what: String,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub took: Duration,
}

impl Dialed {
    /// Status, time, stdout (its size and start only: it may be a MiB) and stderr.
    pub fn describe(&self) -> String {
        let start = &self.stdout[..self.stdout.len().min(200)];
        format!(
            "{}: {} after {:?}\n--- stdout: {} bytes, starting ---\n{}\n--- stderr ---\n{}--- end ---",
            self.what,
            self.status,
            self.took,
            self.stdout.len(),
            String::from_utf8_lossy(start),
            crate::common::clip(&self.stderr)
        )
    }
}

/// Runs `wsecho dial URL EXTRA...` with its stdin fed by `feed` on a thread (stdin ends when
/// `feed` returns; write errors after dial has exited are ignored). Kills it and panics if it
/// runs longer than `limit`.
pub(crate) fn dial_fed(
    url: &str,
    extra: &[&str],
    feed: impl FnOnce(&mut ChildStdin) -> std::io::Result<()> + Send + 'static,
    limit: Duration,
) -> Dialed {
    let what = format!("wsecho dial {url} {}", extra.join(" "));
    let dialed = |done: Output| Dialed {
        what: what.clone(),
        status: done.status,
        stdout: done.stdout,
        stderr: String::from_utf8_lossy(&done.stderr).into_owned(),
        took: done.took,
    };
    let done = run_fed(
        &what,
        Command::new(wsecho()).arg("dial").arg(url).args(extra),
        Some(Box::new(feed) as Feed),
        limit,
        |done| dialed(done.clone()).describe(),
    );
    dialed(done)
}

/// Feeds `data` at once, then ends stdin.
pub(crate) fn feed_all(
    data: Vec<u8>,
) -> impl FnOnce(&mut ChildStdin) -> std::io::Result<()> + Send {
    move |stdin| stdin.write_all(&data)
}

/// Keeps stdin open for `before`, feeds `data`, keeps it open for `after`, then ends it.
fn feed_later(
    before: Duration,
    data: &'static [u8],
    after: Duration,
) -> impl FnOnce(&mut ChildStdin) -> std::io::Result<()> + Send {
    move |stdin| {
        thread::sleep(before);
        stdin.write_all(data)?;
        stdin.flush()?;
        thread::sleep(after);
        Ok(())
    }
}

/// `len` pseudo-random bytes from `pick` (xorshift64, fixed seed: failures reproduce).
pub(crate) fn random_bytes(len: usize, pick: impl Fn(u64) -> Option<u8>) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend(pick(state));
    }
    out
}

pub(crate) const MIB: usize = 1 << 20;

/// One 1 MiB stdin line through `wsecho dial --stdin [--binary]` comes back byte for byte:
/// printable ASCII as text; as binary every byte value but b'\n' (the line end), and not
/// ending in b'\r' (dial drops a CR before the newline).
fn dial_large(server: Server, binary: bool) {
    let payload = if binary {
        let mut bytes = random_bytes(MIB, |r| Some((r >> 24) as u8).filter(|&b| b != b'\n'));
        *bytes.last_mut().expect("non-empty") = b'x';
        bytes
    } else {
        random_bytes(MIB, |r| Some(b' ' + ((r >> 24) % 95) as u8))
    };
    let mut input = payload.clone();
    input.push(b'\n');
    let extra: &[&str] = if binary {
        &["--stdin", "--binary", "--wait", WAIT]
    } else {
        &["--stdin", "--wait", WAIT]
    };
    let done = dial_fed(
        &server.echo_url(),
        extra,
        feed_all(input.clone()),
        CLIENT_LIMIT,
    );
    let context = format!("{}\n{}", done.describe(), server.log());
    assert!(done.status.success(), "nonzero exit: {context}");
    if done.stdout != input {
        let at = done
            .stdout
            .iter()
            .zip(&input)
            .position(|(a, b)| a != b)
            .unwrap_or(done.stdout.len().min(input.len()));
        panic!(
            "echo of a {} byte line differs: got {} bytes, first difference at byte {at}: {context}",
            input.len(),
            done.stdout.len()
        );
    }
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn wsecho_dial_stdin_1mib_text_to_go_server() {
    dial_large(start_go_server(), false);
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn wsecho_dial_stdin_1mib_text_to_python_server() {
    dial_large(start_py_server(), false);
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn wsecho_dial_stdin_1mib_binary_to_go_server() {
    dial_large(start_go_server(), true);
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn wsecho_dial_stdin_1mib_binary_to_python_server() {
    dial_large(start_py_server(), true);
}

/// How long stdin stays open, and the connection quiet, in the ping tests.
const QUIET: Duration = Duration::from_millis(3500);

/// Stdin stays open, and the connection quiet, for `QUIET`: with `--ping-interval 1` dial
/// pings after each quiet second and gives up when a ping gets no answer within a second
/// (about 2 s in: the negative control below shows it does), so exit 0 with the late line
/// echoed means the peer answered every ping. (Shorter intervals, 0.1 s and then 0.2 s, were
/// missed by peers that a loaded 2-CPU machine stalled.)
fn dial_quiet_with_pings(url: &str) -> Dialed {
    dial_fed(
        url,
        &["--stdin", "--ping-interval", "1", "--wait", WAIT],
        feed_later(QUIET, b"after the pings\n", Duration::ZERO),
        CLIENT_LIMIT,
    )
}

fn dial_pings_answered(server: &Server) {
    let done = dial_quiet_with_pings(&server.echo_url());
    let context = format!("{}\n{}", done.describe(), server.log());
    assert!(
        done.status.success() && done.stdout == b"after the pings\n",
        "want exit 0 and the line echoed: {context}"
    );
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn wsecho_dial_pings_answered_by_go_server() {
    let server = start_go_server();
    dial_pings_answered(&server);
    // The Go peer logs each ping it answers: dial did ping while quiet.
    let pings = server
        .log_text()
        .lines()
        .filter(|l| l.ends_with(" ping"))
        .count();
    assert!(
        pings >= 2,
        "go server answered {pings} pings, want >= 2\n{}",
        server.log()
    );
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn wsecho_dial_pings_answered_by_python_server() {
    dial_pings_answered(&start_py_server());
}

/// A server that completes the handshake and then never reads, so never answers a ping.
/// It holds the connection until the returned sender is dropped (or 10 s pass).
fn deaf_server() -> (u16, mpsc::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("local_addr").port();
    listener.set_nonblocking(true).expect("set_nonblocking");
    let (release, released) = mpsc::channel::<()>();
    thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                Err(_) => return,
            }
        };
        stream.set_nonblocking(false).expect("set_nonblocking");
        let Ok(ws) = tungstenite::accept(stream) else {
            return;
        };
        let _ = released.recv_timeout(Duration::from_secs(10));
        drop(ws);
    });
    (port, release)
}

/// The negative control for the two tests above: the same run against a server that never
/// answers must fail, and before stdin's line was due (it gives up ~2 s after connecting).
#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn wsecho_dial_gives_up_on_a_server_that_never_answers_pings() {
    let (port, _release) = deaf_server();
    let done = dial_quiet_with_pings(&format!("ws://127.0.0.1:{port}/echo"));
    let context = done.describe();
    assert_eq!(done.status.code(), Some(1), "want exit 1: {context}");
    assert!(
        done.stderr.contains("answered nothing"),
        "want 'answered nothing' on stderr: {context}"
    );
    assert!(
        done.took < QUIET,
        "want it to give up before its line was due, {QUIET:?} in: {context}"
    );
}

/// Dial's normal end (end of stdin) closes with 1000, as the peer saw it.
fn dial_closes_with_1000(server: Server) {
    let done = dial_fed(
        &server.echo_url(),
        &["--stdin", "--wait", WAIT],
        feed_all(b"bye\n".to_vec()),
        CLIENT_LIMIT,
    );
    let context = done.describe();
    assert!(
        done.status.success() && done.stdout == b"bye\n",
        "want exit 0 and 'bye' echoed: {context}\n{}",
        server.log()
    );
    server.wait_for_log_about("client close code 1000", Duration::from_secs(5), &context);
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn wsecho_dial_closes_with_1000_to_go_server() {
    dial_closes_with_1000(start_go_server());
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn wsecho_dial_closes_with_1000_to_python_server() {
    dial_closes_with_1000(start_py_server());
}

/// How long stdin stays open after the line when the server's Close should end dial first:
/// long enough that an exit at end of input cannot pass for one at the Close.
const HOLD: Duration = Duration::from_secs(10);

/// `wsecho dial --stdin` to the Python peer's /closeNNNN, which echoes one line and then
/// closes with NNNN. `hold` keeps stdin open that long after the line, so the server's
/// Close arrives while dial waits for input; with `hold` zero, stdin ends at once, so it
/// arrives while dial waits for the echo or has just seen it.
fn dial_to_closing_python_server(code: u16, hold: Duration) -> Dialed {
    let server = start_py_server();
    let url = format!("ws://127.0.0.1:{}/close{code}", server.port);
    let done = dial_fed(
        &url,
        &["--stdin", "--wait", WAIT],
        feed_later(Duration::ZERO, b"hi\n", hold),
        CLIENT_LIMIT,
    );
    assert_eq!(
        done.stdout,
        b"hi\n",
        "want 'hi' echoed: {}\n{}",
        done.describe(),
        server.log()
    );
    done
}

fn assert_exit_1_naming_4001(done: &Dialed) {
    let context = done.describe();
    assert_eq!(done.status.code(), Some(1), "want exit 1: {context}");
    assert!(
        done.stderr.contains("4001"),
        "want 4001 on stderr: {context}"
    );
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn wsecho_dial_server_close_4001_from_python_server() {
    let done = dial_to_closing_python_server(4001, HOLD);
    assert_exit_1_naming_4001(&done);
    assert!(
        done.took < Duration::from_secs(5),
        "want dial to exit at the server's Close, not at end of input: {}",
        done.describe()
    );
}

/// The same with stdin ending right after the line: the server's Close 4001 comes right
/// behind the last echo, and still decides the exit status.
#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn wsecho_dial_server_close_4001_right_after_last_echo_from_python_server() {
    assert_exit_1_naming_4001(&dial_to_closing_python_server(4001, Duration::ZERO));
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn wsecho_dial_server_close_1001_from_python_server() {
    for hold in [HOLD, Duration::ZERO] {
        let done = dial_to_closing_python_server(1001, hold);
        assert!(
            done.status.success() && done.took < Duration::from_secs(5),
            "want exit 0 at the server's Close 1001 (stdin held {hold:?}): {}",
            done.describe()
        );
    }
}
