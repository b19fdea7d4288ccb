//! Usage credits: a balance each allowed Check spends `cost` of, refilled lazily.
//!
//! A token with credits holds `remaining`; a refill tops the balance up to `refill.amount` (never
//! adds on top of it, never lowers a larger balance) once per `refill.interval`, counted from
//! `refilled_at`. Nothing runs in the background: the balance at an instant is computed from the
//! stored one ([`Credits::at`]), and the store applies the same arithmetic in the one statement
//! that spends (`src/store/sql.rs`, `spend_credits`), so concurrent spenders on every replica
//! serialise on the token's row and none can spend what another already did.
//!
//! Times are whole microseconds, the store's representation, so this arithmetic and the SQL's
//! agree to the microsecond.

use chrono::{DateTime, Utc};

/// The most one Check may cost (`CheckRequest.cost`).
pub const MAX_COST: u32 = 1_000_000;
/// The largest balance or refill amount; an AddCredits that would pass it saturates here. Far
/// below `i64::MAX`, the stored type, so no sum of a balance and an addition overflows.
pub const MAX_CREDITS: u64 = 1_000_000_000_000_000;
/// The shortest refill interval.
pub const MIN_REFILL_INTERVAL: chrono::Duration = chrono::Duration::seconds(1);
/// The longest refill interval (about ten years).
pub const MAX_REFILL_INTERVAL: chrono::Duration = chrono::Duration::days(3660);

/// A periodic top-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refill {
    /// The balance a refill tops up to.
    pub amount: u64,
    /// Between `MIN_REFILL_INTERVAL` and `MAX_REFILL_INTERVAL`.
    pub interval: chrono::Duration,
}

/// A token's credits as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credits {
    pub remaining: u64,
    /// None: never refilled.
    pub refill: Option<Refill>,
    /// The last refill (or when the credits were set); the next is one interval after it.
    pub refilled_at: DateTime<Utc>,
}

/// Why credits given by a caller are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CreditsError {
    /// A balance, refill amount or addition beyond `MAX_CREDITS`.
    #[error("must be at most {MAX_CREDITS}")]
    TooMany,
    /// A refill amount beyond `MAX_CREDITS`.
    #[error("must be at most {MAX_CREDITS}")]
    RefillTooLarge,
    #[error("must be between 1 second and 3660 days")]
    Interval,
    #[error("must be at least 1")]
    Zero,
}

impl CreditsError {
    /// The `TokenCredits` field the error is about.
    pub fn field(self) -> &'static str {
        match self {
            Self::TooMany | Self::Zero => "remaining",
            Self::RefillTooLarge => "refill_amount",
            Self::Interval => "refill_interval",
        }
    }
}

/// Credits as an admin sets them (CreateToken, UpdateToken), within the bounds; they start
/// (their first refill interval begins) when the write happens ([`CreditGrant::starting`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditGrant {
    remaining: u64,
    refill: Option<Refill>,
}

impl CreditGrant {
    pub fn parse(remaining: u64, refill: Option<Refill>) -> Result<Self, CreditsError> {
        if remaining > MAX_CREDITS {
            return Err(CreditsError::TooMany);
        }
        if let Some(refill) = refill {
            if refill.amount > MAX_CREDITS {
                return Err(CreditsError::RefillTooLarge);
            }
            if refill.interval < MIN_REFILL_INTERVAL || refill.interval > MAX_REFILL_INTERVAL {
                return Err(CreditsError::Interval);
            }
        }
        Ok(Self { remaining, refill })
    }

    /// The credits as set at `now`.
    pub fn starting(self, now: DateTime<Utc>) -> Credits {
        Credits {
            remaining: self.remaining,
            refill: self.refill,
            refilled_at: whole_micros(now),
        }
    }
}

/// How many credits an AddCredits adds: 1 to `MAX_CREDITS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditAmount(u64);

