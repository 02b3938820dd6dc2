//! `wsecho dial` through real proxies the tests start: tinyproxy for HTTP CONNECT (with and
//! without Basic credentials) and microsocks for SOCKS5 (with and without a user name and
//! password), each on a free loopback port and killed with its test. The proxies' own logs
//! show that the bytes went through them.

use crate::common::{self, Finished, Server, free_port, run, wsecho};
use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

/// Backstop for one dial run.
pub(crate) const LIMIT: Duration = Duration::from_secs(20);
/// Every variable that could send dial through a proxy of the machine running the tests.
const PROXY_VARS: [&str; 8] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];
/// Lines sent through each tunnel.
pub(crate) const LINES: &str = "one\ntwo\nthree\n";

// ---- the processes ----------------------------------------------------------------------

/// `wsecho serve` on a loopback port of its own.
pub(crate) fn serve() -> Server {
    common::serve("proxy-serve", &[])
}

/// tinyproxy in the foreground with `extra` config lines, logging every connection.
pub(crate) fn tinyproxy(extra: &str) -> Server {
    let port = free_port();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("proxy-configs");
    fs::create_dir_all(&dir).expect("create config dir");
    let config = dir.join(format!("tinyproxy-{port}.conf"));
    fs::write(
        &config,
        format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nLogLevel Connect\nMaxClients 20\n\
             Allow 127.0.0.1\n{extra}"
        ),
    )
    .expect("write tinyproxy config");
    let mut cmd = Command::new("tinyproxy");
    cmd.arg("-d").arg("-c").arg(&config);
    Server::start("tinyproxy", cmd, port)
}

/// squid in the foreground, tunnelling only for user `wsecho` with password `p@ss:w0rd`
/// (Basic), logging every request to `access.log` in its own directory (returned).
fn squid() -> (Squid, PathBuf) {
    let port = free_port();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("squid-{port}"));
    fs::create_dir_all(&dir).expect("create squid dir");
    // Run as root, squid works as user 'proxy': it must be able to write its logs here.
    let mut open = fs::metadata(&dir).expect("squid dir").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut open, 0o777);
    fs::set_permissions(&dir, open).expect("chmod squid dir");
    // `openssl passwd -apr1 -salt wsecho12 'p@ss:w0rd'`
    let passwd = dir.join("passwd");
    fs::write(&passwd, "wsecho:$apr1$wsecho12$ydTse8hetaNWzUZEe7WA60\n").expect("passwd");
    let d = dir.display();
    let config = dir.join("squid.conf");
    fs::write(
        &config,
        format!(
            "http_port 127.0.0.1:{port}\npid_filename none\ncache deny all\npinger_enable off\n\
             cache_log {d}/cache.log\naccess_log stdio:{d}/access.log\n\
             auth_param basic program /usr/lib/squid/basic_ncsa_auth {d}/passwd\n\
             auth_param basic children 1 startup=1 idle=1\n\
             acl authed proxy_auth REQUIRED\nhttp_access allow authed\nhttp_access deny all\n\
             shutdown_lifetime 0 seconds\n"
        ),
    )
    .expect("write squid config");
    (Squid::start(&config, port), dir.join("access.log"))
}

/// A squid a test started, in the foreground: killed with the test, and then the shared
/// memory segments it leaves in /dev/shm when killed are removed.
pub(crate) struct Squid {
    server: Option<Server>,
    /// Its service name, which its segments are named after. Each squid has its own: two
    /// of one name (tests run in parallel) fail with "File exists".
    name: String,
}

impl Squid {
    /// Starts squid with `config`, listening on `port`.
    pub(crate) fn start(config: &std::path::Path, port: u16) -> Squid {
        let name = format!("wsechotest{port}");
        remove_segments(&name);
        let mut cmd = Command::new("squid");
        cmd.arg("-N").arg("-n").arg(&name).arg("-f").arg(config);
        Squid {
            server: Some(Server::start("squid", cmd, port)),
            name,
        }
    }
}

