//! The API status switch (the tenant's and the global one), admin keys (list, create with the
//! secret shown once, revoke), webhooks (list, create with the secret shown once, delete,
//! deliveries) and the audit log.

use crate::console::page::column_heads;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;
use serde::Deserialize;

use super::{
    Page, hidden_fields, href, layout_in, lines, may, next_page, number, post_button, refused,
    refused_form, time,
};
use crate::admin::rights::Right;
use crate::console::page::{self, Problem};
use crate::console::session::{ConsoleUser, CsrfForm, Posted};
use crate::console::{Backend, Console};
use crate::proto;
use crate::proto::token_admin_service_server::TokenAdminService as _;

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/console/status", get(status).post(set_status))
        .route(
            "/console/admin-keys",
            get(admin_keys).post(create_admin_key),
        )
        .route("/console/admin-keys/{id}/revoke", post(revoke_admin_key))
        .route("/console/webhooks", get(webhooks).post(create_webhook))
        .route("/console/webhooks/{id}", get(deliveries))
        .route("/console/webhooks/{id}/delete", post(delete_webhook))
        .route("/console/audit", get(audit))
}

#[derive(Debug, Default, Deserialize)]
struct PageQuery {
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    page_token: String,
    #[serde(default)]
    include_revoked: Option<String>,
}

impl PageQuery {
    /// A list's first page in `tenant`: where a form sends the operator back to.
    fn first_in(tenant: &str) -> Self {
        Self {
            tenant: tenant.to_owned(),
            ..Self::default()
        }
    }
}

fn with_problem(markup: maud::Markup, problem: Option<&Problem>) -> Response {
    match problem.and_then(|problem| problem.code) {
        Some(code) => refused_form(Some(code), markup),
        None => markup.into_response(),
    }
}

// --- API status ---

#[derive(Debug, Default, Deserialize)]
struct StatusForm {
    csrf: String,
    #[serde(default)]
    tenant: String,
    /// `tenant` or `global`.
    #[serde(default)]
    scope: String,
    #[serde(default)]
    online: String,
    #[serde(default)]
    message: String,
}

impl CsrfForm for StatusForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn status(
    State(console): State<Console>,
    user: ConsoleUser,
    Query(query): Query<PageQuery>,
) -> Page {
    let backend = console.backend()?;
    status_page(backend, &user, &query.tenant, None).await
}

async fn get_status(
    backend: &Backend,
    user: &ConsoleUser,
    tenant: &str,
) -> Result<proto::ApiStatus, Response> {
    Ok(backend
        .api
        .get_api_status(user.request(proto::GetApiStatusRequest {
            tenant: tenant.to_owned(),
        }))
        .await
        .map_err(refused)?
        .into_inner()
        .status
        .unwrap_or_default())
}

async fn status_page(
    backend: &Backend,
    user: &ConsoleUser,
    tenant: &str,
    problem: Option<Problem>,
) -> Page {
    let own = get_status(backend, user, tenant).await?;
    let global = get_status(backend, user, crate::domain::fields::ALL_TENANTS).await?;
    let writes = may(user, Right::WriteApiStatus);
    let all = user.actor.tenants.is_all();
    let switch = |scope: &'static str, label: String, current: &proto::ApiStatus| {
        html! {
            section {
                h2 { (label) }
                p {
                    @if current.online { span.badge.active { "online" } } @else { span.badge.revoked { "offline" } }
                    @if !current.message.is_empty() { " " (current.message) }
                    " (since " (time(current.updated_at.as_ref())) ")"
                }
                @if writes && (scope == "tenant" || all) {
                    form.stack method="post" action="/console/status" {
                        (hidden_fields(user, tenant))
                        input type="hidden" name="scope" value=(scope);
                        label for={ (scope) "-online" } { "State" }
                        select id={ (scope) "-online" } name="online" {
                            option value="online" selected[current.online] { "Online" }
                            option value="offline" selected[!current.online] { "Offline" }
                        }
                        label for={ (scope) "-message" } { "Message (Check answers it while offline)" }
                        input id={ (scope) "-message" } name="message" type="text" value=(current.message);
                        button type="submit" { "Set " (scope) " status" }
                    }
                }
            }
        }
    };
    let body = html! {
        h1 { "API status" }
        @if let Some(problem) = &problem { (problem.render()) }
        (switch("tenant", format!("The API of {}", super::tenant_label(tenant)), &own))
        (switch("global", "Every tenant's API (global switch)".to_owned(), &global))
    };
    let markup = layout_in(user, "API status", "/console/status", tenant, body);
    Ok(with_problem(markup, problem.as_ref()))
}

