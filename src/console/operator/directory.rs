//! Principals (list, create or change with permissions, disabled and rate limit) and roles
//! (list, create or change, delete).

use crate::console::page::column_heads;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;

use super::{
    Page, hidden_fields, href, href_with, layout_in, lines, may, next_page, number, refused,
    refused_form,
};
use crate::admin::rights::Right;
use crate::console::Console;
use crate::console::page::Problem;
use crate::console::session::{ConsoleUser, CsrfForm, Posted};
use crate::proto;
use crate::proto::token_admin_service_server::TokenAdminService as _;

pub fn routes() -> Router<Console> {
    Router::new()
        .route(
            "/console/principals",
            get(principals).post(upsert_principal),
        )
        .route("/console/roles", get(roles).post(upsert_role))
        .route("/console/roles/delete", post(delete_role))
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    #[serde(default)]
    tenant: String,
    /// The principal or role whose form is filled in.
    #[serde(default)]
    edit: String,
    #[serde(default)]
    page_token: String,
}

#[derive(Debug, Default, Deserialize)]
struct PrincipalForm {
    csrf: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    permissions: String,
    #[serde(default)]
    disabled: Option<String>,
    #[serde(default)]
    rate_limit: String,
}

impl CsrfForm for PrincipalForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn principals(
    State(console): State<Console>,
    user: ConsoleUser,
    Query(query): Query<ListQuery>,
) -> Page {
    let backend = console.backend()?;
    let draft = if query.edit.is_empty() {
        PrincipalForm::default()
    } else {
        let found = backend
            .api
            .get_principal(user.request(proto::GetPrincipalRequest {
                tenant: query.tenant.clone(),
                id: query.edit.clone(),
            }))
            .await
            .map_err(refused)?
            .into_inner()
            .principal
            .unwrap_or_default();
        PrincipalForm {
            id: found.id,
            permissions: found.permissions.join("\n"),
            disabled: found.disabled.then(|| "on".to_owned()),
            rate_limit: found
                .rate_limit_per_minute
                .map(|limit| limit.to_string())
                .unwrap_or_default(),
            ..Default::default()
        }
    };
    principals_page(
        backend,
        &user,
        &query.tenant,
        &query.page_token,
        &draft,
        None,
    )
    .await
}

async fn principals_page(
    backend: &crate::console::Backend,
    user: &ConsoleUser,
    tenant: &str,
    page_token: &str,
    draft: &PrincipalForm,
    problem: Option<Problem>,
) -> Page {
    let listed = backend
        .api
        .list_principals(user.request(proto::ListPrincipalsRequest {
            tenant: tenant.to_owned(),
            page_size: 50,
            page_token: page_token.to_owned(),
        }))
        .await
        .map_err(refused)?
        .into_inner();
    let body = html! {
        h1 { "Principals" }
        @if let Some(problem) = &problem { (problem.render()) }
        @if listed.principals.is_empty() {
            p { "No principals yet." }
        } @else {
            div.table-scroll {
                table {
                    (column_heads(&["Principal", "Permissions", "State", "Rate limit", "Links"]))
                    tbody {
                        @for principal in &listed.principals {
                            tr {
                                td { code { (principal.id) } }
                                td { (principal.permissions.join(", ")) }
                                td { @if principal.disabled { span.badge.revoked { "disabled" } } @else { span.badge.active { "enabled" } } }
                                td { @match principal.rate_limit_per_minute { Some(limit) => { (limit) "/min" }, None => "—" } }
                                td {
                                    a href=(href_with("/console/principals", tenant, &[("edit", &principal.id)])) { "Edit " span.visually-hidden { (principal.id) } } " · "
                                    a href=(href_with("/console/tokens", tenant, &[("owner", &principal.id)])) { "Tokens" } " · "
                                    a href=(href_with("/console/usage", tenant, &[("owner", &principal.id)])) { "Usage" }
                                }
                            }
                        }
                    }
                }
            }
        }
        (next_page("/console/principals", tenant, &listed.next_page_token, "Next page"))
        @if may(user, Right::WritePrincipals) {
            (principal_form(user, tenant, draft))
        }
    };
    let status = problem.as_ref().and_then(|problem| problem.code);
    let markup = layout_in(user, "Principals", "/console/principals", tenant, body);
    Ok(match status {
        Some(_) => refused_form(status, markup),
        None => markup.into_response(),
    })
}

fn principal_form(user: &ConsoleUser, tenant: &str, draft: &PrincipalForm) -> Markup {
    html! {
        h2 { @if draft.id.is_empty() { "Create or change a principal" } @else { "Change " (draft.id) } }
        form.stack method="post" action="/console/principals" {
            (hidden_fields(user, tenant))
            label for="principal-id" { "Principal id" }
            input id="principal-id" name="id" type="text" required value=(draft.id);
            label for="principal-permissions" { "Permissions (one per line)" }
            textarea id="principal-permissions" name="permissions" rows="4" { (draft.permissions) }
            label for="principal-rate-limit" { "Rate limit per minute (empty: the tenant's)" }
            input id="principal-rate-limit" name="rate_limit" type="number" min="0" value=(draft.rate_limit);
            div {
                input id="principal-disabled" name="disabled" type="checkbox" checked[draft.disabled.is_some()];
                label for="principal-disabled" { "Disabled (its tokens are refused)" }
            }
            button type="submit" { "Save principal" }
        }
    }
}

