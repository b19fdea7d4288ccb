//! What Tessera reads of an HTTP request that reaches it through a gateway: the request target,
//! resolved once into the path the upstream serves, and the method as a closed set for labels.
//! No gateway knowledge here: Envoy's mapping (`src/grpc/envoy.rs`) and any other gateway parse
//! with the same [`RequestTarget::parse`].
//!
//! Permission rules are decided on the path this yields, so a rule guards the resource upstream
//! servers resolve the raw path to, however the client spelled it. Each step either resolves the
//! spelling to one path every common server agrees on, or refuses the request (a
//! [`PathError`]):
//! - the target must be origin form (`/path?query`): absolute form (`http://host/x`), asterisk
//!   form (`*`) and an empty target are refused, as are control bytes, spaces and a fragment
//!   (`#`), none of which a request line carries;
//! - the query is split off at the first `?` and kept as sent (it is never matched);
//! - percent-encoding is decoded where every server decodes alike, so `/api/v1/%6frders` is
//!   `/api/v1/orders` and `%3a` is `:`; it stays encoded (hex uppercased) for `%`, `?`, `#`,
//!   space, `;` and non-ASCII bytes, which change meaning when decoded. `%25` is therefore a
//!   literal `%` and is never decoded further: `%252e%252e` is a segment named `%2e%2e`, not `..`;
//! - refused: an encoded `/` or `\` (`%2f`, `%5c`: servers disagree on whether they split
//!   segments), a raw `\` (Windows-style servers read it as `/`), a dot segment written with an
//!   encoded dot (`%2e%2e`, `.%2e`), any `;` path parameter (Tomcat-style servers drop `;…` from
//!   every segment, so `/..;/admin` is `/../admin` there and `/orders;x/42` is `/orders/42`),
//!   encoded control bytes (`%00`, `%0a`), bytes that are not UTF-8 once decoded (overlong forms
//!   such as `%c0%ae`), and characters that some servers fold into `.`, `/` or `\` (fullwidth
//!   forms);
//! - repeated slashes are merged and dot segments removed (RFC 3986 §5.2.4); a path that climbs
//!   above the root is refused, and so is a `..` right after an empty segment (`/a//../b`), which
//!   servers that merge slashes first (`/b`) and those that do not (`/a/b`) resolve differently.

use std::fmt::Write as _;

/// A request target in origin form, resolved: the normalized path, and the query as sent.
///
/// The path starts with `/` and never holds `//`, a `.` or `..` segment, `?`, `#` or `;`; it
/// ends with `/` when the client's path did (or ended in a dot segment). Parsing it again
/// yields it unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestTarget {
    path: String,
    /// Everything after the first `?`, undecoded; None when there is no `?`.
    query: Option<String>,
}

/// Why a request target was refused: it cannot be resolved to one path unambiguously.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum PathError {
    #[error("the request target is empty")]
    Empty,
    #[error("the request target is not a path starting with '/' (absolute or asterisk form)")]
    NotOriginForm,
    #[error("the request target holds a control byte or a space")]
    ControlCharacter,
    #[error("the request target holds a fragment ('#')")]
    Fragment,
    #[error("a '%' is not followed by two hex digits")]
    BadPercentEncoding,
    #[error("the path holds an encoded '/' or '\\'")]
    EncodedSeparator,
    #[error("the path holds a '\\'")]
    Backslash,
    #[error("a '.' or '..' segment is written with an encoded dot")]
    EncodedDotSegment,
    #[error("the path holds a ';' path parameter")]
    PathParameter,
    #[error("the path decodes to bytes that are not UTF-8")]
    InvalidUtf8,
    #[error("the path holds a character some servers fold into '.', '/' or '\\'")]
    LookalikeSeparator,
    #[error("a '..' segment follows an empty segment")]
    AmbiguousDotSegment,
    #[error("the path climbs above the root")]
    AboveRoot,
}

impl PathError {
    /// Every refusal, for metric descriptions and tests.
    pub const ALL: [Self; 13] = [
        Self::Empty,
        Self::NotOriginForm,
        Self::ControlCharacter,
        Self::Fragment,
        Self::BadPercentEncoding,
        Self::EncodedSeparator,
        Self::Backslash,
        Self::EncodedDotSegment,
        Self::PathParameter,
        Self::InvalidUtf8,
        Self::LookalikeSeparator,
        Self::AmbiguousDotSegment,
        Self::AboveRoot,
    ];

