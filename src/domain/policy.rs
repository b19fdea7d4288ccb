//! Tenant token policies (issue 16, point 5): the rules every token of a tenant must keep, as
//! pure functions over a policy, a token and the clock.
//!
//! Which rule a write breaks is decided here ([`TenantPolicy::expiry`],
//! [`TenantPolicy::beyond_allowed`], [`TenantPolicy::requires_allowlist`]); which rules an existing
//! token breaks is [`TenantPolicy::violations`]; and what a cached credential needs to be denied
//! at Check when the policy is enforced is a [`PolicyHold`], computed once at fill time.
//!
//! Every Tessera token has an expiry (creation defaults to one year, an import without one gets
//! the default lifetime), so `require_expiry` cannot be broken by a stored token: it means that a
//! new token must be *given* an expiry explicitly rather than receive the default.

use chrono::{DateTime, Duration, Utc};

use super::fields::Tenant;
use super::leak::LeakAction;
use super::model::Token;
use super::permission::{self, Grant};

/// At most this many patterns in `allowed_permissions`.
pub const MAX_ALLOWED_PERMISSIONS: usize = 256;

/// A tenant's token policy. A tenant that never had one set has [`TenantPolicy::none`]: every
/// rule off.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantPolicy {
    pub tenant: Tenant,
    /// No token may expire more than this far from now (creation, import, update, rotation).
    pub max_lifetime: Option<Duration>,
    /// The lifetime of a token created without an expiry (else the server's, one year, capped by
    /// `max_lifetime`).
    pub default_lifetime: Option<Duration>,
    /// A new token must be given an expiry explicitly.
    pub require_expiry: bool,
    /// At most this many live tokens per owner (the server's own limit applies too: the smaller
    /// wins).
    pub max_tokens_per_owner: Option<u32>,
    /// Grant patterns a token's own permissions must each fall within; empty: any.
    pub allowed_permissions: Vec<Grant>,
    /// Every token must name at least one IP or CIDR it may be used from.
    pub require_ip_allowlist: bool,
    /// Check denies tokens that break the policy (`POLICY_VIOLATION`) instead of only listing
    /// them.
    pub enforce_on_existing: bool,
    /// What a leak report does to a live token of the tenant (default: revoke).
    pub leak_action: LeakAction,
    /// None when the policy was never set.
    pub updated_at: Option<DateTime<Utc>>,
}

/// A rule of a policy, by the name the API uses for its field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyRule {
    MaxLifetime,
    RequireExpiry,
    MaxTokensPerOwner,
    AllowedPermissions,
    RequireIpAllowlist,
}

impl PolicyRule {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MaxLifetime => "max_lifetime",
            Self::RequireExpiry => "require_expiry",
            Self::MaxTokensPerOwner => "max_tokens_per_owner",
            Self::AllowedPermissions => "allowed_permissions",
            Self::RequireIpAllowlist => "require_ip_allowlist",
        }
    }
}

impl std::fmt::Display for PolicyRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A write the policy refuses: the rule and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyBreach {
    pub rule: PolicyRule,
    pub description: String,
}

/// How a write gives a token's expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestedExpiry {
    /// None given: the default lifetime applies.
    Default,
    /// This instant (already known to be in the future and within the server's bounds).
    At(DateTime<Utc>),
}

impl TenantPolicy {
    /// No rule set: what a tenant without a stored policy has.
    pub fn none(tenant: Tenant) -> Self {
        Self {
            tenant,
            max_lifetime: None,
            default_lifetime: None,
            require_expiry: false,
            max_tokens_per_owner: None,
            allowed_permissions: Vec::new(),
            require_ip_allowlist: false,
            enforce_on_existing: false,
            leak_action: LeakAction::Revoke,
            updated_at: None,
        }
    }

    /// Whether any rule that a stored token can break is set.
    fn judges_tokens(&self) -> bool {
        self.max_lifetime.is_some()
            || !self.allowed_permissions.is_empty()
            || self.require_ip_allowlist
    }

