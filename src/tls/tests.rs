//! The TLS pieces over real loopback sockets, with certificates made for this run.

#[path = "../../tests/it/certs.rs"]
mod certs;

use super::error::FileProblem;
use super::*;
use certs::Certs;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// The certificates every test here uses, made once per test process.
fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/tls-unit-certs")
            .join(std::process::id().to_string());
        let _ = std::fs::remove_dir_all(&dir);
        certs::make(&dir)
    })
}

fn files(cert: &Path, key: &Path) -> ServerFiles {
    ServerFiles {
        cert: cert.to_owned(),
        key: key.to_owned(),
        client_ca: None,
    }
}

fn ec_server() -> ServerTls {
    let c = certs();
    ServerTls::new(&files(&c.server_ec_chain, &c.server_ec_key)).unwrap()
}

fn trust_ca() -> Arc<rustls::ClientConfig> {
    client_config(&Trust::File(certs().ca.clone()), None).unwrap()
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

/// A connected loopback pair: (client side, server side).
fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

/// The outcome of a server handshake on its thread.
type Served = thread::JoinHandle<Result<(Session, TcpStream), Error>>;

/// Runs a server handshake with `config` on its own thread; returns the client socket and
/// the server's outcome (with its session and socket on success).
fn serve(config: Arc<rustls::ServerConfig>) -> (TcpStream, Served) {
    let (client, server) = pair();
    let handle = thread::spawn(move || {
        let mut session = Session::server(config)?;
        session.handshake(&server, deadline())?;
        Ok((session, server))
    });
    (client, handle)
}

/// A client handshake to `host` over `socket`.
fn dial(
    config: Arc<rustls::ClientConfig>,
    host: &str,
    socket: &TcpStream,
) -> Result<Session, Error> {
    let mut session = Session::client(config, host)?;
    session.handshake(socket, deadline())?;
    Ok(session)
}

#[test]
fn client_and_server_handshake_agree_on_http_1_1_and_exchange_data_both_ways() {
    for host in ["localhost", "127.0.0.1", "[::1]", "::1"] {
        let (client_socket, server) = serve(ec_server().config());
        let mut client = dial(trust_ca(), host, &client_socket).unwrap();
        let (mut server, server_socket) = server.join().unwrap().unwrap();
        assert_eq!(client.alpn(), Some(&b"http/1.1"[..]));
        assert_eq!(server.alpn(), Some(&b"http/1.1"[..]));
        assert_eq!(
            server.peer_subject(),
            None,
            "no client certificate was asked for"
        );
        assert_eq!(client.peer_subject().as_deref(), Some("CN=localhost"));

        let mut c = client.blocking(&client_socket);
        c.write_all(b"hello server").unwrap();
        let mut s = server.blocking(&server_socket);
        let mut got = [0u8; 12];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello server", "{host}");
        s.write_all(b"hello client").unwrap();
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello client", "{host}");
    }
}

#[test]
fn application_data_that_arrives_with_the_last_handshake_flight_is_kept() {
    let (client_socket, server) = serve(ec_server().config());
    // Drive the client by hand so that its Finished and its first data leave in one write.
    let mut client = Session::client(trust_ca(), "localhost").unwrap();
    let mut socket = &client_socket;
    while client.conn.is_handshaking() {
        if client.conn.wants_write() {
            client.conn.write_tls(&mut socket).unwrap();
            continue;
        }
        client.conn.read_tls(&mut socket).unwrap();
        client.conn.process_new_packets().unwrap();
    }
    client.conn.writer().write_all(b"early words").unwrap();
    client.write_pending(&mut socket).unwrap();
    let (mut server, _server_socket) = server.join().unwrap().unwrap();
    // Nothing more is read from the socket: the words must already be in the session.
    let mut sink = Vec::new();
    let mut stream = server.stream(&[], &mut sink);
    let mut got = [0u8; 11];
    stream.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"early words");
}

