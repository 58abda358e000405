//! The clock-in-charge nemesis (`clock-leader-ahead`, `clock-leader-behind`,
//! `clock-leader-drift`). A skewed node restarted as a follower rarely leads
//! while locks are held, so the rule that keeps a new leader with a clock
//! ahead from ending leases early (the takeover marker's deadline shift) was
//! never exercised end to end. This fault:
//!
//! 1. measures how far log time runs ahead of the harness's wall clock (a
//!    witness lock's `acquired_at`), so "ahead" means ahead of the log;
//! 2. restarts a follower with its clock well ahead of the log (9-21 s, several
//!    process ttls), well behind it, or at rate 1.05/0.95, and waits until it
//!    is ready;
//! 3. takes a witness lock (ttl 8 s) and queues a waiter on it (`wait_ms`);
//! 4. makes the skewed node the leader: `POST /v1/cluster/leader`, or, on a
//!    node without that route, pausing leaders until it wins.
//!
//! A node that lets the new leader's clock end leases early grants the
//! witness to the waiter at once, inside the window in which the witness
//! provably holds it, and the lease checker says so. Every witness and waiter
//! operation is a normal history operation.

use crate::admin::AdminError;
use crate::api::Call;
use crate::cluster::{pick, Cluster, NodeFlags};
use crate::history::{Op, OpType, Process, WORKER_STRIDE};
use crate::nemesis::{Nemesis, Undo};
use crate::workload::Ctx;
use locker_proto::{ClusterAnswer, ReadAnswer};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::{sleep, Instant};

pub const WITNESS_KEY: &str = "jepsen/clock-witness";
/// Short enough that a clock 9 s ahead of the log ends it at once, long enough
/// that even the pausing fallback transfer ends inside its provable window.
const WITNESS_TTL_MS: u64 = 8_000;
/// Witness client ids (`7000 + seq`), below the worker stride.
const WITNESS_ID_BASE: u64 = 7_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skew {
    Ahead,
    Behind,
    Drift,
}

/// A recorded client of its own (not a workload worker): the witness holder
/// and the queued waiter.
pub struct WitnessClient {
    id: u64,
    key: &'static str,
    node: usize,
    seq: u64,
    ctx: Arc<Ctx>,
}

impl WitnessClient {
    fn new(id: u64, ctx: Arc<Ctx>, key: &'static str) -> WitnessClient {
        let node = id as usize % ctx.urls.len().max(1);
        WitnessClient {
            id,
            key,
            node,
            seq: 0,
            ctx,
        }
    }

    pub(crate) fn owner(&mut self) -> String {
        self.seq += 1;
        format!(
            "{}@jc{}-{}/{}.{}.0",
            self.key,
            self.id,
            self.ctx.run_tag,
            std::process::id(),
            self.seq
        )
    }

    /// One recorded call; `wait_ms` makes an acquire queue on the leader.
    pub(crate) async fn call(&mut self, call: Call, wait_ms: Option<u64>) -> crate::api::Answer {
        let key = self.key;
        let p = Process::Client(self.id);
        let mut req = call.request_fields().to_value();
        if let Some(w) = wait_ms {
            req["wait_ms"] = json!(w);
        }
        let f = call.f();
        let rec = &self.ctx.rec;
        rec.record(Op::new(p, OpType::Invoke, f, Some(key), req));
        let base = self.ctx.urls.get(self.node).cloned().unwrap_or_default();
        let api = &self.ctx.api;
        let a = match wait_ms {
            Some(w) => api.acquire_waiting(&base, key, &call, w).await,
            None => api.exec(&base, key, &call).await,
        };
        let mut v = a.value();
        v["node"] = json!(self.node + 1);
        rec.record(Op::new(p, a.kind, f, Some(key), v));
        if a.kind == OpType::Info {
            // Unknown outcome: continue as a new process, as workers do.
            self.id += WORKER_STRIDE;
        }
        if a.kind == OpType::Info || (a.kind == OpType::Fail && a.fields.status.is_none()) {
            self.node = (self.node + 1) % self.ctx.urls.len().max(1);
        }
        a
    }
}

/// What the fault leaves running until it is undone.
pub struct Witness {
    holder: WitnessClient,
    owner: Option<String>,
    stop: Arc<AtomicBool>,
    waiter: Option<tokio::task::JoinHandle<()>>,
}

impl Witness {
    /// Stops the waiter and releases the witness (both recorded).
    pub async fn finish(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.waiter.take() {
            // The waiter's longest call is wait 2 s + the 6.5 s client timeout.
            if tokio::time::timeout(Duration::from_secs(12), h)
                .await
                .is_err()
            {
                eprintln!("[nemesis] clock witness waiter did not stop in time");
            }
        }
        if let Some(owner) = self.owner.take() {
            self.holder.call(Call::Release { owner }, None).await;
        }
    }
}

