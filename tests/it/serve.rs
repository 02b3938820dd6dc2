//! `wsecho serve`, black box: the real binary on a fresh loopback port, spoken to with raw
//! HTTP over `TcpStream` and with tungstenite's sync client. Every wait has a deadline.

use crate::common::{Finished, Server, prerequisite_missing, run, serve, wsecho};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::error::Error as WsError;
use tungstenite::handshake::HandshakeError;
use tungstenite::handshake::client::{Request, Response};
use tungstenite::http::HeaderValue;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::{Bytes, Message, WebSocket};

/// Bound for any one read, write, connect or log wait.
const WAIT: Duration = Duration::from_secs(5);
/// Bound for a CLI run that should end at once.
const RUN_LIMIT: Duration = Duration::from_secs(5);

type Ws = WebSocket<TcpStream>;

// ---- raw HTTP ---------------------------------------------------------------------------

fn tcp(port: u16) -> TcpStream {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect to wsecho");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    stream
}

/// One parsed HTTP response.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    raw: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads until the server closes (within `WAIT`); a reset or a timeout fails the test.
fn read_to_eof(stream: &mut TcpStream) -> Vec<u8> {
    let deadline = Instant::now() + WAIT;
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!(
                "reading the response: {e} (server did not close cleanly); got so far:\n{}",
                String::from_utf8_lossy(&out)
            ),
        }
        assert!(
            Instant::now() < deadline,
            "server kept the connection open after {WAIT:?}"
        );
    }
}

/// Sends `request`, reads the whole response up to the server's close, and checks it is
/// complete: a status line, headers, and exactly Content-Length bytes of body (none after a
/// HEAD).
fn exchange(port: u16, request: &[u8]) -> Reply {
    let mut stream = tcp(port);
    stream.write_all(request).expect("send request");
    let bytes = read_to_eof(&mut stream);
    let raw = String::from_utf8_lossy(&bytes).into_owned();
    let end = raw
        .find("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete response head in:\n{raw}"))
        + 4;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(&bytes[..end]) {
        Ok(httparse::Status::Complete(_)) => {}
        other => panic!("unparsable response head ({other:?}):\n{raw}"),
    }
    let reply = Reply {
        status: response.code.expect("status code"),
        headers: response
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        body: bytes[end..].to_vec(),
        raw,
    };
    let length: usize = reply
        .header("Content-Length")
        .unwrap_or_else(|| panic!("no Content-Length:\n{}", reply.raw))
        .trim()
        .parse()
        .expect("numeric Content-Length");
    if !request.starts_with(b"HEAD ") {
        assert_eq!(
            reply.body.len(),
            length,
            "body length differs from Content-Length:\n{}",
            reply.raw
        );
    }
    reply
}

fn get(port: u16, path: &str) -> Reply {
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    exchange(port, request.as_bytes())
}

/// An upgrade request for /echo with `extra` header lines (each ending in CRLF).
fn upgrade_request(port: u16, key: &str, version: &str, extra: &str) -> String {
    format!(
        "GET /echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n\
{extra}\r\n"
    )
}

const GOOD_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The open tags `<NAME ...>` in `html`.
fn tags<'a>(html: &'a str, name: &str) -> Vec<&'a str> {
    let open = format!("<{name}");
    html.match_indices(&open)
        .filter_map(|(i, _)| html[i..].find('>').map(|end| &html[i..i + end + 1]))
        .collect()
}

// ---- WebSocket clients ------------------------------------------------------------------

fn request(port: u16) -> Request {
    format!("ws://127.0.0.1:{port}/echo")
        .into_client_request()
        .expect("client request")
}

fn with_header(mut req: Request, name: &'static str, value: &str) -> Request {
    req.headers_mut()
        .insert(name, HeaderValue::from_str(value).expect("header value"));
    req
}

/// Connects and upgrades with `req`; every later read and write is bounded by `WAIT`.
fn try_ws(port: u16, req: Request) -> Result<(Ws, Response), WsError> {
    let stream = tcp(port);
    tungstenite::client(req, stream).map_err(|e| match e {
        HandshakeError::Failure(e) => e,
        HandshakeError::Interrupted(_) => WsError::Io(std::io::Error::new(
            ErrorKind::TimedOut,
            "handshake timed out",
        )),
    })
}

fn ws(port: u16) -> Ws {
    try_ws(port, request(port)).expect("WebSocket upgrade").0
}

/// The status a refused upgrade got (panics if the upgrade succeeded).
fn refused_status(result: Result<(Ws, Response), WsError>) -> u16 {
    match result {
        Ok((_, response)) => panic!("upgrade succeeded: {:?}", response.status()),
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("handshake failed without an HTTP answer: {e}"),
    }
}

