//! Permission rules for requests that reach Tessera through a gateway (Envoy): method and path →
//! the permission the request needs.
//!
//! Rules are tried in order and the first match wins, against the path as
//! [`RequestTarget::parse`] resolved it (never the raw one, which upstream servers resolve to
//! other resources). A request that no rule matches is either denied or only authenticated, as
//! the operator chose. The matched rule, not the raw path, labels the request in usage
//! statistics (`GET /api/v1/orders/*`), and the method in a label comes from a closed set
//! ([`HttpMethod`]), so neither ids in paths nor invented methods explode them.

use std::fmt;

use super::http::{HttpMethod, RequestTarget};
use super::permission::{InvalidPermission, MAX_QUERY_PERMISSIONS, Permission};

/// What a request's normalized path is compared with; the query string is never part of the
/// match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    Exact(String),
    Prefix(String),
}

impl PathPattern {
    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(exact) => path == exact,
            Self::Prefix(prefix) => path.starts_with(prefix.as_str()),
        }
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(exact) => f.write_str(exact),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRule {
    #[error("give exactly one of path (exact match) and prefix")]
    PathOrPrefix,
    #[error("a path or prefix starts with '/'")]
    NotAPath,
    #[error(
        "a path or prefix is written as request paths are normalized: no '//', '.' or '..' \
         segments, '?', '#', ';' or percent-encoded letters, digits or '-._~'"
    )]
    NotNormalized,
    #[error("a method is an HTTP method name such as GET, or * for any")]
    BadMethod,
    #[error("permission: {0}")]
    Permission(#[from] InvalidPermission),
    #[error("all_permissions and any_permissions: at most {MAX_QUERY_PERMISSIONS} each")]
    TooManyPermissions,
    #[error("cost: at most {}", crate::domain::credits::MAX_COST)]
    CostTooHigh,
}

/// One rule: an optional method (None: any), a path pattern, and what a match needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionRule {
    method: Option<String>,
    path: PathPattern,
    /// None: the request only has to be authenticated (unless `all` or `any` say more).
    permission: Option<Permission>,
    /// Every one of these is needed too (Check's `all_permissions`).
    all: Vec<Permission>,
    /// At least one of these is needed, when not empty (Check's `any_permissions`).
    any: Vec<Permission>,
    /// Credits a match spends (Check's `cost`); None: Check's default, 1.
    cost: Option<u32>,
}

impl PermissionRule {
    /// `method`: empty or `*` for any, else an HTTP method (case-insensitive). Exactly one of
    /// `path` (exact) and `prefix`. `permission`: empty for authenticate only.
    pub fn parse(
        method: &str,
        path: Option<&str>,
        prefix: Option<&str>,
        permission: &str,
    ) -> Result<Self, InvalidRule> {
        let method = match method.trim() {
            "" | "*" => None,
            name if name.bytes().all(|b| b.is_ascii_alphabetic()) => {
                Some(name.to_ascii_uppercase())
            }
            _ => return Err(InvalidRule::BadMethod),
        };
        let path = match (path, prefix) {
            (Some(exact), None) => PathPattern::Exact(exact.to_owned()),
            (None, Some(prefix)) => PathPattern::Prefix(prefix.to_owned()),
            _ => return Err(InvalidRule::PathOrPrefix),
        };
        let (PathPattern::Exact(text) | PathPattern::Prefix(text)) = &path;
        if !text.starts_with('/') {
            return Err(InvalidRule::NotAPath);
        }
        // Requests are matched on their normalized path: a pattern in any other spelling would
        // never match, silently leaving its requests to the rules after it.
        let normalized = RequestTarget::parse(text)
            .is_ok_and(|target| target.query().is_none() && target.path() == text);
        if !normalized {
            return Err(InvalidRule::NotNormalized);
        }
        let permission = if permission.is_empty() {
            None
        } else {
            Some(Permission::parse(permission)?)
        };
        Ok(Self {
            method,
            path,
            permission,
            all: Vec::new(),
            any: Vec::new(),
            cost: None,
        })
    }

    /// The rule, spending `cost` credits per match (None: Check's default), bounded as Check's
    /// `cost`.
    pub fn costing(mut self, cost: Option<u32>) -> Result<Self, InvalidRule> {
        if cost.is_some_and(|cost| cost > crate::domain::credits::MAX_COST) {
            return Err(InvalidRule::CostTooHigh);
        }
        self.cost = cost;
        Ok(self)
    }

    /// What a match spends from a token with credits; None: 1.
    pub fn cost(&self) -> Option<u32> {
        self.cost
    }

