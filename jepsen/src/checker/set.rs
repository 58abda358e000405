//! Checker 4: no lost acknowledged writes in the protected set.
//!
//! Clients append unique elements (`f: "append"`, value `{"element": n}`)
//! to a resource under the lock; `ok` means the resource acknowledged it.
//! A final read (`f: "final-read"`, value `{"elements": [...]}`) must contain
//! every acknowledged element exactly once, and nothing that was never
//! attempted. Elements refused by the resource (`fail`) must be absent;
//! unknown ones (`info`) may be either. History key = the resource's name.

use super::{CheckOptions, Validity, Verdict};
use crate::history::{OpType, Pair};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashMap};

fn sample(s: &BTreeSet<u64>) -> Vec<u64> {
    s.iter().take(20).copied().collect()
}

/// What the workers saw happen to their appends of one resource.
#[derive(Default)]
struct Appends {
    acked: BTreeSet<u64>,
    refused: BTreeSet<u64>,
    unknown: BTreeSet<u64>,
    final_read: Option<Vec<u64>>,
}

fn appends_of(pairs: &[Pair], key: &str) -> Appends {
    let mut a = Appends::default();
    for p in pairs.iter().filter(|p| p.key.as_deref() == Some(key)) {
        match p.f.as_str() {
            "append" => {
                let Some(e) = p.req.element else { continue };
                match p.kind {
                    OpType::Ok => a.acked.insert(e),
                    OpType::Fail => a.refused.insert(e),
                    _ => a.unknown.insert(e),
                };
            }
            "final-read" if p.is_ok() => a.final_read = p.res.elements.clone(),
            _ => {}
        }
    }
    a
}

/// Elements of `of` that pass `keep`.
fn those(of: impl IntoIterator<Item = u64>, keep: impl Fn(&u64) -> bool) -> BTreeSet<u64> {
    of.into_iter().filter(|e| keep(e)).collect()
}

/// Judges one resource.
pub fn check_key(pairs: &[Pair], key: &str) -> (Validity, serde_json::Value) {
    let a = appends_of(pairs, key);
    let Some(read) = a.final_read else {
        return (
            Validity::Unknown,
            json!({"reason": "no final read", "acknowledged": a.acked.len()}),
        );
    };
    let mut counts: HashMap<u64, usize> = HashMap::new();
    for e in &read {
        *counts.entry(*e).or_default() += 1;
    }
    let present = |e: &u64| counts.contains_key(e);
    let lost = those(a.acked.iter().copied(), |e| !present(e));
    let duplicated = those(
        counts.iter().filter(|(_, &c)| c > 1).map(|(e, _)| *e),
        |_| true,
    );
    let unexpected = those(counts.keys().copied(), |e| {
        !a.acked.contains(e) && !a.refused.contains(e) && !a.unknown.contains(e)
    });
    let refused_present = those(a.refused.iter().copied(), present);
    let recovered = a.unknown.iter().filter(|e| present(e)).count();
    let ok = lost.is_empty()
        && duplicated.is_empty()
        && unexpected.is_empty()
        && refused_present.is_empty();
    (
        if ok {
            Validity::Valid
        } else {
            Validity::Invalid
        },
        json!({
            "acknowledged": a.acked.len(),
            "refused": a.refused.len(),
            "unknown": a.unknown.len(),
            "unknown_present": recovered,
            "final_size": read.len(),
            "lost": lost.len(), "lost_sample": sample(&lost),
            "duplicated": duplicated.len(), "duplicated_sample": sample(&duplicated),
            "unexpected": unexpected.len(), "unexpected_sample": sample(&unexpected),
            "refused_but_present": refused_present.len(),
        }),
    )
}

fn verdict(name: &str, pairs: &[Pair], keys: &[String]) -> Verdict {
    let mut valid = Validity::Valid;
    let mut details = BTreeMap::new();
    let mut lost = 0u64;
    let mut acked = 0u64;
    for k in keys {
        let (v, d) = check_key(pairs, k);
        valid = valid.and(v);
        lost += d["lost"].as_u64().unwrap_or(0);
        acked += d["acknowledged"].as_u64().unwrap_or(0);
        details.insert(k.clone(), d);
    }
    let summary = match valid {
        Validity::Valid if keys.is_empty() => "no protected-set workload in this run".to_string(),
        Validity::Valid => format!("all {acked} acknowledged appends present exactly once"),
        Validity::Invalid => {
            format!("{lost} of {acked} acknowledged appends lost (or duplicates/strangers)")
        }
        Validity::Unknown => "no final read".to_string(),
    };
    Verdict {
        checker: name.into(),
        valid,
        summary,
        details: json!({"resources": details}),
    }
}

