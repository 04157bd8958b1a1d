//! ClickHouse over TLS: the rustls client configuration behind `https://` URLs, built once when
//! the configuration is loaded (so that a bad `ca_file:`, `client_cert_file:` or
//! `client_key_file:` stops the command at start, exit code 2, naming the file and the key), and
//! the HTTP client the clickhouse crate sends its requests through.
//!
//! The server is verified against the system's root certificates (`/etc/ssl/certs`, or
//! `SSL_CERT_FILE`/`SSL_CERT_DIR`), or against the certificates of `ca_file:` only when it is
//! given. A client certificate is offered when `client_cert_file:` and `client_key_file:` are
//! both given (ClickHouse's `verificationMode` `strict` requires one).
//!
//! Messages never quote what a PEM file holds: a key file's lines are secret.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
    time::Duration,
};

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer};

use super::config::ConfigError;

/// The files named in the config file (`ca_file:`, `client_cert_file:`, `client_key_file:`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca_file: Option<PathBuf>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
}

impl TlsFiles {
    pub fn is_empty(&self) -> bool {
        self == &TlsFiles::default()
    }
}

/// The TLS side of an `https://` URL: the files it came from and the client configuration made
/// from them. Two are equal when they come from the same files.
#[derive(Clone)]
pub struct Tls {
    pub files: TlsFiles,
    config: Arc<ClientConfig>,
}

impl PartialEq for Tls {
    fn eq(&self, other: &Self) -> bool {
        self.files == other.files
    }
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The configuration holds the client's private key: only the file names show.
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

/// How long a TCP connection may stay idle before keepalive probes (as the crate's own client).
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// Idle pooled connections are dropped before ClickHouse closes them (3 s on its side).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

impl Tls {
    /// The client configuration for `files`, whose PEM texts `read` returns; `config_file` is
    /// the config file the keys were in (`-` when none), for messages.
    pub fn build(
        files: TlsFiles,
        config_file: &Path,
        read: &dyn Fn(&Path) -> std::io::Result<String>,
    ) -> Result<Tls, ConfigError> {
        let at = config_file.display().to_string();
        let err = |key: &'static str, file: &Path, why: String| ConfigError::Tls {
            at: at.clone(),
            key,
            file: file.display().to_string(),
            why,
        };
        let load = |key: &'static str, file: &Path| {
            read(file).map_err(|e| err(key, file, format!("cannot read: {e}")))
        };
        let roots = match &files.ca_file {
            Some(file) => {
                let text = load("ca_file", file)?;
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(text.as_bytes()) {
                    let cert = cert.map_err(|_| {
                        err("ca_file", file, "not a PEM certificate file".to_owned())
                    })?;
                    roots.add(cert).map_err(|e| {
                        err(
                            "ca_file",
                            file,
                            format!("a certificate in it cannot be used as a root: {e}"),
                        )
                    })?;
                }
                if roots.is_empty() {
                    return Err(err(
                        "ca_file",
                        file,
                        "holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)".to_owned(),
                    ));
                }
                Arc::new(roots)
            }
            None => system_roots().map_err(|why| ConfigError::Value(why.clone()))?,
        };
        let identity = match (&files.client_cert_file, &files.client_key_file) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::Value(format!(
                    "{at}: client_cert_file is given without client_key_file"
                )))
            }
            (None, Some(_)) => {
                return Err(ConfigError::Value(format!(
                    "{at}: client_key_file is given without client_cert_file"
                )))
            }
            (Some(cert_file), Some(key_file)) => {
                let text = load("client_cert_file", cert_file)?;
                let certs = CertificateDer::pem_slice_iter(text.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| {
                        err(
                            "client_cert_file",
                            cert_file,
                            "not a PEM certificate file".to_owned(),
                        )
                    })?;
                if certs.is_empty() {
                    return Err(err(
                        "client_cert_file",
                        cert_file,
                        "holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)".to_owned(),
                    ));
                }
                let text = load("client_key_file", key_file)?;
                // The parser's own error may quote a line of the file: not shown.
                let key = PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|_| {
                    err(
                        "client_key_file",
                        key_file,
                        "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)".to_owned(),
                    )
                })?;
                Some((certs, key, key_file))
            }
        };
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| ConfigError::Value(format!("TLS: {e}")))?
                .with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some((certs, key, key_file)) => {
                builder.with_client_auth_cert(certs, key).map_err(|e| {
                    err(
                        "client_key_file",
                        key_file,
                        format!("does not go with client_cert_file: {e}"),
                    )
                })?
            }
        };
        Ok(Tls {
            files,
            config: Arc::new(config),
        })
    }

    /// A ClickHouse client that sends its requests over TLS only (HTTP/1.1), verified with this
    /// configuration.
    pub fn client(&self) -> clickhouse::Client {
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.set_keepalive(Some(TCP_KEEPALIVE));
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*self.config).clone())
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        clickhouse::Client::with_http_client(
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                .build(https),
        )
    }
}

/// The system's root certificates, read once per process.
fn system_roots() -> Result<Arc<RootCertStore>, &'static String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map_or_else(|| "none found".to_owned(), ToString::to_string);
                return Err(format!(
                    "https: no system root certificates to verify ClickHouse with ({why}): \
                     install ca-certificates, or give `ca_file:` in --clickhouse-config"
                ));
            }
            Ok(Arc::new(roots))
        })
        .as_ref()
        .map(Arc::clone)
}
