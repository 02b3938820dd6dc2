//! Load generator: measures WebSocket echo servers on this machine (loopback only).
//!
//! ```text
//! cargo build --release --workspace       # wsecho, loadgen, reference_server (compare needs all)
//! L=target/release/loadgen
//! $L pingpong --conns 64 --size 32 [--binary] [--secs 3 | --count N] [--pid P] ws://127.0.0.1:8080/echo
//! $L handshakes --concurrency 16 [--secs 3 | --count N] [--pid P] ws://127.0.0.1:8080/echo
//! $L idle --conns 2000 [--big 4] [--settle 1] --pid P ws://127.0.0.1:8080/echo
//! $L compare [--rounds 5] [--secs 3] [--idle-conns 2000] [--big 4] [--wsecho PATH] [--go PATH]
//!            [--only small,large,handshake,idle] [--tls]
//! $L certs DIR                            # a test CA and an ECDSA P-256 server certificate
//! $L wait PORT                            # until something listens on PORT (no connection made)
//! ```
//! A `tcp://HOST:PORT` URL speaks raw TCP (no framing) to a byte-echo server; a
//! `wss://HOST:PORT/PATH` URL speaks TLS 1.3 with AES-128-GCM only, trusting `--ca FILE`
//! (pingpong, handshakes, idle), a full handshake every time (see bench/tls.rs).
//!
//! - pingpong: every connection sends one message (text, or binary with `--binary`), waits for
//!   its echo and checks it byte for byte and by type, then the next (`--count` is per
//!   connection). Echoes/s and MB/s each way (MB = 10^6 bytes).
//! - handshakes: open, upgrade, Close handshake, drop; from N threads. `--count` is the total.
//! - idle: opens C connections and holds them (one thread total, not one per connection),
//!   reads the server's RSS, virtual size and threads before and after; with `--big B` it then
//!   echoes one 16 MiB message on each of B connections, lets them go idle for `--settle`
//!   seconds, and reports what each still holds.
//! - compare: starts every server (wsecho twice for the A/A column, the reference with the
//!   default and a 4 KiB read buffer, the Go original, the raw TCP echo), runs the scenarios in
//!   interleaved rounds (the server order rotates each round) and prints medians. The idle
//!   scenario gets a fresh process of each server: memory that earlier scenarios freed but the
//!   allocator kept would otherwise absorb the new connections. With `--tls`: the same over
//!   wss:// (wsecho `serve --tls-cert --tls-key`, the reference with `--tls`, the Go original
//!   with `-cert -key`, all with one fresh ECDSA P-256 certificate from openssl), without the
//!   raw TCP column and the 16 MiB echo.
//!
//! With `--pid`, the server's CPU time (utime + stime from /proc/PID/stat: the task-clock of all
//! its threads) gives CPU µs per echo or handshake. The client frames messages itself (one pre-masked frame per connection, parsed
//! replies, no copies) after tungstenite's handshake, to keep its own CPU use low: it shares the
//! machine's two cores with the server.

use std::error::Error;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};
use tls::Stream;
use tungstenite::protocol::WebSocketConfig;

mod tls;

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

const BIG: usize = 16 * 1024 * 1024;

