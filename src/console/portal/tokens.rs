//! The principal's tokens: list, create (secret and signing key shown once), detail, edit,
//! rotate (shown once) and revoke (the name typed to confirm), each a TokenAdminService call.

use crate::console::page::column_heads;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{NaiveDate, NaiveTime};
use hyper::StatusCode;
use maud::{Markup, html};
use serde::Deserialize;

use super::forms::{Fields, lines};
use super::{NEW_TOKEN_PATH, Portal, TOKENS_PATH, token_path, when};
use crate::console::page::{self, Problem, notice, shown_once};
use crate::console::session::{PortalUser, Posted};
use crate::console::{Console, PORTAL_PATH};
use crate::domain::permission::{self, Grant};
use crate::proto;
use crate::proto::token_admin_service_server::TokenAdminService as _;

/// Most tokens one list page shows.
const PAGE_SIZE: i32 = 50;
/// The longest lifetime the form offers, in days (the server's bound is 5 years).
const MAX_TTL_DAYS: u32 = 1826;
const SECONDS_PER_DAY: i64 = 86_400;

/// What a redirect back to a page says happened: fixed messages only, nothing a caller wrote.
fn notice_for(key: Option<&str>) -> Option<&'static str> {
    match key? {
        "revoked" => Some("The token was revoked. It no longer works."),
        "updated" => Some("Your changes were saved."),
        _ => None,
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    revoked: Option<String>,
    #[serde(default)]
    page_token: Option<String>,
    #[serde(default)]
    notice: Option<String>,
}

/// A token's state, as a badge with its word (not only its colour).
fn state_badge(token: &proto::Token) -> Markup {
    let (class, label) = match proto::TokenState::try_from(token.state) {
        Ok(proto::TokenState::Active) => ("active", "Active"),
        Ok(proto::TokenState::Expired) => ("expired", "Expired"),
        Ok(proto::TokenState::Revoked) => ("revoked", "Revoked"),
        Ok(proto::TokenState::Suspended) => ("suspended", "Suspended"),
        _ => ("", "Unknown"),
    };
    html! { span class={ "badge " (class) } { (label) } }
}

fn is_revoked(token: &proto::Token) -> bool {
    token.state == proto::TokenState::Revoked as i32
}

/// A list query string (the page token encoded).
fn list_query(revoked: bool, page_token: &str) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if revoked {
        query.append_pair("revoked", "1");
    }
    if !page_token.is_empty() {
        query.append_pair("page_token", page_token);
    }
    let query = query.finish();
    if query.is_empty() {
        PORTAL_PATH.to_owned()
    } else {
        format!("{PORTAL_PATH}?{query}")
    }
}

/// The principal's tokens: ListTokens with the principal as owner, never anyone else's.
pub async fn list(
    State(console): State<Console>,
    Query(query): Query<ListQuery>,
    user: PortalUser,
) -> Result<Response, Response> {
    let portal = Portal::new(&console, user).await?;
    let include_revoked = query
        .revoked
        .as_deref()
        .is_some_and(|value| !value.is_empty());
    let page_token = query.page_token.unwrap_or_default();
    let listed = portal
        .backend
        .api
        .list_tokens(portal.user.request(proto::ListTokensRequest {
            tenant: portal.tenant(),
            owner_id: portal.principal(),
            include_revoked,
            page_size: PAGE_SIZE,
            page_token: page_token.clone(),
            ..Default::default()
        }))
        .await
        .map_err(|status| portal.refused(&status))?
        .into_inner();
    let body = html! {
        h1 { "API tokens" }
        @if let Some(message) = notice_for(query.notice.as_deref()) {
            (notice(message))
        }
        p { "Tokens let your programs call the API as you. Each holds only permissions you hold yourself." }
        div.actions {
            a.button href=(NEW_TOKEN_PATH) { "Create a token" }
            @if include_revoked {
                a href=(list_query(false, "")) { "Hide revoked tokens" }
            } @else {
                a href=(list_query(true, "")) { "Show revoked tokens" }
            }
        }
        @if listed.tokens.is_empty() {
            p { "You have no tokens yet." }
        } @else {
            div.table-scroll {
                table {
                    caption.visually-hidden { "Your API tokens" }
                    (column_heads(&["Name", "Secret", "Created", "Last used", "Expires", "State"]))
                    tbody {
                        @for token in &listed.tokens {
                            tr {
                                td { a href=(token_path(&token.id)) { (token.name) } }
                                td { code { (token.secret_hint) } }
                                td { (when(token.created_at.as_ref(), "—")) }
                                td { (when(token.last_used_at.as_ref(), "Never")) }
                                td { (when(token.expires_at.as_ref(), "—")) }
                                td { (state_badge(token)) }
                            }
                        }
                    }
                }
            }
        }
        @if !listed.next_page_token.is_empty() || !page_token.is_empty() {
            nav.pager aria-label="Pages" {
                @if !page_token.is_empty() {
                    a href=(list_query(include_revoked, "")) { "First page" }
                }
                @if !listed.next_page_token.is_empty() {
                    a href=(list_query(include_revoked, &listed.next_page_token)) { "Next page" }
                }
            }
        }
    };
    Ok(portal.ok("API tokens", PORTAL_PATH, body))
}

