//! `serve --tls-*` and `dial wss://` against each other, over loopback, with certificates
//! made for this run (see `certs`).

use crate::certs::{self, Certs};
use crate::common::{Finished, Running, Server, run, wsecho};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(20);

/// The certificates every test here uses, made once per test process.
pub(crate) fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("tls-certs")
            .join(std::process::id().to_string());
        let _ = std::fs::remove_dir_all(&dir);
        certs::make(&dir)
    })
}

fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// `wsecho serve --tls-cert CERT --tls-key KEY EXTRA…` on `addr` (port 0).
pub(crate) fn serve_tls_on(addr: &str, cert: &Path, key: &Path, extra: &[&str]) -> Server {
    let mut cmd = Command::new(wsecho());
    cmd.args([
        "serve",
        "--addr",
        addr,
        "--tls-cert",
        s(cert),
        "--tls-key",
        s(key),
    ])
    .args(extra);
    Server::launch("serve-tls", cmd)
}

pub(crate) fn serve_tls(cert: &Path, key: &Path, extra: &[&str]) -> Server {
    serve_tls_on("127.0.0.1:0", cert, key, extra)
}

fn wss(server: &Server, host: &str) -> String {
    format!("wss://{host}:{}/echo", server.port)
}

/// `wsecho dial ARGS` with `stdin` as its input lines, to its end.
fn dial(args: &[&str], stdin: &str) -> Finished {
    let mut cmd = Command::new(wsecho());
    cmd.arg("dial").args(args).arg("--stdin");
    let done = run(
        "wsecho dial",
        &mut cmd,
        Some(stdin.as_bytes().to_vec()),
        LIMIT,
    );
    done.assert_no_panic();
    done
}

fn assert_exit(done: &Finished, code: i32) {
    assert_eq!(done.status.code(), Some(code), "{}", done.describe());
}

fn assert_says(done: &Finished, words: &[&str]) {
    for word in words {
        assert!(
            done.stderr.contains(word),
            "no {word:?}: {}",
            done.describe()
        );
    }
}

#[test]
fn dial_with_ca_echoes_text_and_binary_over_ecdsa_and_rsa() {
    let c = certs();
    for (cert, key) in [
        (&c.server_ec_chain, &c.server_ec_key_sec1),
        (&c.server_rsa_chain, &c.server_rsa_key_pkcs1),
    ] {
        let server = serve_tls(cert, key, &[]);
        for host in ["localhost", "127.0.0.1"] {
            let url = wss(&server, host);
            let done = dial(&["--ca", s(&c.ca), &url], "hello\nworld\n");
            assert_exit(&done, 0);
            assert_eq!(done.stdout, "hello\nworld\n", "{}", done.describe());
            let done = dial(&["--ca", s(&c.ca), "--binary", &url], "\u{1}bytes\n");
            assert_exit(&done, 0);
            assert_eq!(done.stdout, "\u{1}bytes\n", "{}", done.describe());
        }
        // Larger than a TLS record, a read buffer and a WebSocket fragment.
        let big = format!("{}\n", "0123456789abcdef".repeat(20_000));
        let done = dial(&["--ca", s(&c.ca), &wss(&server, "localhost")], &big);
        assert_exit(&done, 0);
        assert!(done.stdout == big, "{} bytes back", done.stdout.len());
        server.assert_no_panic();
    }
}

#[test]
fn plain_http_to_the_tls_port_gets_400_saying_it_speaks_tls() {
    let c = certs();
    let server = serve_tls(&c.server_ec_chain, &c.server_ec_key, &[]);
    let mut socket = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    socket.set_read_timeout(Some(LIMIT)).unwrap();
    socket
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = socket.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer:?}");
    assert!(answer.contains("speaks TLS"), "{answer:?}");
    assert!(answer.contains("https://"), "{answer:?}");
}

#[test]
fn an_unknown_issuer_fails_with_the_flags_that_help() {
    let c = certs();
    let server = serve_tls(&c.server_ec_chain, &c.server_ec_key, &[]);
    // System roots that do not include the test CA.
    let mut cmd = Command::new(wsecho());
    cmd.env("SSL_CERT_FILE", &c.self_signed)
        .env_remove("SSL_CERT_DIR")
        .args(["dial", "--count", "1", &wss(&server, "localhost")]);
    let done = run("wsecho dial", &mut cmd, None, LIMIT);
    assert_exit(&done, 1);
    assert_says(
        &done,
        &[
            "not issued by a trusted",
            "--ca",
            "SSL_CERT_FILE",
            "--insecure",
        ],
    );
}

