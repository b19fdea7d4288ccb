//! `tessera.v1.TokenAdminService`: every call authenticated by admin key and authorized by the
//! right its RPC needs (`admin::rights`), parsed at the edge, checked against the key's tenants,
//! handed to `admin::Admin`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::admin::{self, Admin, Expiry, PrincipalChanges, TokenChanges};
use crate::domain::admin_key::{AdminKeyId, TenantScope};
use crate::domain::credits::CreditAmount;
use crate::domain::event::{EventId, parse_event_types};
use crate::domain::fields::{
    ApiScope, Description, PrincipalId, RoleName, Tenant, TokenId, TokenName,
};
use crate::domain::metadata;
use crate::domain::policy::TenantPolicy;
use crate::domain::token::SecretHash;
use crate::domain::usage::UsageScope;
use crate::events::{Events, WatchScope};
use crate::grpc::auth::AdminAuth;
use crate::grpc::convert::{self, Violations};
use crate::proto;
use crate::proto::token_admin_service_server::TokenAdminService;
use crate::usage::{self, Usage};
use tokio_stream::StreamExt;

const MAX_MESSAGE_LEN: usize = 1024;
/// How often an open WatchEvents stream checks its admin key again (from the key cache, which
/// a revocation on any replica invalidates).
const WATCH_REAUTHORIZE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

pub struct TokenAdminApi {
    admin: Arc<Admin>,
    /// Shared with open WatchEvents streams, which check their key again while they run.
    auth: Arc<AdminAuth>,
    usage: Arc<Usage>,
    events: Arc<Events>,
    /// `TESSERA_DEFAULT_RATE_LIMIT_PER_MINUTE`, shown as the effective limit of tokens whose
    /// own is 0.
    default_rate_limit: u32,
    /// Where browsers reach `/portal/` (`TESSERA_PUBLIC_URL`, else the HTTP listener's address);
    /// None without an HTTP listener, when CreatePortalSession is FAILED_PRECONDITION.
    portal_base: Option<url::Url>,
}

impl TokenAdminApi {
    pub fn new(
        admin: Arc<Admin>,
        auth: AdminAuth,
        usage: Arc<Usage>,
        events: Arc<Events>,
        default_rate_limit: u32,
    ) -> Self {
        Self {
            admin,
            auth: Arc::new(auth),
            usage,
            events,
            default_rate_limit,
            portal_base: None,
        }
    }

    /// The base URL portal sessions' URLs are made under.
    pub fn with_portal_base(mut self, base: Option<url::Url>) -> Self {
        self.portal_base = base;
        self
    }

    /// The admin key checks of this service, for the console's sign-in.
    pub fn auth(&self) -> &Arc<AdminAuth> {
        &self.auth
    }

    /// A token as the API shows it, with the rules of its tenant's policy it breaks.
    async fn token(&self, token: &crate::domain::model::Token) -> Result<proto::Token, Status> {
        let policy = self.admin.tenant_policy(&token.tenant).await?;
        Ok(convert::token_under(
            token,
            self.default_rate_limit,
            &policy,
        ))
    }

    /// Tokens of one tenant as the API shows them, under its `policy`.
    fn tokens_under(
        &self,
        tokens: &[crate::domain::model::Token],
        policy: &TenantPolicy,
    ) -> Vec<proto::Token> {
        tokens
            .iter()
            .map(|token| convert::token_under(token, self.default_rate_limit, policy))
            .collect()
    }
}

/// A SetTenantPolicyRequest's policy, or INVALID_ARGUMENT naming every bad field
/// (`policy.max_lifetime`…); an empty tenant is `default_tenant`.
pub fn parse_tenant_policy(
    request: proto::SetTenantPolicyRequest,
    default_tenant: &Tenant,
) -> Result<TenantPolicy, Status> {
    let mut violations = Violations::default();
    let Some(raw) = request.policy else {
        violations.add("policy", "is required");
        return violations.finish(None);
    };
    let tenant = violations.check(
        "policy.tenant",
        Tenant::parse_or(&raw.tenant, default_tenant),
    );
    let max_lifetime = violations.duration("policy.max_lifetime", raw.max_lifetime);
    let default_lifetime = violations.duration("policy.default_lifetime", raw.default_lifetime);
    let allowed = violations.grants("policy.allowed_permissions", &raw.allowed_permissions);
    let leak_action = convert::parse_leak_action(raw.leak_action);
    if leak_action.is_none() {
        violations.add(
            "policy.leak_action",
            "must be LEAK_ACTION_REVOKE or LEAK_ACTION_NOTIFY",
        );
    }
    let parsed = (|| {
        Some(TenantPolicy {
            tenant: tenant?,
            max_lifetime: max_lifetime?,
            default_lifetime: default_lifetime?,
            require_expiry: raw.require_expiry,
            max_tokens_per_owner: Some(raw.max_tokens_per_owner).filter(|limit| *limit > 0),
            allowed_permissions: allowed?,
            require_ip_allowlist: raw.require_ip_allowlist,
            enforce_on_existing: raw.enforce_on_existing,
            leak_action: leak_action?,
            updated_at: None,
        })
    })();
    violations.finish(parsed)
}

/// Longest `action` and `actor` a ListAuditEvents filter may name: as long as any stored one.
const MAX_AUDIT_ACTION_LEN: usize = 64;
const MAX_AUDIT_ACTOR_LEN: usize = 128;

/// A ListAuditEventsRequest's filters, each bad one named.
fn audit_filter(
    violations: &mut Violations,
    request: &proto::ListAuditEventsRequest,
) -> Option<crate::store::AuditFilter> {
    let token_id = (!request.token_id.is_empty())
        .then(|| convert::token_id(violations, "token_id", &request.token_id));
    let principal_id = (!request.principal_id.is_empty())
        .then(|| violations.check("principal_id", PrincipalId::parse(&request.principal_id)));
    let mut text = |field: &str, raw: &str, max: usize| {
        if raw.chars().count() > max || raw.chars().any(char::is_control) {
            violations.add(field, format!("must be at most {max} printable characters"));
            return None;
        }
        Some((!raw.is_empty()).then(|| raw.to_owned()))
    };
    let action = text("action", &request.action, MAX_AUDIT_ACTION_LEN);
    let actor = text("actor", &request.actor, MAX_AUDIT_ACTOR_LEN);
    Some(crate::store::AuditFilter {
        token_id: token_id.map_or(Some(None), |id| id.map(Some))?,
        principal_id: principal_id.map_or(Some(None), |id| id.map(Some))?,
        action: action?,
        actor: actor?,
    })
}

/// Most field violations one ImportTokens answer lists; a batch with more says so in a last one.
const MAX_IMPORT_VIOLATIONS: usize = 100;

