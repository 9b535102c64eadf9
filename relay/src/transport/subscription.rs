//! One subscription's position in a run, and the rules that make delivery exactly-once and in
//! order whatever the transport: snapshot first, then live events deduplicated by seq; a gap or an
//! epoch change means "take a fresh snapshot from where you are".
//!
//! Logic only: the transports own the writes, and the broker calls but for the snapshot of a
//! resync ([`Subscription::resync`]), which every transport takes the same way.

use std::collections::HashMap;
use std::sync::Arc;

use runwire_protocol::{EndReason, RunStatus, ServerFrame};

use crate::broker::{Broker, BrokerError, Replay, Snapshot};
use crate::event::{Event, RunId};

/// What a subscription should send next.
#[derive(Debug)]
pub enum Emit {
    /// `subscribed` or `reset`.
    Control(Box<ServerFrame>),
    /// An event frame (replayed or live).
    Event(Arc<Event>),
    /// The run ended: send `unsubscribed` with this reason and drop the subscription.
    End(EndReason),
}

/// The live event cannot be sent in order: take a snapshot from [`Subscription::last_seq`] and pass it
/// to [`Subscription::on_snapshot`].
#[derive(Debug, PartialEq, Eq)]
pub struct NeedsResync;

/// Whether a client's `since` (given with `client_epoch`) counts in `epoch`. An absent or empty
/// epoch matches any: a client that subscribed before its run's first event was given an empty
/// one when its broker creates the epoch with that event (the Redis broker writes nothing for a
/// read), and the epoch of the events it then received was never sent to it.
pub fn same_epoch(client_epoch: Option<&str>, epoch: &str) -> bool {
    client_epoch.is_none_or(|e| e.is_empty() || e == epoch)
}

/// A subscription's position.
#[derive(Debug, Clone, Default)]
pub struct Subscription {
    epoch: Arc<str>,
    last_seq: u64,
    ended: bool,
}

impl Subscription {
    /// The seq of the last event sent (or covered by a snapshot).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Applies a snapshot taken with `since`, the client's resume point (`None` for a plain
    /// subscribe), and `client_epoch`, the epoch the client's `since` belongs to. `ack` says the
    /// client is waiting for `subscribed`; a resync sends only what changed.
    pub fn on_snapshot(
        &mut self,
        run: &RunId,
        snapshot: Snapshot,
        since: Option<u64>,
        client_epoch: Option<&str>,
        ack: bool,
        out: &mut Vec<Emit>,
    ) {
        let Snapshot {
            epoch,
            head,
            state,
            replay,
        } = snapshot;
        let since_seq = since.unwrap_or(0);
        // Seqs are comparable only within one epoch; a client that has seen nothing (since 0)
        // cannot be confused by a new one.
        let epoch_changed = since_seq > 0 && !same_epoch(client_epoch, &epoch);
        let reset = epoch_changed || matches!(replay, Replay::Gap);
        if reset {
            out.push(Emit::Control(Box::new(ServerFrame::Reset {
                run: run.to_string(),
                seq: head,
                state: (*state).clone(),
                epoch: epoch.to_string(),
                expires_at: None,
            })));
        } else {
            if ack {
                out.push(Emit::Control(Box::new(ServerFrame::Subscribed {
                    run: run.to_string(),
                    seq: head,
                    state: (*state).clone(),
                    epoch: epoch.to_string(),
                    expires_at: None,
                })));
            }
            if let Replay::Events(events) = replay {
                out.extend(
                    events
                        .into_iter()
                        .filter(|ev| ev.seq > since_seq && ev.seq <= head)
                        .map(Emit::Event),
                );
            }
        }
        self.epoch = epoch;
        self.last_seq = head;
        let reason = match state.status {
            RunStatus::Completed => Some(EndReason::Completed),
            RunStatus::Failed => Some(EndReason::Failed),
            RunStatus::Cancelled => Some(EndReason::Cancelled),
            RunStatus::Pending | RunStatus::Running => None,
        };
        if let Some(reason) = reason {
            self.ended = true;
            out.push(Emit::End(reason));
        }
    }

    /// The resync that [`NeedsResync`] asks for: the client already holds everything up to
    /// `last_seq` in the current epoch.
    pub fn resync_point(&self) -> (Option<u64>, Option<&str>) {
        (Some(self.last_seq), Some(&self.epoch))
    }

