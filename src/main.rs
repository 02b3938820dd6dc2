//! The `wsecho` command line: parse arguments, dispatch, turn errors into one line and an
//! exit code (0 done, 1 failed, 2 usage). The flags themselves live in [`cli`].

mod cli;

use std::process::ExitCode;
use std::time::Duration;
use wsecho::client;
use wsecho::log::Log;
use wsecho::server::Server;
use wsecho::sys::{self, Signal};

fn main() -> ExitCode {
    // Before any thread exists, so that every thread inherits the mask: the signals then
    // arrive only on the thread `sys::on_signals` starts.
    if let Err(e) = sys::block_signals() {
        eprintln!("wsecho: cannot set up signal handling: {e}");
        return ExitCode::FAILURE;
    }
    // pico-args takes no flag for a subcommand, so the top-level flags are looked at first.
    match std::env::args().nth(1).as_deref() {
        Some("-V" | "--version") => {
            println!("wsecho {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Some("-h" | "--help") => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Some(flag) if flag.starts_with('-') => {
            eprintln!("wsecho: unknown flag '{flag}' (see 'wsecho --help')");
            return ExitCode::from(2);
        }
        _ => {}
    }
    let mut args = pico_args::Arguments::from_env();
    let command = args.subcommand();
    let result = match command {
        Ok(Some(c)) if c == "serve" => serve(args),
        Ok(Some(c)) if c == "dial" => dial(args),
        Ok(Some(c)) if c == "help" => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(None) => {
            eprint!("{}", cli::USAGE);
            return ExitCode::from(2);
        }
        Ok(Some(other)) => Err(cli::Usage {
            message: format!("unknown command '{other}'"),
            help: "wsecho --help",
        }),
        Err(e) => Err(cli::Usage {
            message: e.to_string(),
            help: "wsecho --help",
        }),
    };
    match result {
        Ok(code) => code,
        Err(usage) => {
            eprintln!("wsecho: {} (see '{}')", usage.message, usage.help);
            ExitCode::from(2)
        }
    }
}

fn serve(args: pico_args::Arguments) -> Result<ExitCode, cli::Usage> {
    let Some(config) = cli::serve(args)? else {
        print!("{}", cli::SERVE_USAGE);
        return Ok(ExitCode::SUCCESS);
    };
    let log = Log::stderr();
    #[cfg(feature = "tls")]
    let cert_file = config.tls.as_ref().map(|files| files.cert.clone());
    let server = match Server::bind(config, log.clone()) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("wsecho: {}", cli::server_error(&e));
            return Ok(ExitCode::FAILURE);
        }
    };
    let stopper = server.stopper();
    #[cfg(feature = "tls")]
    let tls = server.tls();
    let reload_log = log.clone();
    let on_signal = move |signal| match signal {
        Signal::Interrupt | Signal::Terminate => stopper.stop(),
        #[cfg(feature = "tls")]
        Signal::Hangup => match (&tls, &cert_file) {
            (Some(tls), Some(cert)) => match tls.reload() {
                Ok(()) => reload_log.line(format_args!(
                    "tls: reloaded certificate from {}",
                    cert.display()
                )),
                Err(e) => reload_log.line(format_args!(
                    "tls: reload failed: {e} (still serving the previous certificate)"
                )),
            },
            _ => reload_log.line(format_args!("SIGHUP: nothing to reload without TLS")),
        },
        #[cfg(not(feature = "tls"))]
        Signal::Hangup => reload_log.line(format_args!("SIGHUP: nothing to reload without TLS")),
    };
    if let Err(e) = sys::on_signals(on_signal) {
        eprintln!("wsecho: cannot handle signals: {e}");
        return Ok(ExitCode::FAILURE);
    }
    server.run();
    log.flush_within(Duration::from_secs(1));
    Ok(ExitCode::SUCCESS)
}

fn dial(args: pico_args::Arguments) -> Result<ExitCode, cli::Usage> {
    let fail = |message: String| {
        eprintln!("wsecho: {message}");
        Ok(ExitCode::FAILURE)
    };
    let config = match cli::dial(args) {
        Ok(Some(config)) => config,
        Ok(None) => {
            print!("{}", cli::DIAL_USAGE);
            return Ok(ExitCode::SUCCESS);
        }
        Err(cli::Error::Usage(usage)) => return Err(usage),
        Err(cli::Error::Failed(message)) => return fail(message),
    };
    #[cfg(feature = "tls")]
    if config.options.trust == wsecho::tls::Trust::Insecure {
        eprintln!(
            "wsecho: warning: --insecure: the server's certificate is not checked; anyone on the way can read and change this connection"
        );
    }
    let (tx, interrupt) = crossbeam_channel::bounded(1);
    // SIGHUP too: the terminal dial ran in has gone away.
    let on_signal = on_interrupt(tx);
    if let Err(e) = sys::on_signals(move |_| on_signal()) {
        return fail(format!("cannot handle Ctrl-C: {e}"));
    }
    match client::run(&config, interrupt, &PROGRESS) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => fail(cli::client_error(&e)),
    }
}

/// Kept by [`client::run`]: whether the connection is open, and the `--stats` summary it
/// still owes.
static PROGRESS: client::Progress = client::Progress::new();

/// What Ctrl-C does in dial. Before the connection is open (a DNS lookup, TCP connect or
/// handshake that hangs), or between two with `--reconnect`, there is nothing to close, so
/// dial ends at once with status 1 instead of after `--connect-timeout` or the wait, once
/// `interrupt` has printed the `--stats` summary; while one is open, `run`'s select loop
/// gets the interrupt, sends Close 1000 and waits for the server.
///
/// The summary goes to stdout, whose reader may have stopped reading (a full pipe blocks
/// the write), and the run may hold the summary's lock while it writes there itself: so
/// the question goes to a thread of its own, and without an answer within
/// [`INTERRUPT_GRACE`] dial ends anyway. Ctrl-C always ends dial.
fn on_interrupt(interrupt: crossbeam_channel::Sender<()>) -> impl Fn() {
    move || {
        let (answer, answered) = crossbeam_channel::bounded(1);
        let asked = std::thread::Builder::new()
            .name("wsecho-interrupt-summary".into())
            .spawn(move || {
                let _ = answer.send(PROGRESS.interrupt());
            });
        let open = asked.is_ok() && answered.recv_timeout(INTERRUPT_GRACE).unwrap_or(false);
        if open {
            let _ = interrupt.try_send(());
        } else {
            eprintln!("wsecho: interrupted while no connection was open");
            std::process::exit(1);
        }
    }
}

/// How long Ctrl-C waits for the `--stats` summary to be written before dial ends anyway.
const INTERRUPT_GRACE: Duration = Duration::from_secs(1);
