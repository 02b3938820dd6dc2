//! `wsecho dial --reconnect`, black box: the real binary rides out servers that are killed,
//! stopped and restarted on the same port, and in-test peers that break connections at
//! chosen points; it stops on what will not heal, and Ctrl-C ends it at any point.

use crate::common::{Feed, KillOnDrop, Server, free_port, numbered_lines, run, run_fed, wsecho};
use crate::dial::{
    LIMIT, PEER_LIMIT, Ws, accept_within, assert_exit, dial, echo, is_timeout, one_diagnostic,
};
use std::io::{self, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};
use tungstenite::Message;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

/// `wsecho serve --quiet` on 127.0.0.1:`port`, ready, killed on drop.
pub(crate) fn serve_on(port: u16, name: &str) -> Server {
    let mut cmd = Command::new(wsecho());
    cmd.args(["serve", "--quiet", "--addr", &format!("127.0.0.1:{port}")]);
    Server::start(name, cmd, port)
}

/// A server on a loopback port that runs `serve` on each of the first `n` connections in
/// turn (connection index, upgraded socket); the listener stays open until the test ends.
fn peers(n: usize, serve: impl Fn(usize, Ws) + Send + 'static) -> (u16, mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("local_addr").port();
    let (served, all_served) = mpsc::channel();
    thread::spawn(move || {
        for i in 0..n {
            let stream = accept_within(&listener, PEER_LIMIT);
            stream
                .set_read_timeout(Some(PEER_LIMIT))
                .expect("set_read_timeout");
            let ws = tungstenite::accept(stream).expect("peer: WebSocket handshake");
            serve(i, ws);
        }
        let _ = served.send(());
        // Hold the listener: a further connection would queue here, unanswered.
        thread::sleep(PEER_LIMIT);
        drop(listener);
    });
    (port, all_served)
}

fn url(port: u16) -> String {
    format!("ws://127.0.0.1:{port}/echo")
}

/// The number of `reconnecting in` lines on stderr.
fn attempts(stderr: &str) -> usize {
    stderr
        .lines()
        .filter(|l| l.contains("reconnecting in"))
        .count()
}

