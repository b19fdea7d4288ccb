//! Tokens: the list (owner, revoked ones, pages), a token's page, create (the secret and
//! signing key shown once), rotate (shown once), suspend, resume and revoke (the name typed to
//! confirm).

use crate::console::page::column_heads;
use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::NaiveDate;
use maud::{Markup, html};
use serde::Deserialize;

use super::{
    Page, hidden_fields, href, href_with, layout_in, lines, may, number, refused, refused_form,
    time,
};
use crate::admin::rights::Right;
use crate::console::page::{self, Problem};
use crate::console::session::{ConsoleUser, CsrfForm, Posted};
use crate::console::{Backend, Console};
use crate::proto;
use crate::proto::token_admin_service_server::TokenAdminService as _;

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/console/tokens", get(list).post(create))
        .route("/console/tokens/new", get(new))
        .route("/console/tokens/{id}", get(detail))
        .route("/console/tokens/{id}/rotate", post(rotate))
        .route("/console/tokens/{id}/suspend", post(suspend))
        .route("/console/tokens/{id}/resume", post(resume))
        .route("/console/tokens/{id}/revoke", post(revoke))
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    include_revoked: Option<String>,
    #[serde(default)]
    page_token: String,
}

/// A token's state as a badge (words, not only colour).
pub fn state_badge(state: i32) -> Markup {
    let (class, label) = match proto::TokenState::try_from(state) {
        Ok(proto::TokenState::Active) => ("badge active", "active"),
        Ok(proto::TokenState::Expired) => ("badge expired", "expired"),
        Ok(proto::TokenState::Revoked) => ("badge revoked", "revoked"),
        Ok(proto::TokenState::Suspended) => ("badge suspended", "suspended"),
        _ => ("badge", "unknown"),
    };
    html! { span class=(class) { (label) } }
}

async fn list(
    State(console): State<Console>,
    user: ConsoleUser,
    Query(query): Query<ListQuery>,
) -> Page {
    let backend = console.backend()?;
    let listed = backend
        .api
        .list_tokens(user.request(proto::ListTokensRequest {
            tenant: query.tenant.clone(),
            owner_id: query.owner.trim().to_owned(),
            include_revoked: query.include_revoked.is_some(),
            page_size: 50,
            page_token: query.page_token.clone(),
            ..Default::default()
        }))
        .await
        .map_err(refused)?
        .into_inner();
    let tenant = &query.tenant;
    let revoked = if query.include_revoked.is_some() {
        "on"
    } else {
        ""
    };
    let body = html! {
        h1 { "Tokens" }
        form.inline method="get" action="/console/tokens" {
            input type="hidden" name="tenant" value=(tenant);
            label for="owner" { "Owner" }
            input id="owner" name="owner" type="text" value=(query.owner);
            input id="include_revoked" name="include_revoked" type="checkbox" checked[query.include_revoked.is_some()];
            label for="include_revoked" { "Include revoked" }
            button.secondary type="submit" { "Filter" }
        }
        @if may(&user, Right::WriteTokens) {
            p { a.button href=(href("/console/tokens/new", tenant)) { "Create token" } }
        }
        @if listed.tokens.is_empty() {
            p { "No tokens match." }
        } @else {
            div.table-scroll {
                table {
                    (column_heads(&["Name", "Owner", "State", "Created", "Last used", "Expires"]))
                    tbody {
                        @for token in &listed.tokens {
                            tr {
                                td { a href=(href(&format!("/console/tokens/{}", token.id), tenant)) { (token.name) } br; code { (token.secret_hint) } }
                                td { (token.owner_id) }
                                td { (state_badge(token.state)) }
                                td { (time(token.created_at.as_ref())) }
                                td { (time(token.last_used_at.as_ref())) }
                                td { (time(token.expires_at.as_ref())) }
                            }
                        }
                    }
                }
            }
        }
        @if !listed.next_page_token.is_empty() {
            p.pager {
                a href=(href_with("/console/tokens", tenant, &[("owner", &query.owner), ("include_revoked", revoked), ("page_token", &listed.next_page_token)])) { "Next page" }
            }
        }
    };
    Ok(layout_in(&user, "Tokens", "/console/tokens", tenant, body).into_response())
}