/// What the principal may put in a token: its own grants and the roles they cover.
struct Offer {
    permissions: Vec<Grant>,
    roles: Vec<proto::Role>,
}

impl Offer {
    /// The principal's permissions (GetPrincipal) and the tenant's roles (ListRoles) whose
    /// every permission one of the principal's covers.
    async fn of(portal: &Portal<'_>) -> Result<Self, tonic::Status> {
        let principal = portal
            .backend
            .api
            .get_principal(portal.user.request(proto::GetPrincipalRequest {
                tenant: portal.tenant(),
                id: portal.principal(),
            }))
            .await?
            .into_inner()
            .principal
            .unwrap_or_default();
        let permissions: Vec<Grant> = principal
            .permissions
            .iter()
            .filter_map(|raw| Grant::parse(raw).ok())
            .collect();
        let roles = portal
            .backend
            .api
            .list_roles(portal.user.request(proto::ListRolesRequest {
                tenant: portal.tenant(),
            }))
            .await?
            .into_inner()
            .roles
            .into_iter()
            .filter(|role| {
                permission::parse_grants(&role.permissions).is_ok_and(|grants| {
                    permission::beyond_ceiling(&grants, &permissions).is_empty()
                })
            })
            .collect();
        Ok(Self { permissions, roles })
    }

    fn offers_role(&self, name: &str) -> bool {
        self.roles.iter().any(|role| role.name == name)
    }
}

/// The new-token form's values, kept when it is shown again with a problem.
#[derive(Debug, Default)]
struct Draft {
    name: String,
    description: String,
    permissions: Vec<String>,
    extra_permissions: String,
    roles: Vec<String>,
    allowed_ips: String,
    rate_limit: String,
    ttl_days: String,
    expires_on: String,
    require_signature: bool,
}

impl Draft {
    fn from_fields(fields: &Fields) -> Self {
        Self {
            name: fields.get("name").trim().to_owned(),
            description: fields.get("description").trim().to_owned(),
            permissions: fields.all("permissions").map(str::to_owned).collect(),
            extra_permissions: fields.get("extra_permissions").to_owned(),
            roles: fields.all("roles").map(str::to_owned).collect(),
            allowed_ips: fields.get("allowed_ips").to_owned(),
            rate_limit: fields.get("rate_limit").trim().to_owned(),
            ttl_days: fields.get("ttl_days").trim().to_owned(),
            expires_on: fields.get("expires_on").trim().to_owned(),
            require_signature: fields.checked("require_signature"),
        }
    }
}

