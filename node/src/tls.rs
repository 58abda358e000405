//! TLS on both ports and on the node's own outgoing requests (rustls with
//! the ring provider).
//!
//! * Client port: `--tls-cert/--tls-key` serve HTTPS only; `--tls-client-ca`
//!   also requires a client certificate signed by that CA.
//! * Peer port: `--peer-tls-cert/--peer-tls-key/--peer-tls-ca` require a
//!   certificate signed by the peer CA from every peer, and the node presents
//!   its own to the peers it calls (Raft RPCs, peer info) and to the client
//!   ports it forwards requests to, whose certificates it verifies against
//!   the peer CA too.
//!
//! SIGHUP reloads every file ([`NodeTls::reload`]): connections opened
//! afterwards use the new certificates; a file that cannot be read or does
//! not fit keeps the previous configuration of its port and logs an error.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio_rustls::TlsAcceptor;

use crate::config::NodeConfig;

/// The crypto provider, named explicitly so no process-wide default is
/// needed (ring: builds with a C compiler alone).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The files of one TLS identity and the CA that authenticates the other
/// side, with the flags that named them (for error messages).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, this node's certificate first.
    pub cert: PathBuf,
    /// PEM private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates the other side's certificate must chain to.
    pub ca: Option<PathBuf>,
    /// The flags naming `cert`, `key` and `ca`.
    pub flags: [&'static str; 3],
}

fn read_certs(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read {flag} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{flag} {}: no PEM certificate in the file",
            path.display()
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path, flag: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        format!(
            "cannot read a private key from {flag} {}: {e}",
            path.display()
        )
    })
}

fn read_roots(path: &Path, flag: &str) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path, flag)? {
        roots
            .add(cert)
            .map_err(|e| format!("{flag} {}: not a CA certificate: {e}", path.display()))?;
    }
    Ok(Arc::new(roots))
}

/// The certificate chain and key of `files`, checked to belong together.
fn certified_key(files: &TlsFiles) -> Result<Arc<CertifiedKey>, String> {
    let [cert_flag, key_flag, _] = files.flags;
    let certs = read_certs(&files.cert, cert_flag)?;
    let key = read_key(&files.key, key_flag)?;
    let signer = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{key_flag} {}: {e}", files.key.display()))?;
    let certified = CertifiedKey::new(certs, signer);
    certified.keys_match().map_err(|e| {
        format!(
            "{key_flag} {} is not the key of {cert_flag} {}: {e}",
            files.key.display(),
            files.cert.display()
        )
    })?;
    Ok(Arc::new(certified))
}

