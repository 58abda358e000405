//! TLS for `https://` endpoints (rustls): the CA to verify nodes with, and
//! an optional client certificate for nodes that require one.

use std::path::{Path, PathBuf};

use crate::Error;

/// TLS settings used for `https://` endpoints (ignored for `http://`).
///
/// ```no_run
/// # fn demo() -> Result<(), locker_client::Error> {
/// use locker_client::{Client, ClientOptions, TlsOptions};
/// let client = Client::new(ClientOptions {
///     endpoints: locker_client::parse_endpoints("https://10.0.0.1:7070")?,
///     tls: TlsOptions {
///         ca_cert: Some("/etc/locker/ca.pem".into()),
///         client_cert: Some("/etc/locker/client.pem".into()),
///         client_key: Some("/etc/locker/client-key.pem".into()),
///     },
///     ..Default::default()
/// })?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM CA certificates the nodes' certificates must be signed by (only
    /// those are trusted). `None`: the system's trusted roots.
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate chain presented to nodes that require client
    /// certificates (mutual TLS); needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// The PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
}

impl TlsOptions {
    /// The settings in `LOCKER_CA_CERT`, `LOCKER_CLIENT_CERT` and
    /// `LOCKER_CLIENT_KEY` (each unset or empty: none).
    pub fn from_env() -> TlsOptions {
        let path = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        TlsOptions {
            ca_cert: path("LOCKER_CA_CERT"),
            client_cert: path("LOCKER_CLIENT_CERT"),
            client_key: path("LOCKER_CLIENT_KEY"),
        }
    }

    /// Applies these settings to an HTTP client; the error names the file at
    /// fault. System roots are loaded only when an endpoint needs them.
    pub(crate) fn apply(
        &self,
        builder: reqwest::ClientBuilder,
        endpoints: &[String],
    ) -> Result<reqwest::ClientBuilder, Error> {
        let any_https = endpoints.iter().any(|e| e.starts_with("https://"));
        let mut builder = builder.tls_built_in_root_certs(any_https && self.ca_cert.is_none());
        if let Some(ca) = &self.ca_cert {
            let pem = read(ca, "CA certificate")?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| bad(ca, "CA certificate", &e))?;
            if certs.is_empty() {
                return Err(Error::Config(format!(
                    "no PEM certificate in the CA certificate file {}",
                    ca.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        match (&self.client_cert, &self.client_key) {
            (None, None) => {}
            (Some(cert), Some(key)) => {
                let mut pem = read(cert, "client certificate")?;
                pem.push(b'\n');
                pem.extend(read(key, "client key")?);
                let identity = reqwest::Identity::from_pem(&pem)
                    .map_err(|e| bad(cert, "client certificate or its key", &e))?;
                builder = builder.identity(identity);
            }
            _ => {
                return Err(Error::Config(
                    "a client certificate and its key go together (--client-cert and \
                     --client-key, LOCKER_CLIENT_CERT and LOCKER_CLIENT_KEY)"
                        .into(),
                ))
            }
        }
        Ok(builder)
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path)
        .map_err(|e| Error::Config(format!("cannot read the {what} {}: {e}", path.display())))
}

fn bad(path: &Path, what: &str, e: &reqwest::Error) -> Error {
    Error::Config(format!("{} is not a usable {what}: {e}", path.display()))
}
