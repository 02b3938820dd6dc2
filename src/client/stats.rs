//! `--stats`: probes that carry their sequence number, their round-trip times, and a summary
//! in the manner of ping(8).
//!
//! A probe is a binary message of the asked size whose first 8 bytes are its sequence number
//! (big-endian), so an echo is matched to its probe by content. The send time is taken just
//! before the write and the arrival time as soon as the reader has the whole echo, both on
//! the monotonic clock. Percentiles come from a histogram with 32 steps per power of two
//! (within about 3%), so memory stays fixed however long the probe runs.

use super::conn::Timings;
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Write};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tungstenite::Message;

/// The smallest probe: its sequence number.
pub const MIN_SIZE: usize = 8;

/// Sent probes and what came back; shared by the sending thread and the reader.
pub(crate) struct Probes {
    size: usize,
    state: Mutex<State>,
}

struct State {
    /// Probes sent and not echoed yet, oldest first.
    outstanding: VecDeque<(u64, Instant)>,
    sent: u64,
    received: u64,
    min: Duration,
    max: Duration,
    /// Sums of the round trips and of their squares, in nanoseconds.
    sum: u128,
    squares: u128,
    histogram: Vec<u64>,
    first_connection: Option<Timings>,
}

/// One echo as the reader reports it.
pub(crate) struct Echo {
    pub(crate) seq: u64,
    pub(crate) bytes: usize,
    pub(crate) rtt: Duration,
}

impl Probes {
    pub(crate) fn new(size: usize) -> Probes {
        Probes {
            size: size.max(MIN_SIZE),
            state: Mutex::new(State {
                outstanding: VecDeque::new(),
                sent: 0,
                received: 0,
                min: Duration::MAX,
                max: Duration::ZERO,
                sum: 0,
                squares: 0,
                histogram: vec![0; BUCKETS],
                first_connection: None,
            }),
        }
    }

    /// The probe with sequence number `seq`.
    pub(crate) fn payload(&self, seq: u64) -> Message {
        let mut data = vec![b'.'; self.size];
        data[..8].copy_from_slice(&seq.to_be_bytes());
        Message::binary(data)
    }

    /// Probe `seq` is about to be written.
    pub(crate) fn sending(&self, seq: u64) {
        let mut state = self.lock();
        state.sent += 1;
        state.outstanding.push_back((seq, Instant::now()));
    }

    /// Notes the timings of the first connection.
    pub(crate) fn connected(&self, timings: Timings) {
        self.lock().first_connection.get_or_insert(timings);
    }

    /// An echo that arrived at `arrived`; `None` if it is no probe dial is waiting for. Older
    /// probes still waiting are lost: the server echoes in order.
    pub(crate) fn echoed(&self, message: &Message, arrived: Instant) -> Option<Echo> {
        let data = match message {
            Message::Binary(data) if data.len() == self.size => data,
            _ => return None,
        };
        let seq = u64::from_be_bytes(data[..8].try_into().ok()?);
        let mut state = self.lock();
        let at = state.outstanding.iter().position(|(s, _)| *s == seq)?;
        let (_, sent_at) = state.outstanding[at];
        state.outstanding.drain(..=at);
        let rtt = arrived.saturating_duration_since(sent_at);
        state.record(rtt);
        Some(Echo {
            seq,
            bytes: data.len(),
            rtt,
        })
    }

    /// How many probes went out, and how many came back.
    pub(crate) fn counts(&self) -> (u64, u64) {
        let state = self.lock();
        (state.sent, state.received)
    }