/// An ImportTokensRequest's tenant and tokens, or INVALID_ARGUMENT naming every bad field with
/// its entry's index (`tokens[3].secret_sha256`), duplicates within the batch included.
pub fn parse_import(
    request: proto::ImportTokensRequest,
    default_tenant: &Tenant,
) -> Result<(Tenant, Vec<admin::ImportToken>), Status> {
    let mut violations = Violations::default();
    let tenant = violations.check("tenant", Tenant::parse_or(&request.tenant, default_tenant));
    if request.tokens.is_empty() || request.tokens.len() > admin::MAX_IMPORT_BATCH {
        violations.add(
            "tokens",
            format!("give 1 to {} tokens", admin::MAX_IMPORT_BATCH),
        );
        return violations.finish(None);
    }
    let mut tokens = Vec::with_capacity(request.tokens.len());
    let mut seen: std::collections::HashMap<SecretHash, usize> = std::collections::HashMap::new();
    for (index, entry) in request.tokens.into_iter().enumerate() {
        if violations.len() >= MAX_IMPORT_VIOLATIONS {
            violations.add(
                "tokens",
                format!("more entries are invalid; the first {MAX_IMPORT_VIOLATIONS} are listed"),
            );
            break;
        }
        let field = |name: &str| format!("tokens[{index}].{name}");
        let owner_id = violations.check(&field("owner_id"), PrincipalId::parse(&entry.owner_id));
        let name = violations.check(&field("name"), TokenName::parse(&entry.name));
        let description = violations.check(
            &field("description"),
            Description::parse(&entry.description),
        );
        let secret_hash =
            violations.check(&field("secret_sha256"), parse_sha256(&entry.secret_sha256));
        if let Some(hash) = secret_hash {
            if let Some(first) = seen.get(&hash) {
                violations.add(
                    field("secret_sha256"),
                    format!("the same secret as tokens[{first}]"),
                );
            } else {
                seen.insert(hash, index);
            }
        }
        let permissions = violations.grants(&field("permissions"), &entry.permissions);
        let roles = violations.roles(&field("roles"), &entry.roles);
        let allowed_ips = violations.allowlist(&field("allowed_ips"), &entry.allowed_ips);
        let expires_at = violations.timestamp(&field("expires_at"), entry.expires_at);
        let created_at = violations.timestamp(&field("created_at"), entry.created_at);
        let metadata = violations.metadata(&field("metadata"), &entry.metadata);
        let parsed = (|| {
            Some(admin::ImportToken {
                owner_id: owner_id?,
                name: name?,
                description: description?,
                secret_hash: secret_hash?,
                permissions: permissions?,
                roles: roles?,
                allowed_ips: allowed_ips?,
                rate_limit_per_minute: entry.rate_limit_per_minute,
                expires_at: expires_at?,
                created_at: created_at?,
                metadata: metadata?,
            })
        })();
        if let Some(parsed) = parsed {
            tokens.push(parsed);
        }
    }
    violations.finish(tenant.map(|tenant| (tenant, tokens)))
}

/// The hex of a SHA-256 (64 digits, either case).
fn parse_sha256(raw: &str) -> Result<SecretHash, &'static str> {
    const MESSAGE: &str = "must be the SHA-256 of the secret as 64 hex digits";
    if raw.len() != 64 {
        return Err(MESSAGE);
    }
    hex::decode(raw)
        .ok()
        .and_then(|bytes| SecretHash::from_slice(&bytes))
        .ok_or(MESSAGE)
}

/// The paths UpdateToken accepts in its field mask.
const UPDATABLE_PATHS: &[&str] = &[
    "name",
    "description",
    "permissions",
    "roles",
    "allowed_ips",
    "rate_limit_per_minute",
    "expires_at",
    "require_signature",
    "metadata",
    "credits",
];

/// The prefix of an UpdateToken mask path naming one metadata entry, `metadata.KEY`.
const METADATA_ENTRY_PATH: &str = "metadata.";

/// The paths UpdatePrincipal accepts in its field mask.
const PRINCIPAL_UPDATABLE_PATHS: &[&str] = &["permissions", "disabled", "rate_limit_per_minute"];

/// An UpdatePrincipalRequest's tenant, id and changes, or INVALID_ARGUMENT naming every bad
/// field.
pub fn parse_update_principal(
    request: proto::UpdatePrincipalRequest,
    default_tenant: &Tenant,
) -> Result<(Tenant, PrincipalId, PrincipalChanges), Status> {
    let mut violations = Violations::default();
    let tenant = violations.check("tenant", Tenant::parse_or(&request.tenant, default_tenant));
    let id = violations.check("id", PrincipalId::parse(&request.id));
    let paths = request
        .update_mask
        .map(|mask| mask.paths)
        .unwrap_or_default();
    let updatable = PRINCIPAL_UPDATABLE_PATHS.join(", ");
    if paths.is_empty() {
        violations.add(
            "update_mask",
            format!("name at least one field to update: {updatable}"),
        );
    }
    // Each unknown path is a violation quoting it: a flood of them would make the error huge.
    if paths.len() > PRINCIPAL_UPDATABLE_PATHS.len() {
        violations.add(
            "update_mask",
            format!(
                "at most {} paths; updatable: {updatable}",
                PRINCIPAL_UPDATABLE_PATHS.len()
            ),
        );
        return violations.finish(None);
    }
    let mut changes = PrincipalChanges::default();
    for path in &paths {
        match path.as_str() {
            "permissions" => {
                changes.permissions = violations.grants("permissions", &request.permissions)
            }
            "disabled" => changes.disabled = Some(request.disabled),
            "rate_limit_per_minute" => {
                changes.rate_limit_per_minute = Some(request.rate_limit_per_minute)
            }
            unknown => violations.add(
                "update_mask",
                format!("unknown path {unknown:.64}; updatable: {updatable}"),
            ),
        }
    }
    let parsed = tenant.zip(id).map(|(tenant, id)| (tenant, id, changes));
    violations.finish(parsed)
}

/// A list request's tenant, page size and page token (its key parsed by `parse_key`), or
/// INVALID_ARGUMENT naming each bad field.
fn parse_tenant_page<K>(
    tenant: &str,
    page_size: i32,
    page_token: &str,
    default_tenant: &Tenant,
    parse_key: impl Fn(&str) -> Option<K>,
) -> Result<(Tenant, u32, Option<K>), Status> {
    let mut violations = Violations::default();
    let tenant = violations.check("tenant", Tenant::parse_or(tenant, default_tenant));
    let page_size = violations.page_size(page_size);
    let after = violations.page_token(page_token, parse_key);
    let parsed = (|| Some((tenant?, page_size?, after?)))();
    violations.finish(parsed)
}

/// A tenant and a role name, as GetRole and DeleteRole take them.
fn parse_role_key(
    tenant: &str,
    name: &str,
    default_tenant: &Tenant,
) -> Result<(Tenant, RoleName), Status> {
    let mut violations = Violations::default();
    let tenant = violations.check("tenant", Tenant::parse_or(tenant, default_tenant));
    let name = violations.check("name", RoleName::parse(name));
    violations.finish(tenant.zip(name))
}

