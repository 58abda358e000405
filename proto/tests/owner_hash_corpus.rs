//! The owner-hash and process-hash corpus: our parser against the seed's
//! pattern as JavaScript reads it, case by case and on generated strings, and
//! the places where the node's former parser (`(?s)`, Unicode `\d`) differed.

use locker_proto::hashes::is_line_terminator;
use locker_proto::*;
use regex::Regex;

/// The seed's `^(.+)@([^/]+/\d+\.\d+)\.\d+(#.*)?$` written out as JavaScript
/// reads it: `.` excludes the four line terminators, `\d` is ASCII.
fn seed_js() -> Regex {
    Regex::new(
        r"^([^\n\r\x{2028}\x{2029}]+)@([^/]+/[0-9]+\.[0-9]+)\.([0-9]+)(#[^\n\r\x{2028}\x{2029}]*)?$",
    )
    .expect("regex")
}

/// The node's parser before it used this crate, kept to pin what changed for
/// the node's users (the node now refuses such keys and traces up front).
fn node_former() -> Regex {
    Regex::new(r"(?s)^(.+)@([^/]+/\d+\.\d+)\.(\d+)(#.*)?$").expect("regex")
}

type Parts<'a> = Option<(&'a str, &'a str, &'a str, Option<&'a str>)>;

fn by_regex<'a>(re: &Regex, s: &'a str) -> Parts<'a> {
    let c = re.captures(s)?;
    Some((
        c.get(1)?.as_str(),
        c.get(2)?.as_str(),
        c.get(3)?.as_str(),
        c.get(4).map(|m| &m.as_str()[1..]),
    ))
}

fn ours(s: &str) -> Parts<'_> {
    parse_owner_hash(s).map(|p| (p.key, p.process_hash, p.seq, p.trace))
}

/// (input, expected parts) — the expectation is written by hand and also
/// checked against the seed's pattern.
fn corpus() -> Vec<(String, Parts<'static>)> {
    let mut c = seed_and_key_cases();
    c.extend(host_trace_and_unicode_cases());
    c.extend(length_limit_cases());
    c.extend(MALFORMED.iter().map(|s| (s.to_string(), None)));
    c
}

/// The seed's examples, and `@`, `/`, `.`, `#` and spaces in the key.
fn seed_and_key_cases() -> Vec<(String, Parts<'static>)> {
    vec![
        // The seed's examples (docs/protocol.md).
        (
            "jobs/report@web-1/4242.1700000000000000000.7#req-9".into(),
            Some((
                "jobs/report",
                "web-1/4242.1700000000000000000",
                "7",
                Some("req-9"),
            )),
        ),
        ("k@h/1.2.3".into(), Some(("k", "h/1.2", "3", None))),
        // '@' in the key: greedy, the last '@' that works ends the key.
        ("a@b@h/1.2.3".into(), Some(("a@b", "h/1.2", "3", None))),
        ("@@h/1.2.3".into(), Some(("@", "h/1.2", "3", None))),
        ("k@@h/1.2.3".into(), Some(("k@", "h/1.2", "3", None))),
        (
            "user@example.com@h/1.2.3".into(),
            Some(("user@example.com", "h/1.2", "3", None)),
        ),
        // '/', '.', '#' and spaces in the key.
        ("a/b/c@h/1.2.3".into(), Some(("a/b/c", "h/1.2", "3", None))),
        ("a.1.2@h/1.2.3".into(), Some(("a.1.2", "h/1.2", "3", None))),
        ("a#b@h/1.2.3".into(), Some(("a#b", "h/1.2", "3", None))),
        ("#@h/1.2.3".into(), Some(("#", "h/1.2", "3", None))),
        (" k @h/1.2.3".into(), Some((" k ", "h/1.2", "3", None))),
    ]
}

/// `#` in the host, `#` and `@` in the trace, unicode, a huge seq, a line
/// break in the host.
fn host_trace_and_unicode_cases() -> Vec<(String, Parts<'static>)> {
    vec![
        // '#' in the host, '#' and '@' in the trace.
        (
            "k@h#x/1.2.3#t".into(),
            Some(("k", "h#x/1.2", "3", Some("t"))),
        ),
        (
            "k@h/1.2.3#a#b".into(),
            Some(("k", "h/1.2", "3", Some("a#b"))),
        ),
        (
            "k@h/1.2.3#a@b".into(),
            Some(("k", "h/1.2", "3", Some("a@b"))),
        ),
        (
            "k@h/1.2.3#t@h/1.2".into(),
            Some(("k", "h/1.2", "3", Some("t@h/1.2"))),
        ),
        // A trace that looks like an owner hash's end steals the key (greedy).
        (
            "k@h/1.2.3#x@h/4.5.6".into(),
            Some(("k@h/1.2.3#x", "h/4.5", "6", None)),
        ),
        // An '@' in the host: the key takes it.
        ("k@a@b/1.2.3".into(), Some(("k@a", "b/1.2", "3", None))),
        ("k@h/1.2.3#".into(), Some(("k", "h/1.2", "3", Some("")))),
        // Unicode outside the digits is fine.
        (
            "ключ/日本@h/1.2.3#трасса".into(),
            Some(("ключ/日本", "h/1.2", "3", Some("трасса"))),
        ),
        ("🔒@hôte/1.2.3".into(), Some(("🔒", "hôte/1.2", "3", None))),
        // A seq too large for u64 still matches.
        (
            "k@h/1.2.99999999999999999999999".into(),
            Some(("k", "h/1.2", "99999999999999999999999", None)),
        ),
        // `[^/]` matches a line break in the host, as in JavaScript.
        ("k@h\nx/1.2.3".into(), Some(("k", "h\nx/1.2", "3", None))),
    ]
}