    /// Takes the snapshot that a [`NeedsResync`] (or the hub's `Resync`) asks for and applies it:
    /// only what changed goes to `out`. When the broker cannot answer, the subscription stays
    /// where it is; the broker resyncs every subscription again once it is back.
    pub async fn resync(
        &mut self,
        broker: &dyn Broker,
        run: &RunId,
        out: &mut Vec<Emit>,
    ) -> Result<(), BrokerError> {
        let (since, epoch) = self.resync_point();
        let epoch = epoch.map(str::to_owned);
        let snapshot = broker.snapshot(run.clone(), since).await?;
        self.on_snapshot(run, snapshot, since, epoch.as_deref(), false, out);
        Ok(())
    }

    /// How many of `events` (consecutive events of the run), from the first, are simply the next
    /// ones to send: in this epoch, each one seq above the one before, none ending the run. What
    /// [`Subscription::on_event`] would send as they are, without a check of its own; anything
    /// else goes through it.
    pub fn in_order(&self, events: &[Arc<Event>]) -> usize {
        if self.ended {
            return 0;
        }
        let mut next = self.last_seq + 1;
        events
            .iter()
            .take_while(|ev| {
                let fits = ev.seq == next && !ev.terminal && ev.epoch == self.epoch;
                next += 1;
                fits
            })
            .count()
    }

    /// `ev`, the last of the events [`Subscription::in_order`] counted, was sent with the ones
    /// before it.
    pub fn sent(&mut self, ev: &Event) {
        self.last_seq = ev.seq;
    }

    /// A live event from the hub.
    pub fn on_event(&mut self, ev: &Arc<Event>, out: &mut Vec<Emit>) -> Result<(), NeedsResync> {
        if self.ended {
            return Ok(());
        }
        if ev.epoch != self.epoch {
            if self.last_seq > 0 || ev.seq != 1 {
                return Err(NeedsResync);
            }
            self.epoch = ev.epoch.clone();
        }
        if ev.seq <= self.last_seq {
            return Ok(()); // already sent, by the replay or a racing snapshot
        }
        if ev.seq > self.last_seq + 1 {
            return Err(NeedsResync);
        }
        self.last_seq = ev.seq;
        out.push(Emit::Event(ev.clone()));
        if ev.terminal {
            self.ended = true;
            let reason = EndReason::for_terminal_event(&ev.name).unwrap_or(EndReason::Completed);
            out.push(Emit::End(reason));
        }
        Ok(())
    }
}

/// A connection's subscriptions by run.
///
/// Most connections follow one run, so one subscription is held inline: a hash table for it
/// would cost its own allocation (over 200 bytes) on every such connection, and a hash per live
/// event. More go to a `HashMap` (bounded by `--max-subscriptions`).
#[derive(Debug, Default)]
pub enum Subscriptions {
    /// None.
    #[default]
    Empty,
    /// Exactly one.
    One(RunId, Subscription),
    /// Any number.
    Many(HashMap<RunId, Subscription>),
}