/// Polls the waiter's acquire (queued 2 s at a time) until told to stop;
/// releases whatever it gets, so the key is free again afterwards.
async fn waiter_loop(mut w: WitnessClient, stop: Arc<AtomicBool>, until: Instant) {
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) && Instant::now() < until && n < 200 {
        n += 1;
        let owner = w.owner();
        let call = Call::Acquire {
            owner: owner.clone(),
            ttl_ms: 1_000,
            process_hash: None,
        };
        let a = w.call(call, Some(2_000)).await;
        if a.kind != OpType::Fail {
            w.call(Call::Release { owner }, None).await;
        }
        if a.kind != OpType::Ok {
            sleep(Duration::from_millis(100)).await;
        }
    }
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Nemesis {
    fn witness_client(&mut self) -> WitnessClient {
        self.client_for(WITNESS_KEY)
    }

    /// A recorded client of the nemesis's own on `key`.
    pub(crate) fn client_for(&mut self, key: &'static str) -> WitnessClient {
        self.state.seq += 1;
        let id = WITNESS_ID_BASE + (self.state.seq % 1_000);
        WitnessClient::new(id, self.ctx.clone(), key)
    }

    /// How far log time runs ahead of this machine's wall clock (ms; may be
    /// negative), from a witness grant's `acquired_at`.
    async fn log_lead_ms(&mut self, c: &Cluster) -> Option<i64> {
        let admin = self.admin(c).ok()?;
        let mut w = self.witness_client();
        let owner = w.owner();
        let call = Call::Acquire {
            owner: owner.clone(),
            ttl_ms: WITNESS_TTL_MS,
            process_hash: None,
        };
        let sent = wall_ms();
        let a = w.call(call, None).await;
        let got = wall_ms();
        // Any node that answers (one may be down from an earlier fault).
        let mut lock = None;
        for base in &self.ctx.urls {
            let url = format!("{base}/v1/locks/{}", crate::api::enc(WITNESS_KEY));
            if let Ok(v) = admin.get_json(&url).await {
                lock = Some(v);
                break;
            }
        }
        if a.kind != OpType::Fail {
            w.call(
                Call::Release {
                    owner: owner.clone(),
                },
                None,
            )
            .await;
        }
        let lock = ReadAnswer::deserialize(lock?).ok()?.lock?;
        if a.kind != OpType::Ok || lock.owner_hash != owner {
            return None;
        }
        let at = i64::try_from(lock.acquired_at).ok()?;
        Some(at - (sent + got) / 2)
    }

    /// Starts a clock-in-charge fault; see the module documentation.
    pub(crate) async fn clock_in_charge(
        &mut self,
        c: &mut Cluster,
        skew: Skew,
        hold_s: u64,
    ) -> anyhow::Result<(Undo, Value)> {
        let before = self.leader(c).await;
        let others: Vec<u64> = c
            .members
            .iter()
            .copied()
            .filter(|&m| Some(m) != before)
            .collect();
        let pool = if others.is_empty() {
            c.members.clone()
        } else {
            others
        };
        let target = pick(&mut self.rng, &pool, 1)
            .first()
            .copied()
            .ok_or_else(|| anyhow::anyhow!("no members"))?;
        let lead = self.log_lead_ms(c).await.unwrap_or(0);
        let by = self.rng.range(9_000, 21_000) as i64;
        let mut flags = NodeFlags::default();
        match skew {
            Skew::Ahead => flags.clock_offset_ms = lead + by,
            Skew::Behind => flags.clock_offset_ms = lead - by,
            Skew::Drift => {
                flags.clock_offset_ms = lead;
                flags.clock_rate = if self.rng.chance(0.5) { 1.05 } else { 0.95 };
            }
        }
        c.restart(target, flags.clone()).await?;
        let undo_restart = Undo::RestartPlain(vec![target]);
        if let Err(e) = self
            .wait_node_ready(c, target, Duration::from_secs(30))
            .await
        {
            return Ok((
                undo_restart,
                json!({"node": target, "error": format!("{e:#}")}),
            ));
        }
        let witness = self.start_witness(hold_s).await;
        let t0 = Instant::now();
        let how = self.make_leader(c, target).await;
        let took_ms = t0.elapsed().as_millis() as u64;
        let detail = json!({
            "node": target, "previous_leader": before, "offset_ms": flags.clock_offset_ms,
            "rate": flags.clock_rate, "log_lead_ms": lead, "transfer": how,
            "transfer_ms": took_ms, "witness": witness.owner,
        });
        Ok((Undo::ClockLeader(target, Box::new(witness)), detail))
    }

    /// Takes the witness lock and queues a waiter behind it.
    async fn start_witness(&mut self, hold_s: u64) -> Witness {
        let mut holder = self.witness_client();
        let owner = holder.owner();
        let call = Call::Acquire {
            owner: owner.clone(),
            ttl_ms: WITNESS_TTL_MS,
            process_hash: None,
        };
        let a = holder.call(call, None).await;
        // Held, or maybe held (unknown outcome): released at the end.
        let owner = (a.kind != OpType::Fail).then_some(owner);
        let stop = Arc::new(AtomicBool::new(false));
        let until = Instant::now() + Duration::from_secs(hold_s + 5);
        let waiter = self.witness_client();
        let w = tokio::spawn(waiter_loop(waiter, stop.clone(), until));
        // Let the waiter's request reach the leader's queue first.
        sleep(Duration::from_millis(150)).await;
        Witness {
            holder,
            owner,
            stop,
            waiter: Some(w),
        }
    }

    /// Makes `target` the leader: the transfer route, else pausing other
    /// leaders until `target` wins. Returns how, for the history.
    async fn make_leader(&mut self, c: &mut Cluster, target: u64) -> Value {
        let admin = match self.admin(c) {
            Ok(a) => a,
            Err(e) => return json!({"error": format!("{e:#}")}),
        };
        match admin.transfer_leader(&c.hosts.url(target), target).await {
            Ok(l) => return json!({"via": "route", "leader": l}),
            Err(AdminError::Missing(_)) => {}
            Err(e) => {
                // The route exists but did not finish in time: say so, and
                // still try the fallback (the fault must put it in charge).
                self.say(format!("leader transfer to {target}: {e}"));
            }
        }
        for attempt in 1..=4u32 {
            if self.leader_seen_by(c, target).await == Some(target)
                && self.is_ready(c, target).await
            {
                return json!({"via": "pause-others", "attempts": attempt, "leader": target});
            }
            self.elect_by_pausing(c, target).await;
        }
        let now = self.leader_seen_by(c, target).await;
        let ok = now == Some(target);
        json!({"via": "pause-others", "attempts": 4, "leader": now, "failed": !ok})
    }

    /// Without the transfer route: pause every other node, so the target
    /// alone runs elections and raises its term; then resume all but the old
    /// leader. Their terms are lower, so the target's next vote request
    /// usually wins; the old leader resumes last, as a follower. Followers
    /// are paused half a second before the leader, so that (on 3 nodes) the
    /// leader keeps committing with the target alone and the target's log
    /// ends up the most recent, which voters require.
    async fn elect_by_pausing(&mut self, c: &mut Cluster, target: u64) {
        let old = self.leader_seen_by(c, target).await;
        let others: Vec<u64> = c.members.iter().copied().filter(|&m| m != target).collect();
        for &o in others.iter().filter(|&&o| Some(o) != old) {
            c.pause(o);
        }
        sleep(Duration::from_millis(500)).await;
        for &o in &others {
            c.pause(o);
        }
        sleep(Duration::from_millis(c.election_timeout_ms * 5 / 2)).await;
        for &o in others.iter().filter(|&&o| Some(o) != old) {
            c.resume(o);
        }
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end && self.leader_seen_by(c, target).await != Some(target) {
            sleep(Duration::from_millis(100)).await;
        }
        for &o in &others {
            c.resume(o);
        }
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end && !self.is_ready(c, target).await {
            sleep(Duration::from_millis(100)).await;
        }
    }

    async fn leader_seen_by(&self, c: &Cluster, id: u64) -> Option<u64> {
        let url = format!("{}/v1/cluster", c.hosts.url(id));
        match self.api.get_json(&url).await {
            Some((200, v)) => ClusterAnswer::deserialize(&v).ok()?.leader_id,
            _ => None,
        }
    }

    async fn is_ready(&self, c: &Cluster, id: u64) -> bool {
        let url = format!("{}/readyz", c.hosts.url(id));
        matches!(self.api.get_json(&url).await, Some((200, _)))
    }

    pub(crate) async fn wait_node_ready(
        &self,
        c: &Cluster,
        id: u64,
        limit: Duration,
    ) -> anyhow::Result<()> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if self.is_ready(c, id).await {
                return Ok(());
            }
            sleep(Duration::from_millis(200)).await;
        }
        Err(anyhow::anyhow!("node {id} not ready after {limit:?}"))
    }
}
