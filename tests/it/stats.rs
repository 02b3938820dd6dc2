//! `wsecho dial --stats`: ping-style lines per echo, the summary, and the exit status, against
//! `wsecho serve` and an in-test peer that loses a probe.

use crate::common::{Finished, Running, free_port, run};
use crate::dial::{LIMIT, PEER_LIMIT, accept_within, assert_exit, dial};
use crate::reconnect::serve_on;
use std::net::TcpListener;
use std::thread;
use tungstenite::Message;

/// The sequence numbers of the `N bytes from URL: seq=K time=T ms` lines, checking their
/// form: `bytes` per probe, a time with three decimals.
fn echo_lines(done: &Finished, url: &str, bytes: usize) -> Vec<u64> {
    let prefix = format!("{bytes} bytes from {url}: seq=");
    done.stdout
        .lines()
        .take_while(|l| !l.starts_with("--- "))
        .map(|line| {
            let rest = line
                .strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("not a probe line: {line:?}\n{}", done.describe()));
            let (seq, time) = rest.split_once(" time=").expect("time=");
            let ms = time.strip_suffix(" ms").expect("ms");
            let (whole, decimals) = ms.split_once('.').expect("decimals");
            assert!(
                whole.parse::<u64>().is_ok() && decimals.len() == 3,
                "time {ms:?} in {line:?}"
            );
            seq.parse().expect("seq")
        })
        .collect()
}

/// The summary after the `--- URL statistics ---` line.
fn summary(done: &Finished, url: &str) -> String {
    let header = format!("--- {url} statistics ---\n");
    let (_, summary) = done
        .stdout
        .split_once(&header)
        .unwrap_or_else(|| panic!("no summary: {}", done.describe()));
    summary.to_string()
}

/// The one summary of a run that Ctrl-C ended: its sent and received counts. Fails unless
/// the summary comes once, last, after any echo lines.
fn interrupted_summary(done: &Finished, url: &str) -> (u64, u64) {
    assert_eq!(
        done.stdout.matches(" statistics ---").count(),
        1,
        "one summary: {}",
        done.describe()
    );
    let summary = summary(done, url);
    assert!(
        summary.lines().all(|l| !l.contains(" bytes from ")),
        "an echo line after the summary: {}",
        done.describe()
    );
    let (sent, rest) = summary.split_once(" sent, ").expect("sent");
    let (received, _) = rest.split_once(" received").expect("received");
    (
        sent.parse().expect("sent count"),
        received.parse().expect("received count"),
    )
}

/// `a/b/c/d` after `label = ` in `text`, each a number of ms with three decimals.
fn figures(text: &str, label: &str, n: usize) -> Vec<f64> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} line in {text}"));
    let values: Vec<f64> = line
        .trim_end_matches(" ms")
        .split('/')
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{v:?} in {line:?}")))
        .collect();
    assert_eq!(values.len(), n, "{line:?}");
    values
}

#[test]
fn stats_prints_a_line_per_echo_and_a_summary_and_exits_0_when_all_came_back() {
    let server = crate::common::serve("stats-serve", &["--quiet"]);
    let url = server.echo_url();
    let done = run(
        "wsecho dial --stats",
        &mut dial(&[
            &url,
            "--stats",
            "--count",
            "5",
            "--interval",
            "0.05",
            "--size",
            "100",
            "--wait",
            "10",
        ]),
        None,
        LIMIT,
    );
    done.assert_no_panic();
    assert_exit(&done, 0);
    assert_eq!(echo_lines(&done, &url, 100), [1, 2, 3, 4, 5]);
    let summary = summary(&done, &url);
    assert!(
        summary.starts_with("5 sent, 5 received, 0.0% loss\n"),
        "{summary}"
    );
    let [min, avg, max, mdev] = figures(&summary, "rtt min/avg/max/mdev = ", 4)[..] else {
        unreachable!()
    };
    assert!(min <= avg && avg <= max && mdev <= max, "{summary}");
    let [p50, p99] = figures(&summary, "rtt p50/p99 = ", 2)[..] else {
        unreachable!()
    };
    assert!(min <= p50 && p50 <= p99 && p99 <= max, "{summary}");
    let connection = summary
        .lines()
        .find(|l| l.starts_with("first connection: connect "))
        .unwrap_or_else(|| panic!("no connection times: {summary}"));
    assert!(
        connection.contains(" ms, upgrade ") && !connection.contains("tls"),
        "{connection}"
    );
}

#[test]
fn a_lost_probe_shows_as_loss_and_exits_1() {
    // Echoes every probe but the second.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local_addr").port();
    thread::spawn(move || {
        let stream = accept_within(&listener, PEER_LIMIT);
        let mut ws = tungstenite::accept(stream).expect("peer: handshake");
        let mut n = 0;
        while let Ok(message) = ws.read() {
            if let Message::Binary(data) = message {
                n += 1;
                if n != 2 {
                    let _ = ws.send(Message::Binary(data));
                }
            }
        }
    });
    let url = format!("ws://127.0.0.1:{port}/echo");
    let done = run(
        "wsecho dial --stats",
        &mut dial(&[
            &url,
            "--stats",
            "--count",
            "4",
            "--interval",
            "0.05",
            "--wait",
            "1",
        ]),
        None,
        LIMIT,
    );
    done.assert_no_panic();
    assert_exit(&done, 1);
    assert_eq!(echo_lines(&done, &url, 32), [1, 3, 4]);
    assert!(
        summary(&done, &url).starts_with("4 sent, 3 received, 25.0% loss\n"),
        "{}",
        done.describe()
    );
    assert!(
        done.stderr.contains("1 of 4 probes got no echo"),
        "{}",
        done.describe()
    );
}

