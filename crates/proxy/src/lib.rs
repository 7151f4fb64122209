//! The remoteback proxy: clients talk to it as to Redis; it forwards every
//! command to the primary and captures the writes that took effect.
//!
//! Data flow, one module each: [`listener`] accepts clients →
//! [`session`] forwards requests and replies, taking [`locks`] for writes as
//! [`order`] says → [`pending`] matches replies to commands → [`capture`] keeps what took effect, as [`rewrite`] makes it replayable later → [`sender`] (with
//! [`filter`] and [`record`]) hands records to their destinations.

pub mod capture;
pub mod drain;
pub mod filter;
pub mod held;
pub mod listener;
pub mod locks;
pub mod order;
pub mod ordering;
pub mod pending;
pub mod pops;
pub mod probe;
pub mod record;
pub mod rewrite;
pub mod sender;
pub mod session;
pub mod settings;

pub use listener::{Proxy, ProxyError};
pub use settings::{Filter, KafkaSenderSettings, LogSenderSettings, ProxySettings, SenderSettings};
