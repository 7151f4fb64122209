//! Certificates for TLS tests: an authority, a server certificate, and a
//! client certificate, all signed by it and written as PEM files to a
//! temporary directory. The server certificate names `localhost` only, not
//! the address 127.0.0.1 the servers listen on: a client must be told the
//! name (`*_server_name`), as for a managed service reached by address.

use std::path::{Path, PathBuf};

use super::process::{remove_temp, temp_dir};

/// The one name in the server certificate.
pub const SERVER_NAME: &str = "localhost";

/// PEM files of one test authority.
pub struct TestCerts {
    dir: PathBuf,
}

impl TestCerts {
    /// A fresh authority and its server and client certificates.
    pub fn generate() -> TestCerts {
        let dir = temp_dir("certs");
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params =
            rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "remoteback test CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let write = |name: &str, text: String| {
            std::fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("write {name}: {e}"))
        };
        write("ca.crt", ca.pem());
        for (name, sans) in [
            ("server", vec![SERVER_NAME.to_owned()]),
            ("client", vec!["remoteback-client".to_owned()]),
        ] {
            let key = rcgen::KeyPair::generate().expect("key");
            let cert = rcgen::CertificateParams::new(sans)
                .expect("parameters")
                .signed_by(&key, &issuer)
                .expect("certificate");
            write(&format!("{name}.crt"), cert.pem());
            write(&format!("{name}.key"), key.serialize_pem());
        }
        TestCerts { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The authority's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// `server` or `client`: its certificate and its key.
    pub fn pair(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        )
    }

    /// `redis-server` arguments serving TLS on `port` with the server
    /// certificate; `auth_clients` is Redis's `tls-auth-clients` (`yes`,
    /// `no`, `optional`).
    pub fn server_args(&self, port: u16, auth_clients: &str) -> Vec<String> {
        let (cert, key) = self.pair("server");
        [
            "--tls-port".to_owned(),
            port.to_string(),
            "--tls-cert-file".to_owned(),
            cert.display().to_string(),
            "--tls-key-file".to_owned(),
            key.display().to_string(),
            "--tls-ca-cert-file".to_owned(),
            self.ca().display().to_string(),
            "--tls-auth-clients".to_owned(),
            auth_clients.to_owned(),
        ]
        .into()
    }
}

impl Drop for TestCerts {
    fn drop(&mut self) {
        remove_temp(&self.dir);
    }
}
