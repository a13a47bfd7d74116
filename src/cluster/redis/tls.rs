//! The TLS material of a `rediss://` cluster (`[cluster] ca_file`, `client_cert_file`,
//! `client_key_file`): read at start and checked whole, every certificate parsed as the
//! TLS client will use it and the key matched to its certificate, so that a wrong file is
//! a configuration error (at start, and in `iorelay check-config` through [`check`])
//! instead of a handshake that fails and is retried for ever.
//!
//! What to check between the keys without reading the files (a `rediss://` URL, the
//! certificate with its key) is the config's ([`crate::config::cluster`]); verifying the
//! server's certificate and presenting ours is the `redis` crate's, with rustls.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use redis::{ClientTlsConfig, TlsCertificates};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ClusterConfig;

/// The largest file read here: a CA bundle of a few hundred certificates is well under.
const MAX_FILE: u64 = 4 * 1024 * 1024;

/// A TLS file that cannot be used, with its key, for the message of [`super::Error`].
#[derive(Debug, thiserror::Error)]
#[error("cluster.{key} {path}: {reason}")]
pub struct FileError {
    /// The config key naming the file: `ca_file`, `client_cert_file`, `client_key_file`.
    pub key: &'static str,
    /// The file.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FileError {
    fn new(key: &'static str, path: &Path, reason: impl Into<String>) -> FileError {
        FileError {
            key,
            path: path.display().to_string(),
            reason: reason.into(),
        }
    }
}

/// The certificates for [`redis::Client::build_with_tls`], when `config` names any TLS
/// file; `None` leaves the client as its URL says (the system's CA certificates for
/// `rediss://`).
pub fn certificates(config: &ClusterConfig) -> Result<Option<TlsCertificates>, FileError> {
    if config.ca_file.is_none() && config.client_cert_file.is_none() {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let root_cert = match &config.ca_file {
        Some(path) => {
            let pem = read("ca_file", path)?;
            trust_anchors(&pem).map_err(|reason| FileError::new("ca_file", path, reason))?;
            Some(pem)
        }
        None => None,
    };
    let client_tls = match (&config.client_cert_file, &config.client_key_file) {
        (Some(cert_path), Some(key_path)) => {
            let cert = read("client_cert_file", cert_path)?;
            let key = read("client_key_file", key_path)?;
            let chain = certificates_in(&cert)
                .map_err(|reason| FileError::new("client_cert_file", cert_path, reason))?;
            let key_der = PrivateKeyDer::from_pem_slice(&key).map_err(|err| {
                FileError::new(
                    "client_key_file",
                    key_path,
                    format!("no private key in PEM (PKCS#8, PKCS#1 or SEC1): {err}"),
                )
            })?;
            rustls::sign::CertifiedKey::from_der(chain, key_der, &provider).map_err(|err| {
                FileError::new(
                    "client_key_file",
                    key_path,
                    format!("unusable with cluster.client_cert_file: {err}"),
                )
            })?;
            Some(ClientTlsConfig {
                client_cert: cert,
                client_key: key,
            })
        }
        // The config's check refuses one without the other.
        _ => None,
    };
    Ok(Some(TlsCertificates {
        client_tls,
        root_cert,
    }))
}

/// Every problem with `config`'s TLS files, as (key, reason), for `check-config`.
pub fn check(config: &ClusterConfig) -> Vec<(String, String)> {
    match certificates(config) {
        Ok(_) => Vec::new(),
        Err(err) => vec![(
            format!("cluster.{}", err.key),
            format!("{}: {}", err.path, err.reason),
        )],
    }
}

/// The bytes of `path`, at most [`MAX_FILE`] of them.
fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, FileError> {
    let file =
        std::fs::File::open(path).map_err(|err| FileError::new(key, path, err.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| FileError::new(key, path, err.to_string()))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(FileError::new(
            key,
            path,
            format!("larger than {MAX_FILE} bytes"),
        ));
    }
    Ok(bytes)
}

/// The certificates of a PEM file: at least one, each well framed.
fn certificates_in(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("not PEM: {err}"))?;
    if certs.is_empty() {
        return Err("holds no certificate (-----BEGIN CERTIFICATE-----)".to_owned());
    }
    Ok(certs)
}

/// The CA certificates of a PEM file, each one usable as a trust anchor.
fn trust_anchors(pem: &[u8]) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    for (i, cert) in certificates_in(pem)?.into_iter().enumerate() {
        store
            .add(cert)
            .map_err(|err| format!("certificate {} is unusable: {err}", i + 1))?;
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn config(ca: Option<PathBuf>, cert: Option<PathBuf>, key: Option<PathBuf>) -> ClusterConfig {
        ClusterConfig {
            url: "rediss://127.0.0.1:6380".to_owned(),
            ca_file: ca,
            client_cert_file: cert,
            client_key_file: key,
            ..ClusterConfig::default()
        }
    }

    /// A temp dir for one test, removed when dropped.
    struct Dir(PathBuf);

    impl Dir {
        fn new(test: &str) -> Dir {
            let dir =
                std::env::temp_dir().join(format!("iorelay-tls-{test}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }

        fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn error(c: &ClusterConfig) -> String {
        match certificates(c) {
            Err(err) => err.to_string(),
            Ok(_) => panic!("{c:?} was accepted"),
        }
    }

    #[test]
    fn no_tls_file_keeps_the_url_as_it_is() {
        assert!(certificates(&config(None, None, None)).unwrap().is_none());
        assert!(check(&config(None, None, None)).is_empty());
    }

    #[test]
    fn a_missing_or_empty_or_broken_ca_file_is_named() {
        let dir = Dir::new("ca");
        let missing = config(Some(PathBuf::from("/nonexistent/ca.pem")), None, None);
        let problems = check(&missing);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, "cluster.ca_file");
        assert!(
            problems[0].1.starts_with("/nonexistent/ca.pem: "),
            "{problems:?}"
        );

        let empty = config(Some(dir.file("empty.pem", b"just text\n")), None, None);
        let err = error(&empty);
        assert!(err.contains("holds no certificate"), "{err}");

        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let broken = config(Some(dir.file("broken.pem", garbage)), None, None);
        let err = error(&broken);
        assert!(err.starts_with("cluster.ca_file "), "{err}");
        assert!(err.contains("unusable"), "{err}");

        let unterminated = b"-----BEGIN CERTIFICATE-----\nAAAA\n";
        let cut = config(Some(dir.file("cut.pem", unterminated)), None, None);
        let err = error(&cut);
        assert!(err.contains("not PEM"), "{err}");
    }

    #[test]
    fn a_client_key_that_is_not_a_key_is_named() {
        let dir = Dir::new("client");
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let c = config(
            None,
            Some(dir.file("client.pem", garbage)),
            Some(dir.file("client.key", b"no key here\n")),
        );
        let problems = check(&c);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, "cluster.client_key_file");
        assert!(problems[0].1.contains("no private key"), "{problems:?}");
    }
}
