//! FIFO queues of blocking acquires (`wait_ms`), kept on the leader only.
//!
//! Only the head of a key's queue proposes; the others wait their turn, so
//! the lock goes to waiters in arrival order without a burst of competing
//! writes each time it frees up. A waiter that gives up or disconnects leaves
//! the queue when its [`Ticket`] drops.
//!
//! Each key has its own [`Notify`]: a waiter wakes only when its own key's
//! queue moves or its key changes ([`Waiters::wake_changed`], driven by
//! `Node::wake_waiters` after applies), never for writes to other keys.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Default)]
struct Queue {
    ids: VecDeque<u64>,
    notify: Arc<Notify>,
}

#[derive(Default)]
pub struct Waiters {
    queues: Mutex<HashMap<String, Queue>>,
    next_id: AtomicU64,
}

/// A place in a key's queue; dropping it leaves the queue.
pub struct Ticket<'a> {
    waiters: &'a Waiters,
    key: String,
    id: u64,
    notify: Arc<Notify>,
}

impl Waiters {
    fn queues(&self) -> std::sync::MutexGuard<'_, HashMap<String, Queue>> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn enqueue(&self, key: &str) -> Ticket<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut queues = self.queues();
        let q = queues.entry(key.to_string()).or_default();
        q.ids.push_back(id);
        Ticket {
            waiters: self,
            key: key.to_string(),
            id,
            notify: q.notify.clone(),
        }
    }

    /// Total waiters across keys, for metrics.
    pub fn len(&self) -> usize {
        self.queues().values().map(|q| q.ids.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys that have waiters now.
    pub fn keys(&self) -> Vec<String> {
        self.queues().keys().cloned().collect()
    }

    /// Wakes the waiters of `key` (if any) to look at it again.
    pub fn wake(&self, key: &str) {
        if let Some(q) = self.queues().get(key) {
            q.notify.notify_waiters();
        }
    }
}

impl Ticket<'_> {
    pub fn is_head(&self) -> bool {
        self.waiters
            .queues()
            .get(&self.key)
            .and_then(|q| q.ids.front())
            == Some(&self.id)
    }

    /// A future that completes at the next change of this key (its queue
    /// moved, or something applied changed its lock). Create it before
    /// looking at the state, so a change in between is not missed.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut queues = self.waiters.queues();
        if let Some(q) = queues.get_mut(&self.key) {
            q.ids.retain(|id| *id != self.id);
            if q.ids.is_empty() {
                queues.remove(&self.key);
            }
        }
        drop(queues);
        self.notify.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_in_arrival_order_and_leaving_promotes_the_next() {
        let w = Waiters::default();
        let a = w.enqueue("k");
        let b = w.enqueue("k");
        let other = w.enqueue("j");
        assert!(a.is_head() && !b.is_head() && other.is_head());
        assert_eq!(w.len(), 3);
        drop(a);
        assert!(b.is_head());
        drop(b);
        drop(other);
        assert!(w.is_empty());
    }

    #[tokio::test]
    async fn waking_a_key_wakes_only_its_waiters() {
        let w = Waiters::default();
        let k = w.enqueue("k");
        let j = w.enqueue("j");
        let (k_changed, j_changed) = (k.changed(), j.changed());
        w.wake("k");
        let woke = tokio::time::timeout(std::time::Duration::from_secs(1), k_changed).await;
        assert!(woke.is_ok(), "the waiter of k was not woken");
        let woke = tokio::time::timeout(std::time::Duration::from_millis(50), j_changed).await;
        assert!(woke.is_err(), "the waiter of j was woken by a change of k");
    }
}
