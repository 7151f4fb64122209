//! Taking a client's connection, plain or TLS: the proxy's side of a
//! client that speaks TLS to it (`bindtls`).

use std::io;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::connector::HANDSHAKE_TIMEOUT;
use crate::renewal::Renewing;
use crate::stream::Stream;
use crate::tls::{ServerTlsSettings, TlsError};

/// How a listener's connections become streams. Built once (the files are
/// read then).
#[derive(Clone)]
pub struct Acceptor {
    tls: Option<Arc<Renewing<TlsAcceptor>>>,
}

impl Acceptor {
    /// Plain TCP when `tls` is `None`. Its files renewed on disk are taken
    /// up by the connections taken after ([`Renewing`]).
    pub fn new(tls: Option<&ServerTlsSettings>) -> Result<Acceptor, TlsError> {
        let tls = match tls {
            None => None,
            Some(settings) => {
                let owned = settings.clone();
                let acceptor = Renewing::new("TLS for clients", settings.files(), move || {
                    Ok(TlsAcceptor::from(owned.server_config()?))
                })?;
                Some(Arc::new(acceptor))
            }
        };
        Ok(Acceptor { tls })
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The client's stream; for TLS once the handshake is done (and the
    /// client's certificate checked, when one is required), within the
    /// same time a connection to Redis has.
    pub async fn accept(&self, socket: TcpStream) -> io::Result<Stream> {
        let Some(acceptor) = &self.tls else {
            return Ok(Stream::Plain(socket));
        };
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.get().accept(socket))
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
