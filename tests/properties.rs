//! Properties of the pure rules every Check relies on, over generated inputs: the owner's
//! ceiling, wildcard matching, the token checksum and IP allowlists. The fuzz targets in `fuzz/`
//! feed the same code hostile bytes; these run on every `cargo test`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use chrono::{Duration, Utc};
use ipnet::IpNet;
use proptest::prelude::*;
use tessera::domain::decision::{CheckInput, Credential, DenyReason, evaluate};
use tessera::domain::fields::{Description, PrincipalId, RoleName, Tenant, TokenId, TokenName};
use tessera::domain::model::{CredentialRecord, Principal, Role, SecretMatch, Token};
use tessera::domain::network::IpAllowlist;
use tessera::domain::permission::{Grant, Permission, any_matches};
use tessera::domain::signature::{DEFAULT_WINDOW, ReplayGuard, SignatureId};
use tessera::domain::token::{self, MalformedToken, TokenPrefix};

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Few names per segment, so generated grants and permissions overlap often.
const RESOURCES: &[&str] = &["orders", "products", "billing", "fn"];
const ACTIONS: &[&str] = &["read", "write", "delete", "OrderList_Load"];

fn segment(names: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just("*".to_owned()),
        3 => proptest::sample::select(names).prop_map(str::to_owned),
    ]
}

/// A grant's text as an admin writes it: `resource:action` with `*` segments, or `*`.
fn grant_text() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just("*".to_owned()),
        8 => (segment(RESOURCES), segment(ACTIONS)).prop_map(|(r, a)| format!("{r}:{a}")),
    ]
}

fn grants() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(grant_text(), 0..5)
}

fn parse_grants(texts: &[String]) -> Vec<Grant> {
    texts
        .iter()
        .map(|text| Grant::parse(text).expect("generated grants are valid"))
        .collect()
}

/// Every concrete permission the generated grants can speak about.
fn every_permission() -> Vec<Permission> {
    RESOURCES
        .iter()
        .flat_map(|r| ACTIONS.iter().map(move |a| format!("{r}:{a}")))
        .map(|text| Permission::parse(&text).expect("valid permission"))
        .collect()
}

/// No token here requires a signature, so Check never asks the replay guard.
struct NoSignatures;

impl ReplayGuard for NoSignatures {
    fn window(&self) -> std::time::Duration {
        DEFAULT_WINDOW
    }

    fn first_use(&self, _: SignatureId, _: std::time::Duration) -> bool {
        unreachable!("no generated token requires a signature")
    }
}

