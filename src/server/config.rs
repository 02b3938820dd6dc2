//! What `wsecho serve` is asked to do: plain values, with the defaults in one place.

use crate::cidr::Cidr;
use std::time::Duration;

/// What `wsecho serve` is asked to do. Defaults live here, in one place.
#[derive(Clone, Debug)]
pub struct Config {
    /// `HOST:PORT` to listen on.
    pub addr: String,
    /// Turns off the per-message `recv:` log (connection lines stay).
    pub quiet: bool,
    /// Origins allowed besides the page's own; `*` allows every origin.
    pub allowed_origins: Vec<String>,
    /// How long open connections get to finish their closing handshake at shutdown.
    pub grace: Duration,
    /// Reverse proxies whose `X-Forwarded-For` / `Forwarded` headers name the client in the
    /// log; from anyone else those headers are ignored.
    pub trusted_proxies: Vec<Cidr>,
    /// The deadlines and caps that keep one peer from holding the server.
    pub limits: Limits,
    /// Serve https and wss with this certificate and key (and, optionally, require client
    /// certificates) instead of plain http and ws.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::ServerFiles>,
}

/// Deadlines and caps; each one bounds a way a peer could hold a thread or memory.
#[derive(Clone, Debug)]
pub struct Limits {
    /// From accept to a completed upgrade (or a plain HTTP answer).
    pub handshake_timeout: Duration,
    /// Open connections at most; `None` sizes it to the box at start.
    pub max_conns: Option<usize>,
    /// Quiet this long, the server pings the peer.
    pub ping_interval: Duration,
    /// Heard nothing this long (not even a pong), the server closes with 1001.
    pub idle_timeout: Duration,
    /// A write (at most 64 KiB plus one fragment) the peer takes none of for this long, or
    /// has not taken whole this long after it stalled, drops the connection (`link::DeadlineWriter`).
    pub write_timeout: Duration,
    /// Largest message, in bytes; larger ones get Close 1009.
    pub max_message: usize,
    /// Largest frame, in bytes; larger ones get Close 1009.
    pub max_frame: usize,
    /// Largest HTTP request head, in bytes; larger ones get 431.
    pub max_head: usize,
    /// How long a thread whose connection ended waits to serve the next one before it exits.
    pub thread_linger: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: "localhost:8080".into(),
            quiet: false,
            allowed_origins: Vec::new(),
            grace: Duration::from_secs(2),
            trusted_proxies: Vec::new(),
            limits: Limits::default(),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: Duration::from_secs(10),
            max_conns: None,
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            max_message: 16 << 20,
            max_frame: 16 << 20,
            max_head: 8 * 1024,
            thread_linger: Duration::from_secs(10),
        }
    }
}
