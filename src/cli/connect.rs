//! Connections to the server: the admin client with its key, and the plain authorization client.
//!
//! `https://` servers are verified against the system's CA certificates (as `rustls-native-certs`
//! finds them, `SSL_CERT_FILE` and `SSL_CERT_DIR` included), or against `--ca-cert` alone when it
//! is given; `--client-cert` with `--client-key` present a client certificate (mTLS). A failed
//! handshake is reported by what went wrong (`super::error::tls_problem`).

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tessera::proto::authorization_service_client::AuthorizationServiceClient;
use tessera::proto::token_admin_service_client::TokenAdminServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};
use tonic::{Request, Status};

use super::ClientArgs;
use super::error::{CliError, error_chain, tls_problem};

/// Where the server writes its first admin key, read when neither flag nor variable gives one.
const ADMIN_KEY_FILE: &str = tessera::config::BOOTSTRAP_KEY_FILE_NAME;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) type AdminClient = TokenAdminServiceClient<InterceptedService<Channel, AdminAuth>>;

/// Connects to the admin service; the key is looked up first so a missing one fails fast.
pub(super) async fn admin_client(args: &ClientArgs) -> Result<AdminClient, CliError> {
    let admin_key = match &args.admin_key {
        Some(admin_key) => admin_key.clone(),
        None => read_admin_key_file().await?,
    };
    let auth = AdminAuth::new(&admin_key, args.actor.as_deref())?;
    let endpoint = endpoint(args).await?;
    if let Some(warning) = plaintext_key_warning(endpoint.uri()) {
        eprintln!("warning: {warning}");
    }
    let channel = connect(endpoint).await?;
    Ok(TokenAdminServiceClient::with_interceptor(channel, auth))
}

/// Connects to the authorization service, which needs no admin key.
pub(super) async fn authorization_client(
    args: &ClientArgs,
) -> Result<AuthorizationServiceClient<Channel>, CliError> {
    Ok(AuthorizationServiceClient::new(
        connect(endpoint(args).await?).await?,
    ))
}

