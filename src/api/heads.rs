//! Request heads read and checked before hyper parses them. hyper answers a head it cannot take
//! (malformed, too long, a version it does not speak) with an empty-bodied 400, 414, 431 or 505;
//! here such a head is replaced by a request for [`REJECTED_PATH`], which the router's guard
//! answers in the protocol's JSON error shape, and the connection closes after it. Bodies pass
//! through untouched; their framing (`Content-Length`, chunked) is followed only to find where the
//! next head of a keep-alive connection begins.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The path a rejected head becomes; its query carries `status`, `code`, `message` and `path`.
pub const REJECTED_PATH: &str = "/.hearth/rejected";
/// The longest request target answered (browsers and proxies cut near 8 KiB too).
pub const MAX_TARGET_BYTES: usize = 8 * 1024;
/// The largest request head answered (request line, names, values and separators).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most header fields in one head (hyper's own limit).
const MAX_HEADERS: usize = 100;

/// Why a head was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// The request target when the request line could be read (it picks the error's shape).
    pub path: String,
}

impl Rejection {
    fn new(status: u16, code: &'static str, message: impl Into<String>, head: &[u8]) -> Self {
        Rejection { status, code, message: message.into(), path: target_of(head) }
    }

    /// The request hyper is given instead of the refused head.
    fn as_request(&self) -> Vec<u8> {
        let q = |s: &str| s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect::<String>();
        format!(
            "GET {REJECTED_PATH}?status={}&code={}&message={}&path={} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
            self.status,
            self.code,
            q(&self.message),
            q(&self.path)
        )
        .into_bytes()
    }
}

/// The target of a request line, as far as it can be read (at most 256 bytes).
fn target_of(head: &[u8]) -> String {
    let line = head.split(|&b| b == b'\n').find(|l| !l.is_empty() && l != b"\r").unwrap_or(&[]);
    let target = line.split(|&b| b == b' ').nth(1).unwrap_or(&[]);
    String::from_utf8_lossy(&target[..target.len().min(256)]).into_owned()
}

/// Where the stream is in the current request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Collecting a head in `head`.
    Head,
    /// This many body bytes left.
    Body(u64),
    Chunked(Chunk),
    /// Framing lost (a chunked body hyper will refuse): bytes pass unchecked until hyper closes.
    Through,
    /// A rejection was handed over; what the client sends after it is read and dropped (an end
    /// of stream here would make hyper close before it answers).
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size { value: u64, digits: u32 },
    Extension { value: u64 },
    Data(u64),
    DataEnd,
    Trailer { line: usize },
}

/// A client stream whose request heads are checked before hyper reads them.
pub struct Checked<S> {
    inner: S,
    phase: Phase,
    head: Vec<u8>,
    /// Bytes ready for hyper, from `at` on.
    out: Vec<u8>,
    at: usize,
}

impl<S> Checked<S> {
    pub fn new(inner: S) -> Self {
        Checked { inner, phase: Phase::Head, head: Vec::new(), out: Vec::new(), at: 0 }
    }

    /// Takes bytes read from the client.
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.phase {
                Phase::Head => {
                    self.head.extend_from_slice(bytes);
                    bytes = &[];
                    let head = std::mem::take(&mut self.head);
                    match check_head(&head) {
                        Ok(None) => self.head = head,
                        Ok(Some((n, next))) => {
                            self.out.extend_from_slice(&head[..n]);
                            self.phase = next;
                            // What follows the head goes round again.
                            self.feed(&head[n..]);
                        }
                        Err(rejection) => {
                            self.out.extend_from_slice(&rejection.as_request());
                            self.phase = Phase::Closed;
                        }
                    }
                }
                Phase::Body(left) => {
                    let n = (left.min(bytes.len() as u64)) as usize;
                    self.out.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    self.phase = if left == n as u64 { Phase::Head } else { Phase::Body(left - n as u64) };
                }
                Phase::Chunked(Chunk::Data(left)) => {
                    let n = (left.min(bytes.len() as u64)) as usize;
                    self.out.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    self.phase = Phase::Chunked(if left == n as u64 { Chunk::DataEnd } else { Chunk::Data(left - n as u64) });
                }
                Phase::Chunked(c) => {
                    self.out.push(bytes[0]);
                    self.phase = chunk_step(c, bytes[0]);
                    bytes = &bytes[1..];
                }
                Phase::Through => {
                    self.out.extend_from_slice(bytes);
                    bytes = &[];
                }
                Phase::Closed => bytes = &[],
            }
        }
    }
}