#[derive(Debug, Default, Deserialize)]
struct CreateForm {
    csrf: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    owner_id: String,
    #[serde(default)]
    permissions: String,
    #[serde(default)]
    roles: String,
    #[serde(default)]
    allowed_ips: String,
    #[serde(default)]
    rate_limit: String,
    /// Days to live; or `expires_on`.
    #[serde(default)]
    ttl_days: String,
    /// YYYY-MM-DD (the end of that day, UTC).
    #[serde(default)]
    expires_on: String,
    #[serde(default)]
    require_signature: Option<String>,
    /// `key=value` lines.
    #[serde(default)]
    metadata: String,
    #[serde(default)]
    credits: String,
    #[serde(default)]
    refill_amount: String,
    #[serde(default)]
    refill_hours: String,
}

impl CsrfForm for CreateForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn new(user: ConsoleUser, Query(query): Query<super::TenantQuery>) -> Response {
    let draft = CreateForm {
        tenant: query.tenant,
        ..Default::default()
    };
    create_page(&user, &draft, None).into_response()
}

fn create_page(user: &ConsoleUser, draft: &CreateForm, problem: Option<Problem>) -> Response {
    let body = html! {
        h1 { "Create a token" }
        @if let Some(problem) = &problem { (problem.render()) }
        form.stack method="post" action="/console/tokens" {
            (hidden_fields(user, &draft.tenant))
            label for="name" { "Name" }
            input id="name" name="name" type="text" required value=(draft.name);
            label for="description" { "Description" }
            input id="description" name="description" type="text" value=(draft.description);
            label for="owner_id" { "Owner (principal id)" }
            input id="owner_id" name="owner_id" type="text" required value=(draft.owner_id);
            label for="permissions" { "Permissions (one per line)" }
            textarea id="permissions" name="permissions" rows="3" { (draft.permissions) }
            label for="roles" { "Roles (one per line)" }
            textarea id="roles" name="roles" rows="2" { (draft.roles) }
            label for="allowed_ips" { "Allowed IPs or CIDRs (one per line; empty: any)" }
            textarea id="allowed_ips" name="allowed_ips" rows="2" { (draft.allowed_ips) }
            label for="rate_limit" { "Rate limit per minute (empty: the owner's or tenant's)" }
            input id="rate_limit" name="rate_limit" type="number" min="0" value=(draft.rate_limit);
            fieldset {
                legend { "Expiry (one of these, or neither)" }
                label for="ttl_days" { "Lives for (days)" }
                input id="ttl_days" name="ttl_days" type="number" min="1" value=(draft.ttl_days);
                label for="expires_on" { "Expires at the end of (date, UTC)" }
                input id="expires_on" name="expires_on" type="date" value=(draft.expires_on);
            }
            div {
                input id="require_signature" name="require_signature" type="checkbox" checked[draft.require_signature.is_some()];
                label for="require_signature" { "Require signed requests (a signing key is shown once)" }
            }
            label for="metadata" { "Metadata (key=value, one per line)" }
            textarea id="metadata" name="metadata" rows="2" { (draft.metadata) }
            fieldset {
                legend { "Credits (empty: unlimited)" }
                label for="credits" { "Credits" }
                input id="credits" name="credits" type="number" min="0" value=(draft.credits);
                label for="refill_amount" { "Refill amount" }
                input id="refill_amount" name="refill_amount" type="number" min="0" value=(draft.refill_amount);
                label for="refill_hours" { "Refill every (hours)" }
                input id="refill_hours" name="refill_hours" type="number" min="1" value=(draft.refill_hours);
            }
            button type="submit" { "Create token" }
        }
    };
    let status = problem.as_ref().and_then(|problem| problem.code);
    let markup = layout_in(
        user,
        "Create a token",
        "/console/tokens",
        &draft.tenant,
        body,
    );
    match status {
        Some(_) => refused_form(status, markup),
        None => markup.into_response(),
    }
}