#[test]
fn insecure_connects_to_a_self_signed_server_and_warns() {
    let c = certs();
    let server = serve_tls(&c.self_signed, &c.self_signed_key, &[]);
    let done = dial(&["-k", &wss(&server, "localhost")], "hi\n");
    assert_exit(&done, 0);
    assert_eq!(done.stdout, "hi\n", "{}", done.describe());
    assert_says(&done, &["warning", "not checked"]);
}

#[test]
fn a_name_mismatch_lists_the_names_the_certificate_has() {
    let c = certs();
    let server = serve_tls_on("127.0.0.2:0", &c.server_ec_chain, &c.server_ec_key, &[]);
    let done = dial(&["--ca", s(&c.ca), &wss(&server, "127.0.0.2")], "hi\n");
    assert_exit(&done, 1);
    assert_says(
        &done,
        &["not valid for 127.0.0.2", "localhost, 127.0.0.1, ::1"],
    );
}

#[test]
fn an_expired_certificate_is_refused() {
    let c = certs();
    let server = serve_tls(&c.expired, &c.expired_key, &[]);
    let done = dial(&["--ca", s(&c.ca), &wss(&server, "localhost")], "hi\n");
    assert_exit(&done, 1);
    assert_says(&done, &["expired"]);
}

#[test]
fn mutual_tls_admits_a_client_certificate_and_names_it_and_refuses_none() {
    let c = certs();
    let server = serve_tls(
        &c.server_ec_chain,
        &c.server_ec_key,
        &["--client-ca", s(&c.ca)],
    );
    let url = wss(&server, "localhost");
    let ca = s(&c.ca);
    let done = dial(
        &[
            "--ca",
            ca,
            "--cert",
            s(&c.client),
            "--key",
            s(&c.client_key),
            &url,
        ],
        "me\n",
    );
    assert_exit(&done, 0);
    assert_eq!(done.stdout, "me\n", "{}", done.describe());
    server.wait_for_log("(O=wsecho tests, CN=wsecho test client)", LIMIT);

    let done = dial(&["--ca", ca, &url], "me\n");
    assert_exit(&done, 1);
    assert_says(&done, &["--cert FILE --key FILE"]);
    server.wait_for_log("refused", LIMIT);
}

fn sighup(server: &Server) {
    let pid = libc::pid_t::try_from(server.pid()).unwrap();
    // SAFETY: kill(2) on our own child, which the Server holds unreaped.
    let rc = unsafe { libc::kill(pid, libc::SIGHUP) };
    assert_eq!(rc, 0, "kill -HUP: {}", std::io::Error::last_os_error());
}

/// How many times `needle` occurs in the server's log.
fn count_in_log(server: &Server, needle: &str) -> usize {
    server.log_text().matches(needle).count()
}

