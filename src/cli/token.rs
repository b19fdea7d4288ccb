//! `tessera token create|list|get|update|rotate|suspend|resume|revoke|add-credits|import`.

use std::fmt::Write;
use std::time::SystemTime;

use prost_types::{Duration, FieldMask, Timestamp};
use tessera::proto;

use super::connect::admin_client;
use super::error::{CliError, answer};
use super::page::{self, Page, PageArgs};
use super::record::{Field, Record};
use super::{ClientArgs, Report, parse, table};

mod import;

/// Columns of `token list`.
const LIST_COLUMNS: &[&str] = &[
    "id",
    "name",
    "owner_id",
    "state",
    "permissions",
    "roles",
    "rate_limit_per_minute",
    "expires_at",
    "last_used_at",
    "secret_hint",
];

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token and print its secret, once.
    Create(CreateArgs),
    /// List a tenant's tokens, oldest first.
    List(ListArgs),
    /// Show one token.
    Get {
        /// The token id (`tok_…`).
        id: String,
    },
    /// Change a token: only what the flags name changes; the secret stays.
    Update(UpdateArgs),
    /// Give a token a new secret and print it, once.
    Rotate {
        /// The token id (`tok_…`).
        id: String,
        /// How long the old secret keeps working beside the new one, at most 24h [default: 0].
        #[arg(long, value_parser = parse::duration)]
        grace: Option<Duration>,
    },
    /// Revoke a token: immediate and irreversible.
    Revoke {
        /// The token id (`tok_…`).
        id: String,
    },
    /// Import existing tokens from a JSON Lines file, by the SHA-256 of their secrets.
    ///
    /// One object per line with ImportedToken's fields (`owner_id`, `name`, `secret_sha256`,
    /// `permissions`, `roles`, `allowed_ips`, `rate_limit_per_minute`, `expires_at` and
    /// `created_at` as RFC 3339, `description`, `metadata` as an object of strings). The whole file is read and checked first; it is
    /// then sent in batches of 1000, each imported whole or not at all: on an error, the
    /// batches before it stay imported and the message says which lines failed.
    Import {
        /// The JSON Lines file (`-` for stdin).
        file: std::path::PathBuf,
        /// Tenant [default: the server's default tenant].
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Suspend a token on every replica until `token resume`: Check denies it meanwhile.
    Suspend {
        /// The token id (`tok_…`).
        id: String,
        /// Why, for the audit log and the token's `suspend_reason`; at most 1024 characters.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Lift a token's suspension on every replica.
    Resume {
        /// The token id (`tok_…`).
        id: String,
    },
    /// Add usage credits to a token that has credits (atomic: no concurrent spend is lost).
    AddCredits {
        /// The token id (`tok_…`).
        id: String,
        /// How many, 1 to 10^15.
        amount: u64,
    },
}

/// Usage credits: shared by `create` and `update`.
#[derive(Debug, clap::Args)]
struct CreditArgs {
    /// Meter the token: it starts with this many credits, each allowed Check spends its cost
    /// (default 1) [default: not metered].
    #[arg(long, value_name = "N")]
    credits: Option<u64>,

    /// Top the credits up to AMOUNT every INTERVAL (at least 1s), e.g. 1000/1d or 50000/30d.
    #[arg(long, value_name = "AMOUNT/INTERVAL", value_parser = parse::refill, requires = "credits")]
    refill: Option<(u64, Duration)>,
}

impl CreditArgs {
    fn credits(&self) -> Option<proto::TokenCredits> {
        self.credits.map(|remaining| proto::TokenCredits {
            remaining,
            refill_amount: self.refill.map_or(0, |(amount, _)| amount),
            refill_interval: self.refill.map(|(_, interval)| interval),
            refilled_at: None,
        })
    }
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The owning principal; it must exist in the tenant.
    #[arg(long, value_name = "ID")]
    owner: String,

    /// Display name, 1 to 128 characters.
    #[arg(long)]
    name: String,

    /// Tenant [default: the server's default tenant].
    #[arg(long)]
    tenant: Option<String>,

    /// Free text, at most 1024 characters.
    #[arg(long)]
    description: Option<String>,

    #[command(flatten)]
    grants: Grants,

    /// Requests per minute [default: the server's, 60].
    #[arg(long, value_name = "PER_MINUTE")]
    rate_limit: Option<u32>,

    /// Lifetime from now, e.g. 90d, at most 5 years [default: 1 year].
    #[arg(long, value_parser = parse::duration, conflicts_with = "expires_at")]
    ttl: Option<Duration>,

    /// Absolute expiry, RFC 3339 with an offset, e.g. 2030-01-31T00:00:00Z; at most 5 years
    /// ahead.
    #[arg(long, value_parser = parse::timestamp)]
    expires_at: Option<Timestamp>,

    /// Require signed requests; the signing key is printed once.
    #[arg(long)]
    require_signature: bool,

    #[command(flatten)]
    credits: CreditArgs,
    /// A metadata entry `KEY=VALUE`, repeatable: returned by an allowed Check.
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
    metadata: Vec<(String, String)>,
}

/// `KEY=VALUE` (the value may be empty or contain `=`); the server judges key and value.
fn parse_meta(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("{raw:.64}: expected KEY=VALUE"))
}

