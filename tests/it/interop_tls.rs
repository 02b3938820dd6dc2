//! Interop over TLS with real peers: Go gorilla/websocket, Python `websockets` and Node `ws`
//! clients against `wsecho serve --tls-cert … --tls-key …`; `wsecho dial --ca … wss://…`
//! against Go and Python TLS servers; mutual TLS with the Go peers. Every peer trusts only the
//! test CA that [`crate::certs`] makes for this run (or, where a test says so, another one).
//! Like interop.rs, every test is ignored by default:
//!
//!     bash tests/peers/setup.sh && cargo test --test it interop_tls -- --include-ignored
//!
//! The calibration tests at the end run the peers against each other over TLS, no wsecho
//! involved: when they pass and a test above fails, the failure is wsecho's. They also show
//! that each peer client refuses a server its CA did not issue, so a test here that expects
//! success cannot pass against a server presenting the wrong certificate.

use crate::certs::{self, Certs};
use crate::common::{Finished, Server, free_port, run, serve};
use crate::interop::{
    CLIENT_LIMIT, Dialed, MIB, WAIT, dial_fed, feed_all, go_client_cmd, go_server_cmd,
    node_client_cmd, py_client_cmd, py_server_cmd, random_bytes, stdin_lines,
};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The certificates of this test process (made on first use).
pub(crate) fn test_certs() -> &'static Certs {
    certs::shared(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("tls-interop-certs"))
}

