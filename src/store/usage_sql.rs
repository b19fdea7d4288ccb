//! The usage SQL both backends share, written once.
//!
//! [`usage_methods!`] expands the usage methods of `Store` inside `impl_store!` (sql.rs), once
//! per backend, so they use the same helpers (`micros`, `map_error`) and `$N` placeholders. What needs no database (which rows a flush writes) is plain Rust below the
//! macro; rows are encoded and decoded in `codec.rs`.
//!
//! A flush first locks the rows of the tokens it touches, in id order, with an `UPDATE … RETURNING
//! rotated_at` that also advances `last_used_at`. That tells it which calls still belong to the
//! token's current rotation, and puts every flush and every rotation (which locks the token row
//! before deleting its usage) in one lock order: tokens, then usage rows in key order. Counters
//! are written with additive upserts, so flushes from any number of replicas sum.
//!
//! Two bounds hold in that transaction, so across replicas: a flush id already in
//! `usage_flushes` makes the flush a no-op (a retried flush whose COMMIT had succeeded counts
//! once), and a token's distinct endpoints per day stop at the batch's `endpoints_per_day`, the
//! rest counted as `other` ([`EndpointAdmission`], read under the token row locks).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};

use crate::domain::fields::TokenId;
use crate::domain::usage::{self, CallRecord, EndpointBound, LastUse, OTHER_ENDPOINT, UsageBatch};

/// Rows per multi-row INSERT: well under either database's limit on bound parameters (SQLite
/// 32766, Postgres 65535) at 9 parameters per row.
pub(super) const ROWS_PER_STATEMENT: usize = 500;

/// What a rotation deletes, in the rotation's transaction, after it has locked the token row.
pub(super) const CLEAR_USAGE: [&str; 4] = [
    "DELETE FROM usage_minutes WHERE token_id = $1",
    "DELETE FROM usage_days WHERE token_id = $1",
    "DELETE FROM usage_recent_calls WHERE token_id = $1",
    "DELETE FROM usage_last_use WHERE token_id = $1",
];

/// `COALESCE(rotated_at, -1)` of a token never rotated.
const NEVER_ROTATED: i64 = -1;

/// Appends the scope condition (`token_id = …`, or the owner's tokens) to a query builder.
macro_rules! push_usage_scope {
    ($builder:expr, $scope:expr) => {
        match $scope {
            $crate::domain::usage::UsageScope::Token(id) => {
                $builder
                    .push("token_id = ")
                    .push_bind(id.as_str().to_owned());
            }
            $crate::domain::usage::UsageScope::Owner { tenant, owner_id } => {
                $builder
                    .push("token_id IN (SELECT id FROM tokens WHERE tenant = ")
                    .push_bind(tenant.as_str().to_owned())
                    .push(" AND owner_id = ")
                    .push_bind(owner_id.as_str().to_owned())
                    .push(")");
            }
        }
    };
}

pub(super) use push_usage_scope;

