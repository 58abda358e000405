//! The running node: wires the Raft replica, the leader's clock and the
//! background duties (takeover marker, sweeps) together, and offers the
//! operations the HTTP layer needs (propose a command, serve a read).

use openraft::async_runtime::WatchReceiver;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::errors::ClientWriteError;
use openraft::impls::ProgressResponder;
use openraft::{ReadPolicy, ServerState};
use tokio::sync::watch;

use crate::clock::{LeaderClock, WallClock};
use crate::config::NodeConfig;
use crate::core::{Command, Op, Outcome};
use crate::metrics::Metrics;
use crate::network::{PeerInfo, PeerNetwork};
use crate::store::{Flusher, SharedReplica};
use crate::tls::NodeTls;
use crate::types::{NodeId, Raft};
use crate::waiters::Waiters;

/// Why a request could not be served here and now. All are retryable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// No leader is known, or this node is not it: nothing was proposed.
    #[error("no leader is available: {0}")]
    NoLeader(String),
    /// The write was proposed but its fate is unknown (leader change, timeout).
    #[error("the outcome of the write is unknown: {0}")]
    Unknown(String),
    /// Another node leads now and nothing was done here: the request can be
    /// forwarded to it as if it had gone there first.
    #[error("no leader is available here: node {0} leads now")]
    LeaderElsewhere(NodeId),
}

/// This node's leadership for one term, once its takeover marker is applied.
#[derive(Debug, Clone)]
pub struct LeaderTerm {
    /// The term (and leader) this is for: proposals are written with it, so
    /// openraft refuses a write stamped by the clock of a term that ended.
    pub leader_id: openraft::type_config::alias::CommittedLeaderIdOf<crate::types::TypeConfig>,
    /// The clock that stamps this term's commands.
    pub clock: LeaderClock,
    /// Whether the takeover marker is applied: until then the leader does
    /// not serve, because the marker is what shifts live deadlines to this
    /// leader's clock.
    pub ready: bool,
}

/// A running node: its Raft, its applied lock table and what the HTTP
/// handlers need around them. One per process, shared as `Arc<Node>`.
pub struct Node {
    /// This node's id.
    pub id: NodeId,
    /// Its configuration.
    pub cfg: NodeConfig,
    /// Its Raft instance.
    pub raft: Raft,
    /// The applied lock table, read by the handlers.
    pub replica: SharedReplica,
    /// The group-commit fsync thread (and its counters).
    pub flusher: Flusher,
    /// Keeps the data directory's identity file (high-water mark, vote).
    pub marker: Arc<crate::store::Marker>,
    /// This machine's clock (skewed in tests), read once per leader term.
    pub wall: WallClock,
    /// Set while this node leads a term, `None` otherwise.
    pub leader: watch::Sender<Option<LeaderTerm>>,
    /// For forwarding to the leader and asking peers (short connect timeout).
    pub http: reqwest::Client,
    /// Every Prometheus metric.
    pub metrics: Metrics,
    /// Blocking acquires waiting on this node (leader only).
    pub waiters: Waiters,
    /// The tokens of `--tokens-file` (none: authentication off) and their
    /// request budgets.
    pub tokens: Arc<crate::tokens::Tokens>,
    /// `{hostname}/{pid}.{nanos}` of this node process: the process part of
    /// owner hashes the server builds for requests that bring none.
    pub own_process_hash: String,
    /// Places for open watch streams (`--max-watchers`).
    pub watchers: Arc<tokio::sync::Semaphore>,
    owner_seq: AtomicU64,
    /// Set once on SIGTERM: long waits (blocking acquires) give up at once.
    stopping: watch::Sender<bool>,
    /// Raft's network (a clone): which protocol each peer answers in.
    network: PeerNetwork,
    /// Whether the data directory held no cluster when the node opened it,
    /// read before the peer port listens: a leader's first append can make
    /// the node initialized before `bootstrap` runs, and `bootstrap` must
    /// still tell a fresh member from one that lost its volume.
    pub(crate) started_empty: bool,
    /// Whether Raft RPCs from peers are served (see `PeerState::admitted`).
    pub(crate) admitted: watch::Sender<bool>,
    /// Coalesces concurrent client ops into shared entries (run by
    /// [`Node::run_proposer`]).
    pub(crate) proposer: crate::proposer::Proposer,
}

