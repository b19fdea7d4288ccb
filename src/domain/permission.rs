//! Permissions and grants.
//!
//! A permission is `resource:action` (`orders:read`) or `fn:<Name>`; a grant may use `*` as a
//! whole segment (`orders:*`, `*:read`, `*`). A token's effective permissions are
//! (own grants ∪ role grants) ∩ owner's permissions, evaluated at Check time so that a token
//! never holds more than its owner, also after the owner loses a permission.

use std::collections::{HashMap, HashSet};
use std::fmt;

pub const MAX_PERMISSION_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPermission {
    #[error("a permission is at most {MAX_PERMISSION_LEN} characters")]
    TooLong,
    #[error("a permission has the form resource:action or fn:Name")]
    WrongShape,
    #[error("a permission segment uses only letters, digits, '_', '-' and '.'")]
    BadCharacter,
    #[error("'*' may only stand for a whole segment of a grant")]
    MisplacedWildcard,
}

/// One side of `resource:action`, borrowed from a grant's or permission's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment<'a> {
    Any,
    Literal(&'a str),
}

impl<'a> Segment<'a> {
    fn of(text: &'a str) -> Self {
        if text == "*" {
            Self::Any
        } else {
            Self::Literal(text)
        }
    }

    fn validate(raw: &str, wildcard_allowed: bool) -> Result<(), InvalidPermission> {
        if raw == "*" {
            return if wildcard_allowed {
                Ok(())
            } else {
                Err(InvalidPermission::MisplacedWildcard)
            };
        }
        if raw.contains('*') {
            return Err(InvalidPermission::MisplacedWildcard);
        }
        if raw.is_empty() {
            return Err(InvalidPermission::WrongShape);
        }
        let valid = raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid {
            return Err(InvalidPermission::BadCharacter);
        }
        Ok(())
    }

    fn matches(self, literal: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Literal(own) => own == literal,
        }
    }

    /// Whether every value `other` admits is also admitted by `self`.
    fn covers(self, other: Segment<'_>) -> bool {
        match (self, other) {
            (Self::Any, _) => true,
            (Self::Literal(_), Segment::Any) => false,
            (Self::Literal(own), Segment::Literal(theirs)) => own == theirs,
        }
    }

    /// The narrower of two overlapping segments, or None when they share nothing.
    #[cfg(test)]
    fn meet(self, other: Segment<'a>) -> Option<Segment<'a>> {
        match (self, other) {
            (Self::Any, other) | (other, Self::Any) => Some(other),
            (Self::Literal(a), Self::Literal(b)) if a == b => Some(self),
            _ => None,
        }
    }

    fn as_str(self) -> &'a str {
        match self {
            Self::Any => "*",
            Self::Literal(text) => text,
        }
    }
}

/// A concrete permission asked for in a Check: no wildcards. Held as its text in one
/// allocation, split at `colon`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Permission {
    text: Box<str>,
    colon: usize,
}

impl Permission {
    pub fn parse(raw: &str) -> Result<Self, InvalidPermission> {
        let (resource, action) = split_two(raw)?;
        Segment::validate(resource, false)?;
        Segment::validate(action, false)?;
        Ok(Self {
            text: raw.into(),
            colon: resource.len(),
        })
    }

    /// The canonical text, `resource:action`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn resource(&self) -> &str {
        &self.text[..self.colon]
    }

    fn action(&self) -> &str {
        &self.text[self.colon + 1..]
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A grant: a permission pattern held by a token, role or principal. Kept as its canonical text
/// (`*` for everything, else `resource:action`) in one allocation, because cached credentials
/// hold many of them and memory per cached token is budgeted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Grant {
    text: Box<str>,
}

impl Grant {
    pub fn parse(raw: &str) -> Result<Self, InvalidPermission> {
        if raw == "*" {
            return Ok(Self::everything());
        }
        let (resource, action) = split_two(raw)?;
        Segment::validate(resource, true)?;
        Segment::validate(action, true)?;
        Ok(Self::from_segments(
            Segment::of(resource),
            Segment::of(action),
        ))
    }

    pub fn everything() -> Self {
        Self { text: "*".into() }
    }

