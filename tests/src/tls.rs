//! Certificates for TLS tests, made with `openssl` in a fresh directory: a CA of the test's own,
//! a server certificate it signed for 127.0.0.1 and localhost, a client certificate it signed,
//! and a second CA that signed nothing here (the wrong one). And a private ClickHouse serving
//! HTTPS with that server certificate, optionally requiring a client certificate.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::{
    clickhouse::{free_port, ClickHouse},
    temp_dir,
};

/// The files of a test PKI, all PEM.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed none of these.
    pub other_ca: PathBuf,
}

#[track_caller]
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run openssl (install it with `cargo xtask setup`): {e}")
        });
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    /// Makes the CA, the server and client certificates and the other CA.
    #[track_caller]
    pub fn make(name: &str) -> Pki {
        let dir = temp_dir(&format!("pki-{name}"));
        let ca = |stem: &str, cn: &str| {
            openssl(
                &dir,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    cn,
                    "-keyout",
                    &format!("{stem}.key"),
                    "-out",
                    &format!("{stem}.pem"),
                ],
            );
        };
        ca("ca", "/CN=nhiscope test CA");
        ca("other-ca", "/CN=nhiscope other CA");
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n")
            .unwrap_or_else(|e| panic!("{e}"));
        for (stem, cn) in [("server", "/CN=localhost"), ("client", "/CN=nhiscope")] {
            openssl(
                &dir,
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-subj",
                    cn,
                    "-keyout",
                    &format!("{stem}.key"),
                    "-out",
                    &format!("{stem}.csr"),
                ],
            );
            openssl(
                &dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{stem}.csr"),
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    &format!("{stem}.ext"),
                    "-out",
                    &format!("{stem}.pem"),
                ],
            );
        }
        Pki {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            other_ca: dir.join("other-ca.pem"),
            dir,
        }
    }
}

/// A private ClickHouse with an HTTPS port besides its HTTP one (which the harness's own
/// queries use).
pub struct TlsClickHouse {
    pub ch: ClickHouse,
    pub https_port: u16,
}

impl TlsClickHouse {
    /// Starts a server serving HTTPS with `pki`'s server certificate; with
    /// `require_client_cert`, a connection without a client certificate signed by `pki`'s CA
    /// is refused (OpenSSL's `strict` verification). `None` when ClickHouse is missing and
    /// may be skipped (see [`ClickHouse::start`]).
    #[track_caller]
    pub fn start(name: &str, pki: &Pki, require_client_cert: bool) -> Option<TlsClickHouse> {
        let https_port = free_port();
        let verification = if require_client_cert {
            format!(
                "<verificationMode>strict</verificationMode><caConfig>{}</caConfig>",
                pki.ca.display()
            )
        } else {
            "<verificationMode>none</verificationMode>".to_owned()
        };
        let extra = format!(
            "<https_port>{https_port}</https_port>
    <openSSL><server>
        <certificateFile>{}</certificateFile>
        <privateKeyFile>{}</privateKeyFile>
        {verification}
        <loadDefaultCAFile>false</loadDefaultCAFile>
        <cacheSessions>true</cacheSessions>
        <disableProtocols>sslv2,sslv3</disableProtocols>
        <preferServerCiphers>true</preferServerCiphers>
    </server></openSSL>",
            pki.server_cert.display(),
            pki.server_key.display()
        );
        let ch = ClickHouse::start_with(name, free_port(), free_port(), &extra)?;
        Some(TlsClickHouse { ch, https_port })
    }

    /// `https://127.0.0.1:<https port>`.
    pub fn https_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.https_port)
    }
}