fn server_config(files: &TlsFiles) -> Result<ServerConfig, String> {
    let key = certified_key(files)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = match &files.ca {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(
                read_roots(ca, files.flags[2])?,
                provider(),
            )
            .build()
            .map_err(|e| format!("{} {}: {e}", files.flags[2], ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config =
        builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// One port's server configuration, replaced as a whole on reload.
#[derive(Debug)]
pub struct ServerTls {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl ServerTls {
    /// Reads the files; the error names the flag and file at fault.
    pub fn load(files: TlsFiles) -> Result<Arc<ServerTls>, String> {
        let config = server_config(&files)?;
        Ok(Arc::new(ServerTls {
            files,
            current: RwLock::new(Arc::new(config)),
        }))
    }

    /// An acceptor with the configuration current now.
    pub fn acceptor(&self) -> TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        TlsAcceptor::from(config)
    }

    /// Reads the files again; on an error the configuration stays as it was.
    pub fn reload(&self) -> Result<(), String> {
        let config = server_config(&self.files)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(config);
        Ok(())
    }
}

/// The node's side of outgoing TLS connections (to peers, and to the client
/// ports it forwards to): its peer certificate and the peer CA, both read
/// again on reload without rebuilding the HTTP clients that use them.
#[derive(Debug)]
pub struct ClientTls {
    files: TlsFiles,
    verifier: RwLock<Arc<WebPkiServerVerifier>>,
    identity: RwLock<Arc<CertifiedKey>>,
}

fn server_verifier(files: &TlsFiles) -> Result<Arc<WebPkiServerVerifier>, String> {
    let Some(ca) = &files.ca else {
        return Err(format!("{} is required", files.flags[2]));
    };
    WebPkiServerVerifier::builder_with_provider(read_roots(ca, files.flags[2])?, provider())
        .build()
        .map_err(|e| format!("{} {}: {e}", files.flags[2], ca.display()))
}

impl ClientTls {
    /// Reads the files; the error names the flag and file at fault.
    pub fn load(files: TlsFiles) -> Result<Arc<ClientTls>, String> {
        let verifier = server_verifier(&files)?;
        let identity = certified_key(&files)?;
        Ok(Arc::new(ClientTls {
            files,
            verifier: RwLock::new(verifier),
            identity: RwLock::new(identity),
        }))
    }

    /// Reads the files again; on an error nothing changes.
    pub fn reload(&self) -> Result<(), String> {
        let verifier = server_verifier(&self.files)?;
        let identity = certified_key(&self.files)?;
        *self
            .verifier
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = verifier;
        *self
            .identity
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = identity;
        Ok(())
    }

    fn verifier(&self) -> Arc<WebPkiServerVerifier> {
        self.verifier
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The rustls client configuration for reqwest: verification and the
    /// presented certificate go through `self`, so reloads reach it.
    pub fn client_config(self: &Arc<Self>) -> Result<ClientConfig, String> {
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(self.clone())
            .with_client_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Verification delegated to webpki with the current peer CA: the chain and
/// the name the URL gave (DNS name or IP address) are checked as usual.
impl ServerCertVerifier for ClientTls {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier().verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.verifier().supported_verify_schemes()
    }
}

impl ResolvesClientCert for ClientTls {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(
            self.identity
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Every TLS configuration of a node, each optional.
#[derive(Debug, Clone, Default)]
pub struct NodeTls {
    /// The client port's (`--tls-cert`, `--tls-key`, `--tls-client-ca`).
    pub client_port: Option<Arc<ServerTls>>,
    /// The peer port's (`--peer-tls-*`, client certificates required).
    pub peer_port: Option<Arc<ServerTls>>,
    /// Outgoing connections to peers and to forwarding targets.
    pub outgoing: Option<Arc<ClientTls>>,
}

/// The flags of the client port's files.
pub const CLIENT_FLAGS: [&str; 3] = ["--tls-cert", "--tls-key", "--tls-client-ca"];
/// The flags of the peer files.
pub const PEER_FLAGS: [&str; 3] = ["--peer-tls-cert", "--peer-tls-key", "--peer-tls-ca"];

impl NodeTls {
    /// Reads every configured file (flags already checked by
    /// `NodeConfig::validate`); the error names the flag and file at fault.
    pub fn load(cfg: &NodeConfig) -> Result<NodeTls, String> {
        let mut tls = NodeTls::default();
        if let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) {
            tls.client_port = Some(ServerTls::load(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: cfg.tls_client_ca.clone(),
                flags: CLIENT_FLAGS,
            })?);
        }
        if let (Some(cert), Some(key), Some(ca)) =
            (&cfg.peer_tls_cert, &cfg.peer_tls_key, &cfg.peer_tls_ca)
        {
            let files = TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: Some(ca.clone()),
                flags: PEER_FLAGS,
            };
            tls.peer_port = Some(ServerTls::load(files.clone())?);
            tls.outgoing = Some(ClientTls::load(files)?);
        }
        Ok(tls)
    }

    /// Reads every file again (SIGHUP). Each part that fails keeps its
    /// previous configuration and logs an error naming the file.
    pub fn reload(&self) {
        let parts = [
            ("client port", self.client_port.as_ref().map(|t| t.reload())),
            ("peer port", self.peer_port.as_ref().map(|t| t.reload())),
            ("outgoing peer", self.outgoing.as_ref().map(|t| t.reload())),
        ];
        for (what, result) in parts {
            match result {
                None => {}
                Some(Ok(())) => tracing::info!(part = what, "TLS certificates reloaded"),
                Some(Err(e)) => tracing::error!(
                    part = what,
                    error = %e,
                    "cannot reload TLS certificates; the previous ones stay in use"
                ),
            }
        }
    }

    /// A reqwest builder for the node's own requests: HTTPS with the peer
    /// certificate and CA when peer TLS is configured; never the system's
    /// roots (a node trusts no server but its peers).
    pub fn http_builder(&self) -> Result<reqwest::ClientBuilder, String> {
        let builder = reqwest::Client::builder();
        Ok(match &self.outgoing {
            Some(tls) => builder.use_preconfigured_tls(tls.client_config()?),
            None => builder.tls_built_in_root_certs(false),
        })
    }

    /// Reloads on every SIGHUP, for the life of the process.
    pub async fn reload_on_sighup(self) {
        use tokio::signal::unix::{signal, SignalKind};
        if self.client_port.is_none() && self.outgoing.is_none() {
            return;
        }
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; TLS certificates will not reload");
                return;
            }
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading TLS certificates");
            self.reload();
        }
    }
}

/// The TLS side of `locker-node healthcheck` against this node's own client
/// port: the server must present exactly the certificate in `--tls-cert`
/// (the health check has no CA of its own), and with `--tls-client-ca` the
/// peer certificate is presented, if there is one.
pub fn healthcheck_config(cfg: &NodeConfig) -> Result<ClientConfig, String> {
    let Some(cert) = &cfg.tls_cert else {
        return Err("--tls-cert is not set".into());
    };
    let pinned = read_certs(cert, CLIENT_FLAGS[0])?.remove(0);
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned(pinned)));
    match (&cfg.peer_tls_cert, &cfg.peer_tls_key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(
                read_certs(cert, PEER_FLAGS[0])?,
                read_key(key, PEER_FLAGS[1])?,
            )
            .map_err(|e| format!("{} {}: {e}", PEER_FLAGS[1], key.display())),
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// Accepts exactly one certificate (this node's own), with valid handshake
/// signatures.
#[derive(Debug)]
struct Pinned(CertificateDer<'static>);

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.0.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the server's certificate is not the one in --tls-cert".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = provider().signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = provider().signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
