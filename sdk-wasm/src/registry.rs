//! The subscription registry: which runs the client follows, who listens to each, and where each
//! run's stream stands (last seq delivered, epoch, folded state).
//!
//! Several app subscriptions to one run share one wire subscription. Ordering and deduplication
//! live here: an event is delivered only when its seq is exactly one past the last delivered one.

use alloc::borrow::ToOwned;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::RunState;

/// Identifies one app subscription (one `client.subscribe` call).
pub type SubId = u32;

/// Where a run's wire subscription stands on the current connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not asked for on the current connection (not connected yet, or the connection dropped).
    Idle,
    /// `subscribe` sent; waiting for `subscribed` or `reset`.
    Requested,
    /// `subscribed` or `reset` received; events flow.
    Live,
    /// Refused because the connection holds the relay's maximum of subscriptions: asked for
    /// again when one of them ends (or on the next connection).
    Waiting,
    /// Waiting for a token (the run's own, or a fresh connection token after a refusal) before
    /// `subscribe` is sent.
    Token,
}

/// One app subscription listening to a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    /// The app subscription.
    pub id: SubId,
    /// Whether it has an `onState` callback (the state is only serialized for those).
    pub wants_state: bool,
    /// Whether it has a token provider of its own (`subscribe(run, { token })`).
    pub own_token: bool,
}

/// What to do with an event, given its seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Exactly the next seq: deliver it.
    InOrder,
    /// Already delivered (a replay overlapping live events, or a duplicate): drop it.
    Duplicate,
    /// Events are missing before it: drop it and resume from the last delivered seq.
    Gap,
    /// No `subscribed`/`reset` yet, so there is no position to compare with: drop it.
    NotReady,
}

/// A run the client follows.
#[derive(Debug, Clone)]
pub struct RunSub {
    /// The run id.
    pub run: String,
    /// The app subscriptions listening, in subscribe order.
    pub listeners: Vec<Listener>,
    /// Where the wire subscription stands.
    pub phase: Phase,
    /// Seq of the last event delivered (or the snapshot's seq); `None` before the first
    /// `subscribed`/`reset`.
    pub last_seq: Option<u64>,
    /// The run's epoch, sent back with `since` when resuming.
    pub epoch: Option<String>,
    /// The run's folded state; shared with the app callbacks it is handed to.
    pub state: Rc<RunState>,
    /// Replay start the first subscriber asked for (`since` option).
    pub initial_since: Option<u64>,
    /// The last token the run's own provider gave, sent with every `subscribe` until the relay
    /// refuses it.
    pub token: Option<String>,
    /// The request to the run's own provider still unanswered.
    pub token_req: Option<u32>,
    /// Refused since the last `subscribed`, and a fresh token was asked for: another refusal ends
    /// the subscription.
    pub retried: bool,
    /// Client time (ms) at which to ask the run's own provider for a fresh token, before the one
    /// the relay accepted expires (`expires_at` of `subscribed`/`reset`). Only while live.
    pub refresh_at: Option<f64>,
    /// The relay ended the subscription because its token expired, and a fresh one was asked
    /// for: without one, the subscription ends with `token_expired`.
    pub expired: bool,
}

impl RunSub {
    /// The app subscription whose token provider covers this run, if any has its own.
    pub fn token_provider(&self) -> Option<SubId> {
        self.listeners.iter().find(|l| l.own_token).map(|l| l.id)
    }

    /// Classifies an incoming event's seq.
    pub fn check(&self, seq: u64) -> Check {
        match self.last_seq {
            None => Check::NotReady,
            Some(last) if seq <= last => Check::Duplicate,
            Some(last) if seq == last + 1 => Check::InOrder,
            Some(_) => Check::Gap,
        }
    }

    /// The `since` and `epoch` of the next `subscribe` for this run: resume where delivery
    /// stopped, or start where the app asked.
    pub fn resume_point(&self) -> (Option<u64>, Option<String>) {
        match self.last_seq {
            Some(seq) => (Some(seq), self.epoch.clone()),
            None => (self.initial_since, None),
        }
    }

