//! JSON bodies for the refusals hyper writes itself.
//!
//! A request hyper cannot parse (a malformed request line or header, a
//! header section or request target over its limits) never reaches a
//! route: hyper answers `400`, `431` or `414` with an empty body and closes
//! the connection, and offers no hook to change that answer. [`JsonRefusals`]
//! sits between hyper and the socket and gives exactly those answers the
//! API's error shape, `{"error":{"code","message"}}`. Every other answer of
//! the node already carries a JSON body (see `api::hygiene::json_errors`),
//! so an empty-bodied 4xx on the wire can only be one of hyper's.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use locker_proto::{ErrorAnswer, ErrorCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An HTTP/1 connection's stream whose hyper-made refusals get JSON bodies.
#[derive(Debug)]
pub struct JsonRefusals<I> {
    io: I,
    /// A rewritten answer not yet written out, and how much of it was.
    pending: Vec<u8>,
    written: usize,
}

impl<I> JsonRefusals<I> {
    /// Wraps an accepted stream (plain or TLS).
    pub fn new(io: I) -> Self {
        JsonRefusals {
            io,
            pending: Vec::new(),
            written: 0,
        }
    }
}

/// The answer hyper writes for a request it could not parse, with a JSON
/// body: `bytes` if they begin with such an answer (an empty-bodied 400,
/// 414 or 431), else `None`.
pub fn rewrite(bytes: &[u8]) -> Option<Vec<u8>> {
    let code = match bytes.get(..13)? {
        b"HTTP/1.1 400 " => ErrorCode::MalformedRequest,
        b"HTTP/1.1 414 " => ErrorCode::UriTooLong,
        b"HTTP/1.1 431 " => ErrorCode::HeadersTooLarge,
        _ => return None,
    };
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 2;
    let head = std::str::from_utf8(&bytes[..end]).ok()?;
    let mut lines: Vec<&str> = head.split("\r\n").filter(|l| !l.is_empty()).collect();
    let empty = lines.iter().position(|l| {
        l.split_once(':').is_some_and(|(name, value)| {
            name.eq_ignore_ascii_case("content-length") && value.trim() == "0"
        })
    })?;
    lines.remove(empty);
    let message = match code {
        ErrorCode::UriTooLong => "the request target is too long",
        ErrorCode::HeadersTooLarge => "the request's header section is too large",
        _ => "the request is not well-formed HTTP/1.1",
    };
    let body = serde_json::to_vec(&ErrorAnswer::new(code, message)).ok()?;
    let mut out = Vec::with_capacity(end + body.len() + 64);
    for line in lines {
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"content-type: application/json\r\n");
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&bytes[end + 2..]);
    Some(out)
}

impl<I: AsyncWrite + Unpin> JsonRefusals<I> {
    /// Writes out what is pending; ready once nothing is.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for JsonRefusals<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for JsonRefusals<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        if let Some(answer) = rewrite(buf) {
            // Taken whole, written out as the socket allows (flush and
            // shutdown wait for it).
            this.pending = answer;
            if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    #[test]
    fn hypers_bare_refusals_get_a_json_body() {
        let bare = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let out = String::from_utf8(rewrite(bare).expect("rewritten")).expect("utf-8");
        let (head, body) = out.split_once("\r\n\r\n").expect("a head");
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
        assert!(head.contains("content-type: application/json"), "{out}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{out}"
        );
        assert!(!head.contains("content-length: 0"), "{out}");
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["error"]["code"], "MALFORMED_REQUEST");
        let big = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        let out = String::from_utf8(rewrite(big).expect("rewritten")).expect("utf-8");
        assert!(out.contains("HEADERS_TOO_LARGE"), "{out}");
    }

    #[test]
    fn answers_with_a_body_or_another_status_pass_unchanged() {
        for other in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad",
            b"",
        ] {
            assert_eq!(rewrite(other), None, "{}", String::from_utf8_lossy(other));
        }
    }
}
