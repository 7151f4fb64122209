//! A service's `/metrics` and `/health`, read over plain HTTP/1.1.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A service's status endpoints (`metrics = "127.0.0.1:PORT"`).
pub struct Status(pub u16);

impl Status {
    /// `GET path`: the status code and the body.
    pub fn get(&self, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.0))
            .unwrap_or_else(|e| panic!("connect to the status port {}: {e}", self.0));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n\r\n")
                    .as_bytes(),
            )
            .expect("send the request");
        let mut raw = String::new();
        stream.read_to_string(&mut raw).expect("read the response");
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("an HTTP response to GET {path}: {raw:?}"));
        let code = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("a status line: {head:?}"));
        (code, body.trim_end().to_string())
    }

    /// The sum of the samples of metric `name` (every label set); panics if
    /// `/metrics` has none, so that a renamed metric cannot read as 0.
    pub fn value(&self, name: &str) -> u64 {
        let (code, text) = self.get("/metrics");
        assert_eq!(code, 200, "/metrics: {text}");
        let samples: Vec<u64> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|r| r.starts_with([' ', '{']))
            })
            .map(|l| {
                l.rsplit(' ')
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("a value in {l:?}"))
            })
            .collect();
        assert!(!samples.is_empty(), "no {name} in /metrics:\n{text}");
        samples.iter().sum()
    }

    /// The value of one series, `name{label="value",...}` exactly as
    /// `/metrics` writes it, if it is there.
    pub fn sample(&self, series: &str) -> Option<u64> {
        let (code, text) = self.get("/metrics");
        assert_eq!(code, 200, "/metrics: {text}");
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }
}
