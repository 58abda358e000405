//! The nemesis: injects one fault at a time on a seeded schedule, records a
//! `start`/`stop` pair for each in the history (process `"nemesis"`), and
//! heals everything at the end.

use crate::admin::Admin;
use crate::api::Api;
use crate::clock_leader::Skew;
use crate::cluster::{pick, Cluster, NodeFlags};
use crate::crash_point::exited;
use crate::history::{Op, OpType, Process, Recorder};
use crate::rng::Rng;
use crate::workload::Ctx;
use clap::builder::PossibleValue;
use clap::ValueEnum;
use locker_proto::{AddMemberRequest, ClusterAnswer};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep, Instant};

/// One fault. Its command-line name (`--nemesis`) is the kebab-case of the
/// variant, also written in histories and reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Fault {
    KillOne,
    KillLeader,
    KillMinority,
    KillAll,
    PauseOne,
    PauseLeader,
    ClientPause,
    PartitionOne,
    PartitionLeader,
    PartitionMajority,
    PartitionRing,
    #[value(name = "partition-oneway")]
    PartitionOneWay,
    Loss,
    ClockSkew,
    ClockRate,
    ClientKill,
    Member,
    ClientCut,
    ClientLoss,
    HungEndpoint,
    RunPause,
    ClockLeaderAhead,
    ClockLeaderBehind,
    ClockLeaderDrift,
    CrashPoint,
    PowerLoss,
    PowerLossMajority,
    /// Every member in turn, the leader last: SIGTERM (must exit 0), start
    /// with the same flags, wait for `/readyz` (`rolling.rs`).
    RollingRestart,
}

use Fault::*;

impl Fault {
    /// Every fault, in declaration order.
    pub fn all() -> &'static [Fault] {
        Fault::value_variants()
    }

    /// The command-line name, e.g. `kill-leader`.
    pub fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }

    pub fn needs_network(self) -> bool {
        matches!(
            self,
            PartitionOne
                | PartitionLeader
                | PartitionMajority
                | PartitionRing
                | PartitionOneWay
                | Loss
                | ClientCut
                | ClientLoss
        )
    }
}

/// Named groups of faults accepted by `--nemesis` next to single faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Family {
    /// No fault.
    None,
    /// Every fault.
    All,
    Kill,
    Pause,
    Partition,
    Clock,
    ClockLeader,
    Crash,
    /// Power cuts: nodes run under the power-loss shim (`power_loss.rs`).
    Power,
    Membership,
    Client,
    /// Clean restarts an operator makes (`rolling-restart`).
    Restart,
}

impl Family {
    pub fn faults(self) -> Vec<Fault> {
        match self {
            Family::None => vec![],
            Family::All => Fault::all().to_vec(),
            Family::Kill => vec![KillOne, KillLeader, KillMinority, KillAll],
            Family::Pause => vec![PauseOne, PauseLeader, ClientPause],
            Family::Partition => vec![
                PartitionOne,
                PartitionLeader,
                PartitionMajority,
                PartitionRing,
                PartitionOneWay,
            ],
            Family::Clock => vec![
                ClockSkew,
                ClockRate,
                ClockLeaderAhead,
                ClockLeaderBehind,
                ClockLeaderDrift,
            ],
            Family::ClockLeader => vec![ClockLeaderAhead, ClockLeaderBehind, ClockLeaderDrift],
            Family::Crash => vec![CrashPoint],
            Family::Power => vec![PowerLoss, PowerLossMajority],
            Family::Membership => vec![Member],
            Family::Client => vec![ClientCut, ClientLoss, HungEndpoint, RunPause],
            Family::Restart => vec![RollingRestart],
        }
    }
}

/// One item of `--nemesis`: a family or a single fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NemesisItem {
    Family(Family),
    One(Fault),
}

impl ValueEnum for NemesisItem {
    fn value_variants<'a>() -> &'a [Self] {
        static ITEMS: std::sync::OnceLock<Vec<NemesisItem>> = std::sync::OnceLock::new();
        ITEMS.get_or_init(|| {
            let families = Family::value_variants()
                .iter()
                .map(|f| NemesisItem::Family(*f));
            families
                .chain(Fault::all().iter().map(|f| NemesisItem::One(*f)))
                .collect()
        })
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        match self {
            NemesisItem::Family(f) => f.to_possible_value(),
            NemesisItem::One(f) => f.to_possible_value(),
        }
    }
}