    /// Applies a `subscribed` frame. Returns whether the app should see the state as a fresh
    /// snapshot (first subscribe), as opposed to a resume that keeps the state it has.
    pub fn on_subscribed(&mut self, head: u64, snapshot: RunState, epoch: String) -> bool {
        self.phase = Phase::Live;
        self.retried = false;
        self.expired = false;
        self.epoch = Some(epoch);
        if self.last_seq.is_some() {
            // A resume: the replay that follows carries on from our own state.
            return false;
        }
        match self.initial_since {
            // A full replay follows: fold it from the start.
            Some(0) => {
                self.state = Rc::default();
                self.last_seq = Some(0);
            }
            // A partial replay follows: the app gets those events, the state is the head's.
            Some(since) => {
                self.state = Rc::new(snapshot);
                self.last_seq = Some(since.min(head));
            }
            None => {
                self.state = Rc::new(snapshot);
                self.last_seq = Some(head);
            }
        }
        true
    }

    /// Applies a `reset` frame: the state and position are replaced.
    pub fn on_reset(&mut self, seq: u64, state: RunState, epoch: String) {
        self.phase = Phase::Live;
        self.retried = false;
        self.expired = false;
        self.epoch = Some(epoch);
        self.state = Rc::new(state);
        self.last_seq = Some(seq);
    }
}

/// What removing an app subscription left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// The run it listened to.
    pub run: String,
    /// Whether it was the run's last listener (the run is no longer followed).
    pub run_dropped: bool,
    /// The run's wire phase before the removal.
    pub phase: Phase,
}

/// Every run the client follows. Kept as a vector: a client follows a handful of runs, and a
/// linear scan beats hashing for that.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    runs: Vec<RunSub>,
}

impl Registry {
    /// Whether nothing is followed.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Runs followed.
    pub fn runs(&self) -> &[RunSub] {
        &self.runs
    }

    /// Runs followed, mutably.
    pub fn runs_mut(&mut self) -> &mut [RunSub] {
        &mut self.runs
    }

    /// The run `run`, if followed.
    pub fn run_mut(&mut self, run: &str) -> Option<&mut RunSub> {
        self.runs.iter_mut().find(|r| r.run == run)
    }

    /// The run app subscription `id` listens to.
    pub fn run_of(&self, id: SubId) -> Option<&RunSub> {
        self.runs
            .iter()
            .find(|r| r.listeners.iter().any(|l| l.id == id))
    }

    /// Adds app subscription `listener` to `run`. Returns `true` when the run was not followed
    /// before (a wire `subscribe` is needed).
    pub fn add(&mut self, run: &str, listener: Listener, since: Option<u64>) -> bool {
        if let Some(r) = self.run_mut(run) {
            r.listeners.push(listener);
            return false;
        }
        self.runs.push(RunSub {
            run: run.to_owned(),
            listeners: vec![listener],
            phase: Phase::Idle,
            last_seq: None,
            epoch: None,
            state: Rc::default(),
            initial_since: since,
            token: None,
            token_req: None,
            retried: false,
            refresh_at: None,
            expired: false,
        });
        true
    }

    /// Removes app subscription `id`.
    pub fn remove(&mut self, id: SubId) -> Option<Removed> {
        let i = self
            .runs
            .iter()
            .position(|r| r.listeners.iter().any(|l| l.id == id))?;
        let r = &mut self.runs[i];
        r.listeners.retain(|l| l.id != id);
        let removed = Removed {
            run: r.run.clone(),
            run_dropped: r.listeners.is_empty(),
            phase: r.phase,
        };
        if removed.run_dropped {
            self.runs.remove(i);
        }
        Some(removed)
    }

    /// Stops following `run`; returns its listeners.
    pub fn drop_run(&mut self, run: &str) -> Vec<Listener> {
        match self.runs.iter().position(|r| r.run == run) {
            Some(i) => self.runs.remove(i).listeners,
            None => Vec::new(),
        }
    }