    /// Stable snake_case name, for logs and the `reason` label of
    /// `tessera_gateway_path_refused_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::NotOriginForm => "not_origin_form",
            Self::ControlCharacter => "control_character",
            Self::Fragment => "fragment",
            Self::BadPercentEncoding => "bad_percent_encoding",
            Self::EncodedSeparator => "encoded_separator",
            Self::Backslash => "backslash",
            Self::EncodedDotSegment => "encoded_dot_segment",
            Self::PathParameter => "path_parameter",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::LookalikeSeparator => "lookalike_separator",
            Self::AmbiguousDotSegment => "ambiguous_dot_segment",
            Self::AboveRoot => "above_root",
        }
    }
}

/// Characters that NFKC or Windows "best fit" conversions turn into `.`, `/` or `\`: a server
/// applying either would see a dot segment or a separator where the path has none.
const LOOKALIKE_SEPARATORS: &[char] = &[
    '\u{2024}', // one dot leader
    '\u{2025}', // two dot leader
    '\u{FE52}', // small full stop
    '\u{FF0E}', // fullwidth full stop
    '\u{2215}', // division slash
    '\u{FF0F}', // fullwidth solidus
    '\u{2216}', // set minus
    '\u{FE68}', // small reverse solidus
    '\u{FF3C}', // fullwidth reverse solidus
];

/// One path segment after decoding.
enum Segment {
    /// `.`
    Current,
    /// `..`
    Parent,
    /// Anything else, in its normalized spelling; empty between two slashes.
    Named(String),
}

impl RequestTarget {
    /// The target of a request line or a gateway's `:path`, resolved as the module explains.
    pub fn parse(target: &str) -> Result<Self, PathError> {
        if target.is_empty() {
            return Err(PathError::Empty);
        }
        if !target.starts_with('/') {
            return Err(PathError::NotOriginForm);
        }
        for byte in target.bytes() {
            match byte {
                0x00..=0x20 | 0x7F => return Err(PathError::ControlCharacter),
                b'#' => return Err(PathError::Fragment),
                _ => {}
            }
        }
        let (raw_path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query.to_owned())),
            None => (target, None),
        };
        let path = normalize_path(raw_path)?;
        debug_assert!(path.starts_with('/') && !path.contains("//"));
        Ok(Self { path, query })
    }

    /// The normalized path: what permission rules match.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The query as sent, without its `?`.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }
}

/// `raw` starts with `/` and holds no `?`, `#`, control byte or space.
fn normalize_path(raw: &str) -> Result<String, PathError> {
    // Most paths are already normal: no escape, no byte that is refused or re-encoded, no empty
    // or dot segment. They are their own normal form, without the segment-by-segment walk.
    let plain_bytes = raw
        .bytes()
        .all(|byte| !matches!(byte, b'%' | b'\\' | b';' | 0x80..));
    if plain_bytes && !raw.contains("//") && !raw.contains("/.") {
        return Ok(raw.to_owned());
    }
    // Empty segments stay on the stack (then dropped from the output: merged slashes) so that a
    // `..` popping one can be told apart: there, merging first and RFC 3986 alone disagree.
    let mut stack: Vec<String> = Vec::new();
    let mut ends_with_slash = false;
    for raw_segment in raw[1..].split('/') {
        match decode_segment(raw_segment)? {
            Segment::Current => ends_with_slash = true,
            Segment::Parent => {
                match stack.last() {
                    None => return Err(PathError::AboveRoot),
                    Some(top) if top.is_empty() => return Err(PathError::AmbiguousDotSegment),
                    Some(_) => stack.pop(),
                };
                ends_with_slash = true;
            }
            Segment::Named(name) => {
                ends_with_slash = name.is_empty();
                stack.push(name);
            }
        }
    }
    let mut path = String::with_capacity(raw.len());
    for name in stack.iter().filter(|name| !name.is_empty()) {
        path.push('/');
        path.push_str(name);
    }
    if path.is_empty() || ends_with_slash {
        path.push('/');
    }
    Ok(path)
}