/// The create form as the RPC's request, or the field the page itself cannot read.
fn create_request(form: &CreateForm) -> Result<proto::CreateTokenRequest, Problem> {
    let rate_limit = number::<u32>("rate_limit", &form.rate_limit)?.unwrap_or(0);
    let ttl_days = number::<i64>("ttl_days", &form.ttl_days)?;
    let expires_on = form.expires_on.trim();
    let expires_at = if expires_on.is_empty() {
        None
    } else {
        let date = NaiveDate::parse_from_str(expires_on, "%Y-%m-%d")
            .map_err(|_| Problem::field("expires_on", "must be a date (YYYY-MM-DD)"))?;
        let end = date
            .and_hms_opt(23, 59, 59)
            .ok_or_else(|| Problem::field("expires_on", "must be a date (YYYY-MM-DD)"))?
            .and_utc();
        Some(prost_types::Timestamp {
            seconds: end.timestamp(),
            nanos: 0,
        })
    };
    if ttl_days.is_some() && expires_at.is_some() {
        return Err(Problem::field("ttl_days", "give days or a date, not both"));
    }
    let ttl = match ttl_days {
        Some(days) if !(1..=36_500).contains(&days) => {
            return Err(Problem::field("ttl_days", "must be between 1 and 36500"));
        }
        Some(days) => Some(prost_types::Duration {
            seconds: days * 86_400,
            nanos: 0,
        }),
        None => None,
    };
    let mut metadata = HashMap::new();
    for line in lines(&form.metadata) {
        let Some((key, value)) = line.split_once('=') else {
            return Err(Problem::field("metadata", "each line is key=value"));
        };
        metadata.insert(key.trim().to_owned(), value.trim().to_owned());
    }
    let credits = match number::<u64>("credits", &form.credits)? {
        None => None,
        Some(remaining) => {
            let refill_amount = number::<u64>("refill_amount", &form.refill_amount)?.unwrap_or(0);
            let refill_hours = number::<i64>("refill_hours", &form.refill_hours)?;
            Some(proto::TokenCredits {
                remaining,
                refill_amount,
                refill_interval: refill_hours.map(|hours| prost_types::Duration {
                    seconds: hours.saturating_mul(3600),
                    nanos: 0,
                }),
                refilled_at: None,
            })
        }
    };
    Ok(proto::CreateTokenRequest {
        tenant: form.tenant.clone(),
        owner_id: form.owner_id.trim().to_owned(),
        name: form.name.clone(),
        description: form.description.clone(),
        permissions: lines(&form.permissions),
        roles: lines(&form.roles),
        allowed_ips: lines(&form.allowed_ips),
        rate_limit_per_minute: rate_limit,
        expires_at,
        ttl,
        require_signature: form.require_signature.is_some(),
        metadata,
        credits,
    })
}

async fn create(
    State(console): State<Console>,
    Posted { user, form }: Posted<ConsoleUser, CreateForm>,
) -> Page {
    let backend = console.backend()?;
    let request = match create_request(&form) {
        Ok(request) => request,
        Err(problem) => return Ok(create_page(&user, &form, Some(problem))),
    };
    match backend.api.create_token(user.request(request)).await {
        Ok(created) => {
            let created = created.into_inner();
            let token = created.token.unwrap_or_default();
            Ok(secret_page(
                &user,
                &form.tenant,
                "Token created",
                &token,
                &created.secret,
                &created.signing_key,
            ))
        }
        Err(status) => Ok(create_page(
            &user,
            &form,
            Some(Problem::from_status(&status)),
        )),
    }
}

/// The page that shows a new secret (and signing key) once: 200, never a redirect.
fn secret_page(
    user: &ConsoleUser,
    tenant: &str,
    title: &str,
    token: &proto::Token,
    secret: &str,
    signing_key: &str,
) -> Response {
    let body = html! {
        h1 { (title) }
        p { "Token " strong { (token.name) } " (" code { (token.id) } ") of " (token.owner_id) "." }
        (page::shown_once("Token secret", "token-secret", secret))
        @if !signing_key.is_empty() {
            (page::shown_once("Signing key", "signing-key", signing_key))
        }
        p { a href=(href(&format!("/console/tokens/{}", token.id), tenant)) { "Go to the token's page" } }
    };
    layout_in(user, title, "/console/tokens", tenant, body).into_response()
}

async fn detail(
    State(console): State<Console>,
    user: ConsoleUser,
    Path(id): Path<String>,
    Query(query): Query<super::TenantQuery>,
) -> Page {
    let backend = console.backend()?;
    detail_page(backend, &user, &id, &query.tenant, None).await
}

