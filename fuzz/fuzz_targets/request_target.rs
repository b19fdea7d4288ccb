//! A gateway's request target (`:path`) as a client writes it, through the one parser every
//! gateway mapping uses, `RequestTarget::parse`.
//!
//! Input: the bytes as text (not UTF-8: skipped, as prost refuses such a string field), tried as
//! it is and behind a `/`, so most inputs reach the path rules. Asserts: parsing is
//! deterministic; a refusal is one of the named ones; an accepted target's path starts with `/`
//! and holds no `//`, no `.` or `..` segment, no `?`, `#`, `;` or `\`, only visible ASCII, and
//! escapes only as `%XX` in uppercase for the bytes that stay encoded; it decodes to UTF-8;
//! it has no more segments than the input; it parses again to itself; and the query is exactly
//! what followed the first `?`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera::domain::http::{PathError, RequestTarget};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check(text);
    check(&format!("/{text}"));
});

fn check(target: &str) {
    let parsed = RequestTarget::parse(target);
    assert_eq!(parsed, RequestTarget::parse(target), "not deterministic");
    let parsed = match parsed {
        Ok(parsed) => parsed,
        Err(error) => {
            assert!(PathError::ALL.contains(&error));
            let name = error.as_str();
            assert!(
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            );
            return;
        }
    };
    let path = parsed.path();
    assert!(path.starts_with('/'), "{path:?}");
    assert!(!path.contains("//"), "{path:?}");
    assert!(
        path.split('/')
            .all(|segment| segment != "." && segment != ".."),
        "{path:?}"
    );
    assert!(!path.contains(['?', '#', ';', '\\']), "{path:?}");
    assert!(path.bytes().all(|b| b.is_ascii_graphic()), "{path:?}");

    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = &path[index + 1..index + 3];
            assert!(
                hex.bytes()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)),
                "{path:?}"
            );
            let value = u8::from_str_radix(hex, 16).expect("hex");
            assert!(
                matches!(value, b'%' | b'?' | b'#' | b' ' | b';') || value >= 0x80,
                "{path:?} keeps %{hex} encoded"
            );
            decoded.push(value);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    assert!(String::from_utf8(decoded).is_ok(), "{path:?}");

    let raw_path = target.split('?').next().unwrap_or_default();
    assert!(
        path.split('/').count() <= raw_path.split('/').count() + 1,
        "{path:?}"
    );

    let again = RequestTarget::parse(path).expect("a normalized path parses");
    assert_eq!(again.path(), path);
    assert_eq!(again.query(), None);
    assert_eq!(
        parsed.query(),
        target.split_once('?').map(|(_, query)| query)
    );
}
