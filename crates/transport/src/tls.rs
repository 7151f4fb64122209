//! What a TLS connection to Redis trusts and presents, and the rustls
//! client configuration made of it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// TLS towards one Redis server, as a configuration file gives it: the
/// certificates to trust (a PEM bundle, or the platform's when none is
/// given), a client certificate and key for servers that ask for one
/// (`tls-auth-clients yes`), and the name the server's certificate must
/// carry when it is not the host connected to.
///
/// Only paths are kept: the files are read when a connection's
/// configuration is built ([`TlsSettings::client_config`]), so that the key
/// itself is never in a settings value that could be printed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificates of the authorities to trust; `None` for the
    /// platform's store (`/etc/ssl/certs` on Debian, or `SSL_CERT_FILE`).
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain presented to the server.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file` (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// The name the server's certificate is checked against; `None` for
    /// the host connected to (a name or an IP address).
    pub server_name: Option<String>,
}

/// Why a TLS configuration cannot be used. Each names the file or value at
/// fault and never shows a file's contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} is not a valid PEM certificate file: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("a client certificate needs both a certificate file and a key file")]
    HalfIdentity,
    #[error("the certificate {cert} does not go with the key {key}: {reason}")]
    Identity {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("no trusted certificates in the platform's store ({0}); give a CA file")]
    NoPlatformRoots(String),
    #[error("{0:?} is not a host name or IP address a certificate can be checked against")]
    ServerName(String),
}

impl TlsSettings {
    /// The rustls configuration of a connection: roots to trust, and the
    /// client certificate when there is one.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let roots = match &self.ca_file {
            Some(path) => roots_from(path)?,
            None => platform_roots()?,
        };
        let builder = ClientConfig::builder().with_root_certificates(roots);
        let config = match (&self.cert_file, &self.key_file) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(certificates(cert)?, private_key(key)?)
                .map_err(|e| TlsError::Identity {
                    cert: cert.clone(),
                    key: key.clone(),
                    reason: e.to_string(),
                })?,
            _ => return Err(TlsError::HalfIdentity),
        };
        Ok(Arc::new(config))
    }

    /// The files it names, for [`crate::renewal::Renewing`] to watch.
    pub(crate) fn files(&self) -> Vec<PathBuf> {
        [&self.ca_file, &self.cert_file, &self.key_file]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// The name the server's certificate must carry when connecting to
    /// `host`.
    pub fn server_name(&self, host: &str) -> Result<ServerName<'static>, TlsError> {
        let name = self.server_name.as_deref().unwrap_or(host);
        ServerName::try_from(name.to_owned()).map_err(|_| TlsError::ServerName(name.to_owned()))
    }

    /// Reads every file and checks the names, as a connection would: what
    /// `check-config` and a service's start report before connecting.
    pub fn check(&self, host: &str) -> Result<(), TlsError> {
        self.client_config()?;
        self.server_name(host)?;
        Ok(())
    }
}

/// TLS towards the proxy's clients (`bindtls`): the certificate chain and
/// key it presents, and, when given, the authorities whose certificates
/// clients must present (as Redis's `tls-auth-clients yes`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerTlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// PEM certificates of the authorities client certificates must chain
    /// to; `None`: clients present none.
    pub ca_file: Option<PathBuf>,
}

impl ServerTlsSettings {
    /// The files it names, for [`crate::renewal::Renewing`] to watch.
    pub(crate) fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.cert_file.clone(), self.key_file.clone()];
        files.extend(self.ca_file.clone());
        files
    }

    /// The rustls configuration of a listener.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let builder = ServerConfig::builder();
        let builder = match &self.ca_file {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let verifier = WebPkiClientVerifier::builder(Arc::new(roots_from(path)?))
                    .build()
                    .map_err(|e| TlsError::BadCertificate {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(certificates(&self.cert_file)?, private_key(&self.key_file)?)
            .map_err(|e| TlsError::Identity {
                cert: self.cert_file.clone(),
                key: self.key_file.clone(),
                reason: e.to_string(),
            })?;
        Ok(Arc::new(config))
    }
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every certificate of a PEM file; an error when it has none.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::BadKey {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

fn roots_from(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots.add(cert).map_err(|e| TlsError::BadCertificate {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// The platform's trusted certificates. Unreadable entries are skipped as
/// long as some are left, as every TLS client on the system does.
fn platform_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(ToString::to_string)
            .unwrap_or_else(|| "it is empty".to_owned());
        return Err(TlsError::NoPlatformRoots(why));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: PathBuf,
    }

    impl Files {
        fn new(label: &str) -> Files {
            let dir =
                std::env::temp_dir().join(format!("remoteback-tls-{label}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Files { dir }
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn authority() -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        (params.self_signed(&key).unwrap(), key)
    }

    #[test]
    fn a_ca_file_and_a_client_certificate_make_a_configuration() {
        let files = Files::new("good");
        let (ca, ca_key) = authority();
        let issuer = rcgen::Issuer::new(
            rcgen::CertificateParams::new(Vec::<String>::new()).unwrap(),
            ca_key,
        );
        let client_key = rcgen::KeyPair::generate().unwrap();
        let client = rcgen::CertificateParams::new(vec!["client".to_owned()])
            .unwrap()
            .signed_by(&client_key, &issuer)
            .unwrap();
        let settings = TlsSettings {
            ca_file: Some(files.write("ca.pem", &ca.pem())),
            cert_file: Some(files.write("client.pem", &client.pem())),
            key_file: Some(files.write("client.key", &client_key.serialize_pem())),
            server_name: None,
        };
        settings.check("127.0.0.1").unwrap();
        settings.check("redis.example.com").unwrap();
    }

    #[test]
    fn each_bad_file_is_named_without_its_contents() {
        let files = Files::new("bad");
        let (ca, _) = authority();
        let secret = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n";
        let missing = TlsSettings {
            ca_file: Some(files.dir.join("absent.pem")),
            ..TlsSettings::default()
        };
        let e = missing.check("h").unwrap_err().to_string();
        assert!(e.contains("absent.pem") && e.contains("cannot read"), "{e}");

        let empty = TlsSettings {
            ca_file: Some(files.write("empty.pem", "not a certificate\n")),
            ..TlsSettings::default()
        };
        let e = empty.check("h").unwrap_err().to_string();
        assert!(e.contains("empty.pem holds no PEM certificate"), "{e}");

        let bad_key = TlsSettings {
            ca_file: Some(files.write("ca.pem", &ca.pem())),
            cert_file: Some(files.write("client.pem", &ca.pem())),
            key_file: Some(files.write("client.key", secret)),
            server_name: None,
        };
        let e = bad_key.check("h").unwrap_err().to_string();
        assert!(e.contains("client.key") || e.contains("client.pem"), "{e}");
        assert!(!e.contains("c2VjcmV0"), "the key's contents leaked: {e}");

        let half = TlsSettings {
            cert_file: Some(files.write("only.pem", &ca.pem())),
            ..TlsSettings::default()
        };
        assert!(matches!(half.check("h"), Err(TlsError::HalfIdentity)));
    }

    #[test]
    fn the_server_name_defaults_to_the_host_and_must_be_a_name_or_an_address() {
        let settings = TlsSettings::default();
        assert_eq!(
            settings.server_name("10.0.0.7").unwrap(),
            ServerName::try_from("10.0.0.7").unwrap()
        );
        let named = TlsSettings {
            server_name: Some("cache.example.net".to_owned()),
            ..TlsSettings::default()
        };
        assert_eq!(
            named.server_name("10.0.0.7").unwrap(),
            ServerName::try_from("cache.example.net").unwrap()
        );
        let bad = TlsSettings {
            server_name: Some("not a name".to_owned()),
            ..TlsSettings::default()
        };
        assert!(matches!(bad.server_name("h"), Err(TlsError::ServerName(_))));
    }
}
