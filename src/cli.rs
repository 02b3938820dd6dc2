//! The command line: usage texts, flag parsing with errors that name the flag, the value
//! parsers, and the hints that tie the library's errors back to the flags. Only this module
//! and main.rs know the flags; the library takes plain configuration and returns data.

use crossbeam_channel::{Receiver, bounded};
use std::io::{self, BufRead};
use std::path::PathBuf;
use std::str::FromStr;
use std::thread;
use std::time::Duration;
use tungstenite::Message;
use tungstenite::http::{HeaderName, HeaderValue};
use wsecho::client::{self, Input, Target, TargetError};
use wsecho::server;

pub(crate) const USAGE: &str = "\
wsecho — a WebSocket echo server and client

Usage:
  wsecho serve [--addr HOST:PORT] [options]   serve the test page and the echo endpoint
  wsecho dial [URL | --addr HOST:PORT] [options]
                                              connect, send, print what comes back
  wsecho --version

Run 'wsecho serve --help' or 'wsecho dial --help' for the options.
";

pub(crate) const SERVE_USAGE: &str = "\
Usage: wsecho serve [options]

Serves the test page at / and a WebSocket echo at /echo on one port. Every text
message comes back as text, every binary message as binary. Ctrl-C (or SIGTERM)
sends every connection Close 1001 and exits once they are closed, or after --grace.

Options:
  --addr HOST:PORT          listen here [default: localhost:8080]
  --quiet                   no per-message 'recv:' log (connection lines stay)
  --allow-origin ORIGIN     also accept browsers from ORIGIN (repeatable); '*' accepts
                            every origin. By default only the page's own origin (and
                            clients that send no Origin) may connect.
  --trust-proxy CIDR        a reverse proxy at these addresses (repeatable; 10.0.0.0/8,
                            127.0.0.1): its X-Forwarded-For / Forwarded names the
                            client in the log ('CLIENT via PROXY'); ignored from others
  --grace SECS              time for connections to close at shutdown [default: 2]
  --handshake-timeout SECS  time from connect to a complete upgrade [default: 10]
  --max-conns N             open connections at most; more get 503 [default: from the
                            open-files limit and memory]
  --ping-interval SECS      ping a connection quiet this long [default: 30]
  --idle-timeout SECS       close (1001) one silent this long, pongs included [default: 60]
  --write-timeout SECS      drop a peer that takes none of a write (at most 128 KiB) for
                            this long, or not all of it by this long later [default: 10]
  --max-message BYTES       larger messages get Close 1009 [default: 16M]
  --max-frame BYTES         larger frames get Close 1009 [default: 16M]
  --thread-linger SECS      a finished connection's thread waits this long to serve
                            the next one before it exits (at most 128 wait) [default: 10]
  --tls-cert FILE           serve https and wss with this certificate (PEM, followed by
                            its chain); needs --tls-key. SIGHUP reloads both files.
  --tls-key FILE            its private key (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC)
  --client-ca FILE          require client certificates issued by these CAs (PEM)
  -h, --help                this help

SECS may have decimals (0.5). BYTES may end in K, M or G (1024-based; at most 1G).
Exit status: 0 stopped by a signal, 1 could not start, 2 bad usage.
";

pub(crate) const DIAL_USAGE: &str = "\
Usage: wsecho dial [URL | --addr HOST:PORT] [options]

Connects to ws://HOST:PORT/echo (or URL), prints 'connecting to ...', sends the time
every --interval and prints each message received as 'recv: ...'. Ctrl-C sends
Close 1000 and waits at most one second for the server to close; before the
connection is open, Ctrl-C exits at once (status 1).