fn decode_segment(raw: &str) -> Result<Segment, PathError> {
    let bytes = raw.as_bytes();
    let mut name = String::with_capacity(raw.len());
    let mut decoded = Vec::with_capacity(raw.len());
    let mut has_encoded_dot = false;
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte == b'%' {
            let value = bytes
                .get(index + 1..index + 3)
                .and_then(|hex| Some(hex_value(hex[0])? << 4 | hex_value(hex[1])?))
                .ok_or(PathError::BadPercentEncoding)?;
            index += 3;
            match value {
                b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                0x00..=0x1F | 0x7F => return Err(PathError::ControlCharacter),
                b'.' => {
                    has_encoded_dot = true;
                    name.push('.');
                }
                value if stays_encoded(value) => push_encoded(&mut name, value),
                value => name.push(char::from(value)),
            }
            decoded.push(value);
        } else {
            match byte {
                b'\\' => return Err(PathError::Backslash),
                b';' => return Err(PathError::PathParameter),
                0x80.. => push_encoded(&mut name, byte),
                _ => name.push(char::from(byte)),
            }
            decoded.push(byte);
            index += 1;
        }
    }
    let text = std::str::from_utf8(&decoded).map_err(|_| PathError::InvalidUtf8)?;
    if text.contains(LOOKALIKE_SEPARATORS) {
        return Err(PathError::LookalikeSeparator);
    }
    let dot_segment = match name.as_str() {
        "." => Some(Segment::Current),
        ".." => Some(Segment::Parent),
        _ => None,
    };
    match dot_segment {
        Some(_) if has_encoded_dot => Err(PathError::EncodedDotSegment),
        Some(segment) => Ok(segment),
        None => Ok(Segment::Named(name)),
    }
}

/// Bytes whose decoded form would change what the path says: `%` (a new escape), `?` and `#`
/// (a query or fragment), space and `;` (parameters), and non-ASCII (one spelling for UTF-8).
fn stays_encoded(value: u8) -> bool {
    matches!(value, b'%' | b'?' | b'#' | b' ' | b';') || value >= 0x80
}

fn push_encoded(name: &mut String, value: u8) {
    // Writing to a String cannot fail.
    let _ = write!(name, "%{value:02X}");
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|value| u8::try_from(value).ok())
}

/// The method of a request as a closed set: the methods of RFC 9110 and PATCH, any other one
/// as [`HttpMethod::Other`], so a client cannot mint usage labels or metric series by inventing
/// methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HttpMethod {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
    Other,
}

impl HttpMethod {
    /// `method` case-insensitively; anything that is not a standard method is `Other`.
    pub fn of(method: &str) -> Self {
        const NAMED: [HttpMethod; 9] = [
            HttpMethod::Get,
            HttpMethod::Head,
            HttpMethod::Post,
            HttpMethod::Put,
            HttpMethod::Delete,
            HttpMethod::Connect,
            HttpMethod::Options,
            HttpMethod::Trace,
            HttpMethod::Patch,
        ];
        NAMED
            .into_iter()
            .find(|named| named.as_str().eq_ignore_ascii_case(method))
            .unwrap_or(Self::Other)
    }

    /// The uppercase name, `OTHER` for any non-standard method.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
            Self::Options => "OPTIONS",
            Self::Trace => "TRACE",
            Self::Patch => "PATCH",
            Self::Other => "OTHER",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_of(target: &str) -> Result<String, PathError> {
        RequestTarget::parse(target).map(|parsed| parsed.path().to_owned())
    }

