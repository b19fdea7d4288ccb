//! Credit leases: each replica spends a metered token's credits from a slice of its balance
//! taken from the store in one conditional statement (`Store::lease_credits`), so a cached
//! Check with plenty of credits spends under a short lock with no store call.
//!
//! - **Size:** `min(MAX_LEASE, max(cost, balance ÷ 16))`, where `balance` is the stored one this
//!   replica last saw; the store takes it only while its balance is at least 16 times the lease
//!   (else the Check's exact cost, today's exact path). At low balances a lease is exactly the
//!   cost, so the last credits are spent exactly, from any replica.
//! - **Never more spent than granted:** a lease is taken before any of it is spent, and the
//!   store's statement serialises takers on the token's row.
//! - **Returned** (one increment, `Store::return_credits`) after `LEASE_IDLE` without a Check,
//!   when a Check needs more than is left (before the next lease), on every write of the token
//!   (its invalidation), and on graceful shutdown ([`Leases::return_all`]). The store takes
//!   them back only within the lease's refill period: once a refill topped the balance up, or
//!   an UpdateToken replaced the credits, the unspent rest is dropped, never counted twice.
//! - **Crash:** loses at most the unspent lease: fewer than `MAX_LEASE` credits per token per
//!   replica (takes for a token are serialised, and a lease is taken only when the last is spent
//!   or given back).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::fields::TokenId;
use crate::store::{CreditSpend, Store, StoreError};

/// The most credits one lease takes.
pub const MAX_LEASE: u64 = 10_000;
/// A lease takes at most this fraction of the balance (`balance ÷ LEASE_DIVISOR`).
pub const LEASE_DIVISOR: u64 = 16;
/// A lease left this long without a Check is given back.
pub const LEASE_IDLE: Duration = Duration::from_millis(500);

/// This replica's leases, per metered token.
#[derive(Default)]
pub struct Leases {
    tokens: Mutex<HashMap<TokenId, Arc<TokenLease>>>,
}