fn wait_for_count(server: &Server, needle: &str, n: usize) {
    let deadline = Instant::now() + LIMIT;
    while count_in_log(server, needle) < n {
        assert!(Instant::now() < deadline, "no {needle:?}\n{}", server.log());
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sighup_reloads_for_new_handshakes_keeps_open_connections_and_survives_a_bad_file() {
    let c = certs();
    let dir = c.dir.join(format!("reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key): (PathBuf, PathBuf) = (dir.join("live.pem"), dir.join("live.key"));
    std::fs::copy(&c.server_ec_chain, &cert).unwrap();
    std::fs::copy(&c.server_ec_key, &key).unwrap();
    let server = serve_tls(&cert, &key, &[]);
    let url = wss(&server, "localhost");
    let ca = s(&c.ca);
    let mut old = {
        let mut cmd = Command::new(wsecho());
        cmd.args(["dial", "--ca", ca, "--interval", "0.1", &url]);
        Running::start("long-lived dial", cmd)
    };
    assert!(old.next_line(LIMIT).starts_with("recv: "));

    // A reload that fails keeps the pair in use.
    std::fs::write(&cert, "renewal in progress\n").unwrap();
    sighup(&server);
    server.wait_for_log("tls: reload failed", LIMIT);
    assert!(server.log_text().contains("live.pem"), "{}", server.log());
    assert_exit(&dial(&["--ca", ca, &url], "still\n"), 0);

    // A good reload: new handshakes see the new (here: expired) certificate.
    std::fs::copy(&c.expired, &cert).unwrap();
    std::fs::copy(&c.expired_key, &key).unwrap();
    sighup(&server);
    wait_for_count(&server, "tls: reloaded certificate from", 1);
    let done = dial(&["--ca", ca, &url], "new\n");
    assert_exit(&done, 1);
    assert_says(&done, &["expired"]);

    // The connection made before both reloads still echoes.
    for _ in 0..3 {
        assert!(old.next_line(LIMIT).starts_with("recv: "));
    }
    old.sigint();
    let (done, _) = old.wait(LIMIT);
    assert_exit(&done, 0);
    server.assert_no_panic();
}

#[test]
fn a_trickled_client_hello_is_cut_at_the_handshake_timeout() {
    let c = certs();
    let server = serve_tls(
        &c.server_ec_chain,
        &c.server_ec_key,
        &["--handshake-timeout", "1"],
    );
    let mut socket = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let start = Instant::now();
    // The server's end of the connection, seen from a thread that reads until it comes.
    let (ended, end) = std::sync::mpsc::channel();
    let mut reader = socket.try_clone().unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 256];
        while let Ok(1..) = reader.read(&mut buf) {}
        let _ = ended.send(start.elapsed());
    });
    // A TLS handshake record header announcing 512 bytes, then one byte every 100 ms: the
    // whole ClientHello would take 50 s.
    let _ = socket.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]);
    let cut = loop {
        if let Ok(cut) = end.recv_timeout(Duration::from_millis(100)) {
            break cut;
        }
        let _ = socket.write_all(&[0x01]);
        assert!(start.elapsed() < LIMIT, "still open after {LIMIT:?}");
    };
    assert!(cut < Duration::from_secs(10), "cut only after {cut:?}");
    server.assert_no_panic();
}

#[test]
fn sighup_to_a_plain_server_only_logs_and_the_server_goes_on() {
    let server = crate::common::serve("serve-plain-hup", &[]);
    sighup(&server);
    server.wait_for_log("SIGHUP: nothing to reload", LIMIT);
    let mut cmd = Command::new(wsecho());
    cmd.args(["dial", "--stdin", &server.echo_url()]);
    let done = run(
        "wsecho dial",
        &mut cmd,
        Some(b"still here\n".to_vec()),
        LIMIT,
    );
    assert_exit(&done, 0);
    assert_eq!(done.stdout, "still here\n", "{}", done.describe());
}

/// Python's `ssl` module as a raw TLS peer, so that a test decides which bytes share one TLS
/// record: `script` runs with the test CA's and the server pair's paths as `CA`, `CERT`, `KEY`
/// and `PORT` (0 for a peer that listens: it prints its port first).
pub(crate) fn python_tls(script: &str, port: u16) -> Running {
    let c = certs();
    let prelude = format!(
        "import base64, hashlib, os, socket, ssl, sys\n\
         CA, CERT, KEY, PORT = {:?}, {:?}, {:?}, {port}\n",
        s(&c.ca),
        s(&c.server_ec_chain),
        s(&c.server_ec_key),
    );
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(format!("{prelude}{script}"));
    Running::start("python3 TLS peer", cmd)
}