async fn set_status(
    State(console): State<Console>,
    Posted { user, form }: Posted<ConsoleUser, StatusForm>,
) -> Page {
    let backend = console.backend()?;
    let scope = if form.scope == "global" {
        crate::domain::fields::ALL_TENANTS.to_owned()
    } else {
        form.tenant.clone()
    };
    let set = backend
        .api
        .set_api_status(user.request(proto::SetApiStatusRequest {
            tenant: scope,
            online: form.online == "online",
            message: form.message.clone(),
        }))
        .await;
    match set {
        Ok(_) => Ok(Redirect::to(&href("/console/status", &form.tenant)).into_response()),
        Err(status) => {
            let problem = Problem::from_status(&status);
            status_page(backend, &user, &form.tenant, Some(problem)).await
        }
    }
}

// --- Admin keys ---

#[derive(Debug, Default, Deserialize)]
struct AdminKeyForm {
    csrf: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    /// One per line; empty: every tenant.
    #[serde(default)]
    tenants: String,
    #[serde(default)]
    ttl_days: String,
}

impl CsrfForm for AdminKeyForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

fn role_name(role: i32) -> &'static str {
    match proto::AdminRole::try_from(role) {
        Ok(proto::AdminRole::Viewer) => "viewer",
        Ok(proto::AdminRole::TokenManager) => "token_manager",
        Ok(proto::AdminRole::Owner) => "owner",
        _ => "unknown",
    }
}

async fn admin_keys(
    State(console): State<Console>,
    user: ConsoleUser,
    Query(query): Query<PageQuery>,
) -> Page {
    let backend = console.backend()?;
    admin_keys_page(backend, &user, &query, &AdminKeyForm::default(), None).await
}

