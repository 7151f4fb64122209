//! The wire and record formats remoteback speaks.
//!
//! Everything here is pure data handling, no I/O, so the proxy and the replay
//! share one definition of what a RESP frame, a client command, a Redis
//! command's keys and a Kafka record are.
//!
//! - [`frame`]: RESP2/RESP3 values: a cheap completeness check and a decoder.
//! - [`request`]: client requests (multi-bulk and inline) into [`Command`]s.
//! - [`commands`] and [`table`]: what each Redis command is (flags, keys);
//!   [`server_table`]: the same read from a server's `COMMAND` reply.
//! - [`slot`]: the Redis Cluster hash slot of a key.
//! - [`codec`]: the `ROW`, `STRING` and `PROTOCOL` payload formats.
//! - [`record`]: the record that travels through Kafka, and its headers.

pub mod codec;
pub mod command;
pub mod commands;
pub mod frame;
pub mod record;
pub mod request;
pub mod server_table;
pub mod slot;
pub mod table;
pub mod worker;

pub use codec::Format;
pub use command::Command;
pub use record::Record;
pub use worker::Worker;
