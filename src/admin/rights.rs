//! The one table of TokenAdminService RPC → the right it needs, and which role holds which
//! right. A new RPC without a row here is refused by every key (the unit test below fails first:
//! it reads the RPCs from the service descriptor compiled from `proto/`).
//!
//! Rights say what a key may do; its tenants say where (`admin::Actor`). Each role holds every
//! right of the roles below it.

use crate::domain::admin_key::AdminRole;

/// What an admin call needs, named in a PERMISSION_DENIED when the key's role lacks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    /// Get and list tokens, principals, roles, API status; usage; the audit log.
    Read,
    /// Create, update, rotate, suspend, resume and revoke tokens.
    WriteTokens,
    /// Create and change principals.
    WritePrincipals,
    /// Create, change and delete roles.
    WriteRoles,
    /// Switch an API online or offline.
    WriteApiStatus,
    /// Get and list admin keys.
    ReadAdminKeys,
    /// Create and revoke admin keys.
    WriteAdminKeys,
    /// Set a tenant's token policy.
    WriteTenantPolicy,
    /// Create, change and delete webhooks: they send a tenant's events to a URL of the caller's
    /// choosing.
    WriteWebhooks,
    /// Set how a tenant's self-service portal looks.
    WritePortalBranding,
}

impl Right {
    /// The right's name, as a PERMISSION_DENIED's ErrorInfo carries it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::WriteTokens => "tokens.write",
            Self::WritePrincipals => "principals.write",
            Self::WriteRoles => "roles.write",
            Self::WriteApiStatus => "api_status.write",
            Self::ReadAdminKeys => "admin_keys.read",
            Self::WriteAdminKeys => "admin_keys.write",
            Self::WriteTenantPolicy => "tenant_policy.write",
            Self::WriteWebhooks => "webhooks.write",
            Self::WritePortalBranding => "portal_branding.write",
        }
    }

    /// The least role that holds this right.
    pub fn least_role(self) -> AdminRole {
        match self {
            Self::Read => AdminRole::Viewer,
            Self::WriteTokens | Self::WritePrincipals | Self::WriteRoles => AdminRole::TokenManager,
            // The policy bounds what token managers may create, so they cannot loosen it.
            Self::WriteApiStatus
            | Self::ReadAdminKeys
            | Self::WriteAdminKeys
            | Self::WriteTenantPolicy
            // A webhook sends the tenant's events out of the platform.
            | Self::WriteWebhooks
            // The portal is the platform's face to its users.
            | Self::WritePortalBranding => AdminRole::Owner,
        }
    }

    pub fn held_by(self, role: AdminRole) -> bool {
        role >= self.least_role()
    }
}

/// Every TokenAdminService RPC (the proto's method name) and the right it needs.
pub const RIGHTS: &[(&str, Right)] = &[
    ("CreateToken", Right::WriteTokens),
    ("GetToken", Right::Read),
    ("ListTokens", Right::Read),
    ("UpdateToken", Right::WriteTokens),
    ("RotateToken", Right::WriteTokens),
    ("RevokeToken", Right::WriteTokens),
    ("ListUsage", Right::Read),
    ("UpsertPrincipal", Right::WritePrincipals),
    ("GetPrincipal", Right::Read),
    ("UpsertRole", Right::WriteRoles),
    ("ListRoles", Right::Read),
    ("SetApiStatus", Right::WriteApiStatus),
    ("GetApiStatus", Right::Read),
    ("ListAuditEvents", Right::Read),
    ("CreateAdminKey", Right::WriteAdminKeys),
    ("ListAdminKeys", Right::ReadAdminKeys),
    ("GetAdminKey", Right::ReadAdminKeys),
    ("RevokeAdminKey", Right::WriteAdminKeys),
    ("UpdatePrincipal", Right::WritePrincipals),
    ("ListPrincipals", Right::Read),
    ("GetRole", Right::Read),
    ("DeleteRole", Right::WriteRoles),
    ("SetTenantPolicy", Right::WriteTenantPolicy),
    ("GetTenantPolicy", Right::Read),
    ("ImportTokens", Right::WriteTokens),
    ("SuspendToken", Right::WriteTokens),
    ("ResumeToken", Right::WriteTokens),
    ("AddCredits", Right::WriteTokens),
    ("CreateWebhook", Right::WriteWebhooks),
    ("ListWebhooks", Right::Read),
    ("UpdateWebhook", Right::WriteWebhooks),
    ("DeleteWebhook", Right::WriteWebhooks),
    ("ListWebhookDeliveries", Right::Read),
    ("WatchEvents", Right::Read),
    // A portal session creates and changes the principal's tokens, as a token manager may.
    ("CreatePortalSession", Right::WriteTokens),
    ("SetPortalBranding", Right::WritePortalBranding),
    ("GetPortalBranding", Right::Read),
];

/// The right `method` needs; None for a method the table does not know (refused).
pub fn of(method: &str) -> Option<Right> {
    RIGHTS
        .iter()
        .find(|(name, _)| *name == method)
        .map(|(_, right)| *right)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use prost::Message;

    use super::*;

    /// The RPCs of TokenAdminService as compiled from `proto/`.
    fn service_methods() -> BTreeSet<String> {
        let set = prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set decodes");
        set.file
            .iter()
            .filter(|file| file.package() == "tessera.v1")
            .flat_map(|file| file.service.iter())
            .filter(|service| service.name() == "TokenAdminService")
            .flat_map(|service| service.method.iter())
            .map(|method| method.name().to_owned())
            .collect()
    }

    #[test]
    fn every_token_admin_rpc_has_exactly_one_right_and_the_table_names_no_other() {
        let methods = service_methods();
        assert!(methods.contains("CreateToken"), "{methods:?}");
        let table: BTreeSet<String> = RIGHTS.iter().map(|(name, _)| (*name).to_owned()).collect();
        assert_eq!(table.len(), RIGHTS.len(), "a method listed twice");
        let missing: Vec<_> = methods.difference(&table).collect();
        assert!(missing.is_empty(), "RPCs without a right: {missing:?}");
        let unknown: Vec<_> = table.difference(&methods).collect();
        assert!(
            unknown.is_empty(),
            "rights for RPCs that do not exist: {unknown:?}"
        );
    }

    #[test]
    fn each_role_holds_the_rights_of_the_roles_below_it() {
        use AdminRole::{Owner, TokenManager, Viewer};
        assert!(Right::Read.held_by(Viewer));
        assert!(!Right::WriteTokens.held_by(Viewer));
        assert!(Right::WriteTokens.held_by(TokenManager));
        assert!(Right::WriteRoles.held_by(TokenManager));
        assert!(!Right::WriteApiStatus.held_by(TokenManager));
        assert!(!Right::ReadAdminKeys.held_by(TokenManager));
        assert!(!Right::WriteTenantPolicy.held_by(TokenManager));
        for (_, right) in RIGHTS {
            assert!(right.held_by(Owner), "{right:?}");
        }
    }
}