    /// The expiry of a token written at `now`: a given one if the policy allows it, else the
    /// default lifetime (the policy's, else `server_default` capped by `max_lifetime`).
    pub fn expiry(
        &self,
        requested: RequestedExpiry,
        now: DateTime<Utc>,
        server_default: Duration,
    ) -> Result<DateTime<Utc>, PolicyBreach> {
        match requested {
            RequestedExpiry::Default if self.require_expiry => Err(PolicyBreach {
                rule: PolicyRule::RequireExpiry,
                description: "this tenant's policy requires every new token to be given an \
                              expiry (expires_at or ttl)"
                    .to_owned(),
            }),
            RequestedExpiry::Default => {
                let lifetime = self.default_lifetime.unwrap_or(match self.max_lifetime {
                    Some(max) => server_default.min(max),
                    None => server_default,
                });
                Ok(now + lifetime)
            }
            RequestedExpiry::At(at) => match self.max_lifetime {
                Some(max) if at - now > max => Err(PolicyBreach {
                    rule: PolicyRule::MaxLifetime,
                    description: format!(
                        "this tenant's policy allows tokens to expire at most {} from now",
                        describe(max)
                    ),
                }),
                _ => Ok(at),
            },
        }
    }

    /// A rotation's new expiry window, `window` long from `now`, shortened to `max_lifetime`.
    pub fn rotation_window(&self, window: Duration) -> Duration {
        match self.max_lifetime {
            Some(max) => window.min(max),
            None => window,
        }
    }

    /// The grants of `wanted` outside `allowed_permissions` (none when that is empty).
    pub fn beyond_allowed<'a>(&self, wanted: &'a [Grant]) -> Vec<&'a Grant> {
        if self.allowed_permissions.is_empty() {
            return Vec::new();
        }
        permission::beyond_ceiling(wanted, &self.allowed_permissions)
    }

    /// `allowed_permissions` as a refusal, when `wanted` goes beyond it.
    pub fn check_permissions(&self, wanted: &[Grant]) -> Result<(), PolicyBreach> {
        let beyond = self.beyond_allowed(wanted);
        if beyond.is_empty() {
            return Ok(());
        }
        let beyond: Vec<String> = beyond.iter().map(ToString::to_string).collect();
        Err(PolicyBreach {
            rule: PolicyRule::AllowedPermissions,
            description: format!(
                "this tenant's policy does not allow the permissions {}",
                beyond.join(", ")
            ),
        })
    }

    /// `require_ip_allowlist` as a refusal, when a token would have no allowlist.
    pub fn check_allowlist(&self, allowlist_is_empty: bool) -> Result<(), PolicyBreach> {
        if self.require_ip_allowlist && allowlist_is_empty {
            return Err(PolicyBreach {
                rule: PolicyRule::RequireIpAllowlist,
                description: "this tenant's policy requires every token to name the IPs or \
                              CIDRs it may be used from"
                    .to_owned(),
            });
        }
        Ok(())
    }

    /// The live-token limit per owner: the server's, or the policy's when smaller.
    pub fn max_live_per_owner(&self, server_limit: u32) -> u32 {
        self.max_tokens_per_owner
            .map_or(server_limit, |limit| limit.min(server_limit))
    }

    /// The rules `token` breaks at `now`, in rule order. `require_expiry` never (every token has
    /// an expiry) and `max_tokens_per_owner` not per token (it limits new tokens only).
    pub fn violations(&self, token: &Token, now: DateTime<Utc>) -> Vec<PolicyRule> {
        let mut broken = Vec::new();
        if self.lifetime_broken_until(token.expires_at) > Some(now) {
            broken.push(PolicyRule::MaxLifetime);
        }
        self.static_violations(token, &mut broken);
        broken
    }

    /// The rules that do not depend on the clock.
    fn static_violations(&self, token: &Token, broken: &mut Vec<PolicyRule>) {
        if !self.beyond_allowed(&token.permissions).is_empty() {
            broken.push(PolicyRule::AllowedPermissions);
        }
        if self.require_ip_allowlist && token.allowed_ips.is_empty() {
            broken.push(PolicyRule::RequireIpAllowlist);
        }
    }

    /// Until when a token expiring at `expires_at` expires too far ahead: it breaks
    /// `max_lifetime` while `now < expires_at - max_lifetime`.
    fn lifetime_broken_until(&self, expires_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.max_lifetime
            .and_then(|max| expires_at.checked_sub_signed(max))
    }

    /// What Check needs to deny `token` under this policy: None when the policy is not enforced
    /// on existing tokens or the token can never break it.
    pub fn hold(&self, token: &Token) -> Option<Box<PolicyHold>> {
        if !self.enforce_on_existing || !self.judges_tokens() {
            return None;
        }
        let mut broken = Vec::new();
        self.static_violations(token, &mut broken);
        let lifetime_until = self.lifetime_broken_until(token.expires_at);
        if broken.is_empty() && lifetime_until.is_none() {
            return None;
        }
        Some(Box::new(PolicyHold {
            broken,
            lifetime_until,
        }))
    }
}

