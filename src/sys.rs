//! What std does not expose about the host and the process: the open-files limit, memory
//! size, malloc tuning, waiting on several descriptors at once, and the signals that stop the
//! program or reload its certificate.
//!
//! This is the only module allowed `unsafe`; each block is a few libc calls with a SAFETY note.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// Raises the soft open-files limit to the hard limit, as the Go runtime does at start, and
/// returns the new soft limit. Every connection holds one descriptor, so on a box whose soft
/// limit is 1024 this is the difference between a thousand connections and many thousands.
#[allow(unsafe_code)]
pub(crate) fn raise_open_files_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit; raising the soft limit up to the hard one needs
        // no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is 32 bits on some targets
    Ok(lim.rlim_cur as u64)
}

/// Total memory in bytes from `/proc/meminfo`, or `None` where it cannot be read.
pub(crate) fn total_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Caps glibc's malloc arenas at one per core. By default glibc gives threads arenas of their
/// own, up to eight per core, each reserving 64 MiB of address space: with a thread per
/// connection that was 474 KiB of virtual memory per connection (measured with 2 000 idle
/// connections), too much for 10 000 connections in a 32-bit address space; capped, 84 KiB.
/// musl has no arenas, so there is nothing to do there.
#[allow(unsafe_code)]
pub(crate) fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: sysconf only reads; mallopt only sets a tunable, before any connection thread
    // exists (an out-of-range value would merely be refused, returning 0).
    unsafe {
        let cores = libc::sysconf(libc::_SC_NPROCESSORS_ONLN).clamp(1, 64);
        libc::mallopt(libc::M_ARENA_MAX, cores as libc::c_int);
    }
}

/// Hands freed heap memory back to the kernel. glibc keeps freed chunks that came from its
/// arenas resident; after a connection gives back the buffers a big message grew, this is
/// what makes the process's RSS drop too. Rare (once per quiet spell after big messages), so
/// its cost (a walk over the free lists) does not matter.
#[allow(unsafe_code)]
pub(crate) fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A signal wsecho acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT: Ctrl-C.
    Interrupt,
    /// SIGTERM: a service manager stopping us.
    Terminate,
    /// SIGHUP: reload (serve), or the terminal went away (dial).
    Hangup,
}

/// SIGINT, SIGTERM and SIGHUP.
#[allow(unsafe_code)]
fn handled_signals() -> libc::sigset_t {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set it is given; sigaddset only adds valid signal
    // numbers to that initialised set.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(set.as_mut_ptr(), signal);
        }
        set.assume_init()
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread, and so in every thread started
/// after it: from then on they reach the program only through [`on_signals`]'s thread, never
/// as a handler that interrupts whatever some thread was doing (and a signal that comes
/// before that thread runs waits for it). Call it first thing in `main`, before any thread
/// exists.
#[allow(unsafe_code)]
pub fn block_signals() -> io::Result<()> {
    let set = handled_signals();
    // SAFETY: `set` is an initialised signal set; the old mask is not asked for.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    match r {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Starts the one thread that waits for the signals [`block_signals`] blocked and calls
/// `handler` with each, in the order they come.
pub fn on_signals(mut handler: impl FnMut(Signal) + Send + 'static) -> io::Result<()> {
    std::thread::Builder::new()
        .name("wsecho-signals".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let set = handled_signals();
            while let Some(signal) = wait_signal(&set) {
                handler(signal);
            }
        })
        .map(|_| ())
}

/// The next of the blocked signals; `None` if waiting fails for good.
#[allow(unsafe_code)]
fn wait_signal(set: &libc::sigset_t) -> Option<Signal> {
    loop {
        let mut number: libc::c_int = 0;
        // SAFETY: `set` is an initialised signal set and `number` a valid place to write.
        let r = unsafe { libc::sigwait(set, &mut number) };
        match (r, number) {
            (0, libc::SIGINT) => return Some(Signal::Interrupt),
            (0, libc::SIGTERM) => return Some(Signal::Terminate),
            (0, libc::SIGHUP) => return Some(Signal::Hangup),
            (0, _) | (libc::EINTR, _) => {}
            _ => return None,
        }
    }
}

/// Waits until one of `fds` is ready for what its `events` ask (`POLLIN`: readable, or at its
/// end), or `timeout` passes (`None`: no limit); returns how many are ready, their `revents`
/// set. A timeout is rounded up to whole milliseconds, so a wait never ends before it is due.
/// A signal ends the wait with `Interrupted`.
#[allow(unsafe_code)]
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let millis = match timeout {
        None => -1,
        Some(t) => t
            .as_nanos()
            .div_ceil(1_000_000)
            .min(libc::c_int::MAX as u128) as libc::c_int,
    };
    // SAFETY: the pointer and length describe a live, writable slice of pollfd for the whole
    // call. A descriptor in it that is not open is reported as POLLNVAL, never touched.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, millis) };
    if ready < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ready as usize)
}

/// A descriptor that one thread waits on in [`poll`] and any other thread makes readable, to
/// wake it (Linux's `eventfd`, non-blocking: waking never blocks).
pub(crate) struct Wakeup(File);

impl Wakeup {
    #[allow(unsafe_code)]
    pub(crate) fn new() -> io::Result<Wakeup> {
        // SAFETY: eventfd only creates a descriptor; it takes no pointers.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened above and nothing else owns it.
        Ok(Wakeup(File::from(unsafe { OwnedFd::from_raw_fd(fd) })))
    }

    /// Makes the descriptor readable until [`Wakeup::clear`].
    pub(crate) fn wake(&self) {
        // Fails only when the counter is about to overflow: it is readable then anyway.
        let _ = (&self.0).write(&1u64.to_ne_bytes());
    }

    /// Takes back every wake so far.
    pub(crate) fn clear(&self) {
        let mut count = [0u8; 8];
        // Fails with WouldBlock when there was nothing to take back.
        let _ = (&self.0).read(&mut count);
    }

    /// The entry that waits for a wake in [`poll`].
    pub(crate) fn pollfd(&self) -> libc::pollfd {
        pollfd(self.0.as_fd())
    }
}

/// A [`poll`] entry that waits for `fd` to be readable.
pub(crate) fn pollfd(fd: BorrowedFd<'_>) -> libc::pollfd {
    libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_wake_from_another_thread_ends_a_wait_without_limit() {
        let wakeup = std::sync::Arc::new(Wakeup::new().unwrap());
        let waker = {
            let wakeup = wakeup.clone();
            std::thread::spawn(move || wakeup.wake())
        };
        let mut fds = [wakeup.pollfd()];
        assert_eq!(poll(&mut fds, None).unwrap(), 1);
        assert_ne!(fds[0].revents & libc::POLLIN, 0);
        waker.join().unwrap();
        wakeup.clear();
        let mut fds = [wakeup.pollfd()];
        assert_eq!(poll(&mut fds, Some(Duration::ZERO)).unwrap(), 0, "cleared");
    }

    #[test]
    fn a_wait_with_nothing_ready_ends_at_its_timeout_not_before() {
        let wakeup = Wakeup::new().unwrap();
        let start = Instant::now();
        let mut fds = [wakeup.pollfd()];
        assert_eq!(
            poll(&mut fds, Some(Duration::from_micros(1500))).unwrap(),
            0
        );
        assert!(start.elapsed() >= Duration::from_micros(1500));
    }
}
