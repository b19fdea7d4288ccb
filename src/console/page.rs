//! The pages' shared HTML: the layout, notices, forms' errors, and the pages of the session
//! routes. Everything is escaped by maud; no inline script or style (the CSP forbids both).

use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use hyper::StatusCode;
use maud::{DOCTYPE, Markup, html};
use tonic_types::StatusExt as _;

/// A protobuf timestamp as a date and time.
pub fn time_of(timestamp: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    timestamp.and_then(|timestamp| {
        DateTime::from_timestamp(
            timestamp.seconds,
            u32::try_from(timestamp.nanos).unwrap_or(0),
        )
    })
}

/// A timestamp as a `<time>`, or `none` when it is unset.
pub fn when(timestamp: Option<&prost_types::Timestamp>, none: &str) -> Markup {
    match time_of(timestamp) {
        Some(time) => html! {
            time datetime=(time.to_rfc3339()) { (time.format("%Y-%m-%d %H:%M UTC")) }
        },
        None => html! { (none) },
    }
}

/// A textarea's lines, trimmed, empty ones left out.
pub fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A table's head: a row of column headings.
pub fn column_heads(names: &[&str]) -> Markup {
    html! {
        thead {
            tr {
                @for name in names {
                    th scope="col" { (name) }
                }
            }
        }
    }
}

/// A page's chrome: which surface, its nav, and who is signed in.
pub struct Layout<'a> {
    /// The document's title (the product name is added).
    pub title: &'a str,
    /// `/console/assets` or `/portal/assets`.
    pub assets: &'a str,
    /// The product name in the header.
    pub product: &'a str,
    /// Navigation links: (href, label, current).
    pub nav: Vec<(&'a str, &'a str, bool)>,
    /// Who is signed in, shown in the header; None: nobody.
    pub who: Option<&'a str>,
    /// The sign-out form's action and CSRF token.
    pub sign_out: Option<(&'a str, &'a str)>,
    /// Extra stylesheet (the portal's theme), after the app's own.
    pub theme: Option<&'a str>,
    /// A logo image URL (the portal's branding).
    pub logo: Option<&'a str>,
}

