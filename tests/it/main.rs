//! wsecho's integration tests: one crate, so that each helper exists once (in `common`), and
//! one binary, so that one `cargo test` run builds and links them once.
//!
//! Every test runs the real binary over real sockets. The ones that need real peers (Go,
//! Python, Node, Chromium, nginx) are `#[ignore]`d in a plain `cargo test`; run them with
//! `cargo test -- --include-ignored` after `tests/peers/setup.sh` and
//! `tests/peers/browser/setup.sh` (scripts/test.sh does all of it).

mod common;

mod browser;
mod certs;
mod deploy;
mod dial;
mod edges;
mod interop;
#[cfg(feature = "tls")]
mod interop_tls;
#[cfg(feature = "tls")]
mod nginx;
mod proxy;
#[cfg(feature = "tls")]
mod proxy_tls;
mod reconnect;
mod robustness;
mod serve;
mod stats;
#[cfg(feature = "tls")]
mod tls;
