//! `wsecho dial` through `https://` proxies: squid listening with TLS (`https_port`), its
//! certificate issued by a CA of its own that dial trusts only through `SSL_CERT_FILE`, as a
//! box trusts a private proxy CA. The target's certificates come from another CA, named with
//! `--ca`: so each test shows which trust applies to which hop. For `wss://` the target's TLS
//! runs inside the proxy's.

use crate::certs::{self, Certs};
use crate::common::{Running, Server, free_port, numbered_lines, run_fed};
use crate::proxy::{
    LIMIT, LINES, Squid, assert_echoed, assert_fails_with, dial, dial_command, dial_fed, serve,
    tinyproxy,
};
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// The proxy's CA and certificate: a set of its own, made once per test process.
fn proxy_certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("proxy-certs")
            .join(std::process::id().to_string());
        let _ = fs::remove_dir_all(&dir);
        certs::make_named(&dir, "wsecho test proxy")
    })
}

fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// squid in the foreground, speaking TLS on its port with the proxy set's certificate for
/// `localhost` and `127.0.0.1`, logging every request to `access.log` in its own directory
/// (returned). With `auth`, it tunnels only for user `wsecho`, password `p@ss:w0rd`.
fn squid_https(auth: bool) -> (Squid, PathBuf) {
    let port = free_port();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("squid-https-{port}"));
    fs::create_dir_all(&dir).expect("create squid dir");
    // Run as root, squid works as user 'proxy': it must be able to write its logs here and
    // read its certificate and key.
    let mode = |path: &Path, mode: u32| {
        let mut perms = fs::metadata(path).expect("stat").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, mode);
        fs::set_permissions(path, perms).expect("chmod");
    };
    mode(&dir, 0o777);
    let c = proxy_certs();
    let (cert, key) = (dir.join("proxy.pem"), dir.join("proxy.key"));
    fs::copy(&c.server_ec_chain, &cert).expect("copy the proxy's certificate");
    fs::copy(&c.server_ec_key, &key).expect("copy the proxy's key");
    mode(&cert, 0o644);
    mode(&key, 0o644);
    let d = dir.display();
    let access = match auth {
        // `openssl passwd -apr1 -salt wsecho12 'p@ss:w0rd'`
        true => {
            fs::write(
                dir.join("passwd"),
                "wsecho:$apr1$wsecho12$ydTse8hetaNWzUZEe7WA60\n",
            )
            .expect("passwd");
            format!(
                "auth_param basic program /usr/lib/squid/basic_ncsa_auth {d}/passwd\n\
                 auth_param basic children 1 startup=1 idle=1\n\
                 acl authed proxy_auth REQUIRED\nhttp_access allow authed\n"
            )
        }
        false => "http_access allow localhost\n".to_string(),
    };
    let config = dir.join("squid.conf");
    fs::write(
        &config,
        format!(
            "https_port 127.0.0.1:{port} tls-cert={d}/proxy.pem tls-key={d}/proxy.key\n\
             pid_filename none\ncache deny all\npinger_enable off\n\
             cache_log {d}/cache.log\naccess_log stdio:{d}/access.log\n\
             {access}http_access deny all\nshutdown_lifetime 0 seconds\n"
        ),
    )
    .expect("write squid config");
    (Squid::start(&config, port), dir.join("access.log"))
}

/// What makes dial trust the proxy's CA: the system's roots, as `SSL_CERT_FILE` names them.
/// Debian's squid (built with GnuTLS) sends its certificate without the intermediate CA that
/// issued it, so the bundle holds that intermediate beside the root, as a system bundle may.
fn trust_proxy() -> (&'static str, &'static str) {
    static BUNDLE: OnceLock<PathBuf> = OnceLock::new();
    let bundle = BUNDLE.get_or_init(|| {
        let c = proxy_certs();
        let mut pem = fs::read(&c.ca).expect("read the proxy's CA");
        pem.extend(fs::read(c.dir.join("intermediate.pem")).expect("read its intermediate"));
        let bundle = c.dir.join("bundle.pem");
        fs::write(&bundle, pem).expect("write the bundle");
        bundle
    });
    ("SSL_CERT_FILE", s(bundle))
}

