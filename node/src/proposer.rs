//! The leader's proposer: coalesces concurrent client ops into shared Raft
//! entries ([`Op::Batch`]).
//!
//! Every client write used to be an entry of its own, and the leader paid
//! per entry (openraft's channel hops, a log record, replication, an apply,
//! the task switches between them). One task per node takes client ops
//! from a bounded queue in rounds: the first op waiting, plus every op
//! already queued behind it (up to [`MAX_OPS`] ops and [`MAX_BYTES`]), is
//! proposed at once, and at most [`ROUNDS_IN_FLIGHT`] rounds are unanswered
//! at a time. So one client's op is proposed the moment it arrives (no
//! timer, no added wait), while under load the ops that arrive during a
//! round's commit wait in the queue and go together in the next one.
//!
//! A round is cut into entries:
//! * ops of different leader terms never share an entry (each is written
//!   with its own term, and refused by openraft if that term is over);
//! * at most one acquire per entry: a grant's fencing token is its entry's
//!   log index, and two grants must never share a token (tokens strictly
//!   increase across keys, docs/protocol.md "Fencing tokens"); the other
//!   acquires go in entries of their own;
//! * an entry of one op holds the bare op (single-client traffic is what it
//!   was), and while a peer cannot decode [`Op::Batch`] (`Node::may_batch`)
//!   every op goes alone.
//!
//! Callers keep their own `--write-timeout-ms`; an op whose caller gave up
//! before its round is not proposed. A failed or dropped entry fails each of
//! its ops with the error a lone entry would have had (`node::settle`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::core::{Op, Outcome};
use crate::node::{settle, LeaderTerm, Node, Unavailable};

/// Ops waiting for a round at most; a caller beyond waits for a place
/// (within its own write timeout).
const QUEUE: usize = 4096;
/// Ops in one round at most.
pub const MAX_OPS: usize = 256;
/// Encoded bytes of the ops of one entry at most (bounds an entry's size
/// however large the ops' free text is). 64 KiB: 256 benchmark-sized ops
/// fit, and a follower catching up receives many entries per request
/// (bounded in bytes by `LogStore::limited_get_log_entries`), each of
/// which must arrive within openraft's request timeout.
pub const MAX_BYTES: usize = 64 << 10;
/// Rounds proposed and not yet answered at most: what lets ops accumulate
/// while entries commit.
pub const ROUNDS_IN_FLIGHT: usize = 3;

type Reply = oneshot::Sender<Result<Outcome, Unavailable>>;

/// A client op waiting for its round.
struct Queued {
    term: LeaderTerm,
    op: Op,
    bytes: usize,
    reply: Reply,
}

/// The queue into the proposer task (one per node).
pub struct Proposer {
    tx: mpsc::Sender<Queued>,
    rx: Mutex<Option<mpsc::Receiver<Queued>>>,
}

impl Default for Proposer {
    fn default() -> Self {
        Self::new()
    }
}

