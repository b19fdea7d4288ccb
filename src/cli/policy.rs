//! `tessera policy get|set`: a tenant's token policy.

use prost_types::Duration;
use tessera::proto;

use super::connect::admin_client;
use super::error::{CliError, answer};
use super::record::Record;
use super::{ClientArgs, Report, parse};

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Show a tenant's token policy (every rule off when none was set).
    Get {
        /// Tenant [default: the server's default tenant].
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Replace a tenant's token policy: a rule whose flag is not given is off.
    Set(SetArgs),
}

#[derive(Debug, clap::Args)]
pub struct SetArgs {
    /// Tenant [default: the server's default tenant].
    #[arg(long)]
    tenant: Option<String>,

    /// No token may expire more than this far from now, e.g. 90d (at most 5 years).
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    max_lifetime: Option<Duration>,

    /// The lifetime of a token created without an expiry, at most --max-lifetime.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    default_lifetime: Option<Duration>,

    /// Every new token must be given an expiry (--ttl or --expires-at).
    #[arg(long)]
    require_expiry: bool,

    /// At most this many live tokens per owner (the server's limit applies too).
    #[arg(long, value_name = "COUNT")]
    max_tokens_per_owner: Option<u32>,

    /// A grant pattern a token's permissions must fall within; repeatable or comma-separated
    /// [default: any permission].
    #[arg(
        long = "allow-permission",
        value_name = "PATTERN",
        value_delimiter = ','
    )]
    allowed_permissions: Vec<String>,

    /// Every token must name the IPs or CIDRs it may be used from.
    #[arg(long)]
    require_ip_allowlist: bool,

    /// Deny tokens that break the policy at Check (POLICY_VIOLATION), not only list them.
    #[arg(long)]
    enforce_on_existing: bool,

    /// What a leak report (GitHub secret scanning, POST /leaked-tokens) does to a live token.
    #[arg(long, value_enum, default_value_t = LeakAction::Revoke)]
    leak_action: LeakAction,
}

/// The actions `--leak-action` takes, as the proto's `LeakAction` names them without their
/// prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LeakAction {
    /// Revoke the token at once, on every replica.
    Revoke,
    /// Leave it working: an event, an audit entry and a metric only.
    Notify,
}

impl From<LeakAction> for proto::LeakAction {
    fn from(action: LeakAction) -> Self {
        match action {
            LeakAction::Revoke => Self::Revoke,
            LeakAction::Notify => Self::Notify,
        }
    }
}

pub(super) async fn run(args: &ClientArgs, command: PolicyCommand) -> Result<Report, CliError> {
    let mut client = admin_client(args).await?;
    let policy = match command {
        PolicyCommand::Get { tenant } => {
            let request = proto::GetTenantPolicyRequest {
                tenant: tenant.unwrap_or_default(),
            };
            answer("GetTenantPolicy", client.get_tenant_policy(request).await)?.policy
        }
        PolicyCommand::Set(set) => {
            let request = set_request(set);
            answer("SetTenantPolicy", client.set_tenant_policy(request).await)?.policy
        }
    };
    Ok(Report::single("policy", policy.as_ref().map(Record::from)))
}

fn set_request(args: SetArgs) -> proto::SetTenantPolicyRequest {
    proto::SetTenantPolicyRequest {
        policy: Some(proto::TenantPolicy {
            tenant: args.tenant.unwrap_or_default(),
            max_lifetime: args.max_lifetime,
            default_lifetime: args.default_lifetime,
            require_expiry: args.require_expiry,
            max_tokens_per_owner: args.max_tokens_per_owner.unwrap_or(0),
            allowed_permissions: args.allowed_permissions,
            require_ip_allowlist: args.require_ip_allowlist,
            enforce_on_existing: args.enforce_on_existing,
            updated_at: None,
            leak_action: proto::LeakAction::from(args.leak_action).into(),
        }),
    }
}