/// Keys and traces at and over the API's length limits.
fn length_limit_cases() -> Vec<(String, Parts<'static>)> {
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let long_key: &'static str = leak("k".repeat(limits::MAX_KEY_BYTES));
    let long_trace: &'static str = leak("t".repeat(limits::MAX_TRACE_BYTES));
    vec![
        // The length limits are the API's, not the pattern's.
        (
            format!("{long_key}@h/1.2.3#{long_trace}"),
            Some((long_key, "h/1.2", "3", Some(long_trace))),
        ),
        (
            format!("{long_key}k@h/1.2.3"),
            Some((leak(format!("{long_key}k")), "h/1.2", "3", None)),
        ),
    ]
}

/// Strings the seed's pattern refuses.
const MALFORMED: &[&str] = &[
    "",
    "k",
    "@",
    "k@",
    "@h/1.2.3",
    "k@/1.2.3",
    "k@h/1.2",
    "k@h/1",
    "k@h/.2.3",
    "k@h/1..3",
    "k@h/1.2.",
    "k@h/x.2.3",
    "k@h/1.2.3x",
    "k@h/1.2.3 ",
    "k@h/1.2.3\n",
    "k@h/1.2.-3",
    "k@h/1/2.3.4",
    "k@h/+1.2.3",
    "no-at-sign",
    "k@h/1.2.3#a\nb",
    // JavaScript's `.` stops at every line terminator, in key and trace.
    "a\nb@h/1.2.3",
    "a\rb@h/1.2.3",
    "a\u{2028}b@h/1.2.3",
    "k@h/1.2.3#a\u{2029}b",
    "\n@h/1.2.3",
    "k@h/1.2.3#\r",
    // `\d` is ASCII: no Arabic-Indic, fullwidth or Devanagari digits.
    "k@h/١٢.٣.٤",
    "k@h/1.2.٣",
    "k@h/１.2.3",
    "k@h/1.२.3",
];

#[test]
fn the_corpus_parses_as_the_seed_does() {
    let js = seed_js();
    for (input, expected) in corpus() {
        assert_eq!(by_regex(&js, &input), expected, "seed pattern on {input:?}");
        assert_eq!(ours(&input), expected, "our parser on {input:?}");
    }
}

/// A small deterministic generator (no extra crate): xorshift64.
struct Gen(u64);
impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

impl Gen {
    fn pick<'a>(&mut self, from: &'a [&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }

    /// `min` to `max` pieces from `from`.
    fn chunk(&mut self, from: &[&str], min: u64, max: u64) -> String {
        let n = min + self.next() % (max - min + 1);
        (0..n).map(|_| self.pick(from).to_string()).collect()
    }

    /// A string shaped like an owner hash (each part drawn from characters
    /// that matter to the pattern), often with one character changed.
    fn near_owner_hash(&mut self) -> String {
        let any = [
            "k", "k", "é", " ", "@", "/", ".", "#", "1", "\n", "\r", "\u{2028}", "٣",
        ];
        let digits = ["0", "1", "2", "7", "9", "0", "1", "٣"];
        let mut s = self.chunk(&any, 0, 4);
        s.push('@');
        s += &self.chunk(&any, 0, 3);
        s.push('/');
        s += &self.chunk(&digits, 0, 2);
        s.push('.');
        s += &self.chunk(&digits, 0, 2);
        s.push('.');
        s += &self.chunk(&digits, 0, 2);
        if self.next() % 2 == 0 {
            s.push('#');
            s += &self.chunk(&any, 0, 3);
        }
        self.mutate(s)
    }

    fn mutate(&mut self, s: String) -> String {
        let chars: Vec<char> = s.chars().collect();
        if chars.is_empty() || self.next() % 3 == 0 {
            return s;
        }
        let at = (self.next() % chars.len() as u64) as usize;
        let mut out: Vec<char> = chars.clone();
        match self.next() % 3 {
            0 => {
                out.remove(at);
            }
            1 => out.insert(
                at,
                self.pick(&["@", "/", ".", "#", "\n"])
                    .chars()
                    .next()
                    .unwrap_or('@'),
            ),
            _ => out.swap(at, (at + 1) % chars.len()),
        }
        out.into_iter().collect()
    }
}

