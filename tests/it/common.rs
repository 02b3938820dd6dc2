//! Helpers shared by the tests that run real processes: every child behind a guard that kills
//! it when the test ends (a panic included), `wsecho serve` on a port the kernel picked, other
//! servers on a reserved free port, waiting on a server's log, SIGINT, and running a command to
//! completion under a deadline.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The wsecho binary cargo built for these tests.
pub fn wsecho() -> &'static str {
    env!("CARGO_BIN_EXE_wsecho")
}

/// The repository root (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether the tests run in CI (env `CI` set), where a missing prerequisite is a failure.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// Says loudly that a test cannot test what it is named for, because `what` is missing; in CI
/// (env `CI` set) that fails the test, elsewhere the test returns and passes.
pub fn prerequisite_missing(what: &str) {
    let message = format!(
        "PREREQUISITE MISSING: {what}; this test did NOT run (scripts/test.sh installs it)"
    );
    assert!(!in_ci(), "{message}");
    // Straight to stderr: the test harness captures `eprintln!` of passing tests.
    let _ = writeln!(io::stderr(), "\n!!! {message}\n");
}

// ---- children ------------------------------------------------------------------------------

/// A child process that is killed (and reaped) when dropped, also when the test panics: no
/// test leaves a process behind. Every process a test starts is held by one.
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// Starts `cmd`; panics naming `what` if it cannot.
    pub fn spawn(what: &str, cmd: &mut Command) -> KillOnDrop {
        KillOnDrop(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("{what}: cannot start {cmd:?}: {e}")),
        )
    }

    /// Sends SIGINT (Ctrl-C) to the process.
    pub fn sigint(&self) {
        self.signal(libc::SIGINT);
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.0.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) on the pid of our own child, which is not reaped before `self` is
        // dropped, so the pid cannot belong to another process.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill -{signal} {pid}: {}",
            io::Error::last_os_error()
        );
    }
}

impl Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---- ports ---------------------------------------------------------------------------------

/// A loopback port that is free now, for a server that cannot be told to bind port 0 and
/// report it (the peers), or for a port where nothing must listen. `wsecho serve` never needs
/// one: [`serve`] lets the kernel pick.
///
/// Port 0 would not do: the kernel hands out ports for bind(0) and for outgoing connections
/// from the same ephemeral range, so between releasing such a port and the server binding it,
/// one of the many connections the other tests open could take it. So the port comes from
/// just below that range, which the kernel never hands out. Other test processes on the
/// machine (other checkouts running their tests at the same time) count through the same
/// range: a port is taken only with an exclusive lock on a file named after it, held until
/// this process ends, so two of them never start servers on the same port.
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
        if reserve(port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in the {SPAN} below {ephemeral_low}");
}