#[test]
fn every_line_comes_back_exactly_once_in_order_across_kills_and_a_restart() {
    const LINES: usize = 200_000;
    let port = free_port();
    let mut server = serve_on(port, "reconnect-serve-0");
    // The lines go in at a steady pace (about 4 s in all) so that the server is stopped
    // while lines are in flight, not before the first or after the last.
    let feed = numbered_lines(LINES, 500, Duration::from_millis(10));
    let mut cmd = dial(&[
        &url(port),
        "--stdin",
        "--reconnect",
        "--reconnect-max",
        "0.5",
        "--wait",
        "20",
    ]);
    // A backstop: unloaded, the run takes about 5 s; with the machine's two cores shared by
    // a load of 30 it took 54 s.
    let dialing = thread::spawn(move || {
        run_fed(
            "wsecho dial --stdin --reconnect",
            &mut cmd,
            Some(feed),
            Duration::from_secs(180),
            |o| String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    });
    let stops = [libc::SIGKILL, libc::SIGKILL, libc::SIGTERM];
    for (round, stop) in stops.into_iter().enumerate() {
        thread::sleep(Duration::from_millis(700));
        server.signal(stop);
        assert!(
            server.wait_exit(Duration::from_secs(10)).is_some(),
            "server did not stop\n{}",
            server.log()
        );
        server.assert_no_panic();
        // Down for a moment: dial's attempts meet a refused port.
        thread::sleep(Duration::from_millis(150));
        server = serve_on(port, &format!("reconnect-serve-{}", round + 1));
    }
    let done = dialing.join().expect("dial runner");
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(attempts(&stderr) >= 3, "too few reconnects: {stderr}");
    assert!(
        stderr.contains("1001"),
        "dial never saw the SIGTERMed server's Close 1001: {stderr}"
    );
    let expected: String = (1..=LINES).map(|n| format!("{n}\n")).collect();
    if done.stdout != expected.as_bytes() {
        let got = String::from_utf8_lossy(&done.stdout);
        let lines: Vec<&str> = got.lines().collect();
        let first_wrong = lines
            .iter()
            .enumerate()
            .find(|(i, l)| **l != (i + 1).to_string())
            .map(|(i, l)| format!("line {} is {l:?}", i + 1));
        panic!(
            "{} lines instead of {LINES}; first difference: {first_wrong:?}\n{stderr}",
            lines.len()
        );
    }
}

#[test]
fn lines_a_broken_connection_did_not_echo_are_sent_again_once() {
    // The first connection echoes "a" of a, b, c and breaks without a Close; the second
    // echoes everything it gets. b and c come back once each, a is not sent again.
    let (got_tx, got) = mpsc::channel();
    let (port, _served) = peers(2, move |i, mut ws| {
        if i == 0 {
            let mut texts = Vec::new();
            while texts.len() < 3 {
                match ws.read() {
                    Ok(Message::Text(t)) => texts.push(t.to_string()),
                    Ok(_) => {}
                    Err(e) => panic!("peer: {e}"),
                }
            }
            ws.send(Message::text(texts[0].clone())).expect("echo a");
            // Let dial read the echo before the connection goes.
            thread::sleep(Duration::from_millis(300));
            let _ = got_tx.send(texts);
            drop(ws);
        } else {
            let seen = echo(ws);
            let _ = got_tx.send(seen.texts);
        }
    });
    let done = run(
        "wsecho dial --stdin --reconnect",
        &mut dial(&[&url(port), "--stdin", "--reconnect", "--wait", "10"]),
        Some(b"a\nb\nc\n".to_vec()),
        LIMIT,
    );
    done.assert_no_panic();
    assert_exit(&done, 0);
    assert_eq!(done.stdout, "a\nb\nc\n", "{}", done.describe());
    assert_eq!(got.recv_timeout(PEER_LIMIT).unwrap(), ["a", "b", "c"]);
    assert_eq!(got.recv_timeout(PEER_LIMIT).unwrap(), ["b", "c"], "resent");
    assert_eq!(attempts(&done.stderr), 1, "{}", done.describe());
}

#[test]
fn ticks_go_on_after_a_reconnect_and_count_counts_echoes() {
    // The first connection echoes the first tick, swallows the second and closes with 1012
    // (service restart); the second echoes. --count 3 means three echoes, so the lost tick
    // is made up for: counting sends would stop at two lines.
    let (port, _served) = peers(2, |i, mut ws| {
        if i == 0 {
            let mut ticks = 0;
            while ticks < 2 {
                match ws.read() {
                    Ok(Message::Text(t)) => {
                        ticks += 1;
                        if ticks == 1 {
                            let _ = ws.send(Message::Text(t));
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
            let _ = ws.close(Some(CloseFrame {
                code: CloseCode::Restart,
                reason: "restart".into(),
            }));
            while ws.read().is_ok() {}
        } else {
            echo(ws);
        }
    });
    let done = run(
        "wsecho dial --reconnect --count 3",
        &mut dial(&[
            &url(port),
            "--reconnect",
            "--count",
            "3",
            "--interval",
            "0.05",
            "--wait",
            "10",
        ]),
        None,
        LIMIT,
    );
    done.assert_no_panic();
    assert_exit(&done, 0);
    let recv = done
        .stdout
        .lines()
        .filter(|l| l.starts_with("recv: "))
        .count();
    assert_eq!(recv, 3, "{}", done.describe());
    assert_eq!(attempts(&done.stderr), 1, "{}", done.describe());
    assert!(done.stderr.contains("1012"), "{}", done.describe());
}

#[test]
fn a_normal_close_1000_is_not_retried() {
    let (port, _served) = peers(1, |_, mut ws| {
        let _ = ws.read();
        let _ = ws.close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }));
        while ws.read().is_ok() {}
    });
    // A retry would reach the listener, which never answers again: dial would hang.
    let done = run(
        "wsecho dial --reconnect",
        &mut dial(&[&url(port), "--reconnect", "--interval", "0.05"]),
        None,
        LIMIT,
    );
    done.assert_no_panic();
    assert_exit(&done, 0);
    assert_eq!(attempts(&done.stderr), 0, "{}", done.describe());
}

#[test]
fn a_refused_upgrade_is_not_retried() {
    let server = crate::common::serve("reconnect-404", &[]);
    let done = run(
        "wsecho dial --reconnect",
        &mut dial(&[
            &format!("ws://127.0.0.1:{}/nope", server.port),
            "--reconnect",
            "--reconnect-max",
            "0.1",
        ]),
        None,
        LIMIT,
    );
    done.assert_no_panic();
    assert_exit(&done, 1);
    assert!(one_diagnostic(&done).contains("404"), "{}", done.describe());
}

#[test]
fn the_first_connect_is_retried_until_the_server_is_up() {
    let port = free_port();
    let mut client = KillOnDrop::spawn(
        "wsecho dial --reconnect",
        dial(&[
            &url(port),
            "--reconnect",
            "--reconnect-max",
            "0.2",
            "--count",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped()),
    );
    thread::sleep(Duration::from_millis(500));
    assert!(
        client.try_wait().expect("try_wait").is_none(),
        "dial gave up at once"
    );
    let _server = serve_on(port, "reconnect-late");
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = client.try_wait().expect("try_wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "dial still running");
        thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    let _ = io::Read::read_to_string(client.stderr.as_mut().expect("stderr"), &mut stderr);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(attempts(&stderr) >= 1, "{stderr}");
}

#[test]
fn sigint_while_waiting_to_reconnect_exits_1_promptly() {
    let port = free_port();
    let server = serve_on(port, "reconnect-sigint");
    let mut client = crate::common::Running::start(
        "wsecho dial --reconnect",
        dial(&[&url(port), "--reconnect", "--interval", "0.05"]),
    );
    client.next_line(LIMIT);
    server.signal(libc::SIGKILL);
    drop(server);
    // Long enough for a few refused attempts: the waits have grown past a second.
    thread::sleep(Duration::from_millis(2500));
    client.sigint();
    let signalled = Instant::now();
    let (done, exited) = client.wait(LIMIT);
    assert_exit(&done, 1);
    assert!(done.stderr.contains("interrupted"), "{}", done.describe());
    let took = exited - signalled;
    assert!(
        took < Duration::from_secs(3),
        "took {took:?}: {}",
        done.describe()
    );
}

#[test]
fn the_window_bounds_lines_in_flight_and_what_is_read_from_stdin() {
    // A peer that reads and never echoes: dial must stop at --window unechoed lines and so
    // stop reading stdin (the pipe, the stdin thread's small queue and one read buffer
    // hold a few hundred KiB at most, where the input here is 64 MiB).
    let (count_tx, counted) = mpsc::channel();
    let (port, _served) = peers(1, move |_, mut ws| {
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(1000)))
            .expect("set_read_timeout");
        let mut texts = 0;
        loop {
            match ws.read() {
                Ok(Message::Text(_)) => texts += 1,
                Ok(_) => {}
                // Quiet for a second: dial has stopped sending.
                Err(e) if is_timeout(&e) => break,
                Err(_) => break,
            }
        }
        let _ = count_tx.send(texts);
        let _ = ws.close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }));
        while ws.read().is_ok() {}
    });
    let fed = Arc::new(AtomicUsize::new(0));
    let counter = fed.clone();
    let feed: Feed = Box::new(move |pipe| {
        let line = [b'x'; 1023]
            .iter()
            .chain(b"\n")
            .copied()
            .collect::<Vec<u8>>();
        for _ in 0..(64 << 10) {
            pipe.write_all(&line)?;
            counter.fetch_add(line.len(), Ordering::SeqCst);
        }
        Ok(())
    });
    let done = run_fed(
        "wsecho dial --stdin --reconnect --window 10",
        &mut dial(&[&url(port), "--stdin", "--reconnect", "--window", "10"]),
        Some(feed),
        LIMIT,
        |o| String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(0), "{stderr}");
    assert_eq!(
        counted.recv_timeout(PEER_LIMIT).unwrap(),
        10,
        "lines in flight"
    );
    let read = fed.load(Ordering::SeqCst);
    assert!(read < 1 << 20, "dial took {read} bytes of stdin: {stderr}");
}

