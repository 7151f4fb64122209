//! The proxy's own connections to the primary: the blocked-pop probe's,
//! the command table's and the sync's.
//!
//! Clients authenticate themselves through the proxy. The proxy's own
//! connections log in with credentials of their own (`connusername`,
//! `connpassword`): the sync and the command table read what nobody asked
//! for, and the probe asks about other clients. Without them the probe logs
//! in as its client did (it sends that `AUTH` itself). Connections are the `redis` crate's,
//! through TLS when the sessions' are, sending nothing of their own when
//! they open (no `CLIENT SETINFO`), with Nagle off like a session's.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::io::tcp::TcpSettings;
use redis::{AsyncConnectionConfig, IntoConnectionInfo, RedisConnectionInfo, RedisResult};
use remoteback_transport::{redis_client, TlsSettings};

/// Where the primary is and how to log in.
#[derive(Clone, Debug)]
pub(crate) struct Primary {
    pub host: String,
    pub port: u16,
    pub tls: Option<TlsSettings>,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl Primary {
    /// `HOST:PORT`, for messages.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// A connection with database `db` selected, opened within `connect`,
    /// each reply within `reply`.
    pub async fn connect(
        &self,
        db: u32,
        connect: Duration,
        reply: Duration,
    ) -> RedisResult<MultiplexedConnection> {
        let mut settings = RedisConnectionInfo::default()
            .set_skip_set_lib_name()
            .set_db(i64::from(db));
        if let Some(username) = &self.username {
            settings = settings.set_username(username);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password);
        }
        let info = (self.host.as_str(), self.port)
            .into_connection_info()?
            .set_redis_settings(settings)
            .set_tcp_settings(TcpSettings::default().set_nodelay(true));
        let client = redis_client(info, self.tls.as_ref())?;
        let config = client.async_config(
            AsyncConnectionConfig::new()
                .set_connection_timeout(Some(connect))
                .set_response_timeout(Some(reply)),
        );
        client
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }
}
