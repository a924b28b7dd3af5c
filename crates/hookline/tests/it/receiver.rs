//! A minimal HTTP/1.1 receiver on loopback that records each request and answers with a
//! scripted status. Plain `std`, so the tests exercise the real client stack end to end.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::thread;

/// One request as the receiver saw it.
#[derive(Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Serves `responses.len()` requests, answering each with the next `(status, extra header
/// lines)`, then stops.
pub fn spawn(responses: Vec<(u16, &'static str)>) -> (SocketAddr, mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for (status, extra) in responses {
            let (stream, _) = listener.accept().expect("accept");
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            reader.read_line(&mut line).expect("request line");
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or_default().to_owned();
            let path = parts.next().unwrap_or_default().to_owned();
            let mut headers = Vec::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).expect("header line");
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                let (name, value) = line.split_once(':').expect("header colon");
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
            let length: usize = headers
                .iter()
                .find(|(name, _)| name == "content-length")
                .map(|(_, value)| value.parse().expect("content-length"))
                .unwrap_or(0);
            let mut body = vec![0; length];
            reader.read_exact(&mut body).expect("body");
            let answer = format!(
                "HTTP/1.1 {status} Scripted\r\ncontent-length: 2\r\nconnection: close\r\n{extra}\r\nok"
            );
            reader
                .get_mut()
                .write_all(answer.as_bytes())
                .expect("answer");
            tx.send(Received {
                method,
                path,
                headers,
                body,
            })
            .expect("test still listening");
        }
    });
    (addr, rx)
}