impl Layout<'_> {
    /// A whole page around `body`.
    pub fn render(&self, body: Markup) -> Markup {
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    meta name="referrer" content="no-referrer";
                    // No icon to fetch: a browser would otherwise ask for /favicon.ico.
                    link rel="icon" href="data:,";
                    title { (self.title) " · " (self.product) }
                    link rel="stylesheet" href={ (self.assets) "/app.css" };
                    @if let Some(theme) = self.theme {
                        link rel="stylesheet" href=(theme);
                    }
                    script type="module" src={ (self.assets) "/app.js" } {}
                }
                body {
                    a.skip href="#main" { "Skip to content" }
                    header.top {
                        div.brand {
                            @if let Some(logo) = self.logo {
                                img.logo src=(logo) alt="";
                            }
                            span { (self.product) }
                        }
                        @if !self.nav.is_empty() {
                            nav aria-label="Main" {
                                ul {
                                    @for (href, label, current) in &self.nav {
                                        li {
                                            @if *current {
                                                a href=(href) aria-current="page" { (label) }
                                            } @else {
                                                a href=(href) { (label) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                        @if let Some(who) = self.who {
                            div.who {
                                span { (who) }
                                @if let Some((action, csrf)) = self.sign_out {
                                    form method="post" action=(action) {
                                        input type="hidden" name="csrf" value=(csrf);
                                        button.link type="submit" { "Sign out" }
                                    }
                                }
                            }
                        }
                    }
                    main id="main" tabindex="-1" {
                        (body)
                    }
                }
            }
        }
    }
}

/// A bare page (no session): sign-in, errors.
fn bare(title: &str, body: Markup) -> Markup {
    Layout {
        title,
        assets: "/console/assets",
        product: "Tessera",
        nav: Vec::new(),
        who: None,
        sign_out: None,
        theme: None,
        logo: None,
    }
    .render(body)
}

/// A page that only says something, with its status.
pub fn message_page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = html! {
        h1 { (title) }
        p { (message) }
    };
    (status, bare(title, body)).into_response()
}

/// 503 with a message.
pub fn unavailable(message: &str) -> Response {
    message_page(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", message)
}

/// A refused admin call as a page of its own (for a GET; forms show [`Problem`] inline).
pub fn status_page(status: &tonic::Status) -> Response {
    let problem = Problem::from_status(status);
    let code = http_status(status.code());
    let body = html! {
        h1 { (problem.title()) }
        (problem.render())
    };
    (code, bare(problem.title(), body)).into_response()
}

/// The HTTP status a refused admin call is shown with.
pub fn http_status(code: tonic::Code) -> StatusCode {
    match code {
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange => StatusCode::BAD_REQUEST,
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        tonic::Code::AlreadyExists | tonic::Code::Aborted | tonic::Code::FailedPrecondition => {
            StatusCode::CONFLICT
        }
        tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Why an admin call was refused, as a form shows it: the message, and each bad field with its
/// description (from the status's BadRequest details).
#[derive(Debug, Clone, Default)]
pub struct Problem {
    pub code: Option<tonic::Code>,
    pub message: String,
    pub fields: Vec<(String, String)>,
}

impl Problem {
    pub fn from_status(status: &tonic::Status) -> Self {
        let fields = status
            .get_details_bad_request()
            .map(|bad| {
                bad.field_violations
                    .into_iter()
                    .map(|violation| (violation.field, violation.description))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            code: Some(status.code()),
            message: status.message().to_owned(),
            fields,
        }
    }

    /// A problem the page found itself (a form field it parses, such as a date).
    pub fn field(field: &str, description: &str) -> Self {
        Self {
            code: Some(tonic::Code::InvalidArgument),
            message: format!("{field}: {description}"),
            fields: vec![(field.to_owned(), description.to_owned())],
        }
    }

    pub fn title(&self) -> &'static str {
        match self.code {
            Some(tonic::Code::InvalidArgument) => "Check the form",
            Some(tonic::Code::NotFound) => "Not found",
            Some(tonic::Code::PermissionDenied) => "Not allowed",
            Some(tonic::Code::FailedPrecondition) => "Not possible now",
            Some(tonic::Code::AlreadyExists) => "Already exists",
            Some(tonic::Code::Unavailable) => "Unavailable",
            _ => "Something went wrong",
        }
    }

    /// The problem as an alert box (announced by screen readers).
    pub fn render(&self) -> Markup {
        html! {
            div.notice.error role="alert" {
                p { strong { (self.title()) ": " } (self.message) }
                @if !self.fields.is_empty() {
                    ul {
                        @for (field, description) in &self.fields {
                            li { code { (field) } " " (description) }
                        }
                    }
                }
            }
        }
    }
}

/// A success notice, announced politely.
pub fn notice(message: &str) -> Markup {
    html! {
        div.notice.ok role="status" aria-live="polite" { (message) }
    }
}

/// A secret shown once: read-only field, copy button (app.js), and the warning, in an
/// `aria-live` region so a screen reader announces it.
pub fn shown_once(label: &str, id: &str, secret: &str) -> Markup {
    html! {
        section.secret aria-live="assertive" aria-labelledby={ (id) "-label" } {
            h2 id={ (id) "-label" } { (label) }
            p.warning {
                strong { "Copy it now." }
                " It is shown only once: Tessera keeps only its hash and cannot show it again."
            }
            div.copy-row {
                input id=(id) type="text" readonly value=(secret) aria-label=(label) autocomplete="off" spellcheck="false";
                button type="button" data-copy={ "#" (id) } { "Copy" }
            }
            p.copied role="status" aria-live="polite" {}
        }
    }
}

/// The console's sign-in page.
pub fn sign_in(csrf: &str, error: Option<&str>) -> Markup {
    let body = html! {
        h1 { "Sign in to the Tessera console" }
        @if let Some(error) = error {
            div.notice.error role="alert" { (error) }
        }
        form.stack method="post" action=(super::session::SIGN_IN_PATH) {
            input type="hidden" name="csrf" value=(csrf);
            label for="admin_key" { "Admin key" }
            input id="admin_key" name="admin_key" type="password" required autocomplete="off" spellcheck="false";
            p.hint { "An admin key (" code { "tsa_…" } "); its role and tenants apply to everything you see and do." }
            label for="name" { "Your name (optional, for the audit log)" }
            input id="name" name="name" type="text" maxlength="64" autocomplete="name";
            button type="submit" { "Sign in" }
        }
    };
    bare("Sign in", body)
}

/// The portal's page after sign-out.
pub fn signed_out(return_url: &str) -> Markup {
    let body = html! {
        h1 { "You have signed out" }
        @if !return_url.is_empty() {
            p { a href=(return_url) { "Back to the application" } }
        }
    };
    bare("Signed out", body)
}

/// The page the one-time URL answers with: it moves on to the portal by itself (a meta
/// refresh, which is not script) so that the session cookie is sent (src/console/session.rs).
pub fn entering() -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content={ "0;url=" (super::PORTAL_PATH) };
                link rel="icon" href="data:,";
                title { "Opening your API tokens" }
                link rel="stylesheet" href="/portal/assets/app.css";
            }
            body {
                main {
                    p { "Opening your API tokens… " a href=(super::PORTAL_PATH) { "Continue" } }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_lists_each_bad_field_of_an_invalid_argument() {
        let status = crate::grpc::status::invalid_argument(vec![
            tonic_types::FieldViolation::new("name", "is required"),
            tonic_types::FieldViolation::new("permissions[0]", "is not a permission"),
        ]);
        let problem = Problem::from_status(&status);
        assert_eq!(problem.fields.len(), 2);
        let html = problem.render().into_string();
        assert!(html.contains("permissions[0]"), "{html}");
        assert!(html.contains("role=\"alert\""), "{html}");
    }

    #[test]
    fn what_a_user_typed_is_escaped_in_every_page() {
        let html = sign_in("t", Some("<script>alert(1)</script>")).into_string();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
    }
}
