//! TLS for the gRPC and HTTP listeners, with rustls: the certificate and key come from PEM files and are
//! reloaded, without dropping connections, when the files change or on SIGHUP (Kubernetes
//! rotates a mounted Secret by swapping the files). With a client CA, presented client
//! certificates are verified (mTLS); TokenAdminService then requires one (see the app's gate).

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

/// A client that opens a connection and never finishes its handshake gives up its slot here.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken connections waiting for the server to pick them up.
const ACCEPT_BACKLOG: usize = 128;

#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// CA certificates that sign client certificates; None: clients present none.
    pub client_ca_file: Option<PathBuf>,
    /// Every connection must present a valid client certificate (else only admin calls must).
    pub require_client_cert: bool,
    /// How often the files are compared with what is loaded.
    pub reload_interval: Duration,
}

impl TlsSettings {
    /// Whether TokenAdminService calls must come with a verified client certificate.
    pub fn admin_requires_client_cert(&self) -> bool {
        self.client_ca_file.is_some()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {setting} ({path}): {source}")]
    Read {
        setting: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid {setting} ({path}): {reason}")]
    Invalid {
        setting: &'static str,
        path: PathBuf,
        reason: String,
    },
}

/// The files' contents as last loaded, to tell whether they changed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Files {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

/// The current server configuration, swapped as a whole on reload; each new connection takes
/// the configuration current at its handshake.
pub struct Tls {
    settings: TlsSettings,
    current: RwLock<Arc<ServerConfig>>,
    loaded: RwLock<Files>,
}

impl Tls {
    /// Reads and checks the files; an error names the setting whose file is bad.
    pub async fn load(settings: TlsSettings) -> Result<Arc<Self>, TlsError> {
        let files = read_files(&settings).await?;
        let config = server_config(&settings, &files)?;
        Ok(Arc::new(Self {
            settings,
            current: RwLock::new(Arc::new(config)),
            loaded: RwLock::new(files),
        }))
    }

    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    fn acceptor(&self) -> TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        TlsAcceptor::from(config)
    }

    /// Reloads when the files differ from what is loaded. A bad new file is logged and the
    /// working configuration kept: a half-written Secret must not take the listener down.
    pub async fn reload_if_changed(&self) -> bool {
        let files = match read_files(&self.settings).await {
            Ok(files) => files,
            Err(error) => {
                metrics::counter!("tessera_tls_reloads_total", "result" => "failed").increment(1);
                tracing::warn!(%error, "cannot reload tls files; keeping the loaded certificate");
                return false;
            }
        };
        let unchanged = *self.loaded.read().unwrap_or_else(PoisonError::into_inner) == files;
        if unchanged {
            return false;
        }
        match server_config(&self.settings, &files) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
                *self.loaded.write().unwrap_or_else(PoisonError::into_inner) = files;
                metrics::counter!("tessera_tls_reloads_total", "result" => "reloaded").increment(1);
                tracing::info!(cert_file = %self.settings.cert_file.display(), "reloaded tls certificate");
                true
            }
            Err(error) => {
                metrics::counter!("tessera_tls_reloads_total", "result" => "failed").increment(1);
                tracing::warn!(%error, "new tls files are invalid; keeping the loaded certificate");
                false
            }
        }
    }

    /// Checks the files every `reload_interval` and on SIGHUP, until the task is aborted.
    pub fn watch(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(self.settings.reload_interval);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval.tick().await;
            let mut hangup = hangup_signal();
            loop {
                tokio::select! {
                    _ = interval.tick() => {}
                    () = next_hangup(&mut hangup) => {
                        tracing::info!("sighup: checking the tls files");
                    }
                }
                self.reload_if_changed().await;
            }
        })
    }

    /// Accepts TCP connections on `listener` and hands over those whose TLS handshake succeeds.
    /// Handshakes run concurrently, each bounded by a timeout, so one slow client cannot stall
    /// the others. Stops when the returned stream is dropped.
    pub fn incoming(
        self: Arc<Self>,
        listener: TcpListener,
    ) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
        let (sender, receiver) = mpsc::channel(ACCEPT_BACKLOG);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    () = sender.closed() => return,
                };
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let acceptor = self.acceptor();
                let sender = sender.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            let _ = sender.send(Ok(tls_stream)).await;
                        }
                        Ok(Err(error)) => {
                            metrics::counter!("tessera_tls_handshake_failures_total").increment(1);
                            tracing::debug!(%error, %peer, "tls handshake failed");
                        }
                        Err(_) => {
                            metrics::counter!("tessera_tls_handshake_failures_total").increment(1);
                            tracing::debug!(%peer, "tls handshake timed out");
                        }
                    }
                });
            }
        });
        ReceiverStream::new(receiver)
    }
}