fn create_body(
    portal: &Portal<'_>,
    offer: &Offer,
    draft: &Draft,
    problem: Option<&Problem>,
) -> Markup {
    html! {
        h1 { "Create a token" }
        @if let Some(problem) = problem {
            (problem.render())
        }
        form.stack method="post" action=(TOKENS_PATH) {
            input type="hidden" name="csrf" value=(portal.user.csrf);
            label for="name" { "Name" }
            input id="name" name="name" type="text" required maxlength="128" value=(draft.name);
            label for="description" { "Description (optional)" }
            textarea id="description" name="description" rows="2" maxlength="1024" { (draft.description) }
            fieldset {
                legend { "Permissions" }
                @if offer.permissions.is_empty() {
                    p.hint { "You hold no permissions of your own to give a token." }
                } @else {
                    p.hint { "A token can hold only permissions you hold yourself." }
                    @for (index, grant) in offer.permissions.iter().enumerate() {
                        div.check {
                            input type="checkbox" id={ "permission-" (index) } name="permissions"
                                value=(grant.as_str()) checked[draft.permissions.iter().any(|p| p == grant.as_str())];
                            label for={ "permission-" (index) } { code { (grant.as_str()) } }
                        }
                    }
                }
                label for="extra_permissions" { "Narrower permissions (optional, one per line)" }
                textarea id="extra_permissions" name="extra_permissions" rows="2" spellcheck="false" { (draft.extra_permissions) }
                p.hint { "Each within one of yours, such as " code { "orders:read" } " within " code { "orders:*" } "." }
            }
            @if !offer.roles.is_empty() {
                fieldset {
                    legend { "Roles" }
                    p.hint { "Only roles whose every permission you hold." }
                    @for (index, role) in offer.roles.iter().enumerate() {
                        div.check {
                            input type="checkbox" id={ "role-" (index) } name="roles" value=(role.name)
                                aria-describedby={ "role-" (index) "-grants" }
                                checked[draft.roles.contains(&role.name)];
                            label for={ "role-" (index) } { (role.name) }
                            span.hint id={ "role-" (index) "-grants" } { (role.permissions.join(", ")) }
                        }
                    }
                }
            }
            label for="allowed_ips" { "Allowed IP addresses (optional, one IP or CIDR per line)" }
            textarea id="allowed_ips" name="allowed_ips" rows="2" spellcheck="false" { (draft.allowed_ips) }
            p.hint { "Empty: the token works from anywhere." }
            label for="rate_limit" { "Rate limit (requests per minute, optional)" }
            input id="rate_limit" name="rate_limit" type="number" min="0" max="4294967295" inputmode="numeric" value=(draft.rate_limit);
            fieldset {
                legend { "Expiry" }
                label for="ttl_days" { "Expires in (days)" }
                input id="ttl_days" name="ttl_days" type="number" min="1" max=(MAX_TTL_DAYS) inputmode="numeric" value=(draft.ttl_days);
                label for="expires_on" { "Or expires at the end of (date, UTC)" }
                input id="expires_on" name="expires_on" type="date" value=(draft.expires_on);
                p.hint { "Leave both empty for the default lifetime." }
            }
            div.check {
                input type="checkbox" id="require_signature" name="require_signature" value="on" checked[draft.require_signature];
                label for="require_signature" { "Require signed requests (a signing key is shown once with the secret)" }
            }
            button type="submit" { "Create token" }
        }
    }
}

/// The new-token form.
pub async fn new_form(
    State(console): State<Console>,
    user: PortalUser,
) -> Result<Response, Response> {
    let portal = Portal::new(&console, user).await?;
    let offer = Offer::of(&portal)
        .await
        .map_err(|status| portal.refused(&status))?;
    let body = create_body(&portal, &offer, &Draft::default(), None);
    Ok(portal.ok("Create a token", PORTAL_PATH, body))
}

/// A problem's HTTP status.
fn status_of(problem: &Problem) -> StatusCode {
    page::http_status(problem.code.unwrap_or(tonic::Code::InvalidArgument))
}

/// The expiry the form asks for: a lifetime in days or a date, not both; neither: the default.
type Expiry = (
    Option<prost_types::Timestamp>,
    Option<prost_types::Duration>,
);

fn parse_expiry(draft: &Draft) -> Result<Expiry, Problem> {
    match (draft.ttl_days.is_empty(), draft.expires_on.is_empty()) {
        (true, true) => Ok((None, None)),
        (false, false) => Err(Problem::field(
            "expires_on",
            "give a number of days or a date, not both",
        )),
        (false, true) => {
            let days: u32 = draft
                .ttl_days
                .parse()
                .ok()
                .filter(|days| (1..=MAX_TTL_DAYS).contains(days))
                .ok_or_else(|| {
                    Problem::field(
                        "ttl_days",
                        &format!("must be a whole number of days from 1 to {MAX_TTL_DAYS}"),
                    )
                })?;
            Ok((
                None,
                Some(prost_types::Duration {
                    seconds: i64::from(days) * SECONDS_PER_DAY,
                    nanos: 0,
                }),
            ))
        }
        (true, false) => {
            let date = NaiveDate::parse_from_str(&draft.expires_on, "%Y-%m-%d")
                .map_err(|_| Problem::field("expires_on", "must be a date (YYYY-MM-DD)"))?;
            let end = date.and_time(NaiveTime::from_hms_opt(23, 59, 59).unwrap_or(NaiveTime::MIN));
            Ok((
                Some(prost_types::Timestamp {
                    seconds: end.and_utc().timestamp(),
                    nanos: 0,
                }),
                None,
            ))
        }
    }
}

