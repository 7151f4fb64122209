//! The status endpoints both services expose: `/metrics` and `/health`.
//!
//! Operators scrape `/metrics` with Prometheus (OpenMetrics text) and point
//! alerting at `/health`, which answers 200 while the service does its job
//! fully and 503 when it does not. For the proxy that includes "the backup
//! misses writes": a proxy answering 503 still serves clients, so a load
//! balancer should not take it out of service for that (check the client
//! port instead).
//!
//! HTTP is axum's router over hyper, one request per connection
//! (`Connection: close`): what Prometheus, curl and load-balancer probes
//! need. The proxy adds its admin routes (`remoteback::admin`) to the same
//! server. What each service reports is in [`proxy`] and [`replay`].

pub mod proxy;
pub mod replay;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use log::debug;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use remoteback::admin::server::Peer;

/// Time a client gets to send its request head.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection lasts (a client that does not take its response
/// is dropped): long enough for an admin repair of a big key, which
/// answers once Kafka acknowledged it.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(300);
/// Largest request head taken (hyper's smallest read buffer).
const MAX_HEAD: usize = 8 * 1024;

/// The content type of the OpenMetrics text exposition.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// What a service reports.
///
/// Both methods run on the runtime for each request: they must be quick and
/// must not block (read atomics or a snapshot, do not call out).
pub trait Report: Send + Sync + 'static {
    /// Writes the service's metrics (see [`counter`], [`gauge`],
    /// [`counter_family`]).
    fn metrics(&self, out: &mut DescriptorEncoder<'_>) -> fmt::Result;
    /// `Ok(text)` when healthy (HTTP 200), `Err(text)` when not (HTTP 503);
    /// text is a short human-readable line.
    fn health(&self) -> Result<String, String>;
}

/// A counter without labels. `name` is the exposed name, ending in
/// `_total` (the encoder adds that suffix itself).
pub fn counter(out: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = ConstCounter::new(value);
    let kind = metric.metric_type();
    metric.encode(out.encode_descriptor(family_name(name), plain(help), None, kind)?)
}

/// A gauge without labels.
pub fn gauge(out: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: i64) -> fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(out.encode_descriptor(name, plain(help), None, metric.metric_type())?)
}

/// A counter family whose samples differ by their labels; `name` as for
/// [`counter`]. Label values may hold any text.
pub fn counter_family<const N: usize>(
    out: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: &[([(&str, &str); N], u64)],
) -> fmt::Result {
    let kind = ConstCounter::new(0u64).metric_type();
    let samples = samples.iter().map(|(l, v)| (l, ConstCounter::new(*v)));
    family(out, family_name(name), help, kind, samples)
}

/// A gauge family whose samples differ by their labels: integers, or
/// seconds with fractions. Label values may hold any text.
pub fn gauge_family<const N: usize, V: EncodeGaugeValue + Copy>(
    out: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: &[([(&str, &str); N], V)],
) -> fmt::Result {
    let samples = samples.iter().map(|(l, v)| (l, ConstGauge::new(*v)));
    family(out, name, help, MetricType::Gauge, samples)
}

/// A histogram without labels (`name` ends in its unit: `_seconds`).
pub fn histogram(
    out: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    histogram: &Histogram,
) -> fmt::Result {
    histogram.encode(out.encode_descriptor(name, plain(help), None, MetricType::Histogram)?)
}

/// A histogram family whose samples differ by their labels.
pub fn histogram_family<const N: usize>(
    out: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: &[([(&str, &str); N], Histogram)],
) -> fmt::Result {
    let samples = samples.iter().map(|(l, h)| (l, h.clone()));
    family(out, name, help, MetricType::Histogram, samples)
}

