//! Properties of the pure rules every Check relies on, over generated inputs: the owner's
//! ceiling, wildcard matching, the token checksum, IP allowlists and the gateway's request-target
//! parser (against a reference resolver written the obvious way), and the credit arithmetic
//! (spending, lazy refills, additions). The fuzz targets in `fuzz/`
//! feed the same code hostile bytes; these run on every `cargo test`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use chrono::{Duration, Utc};
use ipnet::IpNet;
use proptest::prelude::*;
use tessera::domain::credits::{CreditAmount, CreditGrant, Credits, Refill};
use tessera::domain::decision::{CheckInput, Credential, DenyReason, evaluate};
use tessera::domain::fields::{Description, PrincipalId, RoleName, Tenant, TokenId, TokenName};
use tessera::domain::http::RequestTarget;
use tessera::domain::model::{CredentialRecord, Principal, Role, SecretMatch, Token};
use tessera::domain::network::IpAllowlist;
use tessera::domain::permission::{Grant, Permission, PermissionQuery, any_matches};
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
        imported: false,
        metadata: Default::default(),
        suspension: None,
        credits: None,
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
        policy: None,
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
        permissions: PermissionQuery::one(permission.clone()),
        client_ip: None,
        signature: None,
        now: Utc::now(),
        endpoint: String::new(),
        user_agent: String::new(),
        cost: 1,
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
        for effective in credential.effective.iter() {
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
    fn a_permission_query_is_granted_exactly_when_nothing_is_missing_and_more_grants_never_take_it_away(
        held in grants(),
        extra in grants(),
        required in proptest::collection::vec(0..16usize, 0..4),
        any in proptest::collection::vec(0..16usize, 0..4),
    ) {
        let concrete = every_permission();
        let pick = |indexes: &[usize]| -> Vec<Permission> {
            indexes.iter().map(|index| concrete[index % concrete.len()].clone()).collect()
        };
        let query = PermissionQuery::new(None, pick(&required), pick(&any)).expect("within bounds");
        let grants = parse_grants(&held);
        // The definition, one permission at a time.
        let every_required = pick(&required).iter().all(|permission| any_matches(&grants, permission));
        let one_of_any = any.is_empty() || pick(&any).iter().any(|permission| any_matches(&grants, permission));
        let granted = query.is_granted_by(&grants);
        prop_assert_eq!(granted, every_required && one_of_any);
        let missing = query.missing(&grants);
        prop_assert_eq!(granted, missing.required().next().is_none() && missing.any().is_empty());
        let mut more = grants.clone();
        more.extend(parse_grants(&extra));
        prop_assert!(!granted || query.is_granted_by(&more), "a wider token lost a query");
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

/// The request-target rules of src/domain/http.rs written the obvious way, independently of it:
/// decode the whole path byte by byte, re-encode what stays encoded, then run RFC 3986 §5.2.4's
/// string algorithm twice, on the path as it is and with its slashes merged first, and accept
/// only when both agree. None: refused.
mod reference {
    const LOOKALIKES: [char; 9] = [
        '\u{2024}', '\u{2025}', '\u{FE52}', '\u{FF0E}', '\u{2215}', '\u{FF0F}', '\u{2216}',
        '\u{FE68}', '\u{FF3C}',
    ];

    pub fn resolve(target: &str) -> Option<(String, Option<String>)> {
        if !target.starts_with('/') || target.bytes().any(|b| b <= b' ' || b == 0x7F || b == b'#') {
            return None;
        }
        let (path, query) = match target.find('?') {
            Some(at) => (&target[..at], Some(target[at + 1..].to_owned())),
            None => (target, None),
        };
        let canonical = canonical(path)?;
        let as_is = remove_dot_segments(&canonical)?;
        let merged_first = remove_dot_segments(&merge_slashes(&canonical))?;
        (merge_slashes(&as_is) == merged_first).then_some((merged_first, query))
    }

    /// Each byte in its one spelling; None for what may not be decoded or written.
    fn canonical(path: &str) -> Option<String> {
        let bytes = path.as_bytes();
        let mut decoded = Vec::new();
        let mut out = String::new();
        // Per segment: whether a dot was written encoded, and the decoded text.
        let mut segment = String::new();
        let mut encoded_dot = false;
        let mut i = 0;
        let finish = |segment: &mut String, encoded_dot: &mut bool| {
            let dot = segment == "." || segment == "..";
            let bad = dot && *encoded_dot;
            segment.clear();
            *encoded_dot = false;
            !bad
        };
        while i < bytes.len() {
            let (byte, was_encoded) = if bytes[i] == b'%' {
                let hex = path.get(i + 1..i + 3)?;
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                i += 3;
                (u8::from_str_radix(hex, 16).ok()?, true)
            } else {
                i += 1;
                (bytes[i - 1], false)
            };
            decoded.push(byte);
            if byte == b'/' && !was_encoded {
                if !finish(&mut segment, &mut encoded_dot) {
                    return None;
                }
                out.push('/');
                continue;
            }
            if byte == b'/' || byte == b'\\' || byte < 0x20 || byte == 0x7F {
                return None;
            }
            if byte == b';' && !was_encoded {
                return None;
            }
            if byte == b'.' && was_encoded {
                encoded_dot = true;
            }
            let keep_encoded = matches!(byte, b'%' | b'?' | b'#' | b' ' | b';') || byte >= 0x80;
            if keep_encoded {
                out.push_str(&format!("%{byte:02X}"));
                segment.push('x');
            } else {
                out.push(char::from(byte));
                segment.push(char::from(byte));
            }
        }
        if !finish(&mut segment, &mut encoded_dot) {
            return None;
        }
        let text = String::from_utf8(decoded).ok()?;
        if text.chars().any(|c| LOOKALIKES.contains(&c)) {
            return None;
        }
        Some(out)
    }

    fn merge_slashes(path: &str) -> String {
        let mut out = String::new();
        for c in path.chars() {
            if !(c == '/' && out.ends_with('/')) {
                out.push(c);
            }
        }
        out
    }

    /// RFC 3986 §5.2.4 for an absolute path, except that a `..` with nothing left to remove is
    /// a refusal (None) instead of being dropped.
    fn remove_dot_segments(path: &str) -> Option<String> {
        let mut input = path.to_owned();
        let mut output = String::new();
        while !input.is_empty() {
            if input.starts_with("/./") {
                input.replace_range(..3, "/");
            } else if input == "/." {
                input = "/".to_owned();
            } else if input.starts_with("/../") || input == "/.." {
                let length = if input == "/.." { 3 } else { 4 };
                input.replace_range(..length, "/");
                if output.is_empty() {
                    return None;
                }
                let cut = output.rfind('/').unwrap_or(0);
                output.truncate(cut);
            } else {
                let end = input[1..].find('/').map_or(input.len(), |at| at + 1);
                output.push_str(&input[..end]);
                input.replace_range(..end, "");
            }
        }
        Some(output)
    }
}

/// Path pieces chosen for the tricks they play, so generated paths hit every rule often.
const PATH_PIECES: &[&str] = &[
    "a",
    "orders",
    "42",
    "",
    ".",
    "..",
    "...",
    "%2e",
    "%2E",
    "%2e%2e",
    ".%2e",
    "%2e.",
    "%2f",
    "%2F",
    "%5c",
    "\\",
    ";",
    "..;",
    "a;b",
    "%3b",
    "%00",
    "%0a",
    "%25",
    "%252e",
    "%6f",
    "%6F",
    "%41",
    "%c0%ae",
    "%e0%80%ae",
    "%c3%a9",
    "é",
    "%3a",
    ":",
    "@",
    "~",
    "%7E",
    "%20",
    "%ef%bc%8e",
    "%",
    "%g1",
    "%4",
    "x%",
    "{}",
    "%7B",
];

/// What segments are made of most: the pieces that decide how dot segments and slashes resolve.
const STRUCTURAL_PIECES: &[&str] = &["", ".", "..", "a", "orders"];

fn path_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => proptest::sample::select(STRUCTURAL_PIECES).prop_map(str::to_owned),
        6 => proptest::sample::select(PATH_PIECES).prop_map(str::to_owned),
        1 => "[a-z%./;\\\\]{0,4}",
    ]
}

