//! The status endpoints both services expose: `/metrics` and `/health`.
//!
//! Operators scrape `/metrics` with Prometheus (text exposition format
//! 0.0.4) and point alerting at `/health`, which answers 200 while the
//! service does its job fully and 503 when it does not. For the proxy that
//! includes "the backup misses writes": a proxy answering 503 still serves
//! clients, so a load balancer should not take it out of service for that
//! (check the client port instead).
//!
//! The server is written by hand: two GET routes do not justify pulling a
//! whole HTTP stack into the binary. It speaks just enough HTTP/1.1 for
//! Prometheus, curl and load-balancer probes: one request per connection,
//! no request bodies, `Connection: close` on every response.

use std::fmt::{self, Write as _};
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use log::debug;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// Largest request head (request line and headers) accepted.
const MAX_HEAD: usize = 8 * 1024;
/// Time a client gets to send its request head, and to take the response.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// After answering, how long (and how much) unread input is drained so that
/// closing does not reset the connection under the client's feet.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;

/// What a service reports.
///
/// Both methods run on the runtime for each request: they must be quick and
/// must not block (read atomics or a snapshot, do not call out).
pub trait Report: Send + Sync + 'static {
    /// Appends the service's metrics to `out`.
    fn metrics(&self, out: &mut Metrics);
    /// `Ok(text)` when healthy (HTTP 200), `Err(text)` when not (HTTP 503);
    /// text is a short human-readable line.
    fn health(&self) -> Result<String, String>;
}

/// Prometheus text (format 0.0.4) builder.
#[derive(Debug, Default)]
pub struct Metrics {
    out: String,
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// A counter without labels: `# HELP`, `# TYPE name counter`, `name value`.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.counter_family(name, help).sample(&[], value);
    }

    /// A gauge without labels.
    pub fn gauge(&mut self, name: &str, help: &str, value: i64) {
        self.gauge_family(name, help).sample(&[], value);
    }

    /// A counter family whose samples differ by their labels.
    pub fn counter_family<'a>(&'a mut self, name: &'a str, help: &str) -> Family<'a, u64> {
        self.family(name, help, "counter")
    }

    /// A gauge family whose samples differ by their labels, e.g. one
    /// committed offset per partition:
    ///
    /// ```ignore
    /// let mut family = out.gauge_family("remoteback_offset", "Committed offset.");
    /// family.sample(&[("partition", &partition.to_string())], offset);
    /// ```
    pub fn gauge_family<'a>(&'a mut self, name: &'a str, help: &str) -> Family<'a, i64> {
        self.family(name, help, "gauge")
    }

    fn family<'a, V>(&'a mut self, name: &'a str, help: &str, kind: &str) -> Family<'a, V> {
        debug_assert!(valid_name(name, true), "bad metric name {name:?}");
        let out = &mut self.out;
        out.push_str("# HELP ");
        out.push_str(name);
        out.push(' ');
        for c in help.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        let _ = writeln!(out, "\n# TYPE {name} {kind}");
        Family {
            out,
            name,
            value: PhantomData,
        }
    }

    /// The exposition text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// The samples of one metric family; see [`Metrics::gauge_family`].
pub struct Family<'a, V> {
    out: &'a mut String,
    name: &'a str,
    value: PhantomData<V>,
}