/// The usage methods of `Store`, as inherent methods of the backend whose `sqlx::Database` is
/// `$database` (the trait's methods delegate to them: `#[async_trait]` does not see into macro
/// invocations).
macro_rules! usage_methods {
    (database: $database:ty) => {
        async fn write_usage_batch(
            &self,
            batch: &$crate::domain::usage::UsageBatch,
        ) -> Result<(), StoreError> {
            use $crate::store::codec;
            use $crate::store::usage_sql as plan;
            if batch.is_empty() {
                return Ok(());
            }
            let mut transaction = self.begin_write().await?;

            // First: a flush already written (its COMMIT went through, its reply did not) is a
            // no-op.
            let recorded = sqlx::query(
                "INSERT INTO usage_flushes (flush_id, flushed_at) VALUES ($1, $2) \
                 ON CONFLICT (flush_id) DO NOTHING",
            )
            .bind(batch.flush_id.to_text())
            .bind(micros(Utc::now()))
            .execute(&mut *transaction)
            .await
            .map_err(map_error)?;
            if recorded.rows_affected() == 0 {
                tracing::info!(
                    flush_id = %batch.flush_id.to_text(),
                    "usage flush already written; not counted again"
                );
                return Ok(());
            }

            let mut rotations = std::collections::BTreeMap::new();
            for lock in plan::token_locks(batch) {
                let row: Option<(Option<i64>,)> = sqlx::query_as(
                    "UPDATE tokens SET last_used_at = CASE \
                     WHEN COALESCE(rotated_at, -1) = $3 \
                     AND (last_used_at IS NULL OR last_used_at < $2) \
                     THEN $2 ELSE last_used_at END \
                     WHERE id = $1 RETURNING rotated_at",
                )
                .bind(lock.token_id)
                .bind(lock.last_used_at)
                .bind(lock.rotation)
                .fetch_optional(&mut *transaction)
                .await
                .map_err(map_error)?;
                if let Some((rotated_at,)) = row {
                    rotations.insert(lock.token_id, rotated_at);
                }
            }

            // The endpoints each token already has on the batch's days, read under the token
            // row locks taken above: a flush of another replica for the same token has
            // committed or waits, so the bound holds across replicas.
            let mut admission = plan::EndpointAdmission::new(batch.endpoints_per_day);
            let earliest = plan::earliest_day(batch);
            let existing: Vec<&str> = rotations.keys().copied().collect();
            for chunk in existing.chunks(plan::ROWS_PER_STATEMENT) {
                let mut builder = sqlx::QueryBuilder::<$database>::new(
                    "SELECT token_id, day, endpoint FROM usage_days WHERE day >= ",
                );
                builder.push_bind(earliest).push(" AND token_id IN (");
                let mut ids = builder.separated(", ");
                for token_id in chunk {
                    ids.push_bind((*token_id).to_owned());
                }
                builder.push(")");
                let stored: Vec<(String, i64, String)> = builder
                    .build_query_as()
                    .fetch_all(&mut *transaction)
                    .await
                    .map_err(map_error)?;
                admission.extend(stored);
            }
            let rows = plan::UsageRows::of(batch, &rotations, &mut admission);

            for chunk in rows.minutes.chunks(plan::ROWS_PER_STATEMENT) {
                let mut builder = sqlx::QueryBuilder::<$database>::new(
                    "INSERT INTO usage_minutes (token_id, minute, endpoint, calls, allowed) ",
                );
                builder.push_values(chunk, |mut values, row| {
                    values
                        .push_bind(row.token_id.to_owned())
                        .push_bind(row.minute)
                        .push_bind(row.endpoint.to_owned())
                        .push_bind(row.calls)
                        .push_bind(row.allowed);
                });
                builder.push(
                    " ON CONFLICT (token_id, minute, endpoint) DO UPDATE SET \
                     calls = usage_minutes.calls + excluded.calls, \
                     allowed = usage_minutes.allowed + excluded.allowed",
                );
                builder
                    .build()
                    .execute(&mut *transaction)
                    .await
                    .map_err(map_error)?;
            }

            for chunk in rows.days.chunks(plan::ROWS_PER_STATEMENT) {
                let mut builder = sqlx::QueryBuilder::<$database>::new(
                    "INSERT INTO usage_days (token_id, day, endpoint, calls, allowed, reports, \
                     report_successes, report_micros) ",
                );
                builder.push_values(chunk, |mut values, row| {
                    values
                        .push_bind(row.token_id.to_owned())
                        .push_bind(row.day)
                        .push_bind(row.endpoint.to_owned())
                        .push_bind(row.calls)
                        .push_bind(row.allowed)
                        .push_bind(row.reports)
                        .push_bind(row.report_successes)
                        .push_bind(row.report_micros);
                });
                builder.push(
                    " ON CONFLICT (token_id, day, endpoint) DO UPDATE SET \
                     calls = usage_days.calls + excluded.calls, \
                     allowed = usage_days.allowed + excluded.allowed, \
                     reports = usage_days.reports + excluded.reports, \
                     report_successes = usage_days.report_successes + excluded.report_successes, \
                     report_micros = usage_days.report_micros + excluded.report_micros",
                );
                builder
                    .build()
                    .execute(&mut *transaction)
                    .await
                    .map_err(map_error)?;
            }

            for chunk in rows.recent.chunks(plan::ROWS_PER_STATEMENT) {
                let mut builder = sqlx::QueryBuilder::<$database>::new(
                    "INSERT INTO usage_recent_calls (token_id, time, endpoint, permission, \
                     allowed, reason, client_ip, user_agent) ",
                );
                builder.push_values(chunk, |mut values, call| {
                    values
                        .push_bind(call.token_id.as_str().to_owned())
                        .push_bind(micros(call.time))
                        .push_bind(call.endpoint.clone())
                        .push_bind(call.permission.clone())
                        .push_bind(call.outcome.is_ok())
                        .push_bind($crate::domain::usage::outcome_name(call.outcome))
                        .push_bind(codec::ip_text(call.client_ip))
                        .push_bind(call.user_agent.clone());
                });
                builder
                    .build()
                    .execute(&mut *transaction)
                    .await
                    .map_err(map_error)?;
            }

            for chunk in rows.last_uses.chunks(plan::ROWS_PER_STATEMENT) {
                let mut builder = sqlx::QueryBuilder::<$database>::new(
                    "INSERT INTO usage_last_use (token_id, time, client_ip, user_agent) ",
                );
                builder.push_values(chunk, |mut values, (token_id, last_use)| {
                    values
                        .push_bind(token_id.to_string())
                        .push_bind(micros(last_use.time))
                        .push_bind(codec::ip_text(last_use.client_ip))
                        .push_bind(last_use.user_agent.clone());
                });
                builder.push(
                    " ON CONFLICT (token_id) DO UPDATE SET time = excluded.time, \
                     client_ip = excluded.client_ip, user_agent = excluded.user_agent \
                     WHERE excluded.time > usage_last_use.time",
                );
                builder
                    .build()
                    .execute(&mut *transaction)
                    .await
                    .map_err(map_error)?;
            }

            transaction.commit().await.map_err(map_error)
        }

        async fn read_usage_figures(
            &self,
            query: &$crate::domain::usage::UsageQuery,
        ) -> Result<$crate::domain::usage::UsageFigures, StoreError> {
            use $crate::store::codec;
            use $crate::store::usage_sql as plan;

            let mut builder = sqlx::QueryBuilder::<$database>::new(
                "SELECT CAST(COALESCE(SUM(calls), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(allowed), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(reports), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(report_successes), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(report_micros), 0) AS BIGINT) \
                 FROM usage_days WHERE ",
            );
            push_usage_scope!(builder, &query.scope);
            let totals: (i64, i64, i64, i64, i64) = builder
                .build_query_as()
                .fetch_one(&self.pool)
                .await
                .map_err(map_error)?;

            let mut builder = sqlx::QueryBuilder::<$database>::new(
                "SELECT CAST(COALESCE(SUM(calls), 0) AS BIGINT) FROM usage_minutes WHERE ",
            );
            push_usage_scope!(builder, &query.scope);
            builder
                .push(" AND minute >= ")
                .push_bind(micros(query.recent_since));
            let calls_since_recent: i64 = builder
                .build_query_scalar()
                .fetch_one(&self.pool)
                .await
                .map_err(map_error)?;

            let mut builder = sqlx::QueryBuilder::<$database>::new(
                "SELECT endpoint, CAST(SUM(calls) AS BIGINT) AS total FROM usage_days WHERE ",
            );
            push_usage_scope!(builder, &query.scope);
            builder
                .push(" GROUP BY endpoint HAVING SUM(calls) > 0 ORDER BY total DESC, endpoint LIMIT ")
                .push_bind(plan::count_param($crate::domain::usage::TOP_ENDPOINTS));
            let top_endpoints: Vec<(String, i64)> = builder
                .build_query_as()
                .fetch_all(&self.pool)
                .await
                .map_err(map_error)?;

            let mut builder = sqlx::QueryBuilder::<$database>::new(
                "SELECT token_id, time, endpoint, permission, reason, client_ip, user_agent \
                 FROM usage_recent_calls WHERE ",
            );
            push_usage_scope!(builder, &query.scope);
            builder
                .push(" ORDER BY time DESC, id DESC LIMIT ")
                .push_bind(plan::count_param($crate::domain::usage::RECENT_CALLS));
            let recent_calls: Vec<codec::RecentCallRow> = builder
                .build_query_as()
                .fetch_all(&self.pool)
                .await
                .map_err(map_error)?;

            let mut builder = sqlx::QueryBuilder::<$database>::new(
                "SELECT day, CAST(SUM(calls) AS BIGINT), CAST(SUM(allowed) AS BIGINT) \
                 FROM usage_days WHERE ",
            );
            push_usage_scope!(builder, &query.scope);
            builder
                .push(" AND day >= ")
                .push_bind(micros(query.daily_since))
                .push(" GROUP BY day ORDER BY day");
            let daily: Vec<(i64, i64, i64)> = builder
                .build_query_as()
                .fetch_all(&self.pool)
                .await
                .map_err(map_error)?;

            let mut builder = sqlx::QueryBuilder::<$database>::new(
                "SELECT time, client_ip, user_agent FROM usage_last_use WHERE ",
            );
            push_usage_scope!(builder, &query.scope);
            builder.push(" ORDER BY time DESC LIMIT 1");
            let last_use: Option<(i64, String, String)> = builder
                .build_query_as()
                .fetch_optional(&self.pool)
                .await
                .map_err(map_error)?;

            codec::figures(
                totals,
                calls_since_recent,
                top_endpoints,
                recent_calls,
                daily,
                last_use,
            )
        }

        async fn prune_usage_rows(
            &self,
            cutoffs: &$crate::store::UsageCutoffs,
            limit: u32,
        ) -> Result<u64, StoreError> {
            let limit = i64::from(limit);
            let statements = [
                (
                    "DELETE FROM usage_minutes WHERE (token_id, minute, endpoint) IN \
                     (SELECT token_id, minute, endpoint FROM usage_minutes \
                     WHERE minute < $1 LIMIT $2)",
                    cutoffs.minutes_before,
                ),
                (
                    "DELETE FROM usage_recent_calls WHERE id IN \
                     (SELECT id FROM usage_recent_calls WHERE time < $1 LIMIT $2)",
                    cutoffs.minutes_before,
                ),
                (
                    "DELETE FROM usage_days WHERE (token_id, day, endpoint) IN \
                     (SELECT token_id, day, endpoint FROM usage_days WHERE day < $1 LIMIT $2)",
                    cutoffs.days_before,
                ),
                // Flush ids are needed only while their batch may be retried (minutes).
                (
                    "DELETE FROM usage_flushes WHERE flush_id IN \
                     (SELECT flush_id FROM usage_flushes WHERE flushed_at < $1 LIMIT $2)",
                    cutoffs.minutes_before,
                ),
            ];
            let mut deleted = 0;
            for (statement, before) in statements {
                let done = sqlx::query(statement)
                    .bind(micros(before))
                    .bind(limit)
                    .execute(&self.pool)
                    .await
                    .map_err(map_error)?;
                deleted += done.rows_affected();
            }
            Ok(deleted)
        }

        async fn count_tokens_for_attention(
            &self,
            now: DateTime<Utc>,
            expiring_before: DateTime<Utc>,
            unused_since: DateTime<Utc>,
        ) -> Result<$crate::store::TokensNeedingAttention, StoreError> {
            let (expiring, unused): (i64, i64) = sqlx::query_as(
                "SELECT \
                 CAST(COALESCE(SUM(CASE WHEN expires_at < $2 THEN 1 ELSE 0 END), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(CASE WHEN last_used_at IS NULL OR last_used_at < $3 \
                 THEN 1 ELSE 0 END), 0) AS BIGINT) \
                 FROM tokens WHERE revoked_at IS NULL AND expires_at > $1",
            )
            .bind(micros(now))
            .bind(micros(expiring_before))
            .bind(micros(unused_since))
            .fetch_one(&self.pool)
            .await
            .map_err(map_error)?;
            Ok($crate::store::TokensNeedingAttention {
                expiring: u64::try_from(expiring).unwrap_or_default(),
                unused: u64::try_from(unused).unwrap_or_default(),
            })
        }
    };
}

