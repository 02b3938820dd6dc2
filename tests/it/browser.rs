//! Real-browser end-to-end tests of the test page served by `wsecho serve`, over http and
//! over https.
//!
//! Each starts a server on a loopback port and runs `node tests/peers/browser/e2e.mjs`, which
//! drives Debian's headless Chromium through playwright-core: Open / Send / non-ASCII +
//! markup / 50 quick sends / Close / re-Open, checks the scheme of every WebSocket the page
//! opened, and saves a screenshot.
//!
//! Over https, Chromium trusts the test server's key alone, by its SPKI hash
//! (`--ignore-certificate-errors-spki-list`): no blanket `--ignore-certificate-errors`, so
//! any other certificate is still refused (the negative test below shows it).
//!
//! Needs `tests/peers/browser/setup.sh` first (chromium + playwright-core), so the tests are
//! ignored by default:
//!     tests/peers/browser/setup.sh
//!     cargo test --test it browser -- --include-ignored --nocapture

use crate::common::{Finished, Server, repo_root, run, serve};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const E2E_TIMEOUT: Duration = Duration::from_secs(150);

/// Runs e2e.mjs against `url`, trusting the key whose SPKI hash is `spki`; the screenshot
/// goes to target/`shot_name`.
fn e2e(server: &Server, url: &str, shot_name: &str, spki: Option<&str>) -> Finished {
    let root = repo_root();
    let peer = root.join("tests/peers/browser");
    assert!(
        peer.join("node_modules/playwright-core").is_dir()
            && Path::new("/usr/bin/chromium").exists(),
        "browser test not set up: run tests/peers/browser/setup.sh"
    );
    let target = root.join("target");
    std::fs::create_dir_all(&target).unwrap();
    let shot: PathBuf = target.join(shot_name);
    let _ = std::fs::remove_file(&shot);

    let mut cmd = Command::new("node");
    cmd.arg(peer.join("e2e.mjs"))
        .arg(url)
        .arg(&shot)
        .args(spki)
        .current_dir(&peer);
    let done = run("e2e.mjs", &mut cmd, None, E2E_TIMEOUT);
    println!(
        "--- e2e.mjs stdout ---\n{}--- e2e.mjs stderr ---\n{}",
        done.stdout, done.stderr
    );
    println!("screenshot: {}", shot.display());
    println!("server log: {}", server.log_path().display());
    done
}

fn assert_e2e_ok(done: &Finished, server: &Server) {
    let last = done.stdout.lines().last().unwrap_or("");
    assert!(
        done.status.success(),
        "e2e.mjs failed ({}): {last}\n{}",
        done.status,
        server.log()
    );
    assert!(
        done.stdout.lines().any(|l| l == "browser-e2e: ok"),
        "e2e.mjs exited 0 but did not print `browser-e2e: ok`; last line: {last}"
    );
}

#[test]
#[ignore = "needs chromium: run tests/peers/browser/setup.sh"]
fn browser_e2e() {
    let server = serve("browser-e2e-server", &[]);
    let url = format!("http://127.0.0.1:{}/", server.port);
    let done = e2e(&server, &url, "browser-e2e.png", None);
    assert_e2e_ok(&done, &server);
}

/// Over https: needs the cargo feature tls.
#[cfg(feature = "tls")]
mod tls {
    use super::{assert_e2e_ok, e2e};
    use crate::certs::spki_sha256_base64;
    use crate::common::{Server, free_port, repo_root};
    use crate::interop::go_server_cmd;
    use crate::interop_tls::{start_wsecho_serve_tls, test_certs};

    /// The page over https from `serve --tls-*`, its echo over wss, Chromium trusting the key.
    #[test]
    #[ignore = "needs chromium: run tests/peers/browser/setup.sh"]
    fn browser_tls_e2e() {
        let c = test_certs();
        let server = start_wsecho_serve_tls(&c.server_ec_chain, &c.server_ec_key, &[]);
        let url = format!("https://127.0.0.1:{}/", server.port);
        let spki = spki_sha256_base64(&c.server_ec_key);
        let done = e2e(&server, &url, "browser-tls-e2e.png", Some(&spki));
        assert_e2e_ok(&done, &server);
    }

    /// Chromium told to trust another key refuses wsecho's certificate: the trust above is what
    /// makes that test pass, not a browser that accepts anything.
    #[test]
    #[ignore = "needs chromium: run tests/peers/browser/setup.sh"]
    fn browser_refuses_wsecho_serve_tls_with_a_key_it_does_not_trust() {
        let c = test_certs();
        let server = start_wsecho_serve_tls(&c.server_ec_chain, &c.server_ec_key, &[]);
        let url = format!("https://127.0.0.1:{}/", server.port);
        let other = spki_sha256_base64(&c.self_signed_key);
        let done = e2e(&server, &url, "browser-tls-refused.png", Some(&other));
        assert!(
            !done.status.success() && done.stdout.contains("ERR_CERT_AUTHORITY_INVALID"),
            "want e2e.mjs to fail on ERR_CERT_AUTHORITY_INVALID\n{}",
            done.describe()
        );
    }

    /// Calibration, no wsecho serving: the Go gorilla TLS server serves wsecho's page at / and
    /// echoes at /echo. When this passes and browser_tls_e2e fails, the failure is wsecho's.
    #[test]
    #[ignore = "needs chromium and peers: run tests/peers/setup.sh and tests/peers/browser/setup.sh"]
    fn calibration_browser_tls_e2e_against_go_tls_server() {
        let c = test_certs();
        let port = free_port();
        let mut cmd = go_server_cmd(port);
        cmd.arg("-cert")
            .arg(&c.server_ec_chain)
            .arg("-key")
            .arg(&c.server_ec_key)
            .arg("-page")
            .arg(repo_root().join("assets/home.html"));
        let server = Server::start("go-echo-server-tls-page", cmd, port);
        let url = format!("https://127.0.0.1:{port}/");
        let spki = spki_sha256_base64(&c.server_ec_key);
        let done = e2e(&server, &url, "browser-tls-calibration.png", Some(&spki));
        assert_e2e_ok(&done, &server);
    }
}
