//! Grants and permissions as an admin or a caller writes them, and the set algebra that caps a
//! token by its owner.
//!
//! Input: lines. Lines before the first empty line are a token's grants, lines after it the
//! owner's ceiling; every line is also tried as a permission. Asserts that parsing round-trips
//! through Display, that matching agrees with a segment-by-segment reference, that `covers`
//! means "matches everything the other matches", and that `intersect` allows exactly what both
//! sides allow and holds nothing either side does not cover.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera::domain::permission::{self, Grant, Permission};

/// Keeps one input's work bounded: intersect is quadratic in grants.
const MAX_LINES: usize = 12;
/// Segments combined into extra permissions to test, each with each.
const MAX_SEGMENTS: usize = 8;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (granted_text, ceiling_text) = text.split_once("\n\n").unwrap_or((text, ""));
    let granted_lines: Vec<&str> = granted_text.lines().take(MAX_LINES).collect();
    let ceiling_lines: Vec<&str> = ceiling_text.lines().take(MAX_LINES).collect();
    let all_lines = || granted_lines.iter().chain(&ceiling_lines).copied();

    let granted: Vec<Grant> = granted_lines.iter().filter_map(|l| grant(l)).collect();
    let ceiling: Vec<Grant> = ceiling_lines.iter().filter_map(|l| grant(l)).collect();

    let mut permissions: Vec<Permission> = all_lines().filter_map(permission).collect();
    // Grants with wildcards match permissions no line spells out: name some, from the segments
    // the input uses and one it does not.
    let segments: Vec<&str> = all_lines()
        .flat_map(|line| line.split(':'))
        .take(MAX_SEGMENTS)
        .chain(["zz-unused"])
        .collect();
    for resource in &segments {
        for action in &segments {
            if let Ok(p) = Permission::parse(&format!("{resource}:{action}")) {
                permissions.push(p);
            }
        }
    }

    for g in granted.iter().chain(&ceiling) {
        assert!(g.covers(g), "{g} does not cover itself");
        for p in &permissions {
            assert_eq!(
                g.matches(p),
                reference_matches(g.as_str(), p.as_str()),
                "{g} vs {p}"
            );
        }
        for other in granted.iter().chain(&ceiling) {
            if g.covers(other) {
                for p in permissions.iter().filter(|p| other.matches(p)) {
                    assert!(g.matches(p), "{g} covers {other} but not {p}");
                }
            }
        }
    }

    let effective = permission::intersect(&granted, &ceiling);
    for e in &effective {
        assert!(granted.iter().any(|g| g.covers(e)), "{e} beyond the grants");
        assert!(
            ceiling.iter().any(|c| c.covers(e)),
            "{e} beyond the ceiling"
        );
    }
    for p in &permissions {
        let both = permission::any_matches(&granted, p) && permission::any_matches(&ceiling, p);
        assert_eq!(permission::any_matches(&effective, p), both, "{p}");
    }

    let beyond = permission::beyond_ceiling(&granted, &ceiling);
    for g in &granted {
        let covered = ceiling.iter().any(|c| c.covers(g));
        assert_eq!(beyond.contains(&g), !covered, "{g}");
    }

    let raw: Vec<String> = granted_lines.iter().map(|l| (*l).to_owned()).collect();
    match permission::parse_grants(&raw) {
        Ok(list) => {
            assert!(
                list.windows(2).all(|w| w[0] < w[1]),
                "not sorted and deduplicated"
            );
            assert_eq!(list.len(), {
                let mut unique = granted.clone();
                unique.sort();
                unique.dedup();
                unique.len()
            });
        }
        Err((index, _)) => {
            assert!(Grant::parse(raw[index].as_str()).is_err());
            assert!(raw[..index].iter().all(|r| Grant::parse(r).is_ok()));
        }
    }
});

/// Parses a grant and checks that its text parses back to the same grant.
fn grant(line: &str) -> Option<Grant> {
    let parsed = Grant::parse(line).ok()?;
    let shown = parsed.to_string();
    assert_eq!(
        Grant::parse(&shown).as_ref(),
        Ok(&parsed),
        "{line:?} shown as {shown:?}"
    );
    // Canonical text: `*:*` is written `*`, anything else exactly as given.
    if line != "*:*" {
        assert_eq!(shown, line);
    }
    Some(parsed)
}

/// Parses a permission and checks its round trip, and that the same text is a grant for it.
fn permission(line: &str) -> Option<Permission> {
    let parsed = Permission::parse(line).ok()?;
    assert_eq!(parsed.to_string(), line);
    assert_eq!(Permission::parse(&parsed.to_string()).as_ref(), Ok(&parsed));
    let as_grant = Grant::parse(line).expect("a permission is also a grant");
    assert!(as_grant.matches(&parsed));
    Some(parsed)
}

/// The README's rule: `*` alone matches everything; otherwise `resource:action`, each segment
/// either `*` (any value) or equal.
fn reference_matches(grant: &str, permission: &str) -> bool {
    if grant == "*" {
        return true;
    }
    let (Some((gr, ga)), Some((pr, pa))) = (grant.split_once(':'), permission.split_once(':'))
    else {
        return false;
    };
    (gr == "*" || gr == pr) && (ga == "*" || ga == pa)
}