/// A CreateTokenRequest as the admin layer takes it, or INVALID_ARGUMENT naming every bad field;
/// an empty tenant is `default_tenant`.
pub fn parse_create(
    request: proto::CreateTokenRequest,
    default_tenant: &Tenant,
) -> Result<admin::CreateToken, Status> {
    let mut violations = Violations::default();
    let tenant = violations.check("tenant", Tenant::parse_or(&request.tenant, default_tenant));
    let owner_id = violations.check("owner_id", PrincipalId::parse(&request.owner_id));
    let name = violations.check("name", TokenName::parse(&request.name));
    let description = violations.check("description", Description::parse(&request.description));
    let permissions = violations.grants("permissions", &request.permissions);
    let roles = violations.roles("roles", &request.roles);
    let allowed_ips = violations.allowlist("allowed_ips", &request.allowed_ips);
    let metadata = violations.metadata("metadata", &request.metadata);
    let expiry = given_expiry(&mut violations, request.expires_at, request.ttl)
        .map(|given| given.unwrap_or(Expiry::Default));
    let credits = match request.credits {
        None => Some(None),
        Some(credits) => violations.credits("credits", credits).map(Some),
    };
    let parsed = (|| {
        Some(admin::CreateToken {
            tenant: tenant?,
            owner_id: owner_id?,
            name: name?,
            description: description?,
            permissions: permissions?,
            roles: roles?,
            allowed_ips: allowed_ips?,
            rate_limit_per_minute: request.rate_limit_per_minute,
            expiry: expiry?,
            require_signature: request.require_signature,
            metadata: metadata?,
            credits: credits?,
        })
    })();
    violations.finish(parsed)
}

/// The expiry a request gives by `expires_at` or `ttl` (Some(None): neither), or None after
/// recording what is wrong with them.
fn given_expiry(
    violations: &mut Violations,
    expires_at: Option<prost_types::Timestamp>,
    ttl: Option<prost_types::Duration>,
) -> Option<Option<Expiry>> {
    let expires_at = violations.timestamp("expires_at", expires_at);
    let ttl = violations.duration("ttl", ttl);
    match (expires_at, ttl) {
        (Some(Some(_)), Some(Some(_))) => {
            violations.add("ttl", "give either expires_at or ttl, not both");
            None
        }
        (Some(Some(at)), Some(None)) => Some(Some(Expiry::At(at))),
        (Some(None), Some(Some(ttl))) => Some(Some(Expiry::Ttl(ttl))),
        (Some(None), Some(None)) => Some(None),
        _ => None,
    }
}

/// A CreateAdminKeyRequest as the admin layer takes it, or INVALID_ARGUMENT naming every bad
/// field.
fn parse_create_admin_key(
    request: proto::CreateAdminKeyRequest,
) -> Result<admin::CreateAdminKey, Status> {
    let mut violations = Violations::default();
    let name = violations.check("name", TokenName::parse(&request.name));
    let tenants = violations.check("tenants", TenantScope::parse(&request.tenants));
    let role = convert::parse_admin_role(request.role);
    if role.is_none() {
        violations.add(
            "role",
            "must be ADMIN_ROLE_VIEWER, ADMIN_ROLE_TOKEN_MANAGER or ADMIN_ROLE_OWNER",
        );
    }
    let expiry = given_expiry(&mut violations, request.expires_at, request.ttl);
    let parsed = (|| {
        Some(admin::CreateAdminKey {
            name: name?,
            tenants: tenants?,
            role: role?,
            expiry: expiry?,
        })
    })();
    violations.finish(parsed)
}

fn parse_admin_key_id(raw: &str) -> Result<AdminKeyId, Status> {
    AdminKeyId::parse(raw).map_err(|error| convert::invalid_field("id", error))
}

/// An update's token id, its changes and the etag it must match (None: no check).
pub type ParsedUpdate = (TokenId, TokenChanges, Option<u64>);

/// An UpdateTokenRequest's id, changes and etag, or INVALID_ARGUMENT naming every bad field.
pub fn parse_update(request: proto::UpdateTokenRequest) -> Result<ParsedUpdate, Status> {
    let mut violations = Violations::default();
    let id = convert::token_id(&mut violations, "id", &request.id);
    // Never quoted back: the value is the caller's and may be anything.
    let etag = if request.etag.is_empty() {
        Some(None)
    } else {
        violations.check(
            "etag",
            convert::parse_etag(&request.etag)
                .map(Some)
                .ok_or("is not an etag from a token this server returned"),
        )
    };
    let paths = request
        .update_mask
        .map(|mask| mask.paths)
        .unwrap_or_default();
    if paths.is_empty() {
        violations.add("update_mask", "name at least one field to update");
    }
    // Each unknown path is a violation quoting it: a flood of them would make the error huge.
    let max_paths = UPDATABLE_PATHS.len() + metadata::MAX_ENTRIES;
    if paths.len() > max_paths {
        violations.add(
            "update_mask",
            format!(
                "at most {max_paths} paths; updatable: {}, metadata.KEY",
                UPDATABLE_PATHS.join(", ")
            ),
        );
        return violations.finish(None);
    }
    let mut changes = TokenChanges::default();
    for path in &paths {
        match path.as_str() {
            "name" => changes.name = violations.check("name", TokenName::parse(&request.name)),
            "description" => {
                changes.description =
                    violations.check("description", Description::parse(&request.description));
            }
            "permissions" => {
                changes.permissions = violations.grants("permissions", &request.permissions)
            }
            "roles" => changes.roles = violations.roles("roles", &request.roles),
            "allowed_ips" => {
                changes.allowed_ips = violations.allowlist("allowed_ips", &request.allowed_ips)
            }
            "rate_limit_per_minute" => {
                changes.rate_limit_per_minute = Some(request.rate_limit_per_minute)
            }
            "expires_at" => {
                let expires_at = violations
                    .timestamp("expires_at", request.expires_at)
                    .flatten();
                changes.expires_at = violations.require("expires_at", expires_at);
            }
            "require_signature" => changes.require_signature = Some(request.require_signature),
            "metadata" => changes.metadata = violations.metadata("metadata", &request.metadata),
            entry if entry.starts_with(METADATA_ENTRY_PATH) => {
                let raw_key = &entry[METADATA_ENTRY_PATH.len()..];
                let change = metadata::MetadataKey::parse(raw_key).and_then(|key| {
                    let value = request
                        .metadata
                        .get(raw_key)
                        .map(|value| metadata::parse_value(&key, value))
                        .transpose()?;
                    Ok((key, value))
                });
                if let Some(change) = violations.check("update_mask", change) {
                    changes.metadata_entries.push(change);
                }
            }
            "credits" => {
                changes.credits = match request.credits {
                    None => Some(None),
                    Some(credits) => violations.credits("credits", credits).map(Some),
                }
            }
            unknown => violations.add(
                "update_mask",
                format!(
                    "unknown path {unknown:.64}; updatable: {}, metadata.KEY",
                    UPDATABLE_PATHS.join(", ")
                ),
            ),
        }
    }
    violations.finish(id.zip(etag).map(|(id, etag)| (id, changes, etag)))
}