/// What a token may do and from where: shared by `create` and `update`.
#[derive(Debug, clap::Args)]
struct Grants {
    /// A grant, repeatable or comma-separated: `resource:action`, `fn:Name`, `*` as a segment.
    #[arg(long = "permission", value_name = "PERMISSION", value_delimiter = ',')]
    permissions: Vec<String>,

    /// A role of the tenant whose grants the token also gets; repeatable or comma-separated.
    #[arg(long = "role", value_name = "ROLE", value_delimiter = ',')]
    roles: Vec<String>,

    /// An IP or CIDR the token may be used from; repeatable or comma-separated [default: any].
    #[arg(long = "allow-ip", value_name = "IP_OR_CIDR", value_delimiter = ',')]
    allowed_ips: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Tenant [default: the server's default tenant].
    #[arg(long)]
    tenant: Option<String>,

    /// Only this owner's tokens.
    #[arg(long, value_name = "ID")]
    owner: Option<String>,

    /// Also list revoked tokens.
    #[arg(long)]
    include_revoked: bool,

    /// Only tokens that expire within this long from now, e.g. 30d.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    expiring_within: Option<Duration>,

    /// Only tokens unused (or never used) for at least this long, e.g. 90d.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    unused_for: Option<Duration>,

    /// Only tokens that break the tenant's token policy (see `policy_violations`).
    #[arg(long)]
    policy_violations: bool,

    #[command(flatten)]
    page: PageArgs,
}

#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    /// The token id (`tok_…`).
    id: String,

    /// New display name.
    #[arg(long)]
    name: Option<String>,

    /// New description (`""` clears it).
    #[arg(long)]
    description: Option<String>,

    #[command(flatten)]
    grants: Grants,

    /// Remove all of the token's own permissions.
    #[arg(long, conflicts_with = "permissions")]
    clear_permissions: bool,

    /// Remove all of the token's roles.
    #[arg(long, conflicts_with = "roles")]
    clear_roles: bool,

    /// Allow the token from any IP again.
    #[arg(long, conflicts_with = "allowed_ips")]
    clear_allowed_ips: bool,

    /// New requests per minute (0: the server's default).
    #[arg(long, value_name = "PER_MINUTE")]
    rate_limit: Option<u32>,

    /// New expiry, RFC 3339.
    #[arg(long, value_parser = parse::timestamp, conflicts_with = "ttl")]
    expires_at: Option<Timestamp>,

    /// New expiry as a lifetime from now, e.g. 30d.
    #[arg(long, value_parser = parse::duration)]
    ttl: Option<Duration>,

    /// Turn request signing on or off.
    #[arg(long, value_name = "true|false")]
    require_signature: Option<bool>,

    /// Set one metadata entry `KEY=VALUE`, repeatable; other entries stay.
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
    metadata: Vec<(String, String)>,

    /// Delete one metadata entry, repeatable.
    #[arg(long = "unset-meta", value_name = "KEY")]
    unset_metadata: Vec<String>,

    /// Remove all metadata first (then `--meta` entries are the whole map).
    #[arg(long)]
    clear_metadata: bool,
    /// New usage credits (with --refill, or never refilled), replacing the balance; to add to
    /// it, use `token add-credits`.
    #[command(flatten)]
    credits: CreditArgs,

    /// Stop metering the token: remove its credits.
    #[arg(long, conflicts_with = "credits")]
    no_credits: bool,

    /// Apply only if the token is still at this etag (as `token get --json` shows it); a
    /// token changed since is refused and nothing is written.
    #[arg(long)]
    etag: Option<String>,
}

