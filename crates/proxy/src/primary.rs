//! The proxy's own connections to the primary: the blocked-pop probe's and
//! the sync's.
//!
//! Clients authenticate themselves through the proxy. The probe logs in as
//! its client did (it sends that `AUTH` itself); the sync reads keys nobody
//! asked for, so it has credentials of its own (`connusername`,
//! `connpassword`). Connections are the `redis` crate's, sending nothing of
//! their own when they open (no `CLIENT SETINFO`), with Nagle off like a
//! session's.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::io::tcp::TcpSettings;
use redis::{AsyncConnectionConfig, Client, RedisConnectionInfo, RedisResult};

/// Where the primary is and how to log in.
#[derive(Clone, Debug)]
pub(crate) struct Primary {
    /// `HOST:PORT`.
    pub addr: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl Primary {
    /// The primary at `addr`, without credentials.
    pub fn at(addr: &str) -> Primary {
        Primary {
            addr: addr.to_string(),
            username: None,
            password: None,
        }
    }

    /// A connection with database `db` selected, opened within `connect`,
    /// each reply within `reply`.
    pub async fn connect(
        &self,
        db: u32,
        connect: Duration,
        reply: Duration,
    ) -> RedisResult<MultiplexedConnection> {
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
            .set_connection_timeout(Some(connect))
            .set_response_timeout(Some(reply));
        Client::open(info)?
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }
}