/// The connection layer's split on the server: one thread reads raw bytes outside the lock
/// and hands them over under it; the echo is written under the same lock. Returns how many
/// bytes it echoed.
fn split_echo(session: Session, socket: TcpStream) -> thread::JoinHandle<usize> {
    let reader = socket.try_clone().unwrap();
    let locked = Arc::new(Mutex::new((session, socket)));
    thread::spawn(move || {
        let mut buf = vec![0u8; 256 * 1024];
        let mut plain = vec![0u8; 64 * 1024];
        let mut echoed = 0;
        loop {
            let n = match (&reader).read(&mut buf) {
                Ok(0) | Err(_) => return echoed,
                Ok(n) => n,
            };
            let mut guard = locked.lock().unwrap();
            let (session, socket) = &mut *guard;
            let mut stream = session.stream(&buf[..n], socket);
            loop {
                match stream.read(&mut plain) {
                    Ok(0) => return echoed,
                    Ok(got) => {
                        stream.write_all(&plain[..got]).unwrap();
                        echoed += got;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("server read: {e}"),
                }
            }
            stream.flush().unwrap();
        }
    })
}

#[test]
fn large_writes_pass_through_the_split_reader_and_writer_intact() {
    let (client_socket, server) = serve(ec_server().config());
    let mut client = dial(trust_ca(), "localhost", &client_socket).unwrap();
    let (server, server_socket) = server.join().unwrap().unwrap();
    let echo = split_echo(server, server_socket);

    let total = 4 << 20;
    let data: Vec<u8> = (0..total).map(|i| (i * 7 + i / 251) as u8).collect();
    // Writes of 1 MiB each, each echo read back before the next write: the client has one
    // session for both directions, and the server echoes while the client still writes.
    let mut back = vec![0u8; 1 << 20];
    for chunk in data.chunks(1 << 20) {
        let mut c = client.blocking(&client_socket);
        c.write_all(chunk).unwrap();
        c.read_exact(&mut back[..chunk.len()]).unwrap();
        assert!(back[..chunk.len()] == *chunk, "echo differs");
    }
    client.send_close_notify(&mut &client_socket).unwrap();
    assert_eq!(echo.join().unwrap(), total);
}

#[test]
fn the_split_server_sends_one_large_write_whole() {
    let (client_socket, server) = serve(ec_server().config());
    let mut client = dial(trust_ca(), "localhost", &client_socket).unwrap();
    let (mut server, server_socket) = server.join().unwrap().unwrap();
    let big: Vec<u8> = (0..3 << 20).map(|i: usize| (i % 253) as u8).collect();
    let expected = big.clone();
    let sender = thread::spawn(move || {
        let mut sink = &server_socket;
        let mut stream = server.stream(&[], &mut sink);
        stream.write_all(&big).unwrap();
        stream.flush().unwrap();
        drop(stream);
        server.send_close_notify(&mut &server_socket).unwrap();
    });
    let mut got = Vec::new();
    client
        .blocking(&client_socket)
        .read_to_end(&mut got)
        .unwrap();
    sender.join().unwrap();
    assert!(got == expected, "got {} bytes", got.len());
}

#[test]
fn server_keys_load_in_each_pem_form_and_rsa_works_too() {
    let c = certs();
    for (cert, key) in [
        (&c.server_ec_chain, &c.server_ec_key),
        (&c.server_ec_chain, &c.server_ec_key_sec1),
        (&c.server_rsa_chain, &c.server_rsa_key),
        (&c.server_rsa_chain, &c.server_rsa_key_pkcs1),
    ] {
        let tls = ServerTls::new(&files(cert, key)).unwrap_or_else(|e| panic!("{e}"));
        let (socket, server) = serve(tls.config());
        dial(trust_ca(), "localhost", &socket).unwrap_or_else(|e| panic!("{key:?}: {e}"));
        server.join().unwrap().unwrap();
    }
}

#[test]
fn bad_server_files_name_the_file_and_the_problem() {
    let c = certs();
    let junk = c.dir.join("junk.txt");
    std::fs::write(&junk, "just text\n").unwrap();
    let missing = c.dir.join("missing.pem");

    let err = ServerTls::new(&files(&c.server_ec_chain, &c.server_rsa_key)).unwrap_err();
    assert!(matches!(err, Error::KeyMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("does not match"), "{err}");

    let err = ServerTls::new(&files(&junk, &c.server_ec_key)).unwrap_err();
    assert!(
        matches!(&err, Error::File { path, problem: FileProblem::NotPem(_) } if *path == junk),
        "{err:?}"
    );
    assert!(err.to_string().starts_with(junk.to_str().unwrap()), "{err}");

    // A key file where the certificate should be, and the other way round.
    let err = ServerTls::new(&files(&c.server_ec_key, &c.server_ec_key)).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::File {
                problem: FileProblem::NoCertificate,
                ..
            }
        ),
        "{err:?}"
    );
    let err = ServerTls::new(&files(&c.server_ec_chain, &c.server_ec_chain)).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::File {
                problem: FileProblem::NoKey,
                ..
            }
        ),
        "{err:?}"
    );

    let err = ServerTls::new(&files(&missing, &c.server_ec_key)).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::File {
                problem: FileProblem::Unreadable(_),
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn client_errors_say_what_failed() {
    let c = certs();
    let self_signed = ServerTls::new(&files(&c.self_signed, &c.self_signed_key)).unwrap();
    let (socket, server) = serve(self_signed.config());
    let err = dial(trust_ca(), "localhost", &socket).unwrap_err();
    assert!(matches!(err, Error::UnknownIssuer), "{err:?}");
    assert!(server.join().unwrap().is_err());

    let (socket, server) = serve(ec_server().config());
    let err = dial(trust_ca(), "example.com", &socket).unwrap_err();
    match &err {
        Error::NameMismatch {
            expected,
            presented,
        } => {
            assert_eq!(expected, "example.com");
            assert_eq!(presented, &["localhost", "127.0.0.1", "::1"]);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string().contains("localhost, 127.0.0.1, ::1"),
        "{err}"
    );
    assert!(server.join().unwrap().is_err());

    let expired = ServerTls::new(&files(&c.expired, &c.expired_key)).unwrap();
    let (socket, server) = serve(expired.config());
    let err = dial(trust_ca(), "localhost", &socket).unwrap_err();
    assert!(matches!(err, Error::Expired), "{err:?}");
    assert!(server.join().unwrap().is_err());

    // Insecure trusts the self-signed one.
    let (socket, server) = serve(self_signed.config());
    let insecure = client_config(&Trust::Insecure, None).unwrap();
    dial(insecure, "localhost", &socket).unwrap();
    server.join().unwrap().unwrap();
}

#[test]
fn a_client_meeting_plain_http_is_told_the_peer_does_not_speak_tls() {
    let (client_socket, mut server_socket) = pair();
    let server = thread::spawn(move || {
        let mut buf = [0u8; 512];
        let _ = server_socket.read(&mut buf);
        let _ = server_socket.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    });
    let err = dial(trust_ca(), "localhost", &client_socket).unwrap_err();
    assert!(matches!(err, Error::NotTls), "{err:?}");
    server.join().unwrap();
}

#[test]
fn a_server_meeting_plain_http_says_so_and_writes_nothing() {
    let (mut client_socket, server) = serve(ec_server().config());
    client_socket
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let err = server
        .join()
        .unwrap()
        .expect_err("a plain HTTP request failed the handshake");
    assert!(matches!(err, Error::NotTls), "{err:?}");
    let mut rest = Vec::new();
    client_socket.read_to_end(&mut rest).unwrap();
    assert_eq!(
        rest, b"",
        "no TLS alert in front of the server's HTTP answer"
    );
}

#[test]
fn a_silent_client_times_the_server_handshake_out() {
    let (client_socket, server_socket) = pair();
    let mut session = Session::server(ec_server().config()).unwrap();
    let start = Instant::now();
    let err = session
        .handshake(&server_socket, Instant::now() + Duration::from_millis(300))
        .unwrap_err();
    assert!(matches!(err, Error::TimedOut), "{err:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    drop(client_socket);
}

#[test]
fn mutual_tls_verifies_the_client_and_names_its_subject() {
    let c = certs();
    let mut mutual = files(&c.server_ec_chain, &c.server_ec_key);
    mutual.client_ca = Some(c.ca.clone());
    let tls = ServerTls::new(&mutual).unwrap();
    let identity = Identity {
        cert: c.client.clone(),
        key: c.client_key.clone(),
    };
    let with_cert = client_config(&Trust::File(c.ca.clone()), Some(&identity)).unwrap();
    let (socket, server) = serve(tls.config());
    dial(with_cert, "localhost", &socket).unwrap();
    let (server, _socket) = server.join().unwrap().unwrap();
    assert_eq!(
        server.peer_subject().as_deref(),
        Some("O=wsecho tests, CN=wsecho test client")
    );

    // Without a certificate: the server refuses. (Under TLS 1.3 the client has finished its
    // side by then; it learns of the refusal at its first read.)
    let (socket, server) = serve(tls.config());
    let mut client = dial(trust_ca(), "localhost", &socket).unwrap();
    let err = server.join().unwrap().expect_err("refused");
    assert!(matches!(err, Error::NoPeerCertificate), "{err:?}");
    let read = client.blocking(&socket).read(&mut [0u8; 16]).unwrap_err();
    let err = Error::from_io(read);
    assert!(
        matches!(&err, Error::Refused(alert) if alert.contains("CertificateRequired")),
        "{err:?}"
    );

    let err = client_config(
        &Trust::System,
        Some(&Identity {
            cert: c.client.clone(),
            key: c.server_ec_key.clone(),
        }),
    );
    assert!(matches!(
        err,
        Err(Error::KeyMismatch { .. }) | Err(Error::NoUsableRoots { .. })
    ));
}

#[test]
fn reload_serves_the_new_pair_to_new_handshakes_and_keeps_the_old_one_on_failure() {
    let c = certs();
    let dir = c.dir.join("reload");
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("live.pem"), dir.join("live.key"));
    let install = |from_cert: &Path, from_key: &Path| {
        std::fs::copy(from_cert, &cert).unwrap();
        std::fs::copy(from_key, &key).unwrap();
    };
    let served = |tls: &ServerTls| {
        let (socket, server) = serve(tls.config());
        let client = dial(trust_ca(), "localhost", &socket).unwrap();
        let (server, _s) = server.join().unwrap().unwrap();
        let _ = server;
        client.peer_certificate().unwrap().to_vec()
    };
    let first_der = |path: &Path| pem::certificates(path).unwrap()[0].to_vec();

    install(&c.server_ec_chain, &c.server_ec_key);
    let tls = ServerTls::new(&files(&cert, &key)).unwrap();
    // A connection made before the reload keeps working after it.
    let (old_socket, old_server) = serve(tls.config());
    let mut old_client = dial(trust_ca(), "localhost", &old_socket).unwrap();
    let (mut old_server, old_server_socket) = old_server.join().unwrap().unwrap();
    assert_eq!(served(&tls), first_der(&c.server_ec_chain));

    install(&c.server_rsa_chain, &c.server_rsa_key_pkcs1);
    tls.reload().unwrap();
    assert_eq!(served(&tls), first_der(&c.server_rsa_chain));

    old_client
        .blocking(&old_socket)
        .write_all(b"still here")
        .unwrap();
    let mut got = [0u8; 10];
    old_server
        .blocking(&old_server_socket)
        .read_exact(&mut got)
        .unwrap();
    assert_eq!(&got, b"still here");

    // A key that does not match: refused, the RSA pair stays.
    std::fs::copy(&c.server_ec_key, &key).unwrap();
    let err = tls.reload().unwrap_err();
    assert!(matches!(err, Error::KeyMismatch { .. }), "{err:?}");
    assert_eq!(served(&tls), first_der(&c.server_rsa_chain));

    // Not PEM at all: refused, naming the file.
    std::fs::write(&cert, "renewal in progress").unwrap();
    let err = tls.reload().unwrap_err();
    assert!(
        matches!(&err, Error::File { path, .. } if *path == cert),
        "{err:?}"
    );
    assert_eq!(served(&tls), first_der(&c.server_rsa_chain));
}
