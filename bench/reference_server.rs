//! The "reference": a minimal sync tungstenite echo server to measure wsecho against.
//!
//! `reference_server ADDR [READ_BUF_BYTES]`  (e.g. `reference_server 127.0.0.1:9001 4096`)
//!
//! std `TcpListener`, one thread per connection, default `WebSocketConfig` except the optional
//! `read_buffer_size` (the "4 KiB read buffer" column). Any path upgrades; text comes back as
//! text, binary as binary; tungstenite answers pings and Close. No logging, no limits, no
//! timeouts: it is a yardstick, not a server to deploy. TCP_NODELAY is on, as in Go's net/http.
//! `reference_server --raw ADDR` is the raw-TCP floor instead: a thread-per-connection byte echo.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use tungstenite::accept_with_config;
use tungstenite::protocol::WebSocketConfig;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (raw, args) = match args.split_first() {
        Some((flag, rest)) if flag == "--raw" => (true, rest),
        _ => (false, &args[..]),
    };
    let Some(addr) = args.first() else {
        eprintln!("usage: reference_server [--raw] ADDR [READ_BUF_BYTES]");
        std::process::exit(2);
    };
    let mut config = WebSocketConfig::default();
    if let Some(n) = args.get(1) {
        config = config.read_buffer_size(n.parse().expect("READ_BUF_BYTES must be a number"));
    }
    let listener = TcpListener::bind(addr).expect("bind");
    for stream in listener.incoming().flatten() {
        let _ = stream.set_nodelay(true);
        std::thread::spawn(move || {
            if raw {
                raw_echo(stream)
            } else {
                ws_echo(stream, config)
            }
        });
    }
}

fn ws_echo(stream: TcpStream, config: WebSocketConfig) {
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