    #[test]
    fn dot_segments_are_removed_and_repeated_slashes_merged() {
        assert_eq!(
            path_of("/api/v1/orders/../admin/users").as_deref(),
            Ok("/api/v1/admin/users")
        );
        assert_eq!(path_of("/a/./b/../c").as_deref(), Ok("/a/c"));
        assert_eq!(
            path_of("//api///v1/orders/42").as_deref(),
            Ok("/api/v1/orders/42")
        );
        assert_eq!(path_of("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(path_of("/a/.").as_deref(), Ok("/a/"));
        assert_eq!(path_of("/a/..").as_deref(), Ok("/"));
        assert_eq!(path_of("/").as_deref(), Ok("/"));
        assert_eq!(path_of("//").as_deref(), Ok("/"));
        assert_eq!(path_of("/a//").as_deref(), Ok("/a/"));
    }

    #[test]
    fn unreserved_and_harmless_escapes_are_decoded_in_either_case() {
        assert_eq!(
            path_of("/api/v1/%6frders/42").as_deref(),
            Ok("/api/v1/orders/42")
        );
        assert_eq!(
            path_of("/api/v1/%6Frders/4%32").as_deref(),
            Ok("/api/v1/orders/42")
        );
        assert_eq!(path_of("/a%2eb").as_deref(), Ok("/a.b"));
        assert_eq!(
            path_of("/v1/things%3abatch").as_deref(),
            Ok("/v1/things:batch")
        );
    }

    #[test]
    fn escapes_that_would_change_meaning_stay_encoded_in_uppercase() {
        assert_eq!(path_of("/a%25b").as_deref(), Ok("/a%25b"));
        assert_eq!(path_of("/%252e%252e/x").as_deref(), Ok("/%252e%252e/x"));
        assert_eq!(
            path_of("/a%3fb%23c%20d%3b").as_deref(),
            Ok("/a%3Fb%23c%20d%3B")
        );
        assert_eq!(path_of("/caf%c3%a9").as_deref(), Ok("/caf%C3%A9"));
        assert_eq!(path_of("/café").as_deref(), Ok("/caf%C3%A9"));
    }

    #[test]
    fn the_query_is_split_off_and_kept_as_sent() {
        let parsed = RequestTarget::parse("/a/../b?x=%2e%2e/../&y").expect("valid");
        assert_eq!(parsed.path(), "/b");
        assert_eq!(parsed.query(), Some("x=%2e%2e/../&y"));
        assert_eq!(
            RequestTarget::parse("/b?").expect("valid").query(),
            Some("")
        );
        assert_eq!(RequestTarget::parse("/b").expect("valid").query(), None);
    }

    #[test]
    fn ambiguous_targets_are_refused_saying_why() {
        let cases = [
            ("", PathError::Empty),
            ("*", PathError::NotOriginForm),
            ("http://host/x", PathError::NotOriginForm),
            ("api/v1", PathError::NotOriginForm),
            ("/a\0b", PathError::ControlCharacter),
            ("/a\tb", PathError::ControlCharacter),
            ("/a b", PathError::ControlCharacter),
            ("/a%00b", PathError::ControlCharacter),
            ("/a%0d%0ab", PathError::ControlCharacter),
            ("/a#b", PathError::Fragment),
            ("/a%2", PathError::BadPercentEncoding),
            ("/a%zz", PathError::BadPercentEncoding),
            ("/a/..%2fadmin", PathError::EncodedSeparator),
            ("/a/%2e%2e%5cadmin", PathError::EncodedSeparator),
            ("/a/..\\admin", PathError::Backslash),
            ("/a/%2e%2e/admin", PathError::EncodedDotSegment),
            ("/a/.%2E/admin", PathError::EncodedDotSegment),
            ("/a/%2e/admin", PathError::EncodedDotSegment),
            ("/..;/admin", PathError::PathParameter),
            ("/a;jsessionid=1/b", PathError::PathParameter),
            ("/a/%c0%ae%c0%ae/admin", PathError::InvalidUtf8),
            ("/a/%ff", PathError::InvalidUtf8),
            ("/a/%ef%bc%8e%ef%bc%8e/admin", PathError::LookalikeSeparator),
            ("/a//../b", PathError::AmbiguousDotSegment),
            ("/..", PathError::AboveRoot),
            ("/a/../../b", PathError::AboveRoot),
        ];
        for (target, expected) in cases {
            assert_eq!(RequestTarget::parse(target), Err(expected), "{target:?}");
        }
    }

    #[test]
    fn every_refusal_has_its_own_stable_name() {
        let mut names: Vec<&str> = PathError::ALL.iter().map(|error| error.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PathError::ALL.len());
    }

    #[test]
    fn a_normalized_path_parses_to_itself() {
        for target in ["/api/v1/orders/", "/a%25b/%C3%A9", "/x:y@z!$&'()*+,=~", "/"] {
            assert_eq!(path_of(target).as_deref(), Ok(target));
        }
    }

    #[test]
    fn methods_outside_the_standard_set_are_one_bucket() {
        assert_eq!(HttpMethod::of("GET"), HttpMethod::Get);
        assert_eq!(HttpMethod::of("patch"), HttpMethod::Patch);
        assert_eq!(HttpMethod::of("PROPFIND"), HttpMethod::Other);
        assert_eq!(HttpMethod::of("G3T-\u{e9}"), HttpMethod::Other);
        assert_eq!(HttpMethod::of(""), HttpMethod::Other);
        assert_eq!(HttpMethod::of("x").as_str(), "OTHER");
    }
}
