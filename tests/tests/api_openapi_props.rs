//! Property tests of the lock and process routes, generated from the node's
//! own `/openapi.json` (one real node, one document):
//!
//! (a) requests whose every value lies inside its documented range, length
//!     and pattern are never answered 400;
//! (b) a request with one value pushed just outside its documented bound
//!     (below `minimum`, above `maximum`, over `x-locker-max-bytes`, not
//!     matching `pattern`, an owner hash part over `x-locker-part-max-bytes`,
//!     a trace matching `x-locker-refused-pattern`, the wrong type, a missing
//!     required field, an unknown field or query parameter; every such way
//!     the document gives, each a few times) is answered a documented 4xx with
//!     the error body `{"error":{"code":...}}` whose code that status lists
//!     (`x-locker-error-codes`), and changes nothing (no lock or process
//!     record appears; the key stays free);
//! (c) every status the node answers is in the operation's `responses`.
//!
//! Nothing here knows a bound: each comes from the document, so changing a
//! bound in the document (or in the node alone) makes this test fail. The
//! only rules taken from the document's prose are those it cannot state as a
//! schema: an owner hash names the path's key and its parts keep within
//! `x-locker-part-max-bytes`, and without an owner hash a trace must not
//! match `x-locker-refused-pattern`.

use std::cell::RefCell;
use std::collections::HashSet;

use locker_tests::{enc, get, http, Answer, Cluster};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::string::string_regex;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use regex::Regex;
use serde_json::{json, Map, Value};

/// Cases per operation for (a), and per way of breaking a request for (b)
/// (every way the document gives is tried): modest, so the test stays well
/// under a minute in a debug build on two cores.
const VALID_CASES: u32 = 64;
const BROKEN_CASES: u32 = 4;

/// The routes under test: method and path as the document names them.
const OPS: [(&str, &str); 9] = [
    ("post", "/v1/locks/{key}/acquire"),
    ("post", "/v1/locks/{key}/extend"),
    ("post", "/v1/locks/{key}/release"),
    ("get", "/v1/locks/{key}"),
    ("get", "/v1/locks"),
    ("get", "/v1/owners/{owner_hash}"),
    ("put", "/v1/processes/{process_hash}"),
    ("delete", "/v1/processes/{process_hash}"),
    ("get", "/v1/processes"),
];

const MAX_BYTES: &str = "x-locker-max-bytes";
const MAX_JSON_BYTES: &str = "x-locker-max-json-bytes";
const REFUSED_PATTERN: &str = "x-locker-refused-pattern";
const PART_MAX_BYTES: &str = "x-locker-part-max-bytes";
const ERROR_CODES: &str = "x-locker-error-codes";

/// One request, as generated: values by parameter or field name.
#[derive(Debug, Clone)]
struct Req {
    op: usize,
    path: Vec<(String, String)>,
    query: Vec<(String, String)>,
    /// `None`: no body at all.
    body: Option<Value>,
    /// What was pushed out of bounds, for (b)'s messages.
    broken: String,
}

/// The document, with `$ref`s resolved on demand.
struct Doc(Value);

impl Doc {
    fn op(&self, i: usize) -> &Value {
        let (method, path) = OPS[i];
        &self.0["paths"][path][method]
    }

    fn resolve<'a>(&'a self, v: &'a Value) -> &'a Value {
        match v["$ref"].as_str() {
            Some(r) => {
                let name = r.rsplit('/').next().unwrap_or_default();
                &self.0["components"]["schemas"][name]
            }
            None => v,
        }
    }

    fn params<'a>(&'a self, i: usize, place: &str) -> Vec<&'a Value> {
        self.op(i)["parameters"]
            .as_array()
            .map(|ps| ps.iter().filter(|p| p["in"] == place).collect())
            .unwrap_or_default()
    }

    /// The request body's object schema, if the operation takes one.
    fn body(&self, i: usize) -> Option<&Value> {
        let rb = &self.op(i)["requestBody"];
        if rb.is_null() {
            return None;
        }
        Some(self.resolve(&rb["content"]["application/json"]["schema"]))
    }
}