    fn from_segments(resource: Segment<'_>, action: Segment<'_>) -> Self {
        match (resource, action) {
            (Segment::Any, Segment::Any) => Self::everything(),
            _ => Self {
                text: format!("{}:{}", resource.as_str(), action.as_str()).into(),
            },
        }
    }

    fn segments(&self) -> (Segment<'_>, Segment<'_>) {
        match self.text.split_once(':') {
            Some((resource, action)) => (Segment::of(resource), Segment::of(action)),
            None => (Segment::Any, Segment::Any),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn matches(&self, permission: &Permission) -> bool {
        let (resource, action) = self.segments();
        resource.matches(permission.resource()) && action.matches(permission.action())
    }

    /// Whether everything `other` grants is also granted by `self`.
    pub fn covers(&self, other: &Grant) -> bool {
        let (resource, action) = self.segments();
        let (other_resource, other_action) = other.segments();
        resource.covers(other_resource) && action.covers(other_action)
    }

    /// `resource:action`, both literal.
    fn literal(resource: &str, action: &str) -> Self {
        Self::from_segments(Segment::Literal(resource), Segment::Literal(action))
    }

    /// The grant that both `self` and `other` allow, if they overlap.
    #[cfg(test)]
    fn meet(&self, other: &Grant) -> Option<Grant> {
        let (resource, action) = self.segments();
        let (other_resource, other_action) = other.segments();
        Some(Self::from_segments(
            resource.meet(other_resource)?,
            action.meet(other_action)?,
        ))
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn split_two(raw: &str) -> Result<(&str, &str), InvalidPermission> {
    if raw.len() > MAX_PERMISSION_LEN {
        return Err(InvalidPermission::TooLong);
    }
    let (resource, action) = raw.split_once(':').ok_or(InvalidPermission::WrongShape)?;
    if action.contains(':') {
        return Err(InvalidPermission::WrongShape);
    }
    Ok((resource, action))
}

/// Parses a list of raw grants, reporting the index of the first invalid one.
pub fn parse_grants(raw: &[String]) -> Result<Vec<Grant>, (usize, InvalidPermission)> {
    let mut grants = Vec::with_capacity(raw.len());
    for (index, item) in raw.iter().enumerate() {
        grants.push(Grant::parse(item).map_err(|e| (index, e))?);
    }
    grants.sort();
    grants.dedup();
    Ok(grants)
}

/// Most permissions one Check may list in each of `all_permissions` and `any_permissions`.
pub const MAX_QUERY_PERMISSIONS: usize = 16;

/// What one Check needs of a token's permissions: every required one (the Check's `permission`
/// and `all_permissions`), and at least one of `any` when that is not empty. Empty: the Check
/// only authenticates. The single permission of most Checks needs no list (no allocation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PermissionQuery {
    primary: Option<Permission>,
    all: Vec<Permission>,
    any: Vec<Permission>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("at most {MAX_QUERY_PERMISSIONS} permissions")]
pub struct TooManyPermissions;

/// What a token lacks for a query: the required permissions it does not hold, and the `any`
/// list when it holds none of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missing<'a> {
    query: &'a PermissionQuery,
    grants: &'a [Grant],
}

impl PermissionQuery {
    /// One permission needed.
    pub fn one(permission: Permission) -> Self {
        Self {
            primary: Some(permission),
            ..Self::default()
        }
    }

    /// `primary` and every one of `all`, and one of `any` if it is not empty. Repeated
    /// permissions count once.
    pub fn new(
        primary: Option<Permission>,
        mut all: Vec<Permission>,
        any: Vec<Permission>,
    ) -> Result<Self, TooManyPermissions> {
        if all.len() > MAX_QUERY_PERMISSIONS || any.len() > MAX_QUERY_PERMISSIONS {
            return Err(TooManyPermissions);
        }
        all.retain(|permission| Some(permission) != primary.as_ref());
        Ok(Self {
            primary,
            all: unique(all),
            any: unique(any),
        })
    }

    /// The query's text when it is one permission or none (`""`), as most Checks are; None when
    /// it lists several (then it displays as `a & (b | c)`).
    pub fn as_single(&self) -> Option<&str> {
        if !self.all.is_empty() || !self.any.is_empty() {
            return None;
        }
        Some(self.primary.as_ref().map_or("", Permission::as_str))
    }

    /// True when the Check only authenticates.
    pub fn is_empty(&self) -> bool {
        self.primary.is_none() && self.all.is_empty() && self.any.is_empty()
    }

    /// Every permission that must be held.
    pub fn required(&self) -> impl Iterator<Item = &Permission> {
        self.primary.iter().chain(&self.all)
    }

    /// The permissions of which one must be held (none: no such condition).
    pub fn any(&self) -> &[Permission] {
        &self.any
    }

    /// Whether `grants` satisfy the query.
    pub fn is_granted_by(&self, grants: &[Grant]) -> bool {
        self.required()
            .all(|permission| any_matches(grants, permission))
            && (self.any.is_empty()
                || self
                    .any
                    .iter()
                    .any(|permission| any_matches(grants, permission)))
    }

    /// What `grants` lack; displays as the deny message's detail.
    pub fn missing<'a>(&'a self, grants: &'a [Grant]) -> Missing<'a> {
        Missing {
            query: self,
            grants,
        }
    }
}

impl Missing<'_> {
    /// The required permissions not held.
    pub fn required(&self) -> impl Iterator<Item = &Permission> {
        self.query
            .required()
            .filter(|permission| !any_matches(self.grants, permission))
    }

    /// The `any` list, when none of it is held.
    pub fn any(&self) -> &[Permission] {
        let any = &self.query.any;
        if any
            .iter()
            .any(|permission| any_matches(self.grants, permission))
        {
            &[]
        } else {
            any
        }
    }
}

impl fmt::Display for Missing<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let required: Vec<&str> = self.required().map(Permission::as_str).collect();
        let any: Vec<&str> = self.any().iter().map(Permission::as_str).collect();
        if !required.is_empty() {
            write!(f, "missing {}", required.join(", "))?;
        }
        if !any.is_empty() {
            if !required.is_empty() {
                f.write_str("; ")?;
            }
            write!(f, "needs one of {}", any.join(", "))?;
        }
        Ok(())
    }
}

