//! Browser and operating system from a User-Agent, with woothee: its rules are compiled in, so
//! nothing is downloaded or loaded at run time.

use woothee::parser::Parser;
use woothee::woothee::VALUE_UNKNOWN;

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

    #[test]
    fn an_unrecognisable_user_agent_says_nothing() {
        assert_eq!(describe("internal-batch-job"), Client::default());
        assert_eq!(describe(""), Client::default());
    }
}