/// A stored token with `own` grants and `roles`, owned by a principal holding `ceiling`, as the
/// store hands it to Check.
fn record(
    own: &[String],
    roles: &[Vec<String>],
    ceiling: &[String],
    owner: OwnerState,
) -> CredentialRecord {
    let now = Utc::now();
    let tenant = Tenant::parse("acme").expect("tenant");
    let owner_id = PrincipalId::parse("alice").expect("principal");
    let roles: Vec<Role> = roles
        .iter()
        .enumerate()
        .map(|(index, permissions)| Role {
            tenant: tenant.clone(),
            name: RoleName::parse(&format!("role{index}")).expect("role"),
            permissions: parse_grants(permissions),
            created_at: now,
            updated_at: now,
        })
        .collect();
    let token = Token {
        id: TokenId::generate(),
        tenant: tenant.clone(),
        owner_id: owner_id.clone(),
        name: TokenName::parse("generated").expect("name"),
        description: Description::parse("").expect("description"),
        permissions: parse_grants(own),
        roles: roles.iter().map(|role| role.name.clone()).collect(),
        allowed_ips: IpAllowlist::default(),
        rate_limit_per_minute: 0,
        require_signature: false,
        secret_hint: String::new(),
        created_at: now,
        updated_at: now,
        expires_at: now + Duration::days(1),
        rotated_at: None,
        revoked_at: None,
        last_used_at: None,
        version: 1,
    };
    let principal = Principal {
        tenant,
        id: owner_id,
        permissions: parse_grants(ceiling),
        disabled: owner == OwnerState::Disabled,
        rate_limit_per_minute: None,
        created_at: now,
        updated_at: now,
    };
    CredentialRecord {
        token,
        secret_match: SecretMatch::Current,
        owner: (owner != OwnerState::Gone).then_some(principal),
        roles,
        signing_key: None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnerState {
    Enabled,
    Disabled,
    Gone,
}

fn owner_state() -> impl Strategy<Value = OwnerState> {
    prop_oneof![
        8 => Just(OwnerState::Enabled),
        1 => Just(OwnerState::Disabled),
        1 => Just(OwnerState::Gone),
    ]
}

fn check_input(permission: &Permission) -> CheckInput {
    CheckInput {
        tenant: Tenant::parse("acme").expect("tenant"),
        permission: Some(permission.clone()),
        client_ip: None,
        signature: None,
        now: Utc::now(),
        endpoint: String::new(),
        user_agent: String::new(),
    }
}

/// The README's rule, segment by segment: `*` alone is `*:*`; a `*` segment admits any value
/// of that segment, a literal only itself. Whether everything `narrow` admits is admitted by
/// `broad`: as a permission admits only itself, also whether `broad` matches a permission.
fn reference_covers(broad: &str, narrow: &str) -> bool {
    let broad = if broad == "*" { "*:*" } else { broad };
    let narrow = if narrow == "*" { "*:*" } else { narrow };
    let (Some((br, ba)), Some((nr, na))) = (broad.split_once(':'), narrow.split_once(':')) else {
        return false;
    };
    (br == "*" || br == nr) && (ba == "*" || ba == na)
}

fn base62_text(len: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(BASE62), len)
        .prop_map(|bytes| String::from_utf8(bytes).expect("ascii"))
}

fn token_prefix() -> impl Strategy<Value = TokenPrefix> {
    "[a-z][a-z0-9]{0,15}".prop_map(|text| TokenPrefix::parse(&text).expect("valid prefix"))
}

/// A network as an admin writes it (address with host bits, `/len`), and the same as ipnet
/// understands it.
fn network() -> impl Strategy<Value = (String, IpNet)> {
    let v4 = (any::<u32>(), 0u8..=32).prop_map(|(bits, len)| {
        let net = IpNet::new(IpAddr::V4(Ipv4Addr::from(bits)), len).expect("len <= 32");
        (format!("{}/{len}", Ipv4Addr::from(bits)), net.trunc())
    });
    let v6 = (any::<u128>(), 0u8..=128).prop_map(|(bits, len)| {
        let net = IpNet::new(IpAddr::V6(Ipv6Addr::from(bits)), len).expect("len <= 128");
        (format!("{}/{len}", Ipv6Addr::from(bits)), net.trunc())
    });
    // An IPv4 network written in IPv4-mapped IPv6 form names the same IPv4 clients.
    let mapped = (any::<u32>(), 0u8..=32).prop_map(|(bits, len)| {
        let v4 = Ipv4Addr::from(bits);
        let net = IpNet::new(IpAddr::V4(v4), len).expect("len <= 32");
        (format!("{}/{}", v4.to_ipv6_mapped(), len + 96), net.trunc())
    });
    let host = any::<IpAddr>().prop_map(|ip| (ip.to_string(), IpNet::from(ip.to_canonical())));
    prop_oneof![3 => v4, 3 => v6, 1 => mapped, 1 => host]
}

/// Client addresses: random ones, and ones inside or just outside the given networks.
fn clients(networks: Vec<(String, IpNet)>) -> impl Strategy<Value = Vec<IpAddr>> {
    let near = proptest::sample::select(if networks.is_empty() {
        vec![IpNet::from(IpAddr::V4(Ipv4Addr::LOCALHOST))]
    } else {
        networks.iter().map(|(_, net)| *net).collect()
    });
    let inside = (near, any::<u128>(), any::<bool>()).prop_map(|(net, noise, outside)| {
        // Within the network's host bits, or the first address after the network.
        let host = |bits: u128, width: u32| {
            let host_bits = u128::MAX
                .checked_shr(128 - width + u32::from(net.prefix_len()))
                .unwrap_or(0);
            let first = bits & !host_bits;
            if outside {
                (first | host_bits).wrapping_add(1) & (u128::MAX >> (128 - width))
            } else {
                first | (noise & host_bits)
            }
        };
        match net {
            IpNet::V4(v4) => {
                let bits = host(u128::from(u32::from(v4.network())), 32);
                IpAddr::V4(Ipv4Addr::from(u32::try_from(bits).unwrap_or(u32::MAX)))
            }
            IpNet::V6(v6) => IpAddr::V6(Ipv6Addr::from(host(u128::from(v6.network()), 128))),
        }
    });
    proptest::collection::vec(prop_oneof![any::<IpAddr>(), inside], 1..8)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_token_never_holds_more_than_its_owner(
        own in grants(),
        roles in proptest::collection::vec(grants(), 0..3),
        ceiling in grants(),
        owner in owner_state(),
    ) {
        let record = record(&own, &roles, &ceiling, owner);
        let credential = Credential::from_record(&record);
        let granted: Vec<Grant> = record
            .token
            .permissions
            .iter()
            .chain(record.roles.iter().flat_map(|role| &role.permissions))
            .cloned()
            .collect();
        let ceiling = parse_grants(&ceiling);
        for effective in &credential.effective {
            prop_assert!(
                ceiling.iter().any(|limit| limit.covers(effective)),
                "{effective} is beyond the owner's {ceiling:?}"
            );
        }
        for permission in every_permission() {
            let decided = evaluate(&credential, &check_input(&permission), &NoSignatures);
            let owner_holds = owner == OwnerState::Enabled && any_matches(&ceiling, &permission);
            let token_holds = any_matches(&granted, &permission);
            if decided.is_ok() {
                prop_assert!(owner_holds, "{permission} allowed beyond the owner");
                prop_assert!(token_holds, "{permission} allowed beyond the token's grants");
            }
            // And not denied when both hold: a credential that denies everything would pass the
            // line above.
            let expected = match owner {
                OwnerState::Enabled if owner_holds && token_holds => Ok(()),
                OwnerState::Enabled => Err(DenyReason::PermissionDenied),
                _ => Err(DenyReason::OwnerDisabled),
            };
            prop_assert_eq!(decided, expected, "{}", permission);
        }
    }

    #[test]
    fn wildcard_matching_agrees_with_a_segment_by_segment_reference(
        grant in grant_text(),
        other in grant_text(),
        resource in proptest::sample::select(RESOURCES),
        action in proptest::sample::select(ACTIONS),
    ) {
        let text = format!("{resource}:{action}");
        let permission = Permission::parse(&text).expect("valid permission");
        let parsed = Grant::parse(&grant).expect("valid grant");
        let parsed_other = Grant::parse(&other).expect("valid grant");
        prop_assert_eq!(parsed.matches(&permission), reference_covers(&grant, &text));
        prop_assert_eq!(parsed.covers(&parsed_other), reference_covers(&grant, &other));
        prop_assert_eq!(Grant::parse(&parsed.to_string()), Ok(parsed));
    }

    #[test]
    fn a_literal_grant_matches_exactly_the_permission_it_spells(
        resource in "[A-Za-z0-9_.-]{1,20}",
        action in "[A-Za-z0-9_.-]{1,20}",
        other in "[A-Za-z0-9_.-]{1,20}",
    ) {
        let text = format!("{resource}:{action}");
        let grant = Grant::parse(&text).expect("valid grant");
        prop_assert!(grant.matches(&Permission::parse(&text).expect("valid permission")));
        let elsewhere = Permission::parse(&format!("{resource}:{other}")).expect("valid");
        prop_assert_eq!(grant.matches(&elsewhere), other == action);
        let any_action = Grant::parse(&format!("{resource}:*")).expect("valid grant");
        prop_assert!(any_action.matches(&elsewhere));
    }

    #[test]
    fn an_allowlist_agrees_with_ipnet_contains_for_every_client(
        (networks, clients) in proptest::collection::vec(network(), 0..4)
            .prop_flat_map(|networks| (Just(networks.clone()), clients(networks))),
    ) {
        let texts: Vec<String> = networks.iter().map(|(text, _)| text.clone()).collect();
        let list = IpAllowlist::parse(&texts).expect("generated networks are valid");
        for client in clients {
            let canonical = client.to_canonical();
            let expected = networks.is_empty()
                || networks.iter().any(|(_, net)| net.contains(&canonical));
            prop_assert_eq!(list.allows(Some(client)), expected, "{} against {:?}", client, texts);
            if let IpAddr::V4(v4) = client {
                let mapped = IpAddr::V6(v4.to_ipv6_mapped());
                prop_assert_eq!(list.allows(Some(mapped)), expected, "{} mapped", client);
            }
        }
        prop_assert_eq!(IpAllowlist::parse(&list.to_strings()), Ok(list));
    }
}

proptest! {
    // Each case parses 36 × 61 changed tokens.
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn the_checksum_rejects_every_single_character_change_of_a_valid_token(
        prefix in token_prefix(),
        random in base62_text(30),
    ) {
        let valid = token::format_token(&prefix, &random);
        prop_assert_eq!(token::parse(&valid, &prefix), Ok(valid.as_str()));
        let body_start = prefix.as_str().len() + 1;
        let mut bytes = valid.clone().into_bytes();
        for position in body_start..bytes.len() {
            let original = bytes[position];
            for &replacement in BASE62.iter().filter(|&&c| c != original) {
                bytes[position] = replacement;
                let changed = std::str::from_utf8(&bytes).expect("ascii");
                prop_assert_eq!(
                    token::parse(changed, &prefix),
                    Err(MalformedToken::BadChecksum),
                    "position {}", position
                );
            }
            bytes[position] = original;
        }
    }

    #[test]
    fn a_generated_token_round_trips_through_parse_and_its_prefix_is_checked(
        prefix in token_prefix(),
        other in token_prefix(),
    ) {
        let generated = token::generate(&prefix);
        let secret = secrecy::ExposeSecret::expose_secret(&generated.secret);
        prop_assert_eq!(token::parse(secret, &prefix), Ok(secret));
        prop_assert_eq!(generated.hash, token::SecretHash::of(secret));
        if other != prefix {
            prop_assert_eq!(token::parse(secret, &other), Err(MalformedToken::WrongPrefix));
        }
    }
}
