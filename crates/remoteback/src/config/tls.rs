//! TLS keys: a switch and its files, under one prefix: towards a Redis
//! server (`conntls` in a proxy file, `tls` in a replay's `[redis]`), or
//! towards the proxy's clients (`bindtls`).
//!
//! The files are read while the configuration is checked, so that
//! `check-config` and a service's start report an unreadable or wrong one
//! at its key, not at the first connection.

use std::fmt::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use remoteback_transport::{ServerTlsSettings, TlsError, TlsSettings};
use toml::de::DeValue;

use super::source::{join, quote, Source, Value};
use super::ConfigError;

/// The keys after the switch's own name.
const SUFFIXES: &[&str] = &["ca_file", "cert_file", "key_file", "server_name"];

/// The TLS keys of one table, as they are read.
pub(super) struct TlsKeys {
    /// `conntls` or `tls`.
    prefix: &'static str,
    /// The table's path (`""` or `"redis"`).
    table: &'static str,
    on: Option<(bool, Range<usize>)>,
    settings: TlsSettings,
    /// Where each key given was, by suffix.
    spans: Vec<(&'static str, Range<usize>)>,
}

impl TlsKeys {
    pub fn new(table: &'static str, prefix: &'static str) -> TlsKeys {
        TlsKeys {
            prefix,
            table,
            on: None,
            settings: TlsSettings::default(),
            spans: Vec::new(),
        }
    }

    /// The listener's settings when TLS is on (`bindtls`): a certificate
    /// and key are needed, a CA file makes client certificates required,
    /// and no server name is taken.
    pub fn finish_server(self, src: Source<'_>) -> Result<Option<ServerTlsSettings>, ConfigError> {
        if let Some((_, span)) = self.spans.iter().find(|(s, _)| *s == "server_name") {
            let name = format!("{}_server_name", self.prefix);
            return Err(src.error(
                span,
                &join(self.table, &name),
                format!("{name} is for connections to Redis; the proxy's clients check its certificate themselves"),
            ));
        }
        if !self.on.as_ref().is_some_and(|(on, _)| *on) {
            return self.finish(src, "").map(|_| None);
        }
        let missing = |suffix: &str| {
            let span = self.on.as_ref().map(|(_, s)| s.clone()).unwrap_or_default();
            let name = format!("{}_{suffix}", self.prefix);
            src.error(
                &span,
                &join(self.table, self.prefix),
                format!("{} = true needs {name}", self.prefix),
            )
        };
        let settings = ServerTlsSettings {
            cert_file: self
                .settings
                .cert_file
                .clone()
                .ok_or_else(|| missing("cert_file"))?,
            key_file: self
                .settings
                .key_file
                .clone()
                .ok_or_else(|| missing("key_file"))?,
            ca_file: self.settings.ca_file.clone(),
        };
        settings
            .server_config()
            .map_err(|e| self.located(src, &e))?;
        Ok(Some(settings))
    }

    /// Reads `name` if it is one of the TLS keys: `Ok(false)` if it is not.
    pub fn read(
        &mut self,
        src: Source<'_>,
        name: &str,
        value: &Value<'_>,
    ) -> Result<bool, ConfigError> {
        let path = join(self.table, name);
        if name == self.prefix {
            let DeValue::Boolean(on) = value.get_ref() else {
                return Err(src.unexpected(&path, value, "true or false"));
            };
            self.on = Some((*on, value.span()));
            return Ok(true);
        }
        let Some(suffix) = name
            .strip_prefix(self.prefix)
            .and_then(|rest| rest.strip_prefix('_'))
            .and_then(|rest| SUFFIXES.iter().find(|s| **s == rest))
        else {
            return Ok(false);
        };
        let text = match *suffix {
            "server_name" => src.word(&path, value, "a host name or IP address")?,
            _ => src.word(&path, value, "the path of a PEM file")?,
        };
        match *suffix {
            "ca_file" => self.settings.ca_file = Some(PathBuf::from(text)),
            "cert_file" => self.settings.cert_file = Some(PathBuf::from(text)),
            "key_file" => self.settings.key_file = Some(PathBuf::from(text)),
            _ => self.settings.server_name = Some(text),
        }
        self.spans.push((suffix, value.span()));
        Ok(true)
    }