Options:
  --addr HOST:PORT          server to dial, path /echo [default: localhost:8080]
  URL                       a ws:// or wss:// URL instead
  --interval SECS           time between ticks [default: 1]
  --count N                 send N messages, wait for their echoes, close, exit
  --stdin                   send each line of stdin instead of ticks; print each
                            message received on its own line ('recv: ' only on a
                            terminal); at end of input wait for the echoes, close
  --binary                  with --stdin, send lines as binary messages
  --wait SECS               at the end, how long to wait for echoes [default: 1]
  --reconnect               when the connection breaks, or the server closes with
                            1001, 1012 or 1013, connect again (backoff from 0.1 s,
                            doubling, with jitter); the first connect retries too.
                            With --stdin, lines not yet echoed are sent again: each
                            comes back once, in order. --count counts echoes.
                            Not retried: Close 1000 or another code, 4xx, bad URL
  --reconnect-max SECS      longest wait between attempts [default: 30]
  --window N                with --reconnect --stdin, lines waiting for their echo
                            at most; stdin is read no further [default: 1024]
  --stats                   send probes instead of ticks and print, like ping, each
                            round trip and at the end (or Ctrl-C) a summary: sent,
                            received, loss, min/avg/max/mdev, p50/p99, and the first
                            connection's connect and upgrade times
  --size BYTES              with --stats, bytes per probe (at least 8) [default: 32]
  -H, --header 'NAME: VALUE'  extra request header (repeatable)
  --origin URL              send this Origin header
  --subprotocol NAME        ask for this subprotocol
  --connect-timeout SECS    for connecting and the handshake [default: 10]
  --proxy URL               connect through this proxy: http://, https:// (TLS to
                            the proxy, checked against the system's roots),
                            socks5:// or socks5h:// (the proxy resolves names),
                            user:pass@ for credentials; '' for none [default: from
                            HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY, never
                            for localhost]
  --ping-interval SECS      ping a quiet server; give up after two silent
                            intervals [default: 30]
  --max-message BYTES       largest message accepted [default: 16M]
  --ca FILE                 for wss://, trust the CA certificates in FILE (PEM)
                            instead of the system's roots (SSL_CERT_FILE, SSL_CERT_DIR)
  -k, --insecure            for wss://, do not check the server's certificate at all
  --cert FILE --key FILE    for wss://, present this client certificate (PEM)
  -h, --help                this help

Messages go to stdout, diagnostics to stderr.
Exit status: 0 closed normally (by us, by the server with 1000/1001, or stdout
was closed by its reader),
1 connection failed, refused or broken, the server closed with another code, or
Ctrl-C came before the connection was open (or between two with --reconnect),
or with --stats a probe got no echo,
2 bad usage.
";

/// A usage mistake: reported with a pointer to the help, exit status 2.
pub(crate) struct Usage {
    pub(crate) message: String,
    pub(crate) help: &'static str,
}

/// Why `wsecho dial`'s command line cannot run: bad usage (status 2), or a target or header
/// refused (status 1).
pub(crate) enum Error {
    Usage(Usage),
    Failed(String),
}

impl From<Usage> for Error {
    fn from(usage: Usage) -> Error {
        Error::Usage(usage)
    }
}