/// The next data message; pings and pongs are skipped.
fn next_message(ws: &mut Ws) -> Message {
    loop {
        match ws.read() {
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(message) => return message,
            Err(e) => panic!("reading an echo: {e}"),
        }
    }
}

fn send(ws: &mut Ws, message: Message) {
    ws.send(message).expect("send message");
}

fn echo(ws: &mut Ws, message: Message) -> Message {
    send(ws, message);
    next_message(ws)
}

/// Closes with 1000 and reads until the server has closed too.
fn close_normally(ws: &mut Ws) {
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
    .expect("send Close");
    loop {
        match ws.read() {
            Ok(_) => {}
            Err(WsError::ConnectionClosed) => return,
            Err(e) => panic!("closing: {e}"),
        }
    }
}

/// Reads until a Close arrives and returns it, without answering it yet (the reply
/// tungstenite queues is only written by a later read or flush).
fn expect_close(ws: &mut Ws) -> Option<CloseFrame> {
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => return frame,
            Ok(_) => {}
            Err(e) => panic!("waiting for the server's Close: {e}"),
        }
    }
}

/// Completes the upgrade by hand, has one message echoed, and returns the socket.
fn raw_ws(port: u16) -> TcpStream {
    let mut stream = tcp(port);
    stream
        .write_all(upgrade_request(port, GOOD_KEY, "13", "").as_bytes())
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("read the 101");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    // One echo by hand: once it is back, the connection is fully set up on the server.
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x81, 0x80 | 2];
    frame.extend_from_slice(&mask);
    frame.extend(b"hi".iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    stream.write_all(&frame).unwrap();
    let mut echo = [0u8; 4];
    stream.read_exact(&mut echo).expect("read the echo");
    assert_eq!(echo, [0x81, 2, b'h', b'i'], "not the echo of \"hi\"");
    stream
}

// ---- 1. the page ------------------------------------------------------------------------

#[test]
fn get_root_serves_the_page_as_utf8_html_with_its_controls() {
    let server = serve("page", &[]);
    let reply = get(server.port, "/");
    assert_eq!(reply.status, 200, "{}", reply.raw);
    assert_eq!(
        reply.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
    let html = reply.body_text();
    let buttons = tags(&html, "button");
    for id in ["open", "close", "send"] {
        let wanted = format!("id=\"{id}\"");
        assert!(
            buttons.iter().any(|b| b.contains(&wanted)),
            "no button {wanted} among {buttons:?}"
        );
    }
    let inputs = tags(&html, "input");
    assert!(
        inputs.iter().any(|i| i.contains("value=\"Hello world!\"")),
        "no input prefilled with Hello world! among {inputs:?}"
    );
    let script = html
        .split_once("<script")
        .map(|(_, s)| s)
        .expect("a <script> element");
    assert!(script.contains("/echo"), "the script never names /echo");
    server.assert_no_panic();
}

#[test]
fn head_root_has_the_page_length_but_no_body() {
    let server = serve("head", &[]);
    let page = get(server.port, "/");
    let request = format!("HEAD / HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n", server.port);
    let reply = exchange(server.port, request.as_bytes());
    assert_eq!(reply.status, 200, "{}", reply.raw);
    assert_eq!(
        reply.header("Content-Length"),
        Some(page.body.len().to_string().as_str())
    );
    assert!(
        reply.body.is_empty(),
        "HEAD got a body of {} bytes",
        reply.body.len()
    );
    server.assert_no_panic();
}

#[test]
fn head_answers_carry_no_body_on_error_statuses_either() {
    let server = serve("head-errors", &[]);
    for (path, status) in [("/nope", 404), ("/echo", 405)] {
        let request = format!(
            "HEAD {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
            server.port
        );
        let reply = exchange(server.port, request.as_bytes());
        assert_eq!(reply.status, status, "{}", reply.raw);
        assert!(
            reply.body.is_empty(),
            "HEAD {path} got a {} body (RFC 9110 9.3.2: no content in a HEAD response):\n{}",
            reply.status,
            reply.raw
        );
    }
}

// ---- 2. statuses ------------------------------------------------------------------------

#[test]
fn unknown_path_is_404() {
    let server = serve("404", &[]);
    let reply = get(server.port, "/nope");
    assert_eq!(reply.status, 404, "{}", reply.raw);
}

#[test]
fn post_root_is_405_allowing_get_and_head() {
    let server = serve("405-root", &[]);
    let request = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 5\r\n\r\nhello",
        server.port
    );
    let reply = exchange(server.port, request.as_bytes());
    assert_eq!(reply.status, 405, "{}", reply.raw);
    assert_eq!(reply.header("Allow"), Some("GET, HEAD"), "{}", reply.raw);
}

