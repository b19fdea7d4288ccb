//! Cache invalidation events, published after each committed write so every replica drops what
//! the write made stale. On Postgres they travel by NOTIFY on one channel; SQLite is single-node
//! and needs only the local invalidation.

use serde::{Deserialize, Serialize};

use crate::domain::admin_key::AdminKeyId;
use crate::domain::fields::{ApiScope, PrincipalId, RoleName, Tenant, TokenId};
use crate::domain::token::SecretHash;

/// The NOTIFY channel every replica LISTENs on.
pub const CHANNEL: &str = "tessera_invalidation";

/// The longest payload published as it is. Postgres refuses a NOTIFY payload of 8000 bytes or
/// more (and the channel name counts against the same buffer); a larger invalidation is sent in
/// a coarser form (`Invalidation::coarser`) instead of not at all.
pub const MAX_PAYLOAD_BYTES: usize = 7000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// Entries of these secret hashes (a token's current and retired secrets, or a new one that
    /// may be cached as unknown).
    Secrets(Vec<SecretHash>),
    /// Entries of these secret hashes of one token: its current and retired secrets after a
    /// write of it. Its coarser form is `Token`.
    TokenSecrets {
        token_id: TokenId,
        hashes: Vec<SecretHash>,
    },
    /// Every entry of this token, and every hash cached as unknown (one of them may be the
    /// token's new secret): what is sent when its hashes do not fit in one notification.
    Token(TokenId),
    /// Every entry of tokens owned by this principal (its ceiling, disabled flag or limit changed).
    Owner {
        tenant: Tenant,
        owner_id: PrincipalId,
    },
    /// Every entry of tokens holding this role (its grants changed).
    Role {
        tenant: Tenant,
        name: RoleName,
    },
    ApiStatus(ApiScope),
    /// An admin key was revoked: every replica forgets the admin keys it holds in memory
    /// (`grpc::auth`), so the next call with it is looked up and refused.
    AdminKey(AdminKeyId),
    /// Every entry of tokens of this tenant: its token policy changed (SetTenantPolicy).
    TenantPolicy(Tenant),
    /// Everything, e.g. after a replica may have missed events.
    Everything,
}

/// The wire form: small JSON; up to about 100 hashes fit under `MAX_PAYLOAD_BYTES`. Kinds an
/// older replica does not know decode there as `Everything`, so a rolling upgrade stays safe.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Wire {
    Secrets {
        hashes: Vec<String>,
    },
    TokenSecrets {
        token_id: String,
        hashes: Vec<String>,
    },
    Token {
        token_id: String,
    },
    Owner {
        tenant: String,
        owner_id: String,
    },
    Role {
        tenant: String,
        name: String,
    },
    ApiStatus {
        scope: String,
    },
    AdminKey {
        id: String,
    },
    TenantPolicy {
        tenant: String,
    },
    Everything,
}

impl Invalidation {
    /// The same invalidation in a form that drops more and is smaller: a token's secrets become
    /// the token, anything else everything. `Everything` is its own coarser form.
    pub fn coarser(&self) -> Self {
        match self {
            Self::TokenSecrets { token_id, .. } => Self::Token(token_id.clone()),
            _ => Self::Everything,
        }
    }

    /// A short name of the kind, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Secrets(_) => "secrets",
            Self::TokenSecrets { .. } => "token_secrets",
            Self::Token(_) => "token",
            Self::Owner { .. } => "owner",
            Self::Role { .. } => "role",
            Self::ApiStatus(_) => "api_status",
            Self::AdminKey(_) => "admin_key",
            Self::TenantPolicy(_) => "tenant_policy",
            Self::Everything => "everything",
        }
    }

    /// The payload to publish: this invalidation encoded, or when that is longer than
    /// `max_bytes` the first coarser form that fits, with the form it fell back to.
    /// `Everything` always fits.
    pub fn encode_within(&self, max_bytes: usize) -> (String, Option<Invalidation>) {
        let payload = self.encode();
        if payload.len() <= max_bytes {
            return (payload, None);
        }
        let mut coarser = self.coarser();
        loop {
            let payload = coarser.encode();
            if payload.len() <= max_bytes || coarser == Self::Everything {
                return (payload, Some(coarser));
            }
            coarser = coarser.coarser();
        }
    }

    pub fn encode(&self) -> String {
        let wire = match self {
            Self::Secrets(hashes) => Wire::Secrets {
                hashes: hashes.iter().map(SecretHash::to_hex).collect(),
            },
            Self::TokenSecrets { token_id, hashes } => Wire::TokenSecrets {
                token_id: token_id.to_string(),
                hashes: hashes.iter().map(SecretHash::to_hex).collect(),
            },
            Self::Token(token_id) => Wire::Token {
                token_id: token_id.to_string(),
            },
            Self::Owner { tenant, owner_id } => Wire::Owner {
                tenant: tenant.to_string(),
                owner_id: owner_id.to_string(),
            },
            Self::Role { tenant, name } => Wire::Role {
                tenant: tenant.to_string(),
                name: name.to_string(),
            },
            Self::ApiStatus(scope) => Wire::ApiStatus {
                scope: scope.to_string(),
            },
            Self::AdminKey(id) => Wire::AdminKey { id: id.to_string() },
            Self::TenantPolicy(tenant) => Wire::TenantPolicy {
                tenant: tenant.to_string(),
            },
            Self::Everything => Wire::Everything,
        };
        // Serialising these plain structs cannot fail; an empty payload would mean "everything".
        serde_json::to_string(&wire).unwrap_or_default()
    }

    /// Parses a payload; anything unreadable becomes `Everything`, the safe reading.
    pub fn decode(payload: &str) -> Self {
        let Ok(wire) = serde_json::from_str::<Wire>(payload) else {
            return Self::Everything;
        };
        let parsed = match wire {
            Wire::Secrets { hashes } => decode_hashes(&hashes).map(Self::Secrets),
            Wire::TokenSecrets { token_id, hashes } => TokenId::parse(&token_id)
                .ok()
                .zip(decode_hashes(&hashes))
                .map(|(token_id, hashes)| Self::TokenSecrets { token_id, hashes }),
            Wire::Token { token_id } => TokenId::parse(&token_id).ok().map(Self::Token),
            Wire::Owner { tenant, owner_id } => Tenant::parse(&tenant)
                .ok()
                .zip(PrincipalId::parse(&owner_id).ok())
                .map(|(tenant, owner_id)| Self::Owner { tenant, owner_id }),
            Wire::Role { tenant, name } => Tenant::parse(&tenant)
                .ok()
                .zip(RoleName::parse(&name).ok())
                .map(|(tenant, name)| Self::Role { tenant, name }),
            Wire::ApiStatus { scope } => ApiScope::parse(&scope).ok().map(Self::ApiStatus),
            Wire::AdminKey { id } => AdminKeyId::parse(&id).ok().map(Self::AdminKey),
            Wire::TenantPolicy { tenant } => Tenant::parse(&tenant).ok().map(Self::TenantPolicy),
            Wire::Everything => Some(Self::Everything),
        };
        parsed.unwrap_or(Self::Everything)
    }
}

