//! The records Tessera keeps, as the layers above the store see them.

use chrono::{DateTime, Utc};

use super::credits::Credits;
use super::fields::{ApiScope, Description, PrincipalId, RoleName, Tenant, TokenId, TokenName};
use super::metadata::Metadata;
use super::network::IpAllowlist;
use super::permission::Grant;
use super::policy::TenantPolicy;
use super::signature::SealedSigningKey;
use super::token::SecretHash;

/// A token as stored, without its secret (the store keeps only the hash, which this omits too).
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub id: TokenId,
    pub tenant: Tenant,
    pub owner_id: PrincipalId,
    pub name: TokenName,
    pub description: Description,
    pub permissions: Vec<Grant>,
    pub roles: Vec<RoleName>,
    pub allowed_ips: IpAllowlist,
    /// 0 means the server default.
    pub rate_limit_per_minute: u32,
    pub require_signature: bool,
    pub secret_hint: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub rotated_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// Bumped by the store on every admin write of the token (1 at creation); shown as its
    /// etag, so an update can ask to apply only to the version it read.
    pub version: u64,
    /// Usage credits, as stored (apply `Credits::at` for the balance at an instant); None: the
    /// token is not metered.
    pub credits: Option<Credits>,
    /// Whether the current secret was imported by its hash (ImportTokens) rather than generated
    /// by Tessera; a rotation gives the token a Tessera secret and clears it.
    pub imported: bool,
    /// The caller's key-value pairs, returned by an allowed Check.
    pub metadata: Metadata,
    /// The suspension, while the token is suspended (SuspendToken until ResumeToken).
    pub suspension: Option<Suspension>,
}

/// Why and since when a token is suspended.
#[derive(Debug, Clone, PartialEq)]
pub struct Suspension {
    pub at: DateTime<Utc>,
    pub reason: Description,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    Active,
    Expired,
    Revoked,
    Suspended,
}

impl Token {
    pub fn state(&self, now: DateTime<Utc>) -> TokenState {
        if self.revoked_at.is_some() {
            TokenState::Revoked
        } else if self.suspension.is_some() {
            TokenState::Suspended
        } else if self.expires_at <= now {
            TokenState::Expired
        } else {
            TokenState::Active
        }
    }

    /// Where the current expiry window began: the last rotation, else creation.
    pub fn window_start(&self) -> DateTime<Utc> {
        self.rotated_at.unwrap_or(self.created_at)
    }
}

/// Everything needed to insert a new token; the admin layer has validated every field.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub token: Token,
    pub secret_hash: SecretHash,
    /// Present exactly when the token requires signatures.
    pub signing_key: Option<SealedSigningKey>,
}

/// A principal: the owner of tokens, whose permissions cap theirs.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub tenant: Tenant,
    pub id: PrincipalId,
    pub permissions: Vec<Grant>,
    pub disabled: bool,
    pub rate_limit_per_minute: Option<u32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Role {
    pub tenant: Tenant,
    pub name: RoleName,
    pub permissions: Vec<Grant>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiStatus {
    pub scope: ApiScope,
    pub online: bool,
    pub message: String,
    /// None when the status was never set (then the API is online).
    pub updated_at: Option<DateTime<Utc>>,
}

impl ApiStatus {
    pub fn never_set(scope: ApiScope) -> Self {
        Self {
            scope,
            online: true,
            message: String::new(),
            updated_at: None,
        }
    }
}

/// One admin mutation, written in the same transaction as the mutation itself.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// Assigned by the store; 0 before insertion.
    pub id: i64,
    pub time: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub tenant: String,
    pub token_id: Option<TokenId>,
    pub principal_id: Option<PrincipalId>,
    pub summary: String,
    /// The fingerprint of the admin key that made the call (`actor` is who the caller claims to
    /// be); empty for the server's own events.
    pub admin_key: String,
}

/// How a presented secret relates to the token it was found under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretMatch {
    /// The token's current secret.
    Current,
    /// A secret that was rotated away; it works until `grace_until`, then is treated as revoked.
    Retired { grace_until: DateTime<Utc> },
}

/// What the store returns for a secret hash: the token, how the secret matched, and what Check
/// needs about its owner and roles, in one read.
#[derive(Debug, Clone, PartialEq)]
pub struct CredentialRecord {
    pub token: Token,
    pub secret_match: SecretMatch,
    /// None when the owner no longer exists, which Check treats as disabled.
    pub owner: Option<Principal>,
    /// The token's roles that exist, with their grants.
    pub roles: Vec<Role>,
    /// The signing key that goes with this secret (a retired secret keeps the key it had).
    pub signing_key: Option<SealedSigningKey>,
    /// The token's tenant's policy, when one is set.
    pub policy: Option<TenantPolicy>,
}
