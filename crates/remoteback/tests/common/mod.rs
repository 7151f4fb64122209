//! Shared harness for the integration tests: free ports, throw-away
//! `redis-server` and `tansu` (Kafka protocol) brokers, and `remoteback`
//! subprocesses.
//!
//! Every process started here is killed when its handle is dropped, also
//! while a test unwinds from a panic. As a second line of defence the
//! children are spawned from one long-lived thread with
//! `PR_SET_PDEATHSIG = SIGKILL`, so they die with the test process even
//! when it is killed outright (a test-runner timeout, `SIGKILL`, an abort).
//!
//! External programs can be overridden with environment variables:
//! `REMOTEBACK_TEST_REDIS_SERVER` (default `redis-server`) and
//! `REMOTEBACK_TEST_TANSU` (default `tansu` on `PATH`, then
//! `$CARGO_HOME/bin/tansu`).
//!
//! Set `REMOTEBACK_TEST_KEEP=1` to keep the temporary directories (data,
//! configs and logs) after the test for inspection.

#![allow(dead_code)]

/// Comparing the contents of two Redis servers (primary vs. backup).
pub mod compare;
pub mod dataset;
pub mod faults;
pub mod mixed;
pub mod pipeline;
pub mod status;
pub mod tls;
pub mod workload;

mod broker;
mod process;
mod redis_server;
mod service;

pub use broker::*;
pub use process::*;
pub use redis_server::*;
pub use service::*;