    /// The rule, needing also every permission of `all` and at least one of `any` (when not
    /// empty), as a Check's `all_permissions` and `any_permissions` do; each list bounded as
    /// theirs.
    pub fn needing(mut self, all: &[String], any: &[String]) -> Result<Self, InvalidRule> {
        if all.len() > MAX_QUERY_PERMISSIONS || any.len() > MAX_QUERY_PERMISSIONS {
            return Err(InvalidRule::TooManyPermissions);
        }
        let parse = |raw: &[String]| -> Result<Vec<Permission>, InvalidRule> {
            raw.iter()
                .map(|permission| Ok(Permission::parse(permission)?))
                .collect()
        };
        self.all = parse(all)?;
        self.any = parse(any)?;
        Ok(self)
    }

    /// What a match needs beside `permission`: (all of, any of).
    pub fn also_needed(&self) -> (&[Permission], &[Permission]) {
        (&self.all, &self.any)
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        let method_matches = self
            .method
            .as_deref()
            .is_none_or(|own| own.eq_ignore_ascii_case(method));
        method_matches && self.path.matches(path)
    }

    pub fn permission(&self) -> Option<&Permission> {
        self.permission.as_ref()
    }

    /// The usage label of a request this rule matched: the rule's method (operator-set), or for
    /// a rule of any method the request's from the closed set, and the rule's pattern.
    pub fn label(&self, method: &str) -> String {
        let method = self
            .method
            .as_deref()
            .unwrap_or_else(|| HttpMethod::of(method).as_str());
        format!("{method} {}", self.path)
    }
}

/// What a request that no rule matches needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unmatched {
    /// Denied (403) whatever the token: the route is not exposed. The safe default.
    #[default]
    Deny,
    /// Allowed to any valid token, as a Check with an empty permission.
    Authenticate,
}

/// The rules, in order, and what applies when none matches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PermissionRules {
    rules: Vec<PermissionRule>,
    unmatched: Unmatched,
}

impl PermissionRules {
    pub fn new(rules: Vec<PermissionRule>, unmatched: Unmatched) -> Self {
        Self { rules, unmatched }
    }

    /// The first rule matching `method` and the target's normalized path (its query is
    /// ignored).
    pub fn find(&self, method: &str, target: &RequestTarget) -> Option<&PermissionRule> {
        self.rules
            .iter()
            .find(|rule| rule.matches(method, target.path()))
    }