async fn admin_keys_page(
    backend: &Backend,
    user: &ConsoleUser,
    query: &PageQuery,
    draft: &AdminKeyForm,
    problem: Option<Problem>,
) -> Page {
    let listed = backend
        .api
        .list_admin_keys(user.request(proto::ListAdminKeysRequest {
            page_size: 50,
            page_token: query.page_token.clone(),
            include_revoked: query.include_revoked.is_some(),
        }))
        .await
        .map_err(refused)?
        .into_inner();
    let tenant = &query.tenant;
    let writes = may(user, Right::WriteAdminKeys);
    let body = html! {
        h1 { "Admin keys" }
        @if let Some(problem) = &problem { (problem.render()) }
        form.inline method="get" action="/console/admin-keys" {
            input type="hidden" name="tenant" value=(tenant);
            input id="include_revoked" name="include_revoked" type="checkbox" checked[query.include_revoked.is_some()];
            label for="include_revoked" { "Include revoked" }
            button.secondary type="submit" { "Filter" }
        }
        div.table-scroll {
            table {
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Id" } th scope="col" { "Role" } th scope="col" { "Tenants" }
                    th scope="col" { "Created" } th scope="col" { "Last used" } th scope="col" { "Expires" } th scope="col" { "State" }
                    @if writes { th scope="col" { "Actions" } }
                } }
                tbody {
                    @for key in &listed.admin_keys {
                        tr {
                            td { (key.name) }
                            td { code { (key.id) } }
                            td { (role_name(key.role)) }
                            td { @if key.tenants.is_empty() { "every tenant" } @else { (key.tenants.join(", ")) } }
                            td { (time(key.created_at.as_ref())) " by " (key.created_by) }
                            td { (time(key.last_used_at.as_ref())) }
                            td { (time(key.expires_at.as_ref())) }
                            td { @if key.revoked_at.is_some() { span.badge.revoked { "revoked" } } @else { span.badge.active { "active" } } }
                            @if writes {
                                td {
                                    @if key.revoked_at.is_none() && key.id != user.actor.admin_key {
                                        (post_button(&format!("/console/admin-keys/{}/revoke", key.id), user, tenant, &format!("Revoke {}", key.name)))
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        (next_page("/console/admin-keys", tenant, &listed.next_page_token, "Next page"))
        @if writes {
            h2 { "Create an admin key" }
            form.stack method="post" action="/console/admin-keys" {
                (hidden_fields(user, tenant))
                label for="key-name" { "Name" }
                input id="key-name" name="name" type="text" required value=(draft.name);
                label for="key-role" { "Role" }
                select id="key-role" name="role" {
                    @for role in ["viewer", "token_manager", "owner"] {
                        option value=(role) selected[draft.role == role] { (role) }
                    }
                }
                label for="key-tenants" { "Tenants (one per line; empty: every tenant)" }
                textarea id="key-tenants" name="tenants" rows="2" { (draft.tenants) }
                label for="key-ttl" { "Lives for (days; empty: no expiry)" }
                input id="key-ttl" name="ttl_days" type="number" min="1" value=(draft.ttl_days);
                button type="submit" { "Create admin key" }
            }
        }
    };
    let markup = layout_in(user, "Admin keys", "/console/admin-keys", tenant, body);
    Ok(with_problem(markup, problem.as_ref()))
}

async fn create_admin_key(
    State(console): State<Console>,
    Posted { user, form }: Posted<ConsoleUser, AdminKeyForm>,
) -> Page {
    let backend = console.backend()?;
    let query = PageQuery::first_in(&form.tenant);
    let ttl = match number::<i64>("ttl_days", &form.ttl_days) {
        Ok(days) => days.map(|days| prost_types::Duration {
            seconds: days.saturating_mul(86_400),
            nanos: 0,
        }),
        Err(problem) => return admin_keys_page(backend, &user, &query, &form, Some(problem)).await,
    };
    let role = match form.role.as_str() {
        "viewer" => proto::AdminRole::Viewer,
        "token_manager" => proto::AdminRole::TokenManager,
        "owner" => proto::AdminRole::Owner,
        _ => proto::AdminRole::Unspecified,
    };
    let created = backend
        .api
        .create_admin_key(user.request(proto::CreateAdminKeyRequest {
            name: form.name.clone(),
            tenants: lines(&form.tenants),
            role: role as i32,
            expires_at: None,
            ttl,
        }))
        .await;
    match created {
        Ok(created) => {
            let created = created.into_inner();
            let key = created.admin_key.unwrap_or_default();
            let body = html! {
                h1 { "Admin key created" }
                p { "Admin key " strong { (key.name) } " (" code { (key.id) } "), role " (role_name(key.role)) "." }
                (page::shown_once("Admin key secret", "admin-key-secret", &created.secret))
                p { a href=(href("/console/admin-keys", &form.tenant)) { "Back to the admin keys" } }
            };
            Ok(layout_in(
                &user,
                "Admin key created",
                "/console/admin-keys",
                &form.tenant,
                body,
            )
            .into_response())
        }
        Err(status) => {
            let problem = Problem::from_status(&status);
            admin_keys_page(backend, &user, &query, &form, Some(problem)).await
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct PlainForm {
    csrf: String,
    #[serde(default)]
    tenant: String,
}

impl CsrfForm for PlainForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn revoke_admin_key(
    State(console): State<Console>,
    Path(id): Path<String>,
    Posted { user, form }: Posted<ConsoleUser, PlainForm>,
) -> Page {
    let backend = console.backend()?;
    let revoked = backend
        .api
        .revoke_admin_key(user.request(proto::RevokeAdminKeyRequest { id }))
        .await;
    match revoked {
        Ok(_) => Ok(Redirect::to(&href("/console/admin-keys", &form.tenant)).into_response()),
        Err(status) => {
            let query = PageQuery::first_in(&form.tenant);
            let problem = Problem::from_status(&status);
            admin_keys_page(
                backend,
                &user,
                &query,
                &AdminKeyForm::default(),
                Some(problem),
            )
            .await
        }
    }
}

// --- Webhooks ---

#[derive(Debug, Default, Deserialize)]
struct WebhookForm {
    csrf: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    event_types: String,
    #[serde(default)]
    description: String,
}

impl CsrfForm for WebhookForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn webhooks(
    State(console): State<Console>,
    user: ConsoleUser,
    Query(query): Query<PageQuery>,
) -> Page {
    let backend = console.backend()?;
    webhooks_page(backend, &user, &query, &WebhookForm::default(), None).await
}

async fn webhooks_page(
    backend: &Backend,
    user: &ConsoleUser,
    query: &PageQuery,
    draft: &WebhookForm,
    problem: Option<Problem>,
) -> Page {
    let tenant = &query.tenant;
    let listed = backend
        .api
        .list_webhooks(user.request(proto::ListWebhooksRequest {
            tenant: tenant.clone(),
            page_size: 50,
            page_token: query.page_token.clone(),
        }))
        .await
        .map_err(refused)?
        .into_inner();
    let writes = may(user, Right::WriteWebhooks);
    let body = html! {
        h1 { "Webhooks" }
        @if let Some(problem) = &problem { (problem.render()) }
        @if listed.webhooks.is_empty() {
            p { "No webhooks yet." }
        } @else {
            div.table-scroll {
                table {
                    thead { tr {
                        th scope="col" { "URL" } th scope="col" { "Events" } th scope="col" { "Description" }
                        th scope="col" { "State" } th scope="col" { "Created" }
                        @if writes { th scope="col" { "Actions" } }
                    } }
                    tbody {
                        @for webhook in &listed.webhooks {
                            tr {
                                td { a href=(href(&format!("/console/webhooks/{}", webhook.id), tenant)) { (webhook.url) } }
                                td { @if webhook.event_types.is_empty() { "every event" } @else { (webhook.event_types.join(", ")) } }
                                td { (webhook.description) }
                                td {
                                    @if webhook.disabled { span.badge.revoked { "disabled" } }
                                    @else if webhook.failing_since.is_some() { span.badge.suspended { "failing since " (time(webhook.failing_since.as_ref())) } }
                                    @else { span.badge.active { "active" } }
                                }
                                td { (time(webhook.created_at.as_ref())) }
                                @if writes {
                                    td {
                                        (post_button(&format!("/console/webhooks/{}/delete", webhook.id), user, tenant, &format!("Delete webhook {}", webhook.url)))
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        (next_page("/console/webhooks", tenant, &listed.next_page_token, "Next page"))
        @if writes {
            h2 { "Create a webhook" }
            form.stack method="post" action="/console/webhooks" {
                (hidden_fields(user, tenant))
                label for="webhook-url" { "URL" }
                input id="webhook-url" name="url" type="url" required value=(draft.url);
                label for="webhook-events" { "Event types (one per line; empty: every event)" }
                textarea id="webhook-events" name="event_types" rows="3" { (draft.event_types) }
                label for="webhook-description" { "Description" }
                input id="webhook-description" name="description" type="text" value=(draft.description);
                button type="submit" { "Create webhook" }
            }
        }
    };
    let markup = layout_in(user, "Webhooks", "/console/webhooks", tenant, body);
    Ok(with_problem(markup, problem.as_ref()))
}

async fn create_webhook(
    State(console): State<Console>,
    Posted { user, form }: Posted<ConsoleUser, WebhookForm>,
) -> Page {
    let backend = console.backend()?;
    let created = backend
        .api
        .create_webhook(user.request(proto::CreateWebhookRequest {
            tenant: form.tenant.clone(),
            url: form.url.trim().to_owned(),
            event_types: lines(&form.event_types),
            description: form.description.clone(),
        }))
        .await;
    match created {
        Ok(created) => {
            let created = created.into_inner();
            let webhook = created.webhook.unwrap_or_default();
            let body = html! {
                h1 { "Webhook created" }
                p { "Deliveries to " code { (webhook.url) } " are signed with this secret." }
                (page::shown_once("Webhook signing secret", "webhook-secret", &created.secret))
                p { a href=(href("/console/webhooks", &form.tenant)) { "Back to the webhooks" } }
            };
            Ok(layout_in(
                &user,
                "Webhook created",
                "/console/webhooks",
                &form.tenant,
                body,
            )
            .into_response())
        }
        Err(status) => {
            let query = PageQuery::first_in(&form.tenant);
            let problem = Problem::from_status(&status);
            webhooks_page(backend, &user, &query, &form, Some(problem)).await
        }
    }
}

async fn delete_webhook(
    State(console): State<Console>,
    Path(id): Path<String>,
    Posted { user, form }: Posted<ConsoleUser, PlainForm>,
) -> Page {
    let backend = console.backend()?;
    let deleted = backend
        .api
        .delete_webhook(user.request(proto::DeleteWebhookRequest { id }))
        .await;
    match deleted {
        Ok(_) => Ok(Redirect::to(&href("/console/webhooks", &form.tenant)).into_response()),
        Err(status) => {
            let query = PageQuery::first_in(&form.tenant);
            let problem = Problem::from_status(&status);
            webhooks_page(
                backend,
                &user,
                &query,
                &WebhookForm::default(),
                Some(problem),
            )
            .await
        }
    }
}

fn delivery_state(state: i32) -> &'static str {
    match proto::WebhookDeliveryState::try_from(state) {
        Ok(proto::WebhookDeliveryState::Pending) => "pending",
        Ok(proto::WebhookDeliveryState::Delivered) => "delivered",
        Ok(proto::WebhookDeliveryState::Failed) => "failed",
        _ => "unknown",
    }
}

async fn deliveries(
    State(console): State<Console>,
    user: ConsoleUser,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Page {
    let backend = console.backend()?;
    let tenant = &query.tenant;
    let listed = backend
        .api
        .list_webhook_deliveries(user.request(proto::ListWebhookDeliveriesRequest {
            webhook_id: id.clone(),
            page_size: 50,
            page_token: query.page_token.clone(),
        }))
        .await
        .map_err(refused)?
        .into_inner();
    let body = html! {
        h1 { "Deliveries of webhook " code { (id) } }
        @if listed.deliveries.is_empty() {
            p { "No deliveries yet." }
        } @else {
            div.table-scroll {
                table {
                    (column_heads(&["Event", "State", "Attempts", "Last attempt", "Last answer", "Next attempt"]))
                    tbody {
                        @for delivery in &listed.deliveries {
                            tr {
                                td { (delivery.event_type) br; code { (delivery.event_id) } }
                                td { (delivery_state(delivery.state)) }
                                td { (delivery.attempts) }
                                td { (time(delivery.last_attempt_at.as_ref())) }
                                td {
                                    @if delivery.last_status_code != 0 { "HTTP " (delivery.last_status_code) " " }
                                    (delivery.last_error)
                                }
                                td { (time(delivery.next_attempt_at.as_ref())) }
                            }
                        }
                    }
                }
            }
        }
        (next_page(&format!("/console/webhooks/{id}"), tenant, &listed.next_page_token, "Next page"))
        p { a href=(href("/console/webhooks", tenant)) { "Back to the webhooks" } }
    };
    Ok(layout_in(
        &user,
        "Webhook deliveries",
        "/console/webhooks",
        tenant,
        body,
    )
    .into_response())
}

// --- Audit log ---

/// The audit page's query: the tenant and page, and ListAuditEvents' exact filters.
#[derive(Deserialize, Default)]
struct AuditQuery {
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    page_token: String,
    #[serde(default)]
    token_id: String,
    #[serde(default)]
    principal_id: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    actor: String,
}

async fn audit(
    State(console): State<Console>,
    user: ConsoleUser,
    Query(query): Query<AuditQuery>,
) -> Page {
    let backend = console.backend()?;
    let tenant = &query.tenant;
    let filters = [
        ("token_id", "Token id", query.token_id.as_str()),
        ("principal_id", "Principal", query.principal_id.as_str()),
        ("action", "Action", query.action.as_str()),
        ("actor", "Actor", query.actor.as_str()),
    ];
    let filter_form = html! {
        form.filters method="get" action="/console/audit" {
            input type="hidden" name="tenant" value=(tenant);
            @for (name, label, value) in &filters {
                div {
                    label for=(name) { (label) }
                    input id=(name) name=(name) type="text" value=(value);
                }
            }
            button.secondary type="submit" { "Filter" }
        }
    };
    let listed = backend
        .api
        .list_audit_events(user.request(proto::ListAuditEventsRequest {
            tenant: tenant.clone(),
            page_size: 50,
            page_token: query.page_token.clone(),
            token_id: query.token_id.trim().to_owned(),
            principal_id: query.principal_id.trim().to_owned(),
            action: query.action.trim().to_owned(),
            actor: query.actor.trim().to_owned(),
        }))
        .await;
    let listed = match listed {
        Ok(listed) => listed.into_inner(),
        // A bad filter: the form again, with what was wrong.
        Err(status) if status.code() == tonic::Code::InvalidArgument => {
            let body = html! {
                h1 { "Audit log" }
                (Problem::from_status(&status).render())
                (filter_form)
            };
            let markup = layout_in(&user, "Audit log", "/console/audit", tenant, body);
            return Ok((hyper::StatusCode::BAD_REQUEST, markup).into_response());
        }
        Err(status) => return Err(refused(status)),
    };
    let mut pairs: Vec<(&str, &str)> = filters
        .iter()
        .map(|(name, _, value)| (*name, *value))
        .collect();
    pairs.push(("page_token", listed.next_page_token.as_str()));
    let body = html! {
        h1 { "Audit log" }
        (filter_form)
        @if listed.events.is_empty() {
            p { "Nothing recorded yet." }
        } @else {
            div.table-scroll {
                table {
                    (column_heads(&["Time", "Actor", "Action", "Tenant", "Subject", "Summary"]))
                    tbody {
                        @for event in &listed.events {
                            tr {
                                td { (time(event.time.as_ref())) }
                                td { (event.actor) @if !event.admin_key.is_empty() { br; code { (event.admin_key) } } }
                                td { code { (event.action) } }
                                td { (event.tenant) }
                                td {
                                    @if !event.token_id.is_empty() {
                                        a href=(href(&format!("/console/tokens/{}", event.token_id), tenant)) { (event.token_id) } " "
                                    }
                                    (event.principal_id)
                                }
                                td { (event.summary) }
                            }
                        }
                    }
                }
            }
        }
        @if !listed.next_page_token.is_empty() {
            p.pager { a href=(super::href_with("/console/audit", tenant, &pairs)) { "Older events" } }
        }
    };
    Ok(layout_in(&user, "Audit log", "/console/audit", tenant, body).into_response())
}