/// A request target: `/` pieces `/` … with maybe a query, and now and then any string at all.
fn request_target() -> impl Strategy<Value = String> {
    let built = (
        proptest::collection::vec(proptest::collection::vec(path_piece(), 1..3), 0..8),
        proptest::option::of("[a-z=&%./]{0,8}"),
    )
        .prop_map(|(segments, query)| {
            let mut target = String::new();
            for pieces in segments {
                target.push('/');
                target.push_str(&pieces.concat());
            }
            if target.is_empty() {
                target.push('/');
            }
            if let Some(query) = query {
                target.push('?');
                target.push_str(&query);
            }
            target
        });
    prop_oneof![8 => built, 1 => any::<String>(), 1 => "/[ -~]{0,24}"]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn every_request_target_is_accepted_or_refused_as_the_reference_resolver_says(
        target in request_target(),
    ) {
        let parsed = RequestTarget::parse(&target);
        let expected = reference::resolve(&target);
        prop_assert_eq!(
            parsed
                .as_ref()
                .ok()
                .map(|parsed| (parsed.path().to_owned(), parsed.query().map(str::to_owned))),
            expected,
            "{:?} (parser: {:?})", target, parsed
        );
    }

    #[test]
    fn a_normalized_path_has_no_empty_or_dot_segment_and_normalizing_it_again_changes_nothing(
        target in request_target(),
    ) {
        if let Ok(parsed) = RequestTarget::parse(&target) {
            let path = parsed.path();
            prop_assert!(path.starts_with('/'), "{:?}", path);
            for bad in ["//", "/./", "/../", "?", "#", ";", "\\"] {
                prop_assert!(!path.contains(bad), "{:?} holds {:?}", path, bad);
            }
            prop_assert!(!path.ends_with("/.") && !path.ends_with("/.."), "{:?}", path);
            prop_assert!(path.bytes().all(|b| b.is_ascii_graphic()), "{:?}", path);
            let again = RequestTarget::parse(path).expect("a normalized path parses");
            prop_assert_eq!(again.path(), path);
            prop_assert_eq!(again.query(), None);
            // Re-attaching the query changes nothing either.
            if let Some(query) = parsed.query() {
                let with_query = RequestTarget::parse(&format!("{path}?{query}"))
                    .expect("a normalized target parses");
                prop_assert_eq!(with_query, parsed.clone());
            }
        }
    }

    #[test]
    fn a_path_never_resolves_above_the_root_nor_outside_a_prefix_it_does_not_start_in(
        depth in 0usize..4,
        climbs in 0usize..6,
        rest in proptest::collection::vec(proptest::sample::select(&["x", "admin", "."][..]), 0..3),
    ) {
        let mut target = String::new();
        for level in 0..depth {
            target.push_str(&format!("/d{level}"));
        }
        for _ in 0..climbs {
            target.push_str("/..");
        }
        for piece in &rest {
            target.push('/');
            target.push_str(piece);
        }
        if target.is_empty() {
            target.push('/');
        }
        let parsed = RequestTarget::parse(&target);
        if climbs > depth {
            prop_assert!(parsed.is_err(), "{:?} climbed above the root: {:?}", target, parsed);
        } else {
            let parsed = parsed.expect("stays within the root");
            let kept: Vec<String> = (0..depth - climbs).map(|level| format!("d{level}")).collect();
            let prefix = format!("/{}", kept.join("/"));
            prop_assert!(parsed.path().starts_with(&prefix), "{:?} -> {:?}", target, parsed.path());
        }
    }
}

