//! The "reference": a minimal sync tungstenite echo server to measure wsecho against.
//!
//! `reference_server [--tls CERT KEY] ADDR [READ_BUF_BYTES]`  (e.g. `reference_server 127.0.0.1:9001 4096`)
//!
//! std `TcpListener`, one thread per connection, default `WebSocketConfig` except the optional
//! `read_buffer_size` (the "4 KiB read buffer" column). Any path upgrades; text comes back as
//! text, binary as binary; tungstenite answers pings and Close. No logging, no limits, no
//! timeouts: it is a yardstick, not a server to deploy. TCP_NODELAY is on, as in Go's net/http.
//! With `--tls CERT KEY` (PEM chain and key) it speaks wss: rustls with the ring provider and
//! a default `ServerConfig` (ALPN `http/1.1`), tungstenite over `rustls::StreamOwned`.
//! `reference_server --raw ADDR` is the raw-TCP floor instead: a thread-per-connection byte echo.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use tungstenite::accept_with_config;
use tungstenite::protocol::WebSocketConfig;

enum Mode {
    Ws,
    Raw,
    Tls(Arc<ServerConfig>),
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, args) = match args.split_first() {
        Some((flag, rest)) if flag == "--raw" => (Mode::Raw, rest),
        Some((flag, rest)) if flag == "--tls" && rest.len() >= 2 => {
            (Mode::Tls(tls_config(&rest[0], &rest[1])), &rest[2..])
        }
        _ => (Mode::Ws, &args[..]),
    };
    let Some(addr) = args.first() else {
        eprintln!("usage: reference_server [--raw | --tls CERT KEY] ADDR [READ_BUF_BYTES]");
        std::process::exit(2);
    };
    let mut config = WebSocketConfig::default();
    if let Some(n) = args.get(1) {
        config = config.read_buffer_size(n.parse().expect("READ_BUF_BYTES must be a number"));
    }
    let mode = Arc::new(mode);
    let listener = TcpListener::bind(addr).expect("bind");
    for stream in listener.incoming().flatten() {
        let _ = stream.set_nodelay(true);
        let mode = mode.clone();
        std::thread::spawn(move || match &*mode {
            Mode::Raw => raw_echo(stream),
            Mode::Ws => ws_echo(stream, config),
            Mode::Tls(tls) => {
                if let Ok(conn) = ServerConnection::new(tls.clone()) {
                    ws_echo(StreamOwned::new(conn, stream), config)
                }
            }
        });
    }
}

/// A default rustls server configuration (ring) for one certificate chain and key.
fn tls_config(cert: &str, key: &str) -> Arc<ServerConfig> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .expect("CERT: a PEM certificate chain");
    let key = PrivateKeyDer::from_pem_file(key).expect("KEY: a PEM private key");
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("the key must match the certificate");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn ws_echo<S: Read + Write>(stream: S, config: WebSocketConfig) {
    let Ok(mut ws) = accept_with_config(stream, Some(config)) else {
        return;
    };
    // Ends on the peer's Close (after tungstenite's reply is flushed) or on any error.
    while let Ok(msg) = ws.read() {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).is_err() {
            return;
        }
    }
}

fn raw_echo(mut stream: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = stream.read(&mut buf) {
        if stream.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}