fn via(proxy: &Server) -> String {
    format!("https://127.0.0.1:{}", proxy.port)
}

/// Waits (5 s at most) for squid to log a tunnel to `target` (`host:port`).
fn wait_for_tunnel(proxy: &Server, access_log: &Path, target: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let connect = format!("CONNECT {target} ");
    loop {
        let log = fs::read_to_string(access_log).unwrap_or_default();
        if log
            .lines()
            .any(|l| l.contains("TCP_TUNNEL/200") && l.contains(&connect))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "squid never logged a tunnel to {target}:\n{log}\n{}",
            proxy.log()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// The target: `wsecho serve` with TLS from the tests' usual set (not the proxy's).
fn serve_wss() -> Server {
    let c = crate::tls::certs();
    crate::tls::serve_tls(&c.server_ec_chain, &c.server_ec_key, &[])
}

fn target_ca() -> &'static str {
    s(&crate::tls::certs().ca)
}

#[test]
fn ws_runs_inside_the_tls_of_an_https_proxy() {
    let server = serve();
    let (proxy, access_log) = squid_https(false);
    let via = via(&proxy);
    let done = dial(&server.echo_url(), &["--proxy", &via], &[trust_proxy()]);
    assert_echoed(&done, Some(&via));
    wait_for_tunnel(&proxy, &access_log, &format!("127.0.0.1:{}", server.port));
}

/// TLS inside TLS: every byte of large messages and of many small ones comes back.
#[test]
fn wss_runs_its_own_tls_inside_the_proxys_byte_for_byte() {
    let server = serve_wss();
    let (proxy, access_log) = squid_https(false);
    let via = via(&proxy);
    let url = format!("wss://localhost:{}/echo", server.port);
    let mut input = Vec::new();
    for (i, len) in [1, 16_383, 16_384, 70_000, 1_500_000, 3]
        .into_iter()
        .enumerate()
    {
        input.extend((0..len).map(|j| b'a' + ((i * 7 + j * 13) % 26) as u8));
        input.push(b'\n');
    }
    for n in 0..20_000 {
        input.extend(format!("{n}\n").bytes());
    }
    let done = dial_fed(
        &url,
        &["--proxy", &via, "--ca", target_ca()],
        &[trust_proxy()],
        input.clone(),
    );
    assert_eq!(done.status.code(), Some(0), "{}", done.stderr);
    assert!(
        done.stdout.as_bytes() == input.as_slice(),
        "the echoes differ from the input ({} bytes back of {}): {}",
        done.stdout.len(),
        input.len(),
        done.stderr
    );
    assert!(
        done.stderr
            .starts_with(&format!("connecting to {url} via {via}\n")),
        "{}",
        done.stderr
    );
    wait_for_tunnel(&proxy, &access_log, &format!("localhost:{}", server.port));
    // The target saw the TLS session (its own certificate), the proxy only CONNECT.
    server.wait_for_log("recv: 19999", Duration::from_secs(5));
}

/// `--ca` names the target's CA only, and `--insecure` skips the target's check only: the
/// proxy's certificate is checked against the system's roots, and a failure there says how to trust a private proxy CA. It will not
/// heal, so `--reconnect` does not retry it.
#[test]
fn the_proxys_certificate_is_checked_against_the_system_roots_not_ca() {
    let server = serve_wss();
    let (proxy, _) = squid_https(false);
    let via = via(&proxy);
    let url = format!("wss://localhost:{}/echo", server.port);
    let proxy_ca = s(&proxy_certs().ca);
    let done = dial_fed(
        &url,
        &["--proxy", &via, "--ca", proxy_ca, "--reconnect"],
        &[("SSL_CERT_FILE", target_ca())],
        LINES.into(),
    );
    assert_fails_with(
        &done,
        &[
            &format!("TLS to the proxy {via} failed"),
            "not issued by a trusted authority",
            "SSL_CERT_FILE",
            "--ca is for the target",
        ],
    );
    assert!(!done.stderr.contains("reconnecting"), "{}", done.stderr);
    // Nor does --insecure: it gives up checking the target, not the proxy.
    let done = dial_fed(
        &url,
        &["--proxy", &via, "--insecure"],
        &[("SSL_CERT_FILE", target_ca())],
        LINES.into(),
    );
    assert_eq!(done.status.code(), Some(1), "{}", done.describe());
    assert!(
        done.stderr
            .contains(&format!("TLS to the proxy {via} failed")),
        "{}",
        done.describe()
    );
    // Trusted both ways, the same run works.
    let done = dial_fed(
        &url,
        &["--proxy", &via, "--ca", target_ca()],
        &[trust_proxy()],
        LINES.into(),
    );
    assert_echoed(&done, Some(&via));
}

/// The target's trust is the target's: with the proxy trusted but not the target, the
/// target's certificate is the one refused.
#[test]
fn the_targets_certificate_is_still_checked_inside_the_proxys_tls() {
    let server = serve_wss();
    let (proxy, _) = squid_https(false);
    let via = via(&proxy);
    let url = format!("wss://localhost:{}/echo", server.port);
    let done = dial_fed(&url, &["--proxy", &via], &[trust_proxy()], LINES.into());
    assert_fails_with(&done, &["not issued by a trusted authority", "--ca FILE"]);
    assert!(!done.stderr.contains("TLS to the proxy"), "{}", done.stderr);
}

/// A plain HTTP proxy named with `https://`: one that answers the TLS handshake with HTTP
/// is told at once, one that waits for the rest of a request line (tinyproxy) at the
/// connect timeout; both say to use `http://`.
#[test]
fn an_https_proxy_url_aimed_at_a_plain_http_proxy_says_so() {
    let server = serve();
    let plain = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = plain.local_addr().expect("addr").port();
    let answers = thread::spawn(move || {
        if let Ok((mut stream, _)) = plain.accept() {
            let _ = stream.read(&mut [0u8; 1024]);
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let via = format!("https://127.0.0.1:{port}");
    let done = dial(&server.echo_url(), &["--proxy", &via], &[trust_proxy()]);
    assert_fails_with(&done, &[&via, "does not speak TLS", "use http://"]);
    answers.join().expect("plain proxy");

    let proxy = tinyproxy("");
    let via = format!("https://127.0.0.1:{}", proxy.port);
    let done = dial(
        &server.echo_url(),
        &["--proxy", &via, "--connect-timeout", "1"],
        &[trust_proxy()],
    );
    assert_fails_with(
        &done,
        &[
            &via,
            "did not answer the TLS handshake within 1s",
            "use http://",
        ],
    );
}

#[test]
fn an_https_proxy_takes_its_credentials_inside_its_tls() {
    let server = serve();
    let (proxy, access_log) = squid_https(true);
    let via = via(&proxy);
    let done = dial(&server.echo_url(), &["--proxy", &via], &[trust_proxy()]);
    assert_fails_with(
        &done,
        &[&via, "wants credentials: put user:pass@ in the proxy URL"],
    );
    let right = format!("https://wsecho:p%40ss%3Aw0rd@127.0.0.1:{}", proxy.port);
    let done = dial(&server.echo_url(), &["--proxy", &right], &[trust_proxy()]);
    assert_echoed(&done, Some(&via));
    assert!(!done.stderr.contains("w0rd"), "{}", done.describe());
    wait_for_tunnel(&proxy, &access_log, &format!("127.0.0.1:{}", server.port));
}

/// An `https://` URL in the environment works as one given on the command line.
#[test]
fn an_https_proxy_from_the_environment_carries_a_non_local_target() {
    let server = serve();
    let (proxy, access_log) = squid_https(false);
    let via = via(&proxy);
    let url = format!("ws://0.0.0.0:{}/echo", server.port);
    let done = dial(&url, &[], &[("HTTP_PROXY", &via), trust_proxy()]);
    assert_echoed(&done, Some(&via));
    wait_for_tunnel(&proxy, &access_log, &format!("0.0.0.0:{}", server.port));
}

/// `--reconnect` through an `https://` proxy to a `wss://` target that is killed and
/// restarted, then stopped with SIGTERM and restarted: every line comes back exactly once, in
/// order. While the target is down, squid answers CONNECT with 503, which dial retries.
#[test]
fn lines_come_back_exactly_once_through_an_https_proxy_across_target_restarts() {
    const LINES: usize = 50_000;
    let c = crate::tls::certs();
    let port = free_port();
    let start = |round: usize| {
        let addr = format!("127.0.0.1:{port}");
        let server = crate::tls::serve_tls_on(&addr, &c.server_ec_chain, &c.server_ec_key, &[]);
        assert_eq!(server.port, port, "restart {round} moved port");
        server
    };
    let mut server = start(0);
    let (proxy, _) = squid_https(false);
    let via = via(&proxy);
    let url = format!("wss://localhost:{port}/echo");
    // A steady pace (about 2 s in all), so that the target stops while lines are in flight.
    let feed = numbered_lines(LINES, 250, Duration::from_millis(10));
    let mut cmd = dial_command(
        &[
            "--stdin",
            "--reconnect",
            "--reconnect-max",
            "0.5",
            "--wait",
            "20",
            &url,
            "--proxy",
            &via,
            "--ca",
            target_ca(),
        ],
        &[trust_proxy()],
    );
    let dialing = thread::spawn(move || {
        run_fed(
            "wsecho dial --reconnect through an https:// proxy",
            &mut cmd,
            Some(feed),
            Duration::from_secs(120),
            |o| String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    });
    for (round, stop) in [libc::SIGKILL, libc::SIGTERM].into_iter().enumerate() {
        thread::sleep(Duration::from_millis(600));
        server.signal(stop);
        assert!(
            server.wait_exit(Duration::from_secs(10)).is_some(),
            "target did not stop\n{}",
            server.log()
        );
        server.assert_no_panic();
        thread::sleep(Duration::from_millis(150));
        server = start(round + 1);
    }
    let done = dialing.join().expect("dial runner");
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.matches("reconnecting in").count() >= 2,
        "too few reconnects: {stderr}"
    );
    let expected: String = (1..=LINES).map(|n| format!("{n}\n")).collect();
    assert!(
        done.stdout == expected.as_bytes(),
        "{} bytes back instead of {}; {stderr}",
        done.stdout.len(),
        expected.len()
    );
}

/// TLS inside TLS, a message in the 101's own TLS record (and nothing after it) is
/// received: the first turn reads what the handshakes left in both sessions. dial's input
/// stays open, so that no Close (and no proxy reacting to it) brings more bytes that would
/// read it instead.
#[test]
fn a_message_in_the_same_tls_record_as_the_101_is_received_inside_the_proxys_tls() {
    let mut server = crate::tls::python_tls(crate::tls::PIPELINING_SERVER, 0);
    let port = server.next_line(LIMIT);
    let (proxy, _) = squid_https(false);
    let url = format!("wss://localhost:{}/echo", port.trim());
    let cmd = dial_command(
        &[
            "--stdin",
            &url,
            "--proxy",
            &via(&proxy),
            "--ca",
            target_ca(),
        ],
        &[trust_proxy()],
    );
    let (mut dial, stdin) = Running::start_piped("wsecho dial", cmd);
    assert_eq!(dial.next_line(LIMIT), "in the 101's record\n");
    drop(stdin);
}
