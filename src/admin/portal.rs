//! The console's and the self-service portal's admin side (issue 18): a console sign-in,
//! CreatePortalSession, which opens a session for one principal behind a one-time code, and a
//! tenant's branding. The pages themselves are in src/console/.

use chrono::{DateTime, Duration, Utc};
use secrecy::SecretString;

use super::{Actor, Admin, AdminError, audit};
use crate::domain::fields::{PrincipalId, Tenant};
use crate::domain::session::{
    self, CONSOLE_ABSOLUTE_TTL, NewSession, PortalBranding, SessionId, SessionKind,
};
use crate::domain::token::SecretHash;

/// A CreatePortalSession as the admin layer takes it (fields already parsed).
#[derive(Debug, Clone)]
pub struct OpenPortal {
    pub tenant: Tenant,
    pub principal_id: PrincipalId,
    pub return_url: String,
    pub ttl: Duration,
}

/// An opened portal session: the one-time code exists only here and in the URL made of it.
#[derive(Debug)]
pub struct OpenedPortal {
    pub id: SessionId,
    pub code: SecretString,
    pub expires_at: DateTime<Utc>,
}

/// The name audit entries give a portal user acting on `principal`'s tokens.
pub fn portal_actor_name(principal: &PrincipalId) -> String {
    format!("portal:{principal}")
}

impl Admin {
    /// Stores a console session for `actor`, who signed in with the admin key whose SHA-256 is
    /// `admin_key_hash`, audited as `console.sign_in`; the cookie's secret exists only in the
    /// answer.
    pub async fn sign_in_console(
        &self,
        actor: &Actor,
        admin_key_hash: SecretHash,
    ) -> Result<(SessionId, SecretString), AdminError> {
        let now = Utc::now();
        let (secret, secret_hash) = session::new_secret();
        let new = NewSession {
            id: SessionId::generate(),
            kind: SessionKind::Console { admin_key_hash },
            actor: actor.name.clone(),
            secret_hash: Some(secret_hash),
            code_hash: None,
            created_at: now,
            expires_at: now + CONSOLE_ABSOLUTE_TTL,
        };
        let mut event = audit(actor, "console.sign_in", "", now);
        event.summary = format!("console session {} signed in", new.id);
        self.store.create_session(&new, &event).await?;
        tracing::info!(session_id = %new.id, "console sign-in");
        Ok((new.id, secret))
    }

    /// Stores a portal session for a principal that exists and is not disabled, with its audit
    /// entry; the code is exchanged at /portal/ for a cookie, once.
    pub async fn create_portal_session(
        &self,
        actor: &Actor,
        open: OpenPortal,
    ) -> Result<OpenedPortal, AdminError> {
        let principal = self
            .store
            .get_principal(&open.tenant, &open.principal_id)
            .await?;
        if principal.disabled {
            return Err(AdminError::InvalidField {
                field: "principal_id".to_owned(),
                description: "the principal is disabled".to_owned(),
            });
        }
        let now = Utc::now();
        let (code, code_hash) = session::new_secret();
        let new = NewSession {
            id: SessionId::generate(),
            kind: SessionKind::Portal {
                tenant: open.tenant.clone(),
                principal_id: open.principal_id.clone(),
                return_url: open.return_url,
            },
            actor: portal_actor_name(&open.principal_id),
            secret_hash: None,
            code_hash: Some(code_hash),
            created_at: now,
            expires_at: now + open.ttl,
        };
        let mut event = audit(actor, "portal_session.create", open.tenant.as_str(), now);
        event.principal_id = Some(open.principal_id.clone());
        event.summary = format!(
            "portal session {} for {} until {}",
            new.id,
            open.principal_id,
            new.expires_at.to_rfc3339()
        );
        self.store.create_session(&new, &event).await?;
        tracing::info!(session_id = %new.id, tenant = %open.tenant, principal_id = %open.principal_id, "portal session created");
        Ok(OpenedPortal {
            id: new.id,
            code,
            expires_at: new.expires_at,
        })
    }

    /// Sets a tenant's portal branding, audited.
    pub async fn set_portal_branding(
        &self,
        actor: &Actor,
        branding: PortalBranding,
    ) -> Result<PortalBranding, AdminError> {
        let now = Utc::now();
        let mut event = audit(actor, "portal_branding.set", branding.tenant.as_str(), now);
        event.summary = format!(
            "portal branding: name {:?}, logo {}, accent {}",
            branding.product_name,
            if branding.logo_url.is_empty() {
                "none"
            } else {
                "set"
            },
            if branding.accent_color.is_empty() {
                "default"
            } else {
                branding.accent_color.as_str()
            }
        );
        Ok(self
            .store
            .set_portal_branding(&branding, now, &event)
            .await?)
    }

    /// A tenant's portal branding, Tessera's own when it set none.
    pub async fn portal_branding(&self, tenant: &Tenant) -> Result<PortalBranding, AdminError> {
        Ok(self
            .store
            .get_portal_branding(tenant)
            .await?
            .unwrap_or_else(|| PortalBranding::default_for(tenant.clone())))
    }
}
