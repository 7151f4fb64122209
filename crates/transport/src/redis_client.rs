//! The `redis` crate's clients under the same TLS settings as the
//! hand-written connections.

use std::net::SocketAddr;

use redis::io::AsyncDNSResolver;
use redis::{
    AsyncConnectionConfig, ClientTlsConfig, ConnectionAddr, ConnectionInfo, ErrorKind, RedisError,
    RedisFuture, RedisResult, TlsCertificates,
};

use crate::tls::{read, TlsError, TlsSettings};

/// A client of the `redis` crate, and the connection options its async
/// connections need.
#[derive(Clone, Debug)]
pub struct RedisClient {
    pub client: redis::Client,
    /// Set when the certificate's name is not the host: the crate checks
    /// the certificate against the host it resolves, so the client is made
    /// for the certificate's name and this resolves that to the real host.
    resolver: Option<PinnedHost>,
}

impl RedisClient {
    /// `config` with what this client's connections need.
    pub fn async_config(&self, config: AsyncConnectionConfig) -> AsyncConnectionConfig {
        match &self.resolver {
            Some(pinned) => config.set_dns_resolver(pinned.clone()),
            None => config,
        }
    }
}

/// A client for `info` (a `host:port` address, its credentials, database
/// and TCP settings), through TLS when `tls` is given.
pub fn redis_client(info: ConnectionInfo, tls: Option<&TlsSettings>) -> RedisResult<RedisClient> {
    let Some(tls) = tls else {
        return Ok(RedisClient {
            client: redis::Client::open(info)?,
            resolver: None,
        });
    };
    let (host, port) = match info.addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            (host.clone(), *port)
        }
        ConnectionAddr::Unix(_) => {
            return Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "TLS needs a TCP address",
            )))
        }
        _ => {
            return Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "unsupported address",
            )))
        }
    };
    // The files were checked with the configuration (`TlsSettings::check`);
    // here they are only read, a missing one named, and the crate parses
    // them and loads the platform's store itself (failing, unlike
    // `TlsSettings`, on any unreadable entry of it).
    tls.server_name(&host).map_err(invalid)?;
    let name = tls.server_name.clone().unwrap_or_else(|| host.clone());
    let resolver = (name != host).then_some(PinnedHost { host, port });
    let info = info.set_addr(ConnectionAddr::TcpTls {
        host: name,
        port,
        insecure: false,
        tls_params: None,
    });
    let client = redis::Client::build_with_tls(info, certificates(tls).map_err(invalid)?)?;
    Ok(RedisClient { client, resolver })
}

fn invalid(e: TlsError) -> RedisError {
    RedisError::from((ErrorKind::InvalidClientConfig, "TLS", e.to_string()))
}

/// The files of `tls` as the crate takes them (PEM bytes).
fn certificates(tls: &TlsSettings) -> Result<TlsCertificates, TlsError> {
    let client_tls = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read(cert)?,
            client_key: read(key)?,
        }),
        (None, None) => None,
        _ => return Err(TlsError::HalfIdentity),
    };
    let root_cert = tls.ca_file.as_deref().map(read).transpose()?;
    Ok(TlsCertificates {
        client_tls,
        root_cert,
    })
}

/// Resolves whatever name the crate asks for to one real host.
#[derive(Clone, Debug)]
struct PinnedHost {
    host: String,
    port: u16,
}

impl AsyncDNSResolver for PinnedHost {
    fn resolve<'a, 'b: 'a>(
        &'a self,
        _name: &'b str,
        _port: u16,
    ) -> RedisFuture<'a, Box<dyn Iterator<Item = SocketAddr> + Send + 'a>> {
        Box::pin(async move {
            let found = tokio::net::lookup_host((self.host.as_str(), self.port)).await?;
            Ok(Box::new(found.collect::<Vec<_>>().into_iter())
                as Box<dyn Iterator<Item = SocketAddr> + Send>)
        })
    }
}