/// Whose usage, and how many days of series: `token_id`, or `tenant` and `owner_id`.
fn parse_list_usage(
    request: &proto::ListUsageRequest,
    default_tenant: &Tenant,
) -> Result<(UsageScope, u32), Status> {
    let mut violations = Violations::default();
    let scope = match (request.token_id.is_empty(), request.owner_id.is_empty()) {
        (false, false) => {
            violations.add(
                "owner_id",
                "give token_id, or tenant and owner_id, not both",
            );
            None
        }
        (false, true) => {
            convert::token_id(&mut violations, "token_id", &request.token_id).map(UsageScope::Token)
        }
        (true, false) => {
            let tenant =
                violations.check("tenant", Tenant::parse_or(&request.tenant, default_tenant));
            let owner_id = violations.check("owner_id", PrincipalId::parse(&request.owner_id));
            tenant
                .zip(owner_id)
                .map(|(tenant, owner_id)| UsageScope::Owner { tenant, owner_id })
        }
        (true, true) => {
            violations.add("token_id", "give token_id, or tenant and owner_id");
            None
        }
    };
    let days = match u32::try_from(request.days) {
        Ok(0) => Some(usage::DEFAULT_DAYS),
        Ok(days) if days <= usage::MAX_DAYS => Some(days),
        _ => {
            violations.add(
                "days",
                format!(
                    "must be 1 to {} (0 means {})",
                    usage::MAX_DAYS,
                    usage::DEFAULT_DAYS
                ),
            );
            None
        }
    };
    violations.finish(scope.zip(days))
}

/// A secret that a response carries once (empty when there is none).
fn shown_once(secret: Option<&secrecy::SecretString>) -> String {
    secret
        .map(|secret| secrecy::ExposeSecret::expose_secret(secret).to_owned())
        .unwrap_or_default()
}

fn parse_token_id(raw: &str) -> Result<TokenId, Status> {
    TokenId::parse(raw).map_err(|error| convert::invalid_field("id", error))
}

#[tonic::async_trait]
impl TokenAdminService for TokenAdminApi {
    async fn create_token(
        &self,
        request: Request<proto::CreateTokenRequest>,
    ) -> Result<Response<proto::CreateTokenResponse>, Status> {
        let actor = self.auth.authorize(&request, "CreateToken").await?;
        let command = parse_create(request.into_inner(), self.admin.default_tenant())?;
        actor.require_tenant(&command.tenant)?;
        let issued = self.admin.create_token(&actor, command).await?;
        Ok(Response::new(proto::CreateTokenResponse {
            token: Some(self.token(&issued.token).await?),
            secret: secrecy::ExposeSecret::expose_secret(&issued.secret).to_owned(),
            signing_key: shown_once(issued.signing_key.as_ref()),
        }))
    }

