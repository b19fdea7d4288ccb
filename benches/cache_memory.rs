//! Resident memory per cached token, measured with 1,000,000 realistic credentials in the real
//! cache (moka, as the server configures it). Prints bytes per entry from VmRSS before and after.
//!
//! cargo bench --bench cache_memory

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tessera::authz::CacheSettings;
use tessera::authz::cache::CredentialCache;
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
    let mut effective = tessera::domain::permission::intersect(&grants, &ceiling);
    effective.shrink_to_fit();
    Credential {
        token_id: TokenId::generate(),
        tenant: Tenant::parse("store-eu-1").expect("tenant"),
        owner_id: PrincipalId::parse(&format!("user-{index:08}")).expect("owner"),
        expires_at: Utc::now(),
        rotated_at: None,
        revoked: false,
        secret_match: SecretMatch::Current,
        allowed_ips: IpAllowlist::parse(&["10.0.0.0/8".to_owned(), "2001:db8::/32".to_owned()])
            .expect("ips"),
        require_signature: false,
        verifier: None,
        roles: vec![RoleName::parse("reporting").expect("role")],
        owner_enabled: true,
        effective,
        rate_limit_per_minute: 600,
        owner_rate_limit_per_minute: None,
    }
}

fn main() {
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
        let before = resident_bytes();
        for index in 0..ENTRIES {
            let hash = SecretHash::of(&format!("tsk_{index:036}"));
            let entry = if std::env::var_os("EMPTY").is_some() {
                None
            } else {
                Some(Arc::new(credential(index)))
            };
            let _ = cache
                .credential(
                    hash,
                    async move { Ok::<_, tessera::store::StoreError>(entry) },
                )
                .await;
        }
        let held = cache.entry_count().await;
        let after = resident_bytes();
        let per_entry = (after.saturating_sub(before)) as f64 / held as f64;
        println!("cached credentials: {held}");
        println!(
            "resident memory:    {:.1} MiB before, {:.1} MiB after",
            before as f64 / 1048576.0,
            after as f64 / 1048576.0
        );
        println!("per cached token:   {per_entry:.0} bytes (target: at most 1024)");
    });
}