/// Splits resources into fenced ones (judged) and unfenced ones (the negative
/// control, reported separately). Returns `None` for the latter when absent.
pub fn check_split(pairs: &[Pair], opts: &CheckOptions) -> (Verdict, Option<Verdict>) {
    let mut keys: BTreeSet<String> = BTreeSet::new();
    for p in pairs {
        if matches!(p.f.as_str(), "append" | "final-read") {
            if let Some(k) = &p.key {
                keys.insert(k.clone());
            }
        }
    }
    let (unfenced, fenced): (Vec<String>, Vec<String>) = keys
        .into_iter()
        .partition(|k| opts.unfenced_keys.contains(k));
    let f = verdict("no-lost-writes", pairs, &fenced);
    let u = (!unfenced.is_empty()).then(|| {
        verdict(
            "no-lost-writes-unfenced (negative control)",
            pairs,
            &unfenced,
        )
    });
    (f, u)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::testkit::H;
    use crate::history::pair;
    use serde_json::json;

    fn appends(h: &mut H, key: &str) {
        h.inv(1, "append", key, json!({"element":1,"token":5}), 0)
            .ok(1, "append", key, json!({}), 1);
        h.inv(2, "append", key, json!({"element":2,"token":3}), 2)
            .fail(2, "append", key, json!({}), 3);
        h.inv(1, "append", key, json!({"element":3,"token":6}), 4)
            .info(1, "append", key, json!({}), 5);
        h.inv(3, "append", key, json!({"element":4,"token":7}), 6)
            .ok(3, "append", key, json!({}), 7);
    }

    fn final_read(h: &mut H, key: &str, els: &[u64], t: u64) {
        h.inv(t, "final-read", key, json!({}), t).ok(
            t,
            "final-read",
            key,
            json!({"elements": els}),
            t + 1,
        );
    }

    #[test]
    fn all_acked_present_is_valid() {
        let mut h = H::new();
        appends(&mut h, "set");
        final_read(&mut h, "set", &[1, 3, 4], 10);
        let (f, u) = check_split(&pair(&h.build()), &CheckOptions::default());
        assert_eq!(f.valid, Validity::Valid, "{}", f.details);
        assert!(u.is_none());
    }

    #[test]
    fn lost_duplicate_and_stranger_are_caught() {
        for els in [&[1u64][..], &[1, 4, 4], &[1, 4, 99], &[1, 2, 4]] {
            let mut h = H::new();
            appends(&mut h, "set");
            final_read(&mut h, "set", els, 10);
            let (f, _) = check_split(&pair(&h.build()), &CheckOptions::default());
            assert_eq!(f.valid, Validity::Invalid, "{els:?} {}", f.details);
        }
    }

    #[test]
    fn missing_final_read_is_unknown() {
        let mut h = H::new();
        appends(&mut h, "set");
        let (f, _) = check_split(&pair(&h.build()), &CheckOptions::default());
        assert_eq!(f.valid, Validity::Unknown);
    }

    #[test]
    fn unfenced_resource_is_judged_separately() {
        let mut h = H::new();
        appends(&mut h, "set");
        final_read(&mut h, "set", &[1, 4], 10);
        appends(&mut h, "set-unfenced");
        final_read(&mut h, "set-unfenced", &[4], 20);
        let opts = CheckOptions {
            unfenced_keys: vec!["set-unfenced".into()],
            ..CheckOptions::default()
        };
        let (f, u) = check_split(&pair(&h.build()), &opts);
        assert_eq!(f.valid, Validity::Valid);
        let u = u.expect("negative control verdict");
        assert_eq!(u.valid, Validity::Invalid);
        assert_eq!(u.details["resources"]["set-unfenced"]["lost"], 1);
    }
}