/// Hex hashes, or None if any is not one.
fn decode_hashes(hashes: &[String]) -> Option<Vec<SecretHash>> {
    hashes
        .iter()
        .map(|hex| {
            hex::decode(hex)
                .ok()
                .and_then(|bytes| SecretHash::from_slice(&bytes))
        })
        .collect()
}

/// Whatever holds cached state: told of each invalidation, local or from another replica.
#[async_trait::async_trait]
pub trait InvalidationSink: Send + Sync + 'static {
    async fn invalidate(&self, invalidation: &Invalidation);

    /// The feed of events from other replicas was interrupted and is back: anything may be stale.
    async fn invalidate_all(&self) {
        self.invalidate(&Invalidation::Everything).await;
    }
}

/// Several sinks told of every invalidation, in order: a replica's Check cache and its admin
/// keys hear of the same writes through one feed.
pub struct Sinks(pub Vec<std::sync::Arc<dyn InvalidationSink>>);

#[async_trait::async_trait]
impl InvalidationSink for Sinks {
    async fn invalidate(&self, invalidation: &Invalidation) {
        for sink in &self.0 {
            sink.invalidate(invalidation).await;
        }
    }

    async fn invalidate_all(&self) {
        for sink in &self.0 {
            sink.invalidate_all().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_invalidation_survives_the_wire() {
        let events = vec![
            Invalidation::Secrets(vec![SecretHash::of("a"), SecretHash::of("b")]),
            Invalidation::TokenSecrets {
                token_id: TokenId::generate(),
                hashes: vec![SecretHash::of("a")],
            },
            Invalidation::Token(TokenId::generate()),
            Invalidation::Owner {
                tenant: Tenant::parse("acme").expect("tenant"),
                owner_id: PrincipalId::parse("alice").expect("id"),
            },
            Invalidation::Role {
                tenant: Tenant::default(),
                name: RoleName::parse("reporting").expect("role"),
            },
            Invalidation::ApiStatus(ApiScope::all()),
            Invalidation::AdminKey(AdminKeyId::generate()),
            Invalidation::TenantPolicy(Tenant::parse("acme").expect("tenant")),
            Invalidation::Everything,
        ];
        for event in events {
            assert_eq!(Invalidation::decode(&event.encode()), event);
        }
    }

    #[test]
    fn a_token_whose_hashes_do_not_fit_is_invalidated_by_its_id() {
        let token_id = TokenId::generate();
        let hashes = (0..200)
            .map(|n| SecretHash::of(&format!("tsk_{n}")))
            .collect();
        let invalidation = Invalidation::TokenSecrets {
            token_id: token_id.clone(),
            hashes,
        };
        assert!(invalidation.encode().len() > 8000);

        let (payload, fell_back_to) = invalidation.encode_within(MAX_PAYLOAD_BYTES);

        assert!(payload.len() <= MAX_PAYLOAD_BYTES);
        assert_eq!(fell_back_to, Some(Invalidation::Token(token_id.clone())));
        assert_eq!(
            Invalidation::decode(&payload),
            Invalidation::Token(token_id)
        );
    }

    #[test]
    fn secrets_that_do_not_fit_invalidate_everything() {
        let hashes = (0..200)
            .map(|n| SecretHash::of(&format!("tsk_{n}")))
            .collect();
        let (payload, fell_back_to) =
            Invalidation::Secrets(hashes).encode_within(MAX_PAYLOAD_BYTES);

        assert_eq!(fell_back_to, Some(Invalidation::Everything));
        assert_eq!(Invalidation::decode(&payload), Invalidation::Everything);
    }

    #[test]
    fn an_invalidation_that_fits_is_sent_as_it_is() {
        let invalidation = Invalidation::TokenSecrets {
            token_id: TokenId::generate(),
            hashes: vec![SecretHash::of("a")],
        };
        let (payload, fell_back_to) = invalidation.encode_within(MAX_PAYLOAD_BYTES);
        assert_eq!(fell_back_to, None);
        assert_eq!(Invalidation::decode(&payload), invalidation);
    }

    #[test]
    fn an_unreadable_payload_invalidates_everything() {
        assert_eq!(Invalidation::decode("{not json"), Invalidation::Everything);
        assert_eq!(
            Invalidation::decode(r#"{"kind":"secrets","hashes":["zz"]}"#),
            Invalidation::Everything
        );
    }
}
