//! FIFO queues of blocking acquires (`wait_ms`), kept on the leader only.
//!
//! Only the head of a key's queue proposes; the others wait their turn, so
//! the lock goes to waiters in arrival order without a burst of competing
//! writes each time it frees up. A waiter that gives up or disconnects leaves
//! the queue when its [`Ticket`] drops.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;

#[derive(Default)]
pub struct Waiters {
    queues: Mutex<HashMap<String, VecDeque<u64>>>,
    next_id: AtomicU64,
    /// Fires whenever any queue changes, so the new head can go.
    changed: Notify,
}

/// A place in a key's queue; dropping it leaves the queue.
pub struct Ticket<'a> {
    waiters: &'a Waiters,
    key: String,
    id: u64,
}

impl Waiters {
    fn queues(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<u64>>> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn enqueue(&self, key: &str) -> Ticket<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.queues()
            .entry(key.to_string())
            .or_default()
            .push_back(id);
        Ticket {
            waiters: self,
            key: key.to_string(),
            id,
        }
    }

    /// Total waiters across keys, for metrics.
    pub fn len(&self) -> usize {
        self.queues().values().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A future that completes at the next queue change.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }
}

impl Ticket<'_> {
    pub fn is_head(&self) -> bool {
        self.waiters.queues().get(&self.key).and_then(|q| q.front()) == Some(&self.id)
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut queues = self.waiters.queues();
        if let Some(q) = queues.get_mut(&self.key) {
            q.retain(|id| *id != self.id);
            if q.is_empty() {
                queues.remove(&self.key);
            }
        }
        drop(queues);
        self.waiters.changed.notify_waiters();
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
}