impl std::ops::Deref for Squid {
    type Target = Server;

    fn deref(&self) -> &Server {
        self.server.as_ref().expect("squid runs until dropped")
    }
}

impl Drop for Squid {
    fn drop(&mut self) {
        drop(self.server.take());
        remove_segments(&self.name);
    }
}

/// Removes the shared memory segments of the squid named `name`.
fn remove_segments(name: &str) {
    let prefix = format!("{name}-");
    if let Ok(entries) = fs::read_dir("/dev/shm") {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// microsocks with `extra` arguments (`-u USER -P PASS`), logging every connection.
fn microsocks(extra: &[&str]) -> Server {
    let port = free_port();
    let mut cmd = Command::new("microsocks");
    cmd.args(["-i", "127.0.0.1", "-p", &port.to_string()])
        .args(extra);
    Server::start("microsocks", cmd, port)
}

/// `wsecho dial ARGS` with `env` as its only proxy and trust variables: the machine's own
/// are removed, so that neither its proxies nor its roots decide a test.
pub(crate) fn dial_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(wsecho());
    cmd.arg("dial").args(args);
    for var in PROXY_VARS.iter().chain(&["SSL_CERT_FILE", "SSL_CERT_DIR"]) {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd
}

/// `wsecho dial --stdin URL ARGS` with `input` on stdin, to its end, and `env` as its only
/// proxy and trust variables.
pub(crate) fn dial_fed(url: &str, args: &[&str], env: &[(&str, &str)], input: Vec<u8>) -> Finished {
    let mut cmd = dial_command(&[&["--stdin", "--wait", "10", url], args].concat(), env);
    let done = run("wsecho dial", &mut cmd, Some(input), LIMIT);
    assert!(
        !done.stderr.contains("panicked"),
        "wsecho panicked: {}",
        done.describe()
    );
    done
}

/// [`dial_fed`] with LINES on stdin.
pub(crate) fn dial(url: &str, args: &[&str], env: &[(&str, &str)]) -> Finished {
    dial_fed(url, args, env, LINES.into())
}

// ---- what the tests check ---------------------------------------------------------------

/// Every line came back, exit 0, and the `connecting to` line names the proxy, or says
/// nothing of one for `via: None`.
pub(crate) fn assert_echoed(done: &Finished, via: Option<&str>) {
    assert_eq!(done.status.code(), Some(0), "{}", done.describe());
    assert_eq!(done.stdout, LINES, "{}", done.describe());
    let connecting = done
        .stderr
        .lines()
        .find(|l| l.starts_with("connecting to "))
        .unwrap_or_else(|| panic!("no 'connecting to' line: {}", done.describe()));
    match via {
        Some(proxy) => assert!(
            connecting.ends_with(&format!(" via {proxy}")),
            "{}",
            done.describe()
        ),
        None => assert!(!connecting.contains(" via "), "{}", done.describe()),
    }
}

/// Exit 1, nothing on stdout, and one error line containing every one of `needles`.
pub(crate) fn assert_fails_with(done: &Finished, needles: &[&str]) {
    assert_eq!(done.status.code(), Some(1), "{}", done.describe());
    assert_eq!(done.stdout, "", "{}", done.describe());
    let errors: Vec<&str> = done
        .stderr
        .lines()
        .filter(|l| !l.starts_with("connecting to "))
        .collect();
    assert_eq!(errors.len(), 1, "{}", done.describe());
    for needle in needles {
        assert!(
            errors[0].contains(needle),
            "no {needle:?} in the error: {}",
            done.describe()
        );
    }
}

/// Waits (5 s at most) for `needle` in a proxy's log.
fn wait_for_log(proxy: &Server, needle: &str) {
    proxy.wait_for_log(needle, Duration::from_secs(5));
}

pub(crate) fn proxy_url(scheme: &str, proxy: &Server) -> String {
    format!("{scheme}://127.0.0.1:{}", proxy.port)
}

/// A port nothing listens on (free now; nothing here binds it).
fn dead_port() -> u16 {
    free_port()
}

// ---- HTTP CONNECT -----------------------------------------------------------------------

#[test]
fn an_http_proxy_carries_every_echo_through_its_tunnel() {
    let server = serve();
    let proxy = tinyproxy("");
    let via = proxy_url("http", &proxy);
    let done = dial(&server.echo_url(), &["--proxy", &via], &[]);
    assert_echoed(&done, Some(&via));
    wait_for_log(
        &proxy,
        &format!("CONNECT 127.0.0.1:{} HTTP/1.1", server.port),
    );
}

/// TLS runs inside the tunnel: the proxy sees only the CONNECT, the server the TLS session.
#[cfg(feature = "tls")]
#[test]
fn wss_runs_inside_an_http_proxys_tunnel_and_a_socks5_one() {
    let c = crate::tls::certs();
    let server = crate::tls::serve_tls(&c.server_ec_chain, &c.server_ec_key, &[]);
    let url = format!("wss://localhost:{}/echo", server.port);
    let ca = c.ca.to_str().expect("UTF-8 path");
    let http = tinyproxy("");
    let via = proxy_url("http", &http);
    assert_echoed(&dial(&url, &["--proxy", &via, "--ca", ca], &[]), Some(&via));
    wait_for_log(
        &http,
        &format!("CONNECT localhost:{} HTTP/1.1", server.port),
    );
    let socks = microsocks(&[]);
    let via = proxy_url("socks5h", &socks);
    assert_echoed(&dial(&url, &["--proxy", &via, "--ca", ca], &[]), Some(&via));
}

#[test]
fn basic_credentials_from_the_proxy_url_are_percent_decoded_and_never_printed() {
    let server = serve();
    // tinyproxy takes only [-a-z0-9._] in credentials; microsocks below takes an @.
    let proxy = tinyproxy("BasicAuth wsecho s3cret.pw\n");
    let via = proxy_url("http", &proxy);
    let with_credentials = format!("http://wsecho:s%33cret%2Epw@127.0.0.1:{}", proxy.port);
    let done = dial(&server.echo_url(), &["--proxy", &with_credentials], &[]);
    assert_echoed(&done, Some(&via));
    assert!(
        !done.stderr.contains("cret") && !done.stderr.contains("wsecho:"),
        "{}",
        done.describe()
    );
    wait_for_log(&proxy, &format!("CONNECT 127.0.0.1:{}", server.port));
}

#[test]
fn a_proxy_that_wants_credentials_says_where_to_put_them() {
    let server = serve();
    let proxy = tinyproxy("BasicAuth wsecho secret\n");
    let via = proxy_url("http", &proxy);
    let done = dial(&server.echo_url(), &["--proxy", &via], &[]);
    assert_fails_with(
        &done,
        &[&via, "wants credentials: put user:pass@ in the proxy URL"],
    );
}

#[test]
fn wrong_credentials_are_reported_as_refused_without_showing_them() {
    let server = serve();
    let proxy = tinyproxy("BasicAuth wsecho secret\n");
    let via = format!("http://wsecho:wrong@127.0.0.1:{}", proxy.port);
    let done = dial(&server.echo_url(), &["--proxy", &via], &[]);
    assert_fails_with(&done, &["refused the credentials", "HTTP/1.0 401"]);
    assert!(!done.stderr.contains("wrong"), "{}", done.describe());
}

#[test]
fn squid_asks_for_credentials_with_407_and_takes_them_from_the_url() {
    let server = serve();
    let (proxy, access_log) = squid();
    let via = proxy_url("http", &proxy);
    let done = dial(&server.echo_url(), &["--proxy", &via], &[]);
    assert_fails_with(
        &done,
        &[&via, "wants credentials: put user:pass@ in the proxy URL"],
    );
    let wrong = format!("http://wsecho:wrong@127.0.0.1:{}", proxy.port);
    let done = dial(&server.echo_url(), &["--proxy", &wrong], &[]);
    assert_fails_with(
        &done,
        &[
            "refused the credentials",
            "HTTP/1.1 407 Proxy Authentication Required",
        ],
    );
    let right = format!("http://wsecho:p%40ss%3Aw0rd@127.0.0.1:{}", proxy.port);
    let done = dial(&server.echo_url(), &["--proxy", &right], &[]);
    assert_echoed(&done, Some(&via));
    assert!(!done.stderr.contains("w0rd"), "{}", done.describe());
    let tunnelled = "TCP_TUNNEL/200";
    let target = format!("CONNECT 127.0.0.1:{} wsecho", server.port);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = fs::read_to_string(&access_log).unwrap_or_default();
        if log
            .lines()
            .any(|l| l.contains(tunnelled) && l.contains(&target))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "squid never logged the tunnel:\n{log}\n{}",
            proxy.log()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_refused_connect_shows_the_proxys_status_line() {
    let server = serve();
    // Tunnels only to port 443: the echo port is refused.
    let proxy = tinyproxy("ConnectPort 443\n");
    let done = dial(
        &server.echo_url(),
        &["--proxy", &proxy_url("http", &proxy)],
        &[],
    );
    assert_fails_with(
        &done,
        &[
            &format!("refused to open a tunnel to 127.0.0.1:{}", server.port),
            " 403 ",
        ],
    );
}

#[test]
fn an_http_proxy_url_aimed_at_a_socks_proxy_says_so() {
    let server = serve();
    let proxy = microsocks(&[]);
    let done = dial(
        &server.echo_url(),
        &["--proxy", &proxy_url("http", &proxy)],
        &[],
    );
    assert_fails_with(&done, &["did not answer CONNECT with HTTP", "socks5://"]);
}

#[test]
fn a_silent_proxy_is_given_up_on_at_the_connect_timeout() {
    let server = serve();
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    // Accepts, reads and never answers; ends when dial hangs up.
    let held = thread::spawn(move || {
        if let Ok((mut stream, _)) = silent.accept() {
            let _ = stream.read_to_end(&mut Vec::new());
        }
    });
    let via = format!("http://127.0.0.1:{port}");
    let done = dial(
        &server.echo_url(),
        &["--proxy", &via, "--connect-timeout", "0.5"],
        &[],
    );
    assert_fails_with(&done, &["no answer from the proxy", &via, "500ms"]);
    held.join().expect("silent proxy");
}

// ---- SOCKS5 -----------------------------------------------------------------------------

#[test]
fn a_socks5_proxy_carries_every_echo() {
    let server = serve();
    let proxy = microsocks(&[]);
    let via = proxy_url("socks5", &proxy);
    let done = dial(&server.echo_url(), &["--proxy", &via], &[]);
    assert_echoed(&done, Some(&via));
    wait_for_log(&proxy, &format!("connected to 127.0.0.1:{}", server.port));
}

#[test]
fn socks5h_lets_the_proxy_resolve_the_name_and_socks5_resolves_it_here() {
    let server = serve();
    let proxy = microsocks(&[]);
    let url = format!("ws://localhost:{}/echo", server.port);
    let via = proxy_url("socks5h", &proxy);
    assert_echoed(&dial(&url, &["--proxy", &via], &[]), Some(&via));
    wait_for_log(&proxy, &format!("connected to localhost:{}", server.port));
    // socks5:// sends an address: the server listens on 127.0.0.1 only, so if localhost
    // resolves to ::1 first, this also shows the next address being tried.
    let via = proxy_url("socks5", &proxy);
    assert_echoed(&dial(&url, &["--proxy", &via], &[]), Some(&via));
    wait_for_log(&proxy, &format!("connected to 127.0.0.1:{}", server.port));
}

#[test]
fn socks5_credentials_from_the_proxy_url_are_used() {
    let server = serve();
    let proxy = microsocks(&["-u", "wsecho", "-P", "p@ss"]);
    let via = format!("socks5://wsecho:p%40ss@127.0.0.1:{}", proxy.port);
    let done = dial(&server.echo_url(), &["--proxy", &via], &[]);
    assert_echoed(&done, Some(&proxy_url("socks5", &proxy)));
    assert!(!done.stderr.contains("p@ss"), "{}", done.describe());
    wait_for_log(&proxy, &format!("connected to 127.0.0.1:{}", server.port));
}

#[test]
fn a_socks5_proxy_that_wants_credentials_or_refuses_them_says_so() {
    let server = serve();
    let proxy = microsocks(&["-u", "wsecho", "-P", "secret"]);
    let via = proxy_url("socks5", &proxy);
    let done = dial(&server.echo_url(), &["--proxy", &via], &[]);
    assert_fails_with(
        &done,
        &[&via, "wants credentials: put user:pass@ in the proxy URL"],
    );
    let wrong = format!("socks5://wsecho:wrong@127.0.0.1:{}", proxy.port);
    let done = dial(&server.echo_url(), &["--proxy", &wrong], &[]);
    assert_fails_with(&done, &[&via, "refused the credentials"]);
    assert!(!done.stderr.contains("wrong"), "{}", done.describe());
}

#[test]
fn a_socks5_failure_is_named_by_its_reply_code() {
    let proxy = microsocks(&[]);
    let port = dead_port();
    let via = proxy_url("socks5", &proxy);
    let done = dial(
        &format!("ws://127.0.0.1:{port}/echo"),
        &["--proxy", &via],
        &[],
    );
    assert_fails_with(
        &done,
        &[
            &format!("could not connect to 127.0.0.1:{port}"),
            "connection refused (reply 5)",
        ],
    );
}

#[test]
fn a_socks5_proxy_url_aimed_at_an_http_proxy_says_so() {
    let server = serve();
    let proxy = tinyproxy("");
    let done = dial(
        &server.echo_url(),
        &[
            "--proxy",
            &proxy_url("socks5", &proxy),
            "--connect-timeout",
            "2",
        ],
        &[],
    );
    // tinyproxy waits for a whole request line, so dial gives up at its deadline.
    assert_fails_with(&done, &["no answer from the proxy", "socks5://"]);
}

// ---- the environment --------------------------------------------------------------------
//
// Proxies from the environment never apply to localhost or loopback addresses. 0.0.0.0 is
// neither, yet on Linux a connection to it reaches this machine: it stands in for a remote
// server here.

#[test]
fn http_proxy_from_the_environment_carries_a_non_local_target() {
    let server = serve();
    let proxy = tinyproxy("");
    let via = proxy_url("http", &proxy);
    let url = format!("ws://0.0.0.0:{}/echo", server.port);
    let done = dial(&url, &[], &[("HTTP_PROXY", &via)]);
    assert_echoed(&done, Some(&via));
    wait_for_log(&proxy, &format!("CONNECT 0.0.0.0:{} HTTP/1.1", server.port));
}

#[test]
fn all_proxy_is_the_fallback_and_may_be_socks5() {
    let server = serve();
    let proxy = microsocks(&[]);
    let via = proxy_url("socks5h", &proxy);
    let url = format!("ws://0.0.0.0:{}/echo", server.port);
    let done = dial(&url, &[], &[("all_proxy", &via)]);
    assert_echoed(&done, Some(&via));
    wait_for_log(&proxy, &format!("connected to 0.0.0.0:{}", server.port));
}

#[test]
fn an_unreachable_proxy_from_the_environment_is_named_with_its_variable() {
    let via = format!("http://127.0.0.1:{}", dead_port());
    // 192.0.2.1 (TEST-NET-1) is never reached: the proxy fails first.
    let done = dial("ws://192.0.2.1:9/echo", &[], &[("http_proxy", &via)]);
    assert_fails_with(
        &done,
        &[
            &format!("cannot connect to the proxy {via} (from http_proxy)"),
            "Connection refused",
        ],
    );
}

#[test]
fn a_misspelled_proxy_in_the_environment_is_named_with_its_variable() {
    let done = dial(
        "ws://192.0.2.1:9/echo",
        &[],
        &[("HTTP_PROXY", "htpp://user:secret@proxy.lan:3128")],
    );
    assert_fails_with(
        &done,
        &[
            "invalid proxy URL 'htpp://***@proxy.lan:3128' in HTTP_PROXY",
            "unsupported scheme 'htpp'",
        ],
    );
    assert!(!done.stderr.contains("secret"), "{}", done.describe());
}

#[test]
fn no_proxy_sends_a_listed_target_direct() {
    let server = serve();
    let url = format!("ws://0.0.0.0:{}/echo", server.port);
    let dead = format!("http://127.0.0.1:{}", dead_port());
    for no_proxy in [
        "0.0.0.0",
        "example.com, 0.0.0.0/8",
        &format!("0.0.0.0:{}", server.port),
        "*",
    ] {
        let done = dial(&url, &[], &[("HTTP_PROXY", &dead), ("NO_PROXY", no_proxy)]);
        assert_echoed(&done, None);
    }
    // And the dead proxy would have failed it: the exception is what made it work.
    let done = dial(
        &url,
        &[],
        &[("HTTP_PROXY", &dead), ("NO_PROXY", "0.0.0.0:1")],
    );
    assert_fails_with(&done, &["cannot connect to the proxy", "(from HTTP_PROXY)"]);
}

#[test]
fn local_targets_never_take_a_proxy_from_the_environment() {
    let server = serve();
    let dead = format!("http://127.0.0.1:{}", dead_port());
    for host in ["127.0.0.1", "localhost"] {
        let url = format!("ws://{host}:{}/echo", server.port);
        let done = dial(&url, &[], &[("HTTP_PROXY", &dead), ("ALL_PROXY", &dead)]);
        assert_echoed(&done, None);
    }
}

#[test]
fn an_empty_proxy_flag_turns_the_environment_off_and_a_given_one_overrides_it() {
    let server = serve();
    let url = format!("ws://0.0.0.0:{}/echo", server.port);
    let dead = format!("http://127.0.0.1:{}", dead_port());
    let done = dial(&url, &["--proxy", ""], &[("HTTP_PROXY", &dead)]);
    assert_echoed(&done, None);
    let proxy = tinyproxy("");
    let via = proxy_url("http", &proxy);
    let done = dial(
        &url,
        &["--proxy", &via],
        &[("HTTP_PROXY", &dead), ("NO_PROXY", "*")],
    );
    assert_echoed(&done, Some(&via));
    wait_for_log(&proxy, &format!("CONNECT 0.0.0.0:{}", server.port));
}

#[test]
fn a_bad_proxy_flag_is_a_usage_error() {
    let done = dial("ws://127.0.0.1:9/echo", &["--proxy", "socks4://h"], &[]);
    assert_eq!(done.status.code(), Some(2), "{}", done.describe());
    assert!(
        done.stderr
            .contains("--proxy: invalid proxy URL 'socks4://h'")
            && done.stderr.contains("--help"),
        "{}",
        done.describe()
    );
}

#[cfg(not(feature = "tls"))]
#[test]
fn an_https_proxy_needs_the_tls_build() {
    let done = dial(
        "ws://127.0.0.1:9/echo",
        &["--proxy", "https://127.0.0.1:1"],
        &[],
    );
    assert_fails_with(
        &done,
        &[
            "https://127.0.0.1:1",
            "built without TLS",
            "https:// proxies",
        ],
    );
}
