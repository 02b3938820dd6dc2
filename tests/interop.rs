//! Interop with real peers (issue 7): wsecho against WebSocket programs built on
//! independent libraries: Go gorilla/websocket, Python `websockets`, Node `ws`.
//! The peers live in tests/peers/ and are installed by tests/peers/setup.sh, so
//! every test here is ignored by default (plain `cargo test` stays hermetic):
//!
//!     bash tests/peers/setup.sh && cargo test --test interop -- --include-ignored
//!
//! A missing peer fails the test with a message naming setup.sh.

mod common;

use common::{Finished, Server, free_port, repo_root, run, wsecho};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const NEEDS: &str = "run tests/peers/setup.sh first";
/// Every peer client has its own 20 s deadline; this one is a backstop.
const CLIENT_LIMIT: Duration = Duration::from_secs(30);

// ---- the peers ---------------------------------------------------------------

fn peer_file(rel: &str) -> PathBuf {
    let path = repo_root().join(rel);
    assert!(path.exists(), "peer missing: {} ({NEEDS})", path.display());
    path
}

fn go_server_cmd(port: u16) -> Command {
    let mut cmd = Command::new(peer_file("target/peers/go-echo-server"));
    cmd.arg("-addr").arg(format!("127.0.0.1:{port}"));
    cmd
}

fn py_server_cmd(port: u16) -> Command {
    let mut cmd = Command::new(peer_file("target/peers/venv/bin/python"));
    cmd.arg(peer_file("tests/peers/py/server.py"))
        .arg(port.to_string());
    cmd
}

fn go_client_cmd(url: &str) -> Command {
    let mut cmd = Command::new(peer_file("target/peers/go-echo-client"));
    cmd.arg("-url").arg(url);
    cmd
}

fn py_client_cmd(url: &str) -> Command {
    let mut cmd = Command::new(peer_file("target/peers/venv/bin/python"));
    cmd.arg(peer_file("tests/peers/py/client.py")).arg(url);
    cmd
}

fn node_client_cmd(url: &str) -> Command {
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
    let port = free_port();
    let mut cmd = Command::new(wsecho());
    cmd.arg("serve")
        .arg("--addr")
        .arg(format!("127.0.0.1:{port}"));
    Server::start("wsecho-serve", cmd, port)
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
fn stdin_lines() -> Vec<String> {
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
    cmd.arg("dial").arg(server.echo_url()).args(extra);
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

// ---- the peers against each other (a failure here is the peers', not wsecho's) --

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn peers_go_client_to_python_server() {
    let server = start_py_server();
    client_passes("go-echo-client", go_client_cmd(&server.echo_url()), &server);
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn peers_python_client_to_go_server() {
    let server = start_go_server();
    client_passes("py-echo-client", py_client_cmd(&server.echo_url()), &server);
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn peers_node_client_to_go_server() {
    let server = start_go_server();
    client_passes(
        "node-echo-client",
        node_client_cmd(&server.echo_url()),
        &server,
    );
}