    async fn get_token(
        &self,
        request: Request<proto::GetTokenRequest>,
    ) -> Result<Response<proto::GetTokenResponse>, Status> {
        let actor = self.auth.authorize(&request, "GetToken").await?;
        let id = parse_token_id(&request.get_ref().id)?;
        let token = self.admin.get_token(&actor, &id).await?;
        Ok(Response::new(proto::GetTokenResponse {
            token: Some(self.token(&token).await?),
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<proto::ListTokensRequest>,
    ) -> Result<Response<proto::ListTokensResponse>, Status> {
        let actor = self.auth.authorize(&request, "ListTokens").await?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let tenant = violations.check(
            "tenant",
            Tenant::parse_or(&request.tenant, self.admin.default_tenant()),
        );
        let owner_id = if request.owner_id.is_empty() {
            Some(None)
        } else {
            violations.check("owner_id", PrincipalId::parse(&request.owner_id).map(Some))
        };
        let page_size = violations.page_size(request.page_size);
        let after = violations.page_token(&request.page_token, |text| TokenId::parse(text).ok());
        let expiring_within = violations.duration("expiring_within", request.expiring_within);
        let unused_for = violations.duration("unused_for", request.unused_for);
        let parsed = (|| {
            Some(admin::ListTokens {
                tenant: tenant?,
                owner_id: owner_id?,
                include_revoked: request.include_revoked,
                expiring_within: expiring_within?,
                unused_for: unused_for?,
                policy_violations_only: request.policy_violations_only,
                page_size: page_size?,
                after: after?,
            })
        })();
        let query = violations.finish(parsed)?;
        actor.require_tenant(&query.tenant)?;
        let policy = self.admin.tenant_policy(&query.tenant).await?;
        let page = self.admin.list_tokens(query).await?;
        Ok(Response::new(proto::ListTokensResponse {
            tokens: self.tokens_under(&page.items, &policy),
            next_page_token: convert::next_page_token(page.next),
        }))
    }

    async fn update_token(
        &self,
        request: Request<proto::UpdateTokenRequest>,
    ) -> Result<Response<proto::UpdateTokenResponse>, Status> {
        let actor = self.auth.authorize(&request, "UpdateToken").await?;
        let (id, changes, etag) = parse_update(request.into_inner())?;
        let updated = self.admin.update_token(&actor, &id, changes, etag).await?;
        Ok(Response::new(proto::UpdateTokenResponse {
            token: Some(self.token(&updated.token).await?),
            signing_key: shown_once(updated.signing_key.as_ref()),
        }))
    }

    async fn rotate_token(
        &self,
        request: Request<proto::RotateTokenRequest>,
    ) -> Result<Response<proto::RotateTokenResponse>, Status> {
        let actor = self.auth.authorize(&request, "RotateToken").await?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let id = convert::token_id(&mut violations, "id", &request.id);
        let grace = violations.duration("grace_period", request.grace_period);
        let (id, grace) = violations.finish(id.zip(grace))?;
        let issued = self
            .admin
            .rotate_token(&actor, &id, grace.unwrap_or_else(chrono::Duration::zero))
            .await?;
        Ok(Response::new(proto::RotateTokenResponse {
            token: Some(self.token(&issued.token).await?),
            secret: secrecy::ExposeSecret::expose_secret(&issued.secret).to_owned(),
            signing_key: shown_once(issued.signing_key.as_ref()),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<proto::RevokeTokenRequest>,
    ) -> Result<Response<proto::RevokeTokenResponse>, Status> {
        let actor = self.auth.authorize(&request, "RevokeToken").await?;
        let id = parse_token_id(&request.get_ref().id)?;
        let token = self.admin.revoke_token(&actor, &id).await?;
        Ok(Response::new(proto::RevokeTokenResponse {
            token: Some(self.token(&token).await?),
        }))
    }

    async fn suspend_token(
        &self,
        request: Request<proto::SuspendTokenRequest>,
    ) -> Result<Response<proto::SuspendTokenResponse>, Status> {
        let actor = self.auth.authorize(&request, "SuspendToken").await?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let id = convert::token_id(&mut violations, "id", &request.id);
        let reason = violations.check("reason", Description::parse(&request.reason));
        let (id, reason) = violations.finish(id.zip(reason))?;
        let token = self.admin.suspend_token(&actor, &id, reason).await?;
        Ok(Response::new(proto::SuspendTokenResponse {
            token: Some(self.token(&token).await?),
        }))
    }

    async fn resume_token(
        &self,
        request: Request<proto::ResumeTokenRequest>,
    ) -> Result<Response<proto::ResumeTokenResponse>, Status> {
        let actor = self.auth.authorize(&request, "ResumeToken").await?;
        let id = parse_token_id(&request.get_ref().id)?;
        let token = self.admin.resume_token(&actor, &id).await?;
        Ok(Response::new(proto::ResumeTokenResponse {
            token: Some(self.token(&token).await?),
        }))
    }

    async fn list_usage(
        &self,
        request: Request<proto::ListUsageRequest>,
    ) -> Result<Response<proto::ListUsageResponse>, Status> {
        let actor = self.auth.authorize(&request, "ListUsage").await?;
        let (scope, days) = parse_list_usage(request.get_ref(), self.admin.default_tenant())?;
        match &scope {
            // Another tenant's token is NOT_FOUND, as GetToken answers.
            UsageScope::Token(id) => {
                self.admin.get_token(&actor, id).await?;
            }
            UsageScope::Owner { tenant, .. } => actor.require_tenant(tenant)?,
        }
        let report = self
            .usage
            .report_for(scope, days, chrono::Utc::now())
            .await?;
        Ok(Response::new(convert::usage(&report)))
    }

    async fn upsert_principal(
        &self,
        request: Request<proto::UpsertPrincipalRequest>,
    ) -> Result<Response<proto::UpsertPrincipalResponse>, Status> {
        let actor = self.auth.authorize(&request, "UpsertPrincipal").await?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let tenant = violations.check(
            "tenant",
            Tenant::parse_or(&request.tenant, self.admin.default_tenant()),
        );
        let id = violations.check("id", PrincipalId::parse(&request.id));
        let permissions = violations.grants("permissions", &request.permissions);
        let parsed = (|| {
            Some(admin::UpsertPrincipal {
                tenant: tenant?,
                id: id?,
                permissions: permissions?,
                disabled: request.disabled,
                rate_limit_per_minute: request.rate_limit_per_minute,
            })
        })();
        let command = violations.finish(parsed)?;
        actor.require_tenant(&command.tenant)?;
        let principal = self.admin.upsert_principal(&actor, command).await?;
        Ok(Response::new(proto::UpsertPrincipalResponse {
            principal: Some(convert::principal(&principal)),
        }))
    }

    async fn get_principal(
        &self,
        request: Request<proto::GetPrincipalRequest>,
    ) -> Result<Response<proto::GetPrincipalResponse>, Status> {
        let actor = self.auth.authorize(&request, "GetPrincipal").await?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let tenant = violations.check(
            "tenant",
            Tenant::parse_or(&request.tenant, self.admin.default_tenant()),
        );
        let id = violations.check("id", PrincipalId::parse(&request.id));
        let (tenant, id) = violations.finish(tenant.zip(id))?;
        actor.require_tenant(&tenant)?;
        let principal = self.admin.get_principal(&tenant, &id).await?;
        Ok(Response::new(proto::GetPrincipalResponse {
            principal: Some(convert::principal(&principal)),
        }))
    }

    async fn upsert_role(
        &self,
        request: Request<proto::UpsertRoleRequest>,
    ) -> Result<Response<proto::UpsertRoleResponse>, Status> {
        let actor = self.auth.authorize(&request, "UpsertRole").await?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let tenant = violations.check(
            "tenant",
            Tenant::parse_or(&request.tenant, self.admin.default_tenant()),
        );
        let name = violations.check("name", RoleName::parse(&request.name));
        let permissions = violations.grants("permissions", &request.permissions);
        let parsed = (|| Some((tenant?, name?, permissions?)))();
        let (tenant, name, permissions) = violations.finish(parsed)?;
        actor.require_tenant(&tenant)?;
        let role = self
            .admin
            .upsert_role(&actor, tenant, name, permissions)
            .await?;
        Ok(Response::new(proto::UpsertRoleResponse {
            role: Some(convert::role(&role)),
        }))
    }

    async fn list_roles(
        &self,
        request: Request<proto::ListRolesRequest>,
    ) -> Result<Response<proto::ListRolesResponse>, Status> {
        let actor = self.auth.authorize(&request, "ListRoles").await?;
        let tenant = Tenant::parse_or(&request.get_ref().tenant, self.admin.default_tenant())
            .map_err(|error| convert::invalid_field("tenant", error))?;
        actor.require_tenant(&tenant)?;
        let roles = self.admin.list_roles(&tenant).await?;
        Ok(Response::new(proto::ListRolesResponse {
            roles: roles.iter().map(convert::role).collect(),
        }))
    }

    async fn set_api_status(
        &self,
        request: Request<proto::SetApiStatusRequest>,
    ) -> Result<Response<proto::SetApiStatusResponse>, Status> {
        let actor = self.auth.authorize(&request, "SetApiStatus").await?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let scope = violations.check(
            "tenant",
            ApiScope::parse_or(&request.tenant, self.admin.default_tenant()),
        );
        if request.message.chars().count() > MAX_MESSAGE_LEN {
            violations.add(
                "message",
                format!("must be at most {MAX_MESSAGE_LEN} characters"),
            );
        }
        let scope = violations.finish(scope)?;
        match Tenant::parse(scope.as_str()) {
            Ok(tenant) => actor.require_tenant(&tenant)?,
            Err(_) => actor.require_all_tenants("the global API switch (tenant `*`)")?,
        }
        let status = self
            .admin
            .set_api_status(&actor, scope, request.online, request.message)
            .await?;
        Ok(Response::new(proto::SetApiStatusResponse {
            status: Some(convert::api_status(&status)),
        }))
    }

    async fn get_api_status(
        &self,
        request: Request<proto::GetApiStatusRequest>,
    ) -> Result<Response<proto::GetApiStatusResponse>, Status> {
        let actor = self.auth.authorize(&request, "GetApiStatus").await?;
        let scope = ApiScope::parse_or(&request.get_ref().tenant, self.admin.default_tenant())
            .map_err(|error| convert::invalid_field("tenant", error))?;
        // The global switch applies to every key's tenants, so any key may read it.
        if let Ok(tenant) = Tenant::parse(scope.as_str()) {
            actor.require_tenant(&tenant)?;
        }
        let status = self.admin.get_api_status(&scope).await?;
        Ok(Response::new(proto::GetApiStatusResponse {
            status: Some(convert::api_status(&status)),
        }))
    }

    async fn list_audit_events(
        &self,
        request: Request<proto::ListAuditEventsRequest>,
    ) -> Result<Response<proto::ListAuditEventsResponse>, Status> {
        let actor = self.auth.authorize(&request, "ListAuditEvents").await?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let tenant = if request.tenant.is_empty() {
            Some(None)
        } else {
            violations.check("tenant", Tenant::parse(&request.tenant).map(Some))
        };
        let page_size = violations.page_size(request.page_size);
        let after = violations.page_token(&request.page_token, |text| text.parse::<i64>().ok());
        let filter = audit_filter(&mut violations, &request);
        let parsed = (|| Some((tenant?, page_size?, after?, filter?)))();
        let (tenant, page_size, after, filter) = violations.finish(parsed)?;
        let page = self
            .admin
            .list_audit_events(
                &actor,
                tenant.as_ref(),
                &filter,
                page_size,
                after.unwrap_or(0),
            )
            .await?;
        Ok(Response::new(proto::ListAuditEventsResponse {
            events: page.items.iter().map(convert::audit_event).collect(),
            next_page_token: convert::next_page_token(page.next),
        }))
    }

    async fn create_admin_key(
        &self,
        request: Request<proto::CreateAdminKeyRequest>,
    ) -> Result<Response<proto::CreateAdminKeyResponse>, Status> {
        let actor = self.auth.authorize(&request, "CreateAdminKey").await?;
        let command = parse_create_admin_key(request.into_inner())?;
        let issued = self.admin.create_admin_key(&actor, command).await?;
        Ok(Response::new(proto::CreateAdminKeyResponse {
            admin_key: Some(convert::admin_key(&issued.key)),
            secret: secrecy::ExposeSecret::expose_secret(&issued.secret).to_owned(),
        }))
    }

    async fn list_admin_keys(
        &self,
        request: Request<proto::ListAdminKeysRequest>,
    ) -> Result<Response<proto::ListAdminKeysResponse>, Status> {
        let actor = self.auth.authorize(&request, "ListAdminKeys").await?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let page_size = violations.page_size(request.page_size);
        let after = violations.page_token(&request.page_token, |text| AdminKeyId::parse(text).ok());
        let (page_size, after) = violations.finish(page_size.zip(after))?;
        let page = self
            .admin
            .list_admin_keys(&actor, request.include_revoked, page_size, after)
            .await?;
        Ok(Response::new(proto::ListAdminKeysResponse {
            admin_keys: page.items.iter().map(convert::admin_key).collect(),
            next_page_token: convert::next_page_token(page.next),
        }))
    }

    async fn get_admin_key(
        &self,
        request: Request<proto::GetAdminKeyRequest>,
    ) -> Result<Response<proto::GetAdminKeyResponse>, Status> {
        let actor = self.auth.authorize(&request, "GetAdminKey").await?;
        let id = parse_admin_key_id(&request.get_ref().id)?;
        let key = self.admin.get_admin_key(&actor, &id).await?;
        Ok(Response::new(proto::GetAdminKeyResponse {
            admin_key: Some(convert::admin_key(&key)),
        }))
    }

    async fn revoke_admin_key(
        &self,
        request: Request<proto::RevokeAdminKeyRequest>,
    ) -> Result<Response<proto::RevokeAdminKeyResponse>, Status> {
        let actor = self.auth.authorize(&request, "RevokeAdminKey").await?;
        let id = parse_admin_key_id(&request.get_ref().id)?;
        let key = self.admin.revoke_admin_key(&actor, &id).await?;
        Ok(Response::new(proto::RevokeAdminKeyResponse {
            admin_key: Some(convert::admin_key(&key)),
        }))
    }

    // Principals and roles beyond upsert (issue 13).

    async fn update_principal(
        &self,
        request: Request<proto::UpdatePrincipalRequest>,
    ) -> Result<Response<proto::UpdatePrincipalResponse>, Status> {
        let actor = self.auth.authorize(&request, "UpdatePrincipal").await?;
        let (tenant, id, changes) =
            parse_update_principal(request.into_inner(), self.admin.default_tenant())?;
        actor.require_tenant(&tenant)?;
        let principal = self
            .admin
            .update_principal(&actor, &tenant, &id, changes)
            .await?;
        Ok(Response::new(proto::UpdatePrincipalResponse {
            principal: Some(convert::principal(&principal)),
        }))
    }

    async fn list_principals(
        &self,
        request: Request<proto::ListPrincipalsRequest>,
    ) -> Result<Response<proto::ListPrincipalsResponse>, Status> {
        let actor = self.auth.authorize(&request, "ListPrincipals").await?;
        let request = request.into_inner();
        let (tenant, page_size, after) = parse_tenant_page(
            &request.tenant,
            request.page_size,
            &request.page_token,
            self.admin.default_tenant(),
            |text| PrincipalId::parse(text).ok(),
        )?;
        actor.require_tenant(&tenant)?;
        let page = self
            .admin
            .list_principals(&tenant, page_size, after)
            .await?;
        Ok(Response::new(proto::ListPrincipalsResponse {
            principals: page.items.iter().map(convert::principal).collect(),
            next_page_token: convert::next_page_token(page.next),
        }))
    }

    async fn get_role(
        &self,
        request: Request<proto::GetRoleRequest>,
    ) -> Result<Response<proto::GetRoleResponse>, Status> {
        let actor = self.auth.authorize(&request, "GetRole").await?;
        let (tenant, name) = parse_role_key(
            &request.get_ref().tenant,
            &request.get_ref().name,
            self.admin.default_tenant(),
        )?;
        actor.require_tenant(&tenant)?;
        let role = self.admin.get_role(&tenant, &name).await?;
        Ok(Response::new(proto::GetRoleResponse {
            role: Some(convert::role(&role)),
        }))
    }

    async fn delete_role(
        &self,
        request: Request<proto::DeleteRoleRequest>,
    ) -> Result<Response<proto::DeleteRoleResponse>, Status> {
        let actor = self.auth.authorize(&request, "DeleteRole").await?;
        let (tenant, name) = parse_role_key(
            &request.get_ref().tenant,
            &request.get_ref().name,
            self.admin.default_tenant(),
        )?;
        actor.require_tenant(&tenant)?;
        let role = self.admin.delete_role(&actor, &tenant, &name).await?;
        Ok(Response::new(proto::DeleteRoleResponse {
            role: Some(convert::role(&role)),
        }))
    }

    async fn set_tenant_policy(
        &self,
        request: Request<proto::SetTenantPolicyRequest>,
    ) -> Result<Response<proto::SetTenantPolicyResponse>, Status> {
        let actor = self.auth.authorize(&request, "SetTenantPolicy").await?;
        let policy = parse_tenant_policy(request.into_inner(), self.admin.default_tenant())?;
        actor.require_tenant(&policy.tenant)?;
        let stored = self.admin.set_tenant_policy(&actor, policy).await?;
        Ok(Response::new(proto::SetTenantPolicyResponse {
            policy: Some(convert::tenant_policy(&stored)),
        }))
    }

    async fn get_tenant_policy(
        &self,
        request: Request<proto::GetTenantPolicyRequest>,
    ) -> Result<Response<proto::GetTenantPolicyResponse>, Status> {
        let actor = self.auth.authorize(&request, "GetTenantPolicy").await?;
        let tenant = Tenant::parse_or(&request.get_ref().tenant, self.admin.default_tenant())
            .map_err(|error| convert::invalid_field("tenant", error))?;
        actor.require_tenant(&tenant)?;
        let policy = self.admin.tenant_policy(&tenant).await?;
        Ok(Response::new(proto::GetTenantPolicyResponse {
            policy: Some(convert::tenant_policy(&policy)),
        }))
    }

    async fn import_tokens(
        &self,
        request: Request<proto::ImportTokensRequest>,
    ) -> Result<Response<proto::ImportTokensResponse>, Status> {
        let actor = self.auth.authorize(&request, "ImportTokens").await?;
        let (tenant, tokens) = parse_import(request.into_inner(), self.admin.default_tenant())?;
        actor.require_tenant(&tenant)?;
        let imported = self.admin.import_tokens(&actor, &tenant, tokens).await?;
        let policy = self.admin.tenant_policy(&tenant).await?;
        Ok(Response::new(proto::ImportTokensResponse {
            tokens: self.tokens_under(&imported, &policy),
        }))
    }
    async fn add_credits(
        &self,
        request: Request<proto::AddCreditsRequest>,
    ) -> Result<Response<proto::AddCreditsResponse>, Status> {
        let actor = self.auth.authorize(&request, "AddCredits").await?;
        let (id, amount) = parse_add_credits(request.get_ref())?;
        let token = self.admin.add_credits(&actor, &id, amount).await?;
        Ok(Response::new(proto::AddCreditsResponse {
            token: Some(self.token(&token).await?),
        }))
    }

    // Lifecycle events and webhooks (issue 17).

    async fn create_portal_session(
        &self,
        request: Request<proto::CreatePortalSessionRequest>,
    ) -> Result<Response<proto::CreatePortalSessionResponse>, Status> {
        let actor = self.auth.authorize(&request, "CreatePortalSession").await?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let tenant = violations.check(
            "tenant",
            Tenant::parse_or(&request.tenant, self.admin.default_tenant()),
        );
        let principal_id =
            violations.check("principal_id", PrincipalId::parse(&request.principal_id));
        let return_url = violations.check(
            "return_url",
            crate::domain::session::parse_return_url(&request.return_url),
        );
        let ttl = violations
            .duration("ttl", request.ttl)
            .map(|ttl| ttl.unwrap_or(crate::domain::session::MAX_PORTAL_TTL))
            .and_then(|ttl| {
                violations.check(
                    "ttl",
                    Some(ttl)
                        .filter(|ttl| {
                            (crate::domain::session::MIN_PORTAL_TTL
                                ..=crate::domain::session::MAX_PORTAL_TTL)
                                .contains(ttl)
                        })
                        .ok_or(crate::domain::session::InvalidPortal::Ttl),
                )
            });
        let open = violations.finish((|| {
            Some(admin::portal::OpenPortal {
                tenant: tenant?,
                principal_id: principal_id?,
                return_url: return_url?,
                ttl: ttl?,
            })
        })())?;
        actor.require_tenant(&open.tenant)?;
        let Some(base) = &self.portal_base else {
            return Err(Status::failed_precondition(
                "the portal needs the HTTP listener (TESSERA_HTTP_LISTEN)",
            ));
        };
        let opened = self.admin.create_portal_session(&actor, open).await?;
        let mut url = base.join(crate::console::PORTAL_ENTER_PATH).map_err(|_| {
            crate::grpc::status::internal("the portal's base URL cannot hold its path")
        })?;
        url.query_pairs_mut()
            .append_pair("code", secrecy::ExposeSecret::expose_secret(&opened.code));
        Ok(Response::new(proto::CreatePortalSessionResponse {
            url: url.to_string(),
            expires_at: Some(convert::timestamp(opened.expires_at)),
        }))
    }

    async fn set_portal_branding(
        &self,
        request: Request<proto::SetPortalBrandingRequest>,
    ) -> Result<Response<proto::SetPortalBrandingResponse>, Status> {
        let actor = self.auth.authorize(&request, "SetPortalBranding").await?;
        let raw = request.into_inner().branding.unwrap_or_default();
        let tenant = Tenant::parse_or(&raw.tenant, self.admin.default_tenant())
            .map_err(|error| convert::invalid_field("branding.tenant", error))?;
        let branding = crate::domain::session::PortalBranding::parse(
            tenant,
            &raw.product_name,
            &raw.logo_url,
            &raw.accent_color,
        )
        .map_err(|errors| {
            let mut violations = Violations::default();
            for (field, error) in errors {
                violations.add(format!("branding.{field}"), error.to_string());
            }
            violations.finish::<()>(None).err().unwrap_or_else(|| {
                crate::grpc::status::internal("branding parsing lost its violations")
            })
        })?;
        actor.require_tenant(&branding.tenant)?;
        let stored = self.admin.set_portal_branding(&actor, branding).await?;
        Ok(Response::new(proto::SetPortalBrandingResponse {
            branding: Some(convert::portal_branding(&stored)),
        }))
    }

    async fn get_portal_branding(
        &self,
        request: Request<proto::GetPortalBrandingRequest>,
    ) -> Result<Response<proto::GetPortalBrandingResponse>, Status> {
        let actor = self.auth.authorize(&request, "GetPortalBranding").await?;
        let tenant = Tenant::parse_or(&request.get_ref().tenant, self.admin.default_tenant())
            .map_err(|error| convert::invalid_field("tenant", error))?;
        actor.require_tenant(&tenant)?;
        let branding = self.admin.portal_branding(&tenant).await?;
        Ok(Response::new(proto::GetPortalBrandingResponse {
            branding: Some(convert::portal_branding(&branding)),
        }))
    }

    async fn create_webhook(
        &self,
        request: Request<proto::CreateWebhookRequest>,
    ) -> Result<Response<proto::CreateWebhookResponse>, Status> {
        let actor = self.auth.authorize(&request, "CreateWebhook").await?;
        let command = convert::create_webhook(
            request.into_inner(),
            self.admin.default_tenant(),
            self.admin.webhook_rule(),
        )?;
        actor.require_tenant(&command.tenant)?;
        let issued = self.admin.create_webhook(&actor, command).await?;
        Ok(Response::new(proto::CreateWebhookResponse {
            webhook: Some(convert::webhook(&issued.webhook)),
            secret: secrecy::ExposeSecret::expose_secret(&issued.secret).to_owned(),
        }))
    }

    async fn list_webhooks(
        &self,
        request: Request<proto::ListWebhooksRequest>,
    ) -> Result<Response<proto::ListWebhooksResponse>, Status> {
        let actor = self.auth.authorize(&request, "ListWebhooks").await?;
        let request = request.into_inner();
        let (tenant, page_size, after) = parse_tenant_page(
            &request.tenant,
            request.page_size,
            &request.page_token,
            self.admin.default_tenant(),
            |text| crate::domain::webhook::WebhookId::parse(text).ok(),
        )?;
        actor.require_tenant(&tenant)?;
        let page = self
            .admin
            .list_webhooks(&actor, &tenant, page_size, after)
            .await?;
        Ok(Response::new(proto::ListWebhooksResponse {
            webhooks: page.items.iter().map(convert::webhook).collect(),
            next_page_token: convert::next_page_token(page.next),
        }))
    }

    async fn update_webhook(
        &self,
        request: Request<proto::UpdateWebhookRequest>,
    ) -> Result<Response<proto::UpdateWebhookResponse>, Status> {
        let actor = self.auth.authorize(&request, "UpdateWebhook").await?;
        let (id, changes) =
            convert::update_webhook(request.into_inner(), self.admin.webhook_rule())?;
        let webhook = self.admin.update_webhook(&actor, &id, changes).await?;
        Ok(Response::new(proto::UpdateWebhookResponse {
            webhook: Some(convert::webhook(&webhook)),
        }))
    }

    async fn delete_webhook(
        &self,
        request: Request<proto::DeleteWebhookRequest>,
    ) -> Result<Response<proto::DeleteWebhookResponse>, Status> {
        let actor = self.auth.authorize(&request, "DeleteWebhook").await?;
        let mut violations = Violations::default();
        let id = violations.webhook_id("id", &request.get_ref().id);
        let id = violations.finish(id)?;
        let webhook = self.admin.delete_webhook(&actor, &id).await?;
        Ok(Response::new(proto::DeleteWebhookResponse {
            webhook: Some(convert::webhook(&webhook)),
        }))
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<proto::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<proto::ListWebhookDeliveriesResponse>, Status> {
        let actor = self
            .auth
            .authorize(&request, "ListWebhookDeliveries")
            .await?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let id = violations.webhook_id("webhook_id", &request.webhook_id);
        let page_size = violations.page_size(request.page_size);
        let before = violations.page_token(&request.page_token, |text| text.parse::<i64>().ok());
        let parsed = (|| Some((id?, page_size?, before?)))();
        let (id, page_size, before) = violations.finish(parsed)?;
        let page = self
            .admin
            .list_webhook_deliveries(&actor, &id, page_size, before)
            .await?;
        Ok(Response::new(proto::ListWebhookDeliveriesResponse {
            deliveries: page.items.iter().map(convert::webhook_delivery).collect(),
            next_page_token: convert::next_page_token(page.next),
        }))
    }

    type WatchEventsStream = std::pin::Pin<
        Box<
            dyn tokio_stream::Stream<Item = Result<proto::WatchEventsResponse, Status>>
                + Send
                + 'static,
        >,
    >;

    async fn watch_events(
        &self,
        request: Request<proto::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let actor = self.auth.authorize(&request, "WatchEvents").await?;
        let (scope, after) = parse_watch(request.get_ref(), &actor, self.admin.default_tenant())?;
        let events = self.events.watch(scope, after.as_ref()).await?;
        let events = tokio_stream::wrappers::ReceiverStream::new(events).map(|item| {
            item.map(|event| proto::WatchEventsResponse {
                event: Some(convert::event(&event)),
            })
            .map_err(Status::from)
        });
        // The key is checked again while the stream runs, so revoking it (or its expiry) ends
        // the stream with the same UNAUTHENTICATED a new call would get; tonic ends a stream at
        // its first error.
        let auth = self.auth.clone();
        let metadata = request.metadata().clone();
        let key_refused = tokio_stream::once(()).then(move |()| {
            let (auth, metadata) = (auth.clone(), metadata.clone());
            async move {
                loop {
                    tokio::time::sleep(WATCH_REAUTHORIZE_EVERY).await;
                    let probe =
                        Request::from_parts(metadata.clone(), tonic::Extensions::default(), ());
                    auth.authorize(&probe, "WatchEvents").await?;
                }
            }
        });
        // The stream ends when its events end (shutdown, a store error), whatever the check.
        let events = events.map(Some).chain(tokio_stream::once(None));
        let stream = events.merge(key_refused.map(Some)).map_while(|item| item);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// A WatchEventsRequest's scope, within the admin key's tenants, and its cursor; or
/// INVALID_ARGUMENT naming each bad field, PERMISSION_DENIED for a tenant outside the key's.
fn parse_watch(
    request: &proto::WatchEventsRequest,
    actor: &admin::Actor,
    default_tenant: &Tenant,
) -> Result<(WatchScope, Option<EventId>), Status> {
    let mut violations = Violations::default();
    let tenant = if request.all_tenants {
        None
    } else if request.tenant.is_empty() {
        Some(default_tenant.clone())
    } else {
        violations.check("tenant", Tenant::parse(&request.tenant))
    };
    let types = match parse_event_types(&request.event_types) {
        Ok(types) => Some(types),
        Err(index) => {
            violations.add(
                format!("event_types[{index}]"),
                "must be an event type such as token.created (at most 32)",
            );
            None
        }
    };
    let after = if request.after_event_id.is_empty() {
        Some(None)
    } else {
        match EventId::parse(&request.after_event_id) {
            Some(id) => Some(Some(id)),
            None => {
                violations.add("after_event_id", "must be an event id (evt_…)");
                None
            }
        }
    };
    let (types, after) = violations.finish(types.zip(after))?;
    let tenants = match tenant {
        Some(tenant) => {
            actor.require_tenant(&tenant)?;
            Some(vec![tenant])
        }
        None => actor
            .tenants
            .tenants()
            .map(|scoped| scoped.iter().cloned().collect()),
    };
    Ok((WatchScope { tenants, types }, after))
}

/// An AddCreditsRequest's token id and amount, or INVALID_ARGUMENT naming each bad field.
fn parse_add_credits(
    request: &proto::AddCreditsRequest,
) -> Result<(TokenId, CreditAmount), Status> {
    let mut violations = Violations::default();
    let id = convert::token_id(&mut violations, "id", &request.id);
    let amount = violations.check("amount", CreditAmount::parse(request.amount));
    violations.finish(id.zip(amount))
}
