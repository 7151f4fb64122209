//! Opening connections to one Redis server, plain or TLS.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::renewal::Renewing;
use crate::stream::Stream;
use crate::tls::{TlsError, TlsSettings};

/// How long a server that took the TCP connection may take to finish the
/// TLS handshake: one that says nothing (a load balancer without a
/// backend) would otherwise hold the connection forever.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a Redis server is and how to reach it. Built once (the TLS files
/// are read then), cloned into whatever connects.
#[derive(Clone)]
pub struct Connector {
    addr: String,
    tls: Option<(Arc<Renewing<TlsConnector>>, ServerName<'static>)>,
}

impl Connector {
    /// `host:port`, through TLS when `tls` is given. Its files renewed on
    /// disk are taken up by the connections opened after ([`Renewing`]).
    pub fn new(host: &str, port: u16, tls: Option<&TlsSettings>) -> Result<Connector, TlsError> {
        let tls = match tls {
            None => None,
            Some(settings) => {
                let owned = settings.clone();
                let connector = Renewing::new("TLS to Redis", settings.files(), move || {
                    Ok(TlsConnector::from(owned.client_config()?))
                })?;
                Some((Arc::new(connector), settings.server_name(host)?))
            }
        };
        Ok(Connector {
            addr: format!("{host}:{port}"),
            tls,
        })
    }

    /// `HOST:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// A new connection, with Nagle's algorithm off (every caller writes
    /// whole requests and waits for replies) and, for TLS, the handshake
    /// done and the server's certificate checked.
    pub async fn connect(&self) -> io::Result<Stream> {
        let socket = TcpStream::connect(&self.addr).await?;
        let _ = socket.set_nodelay(true);
        match &self.tls {
            None => Ok(Stream::Plain(socket)),
            Some((connector, name)) => {
                let handshake = connector.get().connect(name.clone(), socket);
                let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
                    .await
                    .map_err(|_| {
                        io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"),
                        )
                    })??;
                Ok(Stream::Tls(Box::new(stream.into())))
            }
        }
    }
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("addr", &self.addr)
            .field("tls", &self.is_tls())
            .finish()
    }
}
