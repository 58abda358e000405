//! Tokens (`--tokens-file`): who may call the client API, on which keys,
//! with which roles, and how often. The file is read at start (a bad file
//! refuses to start) and again on SIGHUP (a bad file then keeps the tokens
//! in force and logs an error).
//!
//! ```json
//! {"tokens":[{"name":"billing","sha256":"<hex sha256 of the secret>",
//!   "prefixes":["billing/"],"roles":["read","write"],"max_locks":1000,"rate_per_s":50}]}
//! ```
//!
//! Only hashes are kept: a request's `Authorization: Bearer <secret>` is
//! hashed and compared with every token's hash in constant time.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads of locks, owners and processes under the token's prefixes.
    Read,
    /// Acquire, extend and release under its prefixes; keep-alive and end
    /// of the processes it registered.
    Write,
    /// Cluster membership and every prefix.
    Admin,
}

impl Role {
    /// Its spelling in the tokens file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBody {
    tokens: Vec<FileToken>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToken {
    name: String,
    sha256: String,
    prefixes: Vec<String>,
    roles: Vec<Role>,
    #[serde(default)]
    max_locks: Option<u64>,
    #[serde(default)]
    rate_per_s: Option<f64>,
}

/// One token of the file.
#[derive(Debug)]
pub struct Token {
    /// Its name: recorded with the processes and locks it creates, and in logs.
    pub name: String,
    hash: [u8; 32],
    /// Key prefixes it may act on (`""`: every key).
    pub prefixes: Vec<String>,
    roles: BTreeSet<Role>,
    /// Lock records it may hold at once, if limited.
    pub max_locks: Option<u64>,
    /// Requests per second it may send, if limited (a token bucket holding
    /// one second's worth, at least one request).
    pub rate_per_s: Option<f64>,
}

impl Token {
    /// Whether it has `role` (admin has every role).
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role) || self.roles.contains(&Role::Admin)
    }

    /// Whether `key` lies under one of its prefixes (admin: every key).
    pub fn covers(&self, key: &str) -> bool {
        self.roles.contains(&Role::Admin) || self.prefixes.iter().any(|p| key.starts_with(p))
    }

    /// The prefixes a list of `prefix` may show to this token: where the
    /// requested prefix and one of the token's overlap, the longer of the
    /// two; none when they do not. Sorted, with none inside another.
    pub fn visible_prefixes(&self, prefix: &str) -> Vec<String> {
        if self.roles.contains(&Role::Admin) {
            return vec![prefix.to_string()];
        }
        let mut out: Vec<String> = self
            .prefixes
            .iter()
            .filter_map(|p| {
                if p.starts_with(prefix) {
                    Some(p.clone())
                } else if prefix.starts_with(p.as_str()) {
                    Some(prefix.to_string())
                } else {
                    None
                }
            })
            .collect();
        out.sort();
        out.dedup();
        let mut kept: Vec<String> = Vec::new();
        for p in out {
            if !kept.iter().any(|k| p.starts_with(k.as_str())) {
                kept.push(p);
            }
        }
        kept
    }
}

/// The tokens of one reading of the file.
#[derive(Debug, Default)]
pub struct TokenSet {
    tokens: Vec<Arc<Token>>,
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

impl TokenSet {
    /// Parses the file's text; the error names the token and the problem.
    pub fn parse(text: &str) -> Result<TokenSet, String> {
        let body: FileBody =
            serde_json::from_str(text).map_err(|e| format!("not a tokens file: {e}"))?;
        let mut names = BTreeSet::new();
        let mut tokens = Vec::new();
        for t in body.tokens {
            let name = t.name.trim().to_string();
            if name.is_empty() || name.len() > 128 {
                return Err("a token's name must be 1 to 128 bytes".into());
            }
            if !names.insert(name.clone()) {
                return Err(format!("token {name:?} appears twice"));
            }
            let hash = parse_hex32(&t.sha256).ok_or_else(|| {
                format!("token {name:?}: sha256 must be 64 hex digits (the SHA-256 of its secret)")
            })?;
            if t.roles.is_empty() {
                return Err(format!("token {name:?} has no roles"));
            }
            if t.rate_per_s.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
                return Err(format!(
                    "token {name:?}: rate_per_s must be a positive number"
                ));
            }
            tokens.push(Arc::new(Token {
                name,
                hash,
                prefixes: t.prefixes,
                roles: t.roles.into_iter().collect(),
                max_locks: t.max_locks,
                rate_per_s: t.rate_per_s,
            }));
        }
        Ok(TokenSet { tokens })
    }