async fn read_files(settings: &TlsSettings) -> Result<Files, TlsError> {
    let cert = read(settings.cert_file.as_path(), "TESSERA_TLS_CERT_FILE").await?;
    let key = read(settings.key_file.as_path(), "TESSERA_TLS_KEY_FILE").await?;
    let client_ca = match &settings.client_ca_file {
        Some(path) => Some(read(path, "TESSERA_TLS_CLIENT_CA_FILE").await?),
        None => None,
    };
    Ok(Files {
        cert,
        key,
        client_ca,
    })
}

async fn read(path: &Path, setting: &'static str) -> Result<Vec<u8>, TlsError> {
    tokio::fs::read(path)
        .await
        .map_err(|source| TlsError::Read {
            setting,
            path: path.to_owned(),
            source,
        })
}

fn server_config(settings: &TlsSettings, files: &Files) -> Result<ServerConfig, TlsError> {
    let invalid = |setting: &'static str, path: &Path, reason: String| TlsError::Invalid {
        setting,
        path: path.to_owned(),
        reason,
    };
    let provider = Arc::new(ring::default_provider());
    let chain = certificates(&files.cert)
        .map_err(|reason| invalid("TESSERA_TLS_CERT_FILE", &settings.cert_file, reason))?;
    let key = PrivateKeyDer::from_pem_slice(&files.key).map_err(|error| {
        invalid(
            "TESSERA_TLS_KEY_FILE",
            &settings.key_file,
            format!("no PEM private key: {error}"),
        )
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| {
            invalid(
                "TESSERA_TLS_CERT_FILE",
                &settings.cert_file,
                error.to_string(),
            )
        })?;
    let builder = match (&settings.client_ca_file, &files.client_ca) {
        (Some(ca_path), Some(ca_pem)) => {
            let mut roots = RootCertStore::empty();
            let cas = certificates(ca_pem)
                .map_err(|reason| invalid("TESSERA_TLS_CLIENT_CA_FILE", ca_path, reason))?;
            for ca in cas {
                roots.add(ca).map_err(|error| {
                    invalid("TESSERA_TLS_CLIENT_CA_FILE", ca_path, error.to_string())
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if settings.require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier.build().map_err(|error| {
                invalid("TESSERA_TLS_CLIENT_CA_FILE", ca_path, error.to_string())
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|error| {
        invalid(
            "TESSERA_TLS_KEY_FILE",
            &settings.key_file,
            format!("does not match the certificate: {error}"),
        )
    })?;
    // gRPC runs over HTTP/2; clients such as grpc-go refuse a server that does not say so.
    // HTTP/1.1 is for the HTTP listener (src/http/), which shares this configuration; h2 comes
    // first, so a gRPC client offering both still gets it.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("unreadable PEM: {error}"))?;
    if chain.is_empty() {
        return Err("no PEM certificate found".to_owned());
    }
    Ok(chain)
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for sighup; tls files are still polled");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup_signal() -> Hangup {}

#[cfg(unix)]
async fn next_hangup(hangup: &mut Hangup) {
    match hangup {
        Some(signal) => {
            if signal.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangup) {
    std::future::pending::<()>().await;
}