async fn get_token(
    backend: &Backend,
    user: &ConsoleUser,
    id: &str,
) -> Result<proto::Token, tonic::Status> {
    Ok(backend
        .api
        .get_token(user.request(proto::GetTokenRequest { id: id.to_owned() }))
        .await?
        .into_inner()
        .token
        .unwrap_or_default())
}

async fn detail_page(
    backend: &Backend,
    user: &ConsoleUser,
    id: &str,
    tenant: &str,
    problem: Option<Problem>,
) -> Page {
    let token = get_token(backend, user, id).await.map_err(refused)?;
    let path = format!("/console/tokens/{}", token.id);
    let active = token.state == proto::TokenState::Active as i32;
    let suspended = token.state == proto::TokenState::Suspended as i32;
    let revoked = token.state == proto::TokenState::Revoked as i32;
    let mut metadata: Vec<_> = token.metadata.iter().collect();
    metadata.sort();
    let body = html! {
        h1 { "Token " (token.name) }
        @if let Some(problem) = &problem { (problem.render()) }
        table {
            tbody {
                tr { th scope="row" { "Id" } td { code { (token.id) } } }
                tr { th scope="row" { "State" } td { (state_badge(token.state))
                    @if !token.suspend_reason.is_empty() { " " (token.suspend_reason) } } }
                tr { th scope="row" { "Tenant" } td { (token.tenant) } }
                tr { th scope="row" { "Owner" } td { a href=(href_with("/console/tokens", tenant, &[("owner", &token.owner_id)])) { (token.owner_id) } } }
                tr { th scope="row" { "Description" } td { (token.description) } }
                tr { th scope="row" { "Secret" } td { code { (token.secret_hint) } } }
                tr { th scope="row" { "Permissions" } td { (token.permissions.join(", ")) } }
                tr { th scope="row" { "Roles" } td { (token.roles.join(", ")) } }
                tr { th scope="row" { "Allowed IPs" } td { @if token.allowed_ips.is_empty() { "any" } @else { (token.allowed_ips.join(", ")) } } }
                tr { th scope="row" { "Rate limit" } td { (token.effective_rate_limit_per_minute) "/min" } }
                tr { th scope="row" { "Signed requests" } td { @if token.require_signature { "required" } @else { "not required" } } }
                tr { th scope="row" { "Credits" } td { @match &token.credits { Some(credits) => { (credits.remaining) " left" }, None => "unlimited" } } }
                tr { th scope="row" { "Created" } td { (time(token.created_at.as_ref())) } }
                tr { th scope="row" { "Last used" } td { (time(token.last_used_at.as_ref())) } }
                tr { th scope="row" { "Expires" } td { (time(token.expires_at.as_ref())) } }
                tr { th scope="row" { "Rotated" } td { (time(token.rotated_at.as_ref())) } }
                tr { th scope="row" { "Revoked" } td { (time(token.revoked_at.as_ref())) } }
                @for (key, value) in &metadata {
                    tr { th scope="row" { "Metadata " code { (key) } } td { (value) } }
                }
                @if !token.policy_violations.is_empty() {
                    tr { th scope="row" { "Policy violations" } td { (token.policy_violations.join("; ")) } }
                }
            }
        }
        p { a href=(href_with("/console/usage", tenant, &[("token", &token.id)])) { "Usage of this token" } }
        @if may(user, Right::WriteTokens) && !revoked {
            h2 { "Rotate" }
            form.stack method="post" action={ (path) "/rotate" } {
                (hidden_fields(user, tenant))
                label for="grace_minutes" { "Grace period for the old secret (minutes; empty: none)" }
                input id="grace_minutes" name="grace_minutes" type="number" min="0";
                button type="submit" { "Rotate secret" }
            }
            @if active {
                h2 { "Suspend" }
                form.stack method="post" action={ (path) "/suspend" } {
                    (hidden_fields(user, tenant))
                    label for="reason" { "Reason" }
                    input id="reason" name="reason" type="text";
                    button.secondary type="submit" { "Suspend token" }
                }
            }
            @if suspended {
                h2 { "Resume" }
                form.stack method="post" action={ (path) "/resume" } {
                    (hidden_fields(user, tenant))
                    button.secondary type="submit" { "Resume token" }
                }
            }
            h2 { "Revoke" }
            form.stack method="post" action={ (path) "/revoke" } data-confirm=(token.name) {
                (hidden_fields(user, tenant))
                label for="confirm" { "Type the token's name, " strong { (token.name) } ", to revoke it for good" }
                input id="confirm" name="confirm" type="text" autocomplete="off" required;
                button.danger type="submit" { "Revoke token" }
            }
        }
    };
    let status = problem.as_ref().and_then(|problem| problem.code);
    let markup = layout_in(user, &token.name, "/console/tokens", tenant, body);
    Ok(match status {
        Some(_) => refused_form(status, markup),
        None => markup.into_response(),
    })
}