#[cfg(feature = "tls")]
#[test]
fn a_reconnect_line_says_what_the_final_error_would_with_its_hint() {
    // A listener nobody accepts from: the kernel completes the TCP handshake and nothing
    // answers the ClientHello, so the TLS handshake times out. That heals (the server may
    // be starting), and the CLI's message for it names --connect-timeout.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("local_addr").port();
    let url = format!("wss://127.0.0.1:{port}/echo");
    let ca = crate::tls::certs().ca.to_str().expect("UTF-8 path");
    let args = [url.as_str(), "--ca", ca, "--connect-timeout", "0.2"];
    let once = run("wsecho dial wss://", &mut dial(&args), None, LIMIT);
    once.assert_no_panic();
    assert_exit(&once, 1);
    let last = one_diagnostic(&once);
    let final_error = last.strip_prefix("wsecho: ").unwrap_or(&last);
    assert!(
        final_error.contains("--connect-timeout"),
        "{}",
        once.describe()
    );
    let mut client = crate::common::Running::start(
        "wsecho dial wss:// --reconnect",
        dial(&[&args[..], &["--reconnect", "--reconnect-max", "0.2"][..]].concat()),
    );
    let line = client.stderr_line("reconnecting in", LIMIT);
    let (why, _) = line
        .split_once("; reconnecting in")
        .expect("reconnect line");
    assert_eq!(why, final_error);
    drop(listener);
}