pub(super) use usage_methods;

/// One token row a flush locks: the newest use among its checked calls, and the rotation
/// they were checked under (`NEVER_ROTATED` for none), both NULL when it has only reports.
pub(super) struct TokenLock<'a> {
    pub(super) token_id: &'a str,
    pub(super) last_used_at: Option<i64>,
    pub(super) rotation: Option<i64>,
}

fn rotation_param(rotated_at: Option<DateTime<Utc>>) -> i64 {
    rotated_at.map_or(NEVER_ROTATED, |at| at.timestamp_micros())
}

/// The tokens of a batch in id order, each once; for a token with calls under two rotations
/// (it was rotated between two flushes), the newer one.
pub(super) fn token_locks(batch: &UsageBatch) -> Vec<TokenLock<'_>> {
    let mut locks: BTreeMap<&str, TokenLock<'_>> = BTreeMap::new();
    for reported in &batch.reported {
        let token_id = reported.token_id.as_str();
        locks.insert(
            token_id,
            TokenLock {
                token_id,
                last_used_at: None,
                rotation: None,
            },
        );
    }
    // `checked` is sorted by (token_id, rotated_at), so the newest rotation comes last and wins.
    for checked in &batch.checked {
        let token_id = checked.token_id.as_str();
        locks.insert(
            token_id,
            TokenLock {
                token_id,
                last_used_at: Some(checked.last_use.time.timestamp_micros()),
                rotation: Some(rotation_param(checked.rotated_at)),
            },
        );
    }
    locks.into_values().collect()
}