/// One family of `kind` under `name`, each metric with its labels escaped.
fn family<'a, const N: usize, M: EncodeMetric>(
    out: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    metrics: impl Iterator<Item = (&'a [(&'a str, &'a str); N], M)>,
) -> fmt::Result {
    let mut family = out.encode_descriptor(name, plain(help), None, kind)?;
    for (labels, metric) in metrics {
        let labels = labels.map(|(name, value)| (name, Escaped(value)));
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A label value as the exposition formats spell it: `\`, `"` and line
/// feeds escaped. prometheus-client writes label values as they are
/// (prometheus/client_rust#151), so this is done here.
struct Escaped<'a>(&'a str);

impl EncodeLabelValue for Escaped<'_> {
    fn encode(&self, out: &mut LabelValueEncoder<'_>) -> fmt::Result {
        use std::fmt::Write;
        for c in self.0.chars() {
            match c {
                '\\' => out.write_str("\\\\")?,
                '"' => out.write_str("\\\"")?,
                '\n' => out.write_str("\\n")?,
                c => out.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// Help text, which the encoder writes as it is: ours never needs escaping.
fn plain(help: &str) -> &str {
    debug_assert!(
        !help.contains(['\\', '"', '\n']),
        "help text {help:?} would need escaping"
    );
    help
}

/// A counter's name without the `_total` the encoder appends.
fn family_name(name: &str) -> &str {
    debug_assert!(name.ends_with("_total"), "counter {name:?} without _total");
    name.strip_suffix("_total").unwrap_or(name)
}

/// The report, as the registry asks for it at each scrape.
pub(super) struct Collected(Arc<dyn Report>);

impl fmt::Debug for Collected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Collected")
    }
}

impl Collector for Collected {
    fn encode(&self, mut out: DescriptorEncoder<'_>) -> fmt::Result {
        self.0.metrics(&mut out)
    }
}

/// What every request handler sees.
struct Reporting {
    registry: Registry,
    report: Arc<dyn Report>,
}

/// The routes: `GET`/`HEAD` `/metrics` and `/health`, and `extra`'s; other
/// methods on them are 405, other paths 404.
fn router(report: Arc<dyn Report>, extra: Router) -> Router {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Collected(report.clone())));
    let service = Arc::new(Reporting { registry, report });
    Router::new()
        .route("/metrics", get(metrics).fallback(method_not_allowed))
        .route("/health", get(health).fallback(method_not_allowed))
        .with_state(service)
        .merge(extra)
        .fallback(not_found)
}

async fn metrics(State(service): State<Arc<Reporting>>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &service.registry) {
        Ok(()) => ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, TEXT)],
            format!("cannot encode the metrics: {e}\n"),
        )
            .into_response(),
    }
}

/// `/health`: 200 or 503, and why. JSON (`{"state": "ok"|"unhealthy",
/// "reasons": [...], "summary": "..."}`) for monitoring systems; the one
/// line of text for a client that asks for `text/plain` (a person with
/// `curl -H 'Accept: text/plain'`, or a script that greps it).
async fn health(State(service): State<Arc<Reporting>>, headers: HeaderMap) -> Response {
    let health = service.report.health();
    let status = match health {
        Ok(_) => StatusCode::OK,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    let wants_text = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/plain") && !v.contains("application/json"));
    if wants_text {
        let text = match health {
            Ok(text) | Err(text) => text,
        };
        return (status, [(header::CONTENT_TYPE, TEXT)], format!("{text}\n")).into_response();
    }
    let body = match &health {
        Ok(text) => serde_json::json!({"state": "ok", "reasons": [], "summary": text}),
        Err(text) => serde_json::json!({"state": "unhealthy", "reasons": [text], "summary": text}),
    };
    (status, [(header::CONTENT_TYPE, JSON)], format!("{body}\n")).into_response()
}

async fn method_not_allowed() -> Response {
    let mut response = (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::CONTENT_TYPE, TEXT)],
        "method not allowed\n",
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    response
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, TEXT)],
        "not found\n",
    )
        .into_response()
}

