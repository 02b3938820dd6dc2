//! wsecho behind Debian's real nginx, started with exactly `deploy/nginx.conf`: only the
//! values on the lines the file marks TEST are substituted (nginx's port, the two instances'
//! ports, the certificate, the log and scratch paths, `proxy_read_timeout`). Behind it, two
//! `wsecho serve --trust-proxy 127.0.0.1` instances, as the file says to run them. Clients
//! speak wss:// to nginx; nginx speaks plain HTTP to the instances.
//!
//! Needs nginx and openssl (Debian packages), Chromium for the page, so ignored by default:
//!     cargo test --test it nginx -- --include-ignored
//! Only in builds with the feature tls: `wsecho dial` is the wss:// client of most of them.

use crate::certs::{self, Certs};
use crate::common::{
    Feed, Finished, Running, Server, free_port, port_accepts, repo_root, run, run_fed, wsecho,
};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Every single wait; a test that works is done long before.
const WAIT: Duration = Duration::from_secs(30);

// ---- the harness -----------------------------------------------------------------------------

/// The test certificates of this test process (made on first use).
fn test_certs() -> &'static Certs {
    certs::shared(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("nginx-certs"))
}

/// What a test puts on the TEST lines of deploy/nginx.conf besides paths and ports.
struct Setup {
    /// `proxy_read_timeout`: how long nginx lets a proxied connection be silent.
    read_timeout: &'static str,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            read_timeout: "60s",
        }
    }
}

/// deploy/nginx.conf with `substitutions` (text → replacement) made on the lines it marks
/// TEST, and only there: a substitution that finds nothing, a marked line it does not reach,
/// or one that would change an unmarked line fails the test, so the tests keep running
/// exactly the file users get.
fn configure(template: &str, substitutions: &[(&str, String)]) -> String {
    let mut used = vec![false; substitutions.len()];
    let mut out = String::new();
    for line in template.lines() {
        let marked = line.split_once('#').is_some_and(|(directive, comment)| {
            !directive.trim().is_empty() && comment.contains("TEST")
        });
        let mut changed = line.to_string();
        let mut touched = false;
        for (i, (from, to)) in substitutions.iter().enumerate() {
            if changed.contains(from) {
                changed = changed.replace(from, to);
                used[i] = true;
                touched = true;
            }
        }
        assert!(
            touched == marked,
            "deploy/nginx.conf: {} {line:?}",
            if marked {
                "the tests substitute nothing on the TEST line"
            } else {
                "the tests would change the line not marked TEST"
            }
        );
        out.push_str(&changed);
        out.push('\n');
    }
    for ((from, _), used) in substitutions.iter().zip(used) {
        assert!(used, "deploy/nginx.conf no longer has {from:?}");
    }
    out
}

/// Debian's nginx in the foreground, its master process our child, with its own directory
/// for its configuration, pid file, logs and scratch files.
///
/// Dropping it stops nginx with SIGTERM (its fast shutdown: workers drop their connections
/// at once) and waits for the master, which waits for its workers. Should the master not
/// end in time, it and every worker are killed: a killed master's workers live on, so the
/// plain kill of [`crate::common::KillOnDrop`] would leave them behind.
struct Nginx {
    master: Child,
    port: u16,
    dir: PathBuf,
}