#[test]
fn delete_echo_is_405_with_allow() {
    let server = serve("405-echo", &[]);
    let request = format!(
        "DELETE /echo HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        server.port
    );
    let reply = exchange(server.port, request.as_bytes());
    assert_eq!(reply.status, 405, "{}", reply.raw);
    let allow = reply
        .header("Allow")
        .unwrap_or_else(|| panic!("{}", reply.raw));
    assert!(allow.contains("GET"), "Allow: {allow}");
}

#[test]
fn get_echo_without_upgrade_is_426_naming_websocket() {
    let server = serve("426", &[]);
    let reply = get(server.port, "/echo");
    assert_eq!(reply.status, 426, "{}", reply.raw);
    assert_eq!(reply.header("Upgrade"), Some("websocket"), "{}", reply.raw);
}

#[test]
fn malformed_request_heads_are_400() {
    let server = serve("400", &[]);
    for head in [&b"GARBAGE\r\n\r\n"[..], b"GET / HTTP/9\r\n\r\n"] {
        let reply = exchange(server.port, head);
        assert_eq!(
            reply.status,
            400,
            "for {:?}:\n{}",
            String::from_utf8_lossy(head),
            reply.raw
        );
    }
    server.assert_no_panic();
}

#[test]
fn request_head_over_8_kib_is_431() {
    let server = serve("431", &[]);
    let request = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-Big: {}\r\n\r\n",
        server.port,
        "a".repeat(9 * 1024)
    );
    let reply = exchange(server.port, request.as_bytes());
    assert_eq!(reply.status, 431, "{}", reply.raw);
}

#[test]
fn upgrade_with_a_bad_key_is_400() {
    let server = serve("bad-key", &[]);
    let request = upgrade_request(server.port, "not-a-key", "13", "");
    let reply = exchange(server.port, request.as_bytes());
    assert_eq!(reply.status, 400, "{}", reply.raw);
}

#[test]
fn upgrade_with_the_wrong_version_is_400() {
    let server = serve("bad-version", &[]);
    let request = upgrade_request(server.port, GOOD_KEY, "8", "");
    let reply = exchange(server.port, request.as_bytes());
    assert_eq!(reply.status, 400, "{}", reply.raw);
}

// ---- 3. echo ----------------------------------------------------------------------------

#[test]
fn text_comes_back_as_text() {
    let server = serve("echo-text", &[]);
    let mut ws = ws(server.port);
    let back = echo(&mut ws, Message::text("hello, echo"));
    assert_eq!(back, Message::text("hello, echo"));
    close_normally(&mut ws);
}

#[test]
fn binary_comes_back_as_binary_byte_for_byte() {
    let server = serve("echo-binary", &[]);
    let mut ws = ws(server.port);
    let data: Vec<u8> = (0..=255u8).rev().collect();
    let back = echo(&mut ws, Message::binary(data.clone()));
    assert_eq!(back, Message::binary(data));
    close_normally(&mut ws);
}

#[test]
fn unicode_text_is_echoed_intact() {
    let server = serve("echo-unicode", &[]);
    let mut ws = ws(server.port);
    let text = "héllo wörld — 你好, мир 👋🏽 \u{10FFFF}";
    assert_eq!(echo(&mut ws, Message::text(text)), Message::text(text));
    close_normally(&mut ws);
}

#[test]
fn empty_text_and_empty_binary_are_echoed() {
    let server = serve("echo-empty", &[]);
    let mut ws = ws(server.port);
    assert_eq!(echo(&mut ws, Message::text("")), Message::text(""));
    assert_eq!(
        echo(&mut ws, Message::binary(Vec::new())),
        Message::binary(Vec::new())
    );
    close_normally(&mut ws);
}

#[test]
fn four_mib_binary_and_text_messages_are_echoed() {
    let server = serve("echo-4mib", &["--quiet"]);
    let mut ws = ws(server.port);
    let data: Vec<u8> = (0..4 << 20).map(|i: u32| (i * 31 % 251) as u8).collect();
    let back = echo(&mut ws, Message::binary(data.clone()));
    assert!(
        back == Message::binary(data),
        "4 MiB binary came back different"
    );
    let text: String = (0..4 << 20)
        .map(|i: u32| char::from(b'a' + (i % 26) as u8))
        .collect();
    let back = echo(&mut ws, Message::text(text.clone()));
    assert!(
        back == Message::text(text),
        "4 MiB text came back different"
    );
    close_normally(&mut ws);
}

