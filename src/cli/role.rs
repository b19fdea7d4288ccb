//! `tessera role upsert|get|list|delete`.

use tessera::proto;

use super::connect::admin_client;
use super::error::{CliError, answer};
use super::record::{Field, Record};
use super::{ClientArgs, Report, table};

#[derive(Debug, clap::Subcommand)]
pub enum RoleCommand {
    /// Create or replace a role: a named set of permissions within a tenant.
    Upsert {
        /// The role's name: letters, digits, `_`, `-`, `.`.
        name: String,
        /// Tenant [default: the server's default tenant].
        #[arg(long)]
        tenant: Option<String>,
        /// A permission the role grants, repeatable or comma-separated.
        #[arg(
            long = "permission",
            value_name = "PERMISSION",
            value_delimiter = ',',
            required = true
        )]
        permissions: Vec<String>,
    },
    /// Show a role.
    Get {
        /// The role's name.
        name: String,
        /// Tenant [default: the server's default tenant].
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List a tenant's roles, by name.
    List {
        /// Tenant [default: the server's default tenant].
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Delete a role; refused while a token that is not revoked names it (take the role off
    /// those tokens with `token update --role`/`--clear-roles`, or revoke them, first).
    Delete {
        /// The role's name.
        name: String,
        /// Tenant [default: the server's default tenant].
        #[arg(long)]
        tenant: Option<String>,
    },
}

pub(super) async fn run(args: &ClientArgs, command: RoleCommand) -> Result<Report, CliError> {
    let mut client = admin_client(args).await?;
    match command {
        RoleCommand::Upsert {
            name,
            tenant,
            permissions,
        } => {
            let request = proto::UpsertRoleRequest {
                tenant: tenant.unwrap_or_default(),
                name,
                permissions,
            };
            let role = answer("UpsertRole", client.upsert_role(request).await)?.role;
            Ok(Report::single("role", role.as_ref().map(Record::from)))
        }
        RoleCommand::Get { name, tenant } => {
            let request = proto::GetRoleRequest {
                tenant: tenant.unwrap_or_default(),
                name,
            };
            let role = answer("GetRole", client.get_role(request).await)?.role;
            Ok(Report::single("role", role.as_ref().map(Record::from)))
        }
        RoleCommand::Delete { name, tenant } => {
            let request = proto::DeleteRoleRequest {
                tenant: tenant.unwrap_or_default(),
                name,
            };
            let role = answer("DeleteRole", client.delete_role(request).await)?.role;
            let mut report = Report::single("role", role.as_ref().map(Record::from));
            if let Some(role) = &role {
                report.human = format!(
                    "deleted role {} of tenant {}\n{}",
                    role.name, role.tenant, report.human
                );
            }
            Ok(report)
        }
        RoleCommand::List { tenant } => {
            let request = proto::ListRolesRequest {
                tenant: tenant.unwrap_or_default(),
            };
            let response = answer("ListRoles", client.list_roles(request).await)?;
            let roles: Vec<Record> = response.roles.iter().map(Record::from).collect();
            let human = table::list(&roles, &["name", "permissions", "updated_at"]);
            let json = Record::default()
                .with("roles", Field::Messages(roles))
                .to_json();
            Ok(Report::new(json, human))
        }
    }
}
