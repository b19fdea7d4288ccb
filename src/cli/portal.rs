//! `tessera portal open|branding`: a self-service portal URL for one of a tenant's principals
//! (CreatePortalSession), and how the tenant's portal looks.

use std::fmt::Write;

use serde_json::json;
use tessera::proto;

use super::connect::admin_client;
use super::error::{CliError, answer};
use super::{ClientArgs, Report, parse};

#[derive(Debug, clap::Subcommand)]
pub enum PortalCommand {
    /// Open a portal session for a principal and print its one-time URL (give it to that user
    /// only; it works once).
    Open {
        /// The principal whose tokens the portal shows.
        principal: String,
        /// Tenant [default: the server's default tenant].
        #[arg(long)]
        tenant: Option<String>,
        /// How long the URL and its session last, 1m to 1h [default: 1h].
        #[arg(long, value_parser = parse::duration)]
        ttl: Option<prost_types::Duration>,
        /// Where the portal's "back" link leads.
        #[arg(long, default_value = "")]
        return_url: String,
    },
    /// Show or set the portal's product name, logo and accent colour.
    #[command(subcommand)]
    Branding(BrandingCommand),
}

#[derive(Debug, clap::Subcommand)]
pub enum BrandingCommand {
    /// Show a tenant's portal branding.
    Get {
        /// Tenant [default: the server's default tenant].
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Replace a tenant's portal branding (a field left out is reset).
    Set {
        /// Tenant [default: the server's default tenant].
        #[arg(long)]
        tenant: Option<String>,
        /// The name in the portal's header (at most 64 characters).
        #[arg(long, default_value = "")]
        product_name: String,
        /// An https URL of the logo image.
        #[arg(long, default_value = "")]
        logo_url: String,
        /// The accent colour, `#rrggbb`.
        #[arg(long, default_value = "")]
        accent_color: String,
    },
}

pub(super) async fn run(args: &ClientArgs, command: PortalCommand) -> Result<Report, CliError> {
    let mut client = admin_client(args).await?;
    match command {
        PortalCommand::Open {
            principal,
            tenant,
            ttl,
            return_url,
        } => {
            let request = proto::CreatePortalSessionRequest {
                tenant: tenant.unwrap_or_default(),
                principal_id: principal,
                return_url,
                ttl,
            };
            let opened = answer(
                "CreatePortalSession",
                client.create_portal_session(request).await,
            )?;
            let expires_at = opened
                .expires_at
                .map(|time| time.to_string())
                .unwrap_or_default();
            let human = format!(
                "{}\nworks once, until {expires_at}; give it only to that user",
                opened.url
            );
            Ok(Report::new(
                json!({ "url": opened.url, "expires_at": expires_at }),
                human,
            ))
        }
        PortalCommand::Branding(BrandingCommand::Get { tenant }) => {
            let request = proto::GetPortalBrandingRequest {
                tenant: tenant.unwrap_or_default(),
            };
            let branding = answer(
                "GetPortalBranding",
                client.get_portal_branding(request).await,
            )?
            .branding;
            Ok(branding_report(branding.unwrap_or_default()))
        }
        PortalCommand::Branding(BrandingCommand::Set {
            tenant,
            product_name,
            logo_url,
            accent_color,
        }) => {
            let request = proto::SetPortalBrandingRequest {
                branding: Some(proto::PortalBranding {
                    tenant: tenant.unwrap_or_default(),
                    product_name,
                    logo_url,
                    accent_color,
                    update_time: None,
                }),
            };
            let branding = answer(
                "SetPortalBranding",
                client.set_portal_branding(request).await,
            )?
            .branding;
            Ok(branding_report(branding.unwrap_or_default()))
        }
    }
}

fn branding_report(branding: proto::PortalBranding) -> Report {
    let update_time = branding
        .update_time
        .map(|time| time.to_string())
        .unwrap_or_default();
    let mut human = String::new();
    let shown = |value: &str| {
        if value.is_empty() {
            "(default)".to_owned()
        } else {
            value.to_owned()
        }
    };
    // Writing to a String cannot fail.
    let _ = write!(
        human,
        "tenant        {}\nproduct_name  {}\nlogo_url      {}\naccent_color  {}\nupdate_time   {}",
        branding.tenant,
        shown(&branding.product_name),
        shown(&branding.logo_url),
        shown(&branding.accent_color),
        shown(&update_time),
    );
    Report::new(
        json!({
            "branding": {
                "tenant": branding.tenant,
                "product_name": branding.product_name,
                "logo_url": branding.logo_url,
                "accent_color": branding.accent_color,
                "update_time": update_time,
            }
        }),
        human,
    )
}
