//! The sync's own connections to the primary.
//!
//! Clients authenticate themselves through the proxy; the sync reads keys
//! nobody asked for, so it needs credentials of its own (`connusername`,
//! `connpassword`). Connections are the `redis` crate's, one per database,
//! sending nothing of their own when they open (no `CLIENT SETINFO`).

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::io::tcp::TcpSettings;
use redis::{AsyncConnectionConfig, Client, RedisConnectionInfo, RedisResult};

/// Longest one reply may take: a `DUMP` of a key just under the chunk size,
/// or a page of a big key, on a busy primary.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the primary is and how to log in.
#[derive(Clone, Debug)]
pub(crate) struct Primary {
    /// `HOST:PORT`.
    pub addr: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl Primary {
    /// A connection with database `db` selected.
    pub async fn connect(&self, db: u32) -> RedisResult<MultiplexedConnection> {
        let url = format!("redis://{}/", self.addr);
        let mut settings = RedisConnectionInfo::default()
            .set_skip_set_lib_name()
            .set_db(i64::from(db));
        if let Some(username) = &self.username {
            settings = settings.set_username(username);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password);
        }
        let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())?
            .set_redis_settings(settings)
            .set_tcp_settings(TcpSettings::default().set_nodelay(true));
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(REPLY_TIMEOUT));
        Client::open(info)?
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }
}