    /// Reads and parses a tokens file.
    pub fn load(path: &Path) -> Result<TokenSet, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --tokens-file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("--tokens-file {}: {e}", path.display()))
    }

    /// The token whose secret this is. Every token's hash is compared, in
    /// constant time, whichever matches.
    pub fn find(&self, secret: &[u8]) -> Option<Arc<Token>> {
        let h = sha256(secret);
        let mut found = None;
        for t in &self.tokens {
            if bool::from(t.hash.ct_eq(&h)) {
                found = Some(t.clone());
            }
        }
        found
    }

    /// The token with the same secret as `old` in this set, if any (a
    /// reload keeps a token's secret, so its hash, while its grants change).
    pub fn same_secret(&self, old: &Token) -> Option<Arc<Token>> {
        self.tokens.iter().find(|t| t.hash == old.hash).cloned()
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the file lists no token (every request is then refused).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

struct Bucket {
    level: f64,
    at: Instant,
}

/// The node's tokens: `None` when authentication is off (no
/// `--tokens-file`), plus each token's request budget.
pub struct Tokens {
    path: Option<PathBuf>,
    current: RwLock<Option<Arc<TokenSet>>>,
    buckets: Mutex<HashMap<String, Bucket>>,
    /// Counts successful reloads: long-lived requests (watch streams) check
    /// their token again when it moves.
    reloads: tokio::sync::watch::Sender<u64>,
}

impl Tokens {
    /// Reads `path` if given. A file that cannot be read or parsed is an
    /// error: a node never starts open when it was asked to authenticate.
    pub fn open(path: Option<&Path>) -> Result<Tokens, String> {
        let current = match path {
            Some(p) => Some(Arc::new(TokenSet::load(p)?)),
            None => None,
        };
        Ok(Tokens {
            path: path.map(Path::to_path_buf),
            current: RwLock::new(current),
            buckets: Mutex::new(HashMap::new()),
            reloads: tokio::sync::watch::Sender::new(0),
        })
    }

    /// The tokens in force, or `None` when authentication is off.
    pub fn current(&self) -> Option<Arc<TokenSet>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the file again. A file that cannot be read or parsed keeps the
    /// tokens in force (logged as an error).
    pub fn reload(&self) {
        let Some(path) = &self.path else {
            return;
        };
        match TokenSet::load(path) {
            Ok(set) => {
                tracing::info!(tokens = set.len(), file = %path.display(), "tokens file reloaded");
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(set));
                self.reloads.send_modify(|n| *n += 1);
            }
            Err(e) => {
                tracing::error!(error = %e, "tokens file not reloaded: keeping the tokens in force")
            }
        }
    }

    /// Changes on every successful reload.
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reloads.subscribe()
    }

    /// Whether `token`, as reloaded, still shows exactly `prefixes` to a
    /// reader asking for `prefix` (false once it is gone or lost the read
    /// role). Authentication off: always true.
    pub fn still_shows(&self, token: &Token, prefix: &str, prefixes: &[String]) -> bool {
        let Some(set) = self.current() else {
            return true;
        };
        set.same_secret(token)
            .is_some_and(|t| t.has(Role::Read) && t.visible_prefixes(prefix).as_slice() == prefixes)
    }

    /// Takes one request from `token`'s budget, or says how long until one
    /// is available.
    pub fn take(&self, token: &Token) -> Result<(), Duration> {
        let Some(rate) = token.rate_per_s else {
            return Ok(());
        };
        let capacity = rate.max(1.0);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        // Bounded by the names of the file's tokens: drop those gone.
        if buckets.len() > 4 * self.current().map_or(0, |s| s.len()) + 16 {
            buckets.clear();
        }
        let b = buckets.entry(token.name.clone()).or_insert(Bucket {
            level: capacity,
            at: now,
        });
        let elapsed = now.duration_since(b.at).as_secs_f64();
        b.level = (b.level + elapsed * rate).min(capacity);
        b.at = now;
        if b.level >= 1.0 {
            b.level -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64((1.0 - b.level) / rate))
    }

    /// Reloads the file on every SIGHUP, for as long as the node runs. The
    /// handler is in place when this returns (a SIGHUP before it would stop
    /// the process). Does nothing without a tokens file.
    pub fn reload_on_sighup(self: &Arc<Self>) {
        use tokio::signal::unix::{signal, SignalKind};
        if self.path.is_none() {
            return;
        }
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: the tokens file will not be reloaded");
            return;
        };
        let me = self.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                me.reload();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        sha256(b).iter().map(|x| format!("{x:02x}")).collect()
    }

    fn set() -> TokenSet {
        let text = format!(
            r#"{{"tokens":[
              {{"name":"billing","sha256":"{}","prefixes":["billing/"],"roles":["read","write"]}},
              {{"name":"ops","sha256":"{}","prefixes":[],"roles":["admin"],"rate_per_s":2}}]}}"#,
            hex(b"s1"),
            hex(b"s2")
        );
        TokenSet::parse(&text).expect("parses")
    }

    #[test]
    fn finds_tokens_by_secret_and_judges_keys() {
        let s = set();
        let b = s.find(b"s1").expect("billing");
        assert_eq!(b.name, "billing");
        assert!(s.find(b"s3").is_none());
        assert!(b.covers("billing/x") && !b.covers("ops/x"));
        assert!(b.has(Role::Write) && !b.has(Role::Admin));
        let ops = s.find(b"s2").expect("ops");
        assert!(ops.covers("anything") && ops.has(Role::Read));
    }

    #[test]
    fn list_prefixes_are_the_overlaps() {
        let t = set().find(b"s1").expect("billing");
        assert_eq!(t.visible_prefixes(""), vec!["billing/"]);
        assert_eq!(t.visible_prefixes("billing/a"), vec!["billing/a"]);
        assert!(t.visible_prefixes("ops/").is_empty());
    }

    #[test]
    fn bad_files_are_refused_by_name() {
        for (text, why) in [
            (
                r#"{"tokens":[{"name":"a","sha256":"xyz","prefixes":[],"roles":["read"]}]}"#,
                "64 hex",
            ),
            (
                r#"{"tokens":[{"name":"a","sha256":"00","prefixes":[],"roles":["root"]}]}"#,
                "tokens file",
            ),
            (r#"{"tokens":[],"extra":1}"#, "tokens file"),
        ] {
            let e = TokenSet::parse(text).expect_err(text);
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn the_bucket_refuses_past_the_rate() {
        let s = set();
        let ops = s.find(b"s2").expect("ops");
        let tokens = Tokens::open(None).expect("no file");
        assert!(tokens.take(&ops).is_ok());
        assert!(tokens.take(&ops).is_ok());
        let wait = tokens.take(&ops).expect_err("third in the same instant");
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
    }
}
