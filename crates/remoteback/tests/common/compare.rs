//! The library comparator (`remoteback::compare`) between two test servers.

pub use remoteback::compare::Difference;
use remoteback::compare::Options;

/// Every difference between the servers on `primary` and `backup` in `dbs`
/// (TTLs within 2 s).
pub fn differences(primary: u16, backup: u16, dbs: &[u32]) -> Vec<Difference> {
    let connect = |port: u16| {
        remoteback::compare::connect(&format!("redis://127.0.0.1:{port}"))
            .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e:#}"))
    };
    let options = Options {
        dbs: dbs.to_vec(),
        ttl_tolerance_ms: 2000,
    };
    remoteback::compare::differences(&mut connect(primary), &mut connect(backup), &options)
        .expect("compare primary and backup")
}