/// `wsecho serve`'s flags as the server's configuration; `None` for `--help`.
pub(crate) fn serve(mut args: pico_args::Arguments) -> Result<Option<server::Config>, Usage> {
    const HELP: &str = "wsecho serve --help";
    if args.contains(["-h", "--help"]) {
        return Ok(None);
    }
    let mut config = server::Config::default();
    let limits = &mut config.limits;
    let p = Parser { help: HELP };
    if let Some(addr) = p.opt(&mut args, "--addr", nonempty)? {
        config.addr = addr;
    }
    config.quiet = args.contains("--quiet");
    config.allowed_origins = p.many(&mut args, "--allow-origin", "--allow-origin", nonempty)?;
    config.trusted_proxies = p.many(&mut args, "--trust-proxy", "--trust-proxy", cidr)?;
    p.set(&mut args, "--grace", seconds, &mut config.grace)?;
    p.set(
        &mut args,
        "--handshake-timeout",
        positive_seconds,
        &mut limits.handshake_timeout,
    )?;
    limits.max_conns = p.opt(&mut args, "--max-conns", count)?;
    p.set(
        &mut args,
        "--ping-interval",
        positive_seconds,
        &mut limits.ping_interval,
    )?;
    p.set(
        &mut args,
        "--idle-timeout",
        positive_seconds,
        &mut limits.idle_timeout,
    )?;
    p.set(
        &mut args,
        "--write-timeout",
        positive_seconds,
        &mut limits.write_timeout,
    )?;
    p.set(&mut args, "--max-message", bytes, &mut limits.max_message)?;
    p.set(&mut args, "--max-frame", bytes, &mut limits.max_frame)?;
    p.set(
        &mut args,
        "--thread-linger",
        seconds,
        &mut limits.thread_linger,
    )?;
    let tls_cert = p.opt(&mut args, "--tls-cert", path)?;
    let tls_key = p.opt(&mut args, "--tls-key", path)?;
    let client_ca = p.opt(&mut args, "--client-ca", path)?;
    p.finish(args)?;
    let usage = |message: &str| Usage {
        message: message.into(),
        help: HELP,
    };
    let tls = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) if client_ca.is_some() => {
            return Err(usage("--client-ca needs --tls-cert and --tls-key"));
        }
        (None, None) => None,
        (Some(_), None) => return Err(usage("--tls-cert needs --tls-key")),
        (None, Some(_)) => return Err(usage("--tls-key needs --tls-cert")),
    };
    #[cfg(feature = "tls")]
    {
        config.tls = tls.map(|(cert, key)| wsecho::tls::ServerFiles {
            cert,
            key,
            client_ca,
        });
    }
    #[cfg(not(feature = "tls"))]
    if tls.is_some() {
        return Err(usage(&format!("--tls-cert: {WITHOUT_TLS}")));
    }
    if limits.idle_timeout <= limits.ping_interval {
        return Err(Usage {
            message: "--idle-timeout must be longer than --ping-interval (a peer needs time to answer the ping)".into(),
            help: HELP,
        });
    }
    Ok(Some(config))
}

/// `wsecho dial`'s flags as the client's configuration; `None` for `--help`. With `--stdin`
/// it starts the thread that reads standard input into the messages to send.
pub(crate) fn dial(mut args: pico_args::Arguments) -> Result<Option<client::Config>, Error> {
    const HELP: &str = "wsecho dial --help";
    if args.contains(["-h", "--help"]) {
        return Ok(None);
    }
    let p = Parser { help: HELP };
    let mut options = client::Options::default();
    let addr = p.opt(&mut args, "--addr", nonempty)?;
    let interval = p
        .opt(&mut args, "--interval", positive_seconds)?
        .unwrap_or(Duration::from_secs(1));
    let window = p.opt(&mut args, "--window", count)?;
    let count = p.opt(&mut args, "--count", count)?.map(|n| n as u64);
    let stdin = args.contains("--stdin");
    let binary = args.contains("--binary");
    let wait = p
        .opt(&mut args, "--wait", seconds)?
        .unwrap_or(Duration::from_secs(1));
    let reconnect = args.contains("--reconnect");
    let reconnect_max = p.opt(&mut args, "--reconnect-max", positive_seconds)?;
    let stats = args.contains("--stats");
    let size = p.opt(&mut args, "--size", bytes)?;
    let mut headers = p.many(&mut args, ["-H", "--header"], "--header", nonempty)?;
    let origin = p.opt(&mut args, "--origin", nonempty)?;
    let subprotocol = p.opt(&mut args, "--subprotocol", nonempty)?;
    options.proxy = match p.opt(&mut args, "--proxy", proxy)? {
        Some(Some(given)) => client::ProxyChoice::Given(given),
        Some(None) => client::ProxyChoice::Direct,
        None => client::ProxyChoice::Environment(client::ProxyEnv::from_process()),
    };
    p.set(
        &mut args,
        "--connect-timeout",
        positive_seconds,
        &mut options.connect_timeout,
    )?;
    p.set(
        &mut args,
        "--ping-interval",
        positive_seconds,
        &mut options.ping_interval,
    )?;
    p.set(&mut args, "--max-message", bytes, &mut options.max_message)?;
    let ca = p.opt(&mut args, "--ca", path)?;
    let insecure = args.contains(["-k", "--insecure"]);
    let cert = p.opt(&mut args, "--cert", path)?;
    let key = p.opt(&mut args, "--key", path)?;
    // A leftover that looks like a flag is an unknown flag, not the URL.
    let url = args
        .opt_free_from_fn(|s: &str| match s.starts_with('-') {
            true => Err(format!("unknown flag '{s}'")),
            false => Ok(s.to_string()),
        })
        .map_err(|e| p.error("", e))?;
    p.finish(args)?;
    if binary && !stdin {
        return Err(Error::Usage(Usage {
            message: "--binary goes with --stdin".into(),
            help: HELP,
        }));
    }
    let misplaced = if reconnect_max.is_some() && !reconnect {
        Some("--reconnect-max goes with --reconnect")
    } else if window.is_some() && !(reconnect && stdin) {
        Some("--window goes with --reconnect and --stdin")
    } else if stats && stdin {
        Some("--stats sends probes of its own: it does not go with --stdin")
    } else if size.is_some() && !stats {
        Some("--size goes with --stats")
    } else if size.is_some_and(|s| s < client::MIN_PROBE_SIZE) {
        Some("--size: a probe needs at least 8 bytes (its sequence number)")
    } else {
        None
    };
    if let Some(message) = misplaced {
        return Err(Error::Usage(Usage {
            message: message.into(),
            help: HELP,
        }));
    }
    if let Some(origin) = origin {
        headers.push(format!("Origin: {origin}"));
    }
    if let Some(protocol) = subprotocol {
        headers.push(format!("Sec-WebSocket-Protocol: {protocol}"));
    }
    let target = match (url, addr) {
        (Some(_), Some(_)) => {
            return Err(Error::Usage(Usage {
                message: "give either a URL or --addr, not both".into(),
                help: HELP,
            }));
        }
        (Some(url), None) => Target::from_url(&url),
        (None, addr) => Target::from_addr(addr.as_deref().unwrap_or("localhost:8080")),
    };
    let target = target.map_err(|e| Error::Failed(target_error(&e)))?;
    dial_tls(&mut options, &target, ca, insecure, cert, key)?;
    for raw in &headers {
        options
            .headers
            .push(parse_header(raw).map_err(Error::Failed)?);
    }
    let input = if stdin {
        Input::Lines(stdin_lines(binary))
    } else if stats {
        Input::Probes {
            interval,
            size: size.unwrap_or(32),
        }
    } else {
        Input::Ticks { interval }
    };
    let reconnect = reconnect.then(|| client::Reconnect {
        max_wait: reconnect_max.unwrap_or(Duration::from_secs(30)),
        window: window.unwrap_or(1024),
        explain: client_error,
    });
    Ok(Some(client::Config {
        target,
        options,
        input,
        count,
        wait,
        reconnect,
    }))
}