/// What a cached credential keeps of an enforced policy that its token breaks or may break:
/// the rules it breaks for good, and until when its expiry lies too far ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyHold {
    broken: Vec<PolicyRule>,
    lifetime_until: Option<DateTime<Utc>>,
}

impl PolicyHold {
    /// The rules broken at `now`, in rule order; empty: the token keeps the policy.
    pub fn broken_at(&self, now: DateTime<Utc>) -> Vec<PolicyRule> {
        let mut broken = Vec::with_capacity(self.broken.len() + 1);
        if self.lifetime_until.is_some_and(|until| now < until) {
            broken.push(PolicyRule::MaxLifetime);
        }
        broken.extend_from_slice(&self.broken);
        broken
    }

    pub fn denies(&self, now: DateTime<Utc>) -> bool {
        !self.broken.is_empty() || self.lifetime_until.is_some_and(|until| now < until)
    }

    /// Bytes this holds beyond the credential's pointer to it, for the cache's weigher.
    pub fn weight(&self) -> usize {
        std::mem::size_of::<Self>() + self.broken.capacity() * std::mem::size_of::<PolicyRule>()
    }
}

/// A duration as an operator would write it: days when whole, else seconds.
pub fn describe(duration: Duration) -> String {
    let seconds = duration.num_seconds();
    if seconds % 86_400 == 0 {
        format!("{} days", seconds / 86_400)
    } else {
        format!("{seconds} seconds")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::network::IpAllowlist;

    fn policy() -> TenantPolicy {
        TenantPolicy::none(Tenant::parse("acme").expect("tenant"))
    }

    fn token(expires_at: DateTime<Utc>, permissions: &[&str], ips: &[&str]) -> Token {
        Token {
            expires_at,
            permissions: permissions
                .iter()
                .map(|grant| Grant::parse(grant).expect("grant"))
                .collect(),
            allowed_ips: IpAllowlist::parse(
                &ips.iter().map(|ip| (*ip).to_owned()).collect::<Vec<_>>(),
            )
            .expect("ips"),
            ..crate::domain::fixtures::token()
        }
    }

    #[test]
    fn without_rules_the_default_lifetime_is_the_servers_and_any_expiry_is_kept() {
        let now = Utc::now();
        let none = policy();
        assert_eq!(
            none.expiry(RequestedExpiry::Default, now, Duration::days(365)),
            Ok(now + Duration::days(365))
        );
        let at = now + Duration::days(1000);
        assert_eq!(
            none.expiry(RequestedExpiry::At(at), now, Duration::days(365)),
            Ok(at)
        );
        assert!(none.hold(&token(at, &["*:*"], &[])).is_none());
        assert!(none.violations(&token(at, &["*:*"], &[]), now).is_empty());
    }

    #[test]
    fn the_default_lifetime_is_capped_by_max_lifetime_and_a_longer_expiry_is_refused_naming_it() {
        let now = Utc::now();
        let capped = TenantPolicy {
            max_lifetime: Some(Duration::days(30)),
            ..policy()
        };
        assert_eq!(
            capped.expiry(RequestedExpiry::Default, now, Duration::days(365)),
            Ok(now + Duration::days(30))
        );
        let breach = capped
            .expiry(
                RequestedExpiry::At(now + Duration::days(31)),
                now,
                Duration::days(365),
            )
            .expect_err("too long");
        assert_eq!(breach.rule, PolicyRule::MaxLifetime);
        assert!(breach.description.contains("30 days"), "{breach:?}");
    }

    #[test]
    fn require_expiry_refuses_a_token_given_no_expiry() {
        let strict = TenantPolicy {
            require_expiry: true,
            ..policy()
        };
        let breach = strict
            .expiry(RequestedExpiry::Default, Utc::now(), Duration::days(365))
            .expect_err("no expiry");
        assert_eq!(breach.rule, PolicyRule::RequireExpiry);
    }

    #[test]
    fn a_token_breaks_each_rule_it_does_not_keep_and_an_enforced_hold_denies_it() {
        let now = Utc::now();
        let strict = TenantPolicy {
            max_lifetime: Some(Duration::days(30)),
            allowed_permissions: vec![Grant::parse("orders:*").expect("grant")],
            require_ip_allowlist: true,
            enforce_on_existing: true,
            ..policy()
        };
        let bad = token(now + Duration::days(90), &["users:read"], &[]);
        assert_eq!(
            strict.violations(&bad, now),
            vec![
                PolicyRule::MaxLifetime,
                PolicyRule::AllowedPermissions,
                PolicyRule::RequireIpAllowlist
            ]
        );
        let hold = strict.hold(&bad).expect("held");
        assert_eq!(hold.broken_at(now), strict.violations(&bad, now));
        assert!(hold.denies(now));

        let good = token(now + Duration::days(10), &["orders:read"], &["10.0.0.0/8"]);
        assert!(strict.violations(&good, now).is_empty());
        let hold = strict
            .hold(&good)
            .expect("may break max_lifetime later? no: kept");
        assert!(!hold.denies(now));
    }

    #[test]
    fn a_token_expiring_too_far_ahead_keeps_max_lifetime_once_its_expiry_is_near_enough() {
        let now = Utc::now();
        let capped = TenantPolicy {
            max_lifetime: Some(Duration::days(30)),
            enforce_on_existing: true,
            ..policy()
        };
        let long = token(now + Duration::days(40), &[], &[]);
        let hold = capped.hold(&long).expect("held");
        assert!(hold.denies(now));
        assert!(!hold.denies(now + Duration::days(10) + Duration::seconds(1)));
        assert!(
            capped
                .violations(&long, now + Duration::days(11))
                .is_empty()
        );
    }

    #[test]
    fn a_policy_not_enforced_on_existing_tokens_holds_nothing_at_check() {
        let listed_only = TenantPolicy {
            require_ip_allowlist: true,
            ..policy()
        };
        let bad = token(Utc::now() + Duration::days(1), &[], &[]);
        assert_eq!(
            listed_only.violations(&bad, Utc::now()),
            vec![PolicyRule::RequireIpAllowlist]
        );
        assert!(listed_only.hold(&bad).is_none());
    }

    #[test]
    fn the_smaller_of_the_servers_and_the_policys_owner_limit_applies() {
        let limited = TenantPolicy {
            max_tokens_per_owner: Some(3),
            ..policy()
        };
        assert_eq!(limited.max_live_per_owner(100), 3);
        assert_eq!(limited.max_live_per_owner(2), 2);
        assert_eq!(policy().max_live_per_owner(100), 100);
    }
}