impl CreditAmount {
    pub fn parse(amount: u64) -> Result<Self, CreditsError> {
        if amount == 0 {
            return Err(CreditsError::Zero);
        }
        if amount > MAX_CREDITS {
            return Err(CreditsError::TooMany);
        }
        Ok(Self(amount))
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl Credits {
    /// The balance at `now`: with every refill due by then applied (one top-up, however many
    /// intervals passed), `refilled_at` moved on by whole intervals.
    pub fn at(self, now: DateTime<Utc>) -> Self {
        let Some(refill) = self.refill else {
            return self;
        };
        let (Some(interval), last, now_us) = (
            refill.interval.num_microseconds().filter(|us| *us > 0),
            self.refilled_at.timestamp_micros(),
            now.timestamp_micros(),
        ) else {
            return self;
        };
        if now_us < last.saturating_add(interval) {
            return self;
        }
        let intervals = (now_us - last) / interval;
        Self {
            remaining: self.remaining.max(refill.amount),
            refill: self.refill,
            refilled_at: DateTime::from_timestamp_micros(last + intervals * interval)
                .unwrap_or(self.refilled_at),
        }
    }

    /// Spends `cost` at `now`: Ok with the balance after, or Err with the balance as it is (with
    /// refills applied) when fewer than `cost` are left, in which case nothing is spent.
    pub fn spend(self, cost: u32, now: DateTime<Utc>) -> Result<Self, Self> {
        let current = self.at(now);
        match current.remaining.checked_sub(u64::from(cost)) {
            Some(remaining) => Ok(Self {
                remaining,
                ..current
            }),
            None => Err(current),
        }
    }

    /// Adds `amount` at `now` (after the refills due), saturating at `MAX_CREDITS`.
    pub fn add(self, amount: u64, now: DateTime<Utc>) -> Self {
        let current = self.at(now);
        Self {
            remaining: current.remaining.saturating_add(amount).min(MAX_CREDITS),
            ..current
        }
    }

    /// When the next refill is due; None when never refilled.
    pub fn next_refill(self) -> Option<DateTime<Utc>> {
        self.refill.map(|refill| self.refilled_at + refill.interval)
    }
}

/// `at` without its sub-microsecond part, as the store keeps it.
pub fn whole_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn start() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("instant")
    }

    fn daily(remaining: u64, amount: u64) -> Credits {
        let refill = Refill {
            amount,
            interval: Duration::days(1),
        };
        CreditGrant::parse(remaining, Some(refill))
            .expect("credits")
            .starting(start())
    }

    fn plain(remaining: u64) -> Credits {
        CreditGrant::parse(remaining, None)
            .expect("credits")
            .starting(start())
    }

    #[test]
    fn spending_takes_the_cost_and_a_too_large_cost_spends_nothing() {
        let credits = plain(3);
        let after = credits.spend(2, start()).expect("spent");
        assert_eq!(after.remaining, 1);
        assert_eq!(after.spend(2, start()), Err(after));
        assert_eq!(after.spend(0, start()).map(|c| c.remaining), Ok(1));
    }

    #[test]
    fn a_refill_tops_up_to_its_amount_once_however_many_intervals_passed() {
        let credits = daily(2, 10);
        assert_eq!(credits.at(start() + Duration::hours(23)).remaining, 2);
        let later = credits.at(start() + Duration::days(3) + Duration::hours(1));
        assert_eq!(later.remaining, 10);
        assert_eq!(later.refilled_at, start() + Duration::days(3));
        assert_eq!(later.next_refill(), Some(start() + Duration::days(4)));
    }

    #[test]
    fn a_refill_never_lowers_a_larger_balance() {
        assert_eq!(daily(50, 10).at(start() + Duration::days(1)).remaining, 50);
    }

    #[test]
    fn adding_saturates_at_the_maximum() {
        let credits = plain(MAX_CREDITS - 1);
        assert_eq!(credits.add(5, start()).remaining, MAX_CREDITS);
    }

    #[test]
    fn out_of_bounds_credits_are_refused() {
        assert_eq!(
            CreditGrant::parse(MAX_CREDITS + 1, None),
            Err(CreditsError::TooMany)
        );
        let fast = Refill {
            amount: 1,
            interval: Duration::milliseconds(999),
        };
        assert_eq!(
            CreditGrant::parse(1, Some(fast)),
            Err(CreditsError::Interval)
        );
        assert_eq!(CreditAmount::parse(0), Err(CreditsError::Zero));
        assert_eq!(CreditAmount::parse(7).map(CreditAmount::get), Ok(7));
    }
}