/// One byte of a chunked body's framing (sizes, extensions, line ends, trailers).
fn chunk_step(c: Chunk, b: u8) -> Phase {
    let size_done = |value: u64| Phase::Chunked(if value == 0 { Chunk::Trailer { line: 0 } } else { Chunk::Data(value) });
    match c {
        Chunk::Size { value, digits } => match (b as char).to_digit(16) {
            Some(d) if digits < 15 => Phase::Chunked(Chunk::Size { value: value * 16 + u64::from(d), digits: digits + 1 }),
            None if digits > 0 && matches!(b, b';' | b' ' | b'\t' | b'\r') => Phase::Chunked(Chunk::Extension { value }),
            None if digits > 0 && b == b'\n' => size_done(value),
            _ => Phase::Through,
        },
        Chunk::Extension { value } => if b == b'\n' { size_done(value) } else { Phase::Chunked(c) },
        Chunk::DataEnd => match b {
            b'\r' => Phase::Chunked(c),
            b'\n' => Phase::Chunked(Chunk::Size { value: 0, digits: 0 }),
            _ => Phase::Through,
        },
        Chunk::Trailer { line } => match b {
            b'\n' if line == 0 => Phase::Head,
            b'\n' => Phase::Chunked(Chunk::Trailer { line: 0 }),
            b'\r' => Phase::Chunked(c),
            _ => Phase::Chunked(Chunk::Trailer { line: line + 1 }),
        },
        Chunk::Data(_) => unreachable!("data is taken in bulk"),
    }
}

/// A head that is complete gives its length and how its body is framed; one that needs more
/// bytes gives `None`.
fn check_head(head: &[u8]) -> Result<Option<(usize, Phase)>, Rejection> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let parsed = req.parse(head);
    let target = req.path.map_or(0, str::len);
    let line_open = !head.contains(&b'\n');
    if target > MAX_TARGET_BYTES || (line_open && head.len() > MAX_TARGET_BYTES + 64) {
        let len = target.max(head.len());
        return Err(Rejection::new(414, "uri_too_long", format!("the request target is {len} bytes or more, over the limit of {MAX_TARGET_BYTES}"), head));
    }
    let too_large = |len: usize| {
        Rejection::new(431, "headers_too_large", format!("the request head is {len} bytes or more, over the limit of {MAX_HEAD_BYTES}"), head)
    };
    let n = match parsed {
        Ok(httparse::Status::Partial) if head.len() > MAX_HEAD_BYTES => return Err(too_large(head.len())),
        Ok(httparse::Status::Partial) => return Ok(None),
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD_BYTES => return Err(too_large(n)),
        Ok(httparse::Status::Complete(n)) => n,
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Rejection::new(431, "headers_too_large", format!("the request has more than {MAX_HEADERS} header fields"), head));
        }
        Err(httparse::Error::Version) => {
            return Err(Rejection::new(505, "http_version_not_supported", "only HTTP/1.0 and HTTP/1.1 are served", head));
        }
        Err(e) => return Err(Rejection::new(400, "malformed_request", format!("the request head is malformed: {e}"), head)),
    };
    let bad = |code: &'static str, message: String| Rejection::new(400, code, message, head);
    // httparse takes any run of token bytes as a target; hyper wants a URI.
    let path = req.path.unwrap_or("");
    if path.parse::<axum::http::Uri>().is_err() {
        return Err(bad("malformed_request", format!("the request target `{}` is not a URI path", &path[..path.len().min(256)])));
    }
    // Framing as hyper reads it: the last `Transfer-Encoding` line must end with `chunked`, and
    // then `Content-Length` lines after it are ignored; otherwise every `Content-Length` is one
    // decimal number, all the same.
    let mut length: Option<u64> = None;
    let mut encoding: Option<String> = None;
    for h in req.headers.iter() {
        let value = String::from_utf8_lossy(h.value);
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if req.version == Some(0) {
                return Err(bad("invalid_transfer_encoding", "HTTP/1.0 requests cannot use `Transfer-Encoding`".into()));
            }
            encoding = Some(value.into_owned());
        } else if h.name.eq_ignore_ascii_case("content-length") && encoding.is_none() {
            let parsed = value.parse::<u64>().ok().filter(|_| value.bytes().all(|b| b.is_ascii_digit()));
            match (parsed, length) {
                (Some(l), None) => length = Some(l),
                (Some(l), Some(seen)) if l == seen => {}
                _ => return Err(bad("invalid_content_length", format!("`Content-Length` must be one decimal number, the same on every line, got `{value}`"))),
            }
        }
    }
    let phase = match encoding {
        Some(e) if e.rsplit(',').next().is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked")) => Phase::Chunked(Chunk::Size { value: 0, digits: 0 }),
        Some(e) => return Err(bad("invalid_transfer_encoding", format!("`Transfer-Encoding` must end with `chunked`, got `{e}`"))),
        None => match length {
            Some(l) if l > 0 => Phase::Body(l),
            _ => Phase::Head,
        },
    };
    Ok(Some((n, phase)))
}

