//! Structure-aware mutation of bridge requests (issue 15), shared by the in-process fuzz
//! harness (`tests/fuzz.rs`) and the end-to-end fuzzer of the real binary
//! (`tests/fuzz_agent.rs`). Seeds are the host's requests in the recorded traces; mutations are
//! what a broken or hostile host could send: type swaps, deleted and unknown keys, huge and
//! negative numbers, invalid UTF-8, deep nesting, very long strings, truncated and spliced
//! payloads, other message types, and the same again inside string-embedded JSON
//! (`ContainerConfig`, `ProcessParameters`, `Query`).

use serde_json::Value;

/// A small deterministic generator (xorshift64*): a run is reproduced from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// True one time in `n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.next() % n.max(1) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// The run's length: `GCS_FUZZ_SECONDS`, else `default` seconds.
pub fn fuzz_seconds(default: u64) -> std::time::Duration {
    std::time::Duration::from_secs(
        std::env::var("GCS_FUZZ_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default),
    )
}

/// The run's seed: `GCS_FUZZ_SEED` (to replay a run), else the clock.
pub fn fuzz_seed() -> u64 {
    std::env::var("GCS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// One request: its message type and payload.
#[derive(Debug, Clone)]
pub struct Input {
    pub message_type: u32,
    pub payload: Vec<u8>,
}

/// How large the largest mutations get.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Length of the longest string inserted (the e2e fuzzer uses 10 MiB).
    pub big_string: usize,
    /// Depth of the deepest nesting inserted.
    pub deep: usize,
}

/// Request types of protocol v4, plus ones no handler knows.
pub const TYPES: [u32; 15] = [
    0x1010_0101,
    0x1010_0201,
    0x1010_0301,
    0x1010_0401,
    0x1010_0501,
    0x1010_0601,
    0x1010_0701,
    0x1010_0801,
    0x1010_0901,
    0x1010_0a01,
    0x1010_0b01,
    0x1010_0c01,
    0x1010_0d01,
    0x1010_0e01,
    0xdead_beef,
];

/// The host's requests of every recorded trace, as the host framed them.
pub fn trace_seeds() -> Vec<Input> {
    let mut seeds = Vec::new();
    for name in super::all_traces() {
        for frame in super::read_trace(&name) {
            if frame.is_host_request() {
                let mut payload = serde_json::to_vec(&frame.body).unwrap();
                payload.push(b'\n');
                seeds.push(Input {
                    message_type: frame.type_u32(),
                    payload,
                });
            }
        }
    }
    assert!(!seeds.is_empty(), "no host requests in tests/traces");
    seeds
}

/// Keys that appear anywhere in the seeds (for inserting known keys in the wrong places).
pub fn vocabulary(seeds: &[Input]) -> Vec<String> {
    fn walk(v: &Value, out: &mut std::collections::BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    out.insert(k.clone());
                    walk(v, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            Value::String(s) => {
                if let Ok(inner) = serde_json::from_str::<Value>(s) {
                    walk(&inner, out);
                }
            }
            _ => {}
        }
    }
    let mut keys = std::collections::BTreeSet::new();
    for s in seeds {
        if let Ok(v) = serde_json::from_slice::<Value>(&s.payload) {
            walk(&v, &mut keys);
        }
    }
    keys.into_iter().collect()
}

/// Marker replaced by deep nesting after serialisation (a `Value` that deep cannot be
/// serialised or dropped without deep recursion).
const DEEP_MARKER: &str = "\u{1}deep\u{1}";

#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

fn paths(v: &Value, at: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
    out.push(at.clone());
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                at.push(Seg::Key(k.clone()));
                paths(child, at, out);
                at.pop();
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                at.push(Seg::Index(i));
                paths(child, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn at_mut<'a>(v: &'a mut Value, path: &[Seg]) -> &'a mut Value {
    let mut cur = v;
    for seg in path {
        cur = match seg {
            Seg::Key(k) => cur.get_mut(k.as_str()).unwrap(),
            Seg::Index(i) => cur.get_mut(*i).unwrap(),
        };
    }
    cur
}

fn nasty(rng: &mut Rng, limits: Limits) -> Value {
    match rng.below(22) {
        0 => Value::Null,
        1 => Value::Bool(rng.one_in(2)),
        2 => Value::from(0),
        3 => Value::from(-1),
        4 => Value::from(u64::MAX),
        5 => Value::from(i64::MIN),
        6 => Value::from(9_007_199_254_740_993u64),
        7 => Value::from(1e308),
        8 => Value::from(-0.5),
        9 => Value::from(""),
        10 => Value::from("00000000-0000-0000-0000-000000000000"),
        11 => Value::from("../../../../etc/shadow"),
        12 => Value::from("/"),
        13 => Value::from("a\u{0}b"),
        14 => Value::from("x".repeat(1 + rng.below(300))),
        15 => Value::Array(Vec::new()),
        16 => Value::Object(serde_json::Map::new()),
        17 => Value::Array(vec![Value::Null, Value::from(1), Value::from("s")]),
        18 if rng.one_in(8) => Value::from("A".repeat(limits.big_string)),
        19 if rng.one_in(4) => Value::from(DEEP_MARKER),
        20 => Value::from(rng.next()),
        _ => Value::from(format!("{:x}", rng.next())),
    }
}

/// A value of another type standing for the same thing: `5` ↔ `"5"`, `true` ↔ `"true"`, a
/// string ↔ `[string]`, an object ↔ its JSON text.
fn type_swap(v: &Value) -> Value {
    match v {
        Value::Number(n) => Value::from(n.to_string()),
        Value::Bool(b) => Value::from(b.to_string()),
        Value::String(s) => match s.parse::<i64>() {
            Ok(n) => Value::from(n),
            Err(_) => Value::Array(vec![Value::from(s.clone())]),
        },
        Value::Object(_) => Value::from(v.to_string()),
        Value::Array(a) => a.first().cloned().unwrap_or(Value::Null),
        Value::Null => Value::from(0),
    }
}

/// Mutates a JSON value in place: 1–3 structural changes.
fn mutate_value(v: &mut Value, rng: &mut Rng, keys: &[String], limits: Limits, depth: u32) {
    for _ in 0..1 + rng.below(3) {
        let mut all = Vec::new();
        paths(v, &mut Vec::new(), &mut all);
        let path = rng.pick(&all).clone();
        let node = at_mut(v, &path);
        match rng.below(8) {
            0 | 1 => *node = nasty(rng, limits),
            2 => *node = type_swap(node),
            3 => {
                if let Value::Object(m) = node {
                    if !m.is_empty() {
                        let k = m.keys().nth(rng.below(m.len())).unwrap().clone();
                        m.remove(&k);
                    }
                }
            }
            4 => {
                if let Value::Object(m) = node {
                    let key = if rng.one_in(3) {
                        format!("{:x}", rng.next())
                    } else {
                        rng.pick(keys).clone()
                    };
                    m.insert(key, nasty(rng, limits));
                }
            }
            5 => {
                // A string that is itself JSON is mutated inside and put back.
                if let Value::String(s) = node {
                    if depth < 2 {
                        if let Ok(mut inner) = serde_json::from_str::<Value>(s) {
                            mutate_value(&mut inner, rng, keys, limits, depth + 1);
                            *s = serialise(&inner, rng, limits);
                        }
                    }
                }
            }
            6 => {
                if let Value::Array(a) = node {
                    if !a.is_empty() && rng.one_in(2) {
                        let i = rng.below(a.len());
                        a.remove(i);
                    } else {
                        a.push(nasty(rng, limits));
                    }
                }
            }
            _ => {
                // Keys differ only in case: Go's decoder matches them case-insensitively.
                if let Value::Object(m) = node {
                    if let Some(k) = m.keys().nth(rng.below(m.len().max(1))).cloned() {
                        let value = m.remove(&k).unwrap();
                        m.insert(k.to_lowercase(), value);
                    }
                }
            }
        }
    }
}

/// Serialises `v`, with [`DEEP_MARKER`] replaced by nesting `limits.deep` levels deep.
fn serialise(v: &Value, rng: &mut Rng, limits: Limits) -> String {
    let text = serde_json::to_string(v).unwrap();
    let marker = serde_json::to_string(DEEP_MARKER).unwrap();
    if !text.contains(&marker) {
        return text;
    }
    let deep = if rng.one_in(2) {
        format!("{}{}", "[".repeat(limits.deep), "]".repeat(limits.deep))
    } else {
        format!(
            "{}1{}",
            "{\"a\":".repeat(limits.deep),
            "}".repeat(limits.deep)
        )
    };
    text.replace(&marker, &deep)
}

fn mutate_bytes(bytes: &mut Vec<u8>, rng: &mut Rng) {
    if bytes.is_empty() {
        bytes.push(b'{');
    }
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(7) {
            0 => bytes.truncate(at),
            1 => {
                if at < bytes.len() {
                    bytes[at] ^= 1 << rng.below(8);
                }
            }
            // Invalid UTF-8: a lone continuation byte, an overlong form, a bare 0xff.
            2 => {
                const BAD: [&[u8]; 4] = [b"\x80", b"\xc0\xaf", b"\xff", b"\xed\xa0\x80"];
                let bad = *rng.pick(&BAD);
                bytes.splice(at..at, bad.iter().copied());
            }
            3 => bytes.splice(at..at, [0u8]).for_each(drop),
            4 => {
                let end = (at + rng.below(64)).min(bytes.len());
                let chunk = bytes[at..end].to_vec();
                bytes.splice(at..at, chunk);
            }
            5 => {
                let end = (at + rng.below(64)).min(bytes.len());
                bytes.drain(at..end);
            }
            _ => {
                const SYNTAX: [&[u8]; 9] = [
                    b"\"", b"\\", b"{", b"}", b"[", b",", b":", b"\\u0000", b"\\ud800",
                ];
                let c = *rng.pick(&SYNTAX);
                bytes.splice(at..at, c.iter().copied());
            }
        }
    }
}

/// One mutated request from `seeds`.
pub fn mutate(rng: &mut Rng, seeds: &[Input], keys: &[String], limits: Limits) -> Input {
    let seed = rng.pick(seeds).clone();
    let mut out = seed.clone();
    match rng.below(20) {
        // Structural.
        0..=12 => {
            if let Ok(mut v) = serde_json::from_slice::<Value>(&seed.payload) {
                mutate_value(&mut v, rng, keys, limits, 0);
                out.payload = serialise(&v, rng, limits).into_bytes();
            } else {
                mutate_bytes(&mut out.payload, rng);
            }
        }
        // Bytes.
        13..=16 => mutate_bytes(&mut out.payload, rng),
        // Another request type for the same payload.
        17 | 18 => {
            out.message_type = if rng.one_in(4) {
                rng.next() as u32
            } else {
                *rng.pick(&TYPES)
            }
        }
        // Two seeds spliced.
        _ => {
            let other = rng.pick(seeds);
            let cut_a = rng.below(seed.payload.len() + 1);
            let cut_b = rng.below(other.payload.len() + 1);
            out.payload = seed.payload[..cut_a]
                .iter()
                .chain(&other.payload[cut_b..])
                .copied()
                .collect();
        }
    }
    out
}

/// A byte stream of frames for the frame reader: valid frames of mutated requests, headers
/// whose size lies (0, 15, 16, short, long, beyond the limit) and streams cut anywhere.
pub fn frame_stream(rng: &mut Rng, inputs: &[Input]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        let mut frame = gcs::protocol::header::encode_frame(
            gcs::protocol::MessageType(input.message_type),
            i as u64,
            &input.payload,
        );
        if rng.one_in(4) {
            let size: u32 = match rng.below(7) {
                0 => 0,
                1 => 15,
                2 => 16,
                3 => (frame.len() as u32).saturating_sub(1 + rng.below(16) as u32),
                4 => frame.len() as u32 + 1 + rng.below(16) as u32,
                5 => (16 << 20) + 17,
                _ => u32::MAX,
            };
            frame[4..8].copy_from_slice(&size.to_le_bytes());
        }
        out.extend_from_slice(&frame);
    }
    if rng.one_in(3) {
        let cut = rng.below(out.len() + 1);
        out.truncate(cut);
    }
    out
}