pub(super) struct MinuteRow<'a> {
    pub(super) token_id: &'a str,
    pub(super) minute: i64,
    pub(super) endpoint: &'a str,
    pub(super) calls: i64,
    pub(super) allowed: i64,
}

#[derive(Default)]
pub(super) struct DayRow<'a> {
    pub(super) token_id: &'a str,
    pub(super) day: i64,
    pub(super) endpoint: &'a str,
    pub(super) calls: i64,
    pub(super) allowed: i64,
    pub(super) reports: i64,
    pub(super) report_successes: i64,
    pub(super) report_micros: i64,
}

/// The rows a flush writes, in key order, once the token locks told which data still counts.
pub(super) struct UsageRows<'a> {
    pub(super) minutes: Vec<MinuteRow<'a>>,
    pub(super) days: Vec<DayRow<'a>>,
    pub(super) recent: Vec<&'a CallRecord>,
    pub(super) last_uses: Vec<(&'a TokenId, &'a LastUse)>,
}

/// Which endpoint label each counter of a flush is stored under: an endpoint the token already
/// has that day keeps its own, a new one gets its own while the token has fewer than the bound
/// that day, every other is counted as [`OTHER_ENDPOINT`].
pub(super) struct EndpointAdmission {
    bound: usize,
    /// Token → day (unix micros) → its endpoints stored or admitted, `other` left out.
    held: HashMap<String, BTreeMap<i64, BTreeSet<String>>>,
}