/// The faults of `items`, families expanded, each once, in order.
pub fn expand(items: &[NemesisItem]) -> Vec<Fault> {
    let mut out: Vec<Fault> = Vec::new();
    for item in items {
        let faults = match item {
            NemesisItem::Family(f) => f.faults(),
            NemesisItem::One(f) => vec![*f],
        };
        for f in faults {
            if !out.contains(&f) {
                out.push(f);
            }
        }
    }
    out
}

/// Parses `kill,pause,partition-ring,...`: single faults or families
/// (`kill`, `pause`, `partition`, `clock`, `all`, `none`, ...).
pub fn parse_list(s: &str) -> anyhow::Result<Vec<Fault>> {
    let items = s
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| NemesisItem::from_str(x, false).map_err(|e| anyhow::anyhow!("nemesis {x:?}: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(expand(&items))
}

/// What starting a fault gives: how to undo it, and what it did.
type Started = anyhow::Result<(Undo, Value)>;

/// How to undo the active fault.
pub(crate) enum Undo {
    Restart(Vec<u64>),
    Resume(Vec<u64>),
    Heal,
    ClearStalls,
    RestartPlain(Vec<u64>),
    RemoveMember(u64),
    HealClient(u64),
    /// Clock-in-charge: finish the witness, restart the node plain.
    ClockLeader(u64, Box<crate::clock_leader::Witness>),
    /// Crash point armed on a node: restart it, or disarm the point.
    CrashPoint(u64, String),
    Nothing,
}

/// State some faults keep between occurrences.
#[derive(Default)]
pub struct State {
    /// Admin client (cluster secret), made on first use.
    pub admin: Option<Admin>,
    /// The crash points the node build offers, listed on first use.
    pub failpoints: Vec<String>,
    /// Numbers the clock witness's client ids.
    pub seq: u64,
    /// The durability probe taken before a kill-all.
    pub probe: Option<crate::durable_probe::Probe>,
}

pub struct Nemesis {
    pub faults: Vec<Fault>,
    pub rng: Rng,
    pub rec: Arc<Recorder>,
    pub api: Api,
    pub ctx: Arc<Ctx>,
    /// Seconds between faults and fault durations (min, max).
    pub interval_s: (u64, u64),
    pub duration_s: (u64, u64),
    pub log: Vec<String>,
    pub state: State,
}

impl Nemesis {
    fn record(&self, kind: OpType, f: &str, v: Value) {
        self.rec.record(Op::new(Process::Nemesis, kind, f, None, v));
    }

    pub(crate) fn say(&mut self, s: String) {
        eprintln!("[nemesis] {s}");
        self.log.push(s);
    }

    /// Runs faults until `until`, then leaves the cluster healed.
    pub async fn run(&mut self, cluster: &mut Cluster, until: Instant) {
        let mut count = 0u32;
        while Instant::now() < until && !self.ctx.stop.load(Ordering::Relaxed) && count < 10_000 {
            count += 1;
            let wait = self.rng.range(self.interval_s.0, self.interval_s.1);
            sleep_until_or(Duration::from_secs(wait), until).await;
            if Instant::now() >= until || self.faults.is_empty() {
                break;
            }
            let fault = self.faults[self.rng.below(self.faults.len() as u64) as usize];
            self.record(OpType::Invoke, "start", json!({"fault": fault.name()}));
            let undo = match self.start(cluster, fault).await {
                Ok((undo, detail)) => {
                    self.say(format!("start {} {detail}", fault.name()));
                    self.record(
                        OpType::Ok,
                        "start",
                        json!({"fault": fault.name(), "detail": detail}),
                    );
                    undo
                }
                Err(e) => {
                    self.say(format!("could not start {}: {e}", fault.name()));
                    self.record(
                        OpType::Fail,
                        "start",
                        json!({"fault": fault.name(), "error": format!("{e:#}")}),
                    );
                    Undo::Nothing
                }
            };
            let hold = self.rng.range(self.duration_s.0, self.duration_s.1);
            sleep_until_or(Duration::from_secs(hold), until + Duration::from_secs(1)).await;
            self.record(OpType::Invoke, "stop", json!({"fault": fault.name()}));
            let r = self.undo(cluster, undo).await;
            if let Err(e) = &r {
                self.say(format!("stop {}: {e}", fault.name()));
            }
            self.record(OpType::Ok, "stop", json!({"fault": fault.name()}));
        }
        self.record(OpType::Invoke, "start", json!({"fault": "final-heal"}));
        self.heal_all(cluster).await;
        self.record(OpType::Ok, "stop", json!({"fault": "final-heal"}));
    }

    pub(crate) fn admin(&mut self, c: &Cluster) -> anyhow::Result<Admin> {
        if self.state.admin.is_none() {
            // Longer than the node's leader transfer wait (503 on timeout).
            self.state.admin = Some(Admin::new(&c.secret, Duration::from_secs(10))?);
        }
        self.state
            .admin
            .clone()
            .ok_or_else(|| anyhow::anyhow!("no admin client"))
    }

    pub(crate) async fn leader(&self, cluster: &Cluster) -> Option<u64> {
        for &id in &cluster.members {
            if !cluster.is_running(id) {
                continue;
            }
            let url = format!("{}/v1/cluster", cluster.hosts.url(id));
            if let Some((200, v)) = self.api.get_json(&url).await {
                if let Some(l) = ClusterAnswer::deserialize(&v)
                    .ok()
                    .and_then(|c| c.leader_id)
                {
                    return Some(l);
                }
            }
        }
        None
    }

    async fn leader_or_random(&mut self, cluster: &Cluster) -> u64 {
        match self.leader(cluster).await {
            Some(l) if cluster.members.contains(&l) => l,
            _ => pick(&mut self.rng, &cluster.members, 1)
                .first()
                .copied()
                .unwrap_or(1),
        }
    }

    /// Starts fault `f`; returns how to undo it and what it did.
    async fn start(&mut self, c: &mut Cluster, f: Fault) -> Started {
        if f.needs_network() && !c.hosts.supports_network_faults() {
            return Err(anyhow::anyhow!("network faults need --hosts netns"));
        }
        match f {
            KillOne | KillLeader | KillMinority | KillAll => self.kill(c, f).await,
            PauseOne | PauseLeader => {
                let v = self.one_or_leader(c, f == PauseOne).await;
                c.pause(v);
                Ok((Undo::Resume(vec![v]), json!({"nodes": [v]})))
            }
            PartitionOne | PartitionLeader | PartitionMajority | PartitionRing
            | PartitionOneWay | Loss => self.partition(c, f).await,
            ClockSkew | ClockRate => self.clock(c, f).await,
            ClockLeaderAhead | ClockLeaderBehind | ClockLeaderDrift => {
                let skew = match f {
                    ClockLeaderAhead => Skew::Ahead,
                    ClockLeaderBehind => Skew::Behind,
                    _ => Skew::Drift,
                };
                self.clock_in_charge(c, skew, self.duration_s.1).await
            }
            CrashPoint => {
                let wait = Duration::from_secs(self.duration_s.1.max(5));
                self.crash_point(c, wait).await
            }
            PowerLoss | PowerLossMajority => self.power_loss(c, f == PowerLoss).await,
            ClientPause | ClientKill | ClientCut | ClientLoss | RunPause | HungEndpoint => {
                self.client_side(c, f)
            }
            Member => self.add_member(c).await,
            RollingRestart => self.rolling_restart(c).await,
        }
    }

    /// A random member, or the leader.
    async fn one_or_leader(&mut self, c: &Cluster, random: bool) -> u64 {
        if random {
            pick(&mut self.rng, &c.members, 1)
                .first()
                .copied()
                .unwrap_or(1)
        } else {
            self.leader_or_random(c).await
        }
    }

    async fn kill(&mut self, c: &mut Cluster, f: Fault) -> Started {
        let members = c.members.clone();
        let n = members.len();
        let victims = match f {
            KillOne => pick(&mut self.rng, &members, 1),
            KillLeader => vec![self.leader_or_random(c).await],
            KillMinority => pick(&mut self.rng, &members, (n - 1) / 2),
            _ => members.clone(),
        };
        if f == KillAll {
            // Durability: a grant acknowledged now must survive.
            self.probe_before_kill().await;
        }
        for &v in &victims {
            c.kill(v).await;
        }
        Ok((Undo::Restart(victims.clone()), json!({"nodes": victims})))
    }

    async fn partition(&mut self, c: &mut Cluster, f: Fault) -> Started {
        let members = c.members.clone();
        let n = members.len();
        match f {
            PartitionOne | PartitionLeader => {
                let v = self.one_or_leader(c, f == PartitionOne).await;
                let rest: Vec<u64> = members.iter().copied().filter(|&x| x != v).collect();
                self.split(c, &[v], &rest)?;
                Ok((Undo::Heal, json!({"isolated": v})))
            }
            PartitionMajority => {
                let mut shuffled = pick(&mut self.rng, &members, n);
                let minority: Vec<u64> = shuffled.drain(..(n - 1) / 2).collect();
                self.split(c, &minority, &shuffled)?;
                Ok((
                    Undo::Heal,
                    json!({"minority": minority, "majority": shuffled}),
                ))
            }
            PartitionRing => self.ring(c),
            PartitionOneWay => {
                // The leader stops hearing one follower (its acks vanish)
                // while the follower still hears the leader.
                let l = self.leader_or_random(c).await;
                let others: Vec<u64> = members.iter().copied().filter(|&x| x != l).collect();
                let v = pick(&mut self.rng, &others, 1)
                    .first()
                    .copied()
                    .unwrap_or(l);
                c.hosts.drop_from(l, v)?;
                Ok((Undo::Heal, json!({"deaf": l, "unheard": v})))
            }
            _ => {
                let drop_30 = [
                    "-A",
                    "INPUT",
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    "0.3",
                    "-j",
                    "DROP",
                ];
                for &m in &members {
                    c.hosts.iptables(m, &drop_30)?;
                }
                Ok((Undo::Heal, json!({"probability": 0.3})))
            }
        }
    }

    /// Each node hears only its ring neighbours (a "bridge" with 3 nodes:
    /// the middle one sees both ends, the ends not each other). Every node
    /// still sees a majority in some sense, so leaders may flap but safety
    /// must hold.
    fn ring(&mut self, c: &Cluster) -> Started {
        let n = c.members.len();
        let ring = pick(&mut self.rng, &c.members, n);
        let mut cut = Vec::new();
        for i in 0..n {
            for j in (i + 1)..n {
                let adjacent = j == i + 1 || (n > 3 && i == 0 && j == n - 1);
                if !adjacent {
                    c.hosts.drop_from(ring[i], ring[j])?;
                    c.hosts.drop_from(ring[j], ring[i])?;
                    cut.push((ring[i], ring[j]));
                }
            }
        }
        Ok((Undo::Heal, json!({"ring": ring, "cut": cut})))
    }

    /// Restarts one node with a skewed clock or a clock running at a
    /// different rate.
    async fn clock(&mut self, c: &mut Cluster, f: Fault) -> Started {
        let v = self.one_or_leader(c, true).await;
        let mut flags = NodeFlags::default();
        if f == ClockSkew {
            let mag = self.rng.range(1_000, 60_000) as i64;
            flags.clock_offset_ms = if self.rng.chance(0.5) { mag } else { -mag };
        } else {
            // Within the checkers' drift allowance (0.1): leases are
            // promised only for bounded clock-rate error.
            flags.clock_rate = if self.rng.chance(0.5) { 1.05 } else { 0.95 };
        }
        c.restart(v, flags.clone()).await?;
        Ok((
            Undo::RestartPlain(vec![v]),
            json!({"node": v, "offset_ms": flags.clock_offset_ms, "rate": flags.clock_rate}),
        ))
    }

    /// Faults on the clients' side: stalls, killed holders, cut or lossy
    /// client hosts, paused jobs, a hung first endpoint.
    fn client_side(&mut self, c: &mut Cluster, f: Fault) -> Started {
        match f {
            ClientPause => {
                self.ctx.stall_requests.fetch_add(2, Ordering::SeqCst);
                Ok((Undo::ClearStalls, json!({"stalls": 2})))
            }
            ClientKill => {
                self.ctx.kill_holder.notify_waiters();
                Ok((Undo::Nothing, json!({})))
            }
            ClientCut | ClientLoss => {
                let cl = self.ctx.clients.clone();
                let i = cl.pick_target(&mut self.rng).ok_or_else(|| {
                    anyhow::anyhow!("no client hosts (the run workload, --hosts netns)")
                })?;
                let detail = cl.fault(c, i, f == ClientLoss)?;
                Ok((Undo::HealClient(i), detail))
            }
            RunPause => {
                let (i, pid) = self
                    .ctx
                    .clients
                    .pause_running(&mut self.rng)
                    .ok_or_else(|| anyhow::anyhow!("no run-workload job running"))?;
                Ok((Undo::HealClient(i), json!({"client": i, "pid": pid})))
            }
            _ => {
                // Every client lists this node first; paused, it accepts
                // connections (the kernel's backlog) and never answers.
                let v = crate::client_hosts::FIRST_NODE;
                c.pause(v);
                Ok((
                    Undo::Resume(vec![v]),
                    json!({"nodes": [v], "first_in_client_lists": true}),
                ))
            }
        }
    }

    /// Starts an extra node and adds it to the cluster.
    async fn add_member(&mut self, c: &mut Cluster) -> Started {
        let id = c.initial.iter().max().copied().unwrap_or(0) + 1;
        if c.members.contains(&id) {
            return Err(anyhow::anyhow!("extra member already present"));
        }
        let _ = std::fs::remove_dir_all(c.dir.join(format!("n{id}")));
        c.start(
            id,
            NodeFlags {
                join: true,
                ..NodeFlags::default()
            },
        )?;
        let body = serde_json::to_value(AddMemberRequest {
            id,
            peer_addr: c.hosts.peer_addr(id),
        })
        .unwrap_or_default();
        let r = self.membership(c, "POST", Some(body), None).await;
        match r {
            Ok(v) => {
                c.members.push(id);
                let ids: Vec<u64> = ClusterAnswer::deserialize(&v)
                    .map(|a| a.members.iter().map(|m| m.id).collect())
                    .unwrap_or_default();
                Ok((Undo::RemoveMember(id), json!({"added": id, "members": ids})))
            }
            Err(e) => {
                c.kill(id).await;
                Err(e)
            }
        }
    }

    /// Cuts all traffic between two groups, both ways.
    fn split(&self, c: &Cluster, a: &[u64], b: &[u64]) -> anyhow::Result<()> {
        for &x in a {
            for &y in b {
                c.hosts.drop_from(x, y)?;
                c.hosts.drop_from(y, x)?;
            }
        }
        Ok(())
    }

    /// Sends a membership change to any running member (the node forwards to
    /// the leader), retrying a bounded number of times.
    async fn membership(
        &self,
        c: &Cluster,
        method: &str,
        body: Option<Value>,
        id: Option<u64>,
    ) -> anyhow::Result<Value> {
        let mut last = String::from("no member answered");
        for attempt in 0..10u32 {
            for &m in &c.members {
                if !c.is_running(m) {
                    continue;
                }
                let base = c.hosts.url(m);
                let r = match (method, &body, id) {
                    ("POST", Some(b), _) => {
                        self.api
                            .post_json(
                                &format!("{base}/v1/cluster/members"),
                                b.clone(),
                                Some(&c.secret),
                            )
                            .await
                    }
                    (_, _, Some(i)) => {
                        self.api
                            .delete(&format!("{base}/v1/cluster/members/{i}"), Some(&c.secret))
                            .await
                    }
                    _ => return Err(anyhow::anyhow!("bad membership call")),
                };
                match r {
                    Ok((200, v)) => return Ok(v),
                    Ok((code, v)) => last = format!("HTTP {code}: {v}"),
                    Err(e) => last = format!("{e:#}"),
                }
            }
            sleep(Duration::from_millis(500 + 250 * attempt as u64)).await;
        }
        Err(anyhow::anyhow!(last))
    }

    async fn undo(&mut self, c: &mut Cluster, u: Undo) -> anyhow::Result<()> {
        match u {
            Undo::Restart(ids) => {
                for id in ids {
                    let flags = c
                        .nodes
                        .get(&id)
                        .map(|n| n.flags.clone())
                        .unwrap_or_default();
                    c.start(id, flags)?;
                }
                self.probe_after_restart(c).await;
            }
            Undo::Resume(ids) => ids.into_iter().for_each(|id| c.resume(id)),
            Undo::Heal => {
                for &m in &c.members.clone() {
                    c.hosts.heal(m)?;
                }
            }
            Undo::ClearStalls => self.ctx.stall_requests.store(0, Ordering::SeqCst),
            Undo::RestartPlain(ids) => {
                for id in ids {
                    c.restart(id, NodeFlags::default()).await?;
                }
            }
            Undo::RemoveMember(id) => {
                let r = self.membership(c, "DELETE", None, Some(id)).await;
                c.members.retain(|&m| m != id);
                c.kill(id).await;
                r?;
            }
            Undo::HealClient(i) => self.ctx.clients.heal(i)?,
            Undo::ClockLeader(id, witness) => {
                witness.finish().await;
                c.restart(id, NodeFlags::default()).await?;
            }
            Undo::CrashPoint(id, name) => self.undo_crash_point(c, id, &name).await?,
            Undo::Nothing => {}
        }
        Ok(())
    }

    /// Resumes, heals and restarts everything, whatever state it is in.
    pub async fn heal_all(&mut self, c: &mut Cluster) {
        let ids: Vec<u64> = c.nodes.keys().copied().collect();
        for id in &ids {
            c.resume(*id);
            // A node that aborted (a crash point) counts as not running.
            exited(c, *id);
        }
        if c.hosts.supports_network_faults() {
            for &m in &c.members.clone() {
                let _ = c.hosts.heal(m);
            }
        }
        self.ctx.stall_requests.store(0, Ordering::SeqCst);
        self.ctx.clients.heal_all();
        let extra: Vec<u64> = c
            .members
            .iter()
            .copied()
            .filter(|m| !c.initial.contains(m))
            .collect();
        for id in extra {
            let _ = self.undo(c, Undo::RemoveMember(id)).await;
        }
        for id in c.members.clone() {
            let plain = c
                .nodes
                .get(&id)
                .is_none_or(|n| n.flags == NodeFlags::default());
            if !c.is_running(id) || !plain {
                if let Err(e) = c.restart(id, NodeFlags::default()).await {
                    self.say(format!("restart node {id}: {e}"));
                }
            }
        }
    }
}

async fn sleep_until_or(d: Duration, limit: Instant) {
    let t = (Instant::now() + d).min(limit);
    tokio::time::sleep_until(t).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nemesis_lists_parse() {
        assert_eq!(parse_list("kill").map(|v| v.len()).ok(), Some(4));
        let v = parse_list("kill-one,pause,partition-ring,kill-one").expect("parse");
        assert_eq!(
            v,
            vec![KillOne, PauseOne, PauseLeader, ClientPause, PartitionRing]
        );
        assert_eq!(
            parse_list("all").map(|v| v.len()).ok(),
            Some(Fault::all().len())
        );
        assert_eq!(
            parse_list("power").ok(),
            Some(vec![PowerLoss, PowerLossMajority])
        );
        assert_eq!(parse_list("restart").ok(), Some(vec![RollingRestart]));
        assert!(parse_list("meteor").is_err());
        for f in Fault::all() {
            assert_eq!(parse_list(&f.name()).ok(), Some(vec![*f]));
        }
    }

    /// The names scripts, docs and histories use, unchanged by the enums.
    #[test]
    fn fault_names_are_the_historic_spellings() {
        let names: Vec<String> = Fault::all().iter().map(|f| f.name()).collect();
        for n in [
            "kill-one",
            "partition-oneway",
            "clock-leader-ahead",
            "crash-point",
            "hung-endpoint",
            "client-pause",
            "rolling-restart",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} in {names:?}");
        }
        assert_eq!(parse_list("none").ok(), Some(vec![]));
        assert_eq!(
            parse_list("clock-leader,crash,membership").ok(),
            Some(vec![
                ClockLeaderAhead,
                ClockLeaderBehind,
                ClockLeaderDrift,
                CrashPoint,
                Member
            ])
        );
    }
}
