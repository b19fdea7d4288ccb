//! Names and ids, parsed once at the edge: past it, a value of these types is valid.

use std::fmt;

pub const MAX_NAME_LEN: usize = 128;
pub const MAX_DESCRIPTION_LEN: usize = 1024;
pub const DEFAULT_TENANT: &str = "default";
/// The API-status scope that switches every tenant at once.
pub const ALL_TENANTS: &str = "*";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidField {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {0} characters")]
    TooLong(usize),
    #[error("may use only letters, digits, '_', '-', '.', '@' and ':'")]
    BadCharacter,
    #[error("must not contain control characters")]
    ControlCharacter,
    #[error("'*' is only valid for the API status")]
    WildcardTenant,
    #[error("is not a token id (tok_ followed by a ULID)")]
    NotATokenId,
    #[error("is not an admin key id (adk_ followed by a ULID)")]
    NotAnAdminKeyId,
}

fn check_length(raw: &str, max: usize) -> Result<(), InvalidField> {
    if raw.is_empty() {
        return Err(InvalidField::Empty);
    }
    if raw.chars().count() > max {
        return Err(InvalidField::TooLong(max));
    }
    Ok(())
}

/// Ids and names used as keys: no spaces, nothing that needs quoting in a URL or a log.
fn check_identifier(raw: &str) -> Result<(), InvalidField> {
    check_length(raw, MAX_NAME_LEN)?;
    let valid = raw
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@' | ':'));
    if valid {
        Ok(())
    } else {
        Err(InvalidField::BadCharacter)
    }
}

macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_newtype!(
    /// A tenant: store, application or subdomain. Empty input means the default tenant.
    Tenant
);
string_newtype!(
    /// A tenant, or `*` for the API status that applies to all tenants.
    ApiScope
);
string_newtype!(
    /// A principal's id in the platform.
    PrincipalId
);
string_newtype!(
    /// A role's name within its tenant.
    RoleName
);
string_newtype!(
    /// A token's display name: any printable text, 1 to 128 characters.
    TokenName
);
string_newtype!(
    /// Free text about a token, at most 1024 characters.
    Description
);
string_newtype!(
    /// `tok_` followed by a ULID, so ids sort by creation time.
    TokenId
);

impl Tenant {
    /// A tenant name; empty input is the built-in default tenant, [`DEFAULT_TENANT`]. At the
    /// API's edge, where an empty tenant means the configured default
    /// (`TESSERA_DEFAULT_TENANT`), use [`Tenant::parse_or`].
    pub fn parse(raw: &str) -> Result<Self, InvalidField> {
        if raw.is_empty() {
            return Ok(Self::default());
        }
        if raw == ALL_TENANTS {
            return Err(InvalidField::WildcardTenant);
        }
        check_identifier(raw)?;
        Ok(Self(raw.to_owned()))
    }
}

impl Tenant {
    /// A tenant name, or `default` for empty input: what a request's empty `tenant` means.
    pub fn parse_or(raw: &str, default: &Tenant) -> Result<Self, InvalidField> {
        if raw.is_empty() {
            return Ok(default.clone());
        }
        Self::parse(raw)
    }
}

impl Default for Tenant {
    fn default() -> Self {
        Self(DEFAULT_TENANT.to_owned())
    }
}

impl ApiScope {
    pub fn parse(raw: &str) -> Result<Self, InvalidField> {
        Self::parse_or(raw, &Tenant::default())
    }

    /// A scope, with `default` for empty input, as [`Tenant::parse_or`].
    pub fn parse_or(raw: &str, default: &Tenant) -> Result<Self, InvalidField> {
        if raw == ALL_TENANTS {
            return Ok(Self::all());
        }
        Tenant::parse_or(raw, default).map(Self::from)
    }

    pub fn all() -> Self {
        Self(ALL_TENANTS.to_owned())
    }
}

impl From<Tenant> for ApiScope {
    fn from(tenant: Tenant) -> Self {
        Self(tenant.0)
    }
}

impl PrincipalId {
    pub fn parse(raw: &str) -> Result<Self, InvalidField> {
        check_identifier(raw)?;
        Ok(Self(raw.to_owned()))
    }
}

impl RoleName {
    pub fn parse(raw: &str) -> Result<Self, InvalidField> {
        check_identifier(raw)?;
        Ok(Self(raw.to_owned()))
    }
}

impl TokenName {
    pub fn parse(raw: &str) -> Result<Self, InvalidField> {
        let trimmed = raw.trim();
        check_length(trimmed, MAX_NAME_LEN)?;
        if trimmed.chars().any(char::is_control) {
            return Err(InvalidField::ControlCharacter);
        }
        Ok(Self(trimmed.to_owned()))
    }
}