impl EndpointAdmission {
    pub(super) fn new(bound: EndpointBound) -> Self {
        Self {
            bound: bound.get(),
            held: HashMap::new(),
        }
    }

    /// Adds stored `(token_id, day, endpoint)` rows.
    pub(super) fn extend(&mut self, stored: Vec<(String, i64, String)>) {
        for (token_id, day, endpoint) in stored {
            if endpoint == OTHER_ENDPOINT {
                continue;
            }
            self.held
                .entry(token_id)
                .or_default()
                .entry(day)
                .or_default()
                .insert(endpoint);
        }
    }

    /// The label `endpoint` is counted under for `token_id` on `day`.
    pub(super) fn admit<'a>(&mut self, token_id: &str, day: i64, endpoint: &'a str) -> &'a str {
        if endpoint == OTHER_ENDPOINT {
            return OTHER_ENDPOINT;
        }
        if !self.held.contains_key(token_id) {
            self.held.insert(token_id.to_owned(), BTreeMap::new());
        }
        let Some(days) = self.held.get_mut(token_id) else {
            return OTHER_ENDPOINT;
        };
        let endpoints = days.entry(day).or_default();
        if endpoints.contains(endpoint) {
            return endpoint;
        }
        if endpoints.len() < self.bound {
            endpoints.insert(endpoint.to_owned());
            return endpoint;
        }
        OTHER_ENDPOINT
    }
}