#[test]
fn generated_strings_parse_as_the_seed_does() {
    let js = seed_js();
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    let (mut matched, total) = (0, 200_000);
    for _ in 0..total {
        let s = g.near_owner_hash();
        let want = by_regex(&js, &s);
        assert_eq!(ours(&s), want, "{s:?}");
        matched += usize::from(want.is_some());
    }
    // Both outcomes must be common, or the test proves little.
    assert!(
        matched > total / 100,
        "only {matched} of {total} generated strings matched"
    );
    assert!(
        matched < total - total / 20,
        "{matched} of {total} generated strings matched"
    );
}

#[test]
fn where_the_former_node_parser_differed() {
    // Exactly the inputs with a line terminator in the key or trace, or a
    // non-ASCII digit: the former node parser accepted them, the seed (and we)
    // do not.
    let node = node_former();
    let mut differ = Vec::new();
    for (input, expected) in corpus() {
        if by_regex(&node, &input) != expected {
            differ.push(input);
        }
    }
    let expected: Vec<&str> = vec![
        "k@h/1.2.3#a\nb",
        "a\nb@h/1.2.3",
        "a\rb@h/1.2.3",
        "a\u{2028}b@h/1.2.3",
        "k@h/1.2.3#a\u{2029}b",
        "\n@h/1.2.3",
        "k@h/1.2.3#\r",
        "k@h/١٢.٣.٤",
        "k@h/1.2.٣",
        "k@h/１.2.3",
        "k@h/1.२.3",
    ];
    assert_eq!(differ, expected);
}

#[test]
fn process_hashes() {
    for ok in [
        "h/1.2",
        "web-1.example.com/4242.1700000000000000000",
        "h#x/1.2",
        "h@x/1.2",
        "h\nx/1.2",
        "hôte/1.2",
        "h/00.00",
    ] {
        assert!(is_valid_process_hash(ok), "{ok:?}");
    }
    for bad in [
        "", "h", "/1.2", "h/1", "h/1.", "h/.2", "h/1.2.3", "h/1.2x", "a/b/1.2", "h/١.2", "h/1.2\n",
        " h/1.2 ",
    ] {
        assert!(!is_valid_process_hash(bad), "{bad:?}");
    }
}

#[test]
fn built_owner_hashes_round_trip_or_are_refused() {
    let ph = "web-1/4242.1700000000000000000";
    let long = "k".repeat(limits::MAX_KEY_BYTES);
    for key in [
        "k",
        "a@b",
        "a/b/c",
        "a.1.2",
        "a#b",
        "@",
        "ключ 日本 🔒",
        long.as_str(),
    ] {
        for trace in [
            None,
            Some(""),
            Some("req-9"),
            Some("a#b@c"),
            Some("t@h/1.2"),
        ] {
            let h = make_owner_hash(key, ph, 7, trace).unwrap_or_else(|e| panic!("{key:?}: {e}"));
            let p = parse_owner_hash(&h).expect("parses");
            assert_eq!(
                (p.key, p.process_hash, p.seq_number(), p.trace),
                (key, ph, Some(7), trace)
            );
        }
    }
    use OwnerHashError::*;
    let refused = |k: &str, ph: &str, t: Option<&str>| make_owner_hash(k, ph, 1, t).unwrap_err();
    assert_eq!(refused("", ph, None), EmptyKey);
    assert!(matches!(refused("a\nb", ph, None), LineBreakInKey(_)));
    assert!(matches!(refused("a\u{2028}", ph, None), LineBreakInKey(_)));
    assert!(matches!(
        refused("k", ph, Some("a\rb")),
        LineBreakInTrace(_)
    ));
    assert!(matches!(refused("k", "h/1", None), InvalidProcessHash(_)));
    assert!(matches!(refused("k", "h@x/1.2", None), Ambiguous(_)));
    assert!(matches!(refused("k", ph, Some("x@h/1.2.3")), Ambiguous(_)));
}

#[test]
fn host_names_are_cleaned_one_way() {
    let cases = [
        ("web-1", "web-1"),
        ("web-1.example.com", "web-1.example.com"),
        ("a/b@c d#e", "a_b_c_d_e"),
        ("  padded\n", "padded"),
        ("h\nx", "h_x"),
        ("日本", "__"),
        ("", "localhost"),
        ("   ", "localhost"),
    ];
    for (raw, want) in cases {
        assert_eq!(clean_hostname(raw), want, "{raw:?}");
    }
    assert_eq!(
        clean_hostname(&"h".repeat(300)).len(),
        hashes::MAX_HOSTNAME_BYTES
    );
    // Whatever the machine is called, its process hashes are valid and every
    // owner hash built on them round-trips.
    for raw in ["a@b", "x/y", "#", "\u{2028}", "é", "h/1.2"] {
        let ph = make_process_hash(raw, 42, 7);
        assert!(is_valid_process_hash(&ph), "{ph:?}");
        assert!(!ph.contains(|c: char| c == '@' || is_line_terminator(c)));
        make_owner_hash("k", &ph, 1, None).expect("round-trips");
    }
    let here = new_process_hash();
    assert!(is_valid_process_hash(&here), "{here}");
    assert!(here.starts_with(&format!("{}/{}.", hostname(), std::process::id())));
}