/// A lifetime of whole seconds from one second to five years, or none.
fn optional_lifetime() -> impl Strategy<Value = Option<Duration>> {
    proptest::option::of((1_i64..=5 * 365 * 86_400).prop_map(Duration::seconds))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Tenant policies (issue 16): whatever the policy and the request, an expiry the policy
    /// gives is never beyond `max_lifetime`, a given one is kept exactly when it is within it,
    /// the default is the policy's (else the server's, clamped), and a token written with the
    /// result keeps the lifetime rule — at Check too, when enforced.
    #[test]
    fn a_policys_expiry_is_never_beyond_its_max_lifetime_and_keeps_what_it_allows(
        max_lifetime in optional_lifetime(),
        default_lifetime in optional_lifetime(),
        requested in proptest::option::of(1_i64..=5 * 365 * 86_400),
        server_default in (1_i64..=5 * 365).prop_map(Duration::days),
    ) {
        use tessera::domain::policy::{PolicyRule, RequestedExpiry, TenantPolicy};
        // SetTenantPolicy refuses a default beyond the maximum.
        let default_lifetime = match (default_lifetime, max_lifetime) {
            (Some(default), Some(max)) => Some(default.min(max)),
            (default, _) => default,
        };
        let policy = TenantPolicy {
            max_lifetime,
            default_lifetime,
            enforce_on_existing: true,
            ..TenantPolicy::none(Tenant::parse("acme").expect("tenant"))
        };
        let now = Utc::now();
        let request = match requested {
            Some(seconds) => RequestedExpiry::At(now + Duration::seconds(seconds)),
            None => RequestedExpiry::Default,
        };
        match policy.expiry(request, now, server_default) {
            Ok(expires_at) => {
                if let Some(max) = max_lifetime {
                    prop_assert!(expires_at - now <= max);
                }
                match (request, default_lifetime) {
                    (RequestedExpiry::At(at), _) => prop_assert_eq!(expires_at, at),
                    (RequestedExpiry::Default, Some(default)) => {
                        prop_assert_eq!(expires_at, now + default)
                    }
                    (RequestedExpiry::Default, None) => prop_assert_eq!(
                        expires_at,
                        now + max_lifetime.map_or(server_default, |max| server_default.min(max))
                    ),
                }
                let token = Token {
                    expires_at,
                    ..record(&[], &[], &[], OwnerState::Enabled).token
                };
                prop_assert!(policy.violations(&token, now).is_empty());
                prop_assert!(policy.hold(&token).is_none_or(|hold| !hold.denies(now)));
            }
            Err(breach) => {
                prop_assert_eq!(breach.rule, PolicyRule::MaxLifetime);
                let (Some(max), RequestedExpiry::At(at)) = (max_lifetime, request) else {
                    return Err(TestCaseError::fail("only a given expiry beyond the maximum is refused"));
                };
                prop_assert!(at - now > max);
            }
        }
    }
}