fn main() -> ExitCode {
    raise_nofile_limit();
    let mut args = pico_args::Arguments::from_env();
    let result = match args.subcommand().ok().flatten().as_deref() {
        Some("pingpong") => cmd_pingpong(args),
        Some("handshakes") => cmd_handshakes(args),
        Some("idle") => cmd_idle(args),
        Some("compare") => cmd_compare(args),
        Some("certs") => args
            .free_from_str::<PathBuf>()
            .map_err(Into::into)
            .and_then(|dir| tls::make_certs(&dir))
            .map(|c| {
                println!("CA {}, server {} (key {})", c.ca.display(), c.cert.display(), c.key.display())
            }),
        Some("wait") => args
            .free_from_str()
            .map_err(Into::into)
            .and_then(|port| wait_listening(port, Duration::from_secs(60))),
        _ => Err("usage: loadgen pingpong|handshakes|idle|compare|certs|wait ... (see the top of bench/loadgen.rs)".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------- command line

fn stop_from(args: &mut pico_args::Arguments) -> Res<Stop> {
    Ok(match args.opt_value_from_str("--count")? {
        Some(n) => Stop::Count(n),
        None => Stop::Secs(args.opt_value_from_str("--secs")?.unwrap_or(3.0)),
    })
}

fn finish(args: pico_args::Arguments) -> Res<()> {
    let rest = args.finish();
    if rest.is_empty() {
        Ok(())
    } else {
        Err(format!("unexpected arguments: {rest:?}").into())
    }
}

fn cmd_pingpong(mut args: pico_args::Arguments) -> Res<()> {
    let conns = args.opt_value_from_str("--conns")?.unwrap_or(64);
    let size = args.opt_value_from_str("--size")?.unwrap_or(32);
    let binary = args.contains("--binary");
    let stop = stop_from(&mut args)?;
    let pid = args.opt_value_from_str("--pid")?;
    let ca: Option<PathBuf> = args.opt_value_from_str("--ca")?;
    let target = Target::parse(&args.free_from_str::<String>()?, ca.as_deref())?;
    finish(args)?;
    if target.tls.is_some() {
        println!("TLS: {}", target.connect()?.describe());
    }
    let load = pingpong(&target, conns, size, binary, stop, pid)?;
    let mb = load.ops as f64 * size as f64 / load.secs / 1e6;
    print!(
        "pingpong {conns} x {size} B: {} echoes in {:.2} s = {:.0} echoes/s, {mb:.1} MB/s each way",
        load.ops,
        load.secs,
        load.rate()
    );
    match load.cpu_per_op() {
        Some(us) => println!(", server CPU {us:.2} µs/echo"),
        None => println!(),
    }
    Ok(())
}

fn cmd_handshakes(mut args: pico_args::Arguments) -> Res<()> {
    let concurrency = args.opt_value_from_str("--concurrency")?.unwrap_or(16);
    let stop = stop_from(&mut args)?;
    let pid = args.opt_value_from_str("--pid")?;
    let ca: Option<PathBuf> = args.opt_value_from_str("--ca")?;
    let target = Target::parse(&args.free_from_str::<String>()?, ca.as_deref())?;
    finish(args)?;
    let load = handshakes(&target, concurrency, stop, pid)?;
    print!(
        "handshakes x {concurrency}: {} in {:.2} s = {:.0}/s",
        load.ops,
        load.secs,
        load.rate()
    );
    match load.cpu_per_op() {
        Some(us) => println!(", server CPU {us:.1} µs/handshake"),
        None => println!(),
    }
    Ok(())
}

fn cmd_idle(mut args: pico_args::Arguments) -> Res<()> {
    let conns = args.opt_value_from_str("--conns")?.unwrap_or(2000);
    let big = args.opt_value_from_str("--big")?.unwrap_or(0);
    let settle = args.opt_value_from_str("--settle")?.unwrap_or(1.0);
    let pid = args.value_from_str("--pid")?;
    let ca: Option<PathBuf> = args.opt_value_from_str("--ca")?;
    let target = Target::parse(&args.free_from_str::<String>()?, ca.as_deref())?;
    finish(args)?;
    let r = idle(&target, conns, big, Duration::from_secs_f64(settle), pid)?;
    let (b, o) = (r.before, r.open);
    println!(
        "server before: RSS {} KiB, VmSize {} KiB, {} threads",
        b.rss_kib, b.vm_kib, b.threads
    );
    println!(
        "with {conns} idle: RSS {} KiB, VmSize {} KiB, {} threads",
        o.rss_kib, o.vm_kib, o.threads
    );
    println!(
        "per idle connection: {:.1} KiB RSS, {:.1} KiB VmSize",
        r.rss_per_conn(),
        r.vm_per_conn()
    );
    if let Some(after) = r.after_big {
        println!(
            "after one 16 MiB echo on {big} of them and {settle} s idle: RSS {} KiB, {:.1} KiB more per such connection",
            after.rss_kib,
            r.kept_per_big().unwrap_or(0.0)
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- targets and framing

/// `ws://HOST:PORT/PATH` (WebSocket), `wss://HOST:PORT/PATH` (WebSocket over TLS, trusting
/// the CA certificates of `--ca FILE`) or `tcp://HOST:PORT` (raw byte echo).
#[derive(Clone)]
struct Target {
    url: String,
    addr: String,
    raw: bool,
    tls: Option<tls::Client>,
}

impl Target {
    fn parse(url: &str, ca: Option<&Path>) -> Res<Target> {
        let (raw, secure, rest) = if let Some(rest) = url.strip_prefix("ws://") {
            (false, false, rest)
        } else if let Some(rest) = url.strip_prefix("wss://") {
            (false, true, rest)
        } else if let Some(rest) = url.strip_prefix("tcp://") {
            (true, false, rest)
        } else {
            return Err(format!(
                "{url}: want ws://HOST:PORT/PATH, wss://HOST:PORT/PATH or tcp://HOST:PORT"
            )
            .into());
        };
        let addr = rest.split('/').next().unwrap_or_default().to_string();
        let tls = match (secure, ca) {
            (true, Some(ca)) => Some(tls::Client::new(&addr, ca)?),
            (true, None) => return Err(format!("{url}: wss:// needs --ca FILE").into()),
            (false, _) => None,
        };
        Ok(Target {
            url: url.to_string(),
            addr,
            raw,
            tls,
        })
    }

    /// A connected socket (TCP_NODELAY), wrapped in a TLS client for wss://; the TLS
    /// handshake runs on its first write.
    fn open(&self) -> io::Result<Stream> {
        let stream = TcpStream::connect(&self.addr)?;
        stream.set_nodelay(true)?;
        match &self.tls {
            Some(tls) => tls.wrap(stream),
            None => Ok(Stream::Plain(stream)),
        }
    }

    /// A connected socket, upgraded unless raw. The server sends nothing after its 101 until
    /// asked, so nothing is lost by dropping tungstenite's state here.
    fn connect(&self) -> io::Result<Stream> {
        let stream = self.open()?;
        if self.raw {
            return Ok(stream);
        }
        let (ws, _) = tungstenite::client::client_with_config(
            self.url.as_str(),
            stream,
            Some(client_config()),
        )
        .map_err(|e| io::Error::other(format!("handshake: {e}")))?;
        Ok(ws.into_inner())
    }
}

fn client_config() -> WebSocketConfig {
    // A small read buffer: tungstenite zero-fills all of it before every read.
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .max_message_size(None)
        .max_frame_size(None)
}

const TEXT: u8 = 1;
const BINARY: u8 = 2;
const CLOSE: u8 = 8;

/// One masked client frame; the payload starts at `frame.len() - payload.len()`.
fn client_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let n = payload.len();
    let mut f = Vec::with_capacity(n + 14);
    f.push(0x80 | opcode);
    if n < 126 {
        f.push(0x80 | n as u8);
    } else if n <= 0xFFFF {
        f.push(0x80 | 126);
        f.extend((n as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend((n as u64).to_be_bytes());
    }
    f.extend(mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Reads server frames (unmasked) from one socket into a buffer allocated once.
struct FrameReader {
    buf: Vec<u8>,
    pos: usize,
    end: usize,
}

impl FrameReader {
    fn new() -> Self {
        FrameReader {
            buf: vec![0; 256 * 1024],
            pos: 0,
            end: 0,
        }
    }

    fn fill(&mut self, s: &mut impl Read) -> io::Result<()> {
        if self.pos == self.end {
            (self.pos, self.end) = (0, 0);
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.pos..self.end, 0);
            (self.pos, self.end) = (0, self.end - self.pos);
        }
        match s.read(&mut self.buf[self.end..])? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            n => {
                self.end += n;
                Ok(())
            }
        }
    }

    fn need(&mut self, s: &mut impl Read, n: usize) -> io::Result<()> {
        while self.end - self.pos < n {
            self.fill(s)?;
        }
        Ok(())
    }

    /// (fin, opcode, payload length) of the next frame; its payload follows.
    fn header(&mut self, s: &mut impl Read) -> io::Result<(bool, u8, u64)> {
        self.need(s, 2)?;
        let (b0, b1) = (self.buf[self.pos], self.buf[self.pos + 1]);
        if b1 & 0x80 != 0 || b0 & 0x70 != 0 {
            return Err(io::Error::other("masked frame or RSV bits from the server"));
        }
        let extra = match b1 & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        self.need(s, 2 + extra)?;
        let p = self.pos + 2;
        let len = match extra {
            2 => u16::from_be_bytes([self.buf[p], self.buf[p + 1]]) as u64,
            8 => u64::from_be_bytes(self.buf[p..p + 8].try_into().unwrap()),
            _ => (b1 & 0x7F) as u64,
        };
        self.pos += 2 + extra;
        Ok((b0 & 0x80 != 0, b0 & 0x0F, len))
    }

    /// Consumes `len` payload bytes, comparing them with `want` (if given) chunk by chunk.
    fn payload(&mut self, s: &mut impl Read, len: usize, want: Option<&[u8]>) -> io::Result<()> {
        let mut off = 0;
        while off < len {
            if self.pos == self.end {
                self.fill(s)?;
            }
            let n = (self.end - self.pos).min(len - off);
            if let Some(want) = want
                && self.buf[self.pos..self.pos + n] != want[off..off + n]
            {
                return Err(io::Error::other("echo differs from what was sent"));
            }
            (self.pos, off) = (self.pos + n, off + n);
        }
        Ok(())
    }

    /// Reads one whole message (any fragmentation) and checks its type and bytes.
    fn expect_message(&mut self, s: &mut impl Read, opcode: u8, want: &[u8]) -> io::Result<()> {
        let mut off = 0;
        let mut first = true;
        loop {
            let (fin, op, len) = self.header(s)?;
            if op >= 8 {
                if op == CLOSE {
                    return Err(io::Error::other("server sent Close during the test"));
                }
                self.payload(s, len as usize, None)?; // a ping (unanswered) or pong
                continue;
            }
            if op != if first { opcode } else { 0 } {
                return Err(io::Error::other(format!(
                    "frame opcode {op}, want {opcode}"
                )));
            }
            let len = len as usize;
            if off + len > want.len() {
                return Err(io::Error::other("echo longer than what was sent"));
            }
            self.payload(s, len, Some(&want[off..off + len]))?;
            (off, first) = (off + len, false);
            if fin {
                break;
            }
        }
        if off != want.len() {
            return Err(io::Error::other("echo shorter than what was sent"));
        }
        Ok(())
    }
}

/// Sends Close 1000 and waits (briefly) for the server's Close.
fn close_ws(s: &mut Stream, rd: &mut FrameReader) {
    let _ = s.write_all(&client_frame(CLOSE, &1000u16.to_be_bytes(), [1, 2, 3, 4]));
    let _ = s.tcp().set_read_timeout(Some(Duration::from_secs(2)));
    while let Ok((_, op, len)) = rd.header(s) {
        if rd.payload(s, len as usize, None).is_err() || op == CLOSE {
            break;
        }
    }
    s.close_notify();
}

/// One ping-pong connection: its pre-masked frame and the payload its echo must match.
struct Echoer {
    stream: Stream,
    target_raw: bool,
    opcode: u8,
    want: Vec<u8>,
    frame: Vec<u8>,
    at: usize,
    mask: [u8; 4],
    rd: FrameReader,
}

impl Echoer {
    fn new(target: &Target, size: usize, binary: bool, id: usize) -> io::Result<Echoer> {
        let stream = target.connect()?;
        let want: Vec<u8> = (0..size)
            .map(|i| match binary {
                true => (i * 131 + id * 17) as u8 ^ 0x5A,
                false => b'a' + ((i * 7 + id) % 26) as u8,
            })
            .collect();
        let mask = (0x9E37_79B9u32.wrapping_mul(id as u32 + 1)).to_be_bytes();
        let opcode = if binary { BINARY } else { TEXT };
        let frame = client_frame(opcode, &want, mask);
        let at = frame.len() - size;
        Ok(Echoer {
            stream,
            target_raw: target.raw,
            opcode,
            want,
            frame,
            at,
            mask,
            rd: FrameReader::new(),
        })
    }

    /// One echo; the first (up to) 8 bytes carry `seq` as letters, so a stale echo fails.
    fn echo(&mut self, seq: u64) -> io::Result<()> {
        for i in 0..self.want.len().min(8) {
            let b = b'a' + ((seq >> (4 * i)) & 0xF) as u8;
            self.want[i] = b;
            self.frame[self.at + i] = b ^ self.mask[i % 4];
        }
        if self.target_raw {
            self.stream.write_all(&self.want)?;
            return self
                .rd
                .payload(&mut self.stream, self.want.len(), Some(&self.want));
        }
        self.stream.write_all(&self.frame)?;
        self.rd
            .expect_message(&mut self.stream, self.opcode, &self.want)
    }

    fn close(mut self) {
        if !self.target_raw {
            close_ws(&mut self.stream, &mut self.rd);
        }
    }
}

// ---------------------------------------------------------------- scenarios

#[derive(Clone, Copy)]
enum Stop {
    Secs(f64),
    /// Per connection for ping-pong, in total for handshakes.
    Count(u64),
}

/// What one timed run did: operations, wall time, and the server's CPU time over it.
struct Load {
    ops: u64,
    secs: f64,
    server_cpu_us: Option<f64>,
}

impl Load {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.secs
    }
    fn cpu_per_op(&self) -> Option<f64> {
        self.server_cpu_us.map(|us| us / self.ops.max(1) as f64)
    }
}

/// Runs `work` on one thread per state, all started together; measures from the start until
/// all are done, with the server's CPU time over that span.
fn timed<S: Send + 'static, T: Send + 'static>(
    states: Vec<S>,
    stop: Stop,
    pid: Option<u32>,
    work: impl Fn(usize, S, &AtomicBool) -> T + Send + Sync + 'static,
) -> Res<(Vec<T>, f64, Option<f64>)> {
    let barrier = Arc::new(Barrier::new(states.len() + 1));
    let stopped = Arc::new(AtomicBool::new(false));
    let work = Arc::new(work);
    let threads: Vec<_> = (states.into_iter().enumerate())
        .map(|(i, state)| {
            let (barrier, stopped, work) = (barrier.clone(), stopped.clone(), work.clone());
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    barrier.wait();
                    work(i, state, &stopped)
                })
                .expect("spawn")
        })
        .collect();
    let meter = pid.map(CpuMeter::start).transpose()?;
    barrier.wait();
    let t0 = Instant::now();
    if let Stop::Secs(secs) = stop {
        thread::sleep(Duration::from_secs_f64(secs));
        stopped.store(true, Relaxed);
    }
    let results = threads
        .into_iter()
        .map(|t| t.join().expect("worker panicked"))
        .collect();
    let secs = t0.elapsed().as_secs_f64();
    let cpu = meter.map(CpuMeter::stop).transpose()?;
    Ok((results, secs, cpu))
}

fn pingpong(
    t: &Target,
    conns: usize,
    size: usize,
    binary: bool,
    stop: Stop,
    pid: Option<u32>,
) -> Res<Load> {
    let echoers = (0..conns)
        .map(|id| Echoer::new(t, size, binary, id))
        .collect::<io::Result<Vec<_>>>()?;
    let (results, secs, cpu) = timed(echoers, stop, pid, move |i, mut e, stopped| {
        let mut n = 0;
        while match stop {
            Stop::Count(c) => n < c,
            Stop::Secs(_) => !stopped.load(Relaxed),
        } {
            if let Err(err) = e.echo(n) {
                return Err(format!("connection {i}, echo {n}: {err}"));
            }
            n += 1;
        }
        Ok((n, e))
    })?;
    let mut ops = 0;
    for r in results {
        let (n, e) = r?;
        ops += n;
        e.close();
    }
    Ok(Load {
        ops,
        secs,
        server_cpu_us: cpu,
    })
}

/// Connect, upgrade, Close handshake (ours, then the server's reply), drop.
fn handshake_once(t: &Target) -> Res<()> {
    let stream = t.open()?;
    let (mut ws, _) =
        tungstenite::client::client_with_config(t.url.as_str(), stream, Some(client_config()))
            .map_err(|e| format!("handshake: {e}"))?;
    ws.close(None)?;
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(_)) | Err(tungstenite::Error::ConnectionClosed) => {
                ws.get_mut().close_notify();
                return Ok(());
            }
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn handshakes(t: &Target, concurrency: usize, stop: Stop, pid: Option<u32>) -> Res<Load> {
    let claimed = Arc::new(AtomicU64::new(0));
    let t = t.clone();
    let (results, secs, cpu) = timed(vec![(); concurrency], stop, pid, move |_, (), stopped| {
        let mut n = 0u64;
        loop {
            match stop {
                Stop::Count(c) if claimed.fetch_add(1, Relaxed) >= c => break,
                Stop::Secs(_) if stopped.load(Relaxed) => break,
                _ => {}
            }
            handshake_once(&t).map_err(|e| format!("handshake {n}: {e}"))?;
            n += 1;
        }
        Ok::<u64, String>(n)
    })?;
    let mut ops = 0;
    for r in results {
        ops += r?;
    }
    Ok(Load {
        ops,
        secs,
        server_cpu_us: cpu,
    })
}

struct Idle {
    conns: usize,
    big: usize,
    before: Proc,
    open: Proc,
    after_big: Option<Proc>,
}

impl Idle {
    fn rss_per_conn(&self) -> f64 {
        (self.open.rss_kib as f64 - self.before.rss_kib as f64) / self.conns as f64
    }
    fn vm_per_conn(&self) -> f64 {
        (self.open.vm_kib as f64 - self.before.vm_kib as f64) / self.conns as f64
    }
    fn kept_per_big(&self) -> Option<f64> {
        let after = self.after_big?;
        Some((after.rss_kib as f64 - self.open.rss_kib as f64) / self.big as f64)
    }
}

/// Holds `conns` idle connections (no thread each); then echoes 16 MiB on `big` of them
/// (not over TLS: its writer and reader would need one TLS state from two threads).
fn idle(t: &Target, conns: usize, big: usize, settle: Duration, pid: u32) -> Res<Idle> {
    if big > 0 && t.tls.is_some() {
        return Err("idle --big is not supported over TLS".into());
    }
    let before = proc_info(pid)?;
    let mut socks = Vec::with_capacity(conns);
    for i in 0..conns {
        socks.push(
            t.connect()
                .map_err(|e| format!("idle connection {i}: {e}"))?,
        );
    }
    thread::sleep(settle);
    let open = proc_info(pid)?;
    let mut after_big = None;
    if big > 0 {
        let payload: Arc<Vec<u8>> = Arc::new((0..BIG).map(|i| (i * 251 % 256) as u8).collect());
        let frame = Arc::new(client_frame(BINARY, &payload, [7, 8, 9, 10]));
        for s in socks.iter().take(big) {
            // Write from another thread: a raw echo answers while we are still sending.
            let mut w = s.tcp().try_clone()?;
            let bytes = if t.raw {
                payload.clone()
            } else {
                frame.clone()
            };
            let writer = thread::spawn(move || w.write_all(&bytes));
            let mut r = s.tcp().try_clone()?;
            let mut rd = FrameReader::new();
            let got = match t.raw {
                true => rd.payload(&mut r, BIG, Some(&payload)),
                false => rd.expect_message(&mut r, BINARY, &payload),
            };
            writer.join().expect("writer panicked")?;
            got.map_err(|e| format!("16 MiB echo: {e}"))?;
        }
        thread::sleep(settle);
        after_big = Some(proc_info(pid)?);
    }
    for mut s in socks {
        if !t.raw {
            let _ = s.write_all(&client_frame(CLOSE, &1000u16.to_be_bytes(), [1, 2, 3, 4]));
            s.close_notify();
        }
    }
    Ok(Idle {
        conns,
        big,
        before,
        open,
        after_big,
    })
}

// ---------------------------------------------------------------- /proc

#[derive(Clone, Copy, Debug)]
struct Proc {
    cpu_us: f64,
    rss_kib: u64,
    vm_kib: u64,
    threads: u64,
}

fn proc_info(pid: u32) -> io::Result<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after "(comm) ": state is the 0th, utime the 11th, stime the 12th.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap_or(0) + 1..]
        .split_whitespace()
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Ok(Proc {
        cpu_us: ticks as f64 * 1e6 / hz,
        rss_kib: field("VmRSS:"),
        vm_kib: field("VmSize:"),
        threads: field("Threads:"),
    })
}

/// A server's CPU time over a span: utime + stime from /proc/PID/stat. The kernel scales the
/// two so that they add up to the scheduler's exact runtime of all the process's threads, live
/// and ended (what `perf stat -e task-clock` counts), in clock ticks.
struct CpuMeter {
    pid: u32,
    start_us: f64,
}

impl CpuMeter {
    fn start(pid: u32) -> io::Result<CpuMeter> {
        Ok(CpuMeter {
            pid,
            start_us: proc_info(pid)?.cpu_us,
        })
    }

    /// CPU µs since `start`.
    fn stop(self) -> io::Result<f64> {
        Ok(proc_info(self.pid)?.cpu_us - self.start_us)
    }
}

/// Polls /proc/net/tcp{,6} until a socket listens on `port`; connects to nothing, so a server
/// under strace or valgrind sees no extra connection.
fn wait_listening(port: u16, timeout: Duration) -> Res<()> {
    let deadline = Instant::now() + timeout;
    let want = format!(":{port:04X}");
    while Instant::now() < deadline {
        for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
            let table = std::fs::read_to_string(f).unwrap_or_default();
            let listening = table.lines().skip(1).any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.len() > 3 && cols[1].ends_with(&want) && cols[3] == "0A"
            });
            if listening {
                return Ok(());
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    Err(format!("nothing listens on port {port} after {timeout:?}").into())
}

/// Thousands of connections need descriptors; the Go runtime does the same at start.
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

// ---------------------------------------------------------------- compare

/// How to start one server of the comparison; ADDR in `args` becomes 127.0.0.1:PORT.
struct Spec {
    name: &'static str,
    binary: PathBuf,
    args: Vec<String>,
    raw: bool,
    /// wss://, trusting this CA.
    ca: Option<PathBuf>,
}

struct Server {
    name: &'static str,
    child: Child,
    ws: Target,
    raw: bool,
    binary: PathBuf,
    start: Proc,
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn spawn(spec: &Spec) -> Res<Server> {
        let Spec {
            name,
            ref binary,
            ref args,
            raw,
            ref ca,
        } = *spec;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let args: Vec<String> = args.iter().map(|a| a.replace("ADDR", &addr)).collect();
        let child = Command::new(binary)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{name}: cannot start {}: {e}", binary.display()))?;
        wait_listening(port, Duration::from_secs(10))?;
        let url = match (raw, ca) {
            (true, _) => format!("tcp://{addr}"),
            (false, None) => format!("ws://{addr}/echo"),
            (false, Some(_)) => format!("wss://{addr}/echo"),
        };
        let start = proc_info(child.id())?;
        Ok(Server {
            name,
            child,
            ws: Target::parse(&url, ca.as_deref())?,
            raw,
            binary: binary.into(),
            start,
        })
    }

    /// After a scenario: until the connection threads are gone (or their number stops moving).
    fn settle(&self) {
        let (mut last, mut same) = (u64::MAX, 0);
        for _ in 0..100 {
            let threads = proc_info(self.pid()).map(|p| p.threads).unwrap_or(0);
            same = if threads == last { same + 1 } else { 0 };
            if threads <= self.start.threads || same >= 4 {
                break;
            }
            last = threads;
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The rows of the table; each collects one value per round and server.
const ROWS: [&str; 11] = [
    "64 conns x 32 B text, echoes/s",
    "  server CPU per echo, µs",
    "16 conns x 64 KiB binary, MB/s each way",
    "  server CPU per echo, µs",
    "handshakes/s at 16 concurrent",
    "  server CPU per handshake, µs",
    "RSS per idle connection, KiB",
    "VmSize with the idle conns open, MiB",
    "threads with the idle conns open",
    "RSS kept after a 16 MiB echo, KiB/conn",
    "RSS at start (fresh process), KiB",
];

fn cmd_compare(mut args: pico_args::Arguments) -> Res<()> {
    let rounds: usize = args.opt_value_from_str("--rounds")?.unwrap_or(5);
    let secs: f64 = args.opt_value_from_str("--secs")?.unwrap_or(3.0);
    let idle_conns: usize = args.opt_value_from_str("--idle-conns")?.unwrap_or(2000);
    let big: usize = args.opt_value_from_str("--big")?.unwrap_or(4);
    let settle: f64 = args.opt_value_from_str("--settle")?.unwrap_or(1.0);
    let only: String = args
        .opt_value_from_str("--only")?
        .unwrap_or_else(|| "small,large,handshake,idle".into());
    let want = |scenario: &str| only.split(',').any(|s| s == scenario);
    // The workspace builds wsecho, loadgen and reference_server into one directory;
    // tests/peers/setup.sh puts the Go server under the source tree's target/.
    let here = std::env::current_exe()?
        .parent()
        .ok_or("no exe dir")?
        .to_path_buf();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("bench/ has no parent directory")?;
    let wsecho: PathBuf = args
        .opt_value_from_str("--wsecho")?
        .unwrap_or_else(|| here.join("wsecho"));
    let go: PathBuf = args
        .opt_value_from_str("--go")?
        .unwrap_or_else(|| root.join("target/peers/go-echo-server"));
    let secure = args.contains("--tls");
    finish(args)?;
    // Over TLS: no 16 MiB echo on idle connections (see idle), no raw TCP column.
    let big = if secure { 0 } else { big };
    let reference = here.join("reference_server");
    for (binary, what) in [(&reference, "reference_server"), (&wsecho, "wsecho")] {
        if !binary.exists() {
            return Err(format!(
                "no {what} at {}: cargo build --release --workspace",
                binary.display()
            )
            .into());
        }
    }

    let certs = match secure {
        true => {
            let dir = std::env::temp_dir().join(format!("loadgen-certs-{}", std::process::id()));
            let certs = tls::make_certs(&dir)?;
            Some((dir, certs))
        }
        false => None,
    };
    let ca = certs.as_ref().map(|(_, c)| c.ca.clone());
    let args = |plain: &[&str], tls: &[&str]| -> Vec<String> {
        let cert = certs
            .as_ref()
            .map(|(_, c)| c.cert.to_string_lossy().into_owned());
        let key = certs
            .as_ref()
            .map(|(_, c)| c.key.to_string_lossy().into_owned());
        let words = match (&cert, &key) {
            (Some(_), Some(_)) => tls,
            _ => plain,
        };
        (words.iter())
            .map(|w| match *w {
                "CERT" => cert.clone().unwrap_or_default(),
                "KEY" => key.clone().unwrap_or_default(),
                w => w.to_string(),
            })
            .collect()
    };
    let ws_args = args(
        &["serve", "--quiet", "--addr", "ADDR"],
        &[
            "serve",
            "--quiet",
            "--addr",
            "ADDR",
            "--tls-cert",
            "CERT",
            "--tls-key",
            "KEY",
        ],
    );
    let spec = |name, binary: &PathBuf, args: Vec<String>| Spec {
        name,
        binary: binary.clone(),
        args,
        raw: false,
        ca: ca.clone(),
    };
    let mut specs = vec![
        spec("wsecho", &wsecho, ws_args.clone()),
        spec("wsecho A/A", &wsecho, ws_args),
        spec(
            "reference",
            &reference,
            args(&["ADDR"], &["--tls", "CERT", "KEY", "ADDR"]),
        ),
        spec(
            "ref 4K buf",
            &reference,
            args(&["ADDR", "4096"], &["--tls", "CERT", "KEY", "ADDR", "4096"]),
        ),
    ];
    match go.exists() {
        true => specs.push(spec(
            "Go gorilla",
            &go,
            args(
                &["-addr", "ADDR"],
                &["-addr", "ADDR", "-cert", "CERT", "-key", "KEY"],
            ),
        )),
        false => eprintln!(
            "no {}: run tests/peers/setup.sh for the Go column",
            go.display()
        ),
    }
    if !secure {
        specs.push(Spec {
            name: "raw TCP",
            binary: reference,
            args: args(&["--raw", "ADDR"], &[]),
            raw: true,
            ca: None,
        });
    }
    let servers = specs.iter().map(Server::spawn).collect::<Res<Vec<_>>>()?;

    let n = servers.len();
    let mut values = vec![vec![Vec::<f64>::new(); n]; ROWS.len()];
    for s in &servers {
        pingpong(&s.ws, 4, 32, false, Stop::Secs(0.3), None)?; // warm-up
        if secure {
            eprintln!("{}: {}", s.name, s.ws.connect()?.describe());
        }
        s.settle();
    }
    let size_l = 64 * 1024;
    for round in 0..rounds {
        let order: Vec<usize> = (0..n).map(|k| (k + round) % n).collect();
        let say = |what: &str, s: &Server, v: String| {
            eprintln!("round {}/{rounds} {what:<10} {:<11} {v}", round + 1, s.name)
        };
        for &i in order.iter().filter(|_| want("small")) {
            let s = &servers[i];
            let l = pingpong(&s.ws, 64, 32, false, Stop::Secs(secs), Some(s.pid()))
                .map_err(|e| format!("{}: {e}", s.name))?;
            say("64x32B", s, format!("{:.0} echoes/s", l.rate()));
            values[0][i].push(l.rate());
            values[1][i].push(l.cpu_per_op().unwrap_or(f64::NAN));
            s.settle();
        }
        for &i in order.iter().filter(|_| want("large")) {
            let s = &servers[i];
            let l = pingpong(&s.ws, 16, size_l, true, Stop::Secs(secs), Some(s.pid()))
                .map_err(|e| format!("{}: {e}", s.name))?;
            let mb = l.rate() * size_l as f64 / 1e6;
            say("16x64KiB", s, format!("{mb:.0} MB/s"));
            values[2][i].push(mb);
            values[3][i].push(l.cpu_per_op().unwrap_or(f64::NAN));
            s.settle();
        }
        for &i in order
            .iter()
            .filter(|&&i| !servers[i].raw && want("handshake"))
        {
            let s = &servers[i];
            let l = handshakes(&s.ws, 16, Stop::Secs(secs), Some(s.pid()))
                .map_err(|e| format!("{}: {e}", s.name))?;
            say("handshake", s, format!("{:.0}/s", l.rate()));
            values[4][i].push(l.rate());
            values[5][i].push(l.cpu_per_op().unwrap_or(f64::NAN));
            s.settle();
        }
        // A fresh process each time: memory freed by earlier scenarios would hide the cost.
        for &i in order.iter().filter(|_| want("idle")) {
            let s = Server::spawn(&specs[i])?;
            values[10][i].push(s.start.rss_kib as f64);
            let r = idle(
                &s.ws,
                idle_conns,
                big,
                Duration::from_secs_f64(settle),
                s.pid(),
            )
            .map_err(|e| format!("{}: {e}", s.name))?;
            say(
                "idle",
                &s,
                match r.kept_per_big() {
                    Some(kept) => format!(
                        "{:.1} KiB/conn, {kept:.0} KiB kept after 16 MiB",
                        r.rss_per_conn()
                    ),
                    None => format!("{:.1} KiB/conn", r.rss_per_conn()),
                },
            );
            values[6][i].push(r.rss_per_conn());
            values[7][i].push(r.open.vm_kib as f64 / 1024.0);
            values[8][i].push(r.open.threads as f64);
            if let Some(k) = r.kept_per_big() {
                values[9][i].push(k);
            }
        }
    }

    if let Some((dir, _)) = &certs {
        let _ = std::fs::remove_dir_all(dir);
    }
    println!(
        "\nmedians of {rounds} interleaved rounds, {secs} s per run{}; idle: {idle_conns} connections on a fresh server process, then one 16 MiB echo on {big} of them and {settle} s idle",
        if secure {
            ", over TLS 1.3 (AES-128-GCM)"
        } else {
            ""
        },
    );
    print!("{:<40}", "");
    for s in &servers {
        print!("{:>12}", s.name);
    }
    println!();
    for (row, label) in ROWS.iter().enumerate() {
        print!("{label:<40}");
        for v in &values[row] {
            print!("{:>12}", fmt_num(median(v)));
        }
        println!();
    }
    print!("{:<40}", "stripped binary, KiB");
    for s in &servers {
        print!(
            "{:>12}",
            stripped_kib(&s.binary)
                .map(|k| fmt_num(k as f64))
                .unwrap_or("?".into())
        );
    }
    println!("\nspread (max - min) / median, %:");
    for row in [0, 2, 4] {
        print!("{:<40}", ROWS[row]);
        for v in &values[row] {
            let spread = (v.iter().cloned().fold(f64::MIN, f64::max)
                - v.iter().cloned().fold(f64::MAX, f64::min))
                / median(v)
                * 100.0;
            print!("{:>12}", fmt_num(spread));
        }
        println!();
    }
    Ok(())
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() % 2 {
        1 => v[v.len() / 2],
        _ => (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0,
    }
}

fn fmt_num(x: f64) -> String {
    if x.is_nan() {
        return "—".into();
    }
    if x.abs() < 100.0 {
        return format!("{x:.1}");
    }
    // Whole numbers, thousands separated by spaces.
    let digits = format!("{:.0}", x.abs());
    let mut out = String::from(if x < 0.0 { "-" } else { "" });
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// Size of a stripped copy of the binary (strip from binutils).
fn stripped_kib(binary: &Path) -> Option<u64> {
    let out = std::env::temp_dir().join(format!("loadgen-strip-{}", std::process::id()));
    let ok = Command::new("strip")
        .arg("-o")
        .arg(&out)
        .arg(binary)
        .status()
        .ok()?
        .success();
    let size = std::fs::metadata(&out).ok().map(|m| m.len() / 1024);
    let _ = std::fs::remove_file(&out);
    size.filter(|_| ok)
}