/// A documented pattern as the regex crate reads it (the document writes
/// them so ECMA-262 and `regex` agree).
fn regex_of(pattern: &str) -> Regex {
    thread_local! {
        // Compiled once: a Unicode class takes milliseconds in a debug build.
        static CACHE: RefCell<std::collections::HashMap<String, Regex>> = RefCell::default();
    }
    CACHE.with(|c| {
        c.borrow_mut()
            .entry(pattern.to_string())
            .or_insert_with(|| {
                Regex::new(pattern).unwrap_or_else(|e| panic!("pattern {pattern:?}: {e}"))
            })
            .clone()
    })
}

/// A documented pattern without its anchors, for generation.
fn unanchored(pattern: &str) -> &str {
    let p = pattern.strip_prefix('^').unwrap_or(pattern);
    p.strip_suffix('$').unwrap_or(p)
}

fn types(schema: &Value) -> Vec<&str> {
    match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    }
}

/// The byte bound of a string schema (`x-locker-max-bytes`, else `maxLength`).
fn max_bytes(schema: &Value) -> Option<usize> {
    schema[MAX_BYTES]
        .as_u64()
        .or_else(|| schema["maxLength"].as_u64())
        .map(|n| n as usize)
}

/// Whether `s` lies inside a string schema's documented bounds.
fn string_ok(schema: &Value, s: &str) -> bool {
    let min = schema["minLength"].as_u64().unwrap_or(0) as usize;
    s.chars().count() >= min
        && max_bytes(schema).is_none_or(|m| s.len() <= m)
        && schema["maxLength"]
            .as_u64()
            .is_none_or(|m| s.chars().count() <= m as usize)
        && schema["pattern"]
            .as_str()
            .is_none_or(|p| regex_of(p).is_match(s))
}

/// `s` grown with `x` (at its end, else at its start, whichever keeps it
/// inside the pattern) to exactly `bytes` bytes; `None` if neither does.
fn grown(schema: &Value, s: &str, bytes: usize) -> Option<String> {
    let pad = "x".repeat(bytes.checked_sub(s.len())?);
    let fits = |c: &String| {
        schema["pattern"]
            .as_str()
            .is_none_or(|p| regex_of(p).is_match(c))
    };
    [format!("{s}{pad}"), format!("{pad}{s}")]
        .into_iter()
        .find(fits)
}

/// Strings inside a string schema: from its pattern (or any text), and
/// sometimes grown to its exact byte bound.
fn valid_string(schema: &Value) -> BoxedStrategy<String> {
    let source = schema["pattern"]
        .as_str()
        .map_or("(?s:.{0,40})", unanchored)
        .to_string();
    let base = string_regex(&source)
        .unwrap_or_else(|e| panic!("cannot generate from {source:?}: {e}"))
        .boxed();
    let s1 = schema.clone();
    let s2 = schema.clone();
    let either = match max_bytes(schema) {
        Some(max) => {
            let at_bound = base
                .clone()
                .prop_filter_map("cannot grow to the bound", move |s| grown(&s1, &s, max));
            prop_oneof![3 => base, 1 => at_bound].boxed()
        }
        None => base,
    };
    either
        .prop_filter("outside the documented bounds", move |s| string_ok(&s2, s))
        .boxed()
}

/// Integers inside `minimum..=maximum`, the bounds themselves often.
fn valid_integer(schema: &Value) -> BoxedStrategy<u64> {
    let lo = schema["minimum"].as_u64().unwrap_or(0);
    let hi = schema["maximum"].as_u64().unwrap_or(u64::from(u32::MAX));
    prop_oneof![Just(lo), Just(hi), lo..=hi].boxed()
}