    /// Writes the summary for `url`.
    pub(crate) fn summary(&self, out: &mut impl Write, url: &str) -> io::Result<()> {
        let state = self.lock();
        let (sent, received) = (state.sent, state.received);
        writeln!(out, "--- {url} statistics ---")?;
        let lost = sent.saturating_sub(received);
        let permille = (lost * 1000).checked_div(sent).unwrap_or(0);
        writeln!(
            out,
            "{sent} sent, {received} received, {}.{}% loss",
            permille / 10,
            permille % 10
        )?;
        if received > 0 {
            let n = u128::from(received);
            let mean = state.sum / n;
            let variance = (state.squares / n).saturating_sub(mean * mean);
            let mdev = Duration::from_nanos((variance as f64).sqrt() as u64);
            let mean = Duration::from_nanos(mean as u64);
            writeln!(
                out,
                "rtt min/avg/max/mdev = {}/{}/{}/{} ms",
                Ms(state.min),
                Ms(mean),
                Ms(state.max),
                Ms(mdev)
            )?;
            writeln!(
                out,
                "rtt p50/p99 = {}/{} ms",
                Ms(state.percentile(50)),
                Ms(state.percentile(99))
            )?;
        }
        if let Some(t) = state.first_connection {
            write!(out, "first connection: connect {} ms", Ms(t.connect))?;
            if let Some(tls) = t.tls {
                write!(out, ", tls {} ms", Ms(tls))?;
            }
            writeln!(out, ", upgrade {} ms", Ms(t.upgrade))?;
        }
        out.flush()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    fn record(&mut self, rtt: Duration) {
        self.received += 1;
        self.min = self.min.min(rtt);
        self.max = self.max.max(rtt);
        let nanos = rtt.as_nanos().min(u128::from(u64::MAX));
        self.sum = self.sum.saturating_add(nanos);
        self.squares = self.squares.saturating_add(nanos * nanos);
        self.histogram[bucket(nanos as u64)] += 1;
    }

    /// The `p`th percentile: the middle of its bucket, kept within min and max.
    fn percentile(&self, p: u64) -> Duration {
        let rank = (self.received * p).div_ceil(100).max(1);
        let mut seen = 0;
        for (i, count) in self.histogram.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let (low, width) = bucket_range(i);
                let mid = Duration::from_nanos(low.saturating_add(width / 2));
                return mid.clamp(self.min, self.max);
            }
        }
        self.max
    }
}

/// Steps per power of two, as a power of two.
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// Values below `2 * SUB` have a bucket each; above, 32 per power of two up to 2^64.
const BUCKETS: usize = (2 * SUB + (64 - SUB_BITS as u64 - 1) * SUB) as usize;

fn bucket(v: u64) -> usize {
    if v < 2 * SUB {
        return v as usize;
    }
    let shift = 63 - v.leading_zeros() - SUB_BITS;
    (2 * SUB + u64::from(shift - 1) * SUB + ((v >> shift) - SUB)) as usize
}

/// The lowest value of bucket `i`, and its width.
fn bucket_range(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < 2 * SUB {
        return (i, 1);
    }
    let shift = (i - 2 * SUB) / SUB + 1;
    let sub = (i - 2 * SUB) % SUB + SUB;
    (sub << shift, 1 << shift)
}

/// A duration in milliseconds with three decimals, without float formatting.
pub(crate) struct Ms(pub(crate) Duration);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = self.0.as_micros();
        write!(f, "{}.{:03}", micros / 1000, micros % 1000)
    }
}

/// Writes the line for one echo, as ping(8) does.
pub(crate) fn print_echo(out: &mut impl Write, url: &str, echo: &Echo) -> io::Result<()> {
    writeln!(
        out,
        "{} bytes from {url}: seq={} time={} ms",
        echo.bytes,
        echo.seq,
        Ms(echo.rtt)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order() {
        for v in (0..5000u64).chain([u64::MAX / 3, u64::MAX - 1, u64::MAX]) {
            let (low, width) = bucket_range(bucket(v));
            assert!(low <= v && v - low < width, "{v}: {low}+{width}");
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        assert!(bucket(1000) < bucket(1100));
    }

    #[test]
    fn echoes_are_matched_by_sequence_number_and_summarised() {
        let probes = Probes::new(32);
        for seq in 1..=3 {
            probes.sending(seq);
        }
        let now = Instant::now() + Duration::from_millis(2);
        let echo = probes.echoed(&probes.payload(2), now).expect("probe 2");
        assert_eq!((echo.seq, echo.bytes), (2, 32));
        assert!(
            probes.echoed(&probes.payload(1), now).is_none(),
            "1 was lost"
        );
        assert!(probes.echoed(&Message::text("x"), now).is_none());
        assert_eq!(probes.counts(), (3, 1));
        let mut out = Vec::new();
        probes.summary(&mut out, "ws://h/echo").unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("3 sent, 1 received, 66.6% loss"), "{out}");
        assert!(out.contains("rtt p50/p99 = "), "{out}");
    }

    #[test]
    fn milliseconds_have_three_decimals() {
        assert_eq!(Ms(Duration::from_micros(412)).to_string(), "0.412");
        assert_eq!(Ms(Duration::from_micros(12_005)).to_string(), "12.005");
    }
}
