//! `tessera usage TOKEN_ID` and `tessera usage --owner ID [--tenant T]`.

use clap::ArgGroup;
use tessera::proto;

use super::connect::admin_client;
use super::error::{CliError, answer};
use super::record::Record;
use super::{ClientArgs, Report, table};

#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("whose").required(true).args(["token_id", "owner"])))]
pub struct UsageArgs {
    /// One token's usage (`tok_…`).
    token_id: Option<String>,

    /// All tokens of this owner instead.
    #[arg(long, value_name = "ID")]
    owner: Option<String>,

    /// The owner's tenant [default: the server's default tenant].
    #[arg(long, requires = "owner")]
    tenant: Option<String>,

    /// Days in the daily series, 1 to 366 [default: 30].
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=366))]
    days: Option<i32>,
}

pub(super) async fn run(args: &ClientArgs, usage: UsageArgs) -> Result<Report, CliError> {
    let mut client = admin_client(args).await?;
    let request = proto::ListUsageRequest {
        token_id: usage.token_id.unwrap_or_default(),
        tenant: usage.tenant.unwrap_or_default(),
        owner_id: usage.owner.unwrap_or_default(),
        days: usage.days.unwrap_or(0),
    };
    let response = answer("ListUsage", client.list_usage(request).await)?;
    let record = Record::from(&response);
    Ok(Report::new(record.to_json(), table::document(&record)))
}