/// The first day (unix micros) any counter of the batch falls on.
pub(super) fn earliest_day(batch: &UsageBatch) -> i64 {
    let checked = batch
        .checked
        .iter()
        .flat_map(|checked| &checked.minutes)
        .map(|count| usage::day_of(count.minute).timestamp_micros());
    let reported = batch
        .reported
        .iter()
        .flat_map(|reported| &reported.days)
        .map(|count| count.day.timestamp_micros());
    checked.chain(reported).min().unwrap_or(i64::MAX)
}

impl<'a> UsageRows<'a> {
    /// `rotations` holds the current `rotated_at` of every token that exists; `admission`
    /// knows the endpoints those tokens already have stored.
    pub(super) fn of(
        batch: &'a UsageBatch,
        rotations: &BTreeMap<&str, Option<i64>>,
        admission: &mut EndpointAdmission,
    ) -> Self {
        let mut minutes: BTreeMap<(&str, i64, &str), MinuteRow<'a>> = BTreeMap::new();
        let mut days: BTreeMap<(&str, i64, &str), DayRow<'a>> = BTreeMap::new();
        let mut recent = Vec::new();
        let mut last_uses = Vec::new();
        for checked in &batch.checked {
            let token_id = checked.token_id.as_str();
            let current = rotations.get(token_id);
            let checked_under = checked.rotated_at.map(|at| at.timestamp_micros());
            if current != Some(&checked_under) {
                continue;
            }
            for count in &checked.minutes {
                let calls = saturating_i64(count.calls);
                let allowed = saturating_i64(count.allowed);
                let day = usage::day_of(count.minute).timestamp_micros();
                let endpoint = admission.admit(token_id, day, &count.endpoint);
                let minute = count.minute.timestamp_micros();
                let row = minutes
                    .entry((token_id, minute, endpoint))
                    .or_insert_with(|| MinuteRow {
                        token_id,
                        minute,
                        endpoint,
                        calls: 0,
                        allowed: 0,
                    });
                row.calls = row.calls.saturating_add(calls);
                row.allowed = row.allowed.saturating_add(allowed);
                let row = days
                    .entry((token_id, day, endpoint))
                    .or_insert_with(|| DayRow {
                        token_id,
                        day,
                        endpoint,
                        ..DayRow::default()
                    });
                row.calls = row.calls.saturating_add(calls);
                row.allowed = row.allowed.saturating_add(allowed);
            }
            recent.extend(checked.recent.iter());
            last_uses.push((&checked.token_id, &checked.last_use));
        }
        for reported in &batch.reported {
            let token_id = reported.token_id.as_str();
            let Some(current) = rotations.get(token_id) else {
                continue;
            };
            for count in &reported.days {
                let after_rotation =
                    current.is_none_or(|rotated_at| count.latest.timestamp_micros() >= rotated_at);
                if !after_rotation {
                    continue;
                }
                let day = count.day.timestamp_micros();
                let endpoint = admission.admit(token_id, day, &count.endpoint);
                let row = days
                    .entry((token_id, day, endpoint))
                    .or_insert_with(|| DayRow {
                        token_id,
                        day,
                        endpoint,
                        ..DayRow::default()
                    });
                row.reports = row.reports.saturating_add(saturating_i64(count.reports));
                row.report_successes = row
                    .report_successes
                    .saturating_add(saturating_i64(count.successes));
                row.report_micros = row
                    .report_micros
                    .saturating_add(saturating_i64(count.duration_micros));
            }
        }
        Self {
            minutes: minutes.into_values().collect(),
            days: days.into_values().collect(),
            recent,
            last_uses,
        }
    }
}

fn saturating_i64(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

pub(super) fn count_param(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}
