//! Real-browser end-to-end test of the test page served by `wsecho serve`.
//!
//! Starts `wsecho serve` on a loopback port and runs `node tests/peers/browser/e2e.mjs`,
//! which drives Debian's headless Chromium through playwright-core: Open / Send / non-ASCII +
//! markup / 50 quick sends / Close / re-Open, and saves a screenshot.
//!
//! Needs `tests/peers/browser/setup.sh` first (chromium + playwright-core), so it is ignored
//! by default:
//!     tests/peers/browser/setup.sh
//!     cargo test --test it browser -- --include-ignored --nocapture

use crate::common::{repo_root, run, serve};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const E2E_TIMEOUT: Duration = Duration::from_secs(150);

#[test]
#[ignore = "needs chromium: run tests/peers/browser/setup.sh"]
fn browser_e2e() {
    let root = repo_root();
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

    let server = serve("browser-e2e-server", &[]);
    let url = format!("http://127.0.0.1:{}/", server.port);
    let done = run(
        "e2e.mjs",
        Command::new("node")
            .arg(peer.join("e2e.mjs"))
            .arg(&url)
            .arg(&shot)
            .current_dir(&peer),
        None,
        E2E_TIMEOUT,
    );
    let server_log = server.log_path().to_path_buf();
    drop(server);

    let (status, stdout, stderr) = (done.status, done.stdout, done.stderr);
    println!("--- e2e.mjs stdout ---\n{stdout}--- e2e.mjs stderr ---\n{stderr}");
    println!("screenshot: {}", shot.display());
    println!("server log: {}", server_log.display());

    let last = stdout.lines().last().unwrap_or("");
    assert!(status.success(), "e2e.mjs failed ({status}): {last}");
    assert!(
        stdout.lines().any(|l| l == "browser-e2e: ok"),
        "e2e.mjs exited 0 but did not print `browser-e2e: ok`; last line: {last}"
    );
}