impl<S: AsyncRead + Unpin> AsyncRead for Checked<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.at < this.out.len() {
                let n = (this.out.len() - this.at).min(buf.remaining());
                buf.put_slice(&this.out[this.at..this.at + n]);
                this.at += n;
                if this.at == this.out.len() {
                    this.out.clear();
                    this.at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // The client is done; a head cut short is hyper's to end quietly.
                let rest = std::mem::take(&mut this.head);
                this.out.extend_from_slice(&rest);
                if this.out.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            let filled = read.filled().to_vec();
            this.feed(&filled);
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Checked<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes and returns what hyper would read.
    fn through(input: &[u8], step: usize) -> (Vec<u8>, Phase) {
        let mut c = Checked::new(());
        for piece in input.chunks(step) {
            c.feed(piece);
        }
        (c.out, c.phase)
    }

    #[test]
    fn well_formed_requests_pass_unchanged_whatever_the_pieces() {
        let two = b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhelloGET /health HTTP/1.1\r\nhost: x\r\n\r\n";
        let chunked = b"POST /a HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nx-t: 1\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        for input in [&two[..], &chunked[..]] {
            for step in [1, 3, 7, 1000] {
                assert_eq!(through(input, step), (input.to_vec(), Phase::Head), "step {step}");
            }
        }
    }

    #[test]
    fn a_bad_head_after_a_good_request_becomes_the_rejected_route() {
        let input = b"POST /a HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}GET /api/tags HTTP/1.1\r\nbad header\r\n\r\n";
        let (out, phase) = through(input, 5);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("POST /a HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}GET /.hearth/rejected?status=400&code=malformed_request&"), "{text}");
        assert!(text.contains("&path=%2Fapi%2Ftags HTTP/1.1\r\n"), "{text}");
        assert_eq!(phase, Phase::Closed);
    }

    #[test]
    fn each_refusal_has_its_status() {
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (b"GET / HTTP/1.1\r\nx\x01y: 1\r\n\r\n".to_vec(), 400),
            (b"GET / HTTP/9.9\r\n\r\n".to_vec(), 505),
            (format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(9000)).into_bytes(), 414),
            (format!("GET /{}", "a".repeat(20_000)).into_bytes(), 414),
            (format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "b".repeat(70_000)).into_bytes(), 431),
            ((0..101).map(|i| format!("h{i}: 1\r\n")).fold("GET / HTTP/1.1\r\n".to_string(), |a, h| a + &h).into_bytes(), 431),
            (b"POST / HTTP/1.1\r\ncontent-length: 1x\r\n\r\n".to_vec(), 400),
            (b"POST / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n".to_vec(), 400),
            (b"POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n".to_vec(), 400),
            (b"POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n".to_vec(), 400),
        ];
        for (input, status) in cases {
            let (out, phase) = through(&input, 4096);
            let text = String::from_utf8_lossy(&out);
            assert!(text.starts_with(&format!("GET {REJECTED_PATH}?status={status}&")), "{status}: {}", &text[..text.len().min(200)]);
            assert_eq!(phase, Phase::Closed);
        }
    }

    #[test]
    fn a_broken_chunked_body_hands_framing_to_hyper() {
        let input = b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nGET / HTTP/1.1\r\nbad\r\n\r\n";
        assert_eq!(through(input, 10), (input.to_vec(), Phase::Through));
    }
}
