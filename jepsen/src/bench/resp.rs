//! A minimal Redis client (RESP2 over one TCP connection per benchmark
//! client) and the seed Locker's three lock scripts.
//!
//! The scripts keep the seed's semantics (and so its cost per call): a lock
//! is the string key `lock:{key}` holding a JSON lock record with a PX
//! expiry; create writes it only when the key is empty or absent; update
//! and delete first decode the stored record with cjson and act only when
//! its `ownerHash` matches. A process keep-alive is a plain
//! `SET proc:{hash} {json} PX ttl`, as the seed's reporter thread does.

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The seed's create: `{status, lock record}`.
pub const CREATE_LUA: &str = r#"
local before = redis.call("GET", KEYS[1])
if before and before ~= "" then
  return { "SOMEONE_ELSE_HOLDS_LOCK", before }
end
redis.call("SET", KEYS[1], ARGV[1], "PX", tonumber(ARGV[2]))
return { "SUCCESS", ARGV[1] }
"#;

/// The seed's update (extend): rewrites the record only for its owner.
pub const UPDATE_LUA: &str = r#"
local before = redis.call("GET", KEYS[1])
if not before or before == "" then
  return { "NO_KEY", false }
end
if cjson.decode(before).ownerHash ~= ARGV[3] then
  return { "SOMEONE_ELSE_HOLDS_LOCK", before }
end
redis.call("SET", KEYS[1], ARGV[1], "PX", tonumber(ARGV[2]))
return { "SUCCESS", ARGV[1] }
"#;

/// The seed's delete (release): removes the record only for its owner.
pub const DELETE_LUA: &str = r#"
local before = redis.call("GET", KEYS[1])
if not before or before == "" then
  return { "NO_KEY", false }
end
if cjson.decode(before).ownerHash ~= ARGV[1] then
  return { "SOMEONE_ELSE_HOLDS_LOCK", before }
end
redis.call("DEL", KEYS[1])
return { "SUCCESS", false }
"#;

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The first element of an array reply as text: a script's status.
    pub fn status(&self) -> Option<String> {
        match self {
            Reply::Array(Some(v)) => match v.first() {
                Some(Reply::Bulk(Some(b))) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            },
            _ => None,
        }
    }

    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Simple(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

pub struct Conn {
    io: BufReader<TcpStream>,
    buf: Vec<u8>,
}

impl Conn {
    pub async fn connect(addr: &str) -> Result<Conn> {
        let s = TcpStream::connect(addr)
            .await
            .with_context(|| format!("redis {addr}"))?;
        // Requests are small and each waits for its answer: no Nagle delay.
        s.set_nodelay(true).context("redis: TCP_NODELAY")?;
        Ok(Conn {
            io: BufReader::new(s),
            buf: Vec::with_capacity(256),
        })
    }

    /// Sends one command and reads its reply; a Redis error reply is `Err`.
    pub async fn call(&mut self, args: &[&[u8]]) -> Result<Reply> {
        self.buf.clear();
        encode(&mut self.buf, args);
        self.io
            .get_mut()
            .write_all(&self.buf)
            .await
            .context("redis write")?;
        match read_reply(&mut self.io).await? {
            Reply::Error(e) => Err(anyhow!("redis: {e}")),
            r => Ok(r),
        }
    }

    /// SCRIPT LOAD: the script's SHA1 for EVALSHA.
    pub async fn load(&mut self, script: &str) -> Result<String> {
        self.call(&[b"SCRIPT", b"LOAD", script.as_bytes()])
            .await?
            .text()
            .context("redis: SCRIPT LOAD gave no sha")
    }
}

pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Longest bulk string or array we accept: a guard against a corrupt length.
const MAX_LEN: i64 = 64 << 20;

async fn read_line<R: AsyncBufReadExt + Unpin>(r: &mut R) -> Result<String> {
    let mut line = String::new();
    let n = r.read_line(&mut line).await.context("redis read")?;
    if n == 0 {
        bail!("redis closed the connection");
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn parse_len(s: &str) -> Result<i64> {
    let n: i64 = s.parse().map_err(|_| anyhow!("redis: bad length {s:?}"))?;
    if n > MAX_LEN {
        bail!("redis: length {n} too large");
    }
    Ok(n)
}

/// Reads one reply; arrays are read iteratively (a stack of open arrays) so
/// a hostile nesting depth cannot overflow the stack.
pub async fn read_reply<R: AsyncBufReadExt + Unpin>(r: &mut R) -> Result<Reply> {
    let mut stack: Vec<(usize, Vec<Reply>)> = Vec::new();
    loop {
        let line = read_line(r).await?;
        let (tag, rest) = line.split_at(line.len().min(1));
        let mut item = match tag {
            "+" => Reply::Simple(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Int(
                rest.parse()
                    .map_err(|_| anyhow!("redis: bad int {rest:?}"))?,
            ),
            "$" => {
                let n = parse_len(rest)?;
                if n < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut b = vec![0u8; n as usize + 2];
                    r.read_exact(&mut b).await.context("redis read")?;
                    b.truncate(n as usize);
                    Reply::Bulk(Some(b))
                }
            }
            "*" => {
                let n = parse_len(rest)?;
                if n > 0 {
                    stack.push((n as usize, Vec::with_capacity(n as usize)));
                    continue;
                }
                Reply::Array(if n < 0 { None } else { Some(Vec::new()) })
            }
            _ => bail!("redis: bad reply line {line:?}"),
        };
        // Close every array this item completes.
        loop {
            let Some((want, items)) = stack.last_mut() else {
                return Ok(item);
            };
            items.push(item);
            if items.len() < *want {
                break;
            }
            let (_, done) = stack.pop().unwrap_or_default();
            item = Reply::Array(Some(done));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(s: &[u8]) -> Result<Reply> {
        let mut r = BufReader::new(s);
        read_reply(&mut r).await
    }

    #[tokio::test]
    async fn replies_parse_and_commands_encode() {
        let mut out = Vec::new();
        encode(&mut out, &[b"GET", b"lock:k"]);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$6\r\nlock:k\r\n");
        assert_eq!(
            parse(b"+OK\r\n").await.ok(),
            Some(Reply::Simple("OK".into()))
        );
        assert_eq!(parse(b":42\r\n").await.ok(), Some(Reply::Int(42)));
        assert_eq!(parse(b"$-1\r\n").await.ok(), Some(Reply::Bulk(None)));
        let r = parse(b"*2\r\n$7\r\nSUCCESS\r\n*1\r\n$1\r\nx\r\n")
            .await
            .unwrap_or(Reply::Int(0));
        assert_eq!(r.status().as_deref(), Some("SUCCESS"));
        assert_eq!(
            r,
            Reply::Array(Some(vec![
                Reply::Bulk(Some(b"SUCCESS".to_vec())),
                Reply::Array(Some(vec![Reply::Bulk(Some(b"x".to_vec()))])),
            ]))
        );
        assert_eq!(
            parse(b"-ERR x\r\n").await.ok(),
            Some(Reply::Error("ERR x".into()))
        );
        assert!(parse(b"?\r\n").await.is_err());
        assert!(parse(b"$5\r\nab").await.is_err());
        assert!(parse(b"").await.is_err());
    }
}