    /// The settings when TLS is on, their files read and checked for
    /// connecting to `host`; `None` when it is off. Files given with TLS
    /// off are an error rather than ignored: whoever wrote them meant TLS.
    pub fn finish(self, src: Source<'_>, host: &str) -> Result<Option<TlsSettings>, ConfigError> {
        let on = self.on.as_ref().is_some_and(|(on, _)| *on);
        if !on {
            if let Some((suffix, span)) = self.spans.first() {
                let name = format!("{}_{suffix}", self.prefix);
                return Err(src.error(
                    span,
                    &join(self.table, &name),
                    format!("{name} is set but {} is not true", self.prefix),
                ));
            }
            return Ok(None);
        }
        self.settings
            .check(host)
            .map_err(|e| self.located(src, &e))?;
        Ok(Some(self.settings))
    }

    /// The error at the key it is about.
    fn located(&self, src: Source<'_>, error: &TlsError) -> ConfigError {
        let for_path = |path: &Path| {
            let s = &self.settings;
            [
                ("ca_file", &s.ca_file),
                ("cert_file", &s.cert_file),
                ("key_file", &s.key_file),
            ]
            .into_iter()
            .find(|(_, p)| p.as_deref() == Some(path))
            .map(|(suffix, _)| suffix)
        };
        let suffix = match error {
            TlsError::Read { path, .. }
            | TlsError::NoCertificate { path }
            | TlsError::BadCertificate { path, .. }
            | TlsError::BadKey { path, .. } => for_path(path),
            TlsError::Identity { .. } => Some("cert_file"),
            TlsError::HalfIdentity => Some(if self.settings.cert_file.is_some() {
                "cert_file"
            } else {
                "key_file"
            }),
            TlsError::ServerName(_) => Some("server_name"),
            TlsError::NoPlatformRoots(_) => None,
        };
        let at = suffix.and_then(|wanted| {
            self.spans
                .iter()
                .find(|(s, _)| *s == wanted)
                .map(|(s, span)| (format!("{}_{s}", self.prefix), span.clone()))
        });
        let (name, span) = at.unwrap_or_else(|| {
            let span = self.on.as_ref().map(|(_, s)| s.clone()).unwrap_or_default();
            (self.prefix.to_owned(), span)
        });
        src.error(&span, &join(self.table, &name), error.to_string())
    }
}

/// The keys of a listener's `tls` as `check-config` shows them.
pub(super) fn render_server(
    f: &mut String,
    prefix: &str,
    tls: Option<&ServerTlsSettings>,
) -> fmt::Result {
    let Some(tls) = tls else {
        return writeln!(f, "{prefix} = false");
    };
    writeln!(f, "{prefix} = true")?;
    let path = |p: &Path| quote(&p.display().to_string());
    writeln!(f, "{prefix}_cert_file = {}", path(&tls.cert_file))?;
    writeln!(f, "{prefix}_key_file = {}", path(&tls.key_file))?;
    match &tls.ca_file {
        Some(ca) => writeln!(f, "{prefix}_ca_file = {}", path(ca)),
        None => writeln!(
            f,
            "# {prefix}_ca_file not set: clients present no certificate"
        ),
    }
}

/// The keys of `tls` as `check-config` shows them: paths are not secrets,
/// but the files are never read into the output.
pub(super) fn render(f: &mut String, prefix: &str, tls: Option<&TlsSettings>) -> fmt::Result {
    let Some(tls) = tls else {
        return writeln!(f, "{prefix} = false");
    };
    writeln!(f, "{prefix} = true")?;
    let file = |f: &mut String, suffix: &str, path: &Option<PathBuf>, unset: &str| match path {
        Some(p) => writeln!(f, "{prefix}_{suffix} = {}", quote(&p.display().to_string())),
        None => writeln!(f, "# {prefix}_{suffix} not set: {unset}"),
    };
    file(
        f,
        "ca_file",
        &tls.ca_file,
        "the platform's trusted certificates",
    )?;
    file(f, "cert_file", &tls.cert_file, "no client certificate")?;
    file(f, "key_file", &tls.key_file, "no client certificate")?;
    match &tls.server_name {
        Some(name) => writeln!(f, "{prefix}_server_name = {}", quote(name)),
        None => writeln!(
            f,
            "# {prefix}_server_name not set: the certificate must name the host"
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::{parse_proxy, parse_replay, Loaded};

    /// A directory with an authority's certificate and a client
    /// certificate and key, as PEM.
    struct Files(PathBuf);

    impl Files {
        fn new(label: &str) -> Files {
            let dir = std::env::temp_dir().join(format!(
                "remoteback-conf-tls-{label}-{}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let ca_key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let ca = params.self_signed(&ca_key).unwrap();
            let issuer = rcgen::Issuer::new(params, ca_key);
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec!["client".to_owned()])
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
            std::fs::write(dir.join("client.pem"), cert.pem()).unwrap();
            std::fs::write(dir.join("client.key"), key.serialize_pem()).unwrap();
            Files(dir)
        }

        fn path(&self, name: &str) -> String {
            self.0.join(name).display().to_string()
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn conntls_and_its_files_are_read_checked_and_shown_without_contents() {
        let files = Files::new("proxy");
        let text = format!(
            "connip = \"10.0.0.5\"\nconntls = true\nconntls_ca_file = \"{}\"\n\
             conntls_cert_file = \"{}\"\nconntls_key_file = \"{}\"\n\
             conntls_server_name = \"cache.example.net\"\n",
            files.path("ca.pem"),
            files.path("client.pem"),
            files.path("client.key"),
        );
        let settings = parse_proxy(&text, "proxy.toml").unwrap();
        let tls = settings.upstream_tls.clone().expect("TLS on");
        assert_eq!(tls.ca_file, Some(PathBuf::from(files.path("ca.pem"))));
        assert_eq!(tls.server_name.as_deref(), Some("cache.example.net"));
        let shown = Loaded::Proxy(settings).to_string();
        assert!(shown.contains("conntls = true\n"), "{shown}");
        assert!(
            shown.contains(&format!(
                "conntls_key_file = \"{}\"",
                files.path("client.key")
            )),
            "{shown}"
        );
        let key = std::fs::read_to_string(files.0.join("client.key")).unwrap();
        let body = key.lines().nth(1).unwrap();
        assert!(!shown.contains(body), "the key's contents are never shown");

        let plain = parse_proxy("", "proxy.toml").unwrap();
        assert_eq!(plain.upstream_tls, None);
        assert!(Loaded::Proxy(plain)
            .to_string()
            .contains("conntls = false\n"));
    }

    #[test]
    fn a_bad_tls_key_names_the_file_the_line_and_the_reason() {
        let files = Files::new("errors");
        let error = |text: &str| parse_proxy(text, "proxy.toml").unwrap_err().to_string();
        assert_eq!(
            error("conntls = true\n\nconntls_ca_file = \"/nonexistent/ca.pem\"\n"),
            "proxy.toml:3: conntls_ca_file: cannot read /nonexistent/ca.pem: \
             No such file or directory (os error 2)"
        );
        let e = error(&format!(
            "conntls = true\nconntls_ca_file = \"{}\"\n",
            files.path("client.key")
        ));
        assert!(
            e.starts_with("proxy.toml:2: conntls_ca_file: ") && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = error(&format!(
            "conntls = true\nconntls_key_file = \"{}\"\n",
            files.path("client.key")
        ));
        assert!(
            e.starts_with("proxy.toml:2: conntls_key_file: ")
                && e.contains("needs both a certificate file and a key file"),
            "{e}"
        );
        let e = error(&format!(
            "conntls = true\nconntls_cert_file = \"{}\"\nconntls_key_file = \"{}\"\n",
            files.path("client.pem"),
            files.path("ca.pem"),
        ));
        assert!(
            e.starts_with("proxy.toml:3: conntls_key_file: ") && e.contains("no PEM private key"),
            "{e}"
        );
        assert_eq!(
            error(&format!("conntls_ca_file = \"{}\"\n", files.path("ca.pem"))),
            "proxy.toml:1: conntls_ca_file: conntls_ca_file is set but conntls is not true"
        );
        assert_eq!(
            error("conntls = \"yes\"\n"),
            "proxy.toml:1: conntls: expected true or false, got \"yes\""
        );
    }

    #[test]
    fn the_replay_takes_the_same_keys_in_redis_under_tls() {
        let files = Files::new("replay");
        let base = "[receiver]\nclass = 'KafkaReceiver'\ntopic = 't'\nbootstrap-servers = 'k:9092'\n\n[redis]\n";
        let text = format!(
            "{base}tls = true\ntls_ca_file = \"{}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            files.path("ca.pem"),
            files.path("client.pem"),
            files.path("client.key"),
        );
        let settings = parse_replay(&text, "replay.toml").unwrap();
        let tls = settings.backup.tls.clone().expect("TLS on");
        assert_eq!(tls.key_file, Some(PathBuf::from(files.path("client.key"))));
        let shown = Loaded::Replay(settings).to_string();
        assert!(shown.contains("\ntls = true\n"), "{shown}");
        assert!(
            shown.contains("# tls_server_name not set: the certificate must name the host"),
            "{shown}"
        );
        let e = parse_replay(
            &format!(
                "{base}tls = true\ntls_cert_file = \"{}\"\n",
                files.path("client.pem")
            ),
            "replay.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("replay.toml:8: redis.tls_cert_file: "),
            "the key is named in its table: {e}"
        );
    }

    #[test]
    fn bindtls_needs_a_certificate_and_key_and_takes_a_client_ca() {
        let files = Files::new("bind");
        let error = |text: &str| parse_proxy(text, "proxy.toml").unwrap_err().to_string();
        let text = format!(
            "bindtls = true\nbindtls_cert_file = \"{}\"\nbindtls_key_file = \"{}\"\n\
             bindtls_ca_file = \"{}\"\n",
            files.path("client.pem"),
            files.path("client.key"),
            files.path("ca.pem"),
        );
        let settings = parse_proxy(&text, "proxy.toml").unwrap();
        let tls = settings.client_tls.clone().expect("TLS on");
        assert_eq!(tls.ca_file, Some(PathBuf::from(files.path("ca.pem"))));
        let shown = Loaded::Proxy(settings).to_string();
        assert!(shown.contains("bindtls = true\n"), "{shown}");
        assert!(Loaded::Proxy(parse_proxy("", "proxy.toml").unwrap())
            .to_string()
            .contains("bindtls = false\n"));
        assert_eq!(
            error("bindtls = true\n"),
            "proxy.toml:1: bindtls: bindtls = true needs bindtls_cert_file"
        );
        let e = error(&format!(
            "bindtls = true\nbindtls_cert_file = \"{}\"\nbindtls_key_file = \"{}\"\n",
            files.path("client.pem"),
            files.path("ca.pem"),
        ));
        assert!(
            e.starts_with("proxy.toml:3: bindtls_key_file: ") && e.contains("no PEM private key"),
            "{e}"
        );
        let e = error("bindtls = true\nbindtls_server_name = \"x\"\n");
        assert!(e.starts_with("proxy.toml:2: bindtls_server_name: "), "{e}");
    }
}