#[derive(Debug, Default, Deserialize)]
struct ActionForm {
    csrf: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    grace_minutes: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    confirm: String,
}

impl CsrfForm for ActionForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// After an action: back to the token's page (303), or the page with the refusal.
async fn after(
    backend: &Backend,
    user: &ConsoleUser,
    id: &str,
    tenant: &str,
    result: Result<(), Problem>,
) -> Page {
    match result {
        Ok(()) => Ok(Redirect::to(&href(&format!("/console/tokens/{id}"), tenant)).into_response()),
        Err(problem) => detail_page(backend, user, id, tenant, Some(problem)).await,
    }
}

async fn rotate(
    State(console): State<Console>,
    Path(id): Path<String>,
    Posted { user, form }: Posted<ConsoleUser, ActionForm>,
) -> Page {
    let backend = console.backend()?;
    let grace = match number::<i64>("grace_minutes", &form.grace_minutes) {
        Ok(grace) => grace.map(|minutes| prost_types::Duration {
            seconds: minutes.saturating_mul(60),
            nanos: 0,
        }),
        Err(problem) => return after(backend, &user, &id, &form.tenant, Err(problem)).await,
    };
    let rotated = backend
        .api
        .rotate_token(user.request(proto::RotateTokenRequest {
            id: id.clone(),
            grace_period: grace,
        }))
        .await;
    match rotated {
        Ok(rotated) => {
            let rotated = rotated.into_inner();
            Ok(secret_page(
                &user,
                &form.tenant,
                "Token rotated",
                &rotated.token.unwrap_or_default(),
                &rotated.secret,
                &rotated.signing_key,
            ))
        }
        Err(status) => {
            after(
                backend,
                &user,
                &id,
                &form.tenant,
                Err(Problem::from_status(&status)),
            )
            .await
        }
    }
}

async fn suspend(
    State(console): State<Console>,
    Path(id): Path<String>,
    Posted { user, form }: Posted<ConsoleUser, ActionForm>,
) -> Page {
    let backend = console.backend()?;
    let result = done(
        backend
            .api
            .suspend_token(user.request(proto::SuspendTokenRequest {
                id: id.clone(),
                reason: form.reason.clone(),
            }))
            .await,
    );
    after(backend, &user, &id, &form.tenant, result).await
}

async fn resume(
    State(console): State<Console>,
    Path(id): Path<String>,
    Posted { user, form }: Posted<ConsoleUser, ActionForm>,
) -> Page {
    let backend = console.backend()?;
    let result = done(
        backend
            .api
            .resume_token(user.request(proto::ResumeTokenRequest { id: id.clone() }))
            .await,
    );
    after(backend, &user, &id, &form.tenant, result).await
}

async fn revoke(
    State(console): State<Console>,
    Path(id): Path<String>,
    Posted { user, form }: Posted<ConsoleUser, ActionForm>,
) -> Page {
    let backend = console.backend()?;
    // The typed name is checked here, whatever the page's script did.
    let token = get_token(backend, &user, &id).await.map_err(refused)?;
    if form.confirm != token.name {
        let problem = Problem::field("confirm", "must be the token's name, exactly");
        return after(backend, &user, &id, &form.tenant, Err(problem)).await;
    }
    let result = done(
        backend
            .api
            .revoke_token(user.request(proto::RevokeTokenRequest { id: id.clone() }))
            .await,
    );
    after(backend, &user, &id, &form.tenant, result).await
}

/// An action's answer as the page after it needs it: done, or the problem it met.
fn done<T>(answer: Result<tonic::Response<T>, tonic::Status>) -> Result<(), Problem> {
    answer
        .map(|_| ())
        .map_err(|status| Problem::from_status(&status))
}