#[derive(Default)]
struct TokenLease {
    state: Mutex<LeaseState>,
    /// Serialises taking and giving back for the token, so at most one lease is out.
    exchange: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct LeaseState {
    /// Leased credits not spent yet.
    available: u64,
    /// The lease's refill period (`CreditLease::period`).
    period: Option<DateTime<Utc>>,
    /// The stored balance as of this replica's last exchange with the store.
    stored: Option<u64>,
    /// The `now` (µs) of the last Check that spent from it or took it.
    last_used: i64,
    /// Removed from the map (a write of the token): a Check holding it takes a fresh one.
    retired: bool,
}

/// The lease a Check of `cost` asks for, from the balance this replica last saw: the cost when
/// a 16th of the balance is no more (the exact path), else that 16th, at most `MAX_LEASE`.
fn lease_size(cost: u64, stored: Option<u64>) -> u64 {
    MAX_LEASE.min(cost.max(stored.unwrap_or(0) / LEASE_DIVISOR))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LeaseState {
    /// Spends `cost` from the lease: the balance as this replica knows it after, or None.
    fn spend(&mut self, cost: u64, now: DateTime<Utc>) -> Option<u64> {
        if self.retired || self.available < cost || self.period.is_none() {
            return None;
        }
        self.available -= cost;
        self.last_used = self.last_used.max(now.timestamp_micros());
        Some(self.stored.unwrap_or(0).saturating_add(self.available))
    }

    /// The unspent rest and its period, taken out of the lease.
    fn take_rest(&mut self) -> Option<(u64, DateTime<Utc>)> {
        let rest = std::mem::take(&mut self.available);
        match self.period {
            Some(period) if rest > 0 => Some((rest, period)),
            _ => None,
        }
    }
}

impl Leases {
    fn entry(&self, id: &TokenId) -> Arc<TokenLease> {
        let mut tokens = lock(&self.tokens);
        if let Some(lease) = tokens.get(id) {
            return lease.clone();
        }
        let lease = Arc::new(TokenLease::default());
        tokens.insert(id.clone(), lease.clone());
        lease
    }

    /// Spends `cost` of the token's credits: from this replica's lease when it covers the cost,
    /// else through the store (giving back the rest, then a new lease or the exact cost).
    pub async fn spend(
        &self,
        store: &dyn Store,
        id: &TokenId,
        cost: u32,
        now: DateTime<Utc>,
    ) -> Result<CreditSpend, StoreError> {
        let cost64 = u64::from(cost);
        // The hot path: under the map's lock, no clone of the entry.
        if let Some(lease) = lock(&self.tokens).get(id)
            && let Some(remaining) = lock(&lease.state).spend(cost64, now)
        {
            return Ok(CreditSpend::Spent { remaining });
        }
        loop {
            let lease = self.entry(id);
            let _exchange = lease.exchange.lock().await;
            let (rest, stored) = {
                let mut state = lock(&lease.state);
                if state.retired {
                    continue;
                }
                // Another Check took a lease while this one waited.
                if let Some(remaining) = state.spend(cost64, now) {
                    return Ok(CreditSpend::Spent { remaining });
                }
                (state.take_rest(), state.stored)
            };
            if let Some((rest, period)) = rest
                && let Err(error) = store.return_credits(id, rest, period, now).await
            {
                // Still leased: kept for the next Check or the next return.
                lock(&lease.state).available += rest;
                return Err(error);
            }
            return self.exchange(&lease, store, id, cost64, stored, now).await;
        }
    }

    /// A new lease (when the balance is large enough) or the exact cost, with the exchange lock
    /// held and nothing leased.
    async fn exchange(
        &self,
        lease: &TokenLease,
        store: &dyn Store,
        id: &TokenId,
        cost: u64,
        stored: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<CreditSpend, StoreError> {
        let size = lease_size(cost, stored);
        if size > cost {
            let min_balance = size.saturating_mul(LEASE_DIVISOR);
            if let Some(taken) = store.lease_credits(id, size, min_balance, now).await? {
                let mut state = lock(&lease.state);
                state.available = size - cost;
                state.period = Some(taken.period);
                state.stored = Some(taken.remaining);
                state.last_used = state.last_used.max(now.timestamp_micros());
                return Ok(CreditSpend::Spent {
                    remaining: taken.remaining.saturating_add(state.available),
                });
            }
        }
        let spent = store
            .spend_credits(id, u32::try_from(cost).unwrap_or(u32::MAX), now)
            .await?;
        if let CreditSpend::Spent { remaining } | CreditSpend::Exhausted { remaining } = spent {
            let mut state = lock(&lease.state);
            state.stored = Some(remaining);
            state.last_used = state.last_used.max(now.timestamp_micros());
        }
        Ok(spent)
    }

    /// Drops the token's lease (its write was seen) and gives back what is unspent; the store
    /// keeps it only if the credits were not replaced or refilled since.
    pub async fn forget(&self, store: &dyn Store, id: &TokenId) {
        let removed = lock(&self.tokens).remove(id);
        if let Some(lease) = removed {
            self.give_back(store, id, &lease).await;
        }
    }

    /// Drops every lease, giving back what is unspent (every token's write seen, or shutdown).
    pub async fn return_all(&self, store: &dyn Store) {
        let all: Vec<_> = lock(&self.tokens).drain().collect();
        for (id, lease) in all {
            self.give_back(store, &id, &lease).await;
        }
    }

    /// Gives back the leases idle for `LEASE_IDLE`, and forgets them.
    pub async fn return_idle(&self, store: &dyn Store) {
        let idle_since = Utc::now().timestamp_micros()
            - i64::try_from(LEASE_IDLE.as_micros()).unwrap_or(i64::MAX);
        let idle: Vec<_> = {
            let mut tokens = lock(&self.tokens);
            let idle: Vec<_> = tokens
                .iter()
                .filter(|(_, lease)| {
                    lock(&lease.state).last_used <= idle_since && lease.exchange.try_lock().is_ok()
                })
                .map(|(id, lease)| (id.clone(), lease.clone()))
                .collect();
            for (id, _) in &idle {
                tokens.remove(id);
            }
            idle
        };
        for (id, lease) in idle {
            self.give_back(store, &id, &lease).await;
        }
    }

    async fn give_back(&self, store: &dyn Store, id: &TokenId, lease: &TokenLease) {
        let _exchange = lease.exchange.lock().await;
        let rest = {
            let mut state = lock(&lease.state);
            state.retired = true;
            state.take_rest()
        };
        if let Some((rest, period)) = rest
            && let Err(error) = store.return_credits(id, rest, period, Utc::now()).await
        {
            tracing::warn!(%error, credits = rest, "cannot give back leased credits");
        }
    }

    /// Gives back idle leases every `LEASE_IDLE ÷ 2` until the leases are dropped.
    pub fn start_returns(leases: Weak<Self>, store: Arc<dyn Store>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(LEASE_IDLE / 2);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(leases) = leases.upgrade() else {
                    return;
                };
                leases.return_idle(store.as_ref()).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_the_exact_cost_at_low_balances_and_at_most_a_sixteenth_of_the_balance() {
        assert_eq!(lease_size(1, None), 1, "nothing seen yet: the exact cost");
        assert_eq!(
            lease_size(3, Some(47)),
            3,
            "47 / 16 = 2 < 3: the exact cost"
        );
        assert_eq!(lease_size(1, Some(15)), 1);
        assert_eq!(lease_size(1, Some(2_000)), 125);
        assert_eq!(lease_size(1, Some(u64::MAX)), MAX_LEASE);
        for stored in [16, 1_000, 159_999, 160_000, 10_000_000] {
            let size = lease_size(1, Some(stored));
            assert!(
                size * LEASE_DIVISOR <= stored && size <= MAX_LEASE,
                "{stored}: {size}"
            );
        }
        // A cost above the largest lease is spent exactly (the caller takes no lease then).
        assert_eq!(lease_size(50_000, Some(u64::MAX)), MAX_LEASE);
    }
}
