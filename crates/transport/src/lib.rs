//! How remoteback's connections to Redis travel: plain TCP, or TLS through
//! rustls for the managed services that serve nothing else.
//!
//! The proxy's sessions and the replay's backup connection are hand-written
//! RESP over a [`Stream`]; every other connection (the proxy's probe and
//! sync, the tools) is the `redis` crate's, built by [`redis_client`] from
//! the same [`TlsSettings`], so that one file's settings mean the same for
//! both.

mod acceptor;
mod connector;
mod redis_client;
mod renewal;
mod stream;
mod tls;

pub use acceptor::Acceptor;
pub use connector::Connector;
pub use redis_client::{redis_client, RedisClient};
pub use stream::{ReadHalf, Stream, WriteHalf};
pub use tls::{ServerTlsSettings, TlsError, TlsSettings};
