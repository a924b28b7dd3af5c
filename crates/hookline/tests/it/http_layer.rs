//! Malformed HTTP, written byte for byte to a node's socket: what the server answers
//! when the request line, the headers or the body's framing is broken.
//!
//! The first request head of a connection is checked before hyper reads it
//! (`hookline_server::listener`): a broken request line, header or framing header is
//! answered with a JSON `400 {code, detail}` and the connection closed. Heads too large to
//! judge, and later requests of a kept-alive connection, are hyper's alone: it answers
//! those by itself (a bare `400`, `431`, `414`) with an empty body. Everything after the
//! headers (a body that ends early, chunks that do not parse, JSON cut short) reaches the
//! handlers, and is answered with a JSON `{code, detail}` (or the 422 list).

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::server::{Server, TOKEN, TempDir};

/// One answer as read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Header names in lowercase.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, checking the answer says it is JSON.
    fn json(&self) -> Value {
        assert!(
            self.header("content-type")
                .is_some_and(|t| t.starts_with("application/json")),
            "not JSON: {self:?}"
        );
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    /// The `{code, detail}` of a JSON error.
    fn error(&self) -> (String, String) {
        let body = self.json();
        let code = body["code"].as_str().unwrap_or_else(|| panic!("{body}"));
        let detail = body["detail"].as_str().unwrap_or_else(|| panic!("{body}"));
        (code.to_owned(), detail.to_owned())
    }
}

/// Writes `raw` to the node, then (if `half_close`) ends the sending side, and reads every
/// answer until the server closes the connection or `wait` passes with nothing more.
async fn exchange(server: &Server, raw: &[u8], half_close: bool, wait: Duration) -> Vec<Answer> {
    let address = server.url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(raw).await.expect("write");
    if half_close {
        stream.shutdown().await.expect("half-close");
    }
    let mut received = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        match tokio::time::timeout(wait, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
            // A reset after the answers were sent.
            Ok(Err(_)) => break,
        }
    }
    parse_answers(&received)
}

/// Splits what was read into answers (bodies framed by `content-length`, as this server
/// frames them).
fn parse_answers(mut bytes: &[u8]) -> Vec<Answer> {
    let mut answers = Vec::new();
    while !bytes.is_empty() {
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no end of head in {:?}", String::from_utf8_lossy(bytes)));
        let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("status line");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse().expect("content-length"));
        let rest = &bytes[end + 4..];
        let length = length.min(rest.len());
        answers.push(Answer {
            status,
            headers,
            body: rest[..length].to_vec(),
        });
        bytes = &rest[length..];
    }
    answers
}

const WAIT: Duration = Duration::from_secs(3);