/// Where the leader is, from this node's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaderHint {
    /// This node leads and serves.
    Me,
    /// Another node leads; requests go to its client address.
    Other {
        /// The leader's id.
        id: NodeId,
        /// Where its client API listens.
        client_addr: String,
    },
    /// No leader is known (an election, or this node is cut off).
    Unknown,
}

impl Node {
    /// Opens the data directory and starts Raft. The node does not serve
    /// yet: the caller starts the listeners and the background loops.
    pub async fn start(cfg: NodeConfig, tls: &NodeTls) -> anyhow::Result<Arc<Node>> {
        let tokens =
            crate::tokens::Tokens::open(cfg.tokens_file.as_deref()).map_err(anyhow::Error::msg)?;
        let owner = crate::store::Owner {
            node_id: cfg.id,
            initial_cluster: &cfg.initial_cluster,
        };
        let (log, sm, replica, flusher, marker) =
            crate::store::open_node(&cfg.data_dir, cfg.cache_mb << 20, owner)?;
        replica.events.set_limits(
            usize::try_from(cfg.watch_history).unwrap_or(usize::MAX),
            usize::try_from(cfg.watch_history_mb << 20).unwrap_or(usize::MAX),
        );
        let raft_config = openraft::Config {
            cluster_name: "locker".into(),
            heartbeat_interval: cfg.heartbeat_ms,
            election_timeout_min: cfg.election_timeout_ms,
            election_timeout_max: cfg.election_timeout_ms * 2,
            install_snapshot_timeout: 30_000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_every),
            max_in_snapshot_log_to_keep: cfg.keep_logs,
            purge_batch_size: 32,
            max_payload_entries: 1000,
            // Never resume leadership in the old term after a restart: a
            // leader's unflushed entries may be committed on followers, and
            // reusing their log ids diverges replicas (crash_points.rs).
            enable_leader_restore: Some(false),
            ..Default::default()
        }
        .validate()?;
        let network = PeerNetwork::new(cfg.id, &cfg.cluster_secret, tls, marker.clone())?;
        let raft = Raft::new(cfg.id, Arc::new(raft_config), network.clone(), log, sm).await?;
        let started_empty = !raft.is_initialized().await?;
        let wall = WallClock::new(cfg.test_clock_offset_ms, cfg.test_clock_rate);
        let http = tls
            .http_builder()
            .map_err(anyhow::Error::msg)?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .build()?;
        let metrics = Metrics::new(&flusher.stats);
        let node = Arc::new(Node {
            id: cfg.id,
            own_process_hash: locker_proto::new_process_hash(),
            watchers: Arc::new(tokio::sync::Semaphore::new(
                usize::try_from(cfg.max_watchers).unwrap_or(usize::MAX),
            )),
            cfg,
            raft,
            replica,
            flusher,
            marker,
            wall,
            leader: watch::channel(None).0,
            http,
            metrics,
            waiters: Waiters::default(),
            tokens: Arc::new(tokens),
            owner_seq: AtomicU64::new(0),
            stopping: watch::channel(false).0,
            network,
            started_empty,
            // A node with data on disk is what it was; an empty one decides
            // in `bootstrap`.
            admitted: watch::channel(!started_empty).0,
            proposer: crate::proposer::Proposer::new(),
        });
        Ok(node)
    }

    /// Whether peers' Raft RPCs are served (false until `bootstrap` admits
    /// a node that started on an empty data directory).
    pub fn admitted(&self) -> watch::Receiver<bool> {
        self.admitted.subscribe()
    }

    /// What this node tells peers about itself.
    pub fn peer_info(&self) -> PeerInfo {
        PeerInfo {
            node_id: self.id,
            peer_addr: self.cfg.advertised_peer_addr(),
            client_addr: self.cfg.advertised_client_addr(),
            initialized: false,
            cluster_id: None,
        }
    }

    /// Runs for the node's life: keeps `self.leader` in step with Raft and
    /// commits the takeover marker at the start of each term.
    pub async fn watch_leadership(self: Arc<Self>) {
        let mut metrics = self.raft.metrics();
        let mut led_term: Option<u64> = None;
        loop {
            let (is_leader, term) = {
                let m = metrics.borrow_and_update();
                (m.state == ServerState::Leader, m.current_term)
            };
            // `begin_term` fails while the vote is not yet committed in the
            // metrics; the commit is itself a metrics change, so we retry then.
            if is_leader && led_term != Some(term) && self.begin_term(term) {
                led_term = Some(term);
            } else if !is_leader && led_term.is_some() {
                led_term = None;
                self.leader.send_replace(None);
                self.metrics.leader_changes.inc();
                tracing::info!(term, "no longer the leader");
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    }

    fn begin_term(self: &Arc<Self>, term: u64) -> bool {
        let Ok(leader) = self.raft.as_leader() else {
            return false;
        };
        let floor = self.replica.read().table.now();
        let lt = LeaderTerm {
            leader_id: leader.to_committed_leader_id(),
            clock: LeaderClock::start(self.wall, floor),
            ready: false,
        };
        self.leader.send_replace(Some(lt.clone()));
        self.metrics.leader_changes.inc();
        tracing::info!(term, "became leader; committing the takeover marker");
        let node = self.clone();
        tokio::spawn(async move {
            // Retry until it lands or the term ends: nothing is served before it.
            loop {
                let still_ours = node
                    .leader
                    .borrow()
                    .as_ref()
                    .is_some_and(|t| t.leader_id == lt.leader_id);
                if !still_ours {
                    return;
                }
                // No timeout: a marker that is slow to apply (it rewrites
                // every live lease; a million of them take seconds) must
                // not be proposed again while it is still on its way: each
                // copy would rewrite them all again (a restarted node with a
                // million locks once grew to 16 GB doing that, never ready).
                let mut leader = node.leader.subscribe();
                let term_over =
                    leader.wait_for(|t| t.as_ref().is_none_or(|t| t.leader_id != lt.leader_id));
                let written = tokio::select! {
                    w = node.write_within(&lt, Op::LeaderTakeover, None) => w,
                    _ = term_over => return,
                };
                match written {
                    Ok(_) => {
                        node.leader.send_modify(|cur| {
                            if let Some(t) = cur.as_mut().filter(|t| t.leader_id == lt.leader_id) {
                                t.ready = true;
                            }
                        });
                        tracing::info!(term, "takeover marker applied; serving");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "takeover marker failed; retrying");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        true
    }

    /// Runs for the node's life: the proposer's loop ([`crate::proposer`]).
    pub async fn run_proposer(self: Arc<Self>) {
        crate::proposer::run(self).await;
    }

    /// Starts a graceful shutdown: see [`Node::stopping`].
    pub fn begin_shutdown(&self) {
        tracing::info!("shutting down: answering blocked requests 503");
        self.stopping.send_replace(true);
    }

    /// On a clean stop: if this node leads, hands leadership to the voter
    /// whose log matches the most of ours and waits (bounded by an election
    /// timeout) until another node leads. Without it the others would serve
    /// nothing until their election timeout ran out.
    pub async fn hand_over_leadership(&self) {
        if !self.raft.is_leader() {
            return;
        }
        let to = {
            let m = self.raft.metrics();
            let m = m.borrow_watched();
            let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
            m.replication.as_ref().and_then(|r| {
                r.iter()
                    .filter(|(id, _)| **id != self.id && voters.contains(id))
                    .max_by_key(|(_, matched)| matched.as_ref().map(|l| l.index))
                    .map(|(id, _)| *id)
            })
        };
        let Some(to) = to else { return };
        tracing::info!(to, "stopping: handing leadership over");
        if let Err(e) = self.raft.trigger().transfer_leader(to).await {
            tracing::warn!(error = %e, "leadership hand-over not started");
            return;
        }
        let mut metrics = self.raft.metrics();
        let bound = Duration::from_millis(self.cfg.election_timeout_ms);
        let moved = metrics.wait_until(|m| m.current_leader.is_some_and(|l| l != self.id));
        if tokio::time::timeout(bound, moved).await.is_err() {
            tracing::warn!(to, "leadership not handed over in time; stopping anyway");
        }
    }

    /// Becomes `true` when the node starts shutting down.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Where to send a request that needs the leader.
    pub fn leader_hint(&self) -> LeaderHint {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        match m.current_leader {
            Some(id) if id == self.id => LeaderHint::Me,
            Some(id) => match m.membership_config.membership().get_node(&id) {
                // A member of the initial cluster whose client address is
                // not recorded yet (see `bootstrap`): nowhere to forward.
                Some(n) if n.client_addr.is_empty() => LeaderHint::Unknown,
                Some(n) => LeaderHint::Other {
                    id,
                    client_addr: n.client_addr.clone(),
                },
                None => LeaderHint::Unknown,
            },
            None => LeaderHint::Unknown,
        }
    }

    /// Waits (bounded by `--leader-wait-ms`) until this node leads with its
    /// marker applied. Gives up early only when another node leads, so that
    /// the caller can forward there; a node whose metrics still name itself
    /// (a leadership restored from disk, a step-down in progress) waits for
    /// the outcome instead of refusing at once.
    pub async fn ready_term(&self) -> Result<LeaderTerm, Unavailable> {
        let mut rx = self.leader.subscribe();
        let mut raft_metrics = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.cfg.leader_wait_ms);
        loop {
            if let Some(t) = rx.borrow_and_update().clone().filter(|t| t.ready) {
                return Ok(t);
            }
            raft_metrics.borrow_and_update();
            if let LeaderHint::Other { id, .. } = self.leader_hint() {
                return Err(Unavailable::LeaderElsewhere(id));
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { break },
                r = raft_metrics.changed() => if r.is_err() { break },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        Err(Unavailable::NoLeader(
            "no ready leader within --leader-wait-ms".into(),
        ))
    }

    /// The caller and limits an op of a request by `token` (none: tokens
    /// off) runs under: this node's limits, judged in the log if it leads.
    pub fn caller(&self, token: Option<&crate::tokens::Token>) -> crate::core::Caller {
        let limit = |n: u64| (n > 0).then_some(n);
        crate::core::Caller {
            token: token.map(|t| t.name.clone()),
            max_locks: limit(self.cfg.max_locks),
            max_processes: limit(self.cfg.max_processes),
            token_max_locks: token.and_then(|t| t.max_locks),
        }
    }

    /// Proposes `op` stamped with the leader's time and waits for its outcome.
    /// A client op goes through the proposer, which may share its entry
    /// with other client ops ([`crate::proposer`]); the leader's own ops
    /// (sweeps, ticks) are appended alone.
    pub async fn propose(&self, op: Op) -> Result<Outcome, Unavailable> {
        let term = self.ready_term().await?;
        if op.is_client_op() {
            return self.propose_batched(term, op).await;
        }
        self.write(&term, op).await
    }

    async fn write(&self, term: &LeaderTerm, op: Op) -> Result<Outcome, Unavailable> {
        let timeout = Duration::from_millis(self.cfg.write_timeout_ms);
        self.write_within(term, op, Some(timeout)).await
    }

    /// A client op through the proposer, within `--write-timeout-ms` from
    /// now as [`Node::write`] (queueing included): the same answers, and
    /// the same errors when its entry fails.
    async fn propose_batched(&self, term: LeaderTerm, op: Op) -> Result<Outcome, Unavailable> {
        let timeout = Duration::from_millis(self.cfg.write_timeout_ms);
        let started = Instant::now();
        let asked = self.proposer.ask(term, op);
        let result = tokio::time::timeout(timeout, asked)
            .await
            .unwrap_or_else(|_| Err(not_committed_within(timeout)));
        self.metrics.observe_commit(started.elapsed());
        result
    }

    /// [`Node::write`] waiting at most `timeout` for the outcome, or, with
    /// `None`, until openraft answers: applied, or dropped because the term
    /// ended (openraft answers every appended entry one way or the other).
    async fn write_within(
        &self,
        term: &LeaderTerm,
        op: Op,
        timeout: Option<Duration>,
    ) -> Result<Outcome, Unavailable> {
        let started = Instant::now();
        let rx = self.append(term, self.as_proposed(op)).await?;
        let answer = match timeout {
            Some(t) => tokio::time::timeout(t, rx).await,
            None => Ok(rx.await),
        };
        let result = match answer {
            Err(_) => Err(not_committed_within(timeout)),
            Ok(a) => settle(a),
        };
        self.metrics.observe_commit(started.elapsed());
        result
    }

    /// Appends `op` (already in its proposed form) as one entry stamped
    /// with the leader's time now; the receiver answers when openraft does.
    pub(crate) async fn append(
        &self,
        term: &LeaderTerm,
        op: Op,
    ) -> Result<WriteReceiver, Unavailable> {
        let cmd = Command {
            time_ms: term.clock.now_ms(),
            op,
        };
        let (responder, rx) = ProgressResponder::complete_only();
        self.raft
            .write(cmd)
            .with_leader(term.leader_id)
            .responder(responder)
            .await
            .map_err(|e| Unavailable::NoLeader(e.to_string()))?;
        Ok(rx)
    }

    /// Whether an entry may hold an [`Op::Batch`]: only peers of protocol 3
    /// on decode one, so until every other member (learners too) has
    /// answered in protocol 3 every client op goes in an entry of its own,
    /// as before. Stricter than the rule for [`Op::As`]: batching only saves
    /// work, and a member of an older release that had not answered yet
    /// would refuse the batch with a 400 that names no protocol (see
    /// `PeerNetwork::all_speak`). Read each round: a member that answers
    /// 400 (started on an older release with its data) stops batches at
    /// once, without waiting to learn its protocol.
    pub(crate) fn may_batch(&self) -> bool {
        let (_, members) = self.membership_ids();
        self.network.all_speak(&members, 3)
    }

    fn membership_ids(&self) -> (Vec<NodeId>, Vec<NodeId>) {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let membership = m.membership_config.membership();
        (
            membership.voter_ids().collect(),
            membership.nodes().map(|(id, _)| *id).collect(),
        )
    }

    /// The form `op` is proposed in. An entry holding [`Op::As`] (a
    /// request's token and limits) is read only by peers of protocol 2 on:
    /// a node of an older release refuses every append that carries one,
    /// and while a rolling upgrade leaves two such nodes in a cluster of
    /// three, a leader of this release would commit nothing (what
    /// `tests/tests/rolling_restart.rs`'s rolling upgrade saw). While a
    /// member answers in an older protocol (or too few voters have answered
    /// in protocol 2 for such an entry to commit), the bare op is proposed:
    /// tokens' process ownership and the table limits (judged in apply) wait
    /// for the end of the upgrade, as the older release had neither.
    pub(crate) fn as_proposed(&self, op: Op) -> Op {
        let Op::As { caller, op } = op else {
            return op;
        };
        let (voters, members) = self.membership_ids();
        if self.network.may_append(&voters, &members, 2) {
            Op::As { caller, op }
        } else {
            *op
        }
    }

    /// Confirms leadership with a quorum (ReadIndex) and waits until that
    /// index is applied; returns the leader's time now (never behind the log).
    pub async fn linearizable_read_time(&self) -> Result<u64, Unavailable> {
        let term = self.ready_term().await?;
        let wait = Duration::from_millis(self.cfg.leader_wait_ms);
        match tokio::time::timeout(wait, self.raft.ensure_linearizable(ReadPolicy::ReadIndex)).await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(Unavailable::NoLeader(e.to_string())),
            Err(_) => {
                return Err(Unavailable::NoLeader(
                    "leadership not confirmed in time".into(),
                ))
            }
        }
        let log_now = self.replica.read().table.now();
        Ok(log_now.max(term.clock.now_ms()))
    }

    /// The log index a quorum confirmed this node leads at (ReadIndex): a
    /// read that waits for it to be applied sees every write answered
    /// before it was asked.
    pub async fn read_index(&self) -> Result<u64, Unavailable> {
        self.ready_term().await?;
        let wait = Duration::from_millis(self.cfg.leader_wait_ms);
        match tokio::time::timeout(wait, self.raft.ensure_linearizable(ReadPolicy::ReadIndex)).await
        {
            Ok(Ok(read)) => Ok(read.index()),
            Ok(Err(e)) => Err(Unavailable::NoLeader(e.to_string())),
            Err(_) => Err(Unavailable::NoLeader(
                "leadership not confirmed in time".into(),
            )),
        }
    }

    /// The leader's current time if this node is a ready leader.
    pub fn leader_now(&self) -> Option<u64> {
        self.leader
            .borrow()
            .as_ref()
            .filter(|t| t.ready)
            .map(|t| t.clock.now_ms())
    }

    /// Runs for the node's life: after applies, wakes the waiters of each
    /// key whose live lock changed, or that is free (the head's turn), and
    /// no others: a write to one key does not wake every waiter. A lease
    /// that ends by time alone wakes the head through its own timer.
    pub async fn wake_waiters(self: Arc<Self>) {
        type Seen = Option<(String, u64, u64)>;
        let mut applied = self.replica.subscribe();
        let mut seen: HashMap<String, Seen> = HashMap::new();
        while applied.changed().await.is_ok() {
            let keys = self.waiters.keys();
            let states: Vec<(String, Seen)> = {
                let r = self.replica.read();
                let now = self.leader_now().unwrap_or_else(|| r.table.now());
                keys.into_iter()
                    .map(|k| {
                        let st = r
                            .table
                            .live_lock(&k, now)
                            .map(|l| (l.owner_hash.clone(), l.fencing_token, l.expires_at));
                        (k, st)
                    })
                    .collect()
            };
            let mut next = HashMap::with_capacity(states.len());
            for (key, st) in states {
                if st.is_none() || seen.get(&key) != Some(&st) {
                    self.waiters.wake(&key);
                }
                next.insert(key, st);
            }
            seen = next;
        }
    }

    /// A fresh owner hash in the seed's format for a request that brought
    /// none. `Err` when the key or trace cannot travel in an owner hash that
    /// parses back to them: granting a lock under such a hash would leave it
    /// impossible to extend or release.
    pub fn new_owner_hash(
        &self,
        key: &str,
        trace: Option<&str>,
    ) -> Result<String, locker_proto::OwnerHashError> {
        let seq = self.owner_seq.fetch_add(1, Ordering::Relaxed);
        locker_proto::make_owner_hash(key, &self.own_process_hash, seq, trace)
    }

    /// Runs for the node's life: the leader's own proposals. A sweep when
    /// something expired, and a clock tick when the log time lags the leader's
    /// clock by a second (see [`Node::tick_loop`]).
    pub async fn sweep_loop(self: Arc<Self>) {
        tokio::spawn(self.clone().tick_loop());
        let mut tick = tokio::time::interval(Duration::from_millis(self.cfg.sweep_ms.max(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(now) = self.leader_now() else {
                continue;
            };
            if self.replica.read().table.has_expired(now) {
                if let Err(e) = self.propose(Op::Sweep).await {
                    tracing::debug!(error = %e, "sweep not committed");
                }
            }
        }
    }

    /// Keeps the log time within about [`TICK_IDLE_MS`] of the leader's clock.
    ///
    /// Log time moves only with entries. A takeover marker shifts live
    /// deadlines by the gap between the log time before it and its own time
    /// (docs/protocol.md, "Time"), so without ticks an idle spell before a failover would
    /// be granted to every lease again. The leader commits a [`Op::Tick`] when
    /// the log lags its clock by a second and some lease is live at the log
    /// time: one tiny entry per idle second, none while traffic flows (every
    /// write stamps the leader's time) or while nothing is live.
    async fn tick_loop(self: Arc<Self>) {
        let mut check = tokio::time::interval(Duration::from_millis(TICK_CHECK_MS));
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            check.tick().await;
            let Some(now) = self.leader_now() else {
                continue;
            };
            let due = {
                let r = self.replica.read();
                let log_now = r.table.now();
                // With nothing live at the log time a marker shifts nothing,
                // so an empty idle cluster writes nothing at all.
                now.saturating_sub(log_now) >= TICK_IDLE_MS && r.table.has_live(log_now)
            };
            if due {
                if let Err(e) = self.propose(Op::Tick).await {
                    tracing::debug!(error = %e, "clock tick not committed");
                }
            }
        }
    }
}

/// What [`Node::append`] returns: openraft's answer for one entry.
pub(crate) type WriteReceiver = openraft::type_config::alias::OneshotReceiverOf<
    crate::types::TypeConfig,
    openraft::raft::ClientWriteResult<crate::types::TypeConfig>,
>;

/// A write whose outcome did not come within `timeout`: it may still apply.
fn not_committed_within(timeout: impl std::fmt::Debug) -> Unavailable {
    Unavailable::Unknown(format!("not committed within {timeout:?}"))
}

/// The outcome of an appended entry as openraft answered it, or the error a
/// client gets (`Err(_)` of the receiver: the entry was dropped).
pub(crate) fn settle<E>(
    answer: Result<openraft::raft::ClientWriteResult<crate::types::TypeConfig>, E>,
) -> Result<Outcome, Unavailable> {
    match answer {
        Err(_) => Err(Unavailable::Unknown("the write was dropped".into())),
        Ok(Ok(resp)) => Ok(resp.data),
        // Refused before it was appended: nothing happened.
        Ok(Err(ClientWriteError::ForwardToLeader(f))) => Err(Unavailable::NoLeader(f.to_string())),
        Ok(Err(e)) => Err(Unavailable::Unknown(e.to_string())),
    }
}

/// An idle leader ticks when the log time lags its clock by this much.
const TICK_IDLE_MS: u64 = 1_000;
/// How often the leader looks whether a tick is due.
const TICK_CHECK_MS: u64 = 200;