impl Description {
    pub fn parse(raw: &str) -> Result<Self, InvalidField> {
        if raw.chars().count() > MAX_DESCRIPTION_LEN {
            return Err(InvalidField::TooLong(MAX_DESCRIPTION_LEN));
        }
        // Newlines and tabs are fine in a description; other control characters are not.
        if raw
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r'))
        {
            return Err(InvalidField::ControlCharacter);
        }
        Ok(Self(raw.to_owned()))
    }
}

impl TokenId {
    pub fn generate() -> Self {
        Self(format!("tok_{}", ulid::Ulid::new()))
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidField> {
        parse_prefixed_ulid(raw, "tok_", InvalidField::NotATokenId).map(Self)
    }
}

/// `raw` if it is `prefix` followed by a ULID; else `Empty`, or `wrong` for anything else.
pub fn parse_prefixed_ulid(
    raw: &str,
    prefix: &str,
    wrong: InvalidField,
) -> Result<String, InvalidField> {
    if raw.is_empty() {
        return Err(InvalidField::Empty);
    }
    let ulid_part = raw.strip_prefix(prefix).ok_or(wrong.clone())?;
    ulid::Ulid::from_string(ulid_part).map_err(|_| wrong)?;
    Ok(raw.to_owned())
}

/// Parses every entry of a list, reporting the index of the first invalid one; sorted, deduplicated.
pub fn parse_list<T: Ord>(
    raw: &[String],
    parse: impl Fn(&str) -> Result<T, InvalidField>,
) -> Result<Vec<T>, (usize, InvalidField)> {
    let mut parsed = Vec::with_capacity(raw.len());
    for (index, item) in raw.iter().enumerate() {
        parsed.push(parse(item).map_err(|e| (index, e))?);
    }
    parsed.sort();
    parsed.dedup();
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_tenant_means_the_default_tenant() {
        assert_eq!(Tenant::parse("").expect("default").as_str(), DEFAULT_TENANT);
    }

    #[test]
    fn an_empty_tenant_at_the_edge_means_the_configured_default() {
        let shop = Tenant::parse("shop").expect("tenant");
        assert_eq!(Tenant::parse_or("", &shop), Ok(shop.clone()));
        assert_eq!(
            Tenant::parse_or("acme", &shop).expect("tenant").as_str(),
            "acme"
        );
        assert_eq!(
            ApiScope::parse_or("", &shop).expect("scope").as_str(),
            "shop"
        );
        assert_eq!(ApiScope::parse_or("*", &shop).expect("scope").as_str(), "*");
    }

    #[test]
    fn the_wildcard_is_a_scope_but_not_a_tenant() {
        assert_eq!(Tenant::parse("*"), Err(InvalidField::WildcardTenant));
        assert_eq!(ApiScope::parse("*").expect("scope").as_str(), "*");
    }

    #[test]
    fn a_token_name_is_trimmed_and_limited_to_128_characters() {
        assert_eq!(
            TokenName::parse("  ci deploy ").expect("valid").as_str(),
            "ci deploy"
        );
        assert_eq!(TokenName::parse("   "), Err(InvalidField::Empty));
        assert!(TokenName::parse(&"é".repeat(128)).is_ok());
        assert_eq!(
            TokenName::parse(&"x".repeat(129)),
            Err(InvalidField::TooLong(128))
        );
        assert_eq!(
            TokenName::parse("a\u{0}b"),
            Err(InvalidField::ControlCharacter)
        );
    }

    #[test]
    fn a_description_may_be_empty_but_not_over_1024_characters() {
        assert!(Description::parse("").is_ok());
        assert!(Description::parse("line one\nline two").is_ok());
        assert_eq!(
            Description::parse(&"x".repeat(1025)),
            Err(InvalidField::TooLong(1024))
        );
    }

    #[test]
    fn identifiers_reject_spaces_and_slashes() {
        assert!(PrincipalId::parse("user-42@acme").is_ok());
        assert_eq!(
            PrincipalId::parse("user 42"),
            Err(InvalidField::BadCharacter)
        );
        assert_eq!(RoleName::parse("a/b"), Err(InvalidField::BadCharacter));
    }

    #[test]
    fn generated_token_ids_parse_and_sort_by_creation() {
        let first = TokenId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = TokenId::generate();
        assert!(TokenId::parse(first.as_str()).is_ok());
        assert!(first < second);
        assert_eq!(TokenId::parse("tok_nope"), Err(InvalidField::NotATokenId));
    }

    #[test]
    fn a_list_reports_the_index_of_its_first_bad_entry() {
        let raw = vec!["ok".to_owned(), "not ok".to_owned()];
        assert_eq!(
            parse_list(&raw, RoleName::parse),
            Err((1, InvalidField::BadCharacter))
        );
    }
}