/// A POST to create an application, with `extra` header lines and `body` as given.
fn app_post(extra: &str, body: &[u8]) -> Vec<u8> {
    let mut raw = format!(
        "POST /api/v1/app HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/json\r\n{extra}\r\n"
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
}

#[tokio::test]
async fn broken_request_lines_and_headers_get_json_errors() {
    let dir = TempDir::new("http-layer-head");
    let server = Server::start(&dir.0, &[]).await;
    let cases: [(&str, &[u8]); 10] = [
        ("garbage request line", b"GARBAGE\r\n\r\n"),
        ("no version", b"GET /healthz\r\nhost: x\r\n\r\n"),
        ("bad method", b"G(T /healthz HTTP/1.1\r\nhost: x\r\n\r\n"),
        (
            "space in a header name",
            b"GET /healthz HTTP/1.1\r\nhost: x\r\nbad header: v\r\n\r\n",
        ),
        (
            "folded header line",
            b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-a: b\r\n c\r\n\r\n",
        ),
        (
            "NUL in a header value",
            b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-a: a\0b\r\n\r\n",
        ),
        (
            "content-length not a number",
            b"POST /api/v1/app HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n{}",
        ),
        (
            "two different content-lengths",
            b"POST /api/v1/app HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}",
        ),
        (
            "transfer-encoding not ending in chunked",
            b"POST /api/v1/app HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\n{}",
        ),
        (
            "chunked in HTTP/1.0",
            b"POST /api/v1/app HTTP/1.0\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        ),
    ];
    for (case, raw) in cases {
        let answers = exchange(&server, raw, false, WAIT).await;
        assert_eq!(answers.len(), 1, "{case}: {answers:?}");
        let answer = &answers[0];
        assert_eq!(answer.status, 400, "{case}: {answer:?}");
        let (code, detail) = answer.error();
        assert_eq!(code, "generic_error", "{case}");
        assert!(
            detail.starts_with("malformed HTTP request"),
            "{case}: {detail}"
        );
        assert_eq!(answer.header("connection"), Some("close"), "{case}");
    }
    // Heads too large to judge are hyper's: a bare 431 and 414.
    let big = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(512 * 1024)
    );
    let long_uri = format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(70_000));
    for (case, raw, status) in [
        ("headers too large", big, 431),
        ("target too long", long_uri, 414),
    ] {
        let answers = exchange(&server, raw.as_bytes(), false, WAIT).await;
        assert_eq!(answers.len(), 1, "{case}: {answers:?}");
        assert_eq!(answers[0].status, status, "{case}: {answers:?}");
        assert!(answers[0].body.is_empty(), "{case}");
    }
    // The node is unharmed.
    let (status, _) = server.api(reqwest::Method::GET, "/healthz", None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn broken_bodies_get_json_errors() {
    let dir = TempDir::new("http-layer-body");
    let server = Server::start(&dir.0, &[]).await;

    // JSON cut short, framed correctly: the 422 list, located in the body where the
    // text ended.
    let cut = br#"{"name": "ap"#;
    let raw = app_post(
        &format!("content-length: {}\r\nconnection: close\r\n", cut.len()),
        cut,
    );
    let answers = exchange(&server, &raw, false, WAIT).await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0].status, 422, "{answers:?}");
    let detail = &answers[0].json()["detail"][0];
    assert_eq!(detail["loc"], json!(["body", "name"]), "{detail}");
    assert_eq!(detail["type"], "value_error.jsondecode", "{detail}");

    // Not JSON at all, said to be JSON.
    let raw = app_post("content-length: 5\r\nconnection: close\r\n", b"hello");
    let answers = exchange(&server, &raw, false, WAIT).await;
    assert_eq!(answers[0].status, 422, "{answers:?}");
    assert_eq!(answers[0].json()["detail"][0]["loc"], json!(["body"]));

    // A content-length that promises more than comes before the client stops sending.
    let raw = app_post("content-length: 100\r\n", br#"{"name": "a"}"#);
    let answers = exchange(&server, &raw, true, WAIT).await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0].status, 400, "{answers:?}");
    let (code, detail) = answers[0].error();
    assert_eq!(code, "generic_error");
    assert!(detail.contains("body"), "{detail}");

    // A content-length shorter than the body: the first bytes are the request (JSON cut
    // short, a 422), the rest is read as a next request that does not parse (hyper's 400).
    let raw = app_post("content-length: 5\r\n", br#"{"name": "a"}"#);
    let answers = exchange(&server, &raw, false, WAIT).await;
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(answers[0].status, 422, "{answers:?}");
    answers[0].json();
    assert_eq!(answers[1].status, 400, "{answers:?}");
    assert!(answers[1].body.is_empty(), "{answers:?}");

    // Chunked bodies whose framing is broken: a size that is not hex, a chunk longer
    // than its size, a body that ends before the last chunk.
    for (case, chunks, half_close) in [
        ("size not hex", &b"zz\r\n{}\r\n0\r\n\r\n"[..], false),
        (
            "chunk longer than its size",
            b"2\r\n{}{}\r\n0\r\n\r\n",
            false,
        ),
        ("no last chunk", b"2\r\n{}\r\n", true),
    ] {
        let raw = app_post("transfer-encoding: chunked\r\n", chunks);
        let answers = exchange(&server, &raw, half_close, WAIT).await;
        assert!(!answers.is_empty(), "{case}: no answer");
        assert_eq!(answers[0].status, 400, "{case}: {answers:?}");
        let (code, detail) = answers[0].error();
        assert_eq!(code, "generic_error", "{case}");
        assert!(detail.contains("body"), "{case}: {detail}");
    }

    // Too large a body, announced or not: 413 with the limit.
    let raw = app_post("content-length: 2000000\r\nconnection: close\r\n", b"{}");
    let answers = exchange(&server, &raw, false, WAIT).await;
    assert_eq!(answers[0].status, 413, "{answers:?}");
    assert_eq!(answers[0].error().0, "payload_too_large");
}

#[tokio::test]
async fn broken_bodies_at_an_ingest_url_get_json_errors() {
    let dir = TempDir::new("http-layer-ingest");
    let server = Server::start(&dir.0, &[]).await;
    let (status, source) = server
        .api(
            reqwest::Method::POST,
            "/ingest/api/v1/source",
            Some(json!({"name": "raw", "type": "generic-webhook"})),
        )
        .await;
    assert_eq!(status, 201, "{source}");
    let url = source["ingestUrl"].as_str().expect("ingestUrl");
    let path = &url[url.find("/in/").expect("an /in/ path")..];

    for (case, framing, body, half_close) in [
        (
            "size not hex",
            "transfer-encoding: chunked\r\n",
            &b"zz\r\n{}\r\n0\r\n\r\n"[..],
            false,
        ),
        (
            "content-length that lies",
            "content-length: 100\r\n",
            b"{}",
            true,
        ),
    ] {
        let raw = [
            format!(
                "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{framing}\r\n"
            )
            .as_bytes(),
            body,
        ]
        .concat();
        let answers = exchange(&server, &raw, half_close, WAIT).await;
        assert!(!answers.is_empty(), "{case}: no answer");
        let answer = &answers[0];
        // A body the route could not read is not a body too large.
        assert_eq!(answer.status, 400, "{case}: {answer:?}");
        let (code, detail) = answer.error();
        assert_eq!(code, "generic_error", "{case}");
        assert!(detail.contains("could not be read"), "{case}: {detail}");
    }
}