/// The query as usage shows a call: `a`, `a & b`, `(c | d)`, `a & (c | d)`.
impl fmt::Display for PermissionQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for permission in self.required() {
            if !first {
                f.write_str(" & ")?;
            }
            first = false;
            f.write_str(permission.as_str())?;
        }
        if !self.any.is_empty() {
            if !first {
                f.write_str(" & ")?;
            }
            f.write_str("(")?;
            for (index, permission) in self.any.iter().enumerate() {
                if index > 0 {
                    f.write_str(" | ")?;
                }
                f.write_str(permission.as_str())?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// `list` without repeats, in its order (at most [`MAX_QUERY_PERMISSIONS`] entries).
fn unique(list: Vec<Permission>) -> Vec<Permission> {
    let mut kept: Vec<Permission> = Vec::with_capacity(list.len());
    for permission in list {
        if !kept.contains(&permission) {
            kept.push(permission);
        }
    }
    kept
}

/// Whether any grant in `set` matches `permission`.
pub fn any_matches(set: &[Grant], permission: &Permission) -> bool {
    set.iter().any(|grant| grant.matches(permission))
}

/// The grants of `wanted` that `ceiling` does not fully cover.
pub fn beyond_ceiling<'a>(wanted: &'a [Grant], ceiling: &[Grant]) -> Vec<&'a Grant> {
    wanted
        .iter()
        .filter(|grant| !ceiling.iter().any(|limit| limit.covers(grant)))
        .collect()
}