/// The server's endpoint, with TLS for `https://`: the system's roots or `--ca-cert`, and the
/// client certificate when one is given. TLS flags with an `http://` server are a usage error
/// rather than ignored: whoever set them expects the connection to be encrypted.
async fn endpoint(args: &ClientArgs) -> Result<Endpoint, CliError> {
    let server = &args.server;
    let endpoint = Endpoint::from_shared(server.clone())
        .map_err(|error| CliError::Usage(format!("invalid --server {server}: {error}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT);
    let tls = &args.tls;
    if endpoint.uri().scheme_str() != Some("https") {
        if tls.ca_cert.is_some() || tls.client_cert.is_some() {
            return Err(CliError::Usage(format!(
                "--ca-cert, --client-cert and --client-key (TESSERA_CA_CERT, TESSERA_CLIENT_CERT, \
                 TESSERA_CLIENT_KEY) need an https:// server, not {server}"
            )));
        }
        return Ok(endpoint);
    }
    let mut config = ClientTlsConfig::new();
    config = match &tls.ca_cert {
        Some(path) => {
            config.ca_certificate(Certificate::from_pem(read_pem("--ca-cert", path).await?))
        }
        None => config.with_native_roots(),
    };
    if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
        let cert = read_pem("--client-cert", cert).await?;
        let key = read_pem("--client-key", key).await?;
        config = config.identity(Identity::from_pem(cert, key));
    }
    endpoint.tls_config(config).map_err(|error| {
        let cause = error_chain(&error);
        if cause.contains("native") {
            CliError::Usage(format!(
                "no system CA certificates found to verify {server}; pass --ca-cert FILE"
            ))
        } else {
            CliError::Usage(format!(
                "cannot use the TLS files (--ca-cert, --client-cert, --client-key): {cause}"
            ))
        }
    })
}

async fn read_pem(flag: &str, path: &Path) -> Result<Vec<u8>, CliError> {
    tokio::fs::read(path)
        .await
        .map_err(|error| CliError::Usage(format!("cannot read {flag} {}: {error}", path.display())))
}

async fn connect(endpoint: Endpoint) -> Result<Channel, CliError> {
    endpoint
        .connect()
        .await
        .map_err(|error| match tls_problem(&error) {
            Some(problem) => CliError::Tls(problem),
            None => CliError::Unreachable(error_chain(&error)),
        })
}

/// The warning to print before an admin key goes to `uri` unencrypted, unless the server is on
/// this machine (a loopback address or `localhost`), where nobody else sees the traffic.
pub(super) fn plaintext_key_warning(uri: &Uri) -> Option<String> {
    if uri.scheme_str() == Some("https") {
        return None;
    }
    let host = uri.host().unwrap_or_default();
    let unbracketed = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || unbracketed
            .parse::<IpAddr>()
            .is_ok_and(|address| address.is_loopback());
    (!loopback).then(|| {
        format!(
            "the admin key is sent unencrypted to {host}: anyone on the network path can read \
             it; serve TLS and use an https:// --server"
        )
    })
}

async fn read_admin_key_file() -> Result<SecretString, CliError> {
    let missing = || {
        CliError::AdminKey(format!(
            "no admin key: pass --admin-key, set TESSERA_ADMIN_KEY, or run where {ADMIN_KEY_FILE} is"
        ))
    };
    let contents = match tokio::fs::read_to_string(ADMIN_KEY_FILE).await {
        Ok(contents) => SecretString::from(contents),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
        Err(error) => {
            return Err(CliError::AdminKey(format!(
                "cannot read {ADMIN_KEY_FILE}: {error}"
            )));
        }
    };
    let trimmed = contents.expose_secret().trim();
    if trimmed.is_empty() {
        return Err(missing());
    }
    Ok(SecretString::from(trimmed))
}

/// Adds `authorization: Bearer <admin key>` and the optional `x-tessera-actor` to every call.
/// Deliberately not `Debug`: it holds the key.
#[derive(Clone)]
pub(super) struct AdminAuth {
    authorization: MetadataValue<Ascii>,
    actor: Option<MetadataValue<Ascii>>,
}

impl AdminAuth {
    fn new(admin_key: &SecretString, actor: Option<&str>) -> Result<Self, CliError> {
        let bearer = format!("Bearer {}", admin_key.expose_secret());
        let mut authorization = MetadataValue::try_from(bearer).map_err(|_| {
            CliError::AdminKey("the admin key has characters a gRPC header cannot carry".to_owned())
        })?;
        authorization.set_sensitive(true);
        let actor = actor
            .map(|actor| {
                MetadataValue::try_from(actor).map_err(|_| {
                    CliError::Usage(format!(
                        "--actor {actor:?} has characters a gRPC header cannot carry"
                    ))
                })
            })
            .transpose()?;
        Ok(Self {
            authorization,
            actor,
        })
    }
}

impl Interceptor for AdminAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let metadata = request.metadata_mut();
        metadata.insert("authorization", self.authorization.clone());
        if let Some(actor) = &self.actor {
            metadata.insert("x-tessera-actor", actor.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_calls_carry_the_bearer_key_and_the_actor() {
        let key = SecretString::from("adm_secret");
        let mut auth = AdminAuth::new(&key, Some("alice@example.com")).expect("valid metadata");
        let request = auth.call(Request::new(())).expect("interceptor passes");
        let metadata = request.metadata();
        assert_eq!(
            metadata
                .get("authorization")
                .map(|value| value.to_str().ok()),
            Some(Some("Bearer adm_secret"))
        );
        assert_eq!(
            metadata
                .get("x-tessera-actor")
                .map(|value| value.to_str().ok()),
            Some(Some("alice@example.com"))
        );
    }

    #[test]
    fn an_admin_key_over_plaintext_is_warned_about_unless_the_server_is_on_this_machine() {
        let warning = |url: &str| plaintext_key_warning(&url.parse::<Uri>().expect("uri"));
        for local in [
            "http://127.0.0.1:50051",
            "http://127.8.9.10:1",
            "http://[::1]:50051",
            "http://localhost:50051",
            "https://tessera.example.com",
        ] {
            assert_eq!(warning(local), None, "{local}");
        }
        for remote in [
            "http://tessera.example.com:50051",
            "http://10.0.0.7:50051",
            "http://[2001:db8::1]:50051",
            "http://0.0.0.0:50051",
        ] {
            let text = warning(remote).unwrap_or_default();
            assert!(text.contains("unencrypted"), "{remote}: {text:?}");
        }
    }

    #[test]
    fn an_actor_that_cannot_be_a_header_is_a_usage_error() {
        let key = SecretString::from("adm_secret");
        let outcome = AdminAuth::new(&key, Some("line\nbreak"));
        assert!(matches!(outcome, Err(CliError::Usage(_))));
    }
}
