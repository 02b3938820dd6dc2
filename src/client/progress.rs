//! What a dial run shares with the caller's Ctrl-C handling, which runs on a thread of its
//! own and may have to end the process while the run is blocked.

use super::stats::Probes;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

/// How far a run has got, as Ctrl-C needs to know it.
///
/// While a connection is open, the run's select loop takes Ctrl-C and closes it. While none
/// is (a DNS lookup, a connect or handshake that hangs, the wait before a reconnect), the
/// run would not notice Ctrl-C for as long as that takes, so the caller ends the process at
/// once instead; [`Progress::interrupt`] first writes what the run still owes its reader,
/// the probes' summary. The run and the handler each write the summary under the one lock
/// and take it as they do, so it comes out whole and once, whichever of them ends first.
pub struct Progress {
    state: Mutex<State>,
}

struct State {
    /// A connection is open: its select loop takes Ctrl-C.
    open: bool,
    /// Ctrl-C came while no connection was open: the process is ending, and no connection
    /// may open and print behind the summary.
    ended: bool,
    /// The probes, until their summary is written, and the URL it names.
    summary: Option<(Arc<Probes>, String)>,
}

impl Progress {
    /// A run that has not started: no connection open, nothing to summarise.
    pub const fn new() -> Progress {
        Progress {
            state: Mutex::new(State {
                open: false,
                ended: false,
                summary: None,
            }),
        }
    }

    /// Ctrl-C came. `true` while a connection is open: pass the interrupt on to the run.
    /// `false` while none is: end the process now; the summary, if the run has one, is on
    /// stdout by then, and no connection opens after this.
    pub fn interrupt(&self) -> bool {
        let mut state = self.lock();
        if state.open {
            return true;
        }
        state.ended = true;
        write_summary(&mut state);
        false
    }

    /// The run starts; with probes, it owes a summary of them for `url`.
    pub(crate) fn start(&self, probes: Option<Arc<Probes>>, url: &str) {
        self.lock().summary = probes.map(|p| (p, url.to_string()));
    }

    /// A connection is open, and its select loop takes Ctrl-C from now on; `false` if
    /// Ctrl-C has already ended the run.
    pub(crate) fn opened(&self) -> bool {
        let mut state = self.lock();
        state.open = !state.ended;
        state.open
    }

    /// No connection is open, and nothing prints to stdout until the next one is.
    pub(crate) fn closed(&self) {
        self.lock().open = false;
    }

    /// The run is over: writes the summary unless Ctrl-C has.
    pub(crate) fn finish(&self) {
        write_summary(&mut self.lock());
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for Progress {
    fn default() -> Progress {
        Progress::new()
    }
}

fn write_summary(state: &mut State) {
    if let Some((probes, url)) = state.summary.take() {
        // A reader of stdout that has gone cannot be told; the exit status still says how
        // the run went.
        let _ = probes.summary(&mut io::stdout().lock(), &url);
    }
}