/// Credits with a refill of `amount` every `interval_s` seconds (or none), started at `start`.
fn credits_at(remaining: u64, refill: Option<(u64, i64)>, start: chrono::DateTime<Utc>) -> Credits {
    let refill = refill.map(|(amount, seconds)| Refill {
        amount,
        interval: Duration::seconds(seconds),
    });
    CreditGrant::parse(remaining, refill)
        .expect("within bounds")
        .starting(start)
}

fn credit_start() -> chrono::DateTime<Utc> {
    chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("instant")
}

/// A refill (amount, interval in seconds) or none.
fn refill() -> impl Strategy<Value = Option<(u64, i64)>> {
    proptest::option::of((0u64..50, 1i64..100))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn without_refills_the_allowed_costs_never_add_up_to_more_than_the_balance_and_a_denied_spend_spends_nothing(
        remaining in 0u64..200,
        costs in proptest::collection::vec(0u32..20, 0..64),
    ) {
        let start = credit_start();
        let mut credits = credits_at(remaining, None, start);
        let mut spent = 0u64;
        for cost in costs {
            match credits.spend(cost, start) {
                Ok(after) => {
                    prop_assert_eq!(after.remaining + u64::from(cost), credits.remaining);
                    spent += u64::from(cost);
                    credits = after;
                }
                Err(unchanged) => {
                    prop_assert!(credits.remaining < u64::from(cost));
                    prop_assert_eq!(unchanged, credits);
                }
            }
        }
        prop_assert_eq!(spent + credits.remaining, remaining);
    }

    #[test]
    fn spending_one_at_a_time_gets_exactly_the_balance(remaining in 0u64..300) {
        let start = credit_start();
        let mut credits = credits_at(remaining, None, start);
        let mut allowed = 0u64;
        for _ in 0..(remaining + 10) {
            if let Ok(after) = credits.spend(1, start) {
                allowed += 1;
                credits = after;
            }
        }
        prop_assert_eq!(allowed, remaining);
    }

    #[test]
    fn reading_the_balance_in_between_never_changes_what_a_later_read_sees(
        remaining in 0u64..100,
        refill in refill(),
        first in 0i64..1_000,
        later in 0i64..1_000,
    ) {
        let credits = credits_at(remaining, refill, credit_start());
        let t1 = credit_start() + Duration::seconds(first.min(later));
        let t2 = credit_start() + Duration::seconds(first.max(later));
        prop_assert_eq!(credits.at(t1).at(t2), credits.at(t2));
        prop_assert_eq!(credits.at(t2).at(t2), credits.at(t2));
    }

    #[test]
    fn a_refill_tops_up_to_its_amount_on_the_interval_grid_and_never_lowers_the_balance(
        remaining in 0u64..100,
        refill in refill(),
        elapsed in 0i64..1_000,
    ) {
        let now = credit_start() + Duration::seconds(elapsed);
        let credits = credits_at(remaining, refill, credit_start());
        let read = credits.at(now);
        prop_assert!(read.remaining >= remaining);
        prop_assert!(read.refilled_at <= now);
        match refill {
            Some((amount, seconds)) => {
                let boundaries = elapsed / seconds;
                prop_assert_eq!(read.refilled_at, credit_start() + Duration::seconds(boundaries * seconds));
                let expected = if boundaries > 0 { remaining.max(amount) } else { remaining };
                prop_assert_eq!(read.remaining, expected);
                prop_assert!(now < read.next_refill().expect("refilled"));
            }
            None => prop_assert_eq!(read, credits),
        }
    }

    #[test]
    fn over_any_schedule_no_more_is_spent_than_the_grant_plus_one_refill_per_interval_passed(
        remaining in 0u64..50,
        refill in refill(),
        steps in proptest::collection::vec((0u32..10, 0i64..30), 0..64),
    ) {
        let start = credit_start();
        let mut credits = credits_at(remaining, refill, start);
        let mut now = start;
        let mut spent = 0u64;
        for (cost, wait) in steps {
            now += Duration::seconds(wait);
            if let Ok(after) = credits.spend(cost, now) {
                spent += u64::from(cost);
                credits = after;
            }
        }
        // Each refill adds at most its amount, and at most one happens per interval passed.
        let ceiling = match refill {
            Some((amount, seconds)) => remaining + amount * u64::try_from((now - start).num_seconds() / seconds).expect("non-negative"),
            None => remaining,
        };
        prop_assert!(spent <= ceiling, "spent {spent} of at most {ceiling}");
    }

    #[test]
    fn adding_credits_adds_exactly_the_amount_to_the_balance_as_read_then(
        remaining in 0u64..1_000,
        refill in refill(),
        amount in 1u64..1_000,
        elapsed in 0i64..500,
    ) {
        let now = credit_start() + Duration::seconds(elapsed);
        let credits = credits_at(remaining, refill, credit_start());
        let amount = CreditAmount::parse(amount).expect("amount");
        prop_assert_eq!(credits.add(amount.get(), now).remaining, credits.at(now).remaining + amount.get());
    }
}