#[test]
fn fragmented_message_comes_back_whole() {
    let server = serve("echo-fragments", &[]);
    let mut ws = ws(server.port);
    let parts = [
        Frame::message("Hel", OpCode::Data(Data::Text), false),
        Frame::message("lo, ", OpCode::Data(Data::Continue), false),
        Frame::message("world", OpCode::Data(Data::Continue), true),
    ];
    for frame in parts {
        send(&mut ws, Message::Frame(frame));
    }
    assert_eq!(next_message(&mut ws), Message::text("Hello, world"));
    let parts = [
        Frame::message(vec![1u8, 2], OpCode::Data(Data::Binary), false),
        Frame::message(vec![3u8], OpCode::Data(Data::Continue), true),
    ];
    for frame in parts {
        send(&mut ws, Message::Frame(frame));
    }
    assert_eq!(next_message(&mut ws), Message::binary(vec![1u8, 2, 3]));
    close_normally(&mut ws);
}

#[test]
fn offered_subprotocol_chat_superchat_is_accepted_as_chat() {
    let server = serve("subprotocol", &[]);
    let req = with_header(
        request(server.port),
        "Sec-WebSocket-Protocol",
        "chat, superchat",
    );
    let (mut ws, response) = try_ws(server.port, req).expect("upgrade with subprotocols");
    assert_eq!(
        response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok()),
        Some("chat")
    );
    assert_eq!(echo(&mut ws, Message::text("hi")), Message::text("hi"));
    close_normally(&mut ws);
}

// ---- 4. ping/pong -----------------------------------------------------------------------

#[test]
fn ping_gets_a_pong_with_the_same_payload() {
    let server = serve("ping", &[]);
    let mut ws = ws(server.port);
    send(
        &mut ws,
        Message::Ping(Bytes::from_static(b"are you there?")),
    );
    loop {
        match ws.read().expect("read the pong") {
            Message::Pong(payload) => {
                assert_eq!(&payload[..], b"are you there?");
                break;
            }
            Message::Ping(_) => {}
            other => panic!("expected a Pong, got {other:?}"),
        }
    }
    close_normally(&mut ws);
}

// ---- 5. many clients --------------------------------------------------------------------

#[test]
fn hundred_concurrent_clients_get_fifty_echoes_each_in_order() {
    const CLIENTS: usize = 100;
    const MESSAGES: usize = 50;
    let server = serve("concurrent", &["--quiet"]);
    let port = server.port;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let barrier = barrier.clone();
            thread::spawn(move || -> Result<(), String> {
                let connected = try_ws(port, request(port));
                // Everyone connects before anyone talks: the 100 are open at once.
                barrier.wait();
                let (mut ws, _) = connected.map_err(|e| format!("client {c}: connect: {e}"))?;
                for m in 0..MESSAGES {
                    let message = if m % 2 == 0 {
                        Message::text(format!("client {c} message {m}"))
                    } else {
                        Message::binary(format!("{c}:{m}").into_bytes())
                    };
                    ws.send(message.clone())
                        .map_err(|e| format!("client {c}: send {m}: {e}"))?;
                    let back = loop {
                        match ws.read() {
                            Ok(Message::Ping(_) | Message::Pong(_)) => {}
                            Ok(back) => break back,
                            Err(e) => return Err(format!("client {c}: read {m}: {e}")),
                        }
                    };
                    if back != message {
                        return Err(format!("client {c}: sent {message:?}, got {back:?}"));
                    }
                }
                ws.close(None)
                    .map_err(|e| format!("client {c}: close: {e}"))?;
                while ws.read().is_ok() {}
                Ok(())
            })
        })
        .collect();
    let failures: Vec<String> = clients
        .into_iter()
        .filter_map(|t| match t.join() {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some("a client thread panicked".into()),
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {CLIENTS} clients failed: {:?}\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        server.log()
    );
    server.assert_no_panic();
}

// ---- 6. origin --------------------------------------------------------------------------

#[test]
fn foreign_origin_is_refused_with_403() {
    let server = serve("origin-evil", &[]);
    let req = with_header(request(server.port), "Origin", "http://evil.example");
    assert_eq!(refused_status(try_ws(server.port, req)), 403);
}

#[test]
fn origin_matching_host_is_upgraded() {
    let server = serve("origin-same", &[]);
    let origin = format!("http://127.0.0.1:{}", server.port);
    let req = with_header(request(server.port), "Origin", &origin);
    let (mut ws, _) = try_ws(server.port, req).expect("same-origin upgrade");
    assert_eq!(echo(&mut ws, Message::text("same")), Message::text("same"));
}

