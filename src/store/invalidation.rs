//! Cache invalidation events, published after each committed write so every replica drops what
//! the write made stale. On Postgres they travel by NOTIFY on one channel; SQLite is single-node
//! and needs only the local invalidation.

use serde::{Deserialize, Serialize};

use crate::domain::fields::{ApiScope, PrincipalId, RoleName, Tenant};
use crate::domain::token::SecretHash;

/// The NOTIFY channel every replica LISTENs on.
pub const CHANNEL: &str = "tessera_invalidation";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// Entries of these secret hashes (a token's current and retired secrets, or a new one that
    /// may be cached as unknown).
    Secrets(Vec<SecretHash>),
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
    /// Everything, e.g. after a replica may have missed events.
    Everything,
}

/// The wire form: small JSON, well under NOTIFY's 8000-byte payload limit for up to ~100 hashes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Wire {
    Secrets { hashes: Vec<String> },
    Owner { tenant: String, owner_id: String },
    Role { tenant: String, name: String },
    ApiStatus { scope: String },
    Everything,
}

impl Invalidation {
    pub fn encode(&self) -> String {
        let wire = match self {
            Self::Secrets(hashes) => Wire::Secrets {
                hashes: hashes.iter().map(SecretHash::to_hex).collect(),
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
            Wire::Secrets { hashes } => hashes
                .iter()
                .map(|hex| {
                    hex::decode(hex)
                        .ok()
                        .and_then(|bytes| SecretHash::from_slice(&bytes))
                })
                .collect::<Option<Vec<_>>>()
                .map(Self::Secrets),
            Wire::Owner { tenant, owner_id } => Tenant::parse(&tenant)
                .ok()
                .zip(PrincipalId::parse(&owner_id).ok())
                .map(|(tenant, owner_id)| Self::Owner { tenant, owner_id }),
            Wire::Role { tenant, name } => Tenant::parse(&tenant)
                .ok()
                .zip(RoleName::parse(&name).ok())
                .map(|(tenant, name)| Self::Role { tenant, name }),
            Wire::ApiStatus { scope } => ApiScope::parse(&scope).ok().map(Self::ApiStatus),
            Wire::Everything => Some(Self::Everything),
        };
        parsed.unwrap_or(Self::Everything)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_invalidation_survives_the_wire() {
        let events = vec![
            Invalidation::Secrets(vec![SecretHash::of("a"), SecretHash::of("b")]),
            Invalidation::Owner {
                tenant: Tenant::parse("acme").expect("tenant"),
                owner_id: PrincipalId::parse("alice").expect("id"),
            },
            Invalidation::Role {
                tenant: Tenant::default(),
                name: RoleName::parse("reporting").expect("role"),
            },
            Invalidation::ApiStatus(ApiScope::all()),
            Invalidation::Everything,
        ];
        for event in events {
            assert_eq!(Invalidation::decode(&event.encode()), event);
        }
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