/// An optional rate limit; empty is the server's default (0).
fn parse_rate_limit(raw: &str) -> Result<u32, Problem> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(0);
    }
    raw.parse().map_err(|_| {
        Problem::field(
            "rate_limit_per_minute",
            "must be a whole number of requests per minute",
        )
    })
}

/// The grants asked for, each checked against the principal's own before the server checks
/// them again.
fn wanted_permissions(offer: &Offer, draft: &Draft) -> Result<Vec<String>, Problem> {
    let mut wanted: Vec<String> = draft.permissions.clone();
    wanted.extend(lines(&draft.extra_permissions));
    wanted.sort();
    wanted.dedup();
    let mut grants = Vec::with_capacity(wanted.len());
    for raw in &wanted {
        let grant = Grant::parse(raw).map_err(|_| {
            Problem::field(
                "permissions",
                &format!("{raw:?} is not a permission (resource:action)"),
            )
        })?;
        grants.push(grant);
    }
    let beyond = permission::beyond_ceiling(&grants, &offer.permissions);
    if !beyond.is_empty() {
        let names: Vec<String> = beyond.iter().map(ToString::to_string).collect();
        return Err(Problem::field(
            "permissions",
            &format!("beyond your own permissions: {}", names.join(", ")),
        ));
    }
    Ok(wanted)
}

/// Creates a token of the session's principal (whatever the form says) and shows its secret,
/// once.
pub async fn create(
    State(console): State<Console>,
    Posted { user, form }: Posted<PortalUser, Fields>,
) -> Result<Response, Response> {
    let portal = Portal::new(&console, user).await?;
    let offer = Offer::of(&portal)
        .await
        .map_err(|status| portal.refused(&status))?;
    let draft = Draft::from_fields(&form);
    let again = |problem: Problem| {
        portal.page(
            status_of(&problem),
            "Create a token",
            PORTAL_PATH,
            create_body(&portal, &offer, &draft, Some(&problem)),
        )
    };
    let permissions = wanted_permissions(&offer, &draft).map_err(again)?;
    if let Some(role) = draft.roles.iter().find(|role| !offer.offers_role(role)) {
        return Err(again(Problem::field(
            "roles",
            &format!("{role:?} is not a role you may give a token"),
        )));
    }
    let rate_limit_per_minute = parse_rate_limit(&draft.rate_limit).map_err(again)?;
    let (expires_at, ttl) = parse_expiry(&draft).map_err(again)?;
    let request = proto::CreateTokenRequest {
        tenant: portal.tenant(),
        owner_id: portal.principal(),
        name: draft.name.clone(),
        description: draft.description.clone(),
        permissions,
        roles: draft.roles.clone(),
        allowed_ips: lines(&draft.allowed_ips),
        rate_limit_per_minute,
        expires_at,
        ttl,
        require_signature: draft.require_signature,
        ..Default::default()
    };
    let created = match portal
        .backend
        .api
        .create_token(portal.user.request(request))
        .await
    {
        Ok(created) => created.into_inner(),
        Err(status) => return Err(again(Problem::from_status(&status))),
    };
    let token = created.token.unwrap_or_default();
    let body = html! {
        h1 { "Token created" }
        p { "The token " strong { (token.name) } " was created." }
        (shown_once("Your new token", "secret", &created.secret))
        @if !created.signing_key.is_empty() {
            (shown_once("Its signing key", "signing-key", &created.signing_key))
        }
        div.actions {
            a.button href=(token_path(&token.id)) { "Go to the token" }
            a href=(PORTAL_PATH) { "Back to your tokens" }
        }
    };
    Ok(portal.ok("Token created", PORTAL_PATH, body))
}

#[derive(Debug, Default, Deserialize)]
pub struct NoticeQuery {
    #[serde(default)]
    notice: Option<String>,
}

fn list_or_none(items: &[String]) -> Markup {
    html! {
        @if items.is_empty() {
            "None"
        } @else {
            ul.plain {
                @for item in items {
                    li { code { (item) } }
                }
            }
        }
    }
}

