//! Test-only mutations: each breaks one safety rule on purpose, so that the
//! fault suite can prove its checkers able to fail (a negative control per
//! checker, as Jepsen does with its own bugs).
//!
//! Compiled in only with the `mutations` cargo feature, which release images
//! never enable. With the feature, `LOCKER_TEST_MUTATION=<name>` in the node's
//! environment picks at most one mutation at start; without the feature
//! [`active`] is the constant `false` and the optimiser removes every branch.
//!
//! The choice is read once and is the same for every apply, so a mutated node
//! is still deterministic (replicas started with the same variable agree).

/// One deliberately broken safety rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutation {
    /// The takeover marker does not shift live deadlines: a new leader whose
    /// clock runs ahead ends leases early. Caught by the lease checker.
    NoTakeoverShift,
    /// Leases are judged to end a little before their deadline (by 1/4 of
    /// their ttl). Caught by the lease and mutex checkers.
    EarlyLease,
    /// The fencing token is not the granting log index (it repeats across
    /// leaders). Caught by the fencing checker.
    TokenNotIndex,
    /// Appends are acknowledged before the fsync. Caught by the durability
    /// checkers after a kill of every node.
    AckBeforeFsync,
}

impl Mutation {
    /// The name used in `LOCKER_TEST_MUTATION`.
    pub fn name(self) -> &'static str {
        match self {
            Mutation::NoTakeoverShift => "no-takeover-shift",
            Mutation::EarlyLease => "early-lease",
            Mutation::TokenNotIndex => "token-not-index",
            Mutation::AckBeforeFsync => "ack-before-fsync",
        }
    }

    /// Every mutation, for `--help` texts and the fault suite.
    pub const ALL: [Mutation; 4] = [
        Mutation::NoTakeoverShift,
        Mutation::EarlyLease,
        Mutation::TokenNotIndex,
        Mutation::AckBeforeFsync,
    ];

    /// Parses a name of [`Mutation::name`].
    pub fn parse(name: &str) -> Option<Mutation> {
        Mutation::ALL.into_iter().find(|m| m.name() == name)
    }
}

#[cfg(feature = "mutations")]
fn chosen() -> Option<Mutation> {
    static CHOSEN: std::sync::OnceLock<Option<Mutation>> = std::sync::OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let name = std::env::var("LOCKER_TEST_MUTATION").ok()?;
        match Mutation::parse(name.trim()) {
            Some(m) => {
                tracing::warn!(
                    mutation = m.name(),
                    "TEST MUTATION ACTIVE: a safety rule is broken on purpose"
                );
                Some(m)
            }
            None => {
                // A typo must not silently run an unmutated node in a run that
                // expects a failure: refuse to start.
                eprintln!("locker-node: unknown LOCKER_TEST_MUTATION {name:?}");
                std::process::exit(2);
            }
        }
    })
}

/// Whether mutation `m` is active in this process.
#[inline]
pub fn active(m: Mutation) -> bool {
    #[cfg(feature = "mutations")]
    {
        chosen() == Some(m)
    }
    #[cfg(not(feature = "mutations"))]
    {
        let _ = m;
        false
    }
}

/// Logs the active mutation, if any, at start (call once from `main`).
pub fn announce() {
    #[cfg(feature = "mutations")]
    {
        let _ = chosen();
    }
}
