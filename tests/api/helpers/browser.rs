//! A browser's HTTP for the console and portal tests: a cookie jar (what `Set-Cookie` set,
//! sent back on every request), no automatic redirects (tests look at each answer), and the
//! forms' CSRF tokens read from the page, as a browser would submit them.

use std::collections::BTreeMap;
use std::net::SocketAddr;

/// One answer: status, headers and body (HTML).
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Every `Set-Cookie` of the answer.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok().map(str::to_owned))
            .collect()
    }

    /// The `Location` of a redirect.
    pub fn location(&self) -> Option<&str> {
        self.header("location")
    }

    /// The first form's CSRF token on the page (`name="csrf" value="…"`).
    pub fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self
            .body
            .find(marker)
            .unwrap_or_else(|| panic!("no csrf field on the page: {}", self.body))
            + marker.len();
        let end = self.body[start..].find('"').expect("csrf value ends") + start;
        self.body[start..end].to_owned()
    }

    /// Panics unless the body contains `text`.
    #[track_caller]
    pub fn assert_contains(&self, text: &str) {
        assert!(
            self.body.contains(text),
            "expected {text:?} in the page (status {}): {}",
            self.status,
            self.body
        );
    }
}

/// A browser pointed at the server's HTTP listener.
pub struct Browser {
    base: String,
    client: reqwest::Client,
    /// Cookie name → value, as the server last set them.
    pub cookies: BTreeMap<String, String>,
}

impl Browser {
    pub fn new(http: SocketAddr) -> Self {
        Self {
            base: format!("http://{http}"),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("http client"),
            cookies: BTreeMap::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn finish(&mut self, request: reqwest::RequestBuilder) -> Page {
        let request = if self.cookies.is_empty() {
            request
        } else {
            request.header(reqwest::header::COOKIE, self.cookie_header())
        };
        let response = request.send().await.expect("http request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.expect("http body");
        let page = Page {
            status,
            headers,
            body,
        };
        for cookie in page.set_cookies() {
            let pair = cookie.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                let deleted = cookie.contains("Max-Age=0");
                if deleted || value.is_empty() {
                    self.cookies.remove(name);
                } else {
                    self.cookies.insert(name.to_owned(), value.to_owned());
                }
            }
        }
        page
    }

    /// GET `path` (or a whole URL).
    pub async fn get(&mut self, path: &str) -> Page {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            self.url(path)
        };
        let request = self.client.get(url);
        self.finish(request).await
    }

    /// POST a form to `path`, fields as given (repeat a name for a multi-valued field).
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let request = self
            .client
            .post(self.url(path))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body);
        self.finish(request).await
    }

    /// Signs in to the console with `admin_key`; panics unless it lands on /console/.
    pub async fn sign_in(&mut self, admin_key: &str) -> Page {
        let form = self.get("/console/sign-in").await;
        assert_eq!(form.status, 200, "{}", form.body);
        let csrf = form.csrf();
        let signed_in = self
            .post(
                "/console/sign-in",
                &[("csrf", &csrf), ("admin_key", admin_key), ("name", "")],
            )
            .await;
        assert_eq!(signed_in.status, 303, "{}", signed_in.body);
        assert_eq!(signed_in.location(), Some("/console/"));
        self.get("/console/").await
    }
}