fn p(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// `wss://127.0.0.1:PORT/echo` (the certificates name 127.0.0.1 among their IP SANs).
fn wss_url(server: &Server) -> String {
    format!("wss://127.0.0.1:{}/echo", server.port)
}

// ---- servers -----------------------------------------------------------------------------

/// `wsecho serve --tls-cert CHAIN --tls-key KEY EXTRA…` on a port the kernel picks.
pub(crate) fn start_wsecho_serve_tls(chain: &Path, key: &Path, extra: &[&str]) -> Server {
    let mut args = vec!["--tls-cert", p(chain), "--tls-key", p(key)];
    args.extend_from_slice(extra);
    serve("wsecho-serve-tls", &args)
}

fn start_wsecho_serve_ec() -> Server {
    let c = test_certs();
    start_wsecho_serve_tls(&c.server_ec_chain, &c.server_ec_key, &[])
}

/// The Go gorilla peer over TLS, the ECDSA pair; with `client_ca`, requiring client
/// certificates that CA issued.
fn start_go_tls_server(client_ca: Option<&Path>) -> Server {
    let c = test_certs();
    let port = free_port();
    let mut cmd = go_server_cmd(port);
    cmd.args(["-cert", p(&c.server_ec_chain), "-key", p(&c.server_ec_key)]);
    if let Some(ca) = client_ca {
        cmd.args(["-client-ca", p(ca)]);
    }
    Server::start("go-echo-server-tls", cmd, port)
}

/// The Python `websockets` peer over TLS (ssl.SSLContext), the RSA pair: the other key type.
fn start_py_tls_server() -> Server {
    let c = test_certs();
    let port = free_port();
    let mut cmd = py_server_cmd(port);
    cmd.args([
        "--cert",
        p(&c.server_rsa_chain),
        "--key",
        p(&c.server_rsa_key),
    ]);
    Server::start("py-echo-server-tls", cmd, port)
}

// ---- peer clients ------------------------------------------------------------------------

/// The three peer clients for `url`, each trusting only `ca`.
fn peer_clients(url: &str, ca: &Path) -> [(&'static str, Command); 3] {
    let mut go = go_client_cmd(url);
    go.args(["-ca", p(ca)]);
    let mut py = py_client_cmd(url);
    py.args(["--ca", p(ca)]);
    let mut node = node_client_cmd(url);
    node.args(["--ca", p(ca)]);
    [
        ("go-echo-client", go),
        ("py-echo-client", py),
        ("node-echo-client", node),
    ]
}

fn peer_client(which: &str, url: &str, ca: &Path) -> Command {
    peer_clients(url, ca)
        .into_iter()
        .find(|(name, _)| *name == which)
        .map(|(_, cmd)| cmd)
        .expect("a known peer client")
}

/// Runs a peer client (text, unicode, binary, 1 MiB binary, ping, Close 1000) against
/// `server`; it must exit 0 and print `ok` last.
fn client_passes(name: &str, mut cmd: Command, server: &Server) {
    let done = run(name, &mut cmd, None, CLIENT_LIMIT);
    let last = done.stdout.lines().last().unwrap_or("");
    assert!(
        done.status.success() && last == "ok",
        "{name} against {} ({}) failed\n{}\n{}",
        server.name,
        wss_url(server),
        done.describe(),
        server.log()
    );
}

/// Runs a peer client that must fail against `server`, and fail over the certificate (not,
/// say, because nothing listens): its output names a certificate.
fn client_refused(name: &str, mut cmd: Command, server: &Server) -> Finished {
    let done = run(name, &mut cmd, None, CLIENT_LIMIT);
    let out = format!("{}{}", done.stdout, done.stderr).to_lowercase();
    assert!(
        !done.status.success() && !done.stdout.lines().any(|l| l == "ok"),
        "{name} against {} ({}) should have failed\n{}\n{}",
        server.name,
        wss_url(server),
        done.describe(),
        server.log()
    );
    assert!(
        out.contains("certificate"),
        "{name} against {} failed, but not over a certificate\n{}\n{}",
        server.name,
        done.describe(),
        server.log()
    );
    done
}

// ---- peer clients -> wsecho serve --tls-* --------------------------------------------------

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn go_client_to_wsecho_serve_tls() {
    let server = start_wsecho_serve_ec();
    let cmd = peer_client("go-echo-client", &wss_url(&server), &test_certs().ca);
    client_passes("go-echo-client", cmd, &server);
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn python_client_to_wsecho_serve_tls() {
    let server = start_wsecho_serve_ec();
    let cmd = peer_client("py-echo-client", &wss_url(&server), &test_certs().ca);
    client_passes("py-echo-client", cmd, &server);
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn node_client_to_wsecho_serve_tls() {
    let server = start_wsecho_serve_ec();
    let cmd = peer_client("node-echo-client", &wss_url(&server), &test_certs().ca);
    client_passes("node-echo-client", cmd, &server);
}

/// The RSA certificate with its key in PKCS#1 form ("RSA PRIVATE KEY"), as older tools write
/// it, to every peer client.
#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn peer_clients_to_wsecho_serve_tls_rsa_pkcs1_key() {
    let c = test_certs();
    let server = start_wsecho_serve_tls(&c.server_rsa_chain, &c.server_rsa_key_pkcs1, &[]);
    for (name, cmd) in peer_clients(&wss_url(&server), &c.ca) {
        client_passes(name, cmd, &server);
    }
}

/// Every peer client that trusts another CA refuses wsecho's certificate, and the refused
/// handshakes do not hurt the server: a client that trusts the test CA passes after them.
#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn peer_clients_trusting_another_ca_refuse_wsecho_serve_tls() {
    let server = start_wsecho_serve_ec();
    let url = wss_url(&server);
    for (name, cmd) in peer_clients(&url, &test_certs().self_signed) {
        client_refused(name, cmd, &server);
    }
    let cmd = peer_client("go-echo-client", &url, &test_certs().ca);
    client_passes("go-echo-client", cmd, &server);
    server.assert_no_panic();
}

// ---- wsecho dial --ca -> peer TLS servers -----------------------------------------------

/// `wsecho dial URL --ca CA EXTRA…` fed `input` on stdin.
fn dial_tls(url: &str, ca: &Path, extra: &[&str], input: Vec<u8>) -> Dialed {
    let mut args = vec!["--ca", p(ca), "--wait", WAIT];
    args.extend_from_slice(extra);
    dial_fed(url, &args, feed_all(input), CLIENT_LIMIT)
}

/// 200 stdin lines, most with non-ASCII text, come back in order, as text or as binary.
fn dial_tls_lines(server: Server, binary: bool) {
    let lines = stdin_lines();
    let input = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    let extra: &[&str] = if binary {
        &["--stdin", "--binary"]
    } else {
        &["--stdin"]
    };
    let done = dial_tls(
        &wss_url(&server),
        &test_certs().ca,
        extra,
        input.clone().into_bytes(),
    );
    let context = format!("{}\n{}", done.describe(), server.log());
    assert!(done.status.success(), "nonzero exit: {context}");
    assert!(
        done.stdout == input.as_bytes(),
        "stdout is not the {} lines fed, in order: {context}",
        lines.len()
    );
}

/// One 1 MiB line (printable ASCII) comes back byte for byte.
fn dial_tls_1mib(server: Server) {
    let mut input = random_bytes(MIB, |r| Some(b' ' + ((r >> 24) % 95) as u8));
    input.push(b'\n');
    let done = dial_tls(
        &wss_url(&server),
        &test_certs().ca,
        &["--stdin"],
        input.clone(),
    );
    let context = format!("{}\n{}", done.describe(), server.log());
    assert!(done.status.success(), "nonzero exit: {context}");
    assert!(
        done.stdout == input,
        "the echo of a {} byte line differs ({} bytes back): {context}",
        input.len(),
        done.stdout.len()
    );
}

/// Dial's normal end (end of stdin) closes with 1000, as the peer saw it.
fn dial_tls_closes_with_1000(server: Server) {
    let done = dial_tls(
        &wss_url(&server),
        &test_certs().ca,
        &["--stdin"],
        b"bye\n".to_vec(),
    );
    let context = done.describe();
    assert!(
        done.status.success() && done.stdout == b"bye\n",
        "want exit 0 and 'bye' echoed: {context}\n{}",
        server.log()
    );
    server.wait_for_log_about("client close code 1000", Duration::from_secs(5), &context);
}

/// Without `--ca`, dial checks the peer's certificate against the system's roots, which did
/// not issue it: exit 1, nothing echoed, and the error names `--ca`, the way out.
fn dial_tls_refuses_unknown_issuer(server: Server) {
    let done = dial_fed(
        &wss_url(&server),
        &["--stdin", "--wait", WAIT],
        feed_all(b"never echoed\n".to_vec()),
        CLIENT_LIMIT,
    );
    let context = format!("{}\n{}", done.describe(), server.log());
    assert_eq!(done.status.code(), Some(1), "want exit 1: {context}");
    assert!(done.stdout.is_empty(), "want nothing echoed: {context}");
    assert!(
        done.stderr.contains("--ca"),
        "want the error to name --ca: {context}"
    );
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn wsecho_dial_ca_stdin_to_go_tls_server() {
    dial_tls_lines(start_go_tls_server(None), false);
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn wsecho_dial_ca_stdin_to_python_tls_server() {
    dial_tls_lines(start_py_tls_server(), false);
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn wsecho_dial_ca_stdin_binary_to_go_tls_server() {
    dial_tls_lines(start_go_tls_server(None), true);
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn wsecho_dial_ca_stdin_binary_to_python_tls_server() {
    dial_tls_lines(start_py_tls_server(), true);
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn wsecho_dial_ca_1mib_to_go_tls_server() {
    dial_tls_1mib(start_go_tls_server(None));
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn wsecho_dial_ca_1mib_to_python_tls_server() {
    dial_tls_1mib(start_py_tls_server());
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn wsecho_dial_ca_closes_with_1000_to_go_tls_server() {
    dial_tls_closes_with_1000(start_go_tls_server(None));
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn wsecho_dial_ca_closes_with_1000_to_python_tls_server() {
    dial_tls_closes_with_1000(start_py_tls_server());
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn wsecho_dial_without_ca_refuses_go_tls_server() {
    dial_tls_refuses_unknown_issuer(start_go_tls_server(None));
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn wsecho_dial_without_ca_refuses_python_tls_server() {
    dial_tls_refuses_unknown_issuer(start_py_tls_server());
}

// ---- mutual TLS ------------------------------------------------------------------------

/// The Go client with the test client certificate, against `serve --client-ca`: it passes,
/// and the server's `open` line names the certificate's subject.
#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn go_client_with_certificate_to_wsecho_serve_client_ca() {
    let c = test_certs();
    let server = start_wsecho_serve_tls(
        &c.server_ec_chain,
        &c.server_ec_key,
        &["--client-ca", p(&c.ca)],
    );
    let mut cmd = peer_client("go-echo-client", &wss_url(&server), &c.ca);
    cmd.args(["-cert", p(&c.client), "-key", p(&c.client_key)]);
    client_passes("go-echo-client -cert", cmd, &server);
    // The log reaches its file within its flush delay, not at once.
    let log = server.wait_for_log("wsecho test client", Duration::from_secs(10));
    assert!(
        log.lines()
            .any(|l| l.contains("open ") && l.contains("wsecho test client")),
        "want an `open` line naming the client certificate's subject\n{}",
        server.log()
    );
}

/// `serve --client-ca` refuses the Go client without a certificate, and with one its CA did
/// not issue; the server stays up for a client with the right one.
#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn wsecho_serve_client_ca_refuses_go_client_without_a_valid_certificate() {
    let c = test_certs();
    let server = start_wsecho_serve_tls(
        &c.server_ec_chain,
        &c.server_ec_key,
        &["--client-ca", p(&c.ca)],
    );
    let url = wss_url(&server);
    client_refused(
        "go-echo-client (no certificate)",
        peer_client("go-echo-client", &url, &c.ca),
        &server,
    );
    let mut stranger = peer_client("go-echo-client", &url, &c.ca);
    stranger.args(["-cert", p(&c.self_signed), "-key", p(&c.self_signed_key)]);
    client_refused(
        "go-echo-client (certificate of another issuer)",
        stranger,
        &server,
    );
    let mut cmd = peer_client("go-echo-client", &url, &c.ca);
    cmd.args(["-cert", p(&c.client), "-key", p(&c.client_key)]);
    client_passes("go-echo-client -cert", cmd, &server);
    server.assert_no_panic();
}

/// `wsecho dial --cert --key` against the Go server that requires client certificates.
#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn wsecho_dial_with_certificate_to_go_tls_server_requiring_one() {
    let c = test_certs();
    let server = start_go_tls_server(Some(&c.ca));
    let done = dial_tls(
        &wss_url(&server),
        &c.ca,
        &["--stdin", "--cert", p(&c.client), "--key", p(&c.client_key)],
        b"with a certificate\n".to_vec(),
    );
    assert!(
        done.status.success() && done.stdout == b"with a certificate\n",
        "want exit 0 and the line echoed: {}\n{}",
        done.describe(),
        server.log()
    );
}

/// The same without `--cert`: the Go server refuses the handshake, dial exits 1.
#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn wsecho_dial_without_certificate_refused_by_go_tls_server_requiring_one() {
    let c = test_certs();
    let server = start_go_tls_server(Some(&c.ca));
    let done = dial_tls(
        &wss_url(&server),
        &c.ca,
        &["--stdin"],
        b"never echoed\n".to_vec(),
    );
    let context = format!("{}\n{}", done.describe(), server.log());
    assert_eq!(done.status.code(), Some(1), "want exit 1: {context}");
    assert!(done.stdout.is_empty(), "want nothing echoed: {context}");
    assert!(
        done.stderr.to_lowercase().contains("certificate"),
        "want the error to say a certificate is missing: {context}"
    );
}

/// Both sides wsecho: `dial --cert --key` against `serve --client-ca`, and refused without.
#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn wsecho_dial_with_certificate_to_wsecho_serve_client_ca() {
    let c = test_certs();
    let server = start_wsecho_serve_tls(
        &c.server_ec_chain,
        &c.server_ec_key,
        &["--client-ca", p(&c.ca)],
    );
    let url = wss_url(&server);
    let with = dial_tls(
        &url,
        &c.ca,
        &["--stdin", "--cert", p(&c.client), "--key", p(&c.client_key)],
        b"mutual\n".to_vec(),
    );
    assert!(
        with.status.success() && with.stdout == b"mutual\n",
        "want exit 0 and the line echoed: {}\n{}",
        with.describe(),
        server.log()
    );
    let without = dial_tls(&url, &c.ca, &["--stdin"], b"never echoed\n".to_vec());
    assert!(
        without.status.code() == Some(1) && without.stdout.is_empty(),
        "want exit 1 and nothing echoed without --cert: {}\n{}",
        without.describe(),
        server.log()
    );
    server.assert_no_panic();
}

// ---- calibration: the peers against each other over TLS, no wsecho involved --------------

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn calibration_tls_peer_clients_to_go_tls_server() {
    let server = start_go_tls_server(None);
    for (name, cmd) in peer_clients(&wss_url(&server), &test_certs().ca) {
        client_passes(name, cmd, &server);
    }
}

#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn calibration_tls_go_and_node_clients_to_python_tls_server() {
    let server = start_py_tls_server();
    for (name, cmd) in peer_clients(&wss_url(&server), &test_certs().ca) {
        if name != "py-echo-client" {
            client_passes(name, cmd, &server);
        }
    }
}

/// Each peer client verifies: trusting another CA, it refuses the Go server's certificate.
#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn calibration_tls_peer_clients_trusting_another_ca_refuse_go_tls_server() {
    let server = start_go_tls_server(None);
    for (name, cmd) in peer_clients(&wss_url(&server), &test_certs().self_signed) {
        client_refused(name, cmd, &server);
    }
}

/// The Go client's `-cert` works, and the Go server's `-client-ca` refuses a client without.
#[test]
#[ignore = "needs peers: run tests/peers/setup.sh"]
fn calibration_tls_go_client_certificate_to_go_tls_server_requiring_one() {
    let c = test_certs();
    let server = start_go_tls_server(Some(&c.ca));
    let url = wss_url(&server);
    client_refused(
        "go-echo-client (no certificate)",
        peer_client("go-echo-client", &url, &c.ca),
        &server,
    );
    let mut cmd = peer_client("go-echo-client", &url, &c.ca);
    cmd.args(["-cert", p(&c.client), "-key", p(&c.client_key)]);
    client_passes("go-echo-client -cert", cmd, &server);
}