/// One of the principal's tokens.
pub async fn detail(
    State(console): State<Console>,
    Path(id): Path<String>,
    Query(query): Query<NoticeQuery>,
    user: PortalUser,
) -> Result<Response, Response> {
    let portal = Portal::new(&console, user).await?;
    let token = portal.own_token(&id).await?;
    let path = token_path(&token.id);
    let rate_limit = if token.rate_limit_per_minute == 0 {
        format!(
            "{} requests per minute (the default)",
            token.effective_rate_limit_per_minute
        )
    } else {
        format!("{} requests per minute", token.rate_limit_per_minute)
    };
    let body = html! {
        h1 { "Token " (token.name) }
        @if let Some(message) = notice_for(query.notice.as_deref()) {
            (notice(message))
        }
        @if !is_revoked(&token) {
            div.actions {
                a.button href={ (path) "/edit" } { "Edit" }
                a.button href={ (path) "/rotate" } { "Rotate" }
                a.button.secondary href={ (path) "/usage" } { "Usage" }
                a.button.danger href={ (path) "/revoke" } { "Revoke" }
            }
        } @else {
            div.actions {
                a.button.secondary href={ (path) "/usage" } { "Usage" }
            }
        }
        table {
            caption.visually-hidden { "The token's details" }
            tbody {
                tr { th scope="row" { "Name" } td { (token.name) } }
                tr { th scope="row" { "Description" } td { (token.description) } }
                tr { th scope="row" { "State" } td { (state_badge(&token)) } }
                tr { th scope="row" { "Secret" } td { code { (token.secret_hint) } " (only its start and end; the secret itself was shown once)" } }
                tr { th scope="row" { "Permissions" } td { (list_or_none(&token.permissions)) } }
                tr { th scope="row" { "Roles" } td { (list_or_none(&token.roles)) } }
                tr { th scope="row" { "Allowed IP addresses" } td {
                    @if token.allowed_ips.is_empty() { "Any" } @else { (list_or_none(&token.allowed_ips)) }
                } }
                tr { th scope="row" { "Rate limit" } td { (rate_limit) } }
                tr { th scope="row" { "Signed requests" } td { @if token.require_signature { "Required" } @else { "Not required" } } }
                tr { th scope="row" { "Created" } td { (when(token.created_at.as_ref(), "—")) } }
                tr { th scope="row" { "Last used" } td { (when(token.last_used_at.as_ref(), "Never")) } }
                tr { th scope="row" { "Expires" } td { (when(token.expires_at.as_ref(), "—")) } }
                tr { th scope="row" { "Last rotated" } td { (when(token.rotated_at.as_ref(), "Never")) } }
                @if token.revoked_at.is_some() {
                    tr { th scope="row" { "Revoked" } td { (when(token.revoked_at.as_ref(), "—")) } }
                }
            }
        }
        p { a href=(PORTAL_PATH) { "Back to your tokens" } }
    };
    Ok(portal.ok(&token.name, PORTAL_PATH, body))
}

/// The edit form's values.
struct EditDraft {
    name: String,
    description: String,
    allowed_ips: String,
    rate_limit: String,
    etag: String,
}

impl EditDraft {
    fn of(token: &proto::Token) -> Self {
        Self {
            name: token.name.clone(),
            description: token.description.clone(),
            allowed_ips: token.allowed_ips.join("\n"),
            rate_limit: if token.rate_limit_per_minute == 0 {
                String::new()
            } else {
                token.rate_limit_per_minute.to_string()
            },
            etag: token.etag.clone(),
        }
    }

    fn from_fields(fields: &Fields) -> Self {
        Self {
            name: fields.get("name").trim().to_owned(),
            description: fields.get("description").trim().to_owned(),
            allowed_ips: fields.get("allowed_ips").to_owned(),
            rate_limit: fields.get("rate_limit").trim().to_owned(),
            etag: fields.get("etag").to_owned(),
        }
    }
}

fn edit_body(
    portal: &Portal<'_>,
    id: &str,
    draft: &EditDraft,
    problem: Option<&Problem>,
) -> Markup {
    html! {
        h1 { "Edit token" }
        @if let Some(problem) = problem {
            (problem.render())
        }
        form.stack method="post" action={ (token_path(id)) "/edit" } {
            input type="hidden" name="csrf" value=(portal.user.csrf);
            input type="hidden" name="etag" value=(draft.etag);
            label for="name" { "Name" }
            input id="name" name="name" type="text" required maxlength="128" value=(draft.name);
            label for="description" { "Description" }
            textarea id="description" name="description" rows="2" maxlength="1024" { (draft.description) }
            label for="allowed_ips" { "Allowed IP addresses (one IP or CIDR per line)" }
            textarea id="allowed_ips" name="allowed_ips" rows="3" spellcheck="false" { (draft.allowed_ips) }
            p.hint { "Empty: the token works from anywhere." }
            label for="rate_limit" { "Rate limit (requests per minute, optional)" }
            input id="rate_limit" name="rate_limit" type="number" min="0" max="4294967295" inputmode="numeric" value=(draft.rate_limit);
            p.hint { "Empty: the default." }
            button type="submit" { "Save changes" }
        }
        p { a href=(token_path(id)) { "Cancel" } }
    }
}