impl Proposer {
    /// A queue whose task is not started yet ([`run`]).
    pub fn new() -> Proposer {
        let (tx, rx) = mpsc::channel(QUEUE);
        Proposer {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }

    /// Queues `op` of `term` and waits for its outcome. No timeout here:
    /// the caller bounds the wait (dropping this future is giving up).
    pub async fn ask(&self, term: LeaderTerm, op: Op) -> Result<Outcome, Unavailable> {
        let (reply, answer) = oneshot::channel();
        // Ops are validated (bounded) before they get here: a failed size
        // count only makes the entry's byte bound less exact.
        let bytes = bincode::serialized_size(&op).map_or(0, |n| n as usize);
        let queued = Queued {
            term,
            op,
            bytes,
            reply,
        };
        if self.tx.send(queued).await.is_err() {
            return Err(Unavailable::NoLeader("the proposer has stopped".into()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(Unavailable::Unknown("the write was dropped".into())))
    }
}

/// The proposer task: rounds until the node's queue closes.
pub async fn run(node: Arc<Node>) {
    let taken = match node.proposer.rx.lock() {
        Ok(mut rx) => rx.take(),
        Err(_) => None,
    };
    let Some(mut rx) = taken else {
        tracing::error!("the proposer was started twice; this one stops");
        return;
    };
    let rounds = Arc::new(Semaphore::new(ROUNDS_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // Waits while ROUNDS_IN_FLIGHT rounds are unanswered; the queue
        // fills meanwhile and the next round takes it all.
        let Ok(permit) = rounds.clone().acquire_owned().await else {
            return;
        };
        let mut round = vec![first];
        while round.len() < MAX_OPS {
            match rx.try_recv() {
                Ok(q) => round.push(q),
                Err(_) => break,
            }
        }
        // A caller that gave up (timed out) has its op not proposed.
        round.retain(|q| !q.reply.is_closed());
        let entries = cut(round, node.may_batch());
        propose_round(&node, entries, Arc::new(permit)).await;
    }
}

/// Cuts a round into entries, in arrival order: see the module doc.
fn cut(round: Vec<Queued>, may_batch: bool) -> Vec<Vec<Queued>> {
    let mut entries: Vec<Vec<Queued>> = Vec::new();
    // Per open entry: its bytes and whether it holds an acquire.
    let mut open: Vec<(usize, bool)> = Vec::new();
    for q in round {
        let acquire = q.op.is_acquire();
        let fits = |(e, (bytes, has_acquire)): (&Vec<Queued>, &(usize, bool))| {
            may_batch
                && e[0].term.leader_id == q.term.leader_id
                && !(acquire && *has_acquire)
                && bytes + q.bytes <= MAX_BYTES
        };
        match entries.iter().zip(open.iter()).position(fits) {
            Some(i) => {
                open[i].0 += q.bytes;
                open[i].1 |= acquire;
                entries[i].push(q);
            }
            None => {
                open.push((q.bytes, acquire));
                entries.push(vec![q]);
            }
        }
    }
    entries
}

/// Appends every entry of a round and answers its ops as each entry is
/// answered; the round's permit is released when all are.
async fn propose_round(
    node: &Arc<Node>,
    entries: Vec<Vec<Queued>>,
    permit: Arc<OwnedSemaphorePermit>,
) {
    for entry in entries {
        node.metrics.proposed_ops.inc_by(entry.len() as u64);
        node.metrics.proposed_entries.inc();
        let term = entry[0].term.clone();
        let (ops, replies): (Vec<Op>, Vec<Reply>) = entry
            .into_iter()
            .map(|q| (node.as_proposed(q.op), q.reply))
            .unzip();
        let op = match <[Op; 1]>::try_from(ops) {
            Ok([op]) => op,
            Err(ops) => Op::Batch(ops),
        };
        let rx = match node.append(&term, op).await {
            Ok(rx) => rx,
            Err(e) => {
                answer_all(replies, Err(e));
                continue;
            }
        };
        // Bounded, so that an entry openraft never answers cannot hold the
        // round's place forever: its callers have given up by then.
        let bound = Duration::from_millis(node.cfg.write_timeout_ms.saturating_mul(2));
        let permit = permit.clone();
        tokio::spawn(async move {
            if let Ok(answer) = tokio::time::timeout(bound, rx).await {
                answer_entry(replies, settle(answer));
            }
            drop(permit);
        });
    }
}

/// Answers the ops of one entry from its outcome: a batch's outcomes one
/// per op, a lone op's outcome as it is.
fn answer_entry(replies: Vec<Reply>, result: Result<Outcome, Unavailable>) {
    let mut outcome = match result {
        Ok(o) => o,
        Err(e) => return answer_all(replies, Err(e)),
    };
    if replies.len() == 1 {
        return answer_all(replies, Ok(outcome));
    }
    if outcome.batch.len() != replies.len() {
        // Refused by apply (the proposer never builds such a batch):
        // nothing of it was applied.
        tracing::error!(ops = replies.len(), "a batch entry was refused by apply");
        let e = Unavailable::Unknown("the batch holding this write was refused".into());
        return answer_all(replies, Err(e));
    }
    for (reply, o) in replies.into_iter().zip(outcome.batch.drain(..)) {
        let _ = reply.send(Ok(o));
    }
}

fn answer_all(replies: Vec<Reply>, result: Result<Outcome, Unavailable>) {
    for reply in replies {
        // A caller that gave up has dropped its receiver: nothing to do.
        let _ = reply.send(result.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::{cut, Queued, MAX_BYTES};
    use crate::clock::{LeaderClock, WallClock};
    use crate::core::Op;
    use crate::node::LeaderTerm;
    use crate::types::TypeConfig;
    use openraft::testing::log_id;
    use tokio::sync::oneshot;

    fn term(t: u64) -> LeaderTerm {
        LeaderTerm {
            leader_id: log_id::<TypeConfig>(t, 1, 0).leader_id,
            clock: LeaderClock::start(WallClock::new(0, 1.0), 0),
            ready: true,
        }
    }

    fn queued(t: u64, op: Op, bytes: usize) -> Queued {
        // The receiver is dropped: cut never answers.
        let (reply, _) = oneshot::channel();
        Queued {
            term: term(t),
            op,
            bytes,
            reply,
        }
    }

    fn acquire(key: &str) -> Op {
        Op::Acquire {
            key: key.into(),
            owner_hash: format!("{key}@h/1.1.1"),
            process_hash: None,
            trace: None,
            ttl_ms: 1000,
        }
    }

    fn release(key: &str) -> Op {
        Op::Release {
            key: key.into(),
            owner_hash: format!("{key}@h/1.1.1"),
        }
    }

    /// The keys of each entry, in order (a keep-alive shows as "ka").
    fn shape(entries: &[Vec<Queued>]) -> Vec<Vec<String>> {
        let key = |op: &Op| match op {
            Op::Acquire { key, .. } => format!("a:{key}"),
            Op::Release { key, .. } => format!("r:{key}"),
            _ => "ka".to_string(),
        };
        entries
            .iter()
            .map(|e| e.iter().map(|q| key(&q.op)).collect())
            .collect()
    }

    #[test]
    fn one_acquire_per_entry_the_rest_packed_in_arrival_order() {
        let round = vec![
            queued(1, acquire("a"), 10),
            queued(1, release("x"), 10),
            queued(1, acquire("b"), 10),
            queued(1, release("y"), 10),
            queued(1, acquire("c"), 10),
        ];
        assert_eq!(
            shape(&cut(round, true)),
            vec![vec!["a:a", "r:x", "r:y"], vec!["a:b"], vec!["a:c"],]
        );
    }

    #[test]
    fn terms_never_share_an_entry() {
        let round = vec![
            queued(1, release("x"), 10),
            queued(2, release("y"), 10),
            queued(1, release("z"), 10),
        ];
        let entries = cut(round, true);
        assert_eq!(shape(&entries), vec![vec!["r:x", "r:z"], vec!["r:y"]]);
        for e in &entries {
            assert!(e.iter().all(|q| q.term.leader_id == e[0].term.leader_id));
        }
    }

    #[test]
    fn an_entry_stays_within_its_byte_bound() {
        let half = MAX_BYTES / 2;
        let round = vec![
            queued(1, release("x"), half),
            queued(1, release("y"), half),
            queued(1, release("z"), 1),
        ];
        // x and y fill one entry exactly; z no longer fits there.
        assert_eq!(
            shape(&cut(round, true)),
            vec![vec!["r:x", "r:y"], vec!["r:z"]]
        );
    }

    #[test]
    fn without_batches_every_op_is_an_entry_of_its_own() {
        let round = vec![
            queued(1, release("x"), 10),
            queued(1, release("y"), 10),
            queued(1, acquire("a"), 10),
        ];
        assert_eq!(
            shape(&cut(round, false)),
            vec![vec!["r:x"], vec!["r:y"], vec!["a:a"]]
        );
    }
}