/// What the TLS flags say when this binary has no TLS.
#[cfg(not(feature = "tls"))]
const WITHOUT_TLS: &str = "this wsecho was built without TLS (the cargo feature tls)";

/// dial's TLS flags, checked against the target: they only make sense for `wss://`.
fn dial_tls(
    options: &mut client::Options,
    target: &Target,
    ca: Option<PathBuf>,
    insecure: bool,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<(), Usage> {
    let usage = |message: String| Usage {
        message,
        help: "wsecho dial --help",
    };
    let given = [
        ("--ca", ca.is_some()),
        ("--insecure", insecure),
        ("--cert", cert.is_some()),
        ("--key", key.is_some()),
    ];
    let Some((first, _)) = given.iter().find(|(_, set)| *set) else {
        return Ok(());
    };
    #[cfg(not(feature = "tls"))]
    {
        let _ = (options, target);
        Err(usage(format!("{first}: {WITHOUT_TLS}")))
    }
    #[cfg(feature = "tls")]
    {
        use wsecho::tls::{Identity, Trust};
        if !target.secure() {
            return Err(usage(format!(
                "{first} is for wss:// URLs; {} is plain ws://",
                target.url
            )));
        }
        options.trust = match (ca, insecure) {
            (Some(_), true) => return Err(usage("give either --ca or --insecure".into())),
            (Some(ca), false) => Trust::File(ca),
            (None, true) => Trust::Insecure,
            (None, false) => Trust::System,
        };
        options.identity = match (cert, key) {
            (Some(cert), Some(key)) => Some(Identity { cert, key }),
            (None, None) => None,
            (Some(_), None) => return Err(usage("--cert needs --key".into())),
            (None, Some(_)) => return Err(usage("--key needs --cert".into())),
        };
        Ok(())
    }
}

/// Parses `-H 'Name: value'`.
fn parse_header(raw: &str) -> Result<(String, String), String> {
    let (name, value) = raw
        .split_once(':')
        .ok_or_else(|| format!("invalid header '{raw}': write it as 'Name: value'"))?;
    let name = name.trim();
    if name.is_empty() || HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(format!("invalid header name in '{raw}'"));
    }
    let value = value.trim();
    if HeaderValue::from_str(value).is_err() {
        return Err(format!("invalid header value in '{raw}'"));
    }
    Ok((name.to_string(), value.to_string()))
}