#[test]
fn sigint_ends_the_probes_with_the_summary() {
    let server = crate::common::serve("stats-sigint", &["--quiet"]);
    let url = server.echo_url();
    let mut client = Running::start(
        "wsecho dial --stats",
        dial(&[&url, "--stats", "--interval", "0.05"]),
    );
    for _ in 0..3 {
        client.next_line(LIMIT);
    }
    client.sigint();
    let (done, _) = client.wait(LIMIT);
    assert_exit(&done, 0);
    let summary = summary(&done, &url);
    let (sent, rest) = summary.split_once(" sent, ").expect("sent");
    let (received, _) = rest.split_once(" received").expect("received");
    assert!(sent.parse::<u64>().unwrap() >= 3, "{summary}");
    assert_eq!(sent, received, "{summary}");
}

#[test]
fn sigint_while_waiting_to_reconnect_prints_the_summary_once_and_exits_1() {
    let port = free_port();
    let server = serve_on(port, "stats-reconnect-sigint");
    let url = format!("ws://127.0.0.1:{port}/echo");
    let mut client = Running::start(
        "wsecho dial --stats --reconnect",
        dial(&[
            &url,
            "--stats",
            "--reconnect",
            "--reconnect-max",
            "5",
            "--count",
            "1000",
            "--interval",
            "0.05",
        ]),
    );
    for _ in 0..3 {
        client.next_line(LIMIT);
    }
    server.signal(libc::SIGKILL);
    drop(server);
    // Nothing listens on the port now: each attempt is refused at once, so from the fourth
    // on dial spends its time in a wait of 0.4 s or more, where the signal lands.
    client.stderr_line("reconnecting in", LIMIT);
    client.stderr_line("(attempt 4)", LIMIT);
    client.sigint();
    let (done, _) = client.wait(LIMIT);
    assert_exit(&done, 1);
    let (sent, received) = interrupted_summary(&done, &url);
    assert!(received >= 3 && sent >= received, "{}", done.describe());
    assert!(
        summary(&done, &url).contains("first connection: connect "),
        "{}",
        done.describe()
    );
    assert!(done.stderr.contains("interrupted"), "{}", done.describe());
}

#[test]
fn sigint_before_the_first_connection_prints_an_empty_summary_and_exits_1() {
    // Nothing listens: dial --reconnect waits and tries again, never connecting.
    let url = format!("ws://127.0.0.1:{}/echo", free_port());
    let mut client = Running::start(
        "wsecho dial --stats --reconnect",
        dial(&[&url, "--stats", "--reconnect", "--reconnect-max", "5"]),
    );
    client.stderr_line("(attempt 3)", LIMIT);
    client.sigint();
    let (done, _) = client.wait(LIMIT);
    assert_exit(&done, 1);
    assert_eq!(interrupted_summary(&done, &url), (0, 0));
    assert!(
        summary(&done, &url) == "0 sent, 0 received, 0.0% loss\n",
        "{}",
        done.describe()
    );
}

#[test]
fn sigint_during_a_hanging_handshake_prints_the_summary_and_exits_1() {
    // A listener that accepts and never answers: dial waits for the upgrade.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local_addr").port();
    let url = format!("ws://127.0.0.1:{port}/echo");
    let client = Running::start(
        "wsecho dial --stats",
        dial(&[&url, "--stats", "--connect-timeout", "60"]),
    );
    let _held = accept_within(&listener, PEER_LIMIT);
    client.sigint();
    let (done, _) = client.wait(LIMIT);
    assert_exit(&done, 1);
    assert_eq!(interrupted_summary(&done, &url), (0, 0));
}

#[test]
fn stats_flags_that_do_not_fit_are_usage_errors() {
    for (args, needle) in [
        (vec!["--stats", "--stdin"], "--stdin"),
        (vec!["--size", "64"], "--size"),
        (vec!["--stats", "--size", "4"], "8 bytes"),
        (vec!["--window", "8"], "--window"),
        (vec!["--reconnect-max", "1"], "--reconnect-max"),
    ] {
        let done = run("wsecho dial", &mut dial(&args), None, LIMIT);
        assert_exit(&done, 2);
        assert!(
            done.stderr.contains(needle),
            "{args:?}: {}",
            done.describe()
        );
    }
}

/// Ctrl-C ends dial even when the summary cannot be written: its stdout is a pipe that is
/// full and that nobody reads. Dial exits 1 about a second after the signal, instead of
/// hanging in the write.
#[test]
fn sigint_ends_dial_even_when_stdout_is_full_and_unread() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let (unread, mut full) = std::io::pipe().expect("pipe");
    // A pipe holds 64 KiB on Linux: after this, any write to it blocks.
    full.write_all(&[b'x'; 64 * 1024]).expect("fill the pipe");
    let url = format!("ws://127.0.0.1:{}/echo", free_port());
    let mut cmd = dial(&[&url, "--stats", "--reconnect", "--reconnect-max", "5"]);
    cmd.stdin(Stdio::null()).stdout(full).stderr(Stdio::piped());
    let mut client = crate::common::KillOnDrop::spawn("wsecho dial --stats", &mut cmd);
    let stderr = client.0.stderr.take().expect("stderr pipe");
    let (seen, waiting) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("(attempt 3)") {
                let _ = seen.send(());
            }
        }
    });
    waiting
        .recv_timeout(LIMIT)
        .expect("no third reconnect attempt on stderr");
    client.sigint();
    let signalled = Instant::now();
    let status = loop {
        if let Some(status) = client.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            signalled.elapsed() < LIMIT,
            "dial still runs {LIMIT:?} after SIGINT with its stdout full"
        );
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(1), "{status}");
    drop(unread);
}