pub async fn edit_form(
    State(console): State<Console>,
    Path(id): Path<String>,
    user: PortalUser,
) -> Result<Response, Response> {
    let portal = Portal::new(&console, user).await?;
    let token = portal.own_token(&id).await?;
    let body = edit_body(&portal, &token.id, &EditDraft::of(&token), None);
    Ok(portal.ok("Edit token", PORTAL_PATH, body))
}

/// UpdateToken of name, description, allowed IPs and rate limit, only if the token is still
/// the version the form was made from.
pub async fn edit(
    State(console): State<Console>,
    Path(id): Path<String>,
    Posted { user, form }: Posted<PortalUser, Fields>,
) -> Result<Response, Response> {
    let portal = Portal::new(&console, user).await?;
    let token = portal.own_token(&id).await?;
    let draft = EditDraft::from_fields(&form);
    let again = |problem: Problem| {
        portal.page(
            status_of(&problem),
            "Edit token",
            PORTAL_PATH,
            edit_body(&portal, &token.id, &draft, Some(&problem)),
        )
    };
    let rate_limit_per_minute = parse_rate_limit(&draft.rate_limit).map_err(again)?;
    let request = proto::UpdateTokenRequest {
        id: token.id.clone(),
        name: draft.name.clone(),
        description: draft.description.clone(),
        allowed_ips: lines(&draft.allowed_ips),
        rate_limit_per_minute,
        update_mask: Some(prost_types::FieldMask {
            paths: [
                "name",
                "description",
                "allowed_ips",
                "rate_limit_per_minute",
            ]
            .map(str::to_owned)
            .to_vec(),
        }),
        etag: draft.etag.clone(),
        ..Default::default()
    };
    match portal
        .backend
        .api
        .update_token(portal.user.request(request))
        .await
    {
        Ok(_) => {
            Ok(Redirect::to(&format!("{}?notice=updated", token_path(&token.id))).into_response())
        }
        Err(status) => Err(again(Problem::from_status(&status))),
    }
}

/// The grace periods the rotate form offers: (seconds, label).
const GRACE_PERIODS: &[(u32, &str)] = &[
    (0, "None: the old secret stops working now"),
    (300, "5 minutes"),
    (3600, "1 hour"),
    (86_400, "24 hours"),
];

fn rotate_body(portal: &Portal<'_>, token: &proto::Token, problem: Option<&Problem>) -> Markup {
    html! {
        h1 { "Rotate token " (token.name) }
        @if let Some(problem) = problem {
            (problem.render())
        }
        p { "Rotating gives the token a new secret, shown once; its name, permissions and settings stay." }
        form.stack method="post" action={ (token_path(&token.id)) "/rotate" } {
            input type="hidden" name="csrf" value=(portal.user.csrf);
            label for="grace_seconds" { "Keep the old secret working for" }
            select id="grace_seconds" name="grace_seconds" {
                @for (seconds, label) in GRACE_PERIODS {
                    option value=(seconds) { (label) }
                }
            }
            p.hint { "A grace period lets your programs switch to the new secret before the old one stops." }
            button type="submit" { "Rotate token" }
        }
        p { a href=(token_path(&token.id)) { "Cancel" } }
    }
}

pub async fn rotate_form(
    State(console): State<Console>,
    Path(id): Path<String>,
    user: PortalUser,
) -> Result<Response, Response> {
    let portal = Portal::new(&console, user).await?;
    let token = portal.own_token(&id).await?;
    let body = rotate_body(&portal, &token, None);
    Ok(portal.ok("Rotate token", PORTAL_PATH, body))
}