/// Reads standard input on its own thread, one message per line (without its newline).
/// The channel is bounded, so a fast producer waits for the connection instead of filling
/// memory; it disconnects at end of input.
fn stdin_lines(binary: bool) -> Receiver<Message> {
    let (tx, rx) = bounded::<Message>(64);
    let spawned = thread::Builder::new().name("wsecho-stdin".into()).spawn(move || {
        let stdin = io::stdin();
        let mut input = stdin.lock();
        let mut line = Vec::new();
        loop {
            line.clear();
            match input.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line.last() == Some(&b'\n') {
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
            }
            let message = if binary {
                Message::binary(line.clone())
            } else {
                match String::from_utf8(line.clone()) {
                    Ok(text) => Message::text(text),
                    Err(_) => {
                        eprintln!("skipped a line of stdin that is not UTF-8 text (use --binary to send bytes)");
                        continue;
                    }
                }
            };
            if tx.send(message).is_err() {
                return;
            }
        }
    });
    if spawned.is_err() {
        eprintln!("cannot start the stdin reader thread");
    }
    rx
}

/// A target the library refused, with the flag to use instead where one helps.
fn target_error(e: &TargetError) -> String {
    match e {
        TargetError::AddrIsUrl(addr) => format!(
            "--addr takes HOST:PORT, not a URL ('{addr}'); pass a URL as the argument instead"
        ),
        TargetError::NotUrl(url) => {
            format!("cannot dial '{url}': not a URL; use ws://HOST:PORT/PATH or --addr HOST:PORT")
        }
        other => other.to_string(),
    }
}

/// Why the server could not start, with the flag that changes it.
pub(crate) fn server_error(e: &server::Error) -> String {
    match e {
        server::Error::Address { addr, source } => format!(
            "cannot use address '{addr}': {source} (give --addr as HOST:PORT, e.g. localhost:8080)"
        ),
        server::Error::Bind { addr, source } if source.kind() == io::ErrorKind::AddrInUse => {
            format!(
                "cannot listen on {addr}: {source} (another program uses this port: pick another --addr)"
            )
        }
        other => other.to_string(),
    }
}

/// Why dialing failed, with the flag that changes it.
pub(crate) fn client_error(e: &client::Error) -> String {
    match e {
        client::Error::Target(target) => target_error(target),
        client::Error::ConnectTimeout { url, after } => format!(
            "cannot connect to {url}: no answer within {after:?} (check the address and any firewall, or raise --connect-timeout)"
        ),
        client::Error::HandshakeTimeout { .. } => format!("{e} (raise --connect-timeout)"),
        #[cfg(feature = "tls")]
        client::Error::Tls(tls) => format!("{e}{}", tls_hint(tls)),
        #[cfg(feature = "tls")]
        client::Error::Proxy(client::ProxyError {
            kind: client::proxy::ProxyErrorKind::Tls(tls),
            ..
        }) => format!("{e}{}", proxy_tls_hint(tls)),
        other => other.to_string(),
    }
}

/// What to do about a failure of TLS to an `https://` proxy: its certificate is checked
/// against the system's roots whatever the flags say, since `--ca` and `--insecure` are for
/// the target.
#[cfg(feature = "tls")]
fn proxy_tls_hint(e: &wsecho::tls::Error) -> &'static str {
    use wsecho::tls::Error as E;
    match e {
        E::UnknownIssuer => {
            " (the proxy's certificate is checked against the system's roots: to trust its CA point SSL_CERT_FILE at it; --ca is for the target only)"
        }
        E::NameMismatch { .. } => " (name the proxy by one of the names its certificate has)",
        E::Expired | E::NotYetValid => " (the proxy needs a current certificate)",
        E::NoUsableRoots { .. } => " (install the system's CA certificates, or set SSL_CERT_FILE)",
        _ => "",
    }
}

