//! Background tasks that must keep running while their broker lives: a task that ends or panics
//! anyway is logged, counted and started again after a backoff, and while it is not running the
//! broker reports itself degraded (so `/ready` answers 503 and a load balancer stops routing
//! there).
//!
//! A task is told to stop through its `stop` receiver (its sender lives in the broker); a task that
//! ends after its sender is gone ended on purpose and is not restarted.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::sync::lock;

/// How the supervised tasks of one broker are doing.
#[derive(Debug, Default)]
pub struct Tasks {
    /// Tasks not running now (between an unexpected end and their restart), by name.
    down: Mutex<Vec<&'static str>>,
    /// Unexpected ends (returns and panics) so far.
    restarts: AtomicU64,
}

impl Tasks {
    /// How many supervised tasks are not running now.
    pub fn down(&self) -> u64 {
        lock(&self.down).len() as u64
    }

    /// Whether the task `name` is waiting to be restarted.
    pub fn is_down(&self, name: &str) -> bool {
        lock(&self.down).contains(&name)
    }

    /// How many times a supervised task ended unexpectedly and was restarted.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }
}

/// Runs `start()` as a task and starts it again whenever it ends (returns or panics) while `stop`'s
/// sender is alive, waiting `backoff.0`, doubling up to `backoff.1` (back to `backoff.0` after a
/// run that lasted longer than `backoff.1`). `down` is raised while it waits, so the broker can
/// tell that the duty `name` is not being done.
pub fn supervise<F, Fut>(
    name: &'static str,
    tasks: std::sync::Arc<Tasks>,
    mut stop: watch::Receiver<()>,
    backoff: (Duration, Duration),
    mut start: F,
) where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let (min, max) = backoff;
        let mut delay = min;
        loop {
            let started = Instant::now();
            let ended = tokio::spawn(start()).await;
            if stop.has_changed().is_err() {
                return; // the broker is gone: the task ended as asked
            }
            lock(&tasks.down).push(name);
            tasks.restarts.fetch_add(1, Ordering::Relaxed);
            match ended {
                Err(e) if e.is_panic() => {
                    let panic = e.into_panic();
                    let msg = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    tracing::error!(task = name, panic = msg, retry_in = ?delay, "background task panicked; restarting");
                }
                _ => {
                    tracing::error!(task = name, retry_in = ?delay, "background task ended; restarting")
                }
            }
            if started.elapsed() > max {
                delay = min;
            }
            let go_on = tokio::select! {
                changed = stop.changed() => changed.is_ok(),
                () = tokio::time::sleep(delay) => true,
            };
            {
                let mut down = lock(&tasks.down);
                if let Some(i) = down.iter().position(|n| *n == name) {
                    down.swap_remove(i);
                }
            }
            if !go_on || stop.has_changed().is_err() {
                return;
            }
            delay = (delay * 2).min(max);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_panics_or_ends_is_restarted_with_backoff_until_the_broker_is_gone() {
        let tasks = Arc::new(Tasks::default());
        let (stop_tx, stop) = watch::channel(());
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        let task_stop = stop.clone();
        supervise(
            "test",
            tasks.clone(),
            stop,
            (Duration::from_millis(100), Duration::from_millis(400)),
            move || {
                let n = counted.fetch_add(1, Ordering::Relaxed);
                let mut stop = task_stop.clone();
                async move {
                    match n {
                        0 => panic!("first run panics"),
                        1 => {} // second run just ends
                        _ => while stop.changed().await.is_ok() {},
                    }
                }
            },
        );
        settle().await;
        assert_eq!(runs.load(Ordering::Relaxed), 1);
        assert_eq!((tasks.down(), tasks.restarts()), (1, 1));
        assert!(tasks.is_down("test") && !tasks.is_down("other"));
        tokio::time::advance(Duration::from_millis(99)).await;
        settle().await;
        assert_eq!(runs.load(Ordering::Relaxed), 1, "waits out the backoff");
        tokio::time::advance(Duration::from_millis(1)).await;
        settle().await;
        // restarted, ended again: the second wait is twice as long
        assert_eq!(runs.load(Ordering::Relaxed), 2);
        assert_eq!((tasks.down(), tasks.restarts()), (1, 2));
        tokio::time::advance(Duration::from_millis(150)).await;
        settle().await;
        assert_eq!(runs.load(Ordering::Relaxed), 2);
        tokio::time::advance(Duration::from_millis(50)).await;
        settle().await;
        assert_eq!(runs.load(Ordering::Relaxed), 3);
        assert_eq!((tasks.down(), tasks.restarts()), (0, 2));
        // the broker goes away: the task ends as asked and is not restarted
        drop(stop_tx);
        settle().await;
        tokio::time::advance(Duration::from_secs(5)).await;
        settle().await;
        assert_eq!(runs.load(Ordering::Relaxed), 3);
        assert_eq!((tasks.down(), tasks.restarts()), (0, 2));
    }
}