impl<V: fmt::Display> Family<'_, V> {
    /// Appends `name{label="value",...} value`. Label values may hold any
    /// text; backslash, double quote and newline are escaped.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: V) -> &mut Self {
        self.out.push_str(self.name);
        for (i, (label, text)) in labels.iter().enumerate() {
            debug_assert!(valid_name(label, false), "bad label name {label:?}");
            self.out.push(if i == 0 { '{' } else { ',' });
            self.out.push_str(label);
            self.out.push_str("=\"");
            for c in text.chars() {
                match c {
                    '\\' => self.out.push_str("\\\\"),
                    '"' => self.out.push_str("\\\""),
                    '\n' => self.out.push_str("\\n"),
                    c => self.out.push(c),
                }
            }
            self.out.push('"');
        }
        if !labels.is_empty() {
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
        self
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*` for metric names, the same without `:` for labels.
fn valid_name(name: &str, colon: bool) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':');
    name.chars()
        .next()
        .is_some_and(|c| ok(c) && !c.is_ascii_digit())
        && name.chars().all(ok)
}

/// Serves `/metrics` and `/health` on `listener` until `shutdown` resolves,
/// each connection in its own task. Connections already accepted finish on
/// their own (they are bounded by the timeouts); the listener is closed when
/// this returns.
pub async fn serve(
    listener: TcpListener,
    report: Arc<dyn Report>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let report = Arc::clone(&report);
                    tokio::spawn(async move {
                        if let Err(e) = connection(stream, &*report).await {
                            debug!("status connection from {peer}: {e}");
                        }
                    });
                }
                Err(e) => {
                    // Out of descriptors and the like: do not spin on it.
                    debug!("status accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

async fn connection(mut stream: TcpStream, report: &dyn Report) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let complete = match timeout(IO_TIMEOUT, read_head(&mut stream, &mut head)).await {
        Ok(complete) => complete?,
        Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
    };
    if head.is_empty() && !complete {
        return Ok(()); // connected and closed without a word: a TCP probe
    }
    let response = respond(complete.then_some(&head[..]), report);
    timeout(IO_TIMEOUT, stream.write_all(&response))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    stream.shutdown().await?;
    // Drain what the client still sends (an oversized head, a body), so that
    // closing with unread input does not turn into a reset that could lose
    // the response.
    let mut sink = [0; 1024];
    let _ = timeout(LINGER, async {
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
    Ok(())
}

/// Reads into `head` up to the blank line ending the request head; `false`
/// when the client stopped or `MAX_HEAD` was reached first.
async fn read_head(stream: &mut TcpStream, head: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut buf = [0; 1024];
    loop {
        let n = stream
            .read(&mut buf[..(MAX_HEAD - head.len()).min(1024)])
            .await?;
        if n == 0 {
            return Ok(false);
        }
        let searched = head.len().saturating_sub(2);
        head.extend_from_slice(&buf[..n]);
        // Lines end in CRLF, but a bare LF is tolerated (hand-typed requests).
        let blank = |i: usize| {
            head[i] == b'\n' && matches!(&head[i + 1..], [b'\n', ..] | [b'\r', b'\n', ..])
        };
        if let Some(end) = (searched..head.len()).find(|&i| blank(i)) {
            head.truncate(end + 1);
            return Ok(true);
        }
        if head.len() == MAX_HEAD {
            return Ok(false);
        }
    }
}

/// The whole response to a request head (`None`: incomplete or too big).
fn respond(head: Option<&[u8]>, report: &dyn Report) -> Vec<u8> {
    let Some((method, path)) = head.and_then(parse) else {
        return response(400, "text/plain; charset=utf-8", "bad request\n", true);
    };
    let body = method != "HEAD";
    if !matches!(path, "/metrics" | "/health") {
        return response(404, "text/plain; charset=utf-8", "not found\n", body);
    }
    if !matches!(method, "GET" | "HEAD") {
        return response(
            405,
            "text/plain; charset=utf-8",
            "method not allowed\n",
            true,
        );
    }
    if path == "/metrics" {
        let mut metrics = Metrics::new();
        report.metrics(&mut metrics);
        let text = metrics.finish();
        return response(200, "text/plain; version=0.0.4; charset=utf-8", &text, body);
    }
    match report.health() {
        Ok(text) => response(200, "text/plain; charset=utf-8", &format!("{text}\n"), body),
        Err(text) => response(503, "text/plain; charset=utf-8", &format!("{text}\n"), body),
    }
}

/// The method and the path (query dropped) of a well-formed request head.
fn parse(head: &[u8]) -> Option<(&str, &str)> {
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.lines();
    let mut parts = lines.next()?.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let ok = parts.next().is_none()
        && token(method)
        && target.starts_with('/')
        && matches!(version, "HTTP/1.0" | "HTTP/1.1")
        && lines.all(|line| line.split_once(':').is_some_and(|(name, _)| token(name)));
    ok.then(|| (method, target.split(['?', '#']).next().unwrap_or(target)))
}

/// A method or header name: visible ASCII without separators.
fn token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

fn response(status: u16, content_type: &str, body: &str, with_body: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let allow = if status == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    use super::*;

    struct Fake {
        healthy: AtomicBool,
    }

    impl Report for Fake {
        fn metrics(&self, out: &mut Metrics) {
            out.counter("remoteback_commands_total", "Commands forwarded.", 42);
            out.gauge("remoteback_lag", "Records behind.", -3);
            out.gauge_family("remoteback_offset", "Committed offset\nper partition.")
                .sample(&[("topic", "t"), ("partition", "0")], 7)
                .sample(&[("topic", "a\"b\\c\nd"), ("partition", "1")], 9);
        }
        fn health(&self) -> Result<String, String> {
            if self.healthy.load(Ordering::SeqCst) {
                Ok("replaying".into())
            } else {
                Err("kafka unreachable".into())
            }
        }
    }

    const EXPOSITION: &str = "\
# HELP remoteback_commands_total Commands forwarded.
# TYPE remoteback_commands_total counter
remoteback_commands_total 42
# HELP remoteback_lag Records behind.
# TYPE remoteback_lag gauge
remoteback_lag -3
# HELP remoteback_offset Committed offset\\nper partition.
# TYPE remoteback_offset gauge
remoteback_offset{topic=\"t\",partition=\"0\"} 7
remoteback_offset{topic=\"a\\\"b\\\\c\\nd\",partition=\"1\"} 9
";

    struct Server {
        addr: SocketAddr,
        fake: Arc<Fake>,
        stop: oneshot::Sender<()>,
        task: JoinHandle<()>,
    }

    async fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = Arc::new(Fake {
            healthy: AtomicBool::new(true),
        });
        let (stop, stopped) = oneshot::channel();
        let report: Arc<dyn Report> = fake.clone();
        let task = tokio::spawn(serve(listener, report, async {
            let _ = stopped.await;
        }));
        Server {
            addr,
            fake,
            stop,
            task,
        }
    }

    /// Sends `request` as is; returns the status line, the headers
    /// (lowercased names) and the body, checking `Content-Length` on the way.
    async fn send(addr: SocketAddr, request: &[u8]) -> (String, Vec<(String, String)>, String) {
        let exchange = async {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(request).await.unwrap();
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).await.unwrap();
            raw
        };
        let raw = timeout(Duration::from_secs(10), exchange)
            .await
            .expect("answered");
        let raw = String::from_utf8(raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("a complete head");
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().to_string();
        let headers: Vec<_> = lines
            .map(|l| {
                let (name, value) = l.split_once(": ").unwrap();
                (name.to_ascii_lowercase(), value.to_string())
            })
            .collect();
        (status, headers, body.to_string())
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    async fn get(addr: SocketAddr, path: &str) -> (String, Vec<(String, String)>, String) {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: test\r\n\r\n");
        let (status, headers, body) = send(addr, request.as_bytes()).await;
        assert_eq!(
            header(&headers, "content-length"),
            Some(&*body.len().to_string())
        );
        assert_eq!(header(&headers, "connection"), Some("close"));
        (status, headers, body)
    }

    #[test]
    fn builder_writes_the_exposition_format() {
        let mut out = Metrics::new();
        Fake {
            healthy: AtomicBool::new(true),
        }
        .metrics(&mut out);
        assert_eq!(out.finish(), EXPOSITION);
        let mut out = Metrics::new();
        out.counter_family("x:y_total", "Help with \\ backslash.")
            .sample(&[("le", "")], u64::MAX);
        assert_eq!(
            out.finish(),
            "# HELP x:y_total Help with \\\\ backslash.\n# TYPE x:y_total counter\n\
             x:y_total{le=\"\"} 18446744073709551615\n"
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("remoteback_up", true));
        assert!(valid_name("_a:b9", true));
        assert!(!valid_name("a:b", false));
        assert!(!valid_name("9a", true));
        assert!(!valid_name("a-b", true));
        assert!(!valid_name("", true));
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "bad metric name")]
    fn bad_metric_name_panics_in_debug() {
        Metrics::new().gauge("remoteback-lag", "x", 1);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "bad label name")]
    fn bad_label_name_panics_in_debug() {
        Metrics::new()
            .gauge_family("lag", "x")
            .sample(&[("a.b", "c")], 1);
    }

    #[tokio::test]
    async fn metrics_endpoint() {
        let server = start().await;
        for path in ["/metrics", "/metrics?x=1"] {
            let (status, headers, body) = get(server.addr, path).await;
            assert_eq!(status, "HTTP/1.1 200 OK");
            assert_eq!(
                header(&headers, "content-type"),
                Some("text/plain; version=0.0.4; charset=utf-8")
            );
            assert_eq!(body, EXPOSITION);
        }
    }

    #[tokio::test]
    async fn health_follows_the_report() {
        let server = start().await;
        let (status, headers, body) = get(server.addr, "/health").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(
            header(&headers, "content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(body, "replaying\n");
        server.fake.healthy.store(false, Ordering::SeqCst);
        let (status, _, body) = get(server.addr, "/health?probe").await;
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        assert_eq!(body, "kafka unreachable\n");
        server.fake.healthy.store(true, Ordering::SeqCst);
        let (status, _, _) = get(server.addr, "/health").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
    }

    #[tokio::test]
    async fn unknown_path_is_404() {
        let server = start().await;
        for path in ["/", "/metricsx", "/health/", "/metrics/x"] {
            let (status, headers, body) = get(server.addr, path).await;
            assert_eq!(status, "HTTP/1.1 404 Not Found", "{path}");
            assert_eq!(header(&headers, "allow"), None);
            assert_eq!(body, "not found\n");
        }
    }

    #[tokio::test]
    async fn other_methods_are_405() {
        let server = start().await;
        let post = b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        let delete = b"DELETE /health HTTP/1.0\r\n\r\n";
        for request in [&post[..], &delete[..]] {
            let (status, headers, body) = send(server.addr, request).await;
            assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
            assert_eq!(header(&headers, "allow"), Some("GET, HEAD"));
            assert_eq!(header(&headers, "connection"), Some("close"));
            assert_eq!(body, "method not allowed\n");
        }
    }

    #[tokio::test]
    async fn head_has_headers_without_body() {
        let server = start().await;
        let (status, headers, body) = send(server.addr, b"HEAD /metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(
            header(&headers, "content-length"),
            Some(&*EXPOSITION.len().to_string())
        );
        assert_eq!(body, "");
        server.fake.healthy.store(false, Ordering::SeqCst);
        let (status, _, body) = send(server.addr, b"HEAD /health HTTP/1.1\r\n\r\n").await;
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        assert_eq!(body, "");
    }

    #[tokio::test]
    async fn oversized_or_malformed_head_is_400() {
        let server = start().await;
        let big = format!(
            "GET /metrics HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(3 * MAX_HEAD)
        );
        let just_fits = format!(
            "GET /metrics HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(MAX_HEAD - 64)
        );
        let (status, _, body) = send(server.addr, just_fits.as_bytes()).await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(body, EXPOSITION);
        let malformed: [&[u8]; 7] = [
            big.as_bytes(),
            b"GET /metrics HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"garbage\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/2.0\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
            b"GET /metrics\xff HTTP/1.1\r\n\r\n",
        ];
        for request in malformed {
            let (status, headers, body) = send(server.addr, request).await;
            assert_eq!(
                status,
                "HTTP/1.1 400 Bad Request",
                "{}",
                request.escape_ascii()
            );
            assert_eq!(header(&headers, "connection"), Some("close"));
            assert_eq!(body, "bad request\n");
        }
        // Bare LF line ends are tolerated.
        let (status, _, _) = send(server.addr, b"GET /health HTTP/1.1\nHost: x\n\n").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
    }

    #[tokio::test]
    async fn broken_clients_do_not_stop_the_server() {
        let server = start().await;
        drop(TcpStream::connect(server.addr).await.unwrap());
        let mut half = TcpStream::connect(server.addr).await.unwrap();
        half.write_all(b"GET /met").await.unwrap();
        drop(half);
        let (status, _, body) = get(server.addr, "/metrics").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(body, EXPOSITION);
    }

    #[tokio::test]
    async fn silent_client_is_dropped_after_the_timeout() {
        let server = start().await;
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\n")
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let mut raw = Vec::new();
        timeout(IO_TIMEOUT * 2, stream.read_to_end(&mut raw))
            .await
            .expect("closed by the server")
            .unwrap();
        assert!(raw.is_empty());
        assert!(started.elapsed() >= IO_TIMEOUT - Duration::from_millis(100));
    }

    #[tokio::test]
    async fn shutdown_stops_accepting() {
        let server = start().await;
        let (status, _, _) = get(server.addr, "/health").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        server.stop.send(()).unwrap();
        timeout(Duration::from_secs(5), server.task)
            .await
            .expect("serve returned")
            .unwrap();
        let refused = TcpStream::connect(server.addr).await.unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    }
}