pub(super) async fn run(args: &ClientArgs, command: TokenCommand) -> Result<Report, CliError> {
    // Each arm builds its request before connecting, so bad flags fail without a server.
    match command {
        TokenCommand::Create(create) => {
            let request = create_request(create);
            let mut client = admin_client(args).await?;
            let created = answer("CreateToken", client.create_token(request).await)?;
            let shown_once = [
                ("secret", created.secret),
                ("signing_key", created.signing_key),
            ];
            Ok(token_report(created.token.as_ref(), "created", shown_once))
        }
        TokenCommand::List(list) => {
            let mut client = admin_client(args).await?;
            let page = list
                .page
                .collect(async |page_token| {
                    let request = list_request(&list, page_token);
                    let response = answer("ListTokens", client.list_tokens(request).await)?;
                    Ok(Page::of(&response.tokens, response.next_page_token))
                })
                .await?;
            Ok(page::report("tokens", page, LIST_COLUMNS, shown))
        }
        TokenCommand::Get { id } => {
            let mut client = admin_client(args).await?;
            let request = proto::GetTokenRequest { id };
            let token = answer("GetToken", client.get_token(request).await)?.token;
            Ok(token_report(token.as_ref(), "", []))
        }
        TokenCommand::Update(update) => {
            let request = update_request(update, SystemTime::now())?;
            let mut client = admin_client(args).await?;
            let updated = answer("UpdateToken", client.update_token(request).await)?;
            Ok(token_report(
                updated.token.as_ref(),
                "updated",
                [("signing_key", updated.signing_key)],
            ))
        }
        TokenCommand::Rotate { id, grace } => {
            let mut client = admin_client(args).await?;
            let request = proto::RotateTokenRequest {
                id,
                grace_period: grace,
            };
            let rotated = answer("RotateToken", client.rotate_token(request).await)?;
            let shown_once = [
                ("secret", rotated.secret),
                ("signing_key", rotated.signing_key),
            ];
            Ok(token_report(rotated.token.as_ref(), "rotated", shown_once))
        }
        TokenCommand::Revoke { id } => {
            let mut client = admin_client(args).await?;
            let request = proto::RevokeTokenRequest { id };
            let token = answer("RevokeToken", client.revoke_token(request).await)?.token;
            Ok(token_report(token.as_ref(), "revoked", []))
        }
        TokenCommand::Import { file, tenant } => {
            let entries = import::read(&file)?;
            let mut client = admin_client(args).await?;
            let mut imported = Vec::with_capacity(entries.len());
            for (batch, tokens) in entries.chunks(import::BATCH).enumerate() {
                let request = proto::ImportTokensRequest {
                    tenant: tenant.clone().unwrap_or_default(),
                    tokens: tokens.to_vec(),
                };
                match client.import_tokens(request).await {
                    Ok(response) => imported.extend(response.into_inner().tokens),
                    Err(status) => {
                        return Err(import::failed(status, batch, imported.len()));
                    }
                }
            }
            let records: Vec<Record> = imported.iter().map(Record::from).collect();
            let human = format!(
                "imported {} tokens\n\n{}",
                records.len(),
                table::list(&records, LIST_COLUMNS)
            );
            let json = Record::default()
                .with("tokens", Field::Messages(records))
                .to_json();
            Ok(Report::new(json, human))
        }
        TokenCommand::Suspend { id, reason } => {
            let mut client = admin_client(args).await?;
            let request = proto::SuspendTokenRequest { id, reason };
            let token = answer("SuspendToken", client.suspend_token(request).await)?.token;
            Ok(token_report(token.as_ref(), "suspended", []))
        }
        TokenCommand::Resume { id } => {
            let mut client = admin_client(args).await?;
            let request = proto::ResumeTokenRequest { id };
            let token = answer("ResumeToken", client.resume_token(request).await)?.token;
            Ok(token_report(token.as_ref(), "resumed", []))
        }
        TokenCommand::AddCredits { id, amount } => {
            let mut client = admin_client(args).await?;
            let request = proto::AddCreditsRequest { id, amount };
            let token = answer("AddCredits", client.add_credits(request).await)?.token;
            Ok(token_report(token.as_ref(), "added credits to", []))
        }
    }
}