/// RotateToken with the grace period chosen; the new secret is shown once.
pub async fn rotate(
    State(console): State<Console>,
    Path(id): Path<String>,
    Posted { user, form }: Posted<PortalUser, Fields>,
) -> Result<Response, Response> {
    let portal = Portal::new(&console, user).await?;
    let token = portal.own_token(&id).await?;
    let again = |problem: Problem| {
        portal.page(
            status_of(&problem),
            "Rotate token",
            PORTAL_PATH,
            rotate_body(&portal, &token, Some(&problem)),
        )
    };
    let raw = form.get("grace_seconds").trim();
    let grace: u32 = if raw.is_empty() {
        0
    } else {
        raw.parse().map_err(|_| {
            again(Problem::field(
                "grace_period",
                "must be a whole number of seconds",
            ))
        })?
    };
    let request = proto::RotateTokenRequest {
        id: token.id.clone(),
        grace_period: (grace > 0).then(|| prost_types::Duration {
            seconds: i64::from(grace),
            nanos: 0,
        }),
    };
    let rotated = match portal
        .backend
        .api
        .rotate_token(portal.user.request(request))
        .await
    {
        Ok(rotated) => rotated.into_inner(),
        Err(status) => return Err(again(Problem::from_status(&status))),
    };
    let grace_label = GRACE_PERIODS
        .iter()
        .find(|(seconds, _)| *seconds == grace)
        .map_or_else(
            || format!("{grace} seconds"),
            |(_, label)| (*label).to_owned(),
        );
    let body = html! {
        h1 { "Token rotated" }
        p { "The token " strong { (token.name) } " has a new secret. Old secret's grace period: " (grace_label) "." }
        (shown_once("Its new secret", "secret", &rotated.secret))
        @if !rotated.signing_key.is_empty() {
            (shown_once("Its new signing key", "signing-key", &rotated.signing_key))
        }
        div.actions {
            a.button href=(token_path(&token.id)) { "Go to the token" }
            a href=(PORTAL_PATH) { "Back to your tokens" }
        }
    };
    Ok(portal.ok("Token rotated", PORTAL_PATH, body))
}

fn revoke_body(
    portal: &Portal<'_>,
    token: &proto::Token,
    typed: &str,
    problem: Option<&Problem>,
) -> Markup {
    html! {
        h1 { "Revoke token " (token.name) }
        @if let Some(problem) = problem {
            (problem.render())
        }
        @if is_revoked(token) {
            p { "This token is already revoked." }
        } @else {
            p.warning { strong { "Revoking is immediate and cannot be undone." } " Programs using this token stop working at once." }
            form.stack method="post" action={ (token_path(&token.id)) "/revoke" } data-confirm=(token.name) {
                input type="hidden" name="csrf" value=(portal.user.csrf);
                label for="confirm" { "Type the token's name, " strong { (token.name) } ", to confirm" }
                input id="confirm" name="confirm" type="text" required autocomplete="off" spellcheck="false" value=(typed);
                button.danger type="submit" { "Revoke token" }
            }
        }
        p { a href=(token_path(&token.id)) { "Cancel" } }
    }
}

pub async fn revoke_form(
    State(console): State<Console>,
    Path(id): Path<String>,
    user: PortalUser,
) -> Result<Response, Response> {
    let portal = Portal::new(&console, user).await?;
    let token = portal.own_token(&id).await?;
    let body = revoke_body(&portal, &token, "", None);
    Ok(portal.ok("Revoke token", PORTAL_PATH, body))
}

/// RevokeToken, only when the name typed is the token's (checked here, whatever the page's
/// script did).
pub async fn revoke(
    State(console): State<Console>,
    Path(id): Path<String>,
    Posted { user, form }: Posted<PortalUser, Fields>,
) -> Result<Response, Response> {
    let portal = Portal::new(&console, user).await?;
    let token = portal.own_token(&id).await?;
    let typed = form.get("confirm");
    let again = |problem: Problem| {
        portal.page(
            status_of(&problem),
            "Revoke token",
            PORTAL_PATH,
            revoke_body(&portal, &token, typed, Some(&problem)),
        )
    };
    if typed != token.name {
        return Err(again(Problem::field(
            "confirm",
            "does not match the token's name; nothing was revoked",
        )));
    }
    match portal
        .backend
        .api
        .revoke_token(portal.user.request(proto::RevokeTokenRequest {
            id: token.id.clone(),
        }))
        .await
    {
        Ok(_) => Ok(Redirect::to(&format!("{PORTAL_PATH}?notice=revoked")).into_response()),
        Err(status) => Err(again(Problem::from_status(&status))),
    }
}