/// The grants that both `granted` and `ceiling` allow: the token's effective permissions, sorted,
/// without grants implied by broader ones (so the list reads as the user would write it).
///
/// Computed at every cache fill, so in time linear in the inputs and the result (with hash
/// lookups), not by meeting every grant with every limit and comparing every result with every
/// other. The result itself can be as large as |granted| × |ceiling| (`r1:*`, `r2:*`, … against
/// `*:a1`, `*:a2`, …); both lists are bounded where they are written.
pub fn intersect(granted: &[Grant], ceiling: &[Grant]) -> Vec<Grant> {
    let limits = Shapes::of(ceiling);
    let mut effective = Vec::new();
    for grant in granted {
        match grant.segments() {
            (Segment::Any, Segment::Any) => effective.extend(ceiling.iter().cloned()),
            (Segment::Literal(resource), Segment::Any) => {
                if limits.everything || limits.resources.contains(resource) {
                    effective.push(grant.clone());
                }
                let actions = limits.actions.iter().copied();
                let listed = limits.literals_by_resource.get(resource).into_iter();
                for action in actions.chain(listed.flatten().copied()) {
                    effective.push(Grant::literal(resource, action));
                }
            }
            (Segment::Any, Segment::Literal(action)) => {
                if limits.everything || limits.actions.contains(action) {
                    effective.push(grant.clone());
                }
                let resources = limits.resources.iter().copied();
                let listed = limits.literals_by_action.get(action).into_iter();
                for resource in resources.chain(listed.flatten().copied()) {
                    effective.push(Grant::literal(resource, action));
                }
            }
            (Segment::Literal(resource), Segment::Literal(action)) => {
                if limits.allows_literal(resource, action) {
                    effective.push(grant.clone());
                }
            }
        }
    }
    effective.sort();
    effective.dedup();
    let implied: Vec<bool> = {
        let broad = Shapes::of(&effective);
        effective.iter().map(|grant| broad.implies(grant)).collect()
    };
    effective
        .into_iter()
        .zip(implied)
        .filter_map(|(grant, is_implied)| (!is_implied).then_some(grant))
        .collect()
}

/// A grant list indexed by shape: `*`, `resource:*`, `*:action` and `resource:action`.
#[derive(Default)]
struct Shapes<'a> {
    everything: bool,
    /// `resource:*` grants.
    resources: HashSet<&'a str>,
    /// `*:action` grants.
    actions: HashSet<&'a str>,
    /// `resource:action` grants, by resource and by action.
    literals_by_resource: HashMap<&'a str, Vec<&'a str>>,
    literals_by_action: HashMap<&'a str, Vec<&'a str>>,
}

impl<'a> Shapes<'a> {
    fn of(grants: &'a [Grant]) -> Self {
        let mut shapes = Self::default();
        for grant in grants {
            match grant.segments() {
                (Segment::Any, Segment::Any) => shapes.everything = true,
                (Segment::Literal(resource), Segment::Any) => {
                    shapes.resources.insert(resource);
                }
                (Segment::Any, Segment::Literal(action)) => {
                    shapes.actions.insert(action);
                }
                (Segment::Literal(resource), Segment::Literal(action)) => {
                    shapes
                        .literals_by_resource
                        .entry(resource)
                        .or_default()
                        .push(action);
                    shapes
                        .literals_by_action
                        .entry(action)
                        .or_default()
                        .push(resource);
                }
            }
        }
        shapes
    }

    /// Whether `resource:action` is within these grants.
    fn allows_literal(&self, resource: &str, action: &str) -> bool {
        self.everything
            || self.resources.contains(resource)
            || self.actions.contains(action)
            || self
                .literals_by_resource
                .get(resource)
                .is_some_and(|actions| actions.contains(&action))
    }