/// What to do about a TLS failure, naming the flags that change it.
#[cfg(feature = "tls")]
fn tls_hint(e: &wsecho::tls::Error) -> &'static str {
    use wsecho::tls::Error as E;
    match e {
        E::UnknownIssuer => {
            " (to trust its CA pass --ca FILE or point SSL_CERT_FILE at it; --insecure skips the check)"
        }
        E::NameMismatch { .. } => " (dial one of the names the certificate has)",
        E::Expired | E::NotYetValid => {
            " (the server needs a current certificate; --insecure skips the check)"
        }
        E::NotTls => " (is it a plain ws:// server? then use ws://)",
        E::NoUsableRoots { .. } => {
            " (install the system's CA certificates, set SSL_CERT_FILE, or pass --ca FILE)"
        }
        E::Refused(alert) if alert.contains("CertificateRequired") => {
            " (the server wants a client certificate: pass --cert FILE --key FILE)"
        }
        E::Refused(alert) if alert.contains("Certificate") || alert.contains("UnknownCA") => {
            " (the server did not accept our client certificate)"
        }
        E::TimedOut => " (raise --connect-timeout)",
        _ => "",
    }
}

/// Flag parsing with errors that name the flag and point to the right help.
struct Parser {
    help: &'static str,
}

impl Parser {
    fn opt<T>(
        &self,
        args: &mut pico_args::Arguments,
        flag: &'static str,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, Usage> {
        args.opt_value_from_fn(flag, parse)
            .map_err(|e| self.error(flag, e))
    }

    fn set<T>(
        &self,
        args: &mut pico_args::Arguments,
        flag: &'static str,
        parse: fn(&str) -> Result<T, String>,
        slot: &mut T,
    ) -> Result<(), Usage> {
        if let Some(value) = self.opt(args, flag, parse)? {
            *slot = value;
        }
        Ok(())
    }

    fn many<T>(
        &self,
        args: &mut pico_args::Arguments,
        keys: impl Into<pico_args::Keys> + Copy,
        flag: &'static str,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<Vec<T>, Usage> {
        let mut values = Vec::new();
        while let Some(value) = args
            .opt_value_from_fn(keys, parse)
            .map_err(|e| self.error(flag, e))?
        {
            values.push(value);
        }
        Ok(values)
    }

    fn error(&self, flag: &str, e: pico_args::Error) -> Usage {
        let message = match e {
            pico_args::Error::OptionWithoutAValue(f) => format!("{f} needs a value"),
            // pico-args reports our own parsers' refusals this way; `cause` is their message.
            pico_args::Error::Utf8ArgumentParsingFailed { cause, .. } => format!("{flag}: {cause}"),
            pico_args::Error::NonUtf8Argument => format!("{flag}: the value is not valid UTF-8"),
            pico_args::Error::ArgumentParsingFailed { cause } => format!("{flag}: {cause}"),
            other => format!("{flag}: {other}"),
        };
        Usage {
            message: message.trim_start_matches(": ").to_string(),
            help: self.help,
        }
    }

    /// Anything left over is an unknown flag or a stray argument.
    fn finish(&self, args: pico_args::Arguments) -> Result<(), Usage> {
        let rest = args.finish();
        match rest.first() {
            None => Ok(()),
            Some(arg) => {
                let arg = arg.to_string_lossy();
                let message = if arg.starts_with('-') {
                    format!("unknown flag '{arg}'")
                } else {
                    format!("unexpected argument '{arg}'")
                };
                Err(Usage {
                    message,
                    help: self.help,
                })
            }
        }
    }
}

/// A file name.
fn path(s: &str) -> Result<PathBuf, String> {
    nonempty(s).map(PathBuf::from)
}

fn nonempty(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(s.to_string())
    }
}

