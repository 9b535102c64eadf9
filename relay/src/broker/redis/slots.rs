//! Per-workspace stream slots counted across relays: a sorted set of leases per workspace,
//! renewed while held, removed when released, lapsing when their relay died.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use tokio::sync::watch;

use super::{Shared, pause, ttl_ms};
use crate::broker::{BrokerError, Slot};
use crate::sync::lock;

impl Shared {
    pub(super) async fn stream_slot(
        self: Arc<Self>,
        workspace: Arc<str>,
        limit: usize,
    ) -> Result<Slot, BrokerError> {
        let id = self.counter.fetch_add(1, Ordering::Relaxed);
        let member = format!("{}:{id}", self.relay_id);
        let mut invocation = self.scripts.slot.prepare_invoke();
        invocation
            .key(self.streams_key(&workspace))
            .arg(&member)
            .arg(limit)
            .arg(ttl_ms(self.config.stream_lease));
        let mut conn = self.conn();
        // Registered before the call so that a slot taken just before a renewal is renewed too.
        lock(&self.slots).insert(id, workspace.clone());
        let taken: Result<i64, _> = self.call(invocation.invoke_async(&mut conn)).await;
        match taken {
            Ok(1) => Ok(Slot::new(SlotGuard {
                shared: Arc::downgrade(&self),
                id,
                workspace,
            })),
            other => {
                lock(&self.slots).remove(&id);
                match other {
                    Ok(_) => Err(BrokerError::LimitReached),
                    Err(e) => Err(e),
                }
            }
        }
    }

    fn streams_key(&self, workspace: &str) -> String {
        format!("{}:streams:{workspace}", self.config.key_prefix)
    }
}

struct SlotGuard {
    shared: Weak<Shared>,
    id: u64,
    workspace: Arc<str>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        lock(&shared.slots).remove(&self.id);
        // Free the slot now; if this fails the lease, no longer renewed, lapses by itself.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let key = shared.streams_key(&self.workspace);
            let member = format!("{}:{}", shared.relay_id, self.id);
            rt.spawn(async move {
                let mut conn = shared.conn();
                let _: Result<i64, _> = shared
                    .call(
                        ::redis::cmd("ZREM")
                            .arg(&key)
                            .arg(&member)
                            .query_async(&mut conn),
                    )
                    .await;
            });
        }
    }
}

/// Renews the leases of the stream slots this relay holds.
pub(super) async fn renew_loop(shared: Weak<Shared>, mut stop: watch::Receiver<()>) {
    loop {
        let Some(s) = shared.upgrade() else { return };
        let every = s.config.stream_lease / 3;
        let mut by_workspace: HashMap<Arc<str>, Vec<String>> = HashMap::new();
        for (id, ws) in lock(&s.slots).iter() {
            by_workspace
                .entry(ws.clone())
                .or_default()
                .push(format!("{}:{id}", s.relay_id));
        }
        for (ws, members) in by_workspace {
            let mut invocation = s.scripts.renew.prepare_invoke();
            invocation
                .key(s.streams_key(&ws))
                .arg(ttl_ms(s.config.stream_lease))
                .arg(members);
            let mut conn = s.conn();
            let _: Result<i64, _> = s.call(invocation.invoke_async(&mut conn)).await;
        }
        drop(s);
        if !pause(&mut stop, every).await {
            return;
        }
    }
}