/// `{"token": {...}}` plus the values the response shows only once (`secret`, `signing_key`)
/// when it has them; for people, what was done, the token's table, and those values with a
/// warning to store them.
fn token_report<const N: usize>(
    token: Option<&proto::Token>,
    done: &str,
    shown_once: [(&'static str, String); N],
) -> Report {
    let token_record = token.map(Record::from);
    let mut human = String::new();
    let shown_record = token_record.as_ref().map(shown);
    if let Some(token) = token
        && !done.is_empty()
    {
        // Writing to a String cannot fail.
        let _ = writeln!(
            human,
            "{done} token {} ({}) of owner {}",
            token.id, token.name, token.owner_id
        );
    }
    human.push_str(
        &shown_record
            .as_ref()
            .map(table::document)
            .unwrap_or_default(),
    );

    let mut json = Record::default().with("token", Field::Message(token_record));
    let mut any_shown = false;
    for (name, value) in shown_once
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
    {
        let _ = write!(human, "\n\n{}: {value}", name.replace('_', " "));
        json = json.with(name, Field::Text(value));
        any_shown = true;
    }
    if any_shown {
        human.push_str("\nstore it now; it will not be shown again");
    }
    Report::new(json.to_json(), human)
}

/// A token as its tables show it: the rate limit Check applies, marked when it is the server's
/// default (the token's own being 0), instead of the raw 0; JSON keeps both fields.
fn shown(token: &Record) -> Record {
    let own = match token.get("rate_limit_per_minute") {
        Some(Field::Number(own)) => *own,
        _ => None,
    };
    let effective = match token.get("effective_rate_limit_per_minute") {
        Some(Field::Number(Some(effective))) => *effective,
        // A server too old to say: its raw value, as before.
        _ => return token.clone(),
    };
    let limit = if own == Some(0) {
        format!("{effective} (server default)")
    } else {
        effective.to_string()
    };
    token
        .clone()
        .replaced("rate_limit_per_minute", Field::Text(limit))
        .without("effective_rate_limit_per_minute")
}

fn create_request(args: CreateArgs) -> proto::CreateTokenRequest {
    proto::CreateTokenRequest {
        tenant: args.tenant.unwrap_or_default(),
        owner_id: args.owner,
        name: args.name,
        description: args.description.unwrap_or_default(),
        permissions: args.grants.permissions,
        roles: args.grants.roles,
        allowed_ips: args.grants.allowed_ips,
        rate_limit_per_minute: args.rate_limit.unwrap_or(0),
        expires_at: args.expires_at,
        ttl: args.ttl,
        require_signature: args.require_signature,
        metadata: args.metadata.into_iter().collect(),
        credits: args.credits.credits(),
    }
}

fn list_request(args: &ListArgs, page_token: String) -> proto::ListTokensRequest {
    proto::ListTokensRequest {
        tenant: args.tenant.clone().unwrap_or_default(),
        owner_id: args.owner.clone().unwrap_or_default(),
        include_revoked: args.include_revoked,
        page_size: args.page.page_size(),
        page_token,
        expiring_within: args.expiring_within,
        unused_for: args.unused_for,
        policy_violations_only: args.policy_violations,
    }
}

/// The request with a field mask naming exactly the fields the flags change; `--ttl` becomes
/// `expires_at = now + ttl`.
fn update_request(
    args: UpdateArgs,
    now: SystemTime,
) -> Result<proto::UpdateTokenRequest, CliError> {
    let expires_at = match (args.expires_at, args.ttl) {
        (Some(expires_at), _) => Some(expires_at),
        (None, Some(ttl)) => Some(expires_after(now, ttl)?),
        (None, None) => None,
    };
    let mut request = proto::UpdateTokenRequest {
        id: args.id,
        etag: args.etag.unwrap_or_default(),
        ..Default::default()
    };
    let mut mask = FieldMask::default();
    set(&mut mask, "name", args.name, &mut request.name);
    set(
        &mut mask,
        "description",
        args.description,
        &mut request.description,
    );
    let permissions = replacement(args.grants.permissions, args.clear_permissions);
    set(
        &mut mask,
        "permissions",
        permissions,
        &mut request.permissions,
    );
    let roles = replacement(args.grants.roles, args.clear_roles);
    set(&mut mask, "roles", roles, &mut request.roles);
    let allowed_ips = replacement(args.grants.allowed_ips, args.clear_allowed_ips);
    set(
        &mut mask,
        "allowed_ips",
        allowed_ips,
        &mut request.allowed_ips,
    );
    set(
        &mut mask,
        "rate_limit_per_minute",
        args.rate_limit,
        &mut request.rate_limit_per_minute,
    );
    set(
        &mut mask,
        "expires_at",
        expires_at.map(Some),
        &mut request.expires_at,
    );
    set(
        &mut mask,
        "require_signature",
        args.require_signature,
        &mut request.require_signature,
    );
    if args.clear_metadata {
        // The whole map: cleared, then the --meta entries.
        mask.paths.push("metadata".to_owned());
        request.metadata = args.metadata.into_iter().collect();
    } else {
        for (key, value) in args.metadata {
            mask.paths.push(format!("metadata.{key}"));
            request.metadata.insert(key, value);
        }
        for key in args.unset_metadata {
            mask.paths.push(format!("metadata.{key}"));
            request.metadata.remove(&key);
        }
    }
    let credits = args.credits.credits();
    let credits = (credits.is_some() || args.no_credits).then_some(credits);
    set(&mut mask, "credits", credits, &mut request.credits);
    if mask.paths.is_empty() {
        return Err(CliError::Usage(
            "nothing to update: pass at least one of --name, --description, --permission, \
             --clear-permissions, --role, --clear-roles, --allow-ip, --clear-allowed-ips, \
             --rate-limit, --expires-at, --ttl, --require-signature, --meta, --unset-meta, \
             --clear-metadata, --credits, --no-credits"
                .to_owned(),
        ));
    }
    request.update_mask = Some(mask);
    Ok(request)
}

/// Sets a request field to a given value and names it in the mask; `None` leaves both alone.
fn set<T>(mask: &mut FieldMask, path: &str, value: Option<T>, field: &mut T) {
    if let Some(value) = value {
        *field = value;
        mask.paths.push(path.to_owned());
    }
}

/// The new list when the flags give values or ask to clear it; `None` leaves it unchanged.
fn replacement(values: Vec<String>, clear: bool) -> Option<Vec<String>> {
    (clear || !values.is_empty()).then_some(values)
}

fn expires_after(now: SystemTime, ttl: Duration) -> Result<Timestamp, CliError> {
    std::time::Duration::try_from(ttl)
        .ok()
        .and_then(|ttl| now.checked_add(ttl))
        .map(Timestamp::from)
        .ok_or_else(|| CliError::Usage("--ttl is too long".to_owned()))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: TokenCommand,
    }

    fn parse_update(flags: &[&str]) -> UpdateArgs {
        let arguments = ["tessera", "update", "tok_1"].iter().chain(flags);
        match Cli::try_parse_from(arguments) {
            Ok(Cli {
                command: TokenCommand::Update(update),
            }) => update,
            other => panic!("not an update: {other:?}"),
        }
    }

    fn mask(request: &proto::UpdateTokenRequest) -> Vec<&str> {
        request
            .update_mask
            .iter()
            .flat_map(|mask| mask.paths.iter().map(String::as_str))
            .collect()
    }

    #[test]
    fn an_update_masks_exactly_the_fields_its_flags_name() {
        let update = parse_update(&[
            "--name",
            "ci",
            "--permission",
            "orders:read,orders:write",
            "--rate-limit",
            "0",
        ]);
        let request = update_request(update, SystemTime::UNIX_EPOCH).expect("flags were given");
        assert_eq!(
            mask(&request),
            ["name", "permissions", "rate_limit_per_minute"]
        );
        assert_eq!(request.permissions, ["orders:read", "orders:write"]);
    }

    #[test]
    fn credits_flags_set_the_credits_path_and_no_credits_sends_it_unset() {
        let update = parse_update(&["--credits", "100", "--refill", "1000/1d"]);
        let request = update_request(update, SystemTime::UNIX_EPOCH).expect("flags were given");
        assert_eq!(mask(&request), ["credits"]);
        let credits = request.credits.expect("credits");
        assert_eq!((credits.remaining, credits.refill_amount), (100, 1000));
        assert_eq!(
            credits.refill_interval.map(|every| every.seconds),
            Some(86_400)
        );

        let update = parse_update(&["--no-credits"]);
        let request = update_request(update, SystemTime::UNIX_EPOCH).expect("flags were given");
        assert_eq!(mask(&request), ["credits"]);
        assert_eq!(request.credits, None);

        let arguments = ["tessera", "update", "tok_1", "--refill", "5/1h"];
        assert!(
            Cli::try_parse_from(arguments).is_err(),
            "--refill needs --credits"
        );
    }

    #[test]
    fn clearing_a_list_masks_it_with_an_empty_value() {
        let update = parse_update(&["--clear-roles", "--clear-allowed-ips"]);
        let request = update_request(update, SystemTime::UNIX_EPOCH).expect("flags were given");
        assert_eq!(mask(&request), ["roles", "allowed_ips"]);
        assert!(request.roles.is_empty() && request.allowed_ips.is_empty());
    }

    #[test]
    fn a_ttl_becomes_an_expiry_counted_from_now() {
        let update = parse_update(&["--ttl", "1h", "--require-signature", "false"]);
        let request = update_request(update, SystemTime::UNIX_EPOCH).expect("flags were given");
        assert_eq!(mask(&request), ["expires_at", "require_signature"]);
        assert_eq!(
            request.expires_at,
            Some(Timestamp {
                seconds: 3600,
                nanos: 0
            })
        );
    }

    #[test]
    fn an_etag_is_sent_with_the_update_and_is_not_a_field_of_the_mask() {
        let update = parse_update(&["--name", "ci", "--etag", "7"]);
        let request = update_request(update, SystemTime::UNIX_EPOCH).expect("flags were given");
        assert_eq!(mask(&request), ["name"]);
        assert_eq!(request.etag, "7");
        let unchecked = update_request(parse_update(&["--name", "ci"]), SystemTime::UNIX_EPOCH)
            .expect("flags were given");
        assert_eq!(unchecked.etag, "");
    }

    #[test]
    fn an_update_without_flags_is_a_usage_error() {
        let outcome = update_request(parse_update(&[]), SystemTime::UNIX_EPOCH);
        assert!(
            matches!(outcome, Err(CliError::Usage(message)) if message.starts_with("nothing to update"))
        );
    }

    #[test]
    fn meta_flags_set_and_unset_single_entries_by_their_own_mask_paths() {
        let update = parse_update(&[
            "--meta",
            "plan=pro",
            "--meta",
            "note=a=b",
            "--unset-meta",
            "region",
        ]);
        let request = update_request(update, SystemTime::UNIX_EPOCH).expect("flags were given");
        assert_eq!(
            mask(&request),
            ["metadata.plan", "metadata.note", "metadata.region"]
        );
        assert_eq!(
            request.metadata.get("plan").map(String::as_str),
            Some("pro")
        );
        assert_eq!(
            request.metadata.get("note").map(String::as_str),
            Some("a=b")
        );
        assert!(!request.metadata.contains_key("region"));
    }

    #[test]
    fn clearing_metadata_replaces_the_whole_map_with_the_meta_entries() {
        let update = parse_update(&["--clear-metadata", "--meta", "plan=pro"]);
        let request = update_request(update, SystemTime::UNIX_EPOCH).expect("flags were given");
        assert_eq!(mask(&request), ["metadata"]);
        assert_eq!(request.metadata.len(), 1);
    }

    #[test]
    fn a_meta_flag_without_an_equals_sign_is_refused() {
        let outcome = Cli::try_parse_from(["tessera", "update", "tok_1", "--meta", "plan"]);
        assert!(outcome.is_err());
    }

    #[test]
    fn permissions_and_clearing_them_cannot_be_combined() {
        let outcome = Cli::try_parse_from([
            "tessera",
            "update",
            "tok_1",
            "--permission",
            "a:b",
            "--clear-permissions",
        ]);
        assert!(outcome.is_err());
    }

    #[test]
    fn a_created_token_prints_its_secret_once_with_a_warning() {
        let token = proto::Token {
            id: "tok_1".to_owned(),
            name: "ci".to_owned(),
            ..Default::default()
        };
        let shown_once = [
            ("secret", "tsk_secret".to_owned()),
            ("signing_key", String::new()),
        ];
        let report = token_report(Some(&token), "created", shown_once);
        assert!(
            report
                .human
                .contains("secret: tsk_secret\nstore it now; it will not be shown again")
        );
        assert_eq!(report.human.matches("tsk_secret").count(), 1);
        assert_eq!(report.json["secret"], "tsk_secret");
        assert!(report.json.get("signing_key").is_none());
    }

    #[test]
    fn a_shown_token_has_no_secret_and_no_warning() {
        let token = proto::Token {
            id: "tok_1".to_owned(),
            ..Default::default()
        };
        let report = token_report(Some(&token), "", []);
        assert!(!report.human.contains("store it now"));
        assert!(report.json.get("secret").is_none());
    }
}