impl Nginx {
    fn start(upstreams: [u16; 2], certs: &Certs, setup: &Setup) -> Nginx {
        use std::sync::atomic::{AtomicU32, Ordering};
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let n = STARTED.fetch_add(1, Ordering::SeqCst);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("nginx")
            .join(format!("{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("temp")).expect("create nginx's directory");
        let port = free_port();
        let path = |p: &Path| p.to_str().expect("a UTF-8 path").to_string();
        let template =
            fs::read_to_string(repo_root().join("deploy/nginx.conf")).expect("read nginx.conf");
        let conf = configure(
            &template,
            &[
                ("listen 443 ssl;", format!("listen 127.0.0.1:{port} ssl;")),
                ("127.0.0.1:8081", format!("127.0.0.1:{}", upstreams[0])),
                ("127.0.0.1:8082", format!("127.0.0.1:{}", upstreams[1])),
                ("/etc/wsecho/fullchain.pem", path(&certs.server_ec_chain)),
                ("/etc/wsecho/privkey.pem", path(&certs.server_ec_key)),
                (
                    "/var/log/nginx/wsecho.access.log",
                    path(&dir.join("access.log")),
                ),
                (
                    "proxy_read_timeout 60s;",
                    format!("proxy_read_timeout {};", setup.read_timeout),
                ),
                ("/var/lib/nginx/", format!("{}/", path(&dir.join("temp")))),
            ],
        );
        let conf_path = dir.join("nginx.conf");
        fs::write(&conf_path, conf).expect("write nginx.conf");
        let out = File::create(dir.join("nginx.out")).expect("create nginx.out");
        let mut cmd = Command::new("nginx");
        cmd.arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(format!("{}/", path(&dir)))
            .arg("-g")
            .arg(format!(
                "daemon off; pid {}; error_log {} info;",
                path(&dir.join("nginx.pid")),
                path(&dir.join("error.log"))
            ))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone nginx.out"))
            .stderr(out);
        let master = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?} (apt-get install nginx): {e}"));
        let mut nginx = Nginx { master, port, dir };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = nginx.master.try_wait() {
                panic!("nginx exited ({status}) at start\n{}", nginx.logs());
            }
            if port_accepts(port) {
                return nginx;
            }
            assert!(
                Instant::now() < deadline,
                "nginx not accepting on 127.0.0.1:{port} after {WAIT:?}\n{}",
                nginx.logs()
            );
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// `wss://127.0.0.1:PORT/echo`.
    fn echo_url(&self) -> String {
        format!("wss://127.0.0.1:{}/echo", self.port)
    }

    /// `https://127.0.0.1:PORT/`, the test page.
    fn page_url(&self) -> String {
        format!("https://127.0.0.1:{}/", self.port)
    }

    /// nginx's access log: one line per request, a WebSocket's when it has ended.
    fn access_log(&self) -> String {
        fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    /// Polls the access log until it has `count` lines containing `needle`; the log then.
    fn wait_for_access(&self, needle: &str, count: usize) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let log = self.access_log();
            if log.lines().filter(|l| l.contains(needle)).count() >= count {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "nginx's access log has no {count} lines with {needle:?} after {WAIT:?}\n{}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn error_log(&self) -> String {
        fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// Everything nginx said, for failure messages.
    fn logs(&self) -> String {
        let read = |name: &str| fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!(
            "--- nginx ({}) stdout+stderr ---\n{}--- error.log ---\n{}--- access.log ---\n{}\
             --- end of nginx's logs ---",
            self.dir.display(),
            read("nginx.out"),
            crate::common::clip(&read("error.log")),
            crate::common::clip(&read("access.log")),
        )
    }

    /// The master's children: its worker processes.
    fn workers(&self) -> Vec<u32> {
        children_of(self.master.id())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let workers = self.workers();
        let pid = self.master.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child, not yet reaped, so the pid is still its.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.master.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.master.kill();
        let _ = self.master.wait();
        for worker in workers {
            if is_running_nginx(worker) {
                // SAFETY: kill(2) on a process that is nginx and was this master's worker; a
                // reused pid would not be an nginx process.
                unsafe { libc::kill(worker as libc::pid_t, libc::SIGKILL) };
            }
        }
        if !thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The processes whose parent is `parent`, from /proc.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| stat(pid).is_some_and(|(_, _, ppid)| ppid == parent))
        .collect()
}

/// The command name, state and parent of `pid`, from /proc/PID/stat.
fn stat(pid: u32) -> Option<(String, char, u32)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (name, rest) = text.split_once(" (")?.1.rsplit_once(") ")?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((name.to_string(), state, ppid))
}

/// Whether `pid` is an nginx process that still runs (not a zombie waiting to be reaped).
fn is_running_nginx(pid: u32) -> bool {
    stat(pid).is_some_and(|(name, state, _)| name == "nginx" && state != 'Z')
}

/// `wsecho serve --addr 127.0.0.1:PORT --trust-proxy 127.0.0.1 ARGS`: an instance as
/// deploy/nginx.conf says to run one.
fn instance(name: &str, port: u16, args: &[&str]) -> Server {
    let mut cmd = Command::new(wsecho());
    cmd.args(["serve", "--addr", &format!("127.0.0.1:{port}")])
        .args(["--trust-proxy", "127.0.0.1"])
        .args(args);
    Server::launch(name, cmd)
}

/// nginx in front of two instances.
struct Deployment {
    nginx: Nginx,
    instances: Vec<Server>,
    ports: [u16; 2],
}

impl Deployment {
    /// Two instances started with `args`, on ports from [`free_port`], and nginx before them.
    fn start(args: &[&str], setup: &Setup) -> Deployment {
        let ports = [free_port(), free_port()];
        let instances = vec![
            instance("nginx-upstream-a", ports[0], args),
            instance("nginx-upstream-b", ports[1], args),
        ];
        let nginx = Nginx::start(ports, test_certs(), setup);
        Deployment {
            nginx,
            instances,
            ports,
        }
    }

    /// `wsecho dial --ca CA ARGS wss://127.0.0.1:NGINX/echo`.
    fn dial(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(wsecho());
        cmd.arg("dial")
            .arg("--ca")
            .arg(&test_certs().ca)
            .args(args)
            .arg(self.nginx.echo_url());
        cmd
    }

    /// Every instance's log, one after the other.
    fn instance_logs(&self) -> String {
        self.instances.iter().map(|s| s.log_text()).collect()
    }

    /// Polls the instances' logs (written a moment after the fact) until one has `needle`;
    /// that instance.
    fn wait_for_instance_log(&self, needle: &str) -> &Server {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(server) = self
                .instances
                .iter()
                .find(|s| s.log_text().contains(needle))
            {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "no instance logged {needle:?} within {WAIT:?}\n{}",
                self.describe()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything every process said, for failure messages.
    fn describe(&self) -> String {
        let instances: Vec<String> = self.instances.iter().map(|s| s.log()).collect();
        format!("{}\n{}", self.nginx.logs(), instances.join("\n"))
    }
}

/// `cmd` with `input` on its stdin, to its end.
fn run_with(cmd: &mut Command, input: &[u8]) -> Finished {
    let done = run("wsecho dial", cmd, Some(input.to_vec()), WAIT);
    done.assert_no_panic();
    done
}

// ---- the harness itself ------------------------------------------------------------------------

/// deploy/nginx.conf as the tests run it differs from the file only on its TEST lines, and
/// nginx accepts it (`nginx -t`).
#[test]
#[ignore = "needs nginx and openssl (scripts/test.sh installs them)"]
fn the_tests_run_deploy_nginx_conf_with_only_its_test_lines_changed() {
    let d = Deployment::start(&[], &Setup::default());
    let ours = fs::read_to_string(d.nginx.dir.join("nginx.conf")).expect("read the test's copy");
    let theirs = fs::read_to_string(repo_root().join("deploy/nginx.conf")).expect("read");
    let differ: Vec<&str> = ours
        .lines()
        .zip(theirs.lines())
        .filter(|(a, b)| a != b)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(ours.lines().count(), theirs.lines().count());
    assert!(
        differ
            .iter()
            .all(|l| l.contains("# ") && l.contains("TEST")),
        "{differ:#?}"
    );
    assert!(differ.len() >= 8, "{differ:#?}");
    let checked = Command::new("nginx")
        .arg("-t")
        .arg("-c")
        .arg(d.nginx.dir.join("nginx.conf"))
        .arg("-p")
        .arg(&d.nginx.dir)
        .arg("-g")
        .arg(format!(
            "pid {}; error_log stderr;",
            d.nginx.dir.join("nginx-t.pid").display()
        ))
        .output()
        .expect("run nginx -t");
    assert!(
        checked.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
}

/// nginx's master and every worker end when the test's handle on nginx is dropped.
#[test]
#[ignore = "needs nginx and openssl (scripts/test.sh installs them)"]
fn nginx_and_its_workers_end_with_the_test() {
    let nginx = Nginx::start([free_port(), free_port()], test_certs(), &Setup::default());
    let (master, port) = (nginx.master.id(), nginx.port);
    let deadline = Instant::now() + WAIT;
    let workers = loop {
        let workers = nginx.workers();
        if !workers.is_empty() {
            break workers;
        }
        assert!(Instant::now() < deadline, "nginx started no worker");
        thread::sleep(Duration::from_millis(10));
    };
    assert!(workers.iter().all(|&w| is_running_nginx(w)), "{workers:?}");
    drop(nginx);
    for pid in workers.iter().chain([&master]) {
        assert!(!is_running_nginx(*pid), "nginx process {pid} still runs");
    }
    assert!(!port_accepts(port), "something still listens on {port}");
}

// ---- through nginx -----------------------------------------------------------------------------

/// Chromium loads the test page from nginx over https and the page echoes over wss (the
/// browser test's whole script: open, send, markup, bursts, close, re-open), through nginx
/// to the instances, whose logs name the browser via nginx.
#[test]
#[ignore = "needs nginx, openssl and chromium: run tests/peers/browser/setup.sh"]
fn chromium_loads_the_page_through_nginx_over_https_and_it_echoes_over_wss() {
    let peer = repo_root().join("tests/peers/browser");
    assert!(
        peer.join("node_modules/playwright-core").is_dir()
            && Path::new("/usr/bin/chromium").exists(),
        "browser test not set up: run tests/peers/browser/setup.sh"
    );
    let d = Deployment::start(&[], &Setup::default());
    let shot = repo_root().join("target/browser-nginx-e2e.png");
    let _ = fs::remove_file(&shot);
    let done = run(
        "e2e.mjs",
        Command::new("node")
            .arg(peer.join("e2e.mjs"))
            .arg(d.nginx.page_url())
            .arg(&shot)
            .arg(certs::spki_sha256_base64(&test_certs().server_ec_key))
            .current_dir(&peer),
        None,
        Duration::from_secs(150),
    );
    assert!(
        done.status.success() && done.stdout.lines().any(|l| l == "browser-e2e: ok"),
        "{}\n{}",
        done.describe(),
        d.describe()
    );
    d.nginx.wait_for_access("\"GET / HTTP/1.1\" 200", 1);
    d.nginx.wait_for_access("\"GET /echo HTTP/1.1\" 101", 2);
    assert!(
        d.instance_logs().contains("open 127.0.0.1 via 127.0.0.1:"),
        "{}",
        d.describe()
    );
}

/// Text, binary (every byte value but the newline that ends a line) and messages of 1 MiB
/// and more go through nginx and back unchanged, and nginx logged the upgrades.
#[test]
#[ignore = "needs nginx and openssl (scripts/test.sh installs them)"]
fn dial_through_nginx_echoes_text_and_binary_unchanged_large_ones_included() {
    let d = Deployment::start(&[], &Setup::default());

    let big_text: String = (0..1_500_000u32)
        .map(|i| char::from(b' ' + (i % 95) as u8))
        .collect();
    let text = format!("hello\nhéllo 世界 <b>\n{big_text}\n");
    let done = run_with(&mut d.dial(&["--stdin", "--wait", "20"]), text.as_bytes());
    assert!(
        done.status.success(),
        "{}\n{}",
        done.describe(),
        d.describe()
    );
    assert!(
        done.stdout == text,
        "text came back changed\n{}",
        d.describe()
    );

    let every_byte: Vec<u8> = (0..=255u8).filter(|&b| b != b'\n').collect();
    let big_binary: Vec<u8> = (0..2_100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .map(|b| if b == b'\n' { 0 } else { b })
        .collect();
    let mut binary = every_byte.clone();
    binary.push(b'\n');
    binary.extend(&big_binary);
    binary.push(b'\n');
    let input = binary.clone();
    let feed: Feed = Box::new(move |pipe| pipe.write_all(&input));
    let done = run_fed(
        "wsecho dial --binary",
        &mut d.dial(&["--stdin", "--binary", "--wait", "20"]),
        Some(feed),
        WAIT,
        |done| String::from_utf8_lossy(&done.stderr).into_owned(),
    );
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(
        done.status.success(),
        "{}: {stderr}\n{}",
        done.status,
        d.describe()
    );
    // Invalid UTF-8 among the bytes: it came back as binary, or dial would have refused it.
    assert!(
        done.stdout == binary,
        "binary came back changed ({} bytes for {}): {stderr}\n{}",
        done.stdout.len(),
        binary.len(),
        d.describe()
    );

    for line in [
        format!("recv: {} bytes binary", every_byte.len()),
        format!("recv: {} bytes binary", big_binary.len()),
        "recv: héllo 世界 <b>".to_string(),
    ] {
        d.wait_for_instance_log(&line);
    }
    d.nginx.wait_for_access("\"GET /echo HTTP/1.1\" 101", 2);
}

/// Through nginx, an instance's log names the client (from nginx's X-Forwarded-For, as
/// `--trust-proxy 127.0.0.1` allows), not nginx's own connection alone.
#[test]
#[ignore = "needs nginx and openssl (scripts/test.sh installs them)"]
fn an_instance_behind_nginx_logs_the_client_via_nginx() {
    let d = Deployment::start(&[], &Setup::default());
    let done = run_with(&mut d.dial(&["--stdin"]), b"who\n");
    assert!(
        done.status.success(),
        "{}\n{}",
        done.describe(),
        d.describe()
    );
    let server = d.wait_for_instance_log("recv: who");
    let log = server.wait_for_log("close 127.0.0.1 via 127.0.0.1:", WAIT);
    assert!(log.contains("open 127.0.0.1 via 127.0.0.1:"), "{log}");
}

/// The origin check still works through nginx (it passes on the browser's Host): the page's
/// own origin may connect, another origin gets 403, from the instance through nginx.
#[test]
#[ignore = "needs nginx and openssl (scripts/test.sh installs them)"]
fn a_page_from_another_origin_is_refused_with_403_through_nginx() {
    let d = Deployment::start(&[], &Setup::default());
    let own = format!("https://127.0.0.1:{}", d.nginx.port);
    let done = run_with(&mut d.dial(&["--stdin", "--origin", &own]), b"same\n");
    assert!(
        done.status.success() && done.stdout == "same\n",
        "the page's own origin: {}\n{}",
        done.describe(),
        d.describe()
    );

    let done = run_with(
        &mut d.dial(&["--stdin", "--origin", "https://elsewhere.example"]),
        b"other\n",
    );
    assert_eq!(done.status.code(), Some(1), "{}", done.describe());
    assert!(done.stderr.contains("403"), "{}", done.describe());
    assert!(done.stdout.is_empty(), "{}", done.describe());
    d.nginx.wait_for_access("\"GET /echo HTTP/1.1\" 403", 1);
    d.wait_for_instance_log("refused 127.0.0.1 via 127.0.0.1:");
}

/// How long the idle tests leave a connection silent: more than twice the 3 s they give
/// nginx's `proxy_read_timeout`.
const IDLE: Duration = Duration::from_secs(7);

/// Sends a line, leaves the connection idle for [`IDLE`] behind a `proxy_read_timeout` of
/// 3 s, sends another; how dial ended and what nginx logged.
fn idle_through_nginx(ping_interval: &str) -> (Finished, Deployment) {
    let d = Deployment::start(
        &["--ping-interval", ping_interval],
        &Setup { read_timeout: "3s" },
    );
    let (mut dial, mut stdin) = Running::start_piped(
        "wsecho dial (idle)",
        d.dial(&["--stdin", "--wait", "5", "--ping-interval", "60"]),
    );
    stdin.write_all(b"before\n").expect("write to dial");
    assert_eq!(dial.next_line(WAIT), "before\n");
    thread::sleep(IDLE);
    // dial may be gone already: the control expects it.
    let _ = stdin.write_all(b"after\n");
    drop(stdin);
    let (done, _) = dial.wait(WAIT);
    (done, d)
}

/// wsecho pings a quiet connection every --ping-interval (1 s here): nginx sees traffic from
/// the instance and keeps an idle connection past its `proxy_read_timeout` (3 s).
#[test]
#[ignore = "needs nginx and openssl (scripts/test.sh installs them)"]
fn an_idle_connection_outlives_proxy_read_timeout_because_wsecho_pings() {
    let (done, d) = idle_through_nginx("1");
    assert!(
        done.status.success() && done.stdout == "before\nafter\n",
        "{}\n{}",
        done.describe(),
        d.describe()
    );
    assert!(
        !d.nginx.error_log().contains("upstream timed out"),
        "{}",
        d.describe()
    );
}

/// The control for the test above: pings slower than the timeout (10 s) do not keep the
/// connection; nginx cuts it after 3 s of silence from the instance.
#[test]
#[ignore = "needs nginx and openssl (scripts/test.sh installs them)"]
fn nginx_cuts_a_connection_idle_longer_than_proxy_read_timeout() {
    let (done, d) = idle_through_nginx("10");
    assert!(
        !done.status.success() && done.stdout == "before\n",
        "{}\n{}",
        done.describe(),
        d.describe()
    );
    assert!(
        d.nginx.error_log().contains("upstream timed out"),
        "{}",
        d.describe()
    );
}

/// A rolling restart behind nginx: while `seq 1 200000 | wsecho dial --stdin --reconnect`
/// streams through nginx, the instance that carries it is stopped with SIGTERM (dial gets
/// 1001 and comes back through nginx to the other) and started again on its port, then the
/// other one likewise. The stream prints exactly 1…200000 in order, dial exits 0, and so
/// does every instance.
///
/// The numbers are those of `seq`; the test only holds back the second half until the
/// first instance is back, so that the second stop also falls in the middle of the stream.
#[test]
#[ignore = "needs nginx and openssl (scripts/test.sh installs them)"]
fn a_rolling_restart_behind_nginx_loses_and_repeats_nothing() {
    const LINES: u32 = 200_000;
    const HALF: u32 = LINES / 2;
    let mut d = Deployment::start(&["--quiet"], &Setup::default());
    let (mut dial, stdin) = Running::start_piped(
        "wsecho dial --reconnect",
        d.dial(&["--stdin", "--reconnect", "--wait", "20"]),
    );
    let (go_on, gate) = mpsc::channel::<()>();
    let feeder = thread::spawn(move || {
        let mut out = BufWriter::new(stdin);
        for n in 1..=LINES {
            if n == HALF + 1 {
                out.flush()?;
                if gate.recv().is_err() {
                    return Ok(());
                }
            }
            writeln!(out, "{n}")?;
        }
        out.flush()
    });

    let mut next = 1u32;
    let mut read_up_to = |dial: &mut Running, last: u32, d: &Deployment| {
        while next <= last {
            let line = dial.next_line(WAIT);
            assert!(
                line == format!("{next}\n"),
                "expected line {next}, got {line:?}\n{}",
                d.describe()
            );
            next += 1;
        }
    };

    // Stop the instance that carries the stream; once dial is back through nginx on the
    // other one, start it again; then the same with the other: both stops cut the stream.
    read_up_to(&mut dial, HALF / 5, &d);
    let opens = |server: &Server| server.log_text().matches("open 127.0.0.1 via").count();
    let first = (0..2)
        .find(|&i| opens(&d.instances[i]) > 0)
        .unwrap_or_else(|| panic!("no instance has the stream\n{}", d.describe()));
    let mut live = [0, 1];
    for (round, which) in [first, 1 - first].into_iter().enumerate() {
        if round == 1 {
            read_up_to(&mut dial, HALF + HALF / 5, &d);
        }
        let other = live[1 - which];
        let opened = opens(&d.instances[other]);
        stop(&mut d.instances[live[which]]);
        let deadline = Instant::now() + WAIT;
        while opens(&d.instances[other]) == opened {
            assert!(
                Instant::now() < deadline,
                "dial did not come back through nginx\n{}",
                d.describe()
            );
            thread::sleep(Duration::from_millis(10));
        }
        let again = instance(
            &format!("nginx-upstream-{which}-again"),
            d.ports[which],
            &["--quiet"],
        );
        d.instances.push(again);
        live[which] = d.instances.len() - 1;
        if round == 0 {
            go_on.send(()).expect("the feeder waits");
        }
    }
    read_up_to(&mut dial, LINES, &d);
    feeder.join().expect("feeder").expect("feed dial's stdin");
    let (done, _) = dial.wait(WAIT);
    assert!(
        done.status.success(),
        "{}\n{}",
        done.describe(),
        d.describe()
    );
    let reconnects = done.stderr.matches("reconnecting").count();
    assert!(
        reconnects >= 2 && done.stderr.contains("1001"),
        "dial was not cut twice with 1001: {}",
        done.describe()
    );

    for i in live {
        stop(&mut d.instances[i]);
    }
    let access = d.nginx.wait_for_access("\"GET /echo HTTP/1.1\" 101", 3);
    let served: Vec<&str> = access
        .lines()
        .filter(|l| l.contains("\"GET /echo HTTP/1.1\" 101"))
        .filter_map(upstream_that_served)
        .collect();
    for port in d.ports {
        assert!(
            served.contains(&format!("127.0.0.1:{port}").as_str()),
            "no stream connection went to {port}\n{access}"
        );
    }
}

/// Stops `server` with SIGTERM, as a service manager does; fails unless it exits 0.
fn stop(server: &mut Server) {
    server.signal(libc::SIGTERM);
    let Some((status, _)) = server.wait_exit(WAIT) else {
        panic!("{} did not stop on SIGTERM\n{}", server.name, server.log());
    };
    assert!(
        status.success(),
        "{} exited {status}\n{}",
        server.name,
        server.log()
    );
}

/// The instance that answered a request, from an access log line's `upstream=A, B` (nginx
/// lists every instance it tried; the last one answered).
fn upstream_that_served(line: &str) -> Option<&str> {
    let tried = line.split_once("upstream=")?.1.split_once(" time=")?.0;
    tried.rsplit(", ").next()
}
