//! Resident memory per cached token, measured with 1,000,000 realistic credentials in the real
//! cache (moka, as the server configures it), each passed through the Authorizer's interner
//! (`authz::intern`) as a store load is. Prints bytes per entry from VmRSS before and after, in
//! one run for three fresh processes: as the server caches (shared parts), without sharing (the
//! baseline), and with empty values (moka's own bookkeeping).
//!
//! cargo bench --bench cache_memory

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tessera::authz::CacheSettings;
use tessera::authz::cache::CredentialCache;
use tessera::authz::intern::Interner;
use tessera::domain::decision::Credential;
use tessera::domain::fields::{PrincipalId, RoleName, Tenant, TokenId};
use tessera::domain::model::SecretMatch;
use tessera::domain::network::IpAllowlist;
use tessera::domain::permission::Grant;
use tessera::domain::token::SecretHash;

const ENTRIES: u64 = 1_000_000;

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// A token as platforms typically issue them: three grants, one role, two networks, an owner
/// with a handful of permissions.
fn credential(index: u64) -> Credential {
    let grants: Vec<Grant> = ["orders:read", "orders:write", "products:read"]
        .iter()
        .map(|raw| Grant::parse(raw).expect("grant"))
        .collect();
    let ceiling: Vec<Grant> = [
        "orders:*",
        "products:*",
        "customers:read",
        "fn:OrderList_Load_Query",
    ]
    .iter()
    .map(|raw| Grant::parse(raw).expect("grant"))
    .collect();
    let effective = tessera::domain::permission::intersect(&grants, &ceiling).into();
    Credential {
        token_id: TokenId::generate(),
        tenant: Tenant::parse("store-eu-1").expect("tenant"),
        owner_id: PrincipalId::parse(&format!("user-{index:08}")).expect("owner"),
        expires_at: Utc::now(),
        rotated_at: None,
        revoked: false,
        suspended: false,
        secret_match: SecretMatch::Current,
        allowed_ips: IpAllowlist::parse(&["10.0.0.0/8".to_owned(), "2001:db8::/32".to_owned()])
            .expect("ips")
            .into(),
        require_signature: false,
        verifier: None,
        roles: vec![RoleName::parse("reporting").expect("role")].into(),
        owner_enabled: true,
        effective,
        rate_limit_per_minute: 600,
        owner_rate_limit_per_minute: None,
        policy_hold: None,
        metadata: None,
        metered: false,
    }
}

/// How one measuring process caches.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Shared,
    Unshared,
    Empty,
}

impl Mode {
    const ALL: [(Mode, &'static str); 3] = [
        (Mode::Shared, "shared"),
        (Mode::Unshared, "unshared"),
        (Mode::Empty, "empty (unknown tokens: moka's bookkeeping)"),
    ];
}

const MODE_VARIABLE: &str = "TESSERA_CACHE_MEMORY_MODE";

fn main() {
    let Some(mode) = std::env::var(MODE_VARIABLE).ok().and_then(|name| {
        Mode::ALL
            .iter()
            .find(|(_, known)| *known == name)
            .map(|(mode, _)| *mode)
    }) else {
        // One fresh process per mode, so no mode inherits another's heap.
        let this = std::env::current_exe().expect("this bench's path");
        println!("| values | bytes per cached token |\n|---|---|");
        for (_, name) in Mode::ALL {
            let output = std::process::Command::new(&this)
                .env(MODE_VARIABLE, name)
                .output()
                .expect("run a measuring process");
            let text = String::from_utf8_lossy(&output.stdout);
            println!("| {name} | {} |", text.trim());
        }
        return;
    };
    print!("{:.0}", measure(mode));
}

/// Bytes of resident memory per cached entry after caching `ENTRIES` credentials.
fn measure(mode: Mode) -> f64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let cache = CredentialCache::new(&CacheSettings {
            capacity: 2 * ENTRIES,
            max_bytes: u64::MAX,
            ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(60),
        });
        let interner = Interner::new();
        let before = resident_bytes();
        for index in 0..ENTRIES {
            let hash = SecretHash::of(&format!("tsk_{index:036}"));
            let entry = match mode {
                Mode::Empty => None,
                Mode::Unshared => Some(Arc::new(credential(index))),
                Mode::Shared => Some(Arc::new(interner.share(credential(index)))),
            };
            let _ = cache
                .credential(
                    hash,
                    async move { Ok::<_, tessera::store::StoreError>(entry) },
                )
                .await;
        }
        if mode != Mode::Empty {
            // Every credential stayed (the capacity is twice the count): the figure is per entry.
            assert_eq!(cache.entry_count().await, ENTRIES);
        }
        let after = resident_bytes();
        (after.saturating_sub(before)) as f64 / ENTRIES as f64
    })
}
