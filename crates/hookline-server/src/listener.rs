//! The listener the API is served on: a TCP listener whose connections have their first
//! request head checked before hyper reads it.
//!
//! hyper answers a request it cannot parse (a malformed request line, a bad header name, a
//! folded header) by itself, with a bare `400` and no body, before any handler or
//! middleware runs, so those answers would be the only ones not in the JSON
//! `{code, detail}` form every client of the API reads. [`HeadChecked`] parses the first
//! request head of each connection with `httparse` (the parser hyper itself uses), with
//! the framing rules hyper applies to `Content-Length` and `Transfer-Encoding`, and
//! answers a malformed one with a JSON `400` of its own; a well-formed head, and
//! everything after it, goes to hyper byte for byte. Later requests of a kept-alive
//! connection are hyper's alone: a client that sends a well-formed first request speaks
//! HTTP.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// The most of a first request head looked at: past it, hyper decides (it answers heads
/// too large itself, with `431`).
const MAX_CHECKED: usize = 64 * 1024;
/// Headers a head may have for the check; more is left to hyper.
const MAX_HEADERS: usize = 128;

/// A TCP listener whose connections are [`HeadChecked`].
#[derive(Debug)]
pub struct CheckedListener(pub TcpListener);

impl axum::serve::Listener for CheckedListener {
    type Io = HeadChecked;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr) = axum::serve::Listener::accept(&mut self.0).await;
        (HeadChecked::new(stream), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A connection whose first request head is checked before hyper reads it.
#[derive(Debug)]
pub struct HeadChecked {
    stream: TcpStream,
    state: State,
}

#[derive(Debug)]
enum State {
    /// Reading the first head; nothing has reached hyper yet.
    Checking(Vec<u8>),
    /// The head is well-formed (or too long to judge): hyper gets what was read, then
    /// the stream.
    Passing { read: Vec<u8>, given: usize },
    /// The head is malformed: this answer is written, then hyper sees the end of the
    /// stream and closes the connection without a word.
    Refusing { answer: Vec<u8>, written: usize },
    /// Refused and answered.
    Closed,
}

impl HeadChecked {
    pub fn new(stream: TcpStream) -> Self {
        HeadChecked {
            stream,
            state: State::Checking(Vec::new()),
        }
    }
}

/// What the bytes of a first head say so far.
enum Verdict {
    Incomplete,
    Pass,
    Refuse(String),
}

fn judge(head: &[u8]) -> Verdict {
    // HTTP/2 with prior knowledge opens with a preface that is no HTTP/1 head: hyper's.
    if head.starts_with(b"PRI * HTTP/2.0") {
        return Verdict::Pass;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => match framing(&request) {
            Ok(()) => Verdict::Pass,
            Err(reason) => Verdict::Refuse(reason),
        },
        Ok(httparse::Status::Partial) if head.len() < MAX_CHECKED => Verdict::Incomplete,
        Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => Verdict::Pass,
        Err(error) => Verdict::Refuse(error.to_string()),
    }
}

/// The framing rules hyper refuses a parsed head for (RFC 9112 §6): every
/// `Content-Length` a number and all the same; a `Transfer-Encoding` only in HTTP/1.1 and
/// ending in `chunked`.
fn framing(request: &httparse::Request<'_, '_>) -> Result<(), String> {
    let values = |name: &'static str| -> Vec<String> {
        request
            .headers
            .iter()
            .filter(|header| header.name.eq_ignore_ascii_case(name))
            .map(|header| String::from_utf8_lossy(header.value).trim().to_owned())
            .collect()
    };
    let lengths: Vec<String> = values("content-length")
        .into_iter()
        .flat_map(|value| {
            value
                .split(',')
                .map(|v| v.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    if lengths
        .iter()
        .any(|length| length.is_empty() || !length.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("content-length is not a number".into());
    }
    if lengths.windows(2).any(|pair| pair[0] != pair[1]) {
        return Err("content-length is given twice with different values".into());
    }
    let codings = values("transfer-encoding");
    if let Some(last) = codings.last() {
        if request.version != Some(1) {
            return Err("transfer-encoding is not allowed before HTTP/1.1".into());
        }
        let last_coding = last.rsplit(',').next().unwrap_or_default().trim();
        if !last_coding.eq_ignore_ascii_case("chunked") {
            return Err("transfer-encoding must end in chunked".into());
        }
    }
    Ok(())
}

/// The JSON `400` for a malformed head.
fn refusal(reason: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "code": hookline_core::Code::GenericError.as_str(),
        "detail": format!("malformed HTTP request: {reason}"),
    })
    .to_string();
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl AsyncRead for HeadChecked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Checking(head) => {
                    let mut chunk = [0u8; 4096];
                    let mut read = ReadBuf::new(&mut chunk);
                    ready!(Pin::new(&mut this.stream).poll_read(cx, &mut read))?;
                    let chunk = read.filled();
                    let eof = chunk.is_empty();
                    // A head can only be judged anew once a line more has come: a client
                    // sending a byte at a time does not make it parse the head each time.
                    let new_line = chunk.contains(&b'\n');
                    head.extend_from_slice(chunk);
                    let verdict = if eof {
                        Verdict::Pass
                    } else if new_line || head.len() >= MAX_CHECKED {
                        judge(head)
                    } else {
                        Verdict::Incomplete
                    };
                    match verdict {
                        Verdict::Incomplete => {}
                        Verdict::Pass => {
                            let read = std::mem::take(head);
                            this.state = State::Passing { read, given: 0 };
                        }
                        Verdict::Refuse(reason) => {
                            this.state = State::Refusing {
                                answer: refusal(&reason),
                                written: 0,
                            };
                        }
                    }
                }
                State::Passing { read, given } if *given < read.len() => {
                    let n = out.remaining().min(read.len() - *given);
                    out.put_slice(&read[*given..*given + n]);
                    *given += n;
                    return Poll::Ready(Ok(()));
                }
                State::Passing { .. } => return Pin::new(&mut this.stream).poll_read(cx, out),
                State::Refusing { answer, written } => {
                    while *written < answer.len() {
                        let n =
                            ready!(Pin::new(&mut this.stream).poll_write(cx, &answer[*written..]))?;
                        if n == 0 {
                            break;
                        }
                        *written += n;
                    }
                    ready!(Pin::new(&mut this.stream).poll_flush(cx))?;
                    this.state = State::Closed;
                }
                // The end of the stream, as far as hyper knows.
                State::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl AsyncWrite for HeadChecked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_judged_as_hyper_would_parse_them() {
        let pass = |head: &[u8]| matches!(judge(head), Verdict::Pass);
        let refuse = |head: &[u8]| matches!(judge(head), Verdict::Refuse(_));
        let incomplete = |head: &[u8]| matches!(judge(head), Verdict::Incomplete);
        assert!(pass(b"GET /api/v1/health HTTP/1.1\r\nhost: x\r\n\r\n"));
        assert!(incomplete(b"POST /in/tok HTTP/1.1\r\nhost: x\r\n"));
        assert!(incomplete(b"GE"));
        assert!(pass(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert!(refuse(b"GET /a b c HTTP/1.1\r\n\r\n"));
        assert!(refuse(b"G@T / HTTP/1.1\r\n\r\n"));
        assert!(refuse(b"GET / HTTP/1.1\r\nbad header: x\r\n\r\n"));
        assert!(refuse(b"GET / HTTP/1.1\r\nx: \0\r\n\r\n"));
        assert!(refuse(b"POST / HTTP/1.1\r\ncontent-length: abc\r\n\r\n"));
        assert!(refuse(
            b"POST / HTTP/1.1\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n"
        ));
        assert!(pass(
            b"POST / HTTP/1.1\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\n"
        ));
        assert!(refuse(
            b"POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n"
        ));
        assert!(refuse(
            b"POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n"
        ));
        assert!(pass(
            b"POST / HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n"
        ));
        let huge = [b"GET / HTTP/1.1\r\nx: ".as_slice(), &[b'a'; MAX_CHECKED]].concat();
        assert!(pass(&huge), "too long to judge: hyper answers 431");
    }

    #[test]
    fn the_refusal_is_a_json_400_that_closes() {
        let answer = String::from_utf8(refusal("invalid token")).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(head.contains("connection: close"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["code"], "generic_error");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .starts_with("malformed HTTP request")
        );
    }
}