    /// Whether a broader grant than `grant` (not `grant` itself) is among these.
    fn implies(&self, grant: &Grant) -> bool {
        match grant.segments() {
            (Segment::Any, Segment::Any) => false,
            (Segment::Literal(_), Segment::Any) | (Segment::Any, Segment::Literal(_)) => {
                self.everything
            }
            (Segment::Literal(resource), Segment::Literal(action)) => {
                self.everything
                    || self.resources.contains(resource)
                    || self.actions.contains(action)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn query(primary: Option<&str>, all: &[&str], any: &[&str]) -> PermissionQuery {
        let parse = |raw: &[&str]| -> Vec<Permission> {
            raw.iter()
                .map(|p| Permission::parse(p).expect("permission"))
                .collect()
        };
        PermissionQuery::new(
            primary.map(|p| Permission::parse(p).expect("permission")),
            parse(all),
            parse(any),
        )
        .expect("query")
    }

    fn granted(raw: &[&str]) -> Vec<Grant> {
        raw.iter()
            .map(|g| Grant::parse(g).expect("grant"))
            .collect()
    }

    #[test]
    fn every_required_permission_and_one_of_the_any_list_are_needed() {
        let q = query(
            Some("orders:read"),
            &["orders:write"],
            &["billing:read", "admin:read"],
        );
        assert!(q.is_granted_by(&granted(&["orders:*", "admin:read"])));
        assert!(!q.is_granted_by(&granted(&["orders:*"])));
        assert!(!q.is_granted_by(&granted(&["orders:read", "billing:read"])));
        assert!(PermissionQuery::default().is_granted_by(&[]));
    }

    #[test]
    fn the_missing_permissions_are_named() {
        let q = query(
            Some("orders:read"),
            &["orders:write"],
            &["billing:read", "admin:read"],
        );
        let held = granted(&["orders:read"]);
        assert_eq!(
            q.missing(&held).to_string(),
            "missing orders:write; needs one of billing:read, admin:read"
        );
        let held = granted(&["orders:read", "orders:write"]);
        assert_eq!(
            q.missing(&held).to_string(),
            "needs one of billing:read, admin:read"
        );
    }

    #[test]
    fn a_query_shows_as_one_line_and_repeats_count_once() {
        let q = query(Some("a:b"), &["a:b", "c:d", "c:d"], &["e:f", "g:h"]);
        assert_eq!(q.to_string(), "a:b & c:d & (e:f | g:h)");
        assert_eq!(query(Some("a:b"), &[], &[]).to_string(), "a:b");
    }

    #[test]
    fn a_single_permission_is_its_own_text_and_a_list_is_not_single() {
        assert_eq!(query(Some("a:b"), &[], &[]).as_single(), Some("a:b"));
        assert_eq!(PermissionQuery::default().as_single(), Some(""));
        assert_eq!(query(Some("a:b"), &["c:d"], &[]).as_single(), None);
        assert_eq!(query(None, &[], &["c:d"]).as_single(), None);
    }

    #[test]
    fn a_query_of_more_than_the_bound_is_refused() {
        let many: Vec<Permission> = (0..=MAX_QUERY_PERMISSIONS)
            .map(|n| Permission::parse(&format!("r{n}:read")).expect("permission"))
            .collect();
        assert_eq!(
            PermissionQuery::new(None, many.clone(), Vec::new()),
            Err(TooManyPermissions)
        );
        assert_eq!(
            PermissionQuery::new(None, Vec::new(), many),
            Err(TooManyPermissions)
        );
    }

    /// The first definition: every grant met with every limit, then every result compared with
    /// every other. Quadratic, and the semantics `intersect` must keep.
    fn reference_intersect(granted: &[Grant], ceiling: &[Grant]) -> Vec<Grant> {
        let mut effective: Vec<Grant> = granted
            .iter()
            .flat_map(|grant| ceiling.iter().filter_map(move |limit| grant.meet(limit)))
            .collect();
        effective.sort();
        effective.dedup();
        let implied: Vec<bool> = effective
            .iter()
            .enumerate()
            .map(|(i, grant)| {
                effective
                    .iter()
                    .enumerate()
                    .any(|(j, other)| i != j && other.covers(grant) && other != grant)
            })
            .collect();
        effective
            .into_iter()
            .zip(implied)
            .filter_map(|(grant, is_implied)| (!is_implied).then_some(grant))
            .collect()
    }

    /// Grants over a small alphabet, so that random lists overlap often.
    fn any_grant() -> impl Strategy<Value = Grant> {
        let resource = prop_oneof![Just("*"), Just("orders"), Just("products"), Just("fn")];
        let action = prop_oneof![Just("*"), Just("read"), Just("write"), Just("Load")];
        (resource, action).prop_map(|(resource, action)| grant(&format!("{resource}:{action}")))
    }

    proptest! {
        #[test]
        fn intersect_gives_what_the_pairwise_definition_gives(
            granted in proptest::collection::vec(any_grant(), 0..12),
            ceiling in proptest::collection::vec(any_grant(), 0..12),
        ) {
            prop_assert_eq!(
                intersect(&granted, &ceiling),
                reference_intersect(&granted, &ceiling)
            );
        }
    }

    #[test]
    fn a_large_intersection_keeps_exactly_the_shared_literals() {
        // 2,000 × 2,000 literals, which the pairwise definition would meet as 4,000,000 pairs.
        let granted: Vec<Grant> = (0..2000)
            .map(|index| grant(&format!("resource{index}:read")))
            .collect();
        let ceiling: Vec<Grant> = (1000..3000)
            .map(|index| grant(&format!("resource{index}:read")))
            .collect();
        let effective = intersect(&granted, &ceiling);
        assert_eq!(effective.len(), 1000);
        assert!(effective.iter().all(|grant| ceiling.contains(grant)));
    }

    fn grant(raw: &str) -> Grant {
        Grant::parse(raw).expect("valid grant")
    }

    fn permission(raw: &str) -> Permission {
        Permission::parse(raw).expect("valid permission")
    }

    #[test]
    fn a_literal_grant_matches_only_its_permission() {
        assert!(grant("orders:read").matches(&permission("orders:read")));
        assert!(!grant("orders:read").matches(&permission("orders:write")));
    }

    #[test]
    fn a_wildcard_segment_matches_any_value_in_that_segment() {
        assert!(grant("orders:*").matches(&permission("orders:write")));
        assert!(grant("*:read").matches(&permission("products:read")));
        assert!(!grant("orders:*").matches(&permission("products:read")));
        assert!(grant("*").matches(&permission("fn:OrderList_Load_Query")));
    }

    #[test]
    fn function_permissions_parse() {
        assert_eq!(
            permission("fn:OrderList_Load_Query").to_string(),
            "fn:OrderList_Load_Query"
        );
    }

    #[test]
    fn malformed_permissions_are_rejected_with_a_reason() {
        assert_eq!(
            Permission::parse("orders"),
            Err(InvalidPermission::WrongShape)
        );
        assert_eq!(
            Permission::parse("a:b:c"),
            Err(InvalidPermission::WrongShape)
        );
        assert_eq!(
            Permission::parse("orders:"),
            Err(InvalidPermission::WrongShape)
        );
        assert_eq!(
            Permission::parse("orders:*"),
            Err(InvalidPermission::MisplacedWildcard)
        );
        assert_eq!(
            Grant::parse("ord*:read"),
            Err(InvalidPermission::MisplacedWildcard)
        );
        assert_eq!(
            Grant::parse("orders:re ad"),
            Err(InvalidPermission::BadCharacter)
        );
        assert_eq!(
            Grant::parse(&"a".repeat(200)),
            Err(InvalidPermission::TooLong)
        );
    }

    #[test]
    fn a_broad_grant_covers_a_narrow_one_but_not_the_reverse() {
        assert!(grant("orders:*").covers(&grant("orders:read")));
        assert!(!grant("orders:read").covers(&grant("orders:*")));
        assert!(grant("*").covers(&grant("*:read")));
        assert!(!grant("*:read").covers(&grant("*")));
    }

    #[test]
    fn grants_beyond_the_owner_are_reported() {
        let owner = vec![grant("orders:*")];
        let wanted = vec![grant("orders:read"), grant("products:read")];
        let beyond = beyond_ceiling(&wanted, &owner);
        assert_eq!(beyond, vec![&grant("products:read")]);
    }

    #[test]
    fn the_effective_set_is_the_overlap_of_grants_and_ceiling() {
        let granted = vec![grant("*")];
        let ceiling = vec![grant("orders:read"), grant("products:*")];
        let effective: Vec<String> = intersect(&granted, &ceiling)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(effective, vec!["orders:read", "products:*"]);

        let granted = vec![grant("orders:*"), grant("orders:read")];
        let ceiling = vec![grant("*:read")];
        let effective: Vec<String> = intersect(&granted, &ceiling)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(effective, vec!["orders:read"]);
    }

    #[test]
    fn a_grant_outside_the_ceiling_is_not_effective() {
        let effective = intersect(&[grant("billing:read")], &[grant("orders:*")]);
        assert!(effective.is_empty());
    }

    #[test]
    fn a_grant_list_reports_the_index_of_the_bad_entry() {
        let raw = vec!["orders:read".to_owned(), "bad".to_owned()];
        assert_eq!(parse_grants(&raw), Err((1, InvalidPermission::WrongShape)));
    }

    #[test]
    fn a_bare_star_prints_as_a_star() {
        assert_eq!(grant("*").to_string(), "*");
        assert_eq!(grant("*:*").to_string(), "*");
    }
}
