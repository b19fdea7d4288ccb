//! Admin authentication: `authorization: Bearer <admin key>`, compared by SHA-256.
//!
//! Admin keys and API tokens live in different tables and are checked by different code, so an
//! API token is never accepted as an admin key (and an admin key's `tsa` prefix fails Check's
//! parse).

use std::sync::Arc;
use std::time::Duration;

use subtle::ConstantTimeEq;
use tonic::Request;
use tonic::metadata::MetadataMap;

use crate::admin::Actor;
use crate::domain::token::SecretHash;
use crate::grpc::status;
use crate::store::Store;

const ACTOR_HEADER: &str = "x-tessera-actor";
const MAX_ACTOR_LEN: usize = 128;

pub struct AdminAuth {
    /// Hashes of the keys from settings; bootstrap keys are looked up in the store.
    configured: Vec<SecretHash>,
    store: Arc<dyn Store>,
    /// How long a stored key's lookup may take (`PoolOptions::call_deadline`).
    store_deadline: Duration,
}

impl AdminAuth {
    pub fn new(
        configured: Vec<SecretHash>,
        store: Arc<dyn Store>,
        store_deadline: Duration,
    ) -> Self {
        Self {
            configured,
            store,
            store_deadline,
        }
    }

    /// The actor of an authenticated call, or UNAUTHENTICATED.
    pub async fn authenticate<T>(&self, request: &Request<T>) -> Result<Actor, tonic::Status> {
        let metadata = request.metadata();
        let key = bearer(metadata).ok_or_else(|| {
            status::unauthenticated(
                "missing admin key: send metadata `authorization: Bearer <admin key>`",
            )
        })?;
        let hash = SecretHash::of(key);
        // Compare every configured hash in constant time, so timing tells nothing about keys.
        let configured = self
            .configured
            .iter()
            .fold(subtle::Choice::from(0), |found, known| {
                found | known.0.ct_eq(&hash.0)
            });
        let known = bool::from(configured)
            || crate::store::within(self.store_deadline, self.store.is_admin_key(&hash))
                .await
                .map_err(|error| status::unavailable("admin key lookup", &error))?;
        if !known {
            tracing::warn!("admin call with an unknown key");
            return Err(status::unauthenticated("the admin key was rejected"));
        }
        actor(metadata, &hash)
    }
}

fn bearer(metadata: &MetadataMap) -> Option<&str> {
    let value = metadata.get("authorization")?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then_some(key)
}

/// The human named by `x-tessera-actor` (else the key's fingerprint), and the key's fingerprint:
/// the audit log keeps both, so a claimed name never hides which key acted.
fn actor(metadata: &MetadataMap, key_hash: &SecretHash) -> Result<Actor, tonic::Status> {
    let admin_key = format!("admin-key:{}", &key_hash.to_hex()[..8]);
    let Some(raw) = metadata.get(ACTOR_HEADER) else {
        return Ok(Actor {
            name: admin_key.clone(),
            admin_key,
        });
    };
    // Metadata is visible ASCII or tab; a tab is refused too, so the name prints as it reads.
    let valid = raw.to_str().ok().map(str::trim).filter(|name| {
        !name.is_empty()
            && name.chars().count() <= MAX_ACTOR_LEN
            && !name.chars().any(char::is_control)
    });
    match valid {
        Some(name) => Ok(Actor {
            name: name.to_owned(),
            admin_key,
        }),
        None => Err(status::invalid_argument(vec![
            tonic_types::FieldViolation::new(
                ACTOR_HEADER,
                format!("must be 1 to {MAX_ACTOR_LEN} printable characters"),
            ),
        ])),
    }
}