#[test]
fn request_without_origin_is_upgraded() {
    let server = serve("origin-none", &[]);
    let req = request(server.port);
    assert!(req.headers().get("Origin").is_none());
    let (mut ws, _) = try_ws(server.port, req).expect("upgrade without Origin");
    assert_eq!(echo(&mut ws, Message::text("none")), Message::text("none"));
}

#[test]
fn allow_origin_admits_that_origin() {
    let server = serve("origin-allowed", &["--allow-origin", "http://evil.example"]);
    let req = with_header(request(server.port), "Origin", "http://evil.example");
    let (mut ws, _) = try_ws(server.port, req).expect("upgrade from an allowed origin");
    assert_eq!(echo(&mut ws, Message::text("ok")), Message::text("ok"));
    let req = with_header(request(server.port), "Origin", "http://other.example");
    assert_eq!(refused_status(try_ws(server.port, req)), 403);
}

#[test]
fn allow_origin_star_admits_any_origin() {
    let server = serve("origin-star", &["--allow-origin", "*"]);
    for origin in ["http://evil.example", "https://x.example:8443", "null"] {
        let req = with_header(request(server.port), "Origin", origin);
        let (mut ws, _) = try_ws(server.port, req)
            .unwrap_or_else(|e| panic!("upgrade from {origin} refused: {e}"));
        assert_eq!(echo(&mut ws, Message::text(origin)), Message::text(origin));
    }
}

// ---- 7. log -----------------------------------------------------------------------------

#[test]
fn log_shows_recv_for_text_and_size_for_binary() {
    let server = serve("log-recv", &[]);
    let mut ws = ws(server.port);
    echo(&mut ws, Message::text("hello log"));
    echo(&mut ws, Message::binary(vec![7u8; 3]));
    let log = server.wait_for_log("recv: 3 bytes binary", WAIT);
    assert!(log.lines().any(|l| l == "recv: hello log"), "{log}");
    close_normally(&mut ws);
}

#[test]
fn log_shows_open_and_close_1000_with_the_peer() {
    let server = serve("log-open-close", &[]);
    let mut ws = ws(server.port);
    let peer = ws.get_ref().local_addr().unwrap();
    close_normally(&mut ws);
    let log = server.wait_for_log(&format!("close {peer}: 1000"), WAIT);
    assert!(log.lines().any(|l| l == format!("open {peer}")), "{log}");
    assert!(
        log.lines().any(|l| l == format!("close {peer}: 1000")),
        "{log}"
    );
}

#[test]
fn quiet_drops_recv_lines_but_keeps_open_and_close() {
    let server = serve("log-quiet", &["--quiet"]);
    let mut ws = ws(server.port);
    let peer = ws.get_ref().local_addr().unwrap();
    echo(&mut ws, Message::text("secret"));
    echo(&mut ws, Message::binary(vec![1u8]));
    close_normally(&mut ws);
    let log = server.wait_for_log(&format!("close {peer}: 1000"), WAIT);
    assert!(log.contains(&format!("open {peer}")), "{log}");
    assert!(
        !log.contains("recv:"),
        "--quiet still logs messages:\n{log}"
    );
}

#[test]
fn control_characters_in_text_are_escaped_in_the_log() {
    let server = serve("log-escape", &[]);
    let mut ws = ws(server.port);
    let peer = ws.get_ref().local_addr().unwrap();
    echo(&mut ws, Message::text("a\nb"));
    close_normally(&mut ws);
    let log = server.wait_for_log(&format!("close {peer}"), WAIT);
    assert!(log.lines().any(|l| l == "recv: a\\nb"), "{log}");
    assert!(
        !log.lines().any(|l| l == "b"),
        "a newline in a message split a log line:\n{log}"
    );
}

// ---- 8. SIGINT --------------------------------------------------------------------------

#[test]
fn sigint_sends_close_1001_to_every_client_and_exits_0_within_grace() {
    let mut server = serve("sigint", &[]);
    let mut clients: Vec<Ws> = (0..3).map(|_| ws(server.port)).collect();
    for (i, ws) in clients.iter_mut().enumerate() {
        let text = format!("before {i}");
        assert_eq!(echo(ws, Message::text(&text)), Message::text(text));
    }
    let signalled = Instant::now();
    server.sigint();
    for (i, ws) in clients.iter_mut().enumerate() {
        let frame = expect_close(ws);
        assert_eq!(
            frame.as_ref().map(|f| f.code),
            Some(CloseCode::Away),
            "client {i} got {frame:?}"
        );
    }
    // Answer the Closes and let the server end each connection.
    for ws in &mut clients {
        while ws.read().is_ok() {}
    }
    let (status, at) = server
        .wait_exit(Duration::from_millis(2500))
        .unwrap_or_else(|| panic!("still running 2.5 s after SIGINT\n{}", server.log()));
    assert!(status.success(), "exit {status}\n{}", server.log());
    assert!(at - signalled < Duration::from_millis(2500));
    server.assert_no_panic();
}

