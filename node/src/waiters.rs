//! FIFO queues of blocking acquires (`wait_ms`), kept on the leader only.
//!
//! Only the head of a key's queue proposes; the others wait their turn, so
//! the lock goes to waiters in arrival order without a burst of competing
//! writes each time it frees up. A waiter that gives up or disconnects leaves
//! the queue when its [`Ticket`] drops.
//!
//! Each waiter has its own [`Notify`], and only the waiters that act on a
//! change are woken: a change of the key ([`Waiters::wake`], driven by
//! `Node::wake_waiters` after applies) wakes the head of its queue and the
//! waiters whose own time ran out ([`Ticket::watch_key`]); a waiter leaving
//! the head wakes the next one. The others sleep until their turn or their
//! deadline, so draining a queue of n waiters costs O(n) wake-ups, not
//! O(n * n), and a write to one key wakes nobody waiting on another.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

struct Entry {
    id: u64,
    notify: Arc<Notify>,
    /// Out of time behind others: wants every change of the key, to answer
    /// with the holder as soon as the head's grant lands.
    watches_key: bool,
}

#[derive(Default)]
struct Queue {
    entries: VecDeque<Entry>,
    /// How many entries watch the key: with none (the usual case) a change
    /// wakes the head without walking the queue.
    watching: usize,
}

/// Blocking acquires in line, one FIFO queue per key, so waiters are granted
/// in arrival order and a release wakes only its key's head.
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

    /// Joins the end of `key`'s queue.
    pub fn enqueue(&self, key: &str) -> Ticket<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let notify = Arc::new(Notify::new());
        self.queues()
            .entry(key.to_string())
            .or_default()
            .entries
            .push_back(Entry {
                id,
                notify: notify.clone(),
                watches_key: false,
            });
        Ticket {
            waiters: self,
            key: key.to_string(),
            id,
            notify,
        }
    }

    /// Total waiters across keys, for metrics.
    /// Waiters in all queues.
    pub fn len(&self) -> usize {
        self.queues().values().map(|q| q.entries.len()).sum()
    }

    /// Whether no one waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys that have waiters now.
    pub fn keys(&self) -> Vec<String> {
        self.queues().keys().cloned().collect()
    }

    /// `key` changed: wakes the head of its queue and the waiters watching
    /// the key (see [`Ticket::watch_key`]); the others cannot act on it.
    pub fn wake(&self, key: &str) {
        let queues = self.queues();
        let Some(q) = queues.get(key) else { return };
        if let Some(head) = q.entries.front() {
            head.notify.notify_waiters();
        }
        if q.watching > 0 {
            for e in q.entries.iter().skip(1).filter(|e| e.watches_key) {
                e.notify.notify_waiters();
            }
        }
    }
}

impl Ticket<'_> {
    /// Whether this waiter is first in its key's queue: only the head tries
    /// to acquire, so later waiters cannot overtake it.
    pub fn is_head(&self) -> bool {
        self.waiters
            .queues()
            .get(&self.key)
            .and_then(|q| q.entries.front())
            .map(|e| e.id)
            == Some(self.id)
    }

    /// From now on, every change of the key wakes this waiter, not only
    /// when it is the head (for a waiter whose time ran out behind others).
    pub fn watch_key(&self) {
        if let Some(q) = self.waiters.queues().get_mut(&self.key) {
            if let Some(e) = q.entries.iter_mut().find(|e| e.id == self.id) {
                if !e.watches_key {
                    e.watches_key = true;
                    q.watching += 1;
                }
            }
        }
    }

    /// A future that completes when this waiter should look again: it became
    /// the head, or (as the head, or watching) its key changed. Create it
    /// before looking at the state, so a change in between is not missed.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut queues = self.waiters.queues();
        if let Some(q) = queues.get_mut(&self.key) {
            let was_head = q.entries.front().is_some_and(|e| e.id == self.id);
            if let Some(at) = q.entries.iter().position(|e| e.id == self.id) {
                if q.entries.remove(at).is_some_and(|e| e.watches_key) {
                    q.watching -= 1;
                }
            }
            match q.entries.front() {
                // The next in line: its turn now.
                Some(next) if was_head => next.notify.notify_waiters(),
                Some(_) => {}
                None => {
                    queues.remove(&self.key);
                }
            }
        }
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
    async fn a_change_wakes_the_head_and_watchers_and_a_move_wakes_the_next() {
        let w = Waiters::default();
        let (head, second, third) = (w.enqueue("k"), w.enqueue("k"), w.enqueue("k"));
        third.watch_key();
        let short = std::time::Duration::from_millis(50);
        let (h, s, t) = (head.changed(), second.changed(), third.changed());
        w.wake("k");
        assert!(
            tokio::time::timeout(short, h).await.is_ok(),
            "head not woken"
        );
        assert!(
            tokio::time::timeout(short, t).await.is_ok(),
            "watcher not woken"
        );
        assert!(
            tokio::time::timeout(short, s).await.is_err(),
            "a waiter behind the head was woken by a change it cannot act on"
        );
        let (s, t) = (second.changed(), third.changed());
        drop(head);
        assert!(second.is_head());
        assert!(
            tokio::time::timeout(short, s).await.is_ok(),
            "new head not woken"
        );
        assert!(
            tokio::time::timeout(short, t).await.is_err(),
            "third woken by a move"
        );
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
