//! `remoteback status` against a running proxy and replay: what a person
//! on call reads, and the exit code a script checks.

mod common;

use std::process::Command;
use std::time::Duration;

use common::pipeline::{Pipeline, Setup};
use common::{remoteback_bin, wait_until};

fn status(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(remoteback_bin())
        .arg("status")
        .args(args)
        .output()
        .expect("run remoteback status");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn status_shows_health_rates_and_lag_and_exits_by_health() {
    let (mut p, proxy_metrics, replay_metrics) = Pipeline::start_with_metrics(Setup::default());
    let mut client = p.client();
    for i in 0..10 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut client)
            .unwrap();
    }
    p.wait_backup_value(0, "k9", "9");

    let (proxy_addr, replay_addr) = (
        format!("127.0.0.1:{proxy_metrics}"),
        format!("127.0.0.1:{replay_metrics}"),
    );
    let args = [
        "--proxy",
        proxy_addr.as_str(),
        "--replay",
        replay_addr.as_str(),
    ];
    let mut shown = String::new();
    wait_until(
        Duration::from_secs(20),
        "every record delivered and applied in the status",
        || {
            let (code, text) = status(&args);
            shown = text;
            code == Some(0)
                && shown.contains("writes delivered -/s (10 in all)")
                && shown.contains("writes applied -/s (10 in all)")
        },
    );
    assert!(
        shown.contains(&format!("proxy {proxy_addr}: ok: backlog")),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("replay {replay_addr}: ok")),
        "{shown}"
    );
    assert!(shown.contains("clients 1"), "{shown}");
    assert!(shown.contains("lag "), "{shown}");

    // A replay that is gone: exit 2, and which one.
    p.replay.take();
    let (code, text) = status(&args);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains(&format!("replay {replay_addr}: UNREACHABLE")),
        "{text}"
    );
    assert!(text.contains(&format!("proxy {proxy_addr}: ok")), "{text}");
    let (code, text) = status(&[]);
    assert_eq!(code, Some(2), "{text}");
    eprintln!("[check] status: both ok with 10 writes delivered and applied, exit 0; replay gone: UNREACHABLE, exit 2\n{shown}");
}

/// The alert rules and the dashboard in docs/ name only metrics the
/// services serve: a renamed metric cannot leave an alert that never fires.
#[test]
fn the_alerts_and_the_dashboard_name_only_served_metrics() {
    let (p, proxy_metrics, replay_metrics) = Pipeline::start_with_metrics(Setup::default());
    // A write applied: the per-partition families have a sample then.
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut p.client())
        .unwrap();
    p.wait_backup_value(0, "k", "v");
    wait_until(Duration::from_secs(20), "a partition's lag", || {
        common::status::Status(replay_metrics)
            .get("/metrics")
            .1
            .contains("remoteback_replay_lag_seconds{")
    });
    let mut served = std::collections::BTreeSet::new();
    for port in [proxy_metrics, replay_metrics] {
        let (code, text) = common::status::Status(port).get("/metrics");
        assert_eq!(code, 200, "{text}");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            served.insert(name.to_string());
        }
    }
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    for file in ["alerts.yml", "grafana-dashboard.json"] {
        let text = std::fs::read_to_string(docs.join(file)).expect("the docs file");
        let named: std::collections::BTreeSet<&str> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("remoteback_"))
            .collect();
        assert!(named.len() >= 10, "{file} names {named:?}");
        let unknown: Vec<&&str> = named.iter().filter(|n| !served.contains(**n)).collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics no service serves: {unknown:?}\nserved: {served:?}"
        );
        eprintln!(
            "[check] {file}: all {} metrics it names are served",
            named.len()
        );
    }
}