#[test]
fn connections_after_sigint_are_refused() {
    // This client reads the Close but does not answer it, so the server stays in its grace
    // period while the new connections are tried: a long one, so that a stalled test thread
    // does not see it end (the server exits as soon as the client is gone).
    let mut server = serve("sigint-refuse", &["--grace", "10"]);
    let mut holder = ws(server.port);
    assert_eq!(echo(&mut holder, Message::text("x")), Message::text("x"));
    server.sigint();
    let frame = expect_close(&mut holder);
    assert_eq!(frame.map(|f| f.code), Some(CloseCode::Away));
    assert!(server.exited().is_none(), "exited before the grace period");
    let addr = SocketAddr::from(([127, 0, 0, 1], server.port));
    if let Ok(mut late) = TcpStream::connect_timeout(&addr, WAIT) {
        late.set_read_timeout(Some(WAIT)).unwrap();
        let _ = late.write_all(upgrade_request(server.port, GOOD_KEY, "13", "").as_bytes());
        let mut answer = Vec::new();
        let ended = late.read_to_end(&mut answer);
        assert!(
            answer.is_empty(),
            "a connection after SIGINT was answered: {}",
            String::from_utf8_lossy(&answer)
        );
        // Closed or reset at once is a refusal; held open until our timeout is not.
        if let Err(e) = ended {
            assert!(
                !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
                "a connection after SIGINT was accepted and held open"
            );
        }
    }
    drop(holder);
    let (status, _) = server.wait_exit(WAIT).expect("exit after SIGINT");
    assert!(status.success(), "exit {status}\n{}", server.log());
}

#[test]
fn sigint_with_a_client_that_never_answers_exits_0_after_the_grace() {
    let mut server = serve("sigint-grace", &["--grace", "0.5"]);
    let mut silent = raw_ws(server.port);
    let signalled = Instant::now();
    server.sigint();
    // The Close arrives (unmasked, 1001 first) and is never answered.
    let mut head = [0u8; 4];
    silent
        .read_exact(&mut head)
        .expect("read the server's Close");
    assert_eq!(head[0], 0x88, "not a final Close frame: {head:?}");
    assert_eq!(u16::from_be_bytes([head[2], head[3]]), 1001);
    // Seconds of margin over the 0.5 s grace for a loaded machine, still well short of the
    // 5 s a server waiting out its close timeout (rather than the grace) would take.
    let (status, at) = server
        .wait_exit(WAIT)
        .unwrap_or_else(|| panic!("still running 5 s after SIGINT\n{}", server.log()));
    assert!(status.success(), "exit {status}\n{}", server.log());
    let took = at - signalled;
    assert!(
        took < Duration::from_secs(3),
        "exited {took:?} after SIGINT with --grace 0.5"
    );
    drop(silent);
    server.assert_no_panic();
}

#[test]
fn handshake_finished_during_shutdown_still_gets_close_1001_before_the_grace_ends() {
    // The grace outlasts the 3 s allowed for the goodbye below by seconds, so a goodbye left
    // to the end of the grace cannot pass for a prompt one. (It costs nothing when passing:
    // the server exits as soon as `late` is gone.)
    let mut server = serve("sigint-late-upgrade", &["--grace", "6"]);
    // A connection the server has accepted, its request head all but the final CRLF.
    let mut late = tcp(server.port);
    let request = upgrade_request(server.port, GOOD_KEY, "13", "");
    late.write_all(&request.as_bytes()[..request.len() - 2])
        .unwrap();
    // Accepted for sure, not still queued (the stop would drop it): connections are accepted
    // in the order they connected, one at a time, so once a later one is answered, `late` is
    // with a connection thread.
    assert_eq!(get(server.port, "/").status, 200);
    server.sigint();
    // Stopping has begun once the listener is gone.
    let deadline = Instant::now() + WAIT;
    while crate::common::port_accepts(server.port) {
        assert!(Instant::now() < deadline, "still listening after SIGINT");
        thread::sleep(Duration::from_millis(10));
    }
    let finished = Instant::now();
    late.write_all(b"\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match late.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    if head.starts_with("HTTP/1.1 101 ") {
        // Upgraded during shutdown: it must be told goodbye, not left to the grace deadline.
        late.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut close = [0u8; 4];
        let got = late.read_exact(&mut close);
        assert!(
            got.is_ok() && close[0] == 0x88 && u16::from_be_bytes([close[2], close[3]]) == 1001,
            "upgraded during shutdown, then no Close 1001 within 3 s ({got:?}, {close:?}, \
             {:?} after the request)\n{}",
            finished.elapsed(),
            server.log()
        );
    } else {
        assert!(
            head.is_empty() || head.starts_with("HTTP/1.1 503 "),
            "unexpected answer during shutdown: {head}"
        );
    }
    drop(late);
    let (status, _) = server.wait_exit(WAIT).expect("exit after SIGINT");
    assert!(status.success(), "exit {status}\n{}", server.log());
}

