//! The head check: a net under Pub/Sub, which keeps nothing. A `PUBLISH` can be lost after its
//! events were appended and acknowledged — on a Redis Cluster, say, a restarted node forwards
//! messages to the other nodes only once its cluster-bus links are back up, and a Pub/Sub
//! connection to a node whose links are down hears nothing from the rest. A subscription notices
//! a lost event when the next one arrives (a gap), but nothing tells it about the last events of
//! a run, or a run that goes quiet.
//!
//! So, for every run with a local subscription, the relay remembers the newest seq (and its
//! epoch) that arrived live, and every `head_check_interval` reads the run's head from Redis. A
//! run whose head was already ahead at the previous check and is still not reached now (an event
//! stored for a whole interval that never arrived live) gets
//! [`Hub::resync`](crate::hub::Hub::resync): its subscriptions catch up from their last seq
//! through a snapshot, and drop by seq whatever the Pub/Sub message brings should it come late.
//! Waiting one interval keeps events that are merely on their way from causing a resync.
//! Snapshots taken by subscriptions do not count as arrived: one subscription catching up says
//! nothing of the others on the run.
//!
//! A subscription whose catch-up failed (its snapshot timed out while a cluster node restarted,
//! say) has nothing to retry it: so a snapshot of a watched run that fails marks the run, and the
//! next check that can read the run's head resyncs it again.
//!
//! Cost: one `HMGET` per watched run per interval, on the command connection, a bounded number in
//! flight; nothing when no run is watched.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::StreamExt as _;
use tokio::sync::watch;

use super::{Shared, pause};
use crate::broker::RunId;
use crate::sync::lock;

/// Head reads in flight at once during a check.
const CHECK_CONCURRENCY: usize = 32;

/// A seq within an epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Position {
    pub epoch: Arc<str>,
    pub seq: u64,
}

/// A run that local subscriptions watch.
#[derive(Debug, Default)]
pub(super) struct Watched {
    /// How many local subscriptions watch it.
    pub subscriptions: usize,
    /// The newest position that arrived live, or that a resync of the head check caught up to.
    seen: Option<Position>,
    /// The run's head in Redis at the last check.
    checked: Option<Position>,
    /// A snapshot of the run failed since the last check: a subscription may be left behind.
    snapshot_failed: bool,
}

impl Watched {
    /// This relay handed its hub the run up to `seq` of `epoch`.
    pub fn saw(&mut self, epoch: &Arc<str>, seq: u64) {
        match &mut self.seen {
            Some(seen) if seen.epoch == *epoch => seen.seq = seen.seq.max(seq),
            _ => {
                self.seen = Some(Position {
                    epoch: epoch.clone(),
                    seq,
                });
            }
        }
    }

    /// Whether Redis at `head` holds events this relay has not handed its hub.
    fn behind(&self, head: &Position) -> bool {
        head.seq > 0
            && self
                .seen
                .as_ref()
                .is_none_or(|seen| seen.epoch != head.epoch || seen.seq < head.seq)
    }

    /// Records the head a check read (`None`: the run does not exist in Redis) and answers
    /// whether the run must resync: it was behind at the previous check and still is, or a
    /// snapshot of it failed since. A resync counts as having caught up to `head`.
    fn checked(&mut self, head: Option<Position>) -> bool {
        let lagging = self.checked.as_ref().is_some_and(|c| self.behind(c))
            && head.as_ref().is_some_and(|h| self.behind(h));
        let resync = lagging || std::mem::take(&mut self.snapshot_failed);
        if resync && let Some(head) = &head {
            self.saw(&head.epoch, head.seq);
        }
        self.checked = head;
        resync
    }
}

pub(super) async fn head_check_loop(shared: Arc<Shared>, mut stop: watch::Receiver<()>) {
    while pause(&mut stop, shared.config.head_check_interval).await {
        // While the Pub/Sub connection is down nothing arrives anyway, and reconnecting makes
        // every subscription catch up.
        if shared.pubsub_up.load(Ordering::Relaxed) {
            shared.check_heads().await;
        }
    }
}