async fn upsert_principal(
    State(console): State<Console>,
    Posted { user, form }: Posted<ConsoleUser, PrincipalForm>,
) -> Page {
    let backend = console.backend()?;
    let rate_limit = match number::<u32>("rate_limit", &form.rate_limit) {
        Ok(limit) => limit,
        Err(problem) => {
            return principals_page(backend, &user, &form.tenant, "", &form, Some(problem)).await;
        }
    };
    let saved = backend
        .api
        .upsert_principal(user.request(proto::UpsertPrincipalRequest {
            tenant: form.tenant.clone(),
            id: form.id.trim().to_owned(),
            permissions: lines(&form.permissions),
            disabled: form.disabled.is_some(),
            rate_limit_per_minute: rate_limit,
        }))
        .await;
    match saved {
        Ok(_) => Ok(Redirect::to(&href_with(
            "/console/principals",
            &form.tenant,
            &[("edit", form.id.trim())],
        ))
        .into_response()),
        Err(status) => {
            principals_page(
                backend,
                &user,
                &form.tenant,
                "",
                &form,
                Some(Problem::from_status(&status)),
            )
            .await
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct RoleForm {
    csrf: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    permissions: String,
}

impl CsrfForm for RoleForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn roles(
    State(console): State<Console>,
    user: ConsoleUser,
    Query(query): Query<ListQuery>,
) -> Page {
    let backend = console.backend()?;
    roles_page(backend, &user, &query.tenant, &query.edit, None, None).await
}

async fn roles_page(
    backend: &crate::console::Backend,
    user: &ConsoleUser,
    tenant: &str,
    edit: &str,
    draft: Option<&RoleForm>,
    problem: Option<Problem>,
) -> Page {
    let listed = backend
        .api
        .list_roles(user.request(proto::ListRolesRequest {
            tenant: tenant.to_owned(),
        }))
        .await
        .map_err(refused)?
        .into_inner();
    let (name, permissions) = match draft {
        Some(draft) => (draft.name.clone(), draft.permissions.clone()),
        None => listed
            .roles
            .iter()
            .find(|role| !edit.is_empty() && role.name == edit)
            .map(|role| (role.name.clone(), role.permissions.join("\n")))
            .unwrap_or_default(),
    };
    let writes = may(user, Right::WriteRoles);
    let body = html! {
        h1 { "Roles" }
        @if let Some(problem) = &problem { (problem.render()) }
        @if listed.roles.is_empty() {
            p { "No roles yet." }
        } @else {
            div.table-scroll {
                table {
                    thead { tr {
                        th scope="col" { "Role" } th scope="col" { "Permissions" } th scope="col" { "Updated" }
                        @if writes { th scope="col" { "Actions" } }
                    } }
                    tbody {
                        @for role in &listed.roles {
                            tr {
                                td { code { (role.name) } }
                                td { (role.permissions.join(", ")) }
                                td { (super::time(role.updated_at.as_ref())) }
                                @if writes {
                                    td.actions {
                                        a href=(href_with("/console/roles", tenant, &[("edit", &role.name)])) { "Edit" }
                                        form.inline method="post" action="/console/roles/delete" {
                                            (hidden_fields(user, tenant))
                                            input type="hidden" name="name" value=(role.name);
                                            button.danger type="submit" { "Delete role " (role.name) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if writes {
            h2 { @if name.is_empty() { "Create or change a role" } @else { "Change " (name) } }
            form.stack method="post" action="/console/roles" {
                (hidden_fields(user, tenant))
                label for="role-name" { "Role name" }
                input id="role-name" name="name" type="text" required value=(name);
                label for="role-permissions" { "Permissions (one per line)" }
                textarea id="role-permissions" name="permissions" rows="4" { (permissions) }
                button type="submit" { "Save role" }
            }
        }
    };
    let status = problem.as_ref().and_then(|problem| problem.code);
    let markup = layout_in(user, "Roles", "/console/roles", tenant, body);
    Ok(match status {
        Some(_) => refused_form(status, markup),
        None => markup.into_response(),
    })
}

async fn upsert_role(
    State(console): State<Console>,
    Posted { user, form }: Posted<ConsoleUser, RoleForm>,
) -> Page {
    let backend = console.backend()?;
    let saved = backend
        .api
        .upsert_role(user.request(proto::UpsertRoleRequest {
            tenant: form.tenant.clone(),
            name: form.name.trim().to_owned(),
            permissions: lines(&form.permissions),
        }))
        .await;
    match saved {
        Ok(_) => Ok(Redirect::to(&href("/console/roles", &form.tenant)).into_response()),
        Err(status) => {
            let problem = Problem::from_status(&status);
            roles_page(backend, &user, &form.tenant, "", Some(&form), Some(problem)).await
        }
    }
}

async fn delete_role(
    State(console): State<Console>,
    Posted { user, form }: Posted<ConsoleUser, RoleForm>,
) -> Page {
    let backend = console.backend()?;
    let deleted = backend
        .api
        .delete_role(user.request(proto::DeleteRoleRequest {
            tenant: form.tenant.clone(),
            name: form.name.clone(),
        }))
        .await;
    match deleted {
        Ok(_) => Ok(Redirect::to(&href("/console/roles", &form.tenant)).into_response()),
        Err(status) => {
            let problem = Problem::from_status(&status);
            roles_page(backend, &user, &form.tenant, "", None, Some(problem)).await
        }
    }
}