/// A client that sends its upgrade request and its first frame in one write, so in one TLS
/// record: the frame arrives with the request, before the server has answered.
const PIPELINING_CLIENT: &str = r#"
ctx = ssl.create_default_context(cafile=CA)
tls = ctx.wrap_socket(socket.create_connection(("127.0.0.1", PORT)), server_hostname="localhost")
key = base64.b64encode(os.urandom(16)).decode()
request = (f"GET /echo HTTP/1.1\r\nHost: localhost:{PORT}\r\nUpgrade: websocket\r\n"
           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
mask, payload = b"\x01\x02\x03\x04", b"riding along"
frame = bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
tls.sendall(request.encode() + frame)
tls.settimeout(10)
got = b""
while b"riding along" not in got:
    chunk = tls.recv(4096)
    if not chunk:
        break
    got += chunk
print("101" if b" 101 " in got else "no 101", "echoed" if b"\x81\x0criding along" in got else "not echoed", flush=True)
"#;

/// A server that sends its 101 and a first message in one write, so in one TLS record, then
/// sends nothing more (not even a reply to the client's Close): only a first turn that reads
/// what came with the 101 can see that message.
pub(crate) const PIPELINING_SERVER: &str = r#"
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(CERT, KEY)
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
tls = ctx.wrap_socket(listener.accept()[0], server_side=True)
head = b""
while b"\r\n\r\n" not in head:
    head += tls.recv(4096)
key = [l.split(b":", 1)[1].strip() for l in head.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key:")][0]
accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
tls.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + b"\x81\x13in the 101's record")
try:
    while tls.recv(4096):
        pass
except OSError:
    pass
"#;

/// A first frame that shares a TLS record with the upgrade request is echoed: the bytes the
/// request's reader read past the head are read as plaintext, not decrypted a second time.
#[test]
fn a_frame_in_the_same_tls_record_as_the_upgrade_request_is_echoed() {
    let c = certs();
    let server = serve_tls(&c.server_ec_chain, &c.server_ec_key, &[]);
    let mut client = python_tls(PIPELINING_CLIENT, server.port);
    let said = client.next_line(LIMIT);
    assert_eq!(said.trim(), "101 echoed", "{}", server.log());
    server.wait_for_log("recv: riding along", Duration::from_secs(5));
}

/// The same on dial's side: a message in the 101's own TLS record is received.
#[test]
fn a_message_in_the_same_tls_record_as_the_101_is_received() {
    let mut server = python_tls(PIPELINING_SERVER, 0);
    let port = server.next_line(LIMIT);
    let url = format!("wss://localhost:{}/echo", port.trim());
    let done = dial(&[&url, "--ca", s(&certs().ca)], "");
    assert_exit(&done, 0);
    assert_eq!(done.stdout, "in the 101's record\n", "{}", done.describe());
}

/// A client that upgrades, sends close_notify, then goes on sending bytes that are not TLS
/// (256 MiB of zeros) on the same TCP connection, and keeps it open.
const TALKS_PAST_CLOSE_NOTIFY: &str = r#"
import time
raw = socket.create_connection(("127.0.0.1", PORT))
ctx = ssl.create_default_context(cafile=CA)
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ctx.wrap_bio(inc, out, server_hostname="localhost")
def pump():
    data = out.read()
    if data:
        raw.sendall(data)
def call(f, *args):
    while True:
        try:
            return f(*args)
        except ssl.SSLWantReadError:
            pump()
            inc.write(raw.recv(65536))
call(tls.do_handshake)
key = base64.b64encode(os.urandom(16)).decode()
tls.write((f"GET /echo HTTP/1.1\r\nHost: localhost:{PORT}\r\nUpgrade: websocket\r\n"
           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
pump()
got = b""
while b"\r\n\r\n" not in got:
    got += call(tls.read, 4096)
try:
    tls.unwrap()
except ssl.SSLWantReadError:
    pass
pump()
zeros = bytes(1 << 20)
for _ in range(256):
    raw.sendall(zeros)
print("sent", flush=True)
time.sleep(60)
"#;

/// Bytes after the peer's close_notify are ignored (RFC 8446, 6.1), not kept: a client that
/// goes on sending them cannot make the server hold them all.
#[test]
fn bytes_after_close_notify_are_not_kept() {
    let c = certs();
    let server = serve_tls(&c.server_ec_chain, &c.server_ec_key, &["--quiet"]);
    let rss = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid()))
            .expect("the server's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS")
    };
    let before = rss();
    let mut client = python_tls(TALKS_PAST_CLOSE_NOTIFY, server.port);
    assert_eq!(client.next_line(LIMIT).trim(), "sent", "{}", server.log());
    // Let the server read what is still in the socket's buffers.
    thread::sleep(Duration::from_millis(500));
    let grown = rss().saturating_sub(before);
    assert!(
        grown < 64 * 1024,
        "the server grew by {grown} KiB on 256 MiB sent after close_notify"
    );
}