    /// Stops following every run; returns every listener.
    pub fn drain(&mut self) -> Vec<Listener> {
        self.runs.drain(..).flat_map(|r| r.listeners).collect()
    }

    /// The connection dropped: every run must be asked for again.
    pub fn disconnected(&mut self) {
        for r in &mut self.runs {
            r.phase = Phase::Idle;
            r.refresh_at = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(id: SubId) -> Listener {
        Listener {
            id,
            wants_state: true,
            own_token: false,
        }
    }

    #[test]
    fn checks_seq_order() {
        let mut reg = Registry::default();
        assert!(reg.add("r", l(1), None));
        let r = reg.run_mut("r").unwrap();
        assert_eq!(r.check(1), Check::NotReady);
        assert!(r.on_subscribed(5, RunState::default(), "e".into()));
        assert_eq!(r.check(5), Check::Duplicate);
        assert_eq!(r.check(3), Check::Duplicate);
        assert_eq!(r.check(6), Check::InOrder);
        assert_eq!(r.check(7), Check::Gap);
        assert_eq!(r.resume_point(), (Some(5), Some("e".into())));
    }

    #[test]
    fn resume_keeps_own_state() {
        let mut reg = Registry::default();
        reg.add("r", l(1), None);
        let r = reg.run_mut("r").unwrap();
        let snap = RunState {
            seq: 3,
            ..RunState::default()
        };
        assert!(r.on_subscribed(3, snap.clone(), "e1".into()));
        assert_eq!(r.state.seq, 3);
        let newer = RunState {
            seq: 9,
            ..RunState::default()
        };
        assert!(!r.on_subscribed(9, newer, "e1".into()));
        assert_eq!(
            r.state.seq, 3,
            "a resume folds the replay onto the state it has"
        );
        assert_eq!(r.last_seq, Some(3));
    }

    #[test]
    fn since_zero_folds_from_scratch_and_since_n_starts_there() {
        let mut reg = Registry::default();
        reg.add("a", l(1), Some(0));
        reg.add("b", l(2), Some(4));
        let snap = RunState {
            seq: 10,
            ..RunState::default()
        };
        let a = reg.run_mut("a").unwrap();
        assert_eq!(a.resume_point(), (Some(0), None));
        a.on_subscribed(10, snap.clone(), "e".into());
        assert_eq!((a.last_seq, a.state.seq), (Some(0), 0));
        let b = reg.run_mut("b").unwrap();
        b.on_subscribed(10, snap, "e".into());
        assert_eq!((b.last_seq, b.state.seq), (Some(4), 10));
        assert_eq!(b.check(5), Check::InOrder);
    }

    #[test]
    fn reset_replaces_position_and_state() {
        let mut reg = Registry::default();
        reg.add("r", l(1), None);
        let r = reg.run_mut("r").unwrap();
        r.on_subscribed(50, RunState::default(), "e1".into());
        let s = RunState {
            seq: 2,
            ..RunState::default()
        };
        r.on_reset(2, s, "e2".into());
        assert_eq!(r.last_seq, Some(2));
        assert_eq!(r.epoch.as_deref(), Some("e2"));
        assert_eq!(r.check(3), Check::InOrder);
    }

    #[test]
    fn listeners_share_a_run() {
        let mut reg = Registry::default();
        assert!(reg.add("r", l(1), None));
        assert!(!reg.add("r", l(2), None));
        assert!(reg.add("s", l(3), None));
        assert_eq!(reg.run_of(2).unwrap().run, "r");
        let rm = reg.remove(1).unwrap();
        assert!(!rm.run_dropped);
        let rm = reg.remove(2).unwrap();
        assert!(rm.run_dropped);
        assert_eq!(rm.run, "r");
        assert!(reg.remove(2).is_none());
        assert_eq!(reg.drain().len(), 1);
        assert!(reg.is_empty());
    }
}
