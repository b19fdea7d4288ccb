//! `tessera principal upsert|update|get|list`.

use prost_types::FieldMask;
use tessera::proto;

use super::connect::admin_client;
use super::error::{CliError, answer};
use super::page::{self, Page, PageArgs};
use super::record::Record;
use super::{ClientArgs, Report};

/// Columns of `principal list`.
const LIST_COLUMNS: &[&str] = &[
    "id",
    "permissions",
    "disabled",
    "rate_limit_per_minute",
    "updated_at",
];

#[derive(Debug, clap::Subcommand)]
pub enum PrincipalCommand {
    /// Create or replace a principal: its whole permission set, disabled flag and rate limit
    /// (what is not given is reset; to change one field, use `principal update`).
    Upsert {
        /// The principal's id in the platform.
        id: String,
        /// Tenant [default: the server's default tenant].
        #[arg(long)]
        tenant: Option<String>,
        /// A permission, repeatable or comma-separated; the ceiling of all its tokens.
        #[arg(long = "permission", value_name = "PERMISSION", value_delimiter = ',')]
        permissions: Vec<String>,
        /// Disable the principal, which stops all its tokens at once.
        #[arg(long)]
        disabled: bool,
        /// Requests per minute shared by all its tokens [default: no shared limit].
        #[arg(long, value_name = "PER_MINUTE")]
        rate_limit: Option<u32>,
    },
    /// Change an existing principal: only what the flags name changes.
    Update(UpdateArgs),
    /// Show a principal.
    Get {
        /// The principal's id.
        id: String,
        /// Tenant [default: the server's default tenant].
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List a tenant's principals, by id.
    List {
        /// Tenant [default: the server's default tenant].
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
}

#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    /// The principal's id.
    id: String,
    /// Tenant [default: the server's default tenant].
    #[arg(long)]
    tenant: Option<String>,
    /// New permissions (replacing the old ones), repeatable or comma-separated.
    #[arg(
        long = "permission",
        value_name = "PERMISSION",
        value_delimiter = ',',
        conflicts_with = "clear_permissions"
    )]
    permissions: Vec<String>,
    /// Remove all of the principal's permissions.
    #[arg(long)]
    clear_permissions: bool,
    /// Disable the principal, which stops all its tokens at once; its permissions stay.
    #[arg(long, conflicts_with = "enabled")]
    disabled: bool,
    /// Enable a disabled principal again.
    #[arg(long)]
    enabled: bool,
    /// New requests per minute shared by all its tokens.
    #[arg(long, value_name = "PER_MINUTE", conflicts_with = "no_rate_limit")]
    rate_limit: Option<u32>,
    /// Remove the shared limit.
    #[arg(long)]
    no_rate_limit: bool,
}

pub(super) async fn run(args: &ClientArgs, command: PrincipalCommand) -> Result<Report, CliError> {
    let principal = match command {
        PrincipalCommand::Upsert {
            id,
            tenant,
            permissions,
            disabled,
            rate_limit,
        } => {
            let mut client = admin_client(args).await?;
            let request = proto::UpsertPrincipalRequest {
                tenant: tenant.unwrap_or_default(),
                id,
                permissions,
                disabled,
                rate_limit_per_minute: rate_limit,
            };
            answer("UpsertPrincipal", client.upsert_principal(request).await)?.principal
        }
        PrincipalCommand::Update(update) => {
            // Built before connecting, so bad flags fail without a server.
            let request = update_request(update)?;
            let mut client = admin_client(args).await?;
            answer("UpdatePrincipal", client.update_principal(request).await)?.principal
        }
        PrincipalCommand::Get { id, tenant } => {
            let mut client = admin_client(args).await?;
            let request = proto::GetPrincipalRequest {
                tenant: tenant.unwrap_or_default(),
                id,
            };
            answer("GetPrincipal", client.get_principal(request).await)?.principal
        }
        PrincipalCommand::List { tenant, page } => {
            let mut client = admin_client(args).await?;
            let tenant = tenant.unwrap_or_default();
            let listed = page
                .collect(async |page_token| {
                    let request = proto::ListPrincipalsRequest {
                        tenant: tenant.clone(),
                        page_size: page.page_size(),
                        page_token,
                    };
                    let response = answer("ListPrincipals", client.list_principals(request).await)?;
                    Ok(Page::of(&response.principals, response.next_page_token))
                })
                .await?;
            return Ok(page::report(
                "principals",
                listed,
                LIST_COLUMNS,
                Record::clone,
            ));
        }
    };
    Ok(Report::single(
        "principal",
        principal.as_ref().map(Record::from),
    ))
}

/// The request with a field mask naming exactly the fields the flags change.
fn update_request(args: UpdateArgs) -> Result<proto::UpdatePrincipalRequest, CliError> {
    let mut request = proto::UpdatePrincipalRequest {
        tenant: args.tenant.unwrap_or_default(),
        id: args.id,
        ..Default::default()
    };
    let mut paths = Vec::new();
    if args.clear_permissions || !args.permissions.is_empty() {
        request.permissions = args.permissions;
        paths.push("permissions");
    }
    if args.disabled || args.enabled {
        request.disabled = args.disabled;
        paths.push("disabled");
    }
    if args.no_rate_limit || args.rate_limit.is_some() {
        request.rate_limit_per_minute = args.rate_limit;
        paths.push("rate_limit_per_minute");
    }
    if paths.is_empty() {
        return Err(CliError::Usage(
            "nothing to update: pass at least one of --permission, --clear-permissions, \
             --disabled, --enabled, --rate-limit, --no-rate-limit"
                .to_owned(),
        ));
    }
    request.update_mask = Some(FieldMask {
        paths: paths.into_iter().map(str::to_owned).collect(),
    });
    Ok(request)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: PrincipalCommand,
    }

    fn parse_update(flags: &[&str]) -> Result<proto::UpdatePrincipalRequest, CliError> {
        let arguments = ["tessera", "update", "dave"].iter().chain(flags);
        match Cli::try_parse_from(arguments) {
            Ok(Cli {
                command: PrincipalCommand::Update(update),
            }) => update_request(update),
            other => panic!("not an update: {other:?}"),
        }
    }

    fn mask(request: &proto::UpdatePrincipalRequest) -> Vec<&str> {
        request
            .update_mask
            .iter()
            .flat_map(|mask| mask.paths.iter().map(String::as_str))
            .collect()
    }

    #[test]
    fn disabling_masks_only_the_disabled_flag() {
        let request = parse_update(&["--disabled"]).expect("flags were given");
        assert_eq!(mask(&request), ["disabled"]);
        assert!(request.disabled);
        assert!(request.permissions.is_empty());
    }

    #[test]
    fn enabling_and_removing_the_limit_mask_those_fields_with_empty_values() {
        let request = parse_update(&["--enabled", "--no-rate-limit"]).expect("flags were given");
        assert_eq!(mask(&request), ["disabled", "rate_limit_per_minute"]);
        assert!(!request.disabled);
        assert_eq!(request.rate_limit_per_minute, None);
    }

    #[test]
    fn an_update_without_flags_is_a_usage_error() {
        assert!(matches!(parse_update(&[]), Err(CliError::Usage(_))));
    }
}