    pub fn unmatched(&self) -> Unmatched {
        self.unmatched
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_rules_cost_is_bounded_as_checks_is() {
        let rule =
            PermissionRule::parse("POST", None, Some("/exports/"), "orders:read").expect("rule");
        assert_eq!(rule.clone().costing(Some(5)).expect("cost").cost(), Some(5));
        assert_eq!(rule.clone().costing(None).expect("no cost").cost(), None);
        assert_eq!(
            rule.costing(Some(crate::domain::credits::MAX_COST + 1)),
            Err(InvalidRule::CostTooHigh)
        );
    }
    use super::*;

    fn rule(
        method: &str,
        path: Option<&str>,
        prefix: Option<&str>,
        permission: &str,
    ) -> PermissionRule {
        PermissionRule::parse(method, path, prefix, permission).expect("valid rule")
    }

    fn rules() -> PermissionRules {
        PermissionRules::new(
            vec![
                rule("GET", Some("/api/v1/orders"), None, "orders:list"),
                rule("get", None, Some("/api/v1/orders/"), "orders:read"),
                rule("POST", None, Some("/api/v1/orders"), "orders:write"),
                rule("*", None, Some("/health"), ""),
                rule("", None, Some("/api/"), "api:use"),
            ],
            Unmatched::Deny,
        )
    }

    fn find<'a>(
        rules: &'a PermissionRules,
        method: &str,
        path: &str,
    ) -> Option<&'a PermissionRule> {
        rules.find(method, &RequestTarget::parse(path).expect("a valid target"))
    }

    fn permission_of(rules: &PermissionRules, method: &str, path: &str) -> Option<String> {
        find(rules, method, path).map(|rule| {
            rule.permission()
                .map(ToString::to_string)
                .unwrap_or_default()
        })
    }

    #[test]
    fn a_rule_needing_several_permissions_keeps_both_lists_and_bounds_them() {
        let strings = |raw: &[&str]| raw.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let rule = PermissionRule::parse("DELETE", None, Some("/orders/"), "")
            .and_then(|rule| {
                rule.needing(
                    &strings(&["orders:write", "orders:delete"]),
                    &strings(&["a:b"]),
                )
            })
            .expect("valid rule");
        let (all, any) = rule.also_needed();
        assert_eq!(all.len(), 2);
        assert_eq!(any.len(), 1);
        assert_eq!(rule.permission(), None);

        let seventeen: Vec<String> = (0..17).map(|i| format!("r{i}:read")).collect();
        let too_many = PermissionRule::parse("GET", None, Some("/"), "")
            .and_then(|rule| rule.needing(&seventeen, &[]));
        assert_eq!(too_many, Err(InvalidRule::TooManyPermissions));
        let bad = PermissionRule::parse("GET", None, Some("/"), "")
            .and_then(|rule| rule.needing(&[], &strings(&["orders"])));
        assert!(matches!(bad, Err(InvalidRule::Permission(_))), "{bad:?}");
    }

    #[test]
    fn an_exact_rule_matches_only_its_path() {
        let rules = rules();
        assert_eq!(
            permission_of(&rules, "GET", "/api/v1/orders").as_deref(),
            Some("orders:list")
        );
        assert_eq!(
            permission_of(&rules, "GET", "/api/v1/orders/42").as_deref(),
            Some("orders:read")
        );
    }

    #[test]
    fn the_first_matching_rule_wins_over_later_broader_ones() {
        let rules = rules();
        assert_eq!(
            permission_of(&rules, "POST", "/api/v1/orders/42").as_deref(),
            Some("orders:write")
        );
        assert_eq!(
            permission_of(&rules, "DELETE", "/api/v1/orders/42").as_deref(),
            Some("api:use")
        );
    }

    #[test]
    fn methods_match_case_insensitively_and_star_matches_any() {
        let rules = rules();
        assert_eq!(
            permission_of(&rules, "get", "/api/v1/orders").as_deref(),
            Some("orders:list")
        );
        assert_eq!(
            permission_of(&rules, "PATCH", "/health/live").as_deref(),
            Some("")
        );
    }

    #[test]
    fn the_query_string_is_ignored_when_matching() {
        assert_eq!(
            permission_of(&rules(), "GET", "/api/v1/orders?page=2").as_deref(),
            Some("orders:list")
        );
    }

    #[test]
    fn a_request_no_rule_matches_finds_nothing() {
        assert_eq!(permission_of(&rules(), "GET", "/admin"), None);
        assert_eq!(rules().unmatched(), Unmatched::Deny);
    }

    #[test]
    fn the_label_is_the_method_and_the_matched_pattern_not_the_raw_path() {
        let rules = rules();
        let matched = find(&rules, "get", "/api/v1/orders/42?x=1").expect("match");
        assert_eq!(matched.label("get"), "GET /api/v1/orders/*");
        let exact = find(&rules, "GET", "/api/v1/orders").expect("match");
        assert_eq!(exact.label("GET"), "GET /api/v1/orders");
    }

    #[test]
    fn rules_match_the_normalized_path_not_the_raw_one() {
        let rules = rules();
        assert_eq!(
            permission_of(&rules, "GET", "/api/v1/orders/../../../admin"),
            None
        );
        assert_eq!(
            permission_of(&rules, "GET", "//api/v1/%6frders/42").as_deref(),
            Some("orders:read")
        );
    }

    #[test]
    fn a_label_takes_its_method_from_the_rule_or_the_closed_set_never_the_raw_method() {
        let rules = rules();
        let any_method = find(&rules, "X-INVENTED-1", "/health").expect("match");
        assert_eq!(any_method.label("X-INVENTED-1"), "OTHER /health*");
        assert_eq!(any_method.label("delete"), "DELETE /health*");
        let dav = rule("PROPFIND", None, Some("/dav/"), "");
        assert_eq!(dav.label("propfind"), "PROPFIND /dav/*");
    }

    #[test]
    fn a_pattern_that_no_normalized_path_can_equal_is_rejected() {
        for pattern in [
            "/api//v1",
            "/api/./v1",
            "/api/../v1",
            "/a%6f",
            "/a;b",
            "/a?b",
            "/a/..",
        ] {
            assert_eq!(
                PermissionRule::parse("GET", Some(pattern), None, ""),
                Err(InvalidRule::NotNormalized),
                "{pattern}"
            );
        }
        assert!(PermissionRule::parse("GET", None, Some("/a%25b/c:d/"), "").is_ok());
    }

    #[test]
    fn a_rule_needs_exactly_one_pattern_starting_with_a_slash() {
        assert_eq!(
            PermissionRule::parse("GET", None, None, ""),
            Err(InvalidRule::PathOrPrefix)
        );
        assert_eq!(
            PermissionRule::parse("GET", Some("/a"), Some("/b"), ""),
            Err(InvalidRule::PathOrPrefix)
        );
        assert_eq!(
            PermissionRule::parse("GET", Some("api"), None, ""),
            Err(InvalidRule::NotAPath)
        );
    }

    #[test]
    fn a_rule_with_a_bad_method_or_permission_is_rejected() {
        assert_eq!(
            PermissionRule::parse("GET /x", Some("/x"), None, ""),
            Err(InvalidRule::BadMethod)
        );
        assert!(matches!(
            PermissionRule::parse("GET", Some("/x"), None, "orders:*"),
            Err(InvalidRule::Permission(_))
        ));
    }
}
