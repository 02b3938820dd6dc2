//! Helpers shared by integration tests that run real processes: a free
//! loopback port, servers that are killed on drop and log to a file, waiting
//! for a port to accept, and running a command to completion under a deadline.
#![allow(dead_code)]

pub mod certs;

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The wsecho binary cargo built for these tests.
pub fn wsecho() -> &'static str {
    env!("CARGO_BIN_EXE_wsecho")
}

/// The repository root (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A loopback port that is free now and stays free until the test's server binds it.
///
/// Port 0 would not do: the kernel hands out ports for bind(0) and for outgoing connections
/// from the same ephemeral range, so between releasing such a port and the server binding it,
/// one of the many connections the other tests open could take it. So the port comes from
/// just below that range, which the kernel never hands out, counting up from a point set by
/// the process id, so that two tests of one run never get the same port.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let ephemeral_low: u32 = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768);
    if ephemeral_low < SPAN + 1024 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        return listener.local_addr().expect("local_addr").port();
    }
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (ephemeral_low - SPAN + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in the {SPAN} below {ephemeral_low}");
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_accepts(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// A background server process, killed (and reaped) when dropped. Its stdout
/// and stderr go to a log file, so a failing test can show what it said.
pub struct Server {
    child: Child,
    pub name: String,
    pub port: u16,
    log: PathBuf,
}

impl Server {
    /// Starts `cmd` and waits up to 20 s for it to accept on 127.0.0.1:`port` (a loaded
    /// machine may start a Python peer slowly; a server that is up returns at once).
    /// Panics, showing the server's log, if it exits or never accepts.
    pub fn start(name: &str, mut cmd: Command, port: u16) -> Server {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("server-logs");
        fs::create_dir_all(&dir).expect("create server log dir");
        let log = dir.join(format!("{name}-{port}.log"));
        let file = File::create(&log).expect("create server log");
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log file"))
            .stderr(file);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {cmd:?}: {e}"));
        let mut server = Server {
            child,
            name: name.to_string(),
            port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "{name}: exited ({status}) before accepting on port {port}\n{}",
                    server.log()
                );
            }
            if port_accepts(port) {
                return server;
            }
            if Instant::now() > deadline {
                panic!(
                    "{name}: not accepting on 127.0.0.1:{port} after 20 s\n{}",
                    server.log()
                );
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// `ws://127.0.0.1:PORT/echo`.
    pub fn echo_url(&self) -> String {
        format!("ws://127.0.0.1:{}/echo", self.port)
    }

    /// What the server has written to stdout and stderr so far.
    pub fn log(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let (name, path) = (&self.name, self.log.display());
        format!(
            "--- {name} log ({path}) ---\n{}--- end of {name} log ---",
            clip(&text)
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a command run by [`run`] ended.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// Status, stdout and stderr (long ones clipped), for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "{}\n--- stdout ---\n{}--- stderr ---\n{}--- end ---",
            self.status,
            clip(&self.stdout),
            clip(&self.stderr)
        )
    }
}

/// `text`, or its first and last 20 lines if it is longer than 40.
pub fn clip(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= 40 {
        return text.to_string();
    }
    let (head, tail) = (&lines[..20], &lines[lines.len() - 20..]);
    format!(
        "{}\n[... {} lines ...]\n{}\n",
        head.join("\n"),
        lines.len() - 40,
        tail.join("\n")
    )
}

/// Runs `cmd` to completion with `stdin` fed to it (or no stdin), collecting
/// stdout and stderr. Kills it and panics if it runs longer than `limit`.
pub fn run(what: &str, cmd: &mut Command, stdin: Option<Vec<u8>>, limit: Duration) -> Finished {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start {cmd:?}: {e}"));
    if let Some(data) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        // Closing the pipe (end of the thread) is the end of input.
        thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    let stdout = read_in_background(child.stdout.take().expect("stdout pipe"));
    let stderr = read_in_background(child.stderr.take().expect("stderr pipe"));
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() > limit => break None,
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("{what}: wait: {e}"),
        }
    };
    let timed_out = status.is_none();
    let status = status.unwrap_or_else(|| {
        let _ = child.kill();
        child.wait().expect("wait after kill")
    });
    let done = Finished {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    };
    if timed_out {
        panic!(
            "{what}: still running after {limit:?}, killed\n{}",
            done.describe()
        );
    }
    done
}

fn read_in_background(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

impl Server {
    /// The server process's id, for reading /proc/PID/{status,fd}.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has ended, `None` while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Everything the server has logged so far, unclipped.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}