// ---- 9. CLI -----------------------------------------------------------------------------

fn wsecho_run(args: &[&str]) -> Finished {
    let done = run("wsecho", Command::new(wsecho()).args(args), None, RUN_LIMIT);
    assert!(
        !done.stdout.contains("panicked") && !done.stderr.contains("panicked"),
        "wsecho {args:?} panicked: {}",
        done.describe()
    );
    done
}

/// Exit code `code`, and exactly one line on stderr, which it returns.
fn one_line_failure(args: &[&str], code: i32) -> String {
    let done = wsecho_run(args);
    assert_eq!(done.status.code(), Some(code), "{}", done.describe());
    assert_eq!(done.stderr.lines().count(), 1, "{}", done.describe());
    done.stderr.trim_end().to_string()
}

#[test]
fn help_exits_0() {
    let done = wsecho_run(&["--help"]);
    assert!(done.status.success(), "{}", done.describe());
    assert!(done.stdout.contains("wsecho serve"), "{}", done.describe());
}

#[test]
fn serve_help_exits_0_and_lists_the_options() {
    let done = wsecho_run(&["serve", "--help"]);
    assert!(done.status.success(), "{}", done.describe());
    for flag in ["--addr", "--quiet", "--allow-origin", "--grace"] {
        assert!(done.stdout.contains(flag), "{}", done.describe());
    }
}

#[test]
fn version_prints_name_and_version() {
    let done = wsecho_run(&["--version"]);
    assert!(done.status.success(), "{}", done.describe());
    assert_eq!(
        done.stdout.trim_end(),
        format!("wsecho {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn unknown_serve_flag_exits_2_naming_it_and_pointing_to_help() {
    let line = one_line_failure(&["serve", "--bogus"], 2);
    assert!(line.contains("--bogus"), "{line}");
    assert!(line.contains("--help"), "{line}");
}

#[test]
fn bad_max_conns_value_exits_2_naming_the_flag() {
    let line = one_line_failure(&["serve", "--max-conns", "abc"], 2);
    assert!(line.contains("--max-conns"), "{line}");
}

#[test]
fn port_in_use_exits_1_with_one_line_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let line = one_line_failure(&["serve", "--addr", &addr], 1);
    assert!(line.contains(&addr), "{line}");
}

#[test]
fn unparsable_addr_exits_1() {
    let line = one_line_failure(&["serve", "--addr", "not-an-address"], 1);
    assert!(line.contains("not-an-address"), "{line}");
}

// ---- one process image ---------------------------------------------------------------------

/// The strings of a NUL-separated /proc file (`environ`, `cmdline`).
fn proc_strings(pid: u32, file: &str) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/{file}"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/{file}: {e}"))
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// The pid we started runs the image we started, with the environment and arguments we gave,
/// from start to end: no re-executing itself with settings of its own (operators choose malloc
/// tunables; a tool that wraps the binary must see the process it started).
#[test]
fn serve_runs_the_image_it_was_started_as_with_the_environment_it_was_given() {
    let mut cmd = Command::new(wsecho());
    cmd.args(["serve", "--quiet", "--addr", "127.0.0.1:0"])
        .env_remove("GLIBC_TUNABLES")
        .env("WSECHO_TEST_MARK", "given");
    let server = Server::launch("one-image", cmd);
    let mut ws = ws(server.port);
    assert_eq!(echo(&mut ws, Message::text("hi")), Message::text("hi"));
    let pid = server.pid();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("read /proc/PID/exe");
    assert_eq!(exe, std::fs::canonicalize(wsecho()).unwrap());
    let env = proc_strings(pid, "environ");
    assert!(
        env.iter().any(|v| v == "WSECHO_TEST_MARK=given"),
        "the environment we gave is gone: {env:?}"
    );
    let tunables: Vec<_> = env.iter().filter(|v| v.starts_with("GLIBC_")).collect();
    assert!(tunables.is_empty(), "the server added {tunables:?}");
    let args = proc_strings(pid, "cmdline");
    assert_eq!(args[1..], ["serve", "--quiet", "--addr", "127.0.0.1:0"]);
    close_normally(&mut ws);
    server.assert_no_panic();
}