impl Shared {
    /// Reads the head of every watched run and resyncs the runs found lagging.
    pub(super) async fn check_heads(&self) {
        let runs: Vec<RunId> = lock(&self.channels).keys().cloned().collect();
        let heads: Vec<(RunId, Option<Position>)> = futures_util::stream::iter(runs)
            .map(|run| async move {
                let mut conn = self.conn();
                let read = self
                    .call(
                        ::redis::cmd("HMGET")
                            .arg(self.meta_key(&run))
                            .arg("head")
                            .arg("epoch")
                            .query_async::<(Option<String>, Option<String>)>(&mut conn),
                    )
                    .await;
                (run, read)
            })
            .buffer_unordered(CHECK_CONCURRENCY)
            // A run whose head cannot be read now is checked next time.
            .filter_map(|(run, read)| async move {
                let (head, epoch) = read.ok()?;
                let head = match (head, epoch) {
                    (Some(seq), Some(epoch)) => Some(Position {
                        epoch: epoch.into(),
                        seq: seq.parse().ok()?,
                    }),
                    _ => None,
                };
                Some((run, head))
            })
            .collect()
            .await;
        let lagging: Vec<RunId> = {
            let mut channels = lock(&self.channels);
            heads
                .into_iter()
                .filter(|(run, head)| {
                    channels
                        .get_mut(run)
                        .is_some_and(|w| w.checked(head.clone()))
                })
                .map(|(run, _)| run)
                .collect()
        };
        for run in lagging {
            tracing::info!(
                run = &*run,
                "redis: a run's events did not arrive through Pub/Sub, or its catch-up failed; its \
                 subscriptions catch up"
            );
            self.stats.head_resyncs.fetch_add(1, Ordering::Relaxed);
            self.hub.resync(&run);
        }
    }

    /// Notes that `run` arrived live up to `seq` of `epoch`.
    pub(super) fn saw(&self, run: &str, epoch: &Arc<str>, seq: u64) {
        if let Some(w) = lock(&self.channels).get_mut(run) {
            w.saw(epoch, seq);
        }
    }

    /// Notes that a snapshot of `run` failed: the next check resyncs it.
    pub(super) fn snapshot_failed(&self, run: &str) {
        if let Some(w) = lock(&self.channels).get_mut(run) {
            w.snapshot_failed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: &str, seq: u64) -> Option<Position> {
        Some(Position {
            epoch: epoch.into(),
            seq,
        })
    }

    #[test]
    fn a_run_resyncs_only_when_an_event_stays_missing_for_a_whole_interval() {
        let mut w = Watched::default();
        // Nothing in Redis yet, nothing seen.
        assert!(!w.checked(None));
        assert!(!w.checked(None));
        w.saw(&"e".into(), 0);
        // An event appended but not yet delivered: not at once…
        assert!(!w.checked(at("e", 1)));
        // …it arrived meanwhile: nothing to do.
        w.saw(&"e".into(), 1);
        assert!(!w.checked(at("e", 2)));
        // seq 2 was there a whole interval ago and never came: resync, which catches up to 2.
        assert!(w.checked(at("e", 2)));
        assert!(!w.checked(at("e", 2)));
        assert!(!w.checked(at("e", 2)));
        // A stale read never lowers what was seen.
        w.saw(&"e".into(), 1);
        assert!(!w.checked(at("e", 2)));
    }

    #[test]
    fn a_failed_snapshot_resyncs_at_the_next_check_that_reads_the_head() {
        let mut w = Watched::default();
        w.saw(&"e".into(), 4);
        assert!(!w.checked(at("e", 4)));
        w.snapshot_failed = true;
        assert!(w.checked(at("e", 4)));
        assert!(!w.checked(at("e", 4)), "once");
    }

    #[test]
    fn another_epoch_in_redis_is_behind_until_seen() {
        let mut w = Watched::default();
        // A subscription before the run existed holds no epoch of it.
        w.saw(&"pending".into(), 0);
        assert!(!w.checked(at("x", 3)));
        assert!(w.checked(at("x", 3)));
        assert!(!w.checked(at("x", 3)));
        // The run was lost and started again under a new epoch.
        assert!(!w.checked(at("y", 1)));
        assert!(w.checked(at("y", 1)));
        // A run that is gone from Redis has nothing to catch up.
        assert!(!w.checked(None));
        assert!(!w.checked(None));
    }
}
