//! The portal's posted forms: every field as sent, repeated names included (checkboxes), so
//! one type reads every form; its CSRF token is checked by [`Posted`](super::super::session::Posted)
//! like any other form's.

use serde::Deserialize;

use crate::console::session::CsrfForm;

/// A posted form's fields, in order, a name as often as it was sent.
#[derive(Debug, Default, Deserialize)]
#[serde(transparent)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    /// The first value of `name`, or "" when it was not sent.
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map_or("", |(_, value)| value.as_str())
    }

    /// Every value of `name`, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Whether a checkbox `name` was checked.
    pub fn checked(&self, name: &str) -> bool {
        self.0.iter().any(|(key, _)| key == name)
    }
}

impl CsrfForm for Fields {
    fn csrf(&self) -> &str {
        self.get("csrf")
    }
}

pub use crate::console::page::lines;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn repeated_fields_are_all_kept_and_a_missing_one_is_empty() {
        use axum::extract::FromRequest as _;
        let request = axum::extract::Request::post("/")
            .header(
                hyper::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(axum::body::Body::from(
                "csrf=t&permissions=a%3Ab&permissions=c%3A*&name=x+y",
            ))
            .expect("a request");
        let axum::Form(fields) = axum::Form::<Fields>::from_request(request, &())
            .await
            .expect("a form");
        assert_eq!(fields.csrf(), "t");
        assert_eq!(fields.get("name"), "x y");
        assert_eq!(
            fields.all("permissions").collect::<Vec<_>>(),
            ["a:b", "c:*"]
        );
        assert_eq!(fields.get("missing"), "");
        assert!(fields.checked("permissions"));
        assert!(!fields.checked("roles"));
    }

    #[test]
    fn lines_drop_blanks_and_spaces() {
        assert_eq!(
            lines(" 10.0.0.0/8 \r\n\n192.0.2.1\n"),
            ["10.0.0.0/8", "192.0.2.1"]
        );
    }
}