/// Under valgrind (an emulator: `/proc/self/exe` is valgrind itself) the server starts, serves
/// and echoes like anywhere else, so operators can run it under the tools they use.
#[test]
fn serve_runs_and_echoes_under_valgrind() {
    let installed = Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        prerequisite_missing("valgrind (apt-get install valgrind)");
        return;
    }
    let mut cmd = Command::new("valgrind");
    cmd.args(["--tool=none", "--quiet", wsecho()])
        .args(["serve", "--addr", "127.0.0.1:0"]);
    let server = Server::launch("valgrind", cmd);
    let mut ws = ws(server.port);
    assert_eq!(
        echo(&mut ws, Message::text("under valgrind")),
        Message::text("under valgrind")
    );
    assert_eq!(
        echo(&mut ws, Message::binary(vec![0u8, 1, 2])),
        Message::binary(vec![0u8, 1, 2])
    );
    close_normally(&mut ws);
    server.wait_for_log("recv: under valgrind", Duration::from_secs(10));
    server.assert_no_panic();
}

// ---- real client addresses behind a reverse proxy ------------------------------------------

/// Upgrades with `headers` added, echoes once and closes.
fn upgrade_with_headers(server: &Server, headers: &[(&'static str, &str)]) {
    let mut req = request(server.port);
    for (name, value) in headers {
        req.headers_mut()
            .append(*name, HeaderValue::from_str(value).unwrap());
    }
    let (mut ws, _) = try_ws(server.port, req).expect("WebSocket upgrade");
    assert_eq!(echo(&mut ws, Message::text("hi")), Message::text("hi"));
    close_normally(&mut ws);
}

/// Without `--trust-proxy`, or from a peer outside it, forwarding headers are anybody's
/// words: the log names the socket's peer, never the address a client claims.
#[test]
fn forwarding_headers_from_an_untrusted_peer_do_not_change_the_log() {
    for args in [&[][..], &["--trust-proxy", "10.0.0.0/8"][..]] {
        let server = serve("untrusted-xff", args);
        upgrade_with_headers(
            &server,
            &[("X-Forwarded-For", "6.6.6.6"), ("Forwarded", "for=7.7.7.7")],
        );
        let log = server.wait_for_log("close 127.0.0.1:", WAIT);
        assert!(log.contains("open 127.0.0.1:"), "{log}");
        assert!(
            !log.contains("6.6.6.6") && !log.contains("7.7.7.7") && !log.contains(" via "),
            "a forged header reached the log ({args:?}):\n{log}"
        );
        server.assert_no_panic();
    }
}

/// Behind two trusted proxies (nginx on this host, a balancer at 10.x before it), the client
/// is the right-most address that is not a trusted proxy; what the client itself put in front
/// of that is ignored.
#[test]
fn a_trusted_proxy_chain_names_the_client_in_open_close_and_refused_lines() {
    let server = serve(
        "trusted-xff",
        &["--trust-proxy", "127.0.0.1", "--trust-proxy", "10.0.0.0/8"],
    );
    upgrade_with_headers(
        &server,
        &[("X-Forwarded-For", "6.6.6.6, 198.51.100.7, 10.1.2.3")],
    );
    let log = server.wait_for_log("close 198.51.100.7 via 127.0.0.1:", WAIT);
    assert!(log.contains("open 198.51.100.7 via 127.0.0.1:"), "{log}");
    assert!(!log.contains("6.6.6.6"), "the forged entry won:\n{log}");

    // `Forwarded` when there is no X-Forwarded-For; and a refused upgrade names the client too.
    let mut req = request(server.port);
    req.headers_mut().append(
        "Forwarded",
        HeaderValue::from_static("for=\"[2001:db8::17]:4711\";proto=https"),
    );
    req.headers_mut().append(
        "Origin",
        HeaderValue::from_static("http://elsewhere.example"),
    );
    assert_eq!(refused_status(try_ws(server.port, req)), 403);
    let log = server.wait_for_log("refused 2001:db8::17 via 127.0.0.1:", WAIT);
    assert!(log.contains("403"), "{log}");
    server.assert_no_panic();
}