impl Subscriptions {
    /// How many.
    pub fn len(&self) -> usize {
        match self {
            Self::Empty => 0,
            Self::One(..) => 1,
            Self::Many(map) => map.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The run's subscription and the run's id as stored.
    pub fn get_key_value(&self, run: &str) -> Option<(&RunId, &Subscription)> {
        match self {
            Self::One(key, sub) if **key == *run => Some((key, sub)),
            Self::Many(map) => map.get_key_value(run),
            _ => None,
        }
    }

    /// The run's subscription.
    pub fn get(&self, run: &str) -> Option<&Subscription> {
        self.get_key_value(run).map(|(_, sub)| sub)
    }

    /// The run's subscription, to change.
    pub fn get_mut(&mut self, run: &str) -> Option<&mut Subscription> {
        match self {
            Self::One(key, sub) if **key == *run => Some(sub),
            Self::Many(map) => map.get_mut(run),
            _ => None,
        }
    }

    /// Sets the run's subscription, replacing the one it had.
    pub fn insert(&mut self, run: RunId, sub: Subscription) {
        match self {
            Self::Empty => *self = Self::One(run, sub),
            Self::One(key, old) if *key == run => *old = sub,
            Self::One(..) => {
                let Self::One(key, old) = std::mem::take(self) else {
                    unreachable!("matched above");
                };
                *self = Self::Many(HashMap::from([(key, old), (run, sub)]));
            }
            Self::Many(map) => {
                map.insert(run, sub);
            }
        }
    }

    /// Removes the run's subscription, returning it with the run's id as stored.
    pub fn remove_entry(&mut self, run: &str) -> Option<(RunId, Subscription)> {
        match self {
            Self::One(key, _) if **key == *run => match std::mem::take(self) {
                Self::One(key, sub) => Some((key, sub)),
                _ => unreachable!("matched above"),
            },
            Self::Many(map) => map.remove_entry(run),
            _ => None,
        }
    }

    /// Removes the run's subscription.
    pub fn remove(&mut self, run: &str) -> Option<Subscription> {
        self.remove_entry(run).map(|(_, sub)| sub)
    }

    /// The runs.
    pub fn keys(&self) -> impl Iterator<Item = &RunId> {
        let (one, many) = match self {
            Self::Empty => (None, None),
            Self::One(key, _) => (Some(key), None),
            Self::Many(map) => (None, Some(map.keys())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{NewEvent, now_ts};
    use runwire_protocol::RunState;
    use serde_json::json;

    fn ev(epoch: &str, seq: u64, name: &str) -> Arc<Event> {
        let data = json!({"level":"info","message":"m","error":"e"});
        let ne = NewEvent::parse(name, data).unwrap();
        Arc::new(Event::encode("r".into(), epoch.into(), seq, now_ts(), &ne))
    }

    fn snap(epoch: &str, head: u64, replay: Replay) -> Snapshot {
        Snapshot {
            epoch: epoch.into(),
            head,
            state: Arc::new(RunState {
                seq: head,
                ..RunState::default()
            }),
            replay,
        }
    }

    /// A subscription of run `r` after its first snapshot, and what it emitted.
    fn subscribed(
        snapshot: Snapshot,
        since: Option<u64>,
        epoch: Option<&str>,
    ) -> (Subscription, Vec<Emit>) {
        let mut f = Subscription::default();
        let mut out = Vec::new();
        f.on_snapshot(&"r".into(), snapshot, since, epoch, true, &mut out);
        (f, out)
    }

    fn control(e: &Emit) -> Option<&ServerFrame> {
        match e {
            Emit::Control(f) => Some(f),
            _ => None,
        }
    }

    fn seqs(out: &[Emit]) -> Vec<u64> {
        out.iter()
            .filter_map(|e| match e {
                Emit::Event(ev) => Some(ev.seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn replays_then_dedups_live_events() {
        let replay = Replay::Events(vec![ev("e", 3, "log"), ev("e", 4, "log")]);
        let (mut f, mut out) = subscribed(snap("e", 4, replay), Some(2), Some("e"));
        assert!(matches!(
            control(&out[0]),
            Some(ServerFrame::Subscribed { seq: 4, .. })
        ));
        assert_eq!(seqs(&out), [3, 4]);
        out.clear();
        // live events that raced with the snapshot
        for s in [3, 4, 5, 5, 6] {
            f.on_event(&ev("e", s, "log"), &mut out).unwrap();
        }
        assert_eq!(seqs(&out), [5, 6]);
        assert_eq!(f.last_seq(), 6);
    }

    #[test]
    fn a_gap_or_another_epoch_needs_a_resync() {
        let run: RunId = "r".into();
        let (mut f, mut out) = subscribed(snap("e", 2, Replay::NotAsked), None, None);
        assert_eq!(f.on_event(&ev("e", 4, "log"), &mut out), Err(NeedsResync));
        assert_eq!(f.on_event(&ev("x", 3, "log"), &mut out), Err(NeedsResync));
        assert_eq!(f.resync_point(), (Some(2), Some("e")));
        out.clear();
        // the resync finds the history gone: reset, then carry on from the new head
        f.on_snapshot(
            &run,
            snap("x", 9, Replay::Gap),
            Some(2),
            Some("e"),
            false,
            &mut out,
        );
        assert!(matches!(
            control(&out[0]),
            Some(ServerFrame::Reset { seq: 9, .. })
        ));
        assert_eq!(out.len(), 1);
        f.on_event(&ev("x", 10, "log"), &mut out).unwrap();
        assert_eq!(seqs(&out), [10]);
    }

    #[test]
    fn an_empty_subscription_adopts_a_new_epoch() {
        let (mut f, mut out) = subscribed(snap("boot", 0, Replay::NotAsked), None, None);
        f.on_event(&ev("run-1", 1, "log"), &mut out).unwrap();
        assert_eq!(seqs(&out), [1]);
    }

    #[test]
    fn resume_from_another_epoch_resets() {
        let replay = Replay::Events(vec![ev("new", 1, "log")]);
        let (_, out) = subscribed(snap("new", 1, replay), Some(5), Some("old"));
        assert!(matches!(control(&out[0]), Some(ServerFrame::Reset { .. })));
        assert!(seqs(&out).is_empty());
        // since 0 replays from the start whatever the epoch
        let replay = Replay::Events(vec![ev("new", 1, "log")]);
        let (_, out) = subscribed(snap("new", 1, replay), Some(0), Some("old"));
        assert!(matches!(
            control(&out[0]),
            Some(ServerFrame::Subscribed { .. })
        ));
        assert_eq!(seqs(&out), [1]);
    }

    #[test]
    fn an_empty_epoch_from_before_the_first_event_resumes_in_any_epoch() {
        // Subscribed before the run existed: no epoch; the events came under "x".
        let replay = Replay::Events(vec![ev("x", 3, "log"), ev("x", 4, "log")]);
        let (_, out) = subscribed(snap("x", 4, replay), Some(2), Some(""));
        assert!(matches!(
            control(&out[0]),
            Some(ServerFrame::Subscribed { .. })
        ));
        assert_eq!(seqs(&out), [3, 4]);
        assert!(same_epoch(None, "x") && same_epoch(Some(""), "x"));
        assert!(same_epoch(Some("x"), "x") && !same_epoch(Some("y"), "x"));
    }

    #[test]
    fn in_order_counts_what_on_event_would_send_as_is() {
        let (mut f, mut out) = subscribed(snap("e", 2, Replay::NotAsked), None, None);
        let batch = [
            ev("e", 3, "log"),
            ev("e", 4, "log"),
            ev("e", 5, "run.completed"),
        ];
        // The terminal event is left to `on_event`, which ends the subscription.
        assert_eq!(f.in_order(&batch), 2);
        // Already sent, a gap, another epoch: none.
        assert_eq!(f.in_order(&[ev("e", 2, "log")]), 0);
        assert_eq!(f.in_order(&[ev("e", 4, "log")]), 0);
        assert_eq!(f.in_order(&[ev("x", 3, "log")]), 0);
        assert_eq!(f.in_order(&[ev("e", 3, "log"), ev("e", 5, "log")]), 1);
        f.sent(&batch[1]);
        assert_eq!(f.last_seq(), 4);
        // What follows is checked as before.
        f.on_event(&batch[2], &mut out).unwrap();
        assert!(matches!(out.last(), Some(Emit::End(EndReason::Completed))));
        assert_eq!(f.in_order(&[ev("e", 6, "log")]), 0);
    }

    #[test]
    fn one_subscription_inline_more_in_a_map() {
        let mut subs = Subscriptions::default();
        assert!(subs.is_empty() && subs.get("a").is_none());
        subs.insert("a".into(), Subscription::default());
        assert!(matches!(subs, Subscriptions::One(..)));
        subs.get_mut("a").unwrap().sent(&ev("e", 1, "log"));
        assert_eq!(subs.get("a").unwrap().last_seq(), 1);
        // Replaced in place.
        subs.insert("a".into(), Subscription::default());
        assert_eq!((subs.len(), subs.get("a").unwrap().last_seq()), (1, 0));
        subs.insert("b".into(), Subscription::default());
        assert!(matches!(subs, Subscriptions::Many(_)));
        let mut runs: Vec<&str> = subs.keys().map(|run| &**run).collect();
        runs.sort_unstable();
        assert_eq!(runs, ["a", "b"]);
        assert_eq!(subs.remove_entry("a").map(|(run, _)| run), Some("a".into()));
        assert!(subs.remove("a").is_none() && subs.get_key_value("b").is_some());
        assert_eq!(subs.len(), 1);
        let mut one = Subscriptions::default();
        one.insert("x".into(), Subscription::default());
        assert!(one.remove("y").is_none());
        assert!(one.remove("x").is_some() && one.is_empty() && one.keys().next().is_none());
    }

    #[test]
    fn ends_after_the_terminal_event() {
        let (mut f, mut out) = subscribed(snap("e", 0, Replay::NotAsked), None, None);
        out.clear();
        f.on_event(&ev("e", 1, "run.failed"), &mut out).unwrap();
        assert!(matches!(out.last(), Some(Emit::End(EndReason::Failed))));
        out.clear();
        f.on_event(&ev("e", 2, "log"), &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn a_finished_run_ends_after_its_replay() {
        let run: RunId = "r".into();
        let mut s = snap(
            "e",
            2,
            Replay::Events(vec![ev("e", 1, "log"), ev("e", 2, "run.completed")]),
        );
        Arc::make_mut(&mut s.state).status = RunStatus::Completed;
        let mut out = Vec::new();
        Subscription::default().on_snapshot(&run, s, Some(0), None, true, &mut out);
        assert_eq!(seqs(&out), [1, 2]);
        assert!(matches!(out.last(), Some(Emit::End(EndReason::Completed))));
    }
}