/// Takes `port` for this process: true if no other process holds its lock file.
fn reserve(port: u16) -> bool {
    use std::os::fd::AsRawFd;
    static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("wsecho-test-ports");
    let _ = fs::create_dir_all(&dir);
    let Ok(file) = File::create(dir.join(port.to_string())) else {
        return true; // No lock files here: fall back to the bind check alone.
    };
    // SAFETY: flock(2) on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return false;
    }
    HELD.lock().unwrap_or_else(|e| e.into_inner()).push(file);
    true
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_accepts(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

// ---- servers -------------------------------------------------------------------------------

/// How long a server gets to start: a loaded machine may start a Python peer slowly; a
/// server that is up returns at once.
const START_LIMIT: Duration = Duration::from_secs(20);

/// `wsecho serve --addr 127.0.0.1:0 ARGS`, ready: listening on the port the kernel gave it
/// (read from its `listening on` line, logged once its Ctrl-C handler is set), killed on drop.
pub fn serve(name: &str, args: &[&str]) -> Server {
    let mut cmd = Command::new(wsecho());
    cmd.args(["serve", "--addr", "127.0.0.1:0"]).args(args);
    Server::launch(name, cmd)
}

/// A background server process, killed (and reaped) when dropped. Its stdout and stderr go
/// to a log file, so a failing test can show what it said.
pub struct Server {
    child: KillOnDrop,
    pub name: String,
    pub port: u16,
    log: PathBuf,
}

impl Server {
    fn spawn(name: &str, mut cmd: Command, file_name: &str) -> Server {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("server-logs");
        fs::create_dir_all(&dir).expect("create server log dir");
        let log = dir.join(file_name);
        let file = File::create(&log).expect("create server log");
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log file"))
            .stderr(file);
        Server {
            child: KillOnDrop::spawn(name, &mut cmd),
            name: name.to_string(),
            port: 0,
            log,
        }
    }

    /// Starts `cmd`, a `wsecho serve --addr 127.0.0.1:0 …` (perhaps under a wrapper such as
    /// prlimit), and waits for its `listening on` line to learn its port. Panics, showing
    /// the log, if it exits or does not listen within 20 s.
    pub fn launch(name: &str, cmd: Command) -> Server {
        use std::sync::atomic::{AtomicU32, Ordering};
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let n = STARTED.fetch_add(1, Ordering::SeqCst);
        let mut server =
            Server::spawn(name, cmd, &format!("{name}-{}-{n}.log", std::process::id()));
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Some(port) = listening_port(&server.log_text()) {
                server.port = port;
                return server;
            }
            server.fail_if_exited("before listening");
            assert!(
                Instant::now() < deadline,
                "{name}: no `listening on` line after {START_LIMIT:?}\n{}",
                server.log()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts `cmd`, a server told to listen on 127.0.0.1:`port` (from [`free_port`]), and
    /// waits for it to accept there. Panics, showing the log, if it exits or never accepts.
    pub fn start(name: &str, cmd: Command, port: u16) -> Server {
        let mut server = Server::spawn(name, cmd, &format!("{name}-{port}.log"));
        server.port = port;
        let deadline = Instant::now() + START_LIMIT;
        loop {
            server.fail_if_exited(&format!("before accepting on port {port}"));
            if port_accepts(port) {
                // Something accepts: make sure it is not a server that failed to bind
                // (port taken after all) and is about to exit.
                thread::sleep(Duration::from_millis(50));
                server.fail_if_exited(&format!("although port {port} accepts"));
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: not accepting on 127.0.0.1:{port} after {START_LIMIT:?}\n{}",
                server.log()
            );
            thread::sleep(Duration::from_millis(25));
        }
    }

    fn fail_if_exited(&mut self, when: &str) {
        if let Some(status) = self.exited() {
            panic!("{}: exited ({status}) {when}\n{}", self.name, self.log());
        }
    }

    /// `ws://127.0.0.1:PORT/echo`.
    pub fn echo_url(&self) -> String {
        format!("ws://127.0.0.1:{}/echo", self.port)
    }

    /// The server process's id, for reading /proc/PID/{status,fd}.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGINT (Ctrl-C) to the server.
    pub fn sigint(&self) {
        self.child.sigint();
    }

    /// Sends `signal` to the server.
    pub fn signal(&self, signal: libc::c_int) {
        self.child.signal(signal);
    }

    /// The exit status if the process has ended, `None` while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits until the server exits: its status and when, or `None` after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<(ExitStatus, Instant)> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return Some((status, Instant::now()));
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Where the log file is.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// What the server has written to stdout and stderr so far, clipped, for failure messages.
    pub fn log(&self) -> String {
        let text = self.log_text();
        let (name, path) = (&self.name, self.log.display());
        format!(
            "--- {name} log ({path}) ---\n{}--- end of {name} log ---",
            clip(&text)
        )
    }

    /// Everything the server has logged so far, unclipped.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls the log until it contains `needle`; returns the whole log then. Panics, showing
    /// the log and `context`, after `within`.
    pub fn wait_for_log_about(&self, needle: &str, within: Duration, context: &str) -> String {
        let deadline = Instant::now() + within;
        loop {
            let text = self.log_text();
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{} never logged {needle:?} within {within:?}{}{context}\n{}",
                self.name,
                if context.is_empty() { "" } else { ": " },
                self.log()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// [`Server::wait_for_log_about`] without context.
    pub fn wait_for_log(&self, needle: &str, within: Duration) -> String {
        self.wait_for_log_about(needle, within, "")
    }

    /// Fails if the server's log shows a panic.
    pub fn assert_no_panic(&self) {
        assert!(
            !self.log_text().contains("panicked"),
            "{} panicked\n{}",
            self.name,
            self.log()
        );
    }
}

/// The port of wsecho's `listening on http://ADDR (…)` line (`https://` with TLS), once it
/// is in `log`.
pub fn listening_port(log: &str) -> Option<u16> {
    let addr = log.lines().find_map(|l| {
        l.strip_prefix("listening on http://")
            .or_else(|| l.strip_prefix("listening on https://"))
    })?;
    let addr = addr.split(' ').next()?;
    addr.parse::<SocketAddr>().ok().map(|a| a.port())
}

/// Reads lines from a server's piped stderr until its `listening on` line; its port. The
/// rest of the pipe is left unread.
pub fn read_listening_port(stderr: &mut impl Read, within: Duration) -> u16 {
    // One byte at a time, so that nothing past the line is taken from the pipe.
    let deadline = Instant::now() + within;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        assert!(
            Instant::now() < deadline,
            "no `listening on` line within {within:?}"
        );
        match stderr.read(&mut byte) {
            Ok(0) => panic!(
                "stderr ended before `listening on`: {:?}",
                String::from_utf8_lossy(&line)
            ),
            Ok(_) if byte[0] == b'\n' => {
                if let Some(port) = listening_port(&String::from_utf8_lossy(&line)) {
                    return port;
                }
                line.clear();
            }
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("reading stderr: {e}"),
        }
    }
}

// ---- running a command to its end ----------------------------------------------------------

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

    /// Fails if the process printed a panic.
    pub fn assert_no_panic(&self) {
        assert!(
            !self.stdout.contains("panicked") && !self.stderr.contains("panicked"),
            "wsecho panicked: {}",
            self.describe()
        );
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

/// What feeds a command's stdin, on a thread of its own; stdin ends when it returns.
pub type Feed = Box<dyn FnOnce(&mut ChildStdin) -> io::Result<()> + Send>;

/// The lines `1` to `total`, fed `per_write` at a time with `pause` between writes: a steady
/// pace, so that whatever a test does meanwhile lands while lines are in flight.
pub fn numbered_lines(total: usize, per_write: usize, pause: Duration) -> Feed {
    Box::new(move |pipe| {
        let mut line = 1;
        while line <= total {
            let chunk: String = (line..(line + per_write).min(total + 1))
                .map(|n| format!("{n}\n"))
                .collect();
            pipe.write_all(chunk.as_bytes())?;
            line += per_write;
            std::thread::sleep(pause);
        }
        Ok(())
    })
}

/// How a command run by [`run_fed`] ended, its output as bytes.
#[derive(Clone)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// From the start to the exit.
    pub took: Duration,
}

/// Runs `cmd` to completion with its stdin fed by `feed` (or no stdin), collecting stdout
/// and stderr. Kills it and panics (`describe` says how) if it runs longer than `limit`.
pub fn run_fed(
    what: &str,
    cmd: &mut Command,
    feed: Option<Feed>,
    limit: Duration,
    describe: impl FnOnce(&Output) -> String,
) -> Output {
    cmd.stdin(if feed.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = KillOnDrop::spawn(what, cmd);
    if let Some(feed) = feed {
        let mut stdin = child.stdin.take().expect("stdin pipe");
        // Write errors after the command has exited are its business, not the test's.
        thread::spawn(move || {
            let _ = feed(&mut stdin);
        });
    }
    let stdout = read_in_background(child.stdout.take().expect("stdout pipe"));
    let stderr = read_in_background(child.stderr.take().expect("stderr pipe"));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() > limit => break None,
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("{what}: wait: {e}"),
        }
    };
    let took = start.elapsed();
    let timed_out = status.is_none();
    let status = status.unwrap_or_else(|| {
        let _ = child.kill();
        child.wait().expect("wait after kill")
    });
    let done = Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
        took,
    };
    if timed_out {
        panic!(
            "{what}: still running after {limit:?}, killed\n{}",
            describe(&done)
        );
    }
    done
}

/// Runs `cmd` to completion with `stdin` fed to it (or no stdin), collecting stdout and
/// stderr as text. Kills it and panics if it runs longer than `limit`.
pub fn run(what: &str, cmd: &mut Command, stdin: Option<Vec<u8>>, limit: Duration) -> Finished {
    let feed = stdin.map(|data| -> Feed { Box::new(move |pipe| pipe.write_all(&data)) });
    let done = run_fed(what, cmd, feed, limit, |done| finished(done).describe());
    finished(&done)
}

fn finished(done: &Output) -> Finished {
    Finished {
        status: done.status,
        stdout: String::from_utf8_lossy(&done.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&done.stderr).into_owned(),
    }
}

fn read_in_background(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

// ---- a command running beside the test -------------------------------------------------------

/// A process running in the background, its stdout read line by line as it comes and its
/// stderr gathered as it comes; killed on drop.
pub struct Running {
    what: String,
    child: KillOnDrop,
    lines: mpsc::Receiver<String>,
    stdout: Option<JoinHandle<String>>,
    /// What the process has written to stderr so far.
    stderr_seen: Arc<Mutex<Vec<u8>>>,
    stderr: Option<JoinHandle<()>>,
}

impl Running {
    pub fn start(what: &str, mut cmd: Command) -> Running {
        cmd.stdin(Stdio::null());
        Running::spawn(what, cmd)
    }

    /// [`Running::start`] with a pipe to the process's stdin, for the test to write to as it
    /// goes; dropping the pipe ends the input.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))] // The nginx tests need TLS.
    pub fn start_piped(what: &str, mut cmd: Command) -> (Running, ChildStdin) {
        cmd.stdin(Stdio::piped());
        let mut running = Running::spawn(what, cmd);
        let stdin = running.child.stdin.take().expect("stdin pipe");
        (running, stdin)
    }

    fn spawn(what: &str, mut cmd: Command) -> Running {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = KillOnDrop::spawn(what, &mut cmd);
        let (tx, lines) = mpsc::channel();
        let mut out = BufReader::new(child.stdout.take().expect("stdout pipe"));
        let stdout = thread::spawn(move || {
            let mut all = String::new();
            let mut line = Vec::new();
            loop {
                line.clear();
                match out.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return all,
                    Ok(_) => {}
                }
                let text = String::from_utf8_lossy(&line).into_owned();
                all.push_str(&text);
                let _ = tx.send(text);
            }
        });
        let stderr_seen = Arc::new(Mutex::new(Vec::new()));
        let seen = stderr_seen.clone();
        let mut err = child.stderr.take().expect("stderr pipe");
        let stderr = thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut chunk) {
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&chunk[..n]);
            }
        });
        Running {
            what: what.to_string(),
            child,
            lines,
            stdout: Some(stdout),
            stderr_seen,
            stderr: Some(stderr),
        }
    }

    /// Sends SIGINT (Ctrl-C).
    pub fn sigint(&self) {
        self.child.sigint();
    }

    /// The next line on stdout; panics after `limit`.
    pub fn next_line(&mut self, limit: Duration) -> String {
        match self.lines.recv_timeout(limit) {
            Ok(line) => line,
            Err(_) => {
                let _ = self.child.kill();
                let status = self.child.wait().expect("wait after kill");
                let done = self.collect(status);
                panic!(
                    "{}: no line on stdout within {limit:?}\n{}",
                    self.what,
                    done.describe()
                );
            }
        }
    }

    /// Waits for a whole line on stderr that contains `needle`, and returns it (without its
    /// newline); panics after `limit`, showing what the process said.
    pub fn stderr_line(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let seen = self.stderr_text();
            let found = seen
                .split_inclusive('\n')
                .filter_map(|l| l.strip_suffix('\n'))
                .find(|l| l.contains(needle));
            if let Some(line) = found {
                return line.to_string();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let status = self.child.wait().expect("wait after kill");
                let done = self.collect(status);
                panic!(
                    "{}: no {needle:?} line on stderr within {limit:?}\n{}",
                    self.what,
                    done.describe()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn stderr_text(&self) -> String {
        let seen = self.stderr_seen.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&seen).into_owned()
    }

    /// Waits for the process to exit (panics after `limit`); returns its output and when
    /// the exit was seen (polled every 5 ms).
    pub fn wait(mut self, limit: Duration) -> (Finished, Instant) {
        let start = Instant::now();
        loop {
            match self.child.try_wait().expect("try_wait") {
                Some(status) => {
                    let exited = Instant::now();
                    let done = self.collect(status);
                    done.assert_no_panic();
                    return (done, exited);
                }
                None if start.elapsed() > limit => {
                    let _ = self.child.kill();
                    let status = self.child.wait().expect("wait after kill");
                    let done = self.collect(status);
                    panic!(
                        "{}: still running after {limit:?}, killed\n{}",
                        self.what,
                        done.describe()
                    );
                }
                None => thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    fn collect(&mut self, status: ExitStatus) -> Finished {
        Finished {
            status,
            stdout: self
                .stdout
                .take()
                .map(|h| h.join().unwrap())
                .unwrap_or_default(),
            stderr: {
                if let Some(reader) = self.stderr.take() {
                    reader.join().unwrap();
                }
                self.stderr_text()
            },
        }
    }
}
