//! Real-browser end-to-end test of the test page served by `wsecho serve`.
//!
//! Starts `wsecho serve` on a free loopback port and runs
//! `node tests/peers/browser/e2e.mjs`, which drives Debian's headless
//! Chromium through playwright-core: Open / Send / non-ASCII + markup /
//! 50 quick sends / Close / re-Open, and saves a screenshot.
//!
//! Needs `tests/peers/browser/setup.sh` first (chromium + playwright-core), so
//! it is ignored by default:
//!     tests/peers/browser/setup.sh
//!     cargo test --test browser -- --include-ignored --nocapture

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const PORT_WAIT: Duration = Duration::from_secs(5);
const E2E_TIMEOUT: Duration = Duration::from_secs(150);

/// Kills (and reaps) the child when dropped, also when the test panics.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

fn wait_for_port(addr: SocketAddr, server: &mut KillOnDrop) {
    let start = Instant::now();
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!("wsecho serve exited before listening on {addr}: {status}");
        }
        if start.elapsed() > PORT_WAIT {
            panic!("wsecho serve did not listen on {addr} within {PORT_WAIT:?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn read_to_string_in_thread(mut r: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

#[test]
#[ignore = "needs chromium: run tests/peers/browser/setup.sh"]
fn browser_e2e() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let peer = root.join("tests/peers/browser");
    assert!(
        peer.join("node_modules/playwright-core").is_dir()
            && Path::new("/usr/bin/chromium").exists(),
        "browser test not set up: run tests/peers/browser/setup.sh"
    );
    let target = root.join("target");
    std::fs::create_dir_all(&target).unwrap();
    let shot: PathBuf = target.join("browser-e2e.png");
    let _ = std::fs::remove_file(&shot);
    let server_log = target.join("browser-e2e-server.log");

    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let log = std::fs::File::create(&server_log).unwrap();
    let mut server = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_wsecho"))
            .args(["serve", "--addr", &addr.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn wsecho serve"),
    );
    wait_for_port(addr, &mut server);

    let url = format!("http://{addr}/");
    let mut node = KillOnDrop(
        Command::new("node")
            .arg(peer.join("e2e.mjs"))
            .arg(&url)
            .arg(&shot)
            .current_dir(&peer)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn node (is node on PATH?)"),
    );
    let out = read_to_string_in_thread(node.0.stdout.take().unwrap());
    let err = read_to_string_in_thread(node.0.stderr.take().unwrap());

    let start = Instant::now();
    let status = loop {
        if let Some(status) = node.0.try_wait().expect("wait for node") {
            break Some(status);
        }
        if start.elapsed() > E2E_TIMEOUT {
            let _ = node.0.kill();
            let _ = node.0.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(100));
    };
    let stdout = out.join().unwrap();
    let stderr = err.join().unwrap();
    drop(server);

    println!("--- e2e.mjs stdout ---\n{stdout}--- e2e.mjs stderr ---\n{stderr}");
    println!("screenshot: {}", shot.display());
    println!("server log: {}", server_log.display());

    let status =
        status.unwrap_or_else(|| panic!("e2e.mjs timed out after {E2E_TIMEOUT:?} (killed)"));
    let last = stdout.lines().last().unwrap_or("");
    assert!(status.success(), "e2e.mjs failed ({status}): {last}");
    assert!(
        stdout.lines().any(|l| l == "browser-e2e: ok"),
        "e2e.mjs exited 0 but did not print `browser-e2e: ok`; last line: {last}"
    );
}