/// A proxy URL; empty turns proxies off.
fn proxy(s: &str) -> Result<Option<client::Proxy>, String> {
    if s.trim().is_empty() {
        return Ok(None);
    }
    client::Proxy::parse(s, client::ProxySource::Given)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// An address range such as `10.0.0.0/8`, or one address.
fn cidr(s: &str) -> Result<wsecho::cidr::Cidr, String> {
    s.parse()
        .map_err(|e: wsecho::cidr::CidrError| e.to_string())
}

/// Seconds, decimals allowed, zero allowed.
fn seconds(s: &str) -> Result<Duration, String> {
    // Whole seconds and up to nine decimals, parsed by hand: exact, and it keeps the float
    // parser (a few KiB) out of a binary that has no other use for it.
    let bad = || format!("'{s}' is not a number of seconds (e.g. 10 or 0.5)");
    let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
    let all_digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !all_digits(whole) || !all_digits(fraction) {
        return Err(bad());
    }
    let secs: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    if secs > 1_000_000_000 || fraction.len() > 9 {
        return Err(format!(
            "'{s}' is not a number of seconds up to 1e9, with at most 9 decimals"
        ));
    }
    let nanos = if fraction.is_empty() {
        0
    } else {
        fraction.parse::<u32>().map_err(|_| bad())? * 10u32.pow(9 - fraction.len() as u32)
    };
    Ok(Duration::new(secs, nanos))
}

/// Seconds, above zero.
fn positive_seconds(s: &str) -> Result<Duration, String> {
    let d = seconds(s)?;
    if d < Duration::from_millis(1) {
        return Err(format!("'{s}' must be at least 0.001 seconds"));
    }
    Ok(d)
}

/// A whole number above zero.
fn count(s: &str) -> Result<usize, String> {
    match usize::from_str(s) {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("'{s}' is not a whole number above zero")),
    }
}

/// Bytes, with an optional K, M or G suffix (1024-based), at most 1G.
fn bytes(s: &str) -> Result<usize, String> {
    let bad = || format!("'{s}' is not a size in bytes (e.g. 65536, 64K, 16M)");
    let (digits, unit) = match s.trim_end_matches(['B', 'b', 'i']).char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1 << 10),
        Some((i, 'M' | 'm')) => (&s[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    /// A message needs memory for itself and its echo; past this, no box has it.
    const MAX: usize = 1 << 30;
    let n = usize::from_str(digits).map_err(|_| bad())?;
    match n.checked_mul(unit) {
        Some(n) if n > 0 && n <= MAX => Ok(n),
        Some(n) if n > MAX => Err(format!("'{s}' is over the 1G maximum")),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_take_decimals_and_refuse_everything_else() {
        assert_eq!(seconds("10"), Ok(Duration::from_secs(10)));
        assert_eq!(seconds("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(seconds(".25"), Ok(Duration::from_millis(250)));
        assert_eq!(seconds("2."), Ok(Duration::from_secs(2)));
        assert_eq!(seconds("1.000000001"), Ok(Duration::new(1, 1)));
        for bad in [
            "",
            ".",
            "abc",
            "1e9",
            "-1",
            "+1",
            "1.2.3",
            "1.0000000001",
            "2000000000",
            " 1",
        ] {
            assert!(seconds(bad).is_err(), "{bad:?}");
        }
        assert!(positive_seconds("0").is_err());
    }

    #[test]
    fn bytes_take_binary_suffixes() {
        assert_eq!(bytes("65536"), Ok(65536));
        assert_eq!(bytes("64K"), Ok(64 << 10));
        assert_eq!(bytes("16M"), Ok(16 << 20));
        assert_eq!(bytes("16MiB"), Ok(16 << 20));
        assert_eq!(bytes("1G"), Ok(1 << 30));
        for bad in [
            "",
            "0",
            "K",
            "-1",
            "1T",
            "2G",
            "18446744073709486064",
            "99999999999999999999G",
        ] {
            assert!(bytes(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn headers_need_a_name_and_a_colon() {
        assert_eq!(
            parse_header("X-A: b c").unwrap(),
            ("X-A".into(), "b c".into())
        );
        assert!(parse_header("nocolon").is_err());
        assert!(parse_header(": v").is_err());
        assert!(parse_header("bad name: v").is_err());
    }
}
