//! Browser and operating system from a User-Agent, with woothee: its rules are compiled in, so
//! nothing is downloaded or loaded at run time.

use woothee::parser::Parser;
use woothee::woothee::VALUE_UNKNOWN;

/// The most of a User-Agent kept with a recent call or a token's last use. Check accepts up to
/// 1024 bytes; real browsers send 100 to 200, and everything woothee needs to name browser and
/// OS comes first, so the rest would only be caller-controlled bytes in every stored row.
pub const MAX_STORED_LEN: usize = 256;

/// Appends `user_agent` as it is stored: at most [`MAX_STORED_LEN`] bytes (cut at a character
/// boundary), control characters (newlines, escapes, NUL) replaced by spaces, so a stored or
/// shown User-Agent can neither grow a row nor forge a line of a log or a terminal.
pub fn push_stored(stored: &mut String, user_agent: &str) {
    let clean = user_agent.len() <= MAX_STORED_LEN
        && !user_agent.bytes().any(|byte| byte.is_ascii_control());
    if clean {
        // The usual case: one copy, no per-character work.
        stored.push_str(user_agent);
        return;
    }
    let budget = stored.len() + MAX_STORED_LEN;
    for character in user_agent.chars() {
        let kept = if character.is_control() {
            ' '
        } else {
            character
        };
        if stored.len() + kept.len_utf8() > budget {
            break;
        }
        stored.push(kept);
    }
}

/// What a User-Agent says about the client; empty where it says nothing recognisable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Client {
    /// Name and major version, e.g. `Chrome 120`.
    pub browser: String,
    /// Name and version, e.g. `Windows 10`.
    pub os: String,
}

pub fn describe(user_agent: &str) -> Client {
    if user_agent.is_empty() {
        return Client::default();
    }
    let Some(parsed) = Parser::new().parse(user_agent) else {
        return Client::default();
    };
    let major_version = parsed.version.split('.').next().unwrap_or_default();
    // Windows names carry their version (`Windows 10`); woothee's `NT 10.0` would repeat it.
    let os_named_with_version = parsed.os.ends_with(|last: char| last.is_ascii_digit());
    let os_version = if os_named_with_version {
        ""
    } else {
        &parsed.os_version
    };
    Client {
        browser: joined(parsed.name, major_version),
        os: joined(parsed.os, os_version),
    }
}

/// `name version`, leaving out what woothee does not know.
fn joined(name: &str, version: &str) -> String {
    let known: Vec<&str> = [name, version]
        .into_iter()
        .filter(|part| !part.is_empty() && *part != VALUE_UNKNOWN)
        .collect();
    known.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_desktop_browser_is_named_with_its_major_version_and_its_os() {
        let client = describe(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
             Chrome/120.0.6099.130 Safari/537.36",
        );
        assert_eq!(client.browser, "Chrome 120");
        assert_eq!(client.os, "Windows 10");
    }

    #[test]
    fn an_os_without_a_version_in_its_name_gets_woothees_version() {
        let client = describe(
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like \
             Gecko) Version/17.1 Safari/605.1.15",
        );
        assert_eq!(client.browser, "Safari 17");
        assert_eq!(client.os, "Mac OSX 10.15.7");
    }

    fn stored(user_agent: &str) -> String {
        let mut stored = String::new();
        push_stored(&mut stored, user_agent);
        stored
    }

    #[test]
    fn a_stored_user_agent_is_cut_to_its_bound_at_a_character_boundary() {
        assert_eq!(stored("curl/8.5.0"), "curl/8.5.0");
        let long = format!("Mozilla/5.0 {}", "é".repeat(1000));
        let kept = stored(&long);
        assert!(kept.len() <= MAX_STORED_LEN, "{}", kept.len());
        assert!(kept.len() >= MAX_STORED_LEN - 1);
        assert!(long.starts_with(&kept));
    }

    #[test]
    fn control_characters_of_a_stored_user_agent_become_spaces() {
        assert_eq!(
            stored("curl/8\r\nX-Forged: 1\u{1b}[2J\0"),
            "curl/8  X-Forged: 1 [2J "
        );
    }

    #[test]
    fn an_unrecognisable_user_agent_says_nothing() {
        assert_eq!(describe("internal-batch-job"), Client::default());
        assert_eq!(describe(""), Client::default());
    }
}