/// Any JSON within `x-locker-max-json-bytes` as compact text, sometimes
/// exactly at it.
fn valid_any(schema: &Value) -> BoxedStrategy<Value> {
    let max = schema[MAX_JSON_BYTES].as_u64().unwrap_or(1024) as usize;
    prop_oneof![
        3 => (string_regex("[a-z]{1,8}").expect("regex"), any::<i32>(), any::<bool>())
            .prop_map(|(s, n, b)| json!({"host": s, "n": n, "up": b, "tags": [s]})),
        1 => Just(json!({"pad": "x".repeat(max - r#"{"pad":""}"#.len())})),
    ]
    .boxed()
}

/// A value inside a field's schema.
fn valid_value(schema: &Value) -> BoxedStrategy<Value> {
    let ts = types(schema);
    let nullable = ts.contains(&"null");
    let inner = if ts.contains(&"integer") {
        valid_integer(schema).prop_map(Value::from).boxed()
    } else if ts.contains(&"string") {
        valid_string(schema).prop_map(Value::from).boxed()
    } else if ts.contains(&"boolean") {
        any::<bool>().prop_map(Value::from).boxed()
    } else {
        valid_any(schema)
    };
    if nullable {
        prop_oneof![5 => inner, 1 => Just(Value::Null)].boxed()
    } else {
        inner
    }
}

/// A query or path parameter's text.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Strategies for each field of a body schema: a valid value, or `None`
/// (left out) for an optional field.
fn body_fields(doc: &Doc, body: &Value) -> Vec<BoxedStrategy<(String, String, Option<Value>)>> {
    let required: Vec<&str> = body["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut parts = Vec::new();
    for (name, schema) in body["properties"].as_object().expect("properties") {
        let name = name.clone();
        let required = required.contains(&name.as_str());
        parts.push(
            (valid_value(doc.resolve(schema)), any::<bool>())
                .prop_map(move |(v, keep)| {
                    (
                        "body".to_string(),
                        name.clone(),
                        (required || keep).then_some(v),
                    )
                })
                .boxed(),
        );
    }
    parts
}

/// A valid request of operation `i`: every parameter and field inside its
/// schema, optional ones sometimes left out.
fn valid_request(doc: &Doc, i: usize) -> BoxedStrategy<Req> {
    let mut parts: Vec<BoxedStrategy<(String, String, Option<Value>)>> = Vec::new();
    for place in ["path", "query"] {
        for p in doc.params(i, place) {
            let name = p["name"].as_str().expect("name").to_string();
            let place = place.to_string();
            let v = valid_value(&p["schema"]);
            // A path parameter is always required, whatever it says.
            let required = p["required"] == true || place == "path";
            parts.push(
                (v, any::<bool>())
                    .prop_map(move |(v, keep)| {
                        let v = (required || keep).then_some(v);
                        (place.clone(), name.clone(), v)
                    })
                    .boxed(),
            );
        }
    }
    if let Some(body) = doc.body(i) {
        parts.extend(body_fields(doc, body));
    }
    let has_body = doc.body(i).is_some();
    let empty_ok = doc
        .body(i)
        .is_some_and(|b| b["required"].as_array().is_none_or(|r| r.is_empty()));
    (parts, any::<bool>())
        .prop_map(move |(parts, empty)| {
            let mut req = Req {
                op: i,
                path: vec![],
                query: vec![],
                body: has_body.then(|| Value::Object(Map::new())),
                broken: String::new(),
            };
            for (place, name, v) in parts {
                let Some(v) = v else { continue };
                match place.as_str() {
                    "path" => req.path.push((name, text(&v))),
                    "query" => req.query.push((name, text(&v))),
                    _ => {
                        if let Some(Value::Object(m)) = req.body.as_mut() {
                            m.insert(name, v);
                        }
                    }
                }
            }
            if empty_ok && empty && req.body == Some(json!({})) {
                req.body = None;
            }
            req
        })
        .boxed()
}

/// The rules the document states in prose: a body's owner hash names the
/// path's key (its key part is replaced by the path's), and without one a
/// trace must not match `x-locker-refused-pattern`. `None` when the request
/// cannot be made to follow them.
fn follow_prose(doc: &Doc, mut req: Req) -> Option<Req> {
    let key = req
        .path
        .iter()
        .find(|(n, _)| n == "key")
        .map(|(_, k)| k.clone());
    let body_schema = doc.body(req.op);
    let Some(Value::Object(body)) = req.body.as_mut() else {
        return Some(req);
    };
    if let (Some(Value::String(o)), Some(key)) = (body.get("owner_hash"), &key) {
        let parts = locker_proto::parse_owner_hash(o)?;
        let rebuilt = match parts.trace {
            Some(t) => format!("{key}@{}.{}#{t}", parts.process_hash, parts.seq),
            None => format!("{key}@{}.{}", parts.process_hash, parts.seq),
        };
        let schema = doc.resolve(&body_schema?["properties"]["owner_hash"]);
        let parts_max = &schema[PART_MAX_BYTES];
        let fits = |part: Option<&str>, name: &str| {
            part.is_none_or(|p| parts_max[name].as_u64().is_none_or(|m| p.len() as u64 <= m))
        };
        let follows = locker_proto::parse_owner_hash(&rebuilt).is_some_and(|p| {
            p.key == key && fits(Some(p.process_hash), "process_hash") && fits(p.trace, "trace")
        });
        if !follows || !string_ok(schema, &rebuilt) {
            return None;
        }
        body.insert("owner_hash".into(), rebuilt.into());
    }
    let no_owner = !matches!(body.get("owner_hash"), Some(Value::String(_)));
    if let (Some(Value::String(t)), true) = (body.get("trace"), no_owner) {
        let schema = doc.resolve(&body_schema?["properties"]["trace"]);
        if let Some(p) = schema[REFUSED_PATTERN].as_str() {
            if regex_of(p).is_match(t) {
                return None;
            }
        }
    }
    Some(req)
}

/// One way to push a value out of its schema, or `None` if the schema
/// states no bound of that kind.
/// `as_text`: the value travels as text (a path or query parameter), where
/// any text is a string.
fn break_value(
    schema: &Value,
    valid: &Value,
    as_text: bool,
    how: u8,
    pos: usize,
) -> Option<(Value, String)> {
    let ts = types(schema);
    if ts.contains(&"integer") {
        let lo = schema["minimum"].as_u64()?;
        let hi = schema["maximum"].as_u64()?;
        return Some(match how {
            0 => (
                json!(lo as i64 - 1),
                format!("{} (minimum {lo})", lo as i64 - 1),
            ),
            1 => (json!(hi + 1), format!("{} (maximum {hi})", hi + 1)),
            2 => (json!("soon"), "`soon` for an integer".into()),
            3 => (
                json!(lo as f64 + 0.5),
                format!("{} (not an integer)", lo as f64 + 0.5),
            ),
            _ => return None,
        });
    }
    if ts.contains(&"boolean") {
        return (how == 0).then(|| (json!("maybe"), "`maybe` for a boolean".into()));
    }
    if ts.contains(&"string") {
        let s = valid.as_str().unwrap_or_default();
        return match how {
            0 => {
                let max = max_bytes(schema)?;
                let long = grown(schema, s, max + 1)?;
                Some((long.into(), format!("{} bytes (at most {max})", max + 1)))
            }
            1 => against_pattern(schema, s, pos),
            2 => {
                let min = schema["minLength"].as_u64()?;
                (min > 0).then(|| (json!(""), format!("empty (minLength {min})")))
            }
            3 => (!as_text).then(|| (json!(7), "a number for a string".into())),
            4 => part_too_long(schema, s, pos),
            5 => {
                // A value matching the pattern the node refuses (a trace
                // that would make the node's owner hash ambiguous).
                let p = schema[REFUSED_PATTERN].as_str()?;
                let bad = format!("{s}@h/1.2.3");
                let fits = regex_of(p).is_match(&bad) && string_ok(schema, &bad);
                fits.then(|| (bad.clone().into(), format!("{bad:?} (matches {p})")))
            }
            _ => None,
        };
    }
    if how != 0 {
        return None;
    }
    let max = schema[MAX_JSON_BYTES].as_u64()? as usize;
    let pad = "x".repeat(max + 1 - r#"{"pad":""}"#.len());
    Some((
        json!({ "pad": pad }),
        format!("{} bytes of JSON (at most {max})", max + 1),
    ))
}

/// `s` with a character the pattern refuses inserted at a position chosen by
/// `pos` (or the empty, `.` or `..` text), still inside the byte bound.
fn against_pattern(schema: &Value, s: &str, pos: usize) -> Option<(Value, String)> {
    let p = schema["pattern"].as_str()?;
    let re = regex_of(p);
    let at = s
        .char_indices()
        .nth(pos % (s.chars().count() + 1))
        .map_or(s.len(), |(i, _)| i);
    let mut candidates: Vec<String> = ["\n", "\r", "\u{2028}", "\u{2029}", "/", ".", "@", "#"]
        .iter()
        .map(|b| format!("{}{b}{}", &s[..at], &s[at..]))
        .chain([String::new(), ".".into(), "..".into()])
        .filter(|c| !re.is_match(c) && max_bytes(schema).is_none_or(|m| c.len() <= m))
        .collect();
    if candidates.is_empty() {
        return None;
    }
    let c = candidates.swap_remove(pos % candidates.len());
    Some((c.clone().into(), format!("{c:?} (not {p})")))
}

/// An owner hash one of whose parts (`x-locker-part-max-bytes`) is one byte
/// over its bound, the whole still inside its own.
fn part_too_long(schema: &Value, s: &str, pos: usize) -> Option<(Value, String)> {
    let parts = schema[PART_MAX_BYTES].as_object()?;
    let p = locker_proto::parse_owner_hash(s)?;
    let (name, max) = parts.iter().nth(pos % parts.len())?;
    let max = max.as_u64()? as usize;
    let bad = match name.as_str() {
        "process_hash" => {
            let pad = "x".repeat((max + 1).checked_sub(p.process_hash.len())?);
            let trace = p.trace.map(|t| format!("#{t}")).unwrap_or_default();
            format!("{}@{pad}{}.{}{trace}", p.key, p.process_hash, p.seq)
        }
        "trace" => {
            let t = p.trace.unwrap_or_default();
            let pad = "x".repeat((max + 1).checked_sub(t.len())?);
            format!("{}@{}.{}#{t}{pad}", p.key, p.process_hash, p.seq)
        }
        _ => return None,
    };
    let names_key = locker_proto::parse_owner_hash(&bad).is_some_and(|q| q.key == p.key);
    (names_key && string_ok(schema, &bad)).then(|| {
        (
            bad.into(),
            format!("its {name} {} bytes (at most {max})", max + 1),
        )
    })
}

/// Every parameter and field of operation `i` with its schema: what (b)
/// pushes out of bounds, one at a time; then two more breaks: a body-level
/// one (a missing required or an unknown field) and an unknown query
/// parameter.
fn targets(doc: &Doc, i: usize) -> Vec<(String, String, Value)> {
    let mut targets: Vec<(String, String, Value)> = Vec::new();
    for p in doc.op(i)["parameters"].as_array().into_iter().flatten() {
        let place = p["in"].as_str().unwrap_or_default().to_string();
        targets.push((
            place,
            p["name"].as_str().unwrap_or_default().into(),
            p["schema"].clone(),
        ));
    }
    if let Some(b) = doc.body(i) {
        for (name, schema) in b["properties"].as_object().into_iter().flatten() {
            targets.push(("body".into(), name.clone(), doc.resolve(schema).clone()));
        }
    }
    targets
}

/// A valid request with exactly one thing out of bounds: target `which` of
/// [`targets`] (or the two breaks after them), broken the `how`th way.
fn broken_request(doc: &Doc, req: Req, which: usize, how: u8, pos: usize) -> Option<Req> {
    let mut req = req;
    let targets = targets(doc, req.op);
    let body = doc.body(req.op).cloned();
    let extra = 2;
    let n = targets.len() + extra;
    match which % n {
        k if k < targets.len() => {
            let (place, name, schema) = &targets[k];
            let current = match place.as_str() {
                "path" => req
                    .path
                    .iter()
                    .find(|(p, _)| p == name)
                    .map(|(_, v)| json!(v)),
                "query" => req
                    .query
                    .iter()
                    .find(|(p, _)| p == name)
                    .map(|(_, v)| json!(v)),
                _ => req.body.as_ref().and_then(|b| b.get(name)).cloned(),
            };
            let current = current.unwrap_or(Value::Null);
            let as_text = place != "body";
            let (bad, why) = break_value(schema, &current, as_text, how, pos)?;
            req.broken = format!("{place} {name}: {why}");
            match place.as_str() {
                "path" | "query" => {
                    // A path or query value is text: a "wrong type" there is
                    // text the schema's type does not read.
                    let bad = text(&bad);
                    // The HTTP client removes `.` and `..` segments (as the
                    // URL standard says) before sending: the node's refusal
                    // of them (INVALID_PATH) is tested on raw sockets in
                    // http_hygiene.rs.
                    if place == "path" && (bad == "." || bad == "..") {
                        return None;
                    }
                    let list = if place == "path" {
                        &mut req.path
                    } else {
                        &mut req.query
                    };
                    list.retain(|(p, _)| p != name);
                    list.push((name.clone(), bad));
                }
                _ => {
                    // The refused pattern of a trace holds without an owner
                    // hash only.
                    let refused = schema[REFUSED_PATTERN]
                        .as_str()
                        .is_some_and(|p| bad.as_str().is_some_and(|b| regex_of(p).is_match(b)));
                    let m = req.body.get_or_insert_with(|| json!({}));
                    if refused {
                        if let Some(o) = m.as_object_mut() {
                            o.remove("owner_hash");
                        }
                    }
                    m[name.as_str()] = bad;
                }
            }
            Some(req)
        }
        k if k == targets.len() => body_break(req, body.as_ref()?, how),
        _ if how > 0 => None,
        _ => {
            // An unknown query parameter, where the operation reads a query.
            if doc.params(req.op, "query").is_empty() {
                return None;
            }
            req.query.push(("surplus".into(), "1".into()));
            req.broken = "an unknown query parameter".into();
            Some(req)
        }
    }
}

/// A body without its (first) required field, or with an unknown one.
fn body_break(mut req: Req, body: &Value, how: u8) -> Option<Req> {
    let required = body["required"]
        .as_array()
        .and_then(|r| r.first())
        .and_then(Value::as_str);
    match (required, how) {
        (Some(r), 0) => {
            if let Some(Value::Object(m)) = req.body.as_mut() {
                m.remove(r);
            }
            req.broken = format!("required field {r} missing");
        }
        (_, 0 | 1) if body["additionalProperties"] == false => {
            let m = req.body.get_or_insert_with(|| json!({}));
            m["surplus"] = json!(1);
            req.broken = "an unknown field".into();
        }
        _ => return None,
    }
    Some(req)
}

fn url(base: &str, req: &Req) -> String {
    let mut path = OPS[req.op].1.to_string();
    for (name, v) in &req.path {
        path = path.replace(&format!("{{{name}}}"), &enc(v));
    }
    let query: Vec<String> = req
        .query
        .iter()
        .map(|(n, v)| format!("{}={}", enc(n), enc(v)))
        .collect();
    if query.is_empty() {
        format!("{base}{path}")
    } else {
        format!("{base}{path}?{}", query.join("&"))
    }
}

/// One client for the whole test (a blocking client starts a runtime of its
/// own; one per request made the test several times slower).
fn client() -> &'static reqwest::blocking::Client {
    static CLIENT: std::sync::OnceLock<reqwest::blocking::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(http)
}

fn get_json(url: &str) -> Value {
    client()
        .get(url)
        .send()
        .and_then(|r| r.json())
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

fn send(base: &str, req: &Req) -> Answer {
    let method =
        reqwest::Method::from_bytes(OPS[req.op].0.to_uppercase().as_bytes()).expect("method");
    let mut rb = client().request(method, url(base, req));
    if let Some(b) = &req.body {
        rb = rb
            .header("content-type", "application/json")
            .body(serde_json::to_vec(b).expect("json"));
    }
    match rb.send() {
        Ok(r) => {
            let code = r.status().as_u16();
            let text = r.text().unwrap_or_default();
            Answer {
                code,
                body: serde_json::from_str(&text).unwrap_or(Value::Null),
                retry_after: None,
            }
        }
        Err(e) => Answer {
            code: 0,
            body: json!({"transport_error": e.to_string()}),
            retry_after: None,
        },
    }
}

/// (c): the status is one of the operation's documented responses, and an
/// error body's code is one that response lists.
fn documented(doc: &Doc, req: &Req, a: &Answer) -> Result<(), TestCaseError> {
    let (method, path) = OPS[req.op];
    let resp = &doc.op(req.op)["responses"][a.code.to_string()];
    prop_assert!(
        !resp.is_null(),
        "{method} {path} answered {} {}, a status its document does not list ({req:?})",
        a.code,
        a.body
    );
    if let Some(code) = a.body["error"]["code"].as_str() {
        let listed = resp[ERROR_CODES]
            .as_array()
            .is_some_and(|l| l.iter().any(|c| c == code));
        prop_assert!(
            listed,
            "{method} {path} answered {} {code}, which that response does not list ({req:?})",
            a.code
        );
    }
    Ok(())
}

/// The numbers of lock and process records on the node.
fn records(base: &str) -> (u64, u64) {
    let d = get_json(&format!("{base}/v1/digest"));
    (
        d["locks"].as_u64().expect("locks"),
        d["processes"].as_u64().expect("processes"),
    )
}

fn key_of(req: &Req) -> Option<&str> {
    req.path
        .iter()
        .find(|(n, _)| n == "key")
        .map(|(_, k)| k.as_str())
}

fn read_back(base: &str, key: &str) -> Value {
    // The node answers a write only once applied: its own replica shows it.
    get_json(&format!("{base}/v1/locks/{}?stale=true", enc(key)))
}

/// A runner without regression files (the cases come from a live document).
fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_global_rejects: cases * 50,
        ..Config::default()
    })
}

/// Requests of operation `i`, made to follow the document's prose.
fn requests(doc: &Doc, i: usize) -> impl Strategy<Value = Req> + '_ {
    valid_request(doc, i).prop_filter_map("does not follow the document's prose", move |r| {
        follow_prose(doc, r)
    })
}

/// Skips a case whose key an earlier case locked, so no acquire waits
/// behind an earlier lock and a refused request's key is known to be free
/// (a filter in the strategy would trip proptest's shrinking).
fn fresh_key(req: &Req, locked: &RefCell<HashSet<String>>) -> Result<(), TestCaseError> {
    let fresh = key_of(req).is_none_or(|k| !locked.borrow().contains(k));
    prop_assume!(fresh, "key locked by an earlier case");
    Ok(())
}

/// Records the key of an acquire that locked it.
fn note_locked(req: &Req, a: &Answer, locked: &RefCell<HashSet<String>>) {
    if let (Some(k), 200) = (key_of(req), a.code) {
        if OPS[req.op].1.ends_with("/acquire") {
            locked.borrow_mut().insert(k.to_string());
        }
    }
}

/// Every (operation, target, way) that the document gives a bound to break:
/// (b) tries each of them, so none is left to chance.
fn breaks(doc: &Doc) -> Vec<(usize, usize, u8)> {
    let mut rng = TestRunner::deterministic();
    let mut out = Vec::new();
    for i in 0..OPS.len() {
        let s = requests(doc, i);
        let samples: Vec<Req> = (0..16)
            .map(|_| s.new_tree(&mut rng).expect("a valid request").current())
            .collect();
        for which in 0..targets(doc, i).len() + 2 {
            for how in 0..6u8 {
                let applies = samples
                    .iter()
                    .enumerate()
                    .any(|(pos, r)| broken_request(doc, r.clone(), which, how, pos).is_some());
                if applies {
                    out.push((i, which, how));
                }
            }
        }
    }
    out
}

#[test]
fn requests_generated_from_the_document_are_answered_as_documented() {
    let c = Cluster::start(1);
    let base = c.url(1);
    let fetched = get(&format!("{base}/openapi.json"));
    assert_eq!(fetched.code, 200);
    let doc = Doc(fetched.body);
    let used = RefCell::new(HashSet::new());
    let started = std::time::Instant::now();
    let answered = valid_requests_are_not_refused(&doc, &base, &used);
    eprintln!("(a): {} cases in {:?}", answered.len(), started.elapsed());
    let started = std::time::Instant::now();
    let refusals = broken_requests_are_refused_as_documented(&doc, &base, &used);
    eprintln!("(b) in {:?}", started.elapsed());

    // The generators reached every operation, and (b) many kinds of refusal.
    for (i, op) in OPS.iter().enumerate() {
        assert!(
            answered.iter().any(|(o, _)| *o == i),
            "no valid case of {op:?}"
        );
    }
    assert!(refusals.len() >= 25, "few kinds of refusal: {refusals:?}");
    let mut codes: Vec<u16> = answered.iter().map(|(_, c)| *c).collect();
    codes.sort_unstable();
    codes.dedup();
    let mut refusals: Vec<_> = refusals
        .into_iter()
        .map(|(op, status, code)| format!("{} {} {status} {code}", OPS[op].0, OPS[op].1))
        .collect();
    refusals.sort();
    eprintln!(
        "valid requests answered {codes:?}; refusals seen:\n{}",
        refusals.join("\n")
    );
}

/// (a) and (c): requests inside every bound are never refused as bad input.
fn valid_requests_are_not_refused(
    doc: &Doc,
    base: &str,
    used: &RefCell<HashSet<String>>,
) -> Vec<(usize, u16)> {
    let seen = RefCell::new(Vec::new());
    for (i, op) in OPS.iter().enumerate() {
        runner(VALID_CASES)
            .run(&requests(doc, i), |req| {
                fresh_key(&req, used)?;
                let a = send(base, &req);
                note_locked(&req, &a, used);
                seen.borrow_mut().push((req.op, a.code));
                prop_assert!(
                    a.code != 400 && a.code != 0,
                    "a request inside every documented bound was refused: {} {} ({req:?})",
                    a.code,
                    a.body
                );
                documented(doc, &req, &a)
            })
            .unwrap_or_else(|e| panic!("(a) valid requests of {op:?}: {e}"));
    }
    seen.into_inner()
}

/// (b) and (c): one value out of bounds is a documented 4xx with the error
/// body and a listed code, and changes nothing. Returns the kinds of
/// refusal seen (operation, status, code).
fn broken_requests_are_refused_as_documented(
    doc: &Doc,
    base: &str,
    used: &RefCell<HashSet<String>>,
) -> HashSet<(usize, u16, String)> {
    let kinds = RefCell::new(HashSet::new());
    let all = breaks(doc);
    assert!(
        all.len() >= 60,
        "only {} ways to break a request",
        all.len()
    );
    eprintln!("(b): {} ways to break a request", all.len());
    for (i, which, how) in all {
        let broken = (requests(doc, i), any::<usize>())
            .prop_filter_map("no bound of that kind", move |(r, pos)| {
                broken_request(doc, r, which, how, pos)
            });
        runner(BROKEN_CASES)
            .run(&broken, |req| {
                fresh_key(&req, used)?;
                let before = records(base);
                let a = send(base, &req);
                note_locked(&req, &a, used);
                let (method, path) = OPS[req.op];
                let code = a.body["error"]["code"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                prop_assert!(
                    (400..500).contains(&a.code) && !code.is_empty(),
                    "{method} {path} with {} answered {} {} ({req:?})",
                    req.broken,
                    a.code,
                    a.body
                );
                documented(doc, &req, &a)?;
                let after = records(base);
                prop_assert!(
                after.0 <= before.0 && after.1 <= before.1,
                "{method} {path} with {} was refused but added records: {before:?} -> {after:?}",
                req.broken
            );
                let key_schema = doc.params(req.op, "path").first().map(|p| &p["schema"]);
                if let (Some(k), Some(s)) = (key_of(&req), key_schema) {
                    if string_ok(s, k) {
                        let r = read_back(base, k);
                        prop_assert_eq!(
                            &r,
                            &json!({"locked": false}),
                            "{} locked {}",
                            req.broken,
                            k
                        );
                    }
                }
                kinds.borrow_mut().insert((req.op, a.code, code));
                Ok(())
            })
            .unwrap_or_else(|e| panic!("(b) out-of-bounds requests of {:?}: {e}", OPS[i]));
    }
    kinds.into_inner()
}
