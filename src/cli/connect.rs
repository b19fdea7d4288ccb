//! Connections to the server: the admin client with its key, and the plain authorization client.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tessera::proto::authorization_service_client::AuthorizationServiceClient;
use tessera::proto::token_admin_service_client::TokenAdminServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use super::ClientArgs;
use super::error::{CliError, error_chain};

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
    let channel = channel(&args.server).await?;
    Ok(TokenAdminServiceClient::with_interceptor(channel, auth))
}

/// Connects to the authorization service, which needs no admin key.
pub(super) async fn authorization_client(
    args: &ClientArgs,
) -> Result<AuthorizationServiceClient<Channel>, CliError> {
    Ok(AuthorizationServiceClient::new(
        channel(&args.server).await?,
    ))
}

async fn channel(server: &str) -> Result<Channel, CliError> {
    let endpoint = Endpoint::from_shared(server.to_owned())
        .map_err(|error| CliError::Usage(format!("invalid --server {server}: {error}")))?;
    endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .connect()
        .await
        .map_err(|error| CliError::Unreachable(error_chain(&error)))
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
    fn an_actor_that_cannot_be_a_header_is_a_usage_error() {
        let key = SecretString::from("adm_secret");
        let outcome = AdminAuth::new(&key, Some("line\nbreak"));
        assert!(matches!(outcome, Err(CliError::Usage(_))));
    }
}
