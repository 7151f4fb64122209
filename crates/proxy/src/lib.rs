//! The remoteback proxy: clients talk to it as to Redis; it forwards every
//! command to the primary and captures the writes that took effect.
//!
//! The modules follow a command through the proxy (docs/architecture.md
//! draws the whole flow):
//!
//! - [`listener`] accepts clients and starts a session for each
//!   (`open_files`: the descriptors they need);
//! - `session`: the client side reads requests and forwards them, the
//!   upstream side reads the primary's replies, matches them to the
//!   commands in flight and writes them to the client;
//! - `ordering`: the key locks and blocked-pop tracking that keep the
//!   primary's order of conflicting writes from different clients;
//! - `capture`: what took effect, rewritten to replay the same later
//!   (`capture::rewrite`), filtered per sender and encoded as records;
//! - `sender`: the log and Kafka senders, the bounded backlog and
//!   `ack = "kafka"`;
//! - `shutdown`: finishing what is in flight on SIGTERM;
//! - `table`: the command table, read from the primary's `COMMAND`;
//! - [`settings`]: what the binary hands in; [`Status`]: what it reads back
//!   for `/metrics` and `/health`.

mod capture;
pub mod failover;
pub mod listener;
mod open_files;
mod ordering;
mod primary;
mod sender;
mod session;
pub mod settings;
mod shutdown;
mod status;
pub mod sync;
mod table;

pub use listener::{Proxy, ProxyError};
pub use settings::{
    default_worker_threads, AckMode, Filter, KafkaSenderSettings, LogSenderSettings, OnFull,
    ProxySettings, SenderSettings,
};
pub use status::{SenderStatus, Status, UpstreamError};
pub use sync::{
    BadPosition, CopyError, Method, RepairError, StartError, SyncControl, SyncPosition,
    SyncProgress, SyncRequest, SyncState, DEFAULT_CHUNK_BYTES, DEFAULT_INFLIGHT_BYTES,
};
