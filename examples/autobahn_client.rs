//! Drives wsecho's client through the Autobahn TestSuite's fuzzing server.
//!
//! `cargo run --release --example autobahn_client -- ws://127.0.0.1:PORT`
//!
//! Autobahn tests a client by having it connect once per case and echo every message back
//! until the server closes: `/getCaseCount` first, then `/runCase?case=N&agent=wsecho` for
//! each case, then `/updateReports` to write the report. This is that loop, on the same
//! `connect`, `Reader` and `Writer` that `wsecho dial` uses.

use std::process::ExitCode;
use std::time::Duration;
use wsecho::client::{Incoming, Options, Target, connect};

const AGENT: &str = "wsecho";

fn main() -> ExitCode {
    let Some(base) = std::env::args().nth(1) else {
        eprintln!("usage: autobahn_client ws://HOST:PORT");
        return ExitCode::from(2);
    };
    let base = base.trim_end_matches('/');
    let count = match case_count(base) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("cannot read the case count: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("running {count} cases");
    for case in 1..=count {
        if let Err(e) = echo_until_closed(&format!("{base}/runCase?case={case}&agent={AGENT}")) {
            // Many cases end with a failed connection on purpose: the report judges them.
            eprintln!("case {case}: {e}");
        }
    }
    // The fuzzing server writes the report and drops the connection, Close frame or not;
    // whether the report is complete is for the conformance script to check.
    if let Err(e) = echo_until_closed(&format!("{base}/updateReports?agent={AGENT}")) {
        eprintln!("updateReports: {e}");
    }
    ExitCode::SUCCESS
}

fn options() -> Options {
    Options {
        connect_timeout: Duration::from_secs(10),
        ..Options::default()
    }
}

fn case_count(base: &str) -> Result<u32, String> {
    let target = Target::from_url(&format!("{base}/getCaseCount")).map_err(|e| e.to_string())?;
    let (mut reader, _writer) = connect(&target, &options()).map_err(|e| e.to_string())?;
    match reader.recv().map_err(|e| e.to_string())? {
        Incoming::Message(m) => {
            let text = m.to_text().map_err(|e| e.to_string())?;
            text.trim().parse().map_err(|e| format!("'{text}': {e}"))
        }
        Incoming::Closed(_) => Err("closed before sending the count".into()),
    }
}

fn echo_until_closed(url: &str) -> Result<(), String> {
    let target = Target::from_url(url).map_err(|e| e.to_string())?;
    let (mut reader, writer) = connect(&target, &options()).map_err(|e| e.to_string())?;
    loop {
        match reader.recv().map_err(|e| e.to_string())? {
            Incoming::Message(m) => {
                // After the server's Close, sends fail by design; the reader sees the end.
                let _ = writer.send(m);
            }
            Incoming::Closed(_) => return Ok(()),
        }
    }
}