/// Serves `/metrics` and `/health` on `listener` until `shutdown` resolves,
/// each connection in its own task. Connections already accepted finish on
/// their own (they are bounded by the timeouts); the listener is closed when
/// this returns.
pub async fn serve(
    listener: TcpListener,
    report: Arc<dyn Report>,
    extra: Router,
    shutdown: impl Future<Output = ()>,
) {
    let app = router(report, extra);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let app = app.clone().layer(Extension(Peer(peer)));
                    let service = TowerToHyperService::new(app);
                    tokio::spawn(async move {
                        let connection = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(IO_TIMEOUT)
                            .max_buf_size(MAX_HEAD)
                            .keep_alive(false)
                            .serve_connection(TokioIo::new(stream), service);
                        match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => debug!("status connection from {peer}: {e}"),
                            Err(_) => debug!("status connection from {peer}: timed out"),
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

/// Binds `address` and serves `report` there, with `extra`'s routes, for
/// as long as the runtime runs.
pub async fn start(address: &str, report: Arc<dyn Report>, extra: Router) -> std::io::Result<()> {
    let listener = TcpListener::bind(address).await?;
    tokio::spawn(serve(listener, report, extra, std::future::pending()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;
    use tokio::time::timeout;

    use super::*;

    struct Fake {
        healthy: AtomicBool,
    }

    impl Report for Fake {
        fn metrics(&self, out: &mut DescriptorEncoder<'_>) -> fmt::Result {
            counter(out, "remoteback_commands_total", "Commands forwarded.", 42)?;
            gauge(out, "remoteback_lag", "Records behind.", -3)?;
            counter_family(
                out,
                "remoteback_offsets_total",
                "Offsets per partition.",
                &[
                    ([("topic", "t"), ("partition", "0")], 7),
                    ([("topic", "a\"b\\c\nd"), ("partition", "1")], 9),
                ],
            )
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
# HELP remoteback_commands Commands forwarded.
# TYPE remoteback_commands counter
remoteback_commands_total 42
# HELP remoteback_lag Records behind.
# TYPE remoteback_lag gauge
remoteback_lag -3
# HELP remoteback_offsets Offsets per partition.
# TYPE remoteback_offsets counter
remoteback_offsets_total{topic=\"t\",partition=\"0\"} 7
remoteback_offsets_total{topic=\"a\\\"b\\\\c\\nd\",partition=\"1\"} 9
# EOF
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
        let task = tokio::spawn(serve(listener, report, Router::new(), async {
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
        get_accepting(addr, path, "*/*").await
    }

    async fn get_accepting(
        addr: SocketAddr,
        path: &str,
        accept: &str,
    ) -> (String, Vec<(String, String)>, String) {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: test\r\nAccept: {accept}\r\n\r\n"
        );
        let (status, headers, body) = send(addr, request.as_bytes()).await;
        assert_eq!(
            header(&headers, "content-length"),
            Some(&*body.len().to_string())
        );
        assert_eq!(header(&headers, "connection"), Some("close"));
        (status, headers, body)
    }

    #[tokio::test]
    async fn metrics_endpoint() {
        let server = start().await;
        for path in ["/metrics", "/metrics?x=1"] {
            let (status, headers, body) = get(server.addr, path).await;
            assert_eq!(status, "HTTP/1.1 200 OK");
            assert_eq!(header(&headers, "content-type"), Some(OPENMETRICS));
            assert_eq!(body, EXPOSITION);
        }
    }

    #[tokio::test]
    async fn health_follows_the_report() {
        let server = start().await;
        let (status, headers, body) = get_accepting(server.addr, "/health", "text/plain").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(
            header(&headers, "content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(body, "replaying\n");
        let (_, headers, body) = get(server.addr, "/health").await;
        assert_eq!(header(&headers, "content-type"), Some(JSON));
        assert_eq!(
            body,
            "{\"reasons\":[],\"state\":\"ok\",\"summary\":\"replaying\"}\n"
        );
        server.fake.healthy.store(false, Ordering::SeqCst);
        let (status, _, body) = get_accepting(server.addr, "/health?probe", "text/plain").await;
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        assert_eq!(body, "kafka unreachable\n");
        let (status, _, body) = get(server.addr, "/health").await;
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["state"], "unhealthy");
        assert_eq!(json["reasons"][0], "kafka unreachable");
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
        for (request, version) in [(&post[..], "HTTP/1.1"), (&delete[..], "HTTP/1.0")] {
            let (status, headers, body) = send(server.addr, request).await;
            // A response speaks the request's version.
            assert_eq!(status, format!("{version} 405 Method Not Allowed"));
            assert_eq!(header(&headers, "allow"), Some("GET, HEAD"));
            if version == "HTTP/1.1" {
                // HTTP/1.0 closes by default.
                assert_eq!(header(&headers, "connection"), Some("close"));
            }
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
    async fn oversized_or_malformed_head_is_refused() {
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
        let bad = "400 Bad Request";
        let malformed: [(&[u8], &str, &str); 7] = [
            (big.as_bytes(), "431 Request Header Fields Too Large", ""),
            (b"GET /metrics HTTP/1.1\r\nBad Name: x\r\n\r\n", bad, ""),
            (b"garbage\r\n\r\n", bad, ""),
            (b"GET /metrics HTTP/2.0\r\n\r\n", bad, ""),
            (b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n", bad, ""),
            (b"GET /metrics\xff HTTP/1.1\r\n\r\n", bad, ""),
            // Not a path: no route has it.
            (
                b"GET metrics HTTP/1.1\r\n\r\n",
                "404 Not Found",
                "not found\n",
            ),
        ];
        for (request, refused, text) in malformed {
            let (status, headers, body) = send(server.addr, request).await;
            assert_eq!(
                status,
                format!("HTTP/1.1 {refused}"),
                "{}",
                request.escape_ascii()
            );
            assert_eq!(header(&headers, "connection"), Some("close"));
            assert_eq!(body, text);
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
