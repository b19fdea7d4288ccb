//! The SQL both backends share, written once.
//!
//! sqlx's query API is generic over the database, but spelling out the bounds for a generic
//! `impl<DB> Store for …` is long and brittle. Instead [`impl_store!`] expands the whole
//! `impl Store` for one concrete pool type; each backend module (`postgres.rs`, `sqlite.rs`)
//! invokes it once for its own struct, with its few dialect differences beside its connection
//! setup. What needs no database is plain Rust elsewhere: encoding values for binding and
//! decoding rows into domain types in `codec.rs`, mapping sqlx errors in `error.rs`. The backend
//! modules own their connection setup and what differs beyond SQL (how replicas hear of each
//! other's writes).
//!
//! Placeholders are `$1, $2, …` in both dialects: sqlx's SQLite driver binds `$N` by position, so
//! one statement text serves both. Locks are taken with a no-op `UPDATE … RETURNING` rather than
//! `SELECT … FOR UPDATE`, which SQLite lacks: on Postgres it locks the row. SQLite needs no row
//! lock: every transaction that writes opens with `BEGIN IMMEDIATE` (`begin_write`), which takes
//! the database write lock before anything is read, so it never has to upgrade a read lock
//! (which SQLite would refuse with `SQLITE_BUSY` instead of waiting).
//!
//! A transaction dropped on an error path rolls back (sqlx flushes the rollback before the
//! connection returns to the pool), so business errors simply return.

/// The columns of `tokens`, in `TokenRow` order, each prefixed with `$prefix` (a table alias).
#[rustfmt::skip]
macro_rules! token_columns {
    ($prefix:literal) => {
        concat!(
            $prefix, "id, ",
            $prefix, "tenant, ",
            $prefix, "owner_id, ",
            $prefix, "name, ",
            $prefix, "description, ",
            $prefix, "permissions, ",
            $prefix, "roles, ",
            $prefix, "allowed_ips, ",
            $prefix, "rate_limit_per_minute, ",
            $prefix, "require_signature, ",
            $prefix, "secret_hint, ",
            $prefix, "created_at, ",
            $prefix, "updated_at, ",
            $prefix, "expires_at, ",
            $prefix, "rotated_at, ",
            $prefix, "revoked_at, ",
            $prefix, "last_used_at, ",
            $prefix, "version, ",
            $prefix, "imported, ",
            $prefix, "metadata, ",
            $prefix, "suspended_at, ",
            $prefix, "suspend_reason, ",
            $prefix, "credits_remaining, ",
            $prefix, "credits_refill_amount, ",
            $prefix, "credits_refill_interval, ",
            $prefix, "credits_refilled_at"
        )
    };
}
pub(super) use token_columns;

/// The columns of `tenant_policies`, each prefixed with `$prefix` (a table alias) and named as
/// `codec::PolicyRow` decodes them.
#[rustfmt::skip]
macro_rules! policy_columns {
    ($prefix:literal) => {
        concat!(
            $prefix, "tenant AS policy_tenant, ",
            $prefix, "max_lifetime_seconds AS policy_max_lifetime_seconds, ",
            $prefix, "default_lifetime_seconds AS policy_default_lifetime_seconds, ",
            $prefix, "require_expiry AS policy_require_expiry, ",
            $prefix, "max_tokens_per_owner AS policy_max_tokens_per_owner, ",
            $prefix, "allowed_permissions AS policy_allowed_permissions, ",
            $prefix, "require_ip_allowlist AS policy_require_ip_allowlist, ",
            $prefix, "enforce_on_existing AS policy_enforce_on_existing, ",
            $prefix, "updated_at AS policy_updated_at, ",
            $prefix, "leak_action AS policy_leak_action"
        )
    };
}
pub(super) use policy_columns;
/// A token row's credit balance at the instant bound as `$3`: `credits_remaining`, topped up to
/// `credits_refill_amount` when a refill is due (`domain::credits::Credits::at`, the same
/// arithmetic). Only meaningful where `credits_remaining IS NOT NULL`.
#[rustfmt::skip]
macro_rules! credit_balance {
    () => {
        "(CASE WHEN credits_refill_interval IS NOT NULL \
               AND $3 >= credits_refilled_at + credits_refill_interval \
               AND credits_refill_amount > credits_remaining \
          THEN credits_refill_amount ELSE credits_remaining END)"
    };
}
pub(super) use credit_balance;

/// The assignment that moves `credits_refilled_at` on by the whole refill intervals passed by
/// `$3`, beside a `credit_balance!` that applies the refill.
#[rustfmt::skip]
macro_rules! credit_refilled_at {
    () => {
        "credits_refilled_at = CASE WHEN credits_refill_interval IS NOT NULL \
               AND $3 >= credits_refilled_at + credits_refill_interval \
          THEN credits_refilled_at + (($3 - credits_refilled_at) / credits_refill_interval) \
               * credits_refill_interval \
          ELSE credits_refilled_at END"
    };
}
pub(super) use credit_refilled_at;

/// Takes `$2` credits at `$3` when the balance (`credit_balance!`) is at least `$4`, refill
/// applied in the same statement; returns the balance after and `credits_refilled_at` (the
/// lease's period), with the refill amount and the period whose `credits.low` was sent, so the
/// caller sees without another read whether this take crossed into low credits. One statement: on Postgres the row lock serialises takers and the
/// condition is re-read after a concurrent take commits; SQLite has one writer at a time.
#[rustfmt::skip]
macro_rules! credit_take {
    () => {
        concat!(
            "UPDATE tokens SET credits_remaining = ",
            credit_balance!(),
            " - $2, ",
            credit_refilled_at!(),
            " WHERE id = $1 AND credits_remaining IS NOT NULL AND ",
            credit_balance!(),
            " >= $4 RETURNING credits_remaining, credits_refilled_at, credits_refill_amount, \
             credits_low_period"
        )
    };
}
pub(super) use credit_take;

/// The columns of `events` that `codec::EventRow` decodes.
macro_rules! event_columns {
    () => {
        "seq, id, type, tenant, time, token_id, principal_id, data"
    };
}
pub(super) use event_columns;

/// The columns of `admin_keys` that `codec::AdminKeyRow` decodes, in its order.
macro_rules! admin_key_columns {
    () => {
        "id, name, tenants, role, secret_hint, created_at, created_by, expires_at, \
         last_used_at, revoked_at, bootstrap"
    };
}
pub(super) use admin_key_columns;

/// Expands `impl Store for $store`, in a module `sql_impl` inside the invoking backend module,
/// for the struct `$store` defined there: one with `pool` and `check_pool` fields, both
/// `sqlx::Pool<$database>` (Check's reads use `check_pool`, everything else `pool`), and inherent
/// `publish_invalidation`, `watch` and `checkpoint_on_close` methods for what differs beyond SQL (whether and how
/// replicas hear of each other's writes). Being a child of the backend module, the expansion
/// sees those private fields and methods; no other module does.
///
/// `json_array_elements` is a dialect difference in queries: a subquery yielding the
/// elements of the JSON text array bound as `$2`, so `get_roles` is a single statement whatever
/// the number of names. `wait_for_audit_writers` is the statement that makes a reader of the
/// audit log wait until no audit insert is in flight (see `list_audit_events`);
/// `wait_for_event_writers` the same for the outbox (see `list_events`).
/// `token_names_role` is a condition on a `tokens` row: its JSON `roles` array holds the role
/// name bound as `$2` (see `delete_role`). `skip_locked` ends the subquery that claims webhook
/// deliveries: Postgres locks the rows it picks and skips those another replica's claim holds;
/// SQLite, one writer at a time, needs nothing.
macro_rules! impl_store {
    (
        store: $store:ident,
        database: $database:ty,
        backend: $backend:literal,
        json_array_elements: $json_array_elements:literal,
        wait_for_audit_writers: $wait_for_audit_writers:literal,
        wait_for_event_writers: $wait_for_event_writers:literal,
        token_names_role: $token_names_role:literal,
        skip_locked: $skip_locked:literal,
        begin_write: $begin_write:literal $(,)?
    ) => {
        /// The SQL of `src/store/sql.rs`, stamped out for this backend's struct, whose private
        /// pools and methods it uses as the backend's own code.
        mod sql_impl {
            use std::sync::Arc;

            use chrono::{DateTime, Utc};

            use super::$store;
            use $crate::domain::fields::{ApiScope, PrincipalId, RoleName, Tenant, TokenId};
            use $crate::domain::model::{
                ApiStatus, AuditEvent, CredentialRecord, NewToken, Principal, Role, Suspension,
                Token,
            };
            use $crate::domain::leak::{self, LeakAction, LeakFinding, LeakOutcome, LeakReport};
            use $crate::domain::policy::TenantPolicy;
            use $crate::domain::signature::SealedSigningKey;
            use $crate::domain::token::SecretHash;
            use $crate::domain::usage::{UsageBatch, UsageFigures, UsageQuery};
            use $crate::domain::admin_key::{AdminKey, AdminKeyId};
            use $crate::store::codec::{
                AdminKeyRow, ApiStatusRow, AuditRow, CredentialRow, LockedForRotation, PolicyParams,
                PolicyRow, PrincipalRow, RoleRow, StoredCredits, TokenParams, TokenRow, corrupt,
                grants_json, instant, micros, strings_json,
            };
            use $crate::domain::credits::MAX_CREDITS;
            use $crate::domain::event::{EventType, NewEvent};
            use $crate::store::error::map_error;
            use $crate::store::invalidation::{Invalidation, InvalidationSink};
            use $crate::store::codec::tenants_json;
            use $crate::domain::session::{NewSession, PortalBranding, Session, SessionId};
            use $crate::store::codec::{
                BrandingRow, SessionRow, session_columns, session_kind_columns,
            };
            use $crate::store::sql::{
                admin_key_columns, credit_balance, credit_refilled_at, credit_take, event_columns, policy_columns, token_columns,
            };
            use $crate::store::usage_sql::{push_usage_scope, usage_methods};
            use $crate::domain::webhook::{
                Attempt, AttemptResult, DueDelivery, NewWebhook, Webhook, WebhookChanges,
                WebhookDelivery, WebhookId, encode_event_types, failing_event_data,
            };
            use $crate::store::webhook_codec::{
                DeliveryRow, DueRow, WebhookRow, delivery_columns, webhook_columns,
            };
            use $crate::store::{
                Bootstrapped, CreditLease, CreditSpend, NewAdminKey, PersistKey, PrincipalChanges, Rotation, SigningKeyUpdate,
                Store, StoreError, TokenQuery, TokenUpdate, TokensNeedingAttention, UsageCutoffs,
            };

            /// What `credit_take!` returns: the balance after, the refill period, the refill
            /// amount and the period whose `credits.low` was sent.
            type CreditTake = (i64, i64, Option<i64>, Option<i64>);

            impl $store {
                /// A transaction that writes: `$begin_write` (SQLite's takes the write lock
                /// first, waiting out another writer under the busy timeout; a deferred one
                /// that read first cannot take it once another connection has committed, and
                /// fails at once with SQLITE_BUSY).
                async fn begin_write(
                    &self,
                ) -> Result<sqlx::Transaction<'static, $database>, StoreError> {
                    self.pool.begin_with($begin_write).await.map_err(map_error)
                }

                async fn insert_audit_row(
                    connection: &mut <$database as sqlx::Database>::Connection,
                    event: &AuditEvent,
                ) -> Result<(), StoreError> {
                    sqlx::query(
                        "INSERT INTO audit_events \
                         (time, actor, action, tenant, token_id, principal_id, summary, admin_key) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(micros(event.time))
                    .bind(&event.actor)
                    .bind(&event.action)
                    .bind(&event.tenant)
                    .bind(event.token_id.as_ref().map(TokenId::as_str))
                    .bind(event.principal_id.as_ref().map(PrincipalId::as_str))
                    .bind(&event.summary)
                    .bind(&event.admin_key)
                    .execute(&mut *connection)
                    .await
                    .map_err(map_error)?;
                    Ok(())
                }

                async fn insert_admin_key_row(
                    connection: &mut <$database as sqlx::Database>::Connection,
                    new: &NewAdminKey,
                ) -> Result<(), StoreError> {
                    let key = &new.key;
                    sqlx::query(
                        "INSERT INTO admin_keys (id, key_hash, name, tenants, role, secret_hint, \
                         created_at, created_by, expires_at, last_used_at, revoked_at, bootstrap) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL, $10)",
                    )
                    .bind(key.id.as_str())
                    .bind(new.secret_hash.0.as_slice())
                    .bind(key.name.as_str())
                    .bind(tenants_json(&key.tenants))
                    .bind(key.role.as_str())
                    .bind(&key.secret_hint)
                    .bind(micros(key.created_at))
                    .bind(&key.created_by)
                    .bind(key.expires_at.map(micros))
                    .bind(key.bootstrap)
                    .execute(&mut *connection)
                    .await
                    .map_err(map_error)?;
                    Ok(())
                }

                /// Writes a lifecycle event into the outbox, and in the same statement's
                /// transaction one pending delivery per enabled webhook of its tenant that
                /// takes its type: the event and its deliveries commit with the change that
                /// caused them, or none of them do.
                async fn insert_event_row(
                    connection: &mut <$database as sqlx::Database>::Connection,
                    event: &NewEvent,
                ) -> Result<i64, StoreError> {
                    let seq: i64 = sqlx::query_scalar(
                        "INSERT INTO events (id, type, tenant, time, token_id, principal_id, data) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING seq",
                    )
                    .bind(event.id.as_str())
                    .bind(event.event_type.as_str())
                    .bind(&event.tenant)
                    .bind(micros(event.time))
                    .bind(event.token_id.as_ref().map(TokenId::as_str))
                    .bind(event.principal_id.as_ref().map(PrincipalId::as_str))
                    .bind(event.data.to_string())
                    .fetch_one(&mut *connection)
                    .await
                    .map_err(map_error)?;
                    sqlx::query(
                        "INSERT INTO webhook_deliveries \
                         (webhook_id, event_seq, state, attempts, next_attempt_at, last_error, created_at) \
                         SELECT id, $1, 'pending', 0, $2, '', $2 FROM webhooks \
                         WHERE tenant = $3 AND NOT disabled \
                         AND (event_types = '' OR event_types LIKE $4)",
                    )
                    .bind(seq)
                    .bind(micros(event.time))
                    .bind(&event.tenant)
                    .bind(format!("%,{},%", event.event_type.as_str()))
                    .execute(&mut *connection)
                    .await
                    .map_err(map_error)?;
                    Ok(seq)
                }

                /// Commits a mutation together with its audit event and its lifecycle events
                /// (`insert_event_row`), or none of them.
                async fn commit_with_audit_and_events(
                    mut transaction: sqlx::Transaction<'static, $database>,
                    audit: &AuditEvent,
                    events: &[NewEvent],
                ) -> Result<(), StoreError> {
                    Self::insert_audit_row(&mut transaction, audit).await?;
                    for event in events {
                        Self::insert_event_row(&mut transaction, event).await?;
                    }
                    transaction.commit().await.map_err(map_error)
                }

                /// After a take of credits (`credit_take!`): when it left the balance below a
                /// tenth of the refill amount and `credits.low` was not yet sent for this refill
                /// period, marks the period and writes the event, in one transaction whose
                /// conditional update lets one of concurrent takers (on any replica) send it.
                /// Costs nothing more in the common case, where the take's own answer shows
                /// the balance is not low or the event was sent.
                async fn note_low_credits(
                    &self,
                    id: &TokenId,
                    take: &CreditTake,
                    now: DateTime<Utc>,
                ) -> Result<(), StoreError> {
                    let (remaining, period, refill_amount, low_period) = *take;
                    let low = refill_amount
                        .is_some_and(|amount| remaining.saturating_mul(10) < amount);
                    if !low || low_period == Some(period) {
                        return Ok(());
                    }
                    let mut transaction = self.begin_write().await?;
                    let row: Option<TokenRow> = sqlx::query_as(concat!(
                        "UPDATE tokens SET credits_low_period = $2 WHERE id = $1 \
                         AND credits_refilled_at = $2 \
                         AND (credits_low_period IS NULL OR credits_low_period <> $2) RETURNING ",
                        token_columns!("")
                    ))
                    .bind(id.as_str())
                    .bind(period)
                    .fetch_optional(&mut *transaction)
                    .await
                    .map_err(map_error)?;
                    if let Some(row) = row {
                        let event = NewEvent::token(EventType::CreditsLow, &row.into_token()?, now);
                        Self::insert_event_row(&mut transaction, &event).await?;
                        transaction.commit().await.map_err(map_error)?;
                    }
                    Ok(())
                }

                /// Commits a change of a token with its audit event and the event `event_type`
                /// carrying the token as the change left it; returns that token.
                async fn commit_with_token_event(
                    transaction: sqlx::Transaction<'static, $database>,
                    audit: &AuditEvent,
                    row: TokenRow,
                    event_type: EventType,
                    at: DateTime<Utc>,
                ) -> Result<Token, StoreError> {
                    let token = row.into_token()?;
                    let event = NewEvent::token(event_type, &token, at);
                    Self::commit_with_audit_and_events(transaction, audit, &[event]).await?;
                    Ok(token)
                }

                /// ` AND tenant IN (…)` for a listing of these tenants only.
                fn push_tenant_filter(
                    builder: &mut sqlx::QueryBuilder<$database>,
                    tenants: &[Tenant],
                ) {
                    builder.push(" AND tenant IN (");
                    let mut names = builder.separated(", ");
                    for tenant in tenants {
                        names.push_bind(tenant.as_str().to_owned());
                    }
                    // No tenant at all matches no row: `IN ()` is not SQL.
                    if tenants.is_empty() {
                        names.push("NULL");
                    }
                    builder.push(")");
                }

                /// Commits a mutation together with its audit event, or neither.
                async fn commit_with_audit(
                    mut transaction: sqlx::Transaction<'static, $database>,
                    event: &AuditEvent,
                ) -> Result<(), StoreError> {
                    Self::insert_audit_row(&mut transaction, event).await?;
                    transaction.commit().await.map_err(map_error)
                }

                /// Why a conditional update of a live token matched no row.
                async fn missing_or_revoked(
                    connection: &mut <$database as sqlx::Database>::Connection,
                    id: &TokenId,
                ) -> StoreError {
                    let found = sqlx::query("SELECT id FROM tokens WHERE id = $1")
                        .bind(id.as_str())
                        .fetch_optional(&mut *connection)
                        .await;
                    match found {
                        Ok(Some(_)) => StoreError::TokenRevoked,
                        Ok(None) => StoreError::NotFound("token"),
                        Err(error) => map_error(error),
                    }
                }

                /// The named roles of a tenant, read through `pool` (Check's or the admin one).
                async fn roles_named(
                    pool: &sqlx::Pool<$database>,
                    tenant: &Tenant,
                    names: &[RoleName],
                ) -> Result<Vec<Role>, StoreError> {
                    if names.is_empty() {
                        return Ok(Vec::new());
                    }
                    let rows: Vec<RoleRow> = sqlx::query_as(concat!(
                        "SELECT tenant, name, permissions, created_at, updated_at FROM roles \
                         WHERE tenant = $1 AND name IN (",
                        $json_array_elements,
                        ") ORDER BY name"
                    ))
                    .bind(tenant.as_str())
                    .bind(strings_json(names.iter().map(|name| name.as_str())))
                    .fetch_all(pool)
                    .await
                    .map_err(map_error)?;
                    rows.into_iter().map(RoleRow::into_role).collect()
                }

                /// Inserts `new` as it is (version 1), returning the stored row.
                async fn insert_token_row(
                    connection: &mut <$database as sqlx::Database>::Connection,
                    new: &NewToken,
                ) -> Result<TokenRow, StoreError> {
                    let token = &new.token;
                    let params = TokenParams::of(token);
                    sqlx::query_as(concat!(
                        "INSERT INTO tokens (",
                        token_columns!(""),
                        ", secret_hash, signing_key) VALUES \
                         ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
                         $10, $11, $12, $13, $14, $15, $16, $17, 1, $18, $19, $20, $21, \
                         $22, $23, $24, $25, $26, $27) RETURNING ",
                        token_columns!("")
                    ))
                    .bind(token.id.as_str())
                    .bind(token.tenant.as_str())
                    .bind(token.owner_id.as_str())
                    .bind(token.name.as_str())
                    .bind(token.description.as_str())
                    .bind(params.permissions)
                    .bind(params.roles)
                    .bind(params.allowed_ips)
                    .bind(params.rate_limit_per_minute)
                    .bind(token.require_signature)
                    .bind(&token.secret_hint)
                    .bind(params.created_at)
                    .bind(params.updated_at)
                    .bind(params.expires_at)
                    .bind(params.rotated_at)
                    .bind(params.revoked_at)
                    .bind(params.last_used_at)
                    .bind(token.imported)
                    .bind(params.metadata)
                    .bind(params.suspended_at)
                    .bind(params.suspend_reason)
                    .bind(params.credits.remaining)
                    .bind(params.credits.refill_amount)
                    .bind(params.credits.refill_interval)
                    .bind(params.credits.refilled_at)
                    .bind(new.secret_hash.0.as_slice())
                    .bind(new.signing_key.as_ref().map(SealedSigningKey::as_bytes))
                    .fetch_one(&mut *connection)
                    .await
                    .map_err(map_error)
                }

                /// Refuses to make an expired token of `owner_id` live again when the owner already
                /// holds `limit` live tokens at `now`. Locks the owner's row before counting, as
                /// `create_token` does, so concurrent creates, rotations and updates of one owner's
                /// tokens count one after the other. Callers hold the token's row lock already:
                /// token before owner everywhere (a create locks only the owner), so no two writers
                /// wait on each other in a cycle.
                async fn ensure_room_to_revive(
                    connection: &mut <$database as sqlx::Database>::Connection,
                    tenant: &str,
                    owner_id: &str,
                    now: i64,
                    limit: u32,
                ) -> Result<(), StoreError> {
                    // A token whose owner row is gone is still counted (Check denies it anyway).
                    let (_, live_tokens) =
                        Self::lock_owner_counting_live(connection, tenant, owner_id, now).await?;
                    if live_tokens >= i64::from(limit) {
                        return Err(StoreError::OwnerTokenLimit { limit });
                    }
                    Ok(())
                }

                /// Locks the owner's row (a no-op update) and then counts its live tokens at
                /// `now`: whether the row exists, and the count. Every writer that adds a live
                /// token of the owner (create, import, revival) takes this lock first, so their
                /// counts follow one another.
                async fn lock_owner_counting_live(
                    connection: &mut <$database as sqlx::Database>::Connection,
                    tenant: &str,
                    owner_id: &str,
                    now: i64,
                ) -> Result<(bool, i64), StoreError> {
                    let owner = sqlx::query(
                        "UPDATE principals SET updated_at = updated_at \
                         WHERE tenant = $1 AND id = $2 RETURNING id",
                    )
                    .bind(tenant)
                    .bind(owner_id)
                    .fetch_optional(&mut *connection)
                    .await
                    .map_err(map_error)?;
                    let live_tokens: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM tokens \
                         WHERE tenant = $1 AND owner_id = $2 \
                         AND revoked_at IS NULL AND expires_at > $3",
                    )
                    .bind(tenant)
                    .bind(owner_id)
                    .bind(now)
                    .fetch_one(&mut *connection)
                    .await
                    .map_err(map_error)?;
                    Ok((owner.is_some(), live_tokens))
                }

                                usage_methods!(database: $database);
            }

            #[async_trait::async_trait]
            impl Store for $store {
                fn backend(&self) -> &'static str {
                    $backend
                }

                async fn ping(&self) -> Result<(), StoreError> {
                    sqlx::query("SELECT 1")
                        .execute(&self.pool)
                        .await
                        .map_err(map_error)?;
                    Ok(())
                }

                async fn create_token(
                    &self,
                    new: &NewToken,
                    max_live_per_owner: u32,
                    audit: &AuditEvent,
                ) -> Result<Token, StoreError> {
                    let token = &new.token;
                    let created_at = micros(token.created_at);
                    let mut transaction = self.begin_write().await?;

                    // Serialises concurrent creates for one owner, so the count cannot race. The
                    // token's creation instant is "now" for what counts as live.
                    let (owner_exists, live_tokens) = Self::lock_owner_counting_live(
                        &mut transaction,
                        token.tenant.as_str(),
                        token.owner_id.as_str(),
                        created_at,
                    )
                    .await?;
                    if !owner_exists {
                        return Err(StoreError::NotFound("principal"));
                    }
                    if live_tokens >= i64::from(max_live_per_owner) {
                        return Err(StoreError::OwnerTokenLimit {
                            limit: max_live_per_owner,
                        });
                    }

                    let created = Self::insert_token_row(&mut transaction, new).await?.into_token()?;
                    let event = NewEvent::token(EventType::TokenCreated, &created, token.created_at);
                    Self::commit_with_audit_and_events(transaction, audit, &[event]).await?;
                    Ok(created)
                }

                async fn get_token(&self, id: &TokenId) -> Result<Token, StoreError> {
                    let row: Option<TokenRow> = sqlx::query_as(concat!(
                        "SELECT ",
                        token_columns!(""),
                        " FROM tokens WHERE id = $1"
                    ))
                    .bind(id.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_error)?;
                    row.ok_or(StoreError::NotFound("token"))?.into_token()
                }

                async fn list_tokens(&self, query: &TokenQuery) -> Result<Vec<Token>, StoreError> {
                    // Built per call so each filter combination is its own prepared statement,
                    // which the planner can serve from the right index.
                    let mut builder = sqlx::QueryBuilder::<$database>::new(concat!(
                        "SELECT ",
                        token_columns!(""),
                        " FROM tokens WHERE tenant = "
                    ));
                    builder.push_bind(query.tenant.as_str());
                    if let Some(owner_id) = &query.owner_id {
                        builder
                            .push(" AND owner_id = ")
                            .push_bind(owner_id.as_str());
                    }
                    if !query.include_revoked {
                        builder.push(" AND revoked_at IS NULL");
                    }
                    if let Some(before) = query.expiring_before {
                        builder
                            .push(" AND expires_at > ")
                            .push_bind(micros(query.now));
                        builder.push(" AND expires_at < ").push_bind(micros(before));
                    }
                    if let Some(since) = query.unused_since {
                        builder
                            .push(" AND (last_used_at IS NULL OR last_used_at < ")
                            .push_bind(micros(since))
                            .push(")");
                    }
                    if let Some(after) = &query.after {
                        builder.push(" AND id > ").push_bind(after.as_str());
                    }
                    builder
                        .push(" ORDER BY id LIMIT ")
                        .push_bind(i64::from(query.limit));

                    let rows: Vec<TokenRow> = builder
                        .build_query_as()
                        .fetch_all(&self.pool)
                        .await
                        .map_err(map_error)?;
                    rows.into_iter().map(TokenRow::into_token).collect()
                }

                async fn update_token(
                    &self,
                    update: &TokenUpdate<'_>,
                    audit: &AuditEvent,
                ) -> Result<Token, StoreError> {
                    let changes = &update.changes;
                    let updated_at = micros(update.updated_at);
                    let mut transaction = self.begin_write().await?;

                    // Locks the token and reads what the checks below need. Then only the
                    // columns of the mask are written: a concurrent update of other fields keeps
                    // its values.
                    let current: Option<(String, String, i64, Option<i64>, i64)> = sqlx::query_as(
                        "UPDATE tokens SET version = version WHERE id = $1 \
                         RETURNING tenant, owner_id, expires_at, revoked_at, version",
                    )
                    .bind(update.id.as_str())
                    .fetch_optional(&mut *transaction)
                    .await
                    .map_err(map_error)?;
                    let Some((tenant, owner_id, expires_at, revoked_at, version)) = current else {
                        return Err(StoreError::NotFound("token"));
                    };
                    if revoked_at.is_some() {
                        return Err(StoreError::TokenRevoked);
                    }
                    if let Some(expected) = update.expected_version {
                        if u64::try_from(version).ok() != Some(expected) {
                            return Err(StoreError::VersionMismatch { expected });
                        }
                    }
                    if let Some(new_expires_at) = changes.expires_at {
                        let revives =
                            expires_at <= updated_at && micros(new_expires_at) > updated_at;
                        if revives {
                            Self::ensure_room_to_revive(
                                &mut transaction,
                                &tenant,
                                &owner_id,
                                updated_at,
                                update.max_live_per_owner,
                            )
                            .await?;
                        }
                    }

                    let mut builder = sqlx::QueryBuilder::<$database>::new(
                        "UPDATE tokens SET version = version + 1, updated_at = ",
                    );
                    builder.push_bind(updated_at);
                    if let Some(name) = &changes.name {
                        builder.push(", name = ").push_bind(name.as_str());
                    }
                    if let Some(description) = &changes.description {
                        builder
                            .push(", description = ")
                            .push_bind(description.as_str());
                    }
                    if let Some(permissions) = &changes.permissions {
                        builder
                            .push(", permissions = ")
                            .push_bind(grants_json(permissions));
                    }
                    if let Some(roles) = &changes.roles {
                        builder
                            .push(", roles = ")
                            .push_bind(strings_json(roles.iter().map(RoleName::as_str)));
                    }
                    if let Some(allowed_ips) = &changes.allowed_ips {
                        let networks = allowed_ips.to_strings();
                        builder
                            .push(", allowed_ips = ")
                            .push_bind(strings_json(networks.iter().map(String::as_str)));
                    }
                    if let Some(rate_limit) = changes.rate_limit_per_minute {
                        builder
                            .push(", rate_limit_per_minute = ")
                            .push_bind(i64::from(rate_limit));
                    }
                    if let Some(new_expires_at) = changes.expires_at {
                        builder
                            .push(", expires_at = ")
                            .push_bind(micros(new_expires_at));
                    }
                    if let Some(require_signature) = changes.require_signature {
                        builder
                            .push(", require_signature = ")
                            .push_bind(require_signature);
                    }
                    if let Some(metadata) = &changes.metadata {
                        builder
                            .push(", metadata = ")
                            .push_bind($crate::store::codec::metadata_json(metadata));
                    }
                    if let Some(credits) = &changes.credits {
                        let credits = credits.map(|grant| grant.starting(update.updated_at));
                        let stored = StoredCredits::of(credits.as_ref());
                        builder
                            .push(", credits_remaining = ")
                            .push_bind(stored.remaining)
                            .push(", credits_refill_amount = ")
                            .push_bind(stored.refill_amount)
                            .push(", credits_refill_interval = ")
                            .push_bind(stored.refill_interval)
                            .push(", credits_refilled_at = ")
                            .push_bind(stored.refilled_at);
                    }
                    match update.signing_key {
                        SigningKeyUpdate::Keep => {}
                        SigningKeyUpdate::Replace(key) => {
                            builder.push(", signing_key = ").push_bind(key.as_bytes());
                        }
                        SigningKeyUpdate::Remove => {
                            builder.push(", signing_key = NULL");
                        }
                    }
                    builder
                        .push(" WHERE id = ")
                        .push_bind(update.id.as_str())
                        .push(concat!(" RETURNING ", token_columns!("")));
                    let row: TokenRow = builder
                        .build_query_as()
                        .fetch_one(&mut *transaction)
                        .await
                        .map_err(map_error)?;
                    Self::commit_with_token_event(transaction, audit, row, EventType::TokenUpdated, update.updated_at)
                        .await
                }

                async fn rotate_token(
                    &self,
                    rotation: &Rotation,
                    audit: &AuditEvent,
                ) -> Result<Token, StoreError> {
                    let rotated_at = micros(rotation.rotated_at);
                    let mut transaction = self.begin_write().await?;

                    // Locks the token first, so two concurrent rotations cannot both retire the
                    // same secret and one of them lose its new one.
                    let current: Option<LockedForRotation> = sqlx::query_as(
                        "UPDATE tokens SET updated_at = updated_at WHERE id = $1 \
                         RETURNING secret_hash, revoked_at, signing_key, tenant, owner_id, \
                         expires_at",
                    )
                    .bind(rotation.id.as_str())
                    .fetch_optional(&mut *transaction)
                    .await
                    .map_err(map_error)?;
                    let Some(current) = current else {
                        return Err(StoreError::NotFound("token"));
                    };
                    if current.revoked_at.is_some() {
                        return Err(StoreError::TokenRevoked);
                    }
                    // The new expiry always lies ahead, so an expired token comes back to life.
                    if current.expires_at <= rotated_at {
                        Self::ensure_room_to_revive(
                            &mut transaction,
                            &current.tenant,
                            &current.owner_id,
                            rotated_at,
                            rotation.max_live_per_owner,
                        )
                        .await?;
                    }

                    // Retired secrets long past their grace are forgotten, and those past it no
                    // longer need the signing key that went with them: only their hash still
                    // serves, to recognise a leaked old secret.
                    sqlx::query(
                        "DELETE FROM retired_secrets WHERE token_id = $1 AND grace_until < $2",
                    )
                    .bind(rotation.id.as_str())
                    .bind(micros(rotation.forget_retired_before))
                    .execute(&mut *transaction)
                    .await
                    .map_err(map_error)?;
                    sqlx::query(
                        "UPDATE retired_secrets SET signing_key = NULL \
                         WHERE token_id = $1 AND grace_until <= $2 AND signing_key IS NOT NULL",
                    )
                    .bind(rotation.id.as_str())
                    .bind(rotated_at)
                    .execute(&mut *transaction)
                    .await
                    .map_err(map_error)?;
                    let (old_secret_hash, old_signing_key) =
                        (current.secret_hash, current.signing_key);

                    // The old secret keeps the signing key it was issued with.
                    sqlx::query(
                        "INSERT INTO retired_secrets \
                         (secret_hash, token_id, retired_at, grace_until, signing_key) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(old_secret_hash)
                    .bind(rotation.id.as_str())
                    .bind(rotated_at)
                    .bind(micros(rotation.old_secret_grace_until))
                    .bind(old_signing_key)
                    .execute(&mut *transaction)
                    .await
                    .map_err(map_error)?;

                    sqlx::query("UPDATE tokens SET signing_key = $2 WHERE id = $1")
                        .bind(rotation.id.as_str())
                        .bind(
                            rotation
                                .new_signing_key
                                .as_ref()
                                .map(SealedSigningKey::as_bytes),
                        )
                        .execute(&mut *transaction)
                        .await
                        .map_err(map_error)?;

                    // Rotation clears usage history: the flush of any replica drops calls checked
                    // under the previous rotation (see usage_sql.rs).
                    let row: TokenRow = sqlx::query_as(concat!(
                        "UPDATE tokens SET secret_hash = $2, secret_hint = $3, rotated_at = $4, \
                         updated_at = $4, expires_at = $5, last_used_at = NULL, \
                         version = version + 1, imported = FALSE \
                         WHERE id = $1 RETURNING ",
                        token_columns!("")
                    ))
                    .bind(rotation.id.as_str())
                    .bind(rotation.new_secret_hash.0.as_slice())
                    .bind(&rotation.new_secret_hint)
                    .bind(rotated_at)
                    .bind(micros(rotation.new_expires_at))
                    .fetch_one(&mut *transaction)
                    .await
                    .map_err(map_error)?;
                    for statement in $crate::store::usage_sql::CLEAR_USAGE {
                        sqlx::query(statement)
                            .bind(rotation.id.as_str())
                            .execute(&mut *transaction)
                            .await
                            .map_err(map_error)?;
                    }

                    Self::commit_with_token_event(transaction, audit, row, EventType::TokenRotated, rotation.rotated_at)
                        .await
                }

                async fn revoke_token(
                    &self,
                    id: &TokenId,
                    at: DateTime<Utc>,
                    audit: &AuditEvent,
                ) -> Result<Token, StoreError> {
                    let mut transaction = self.begin_write().await?;
                    let row: Option<TokenRow> = sqlx::query_as(concat!(
                        "UPDATE tokens SET revoked_at = $2, updated_at = $2, version = version + 1 \
                         WHERE id = $1 AND revoked_at IS NULL RETURNING ",
                        token_columns!("")
                    ))
                    .bind(id.as_str())
                    .bind(micros(at))
                    .fetch_optional(&mut *transaction)
                    .await
                    .map_err(map_error)?;
                    let Some(row) = row else {
                        return Err(Self::missing_or_revoked(&mut transaction, id).await);
                    };
                    Self::commit_with_token_event(transaction, audit, row, EventType::TokenRevoked, at).await
                }

                async fn set_suspension(
                    &self,
                    id: &TokenId,
                    suspension: Option<&Suspension>,
                    at: DateTime<Utc>,
                    audit: &AuditEvent,
                ) -> Result<Token, StoreError> {
                    let mut transaction = self.begin_write().await?;
                    let row: Option<TokenRow> = sqlx::query_as(concat!(
                        "UPDATE tokens SET suspended_at = $2, suspend_reason = $3, updated_at = $4, \
                         version = version + 1 \
                         WHERE id = $1 AND revoked_at IS NULL RETURNING ",
                        token_columns!("")
                    ))
                    .bind(id.as_str())
                    .bind(suspension.map(|suspension| micros(suspension.at)))
                    .bind(suspension.map_or("", |suspension| suspension.reason.as_str()))
                    .bind(micros(at))
                    .fetch_optional(&mut *transaction)
                    .await
                    .map_err(map_error)?;
                    let Some(row) = row else {
                        return Err(Self::missing_or_revoked(&mut transaction, id).await);
                    };
                    let event_type = if suspension.is_some() {
                        EventType::TokenSuspended
                    } else {
                        EventType::TokenResumed
                    };
                    Self::commit_with_token_event(transaction, audit, row, event_type, at).await
                }

                async fn find_credential(
                    &self,
                    hash: &SecretHash,
                ) -> Result<Option<CredentialRecord>, StoreError> {
                    // One round trip for the token, how the secret matched and the owner, whether
                    // the hash is current, retired or unknown; a second only when there are roles.
                    let row: Option<CredentialRow> = sqlx::query_as(concat!(
                        "SELECT ",
                        token_columns!("t."),
                        ", matched.grace_until AS retired_grace_until, \
                         matched.signing_key AS signing_key, \
                         p.permissions AS owner_permissions, p.disabled AS owner_disabled, \
                         p.rate_limit_per_minute AS owner_rate_limit_per_minute, \
                         p.created_at AS owner_created_at, p.updated_at AS owner_updated_at, ",
                        policy_columns!("tp."),
                        " FROM (\
                             SELECT id AS token_id, NULL AS grace_until, signing_key \
                             FROM tokens WHERE secret_hash = $1 \
                             UNION ALL \
                             SELECT token_id, grace_until, signing_key \
                             FROM retired_secrets WHERE secret_hash = $1\
                         ) AS matched \
                         JOIN tokens AS t ON t.id = matched.token_id \
                         LEFT JOIN principals AS p ON p.tenant = t.tenant AND p.id = t.owner_id \
                         LEFT JOIN tenant_policies AS tp ON tp.tenant = t.tenant \
                         LIMIT 1"
                    ))
                    .bind(hash.0.as_slice())
                    .fetch_optional(&self.check_pool)
                    .await
                    .map_err(map_error)?;
                    let Some(row) = row else {
                        return Ok(None);
                    };
                    let mut record = row.into_record()?;
                    if !record.token.roles.is_empty() {
                        record.roles = Self::roles_named(
                            &self.check_pool,
                            &record.token.tenant,
                            &record.token.roles,
                        )
                        .await?;
                    }
                    Ok(Some(record))
                }

                async fn upsert_principal(
                    &self,
                    principal: &Principal,
                    audit: &AuditEvent,
                ) -> Result<Principal, StoreError> {
                    let mut transaction = self.begin_write().await?;
                    let row: PrincipalRow = sqlx::query_as(
                        "INSERT INTO principals \
                         (tenant, id, permissions, disabled, rate_limit_per_minute, \
                         created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7) \
                         ON CONFLICT (tenant, id) DO UPDATE SET \
                         permissions = excluded.permissions, \
                         disabled = excluded.disabled, \
                         rate_limit_per_minute = excluded.rate_limit_per_minute, \
                         updated_at = excluded.updated_at \
                         RETURNING tenant, id, permissions, disabled, rate_limit_per_minute, \
                         created_at, updated_at",
                    )
                    .bind(principal.tenant.as_str())
                    .bind(principal.id.as_str())
                    .bind(grants_json(&principal.permissions))
                    .bind(principal.disabled)
                    .bind(principal.rate_limit_per_minute.map(i64::from))
                    .bind(micros(principal.created_at))
                    .bind(micros(principal.updated_at))
                    .fetch_one(&mut *transaction)
                    .await
                    .map_err(map_error)?;
                    let principal = row.into_principal()?;
                    let event = NewEvent::principal(&principal, principal.updated_at);
                    Self::commit_with_audit_and_events(transaction, audit, &[event]).await?;
                    Ok(principal)
                }

                async fn get_principal(
                    &self,
                    tenant: &Tenant,
                    id: &PrincipalId,
                ) -> Result<Principal, StoreError> {
                    let row: Option<PrincipalRow> = sqlx::query_as(
                        "SELECT tenant, id, permissions, disabled, rate_limit_per_minute, \
                         created_at, updated_at FROM principals WHERE tenant = $1 AND id = $2",
                    )
                    .bind(tenant.as_str())
                    .bind(id.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_error)?;
                    row.ok_or(StoreError::NotFound("principal"))?
                        .into_principal()
                }

                async fn upsert_role(
                    &self,
                    role: &Role,
                    audit: &AuditEvent,
                ) -> Result<Role, StoreError> {
                    let mut transaction = self.begin_write().await?;
                    let row: RoleRow = sqlx::query_as(
                        "INSERT INTO roles (tenant, name, permissions, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (tenant, name) DO UPDATE SET \
                         permissions = excluded.permissions, \
                         updated_at = excluded.updated_at \
                         RETURNING tenant, name, permissions, created_at, updated_at",
                    )
                    .bind(role.tenant.as_str())
                    .bind(role.name.as_str())
                    .bind(grants_json(&role.permissions))
                    .bind(micros(role.created_at))
                    .bind(micros(role.updated_at))
                    .fetch_one(&mut *transaction)
                    .await
                    .map_err(map_error)?;
                    Self::commit_with_audit(transaction, audit).await?;
                    row.into_role()
                }

                async fn list_roles(&self, tenant: &Tenant) -> Result<Vec<Role>, StoreError> {
                    let rows: Vec<RoleRow> = sqlx::query_as(
                        "SELECT tenant, name, permissions, created_at, updated_at FROM roles \
                         WHERE tenant = $1 ORDER BY name",
                    )
                    .bind(tenant.as_str())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_error)?;
                    rows.into_iter().map(RoleRow::into_role).collect()
                }

                async fn get_roles(
                    &self,
                    tenant: &Tenant,
                    names: &[RoleName],
                ) -> Result<Vec<Role>, StoreError> {
                    Self::roles_named(&self.pool, tenant, names).await
                }

                async fn set_api_status(
                    &self,
                    status: &ApiStatus,
                    audit: &AuditEvent,
                ) -> Result<ApiStatus, StoreError> {
                    // A status is always written with the instant it was set.
                    let updated_at = status.updated_at.ok_or_else(|| {
                        StoreError::Internal("an api status is set without updated_at".to_owned())
                    })?;
                    let mut transaction = self.begin_write().await?;
                    let row: ApiStatusRow = sqlx::query_as(
                        "INSERT INTO api_status (scope, online, message, updated_at) \
                         VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (scope) DO UPDATE SET online = excluded.online, \
                         message = excluded.message, updated_at = excluded.updated_at \
                         RETURNING scope, online, message, updated_at",
                    )
                    .bind(status.scope.as_str())
                    .bind(status.online)
                    .bind(&status.message)
                    .bind(micros(updated_at))
                    .fetch_one(&mut *transaction)
                    .await
                    .map_err(map_error)?;
                    let status = row.into_api_status()?;
                    let event = NewEvent::api_status(&status, updated_at);
                    Self::commit_with_audit_and_events(transaction, audit, &[event]).await?;
                    Ok(status)
                }

                async fn get_api_status(&self, scope: &ApiScope) -> Result<ApiStatus, StoreError> {
                    let row: Option<ApiStatusRow> = sqlx::query_as(
                        "SELECT scope, online, message, updated_at FROM api_status \
                         WHERE scope = $1",
                    )
                    .bind(scope.as_str())
                    .fetch_optional(&self.check_pool)
                    .await
                    .map_err(map_error)?;
                    match row {
                        Some(row) => row.into_api_status(),
                        None => Ok(ApiStatus::never_set(scope.clone())),
                    }
                }

                async fn offline_api_statuses(&self) -> Result<Vec<ApiStatus>, StoreError> {
                    let rows: Vec<ApiStatusRow> = sqlx::query_as(
                        "SELECT scope, online, message, updated_at FROM api_status \
                         WHERE NOT online ORDER BY scope",
                    )
                    // On the Check path: the bulkhead's Check pool.
                    .fetch_all(&self.check_pool)
                    .await
                    .map_err(map_error)?;
                    rows.into_iter().map(ApiStatusRow::into_api_status).collect()
                }

                async fn list_audit_events(
                    &self,
                    tenants: Option<&[Tenant]>,
                    filter: &$crate::store::AuditFilter,
                    after_id: i64,
                    limit: u32,
                ) -> Result<Vec<AuditEvent>, StoreError> {
                    // Ids are taken when an event is inserted, but events become visible when
                    // their transaction commits, which may be later than a transaction that took
                    // a larger id. A reader that returned the larger one would page past the
                    // smaller for good. So the page is read only once no audit insert is in
                    // flight (on Postgres a SHARE lock, which waits for every open transaction
                    // that inserted into the table and holds new inserts back for the length of
                    // this one read): then every id below the largest one seen belongs to a
                    // finished transaction.
                    let mut transaction = self.pool.begin().await.map_err(map_error)?;
                    sqlx::query($wait_for_audit_writers)
                        .execute(&mut *transaction)
                        .await
                        .map_err(map_error)?;
                    let mut builder = sqlx::QueryBuilder::<$database>::new(
                        "SELECT id, time, actor, action, tenant, token_id, principal_id, summary, \
                         admin_key FROM audit_events WHERE id > ",
                    );
                    builder.push_bind(after_id);
                    if let Some(tenants) = tenants {
                        Self::push_tenant_filter(&mut builder, tenants);
                    }
                    let exact = [
                        ("token_id", filter.token_id.as_ref().map(TokenId::as_str)),
                        ("principal_id", filter.principal_id.as_ref().map(PrincipalId::as_str)),
                        ("action", filter.action.as_deref()),
                        ("actor", filter.actor.as_deref()),
                    ];
                    for (column, value) in exact {
                        if let Some(value) = value {
                            builder
                                .push(" AND ")
                                .push(column)
                                .push(" = ")
                                .push_bind(value.to_owned());
                        }
                    }
                    builder
                        .push(" ORDER BY id LIMIT ")
                        .push_bind(i64::from(limit));
                    let rows: Vec<AuditRow> = builder
                        .build_query_as()
                        .fetch_all(&mut *transaction)
                        .await
                        .map_err(map_error)?;
                    transaction.commit().await.map_err(map_error)?;
                    rows.into_iter().map(AuditRow::into_event).collect()
                }

                async fn create_admin_key(
                    &self,
                    new: &NewAdminKey,
                    audit: &AuditEvent,
                ) -> Result<AdminKey, StoreError> {
                    let mut transaction = self.begin_write().await?;
                    Self::insert_admin_key_row(&mut transaction, new).await?;
                    Self::commit_with_audit(transaction, audit).await?;
                    Ok(new.key.clone())
                }

                async fn get_admin_key(&self, id: &AdminKeyId) -> Result<AdminKey, StoreError> {
                    let row: Option<AdminKeyRow> = sqlx::query_as(concat!(
                        "SELECT ",
                        admin_key_columns!(),
                        " FROM admin_keys WHERE id = $1"
                    ))
                    .bind(id.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_error)?;
                    row.ok_or(StoreError::NotFound("admin key"))?
                        .into_admin_key()
                }

                async fn list_admin_keys(
                    &self,
                    include_revoked: bool,
                    after: Option<&AdminKeyId>,
                    limit: u32,
                ) -> Result<Vec<AdminKey>, StoreError> {
                    let mut builder = sqlx::QueryBuilder::<$database>::new(concat!(
                        "SELECT ",
                        admin_key_columns!(),
                        " FROM admin_keys WHERE id > "
                    ));
                    builder.push_bind(after.map(AdminKeyId::as_str).unwrap_or("").to_owned());
                    if !include_revoked {
                        builder.push(" AND revoked_at IS NULL");
                    }
                    builder
                        .push(" ORDER BY id LIMIT ")
                        .push_bind(i64::from(limit));
                    let rows: Vec<AdminKeyRow> = builder
                        .build_query_as()
                        .fetch_all(&self.pool)
                        .await
                        .map_err(map_error)?;
                    rows.into_iter().map(AdminKeyRow::into_admin_key).collect()
                }

                async fn find_admin_key(
                    &self,
                    hash: &SecretHash,
                ) -> Result<Option<AdminKey>, StoreError> {
                    let row: Option<AdminKeyRow> = sqlx::query_as(concat!(
                        "SELECT ",
                        admin_key_columns!(),
                        " FROM admin_keys WHERE key_hash = $1"
                    ))
                    .bind(hash.0.as_slice())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_error)?;
                    row.map(AdminKeyRow::into_admin_key).transpose()
                }

                async fn revoke_admin_key(
                    &self,
                    id: &AdminKeyId,
                    at: DateTime<Utc>,
                    audit: &AuditEvent,
                ) -> Result<AdminKey, StoreError> {
                    let mut transaction = self.begin_write().await?;
                    let revoked: Option<AdminKeyRow> = sqlx::query_as(concat!(
                        "UPDATE admin_keys SET revoked_at = $2 \
                         WHERE id = $1 AND revoked_at IS NULL RETURNING ",
                        admin_key_columns!()
                    ))
                    .bind(id.as_str())
                    .bind(micros(at))
                    .fetch_optional(&mut *transaction)
                    .await
                    .map_err(map_error)?;
                    match revoked {
                        Some(row) => {
                            Self::commit_with_audit(transaction, audit).await?;
                            row.into_admin_key()
                        }
                        // Already revoked (unchanged, nothing audited) or not there at all.
                        None => {
                            drop(transaction);
                            self.get_admin_key(id).await
                        }
                    }
                }

                async fn touch_admin_key(
                    &self,
                    id: &AdminKeyId,
                    at: DateTime<Utc>,
                ) -> Result<(), StoreError> {
                    sqlx::query("UPDATE admin_keys SET last_used_at = $2 WHERE id = $1")
                        .bind(id.as_str())
                        .bind(micros(at))
                        .execute(&self.pool)
                        .await
                        .map_err(map_error)?;
                    Ok(())
                }

                async fn count_admin_keys(&self) -> Result<u64, StoreError> {
                    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM admin_keys")
                        .fetch_one(&self.pool)
                        .await
                        .map_err(map_error)?;
                    u64::try_from(count)
                        .map_err(|_| StoreError::Internal("negative admin key count".to_owned()))
                }

                async fn bootstrap_admin_key(
                    &self,
                    new: &NewAdminKey,
                    audit: &AuditEvent,
                    persist: PersistKey<'_>,
                ) -> Result<Bootstrapped, StoreError> {
                    let mut transaction = self.begin_write().await?;
                    // The claim: a concurrent bootstrap waits on this row (Postgres: its primary
                    // key; SQLite: the write lock `begin_write` took) until this transaction
                    // ends, then finds it taken. A rollback frees it for the next.
                    let claimed: Option<i64> = sqlx::query_scalar(
                        "INSERT INTO bootstrap (singleton, created_at) VALUES (1, $1) \
                         ON CONFLICT (singleton) DO NOTHING RETURNING created_at",
                    )
                    .bind(micros(new.key.created_at))
                    .fetch_optional(&mut *transaction)
                    .await
                    .map_err(map_error)?;
                    if claimed.is_none() {
                        return Ok(Bootstrapped::AlreadyDone);
                    }
                    // A database created before the claim existed may hold keys without a claim.
                    let keys: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM admin_keys")
                        .fetch_one(&mut *transaction)
                        .await
                        .map_err(map_error)?;
                    if keys > 0 {
                        transaction.commit().await.map_err(map_error)?;
                        return Ok(Bootstrapped::AlreadyDone);
                    }
                    Self::insert_admin_key_row(&mut transaction, new).await?;
                    Self::insert_audit_row(&mut transaction, audit).await?;
                    if let Err(error) = persist.await {
                        return Ok(Bootstrapped::NotPersisted(error));
                    }
                    transaction.commit().await.map_err(map_error)?;
                    Ok(Bootstrapped::Created)
                }

                async fn insert_audit_event(&self, event: &AuditEvent) -> Result<(), StoreError> {
                    let mut connection = self.pool.acquire().await.map_err(map_error)?;
                    Self::insert_audit_row(&mut connection, event).await
                }

                async fn report_retired_secret_use(
                    &self,
                    event: &AuditEvent,
                ) -> Result<bool, StoreError> {
                    let token_id = event.token_id.as_ref().ok_or_else(|| {
                        StoreError::Internal("a retired secret report names no token".to_owned())
                    })?;
                    let minute = event.time.timestamp().div_euclid(60);
                    let mut transaction = self.begin_write().await?;
                    // The primary key decides: of concurrent reports for one token and minute, one
                    // inserts, the others wait for it to commit and then insert nothing.
                    let claimed = sqlx::query(
                        "INSERT INTO retired_secret_reports (token_id, minute) VALUES ($1, $2) \
                         ON CONFLICT (token_id, minute) DO NOTHING",
                    )
                    .bind(token_id.as_str())
                    .bind(minute)
                    .execute(&mut *transaction)
                    .await
                    .map_err(map_error)?
                    .rows_affected();
                    if claimed == 0 {
                        return Ok(false);
                    }
                    sqlx::query(
                        "DELETE FROM retired_secret_reports WHERE token_id = $1 AND minute < $2",
                    )
                    .bind(token_id.as_str())
                    .bind(minute)
                    .execute(&mut *transaction)
                    .await
                    .map_err(map_error)?;
                    let token: Option<TokenRow> = sqlx::query_as(concat!(
                        "SELECT ",
                        token_columns!(""),
                        " FROM tokens WHERE id = $1"
                    ))
                    .bind(token_id.as_str())
                    .fetch_optional(&mut *transaction)
                    .await
                    .map_err(map_error)?;
                    let mut leaked = Vec::new();
                    if let Some(token) = token {
                        let mut leak = serde_json::Map::new();
                        leak.insert(
                            "leak".to_owned(),
                            serde_json::json!({ "source": "retired_secret" }),
                        );
                        leaked.push(NewEvent::token_with(
                            EventType::TokenLeaked,
                            &token.into_token()?,
                            event.time,
                            leak,
                        ));
                    }
                    Self::commit_with_audit_and_events(transaction, event, &leaked).await?;
                    Ok(true)
                }

                async fn list_events(
                    &self,
                    query: &$crate::store::EventQuery,
                ) -> Result<Vec<$crate::domain::event::Event>, StoreError> {
                    // Nothing newer than the cursor: answered without the writers' wait below,
                    // so an idle watcher's polls never hold a write back.
                    let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM events")
                        .fetch_one(&self.pool)
                        .await
                        .map_err(map_error)?;
                    if newest.is_none_or(|newest| newest <= query.after_seq) {
                        return Ok(Vec::new());
                    }
                    // As in `list_audit_events`: a larger seq may commit before a smaller one,
                    // so the page is read only once no event insert is in flight.
                    let mut transaction = self.pool.begin().await.map_err(map_error)?;
                    sqlx::query($wait_for_event_writers)
                        .execute(&mut *transaction)
                        .await
                        .map_err(map_error)?;
                    let mut builder = sqlx::QueryBuilder::<$database>::new(concat!(
                        "SELECT ",
                        event_columns!(),
                        " FROM events WHERE seq > "
                    ));
                    builder.push_bind(query.after_seq);
                    if let Some(tenants) = &query.tenants {
                        Self::push_tenant_filter(&mut builder, tenants);
                    }
                    if !query.types.is_empty() {
                        builder.push(" AND type IN (");
                        let mut names = builder.separated(", ");
                        for kind in &query.types {
                            names.push_bind(kind.as_str());
                        }
                        builder.push(")");
                    }
                    builder
                        .push(" ORDER BY seq LIMIT ")
                        .push_bind(i64::from(query.limit));
                    let rows: Vec<$crate::store::codec::EventRow> = builder
                        .build_query_as()
                        .fetch_all(&mut *transaction)
                        .await
                        .map_err(map_error)?;
                    transaction.commit().await.map_err(map_error)?;
                    rows.into_iter().map(|row| row.into_event()).collect()
                }

                async fn event_seq(
                    &self,
                    id: &$crate::domain::event::EventId,
                ) -> Result<Option<i64>, StoreError> {
                    sqlx::query_scalar("SELECT seq FROM events WHERE id = $1")
                        .bind(id.as_str())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(map_error)
                }

                async fn last_event_seq(&self) -> Result<i64, StoreError> {
                    let mut transaction = self.pool.begin().await.map_err(map_error)?;
                    sqlx::query($wait_for_event_writers)
                        .execute(&mut *transaction)
                        .await
                        .map_err(map_error)?;
                    let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM events")
                        .fetch_one(&mut *transaction)
                        .await
                        .map_err(map_error)?;
                    transaction.commit().await.map_err(map_error)?;
                    Ok(newest.unwrap_or(0))
                }

                async fn prune_events(
                    &self,
                    before: DateTime<Utc>,
                    limit: u32,
                ) -> Result<u64, StoreError> {
                    let mut transaction = self.begin_write().await?;
                    let seqs: Vec<i64> = sqlx::query_scalar(
                        "SELECT seq FROM events WHERE time < $1 ORDER BY seq LIMIT $2",
                    )
                    .bind(micros(before))
                    .bind(i64::from(limit))
                    .fetch_all(&mut *transaction)
                    .await
                    .map_err(map_error)?;
                    // Exactly the events selected: those before the cutoff up to the last one.
                    if let Some(last) = seqs.last() {
                        for statement in [
                            "DELETE FROM webhook_deliveries WHERE event_seq IN \
                             (SELECT seq FROM events WHERE seq <= $1 AND time < $2)",
                            "DELETE FROM events WHERE seq <= $1 AND time < $2",
                        ] {
                            sqlx::query(statement)
                                .bind(last)
                                .bind(micros(before))
                                .execute(&mut *transaction)
                                .await
                                .map_err(map_error)?;
                        }
                    }
                    sqlx::query("DELETE FROM token_expiry_notices WHERE expires_at < $1")
                        .bind(micros(before))
                        .execute(&mut *transaction)
                        .await
                        .map_err(map_error)?;
                    transaction.commit().await.map_err(map_error)?;
                    Ok(seqs.len() as u64)
                }

                async fn send_expiry_notices(
                    &self,
                    now: DateTime<Utc>,
                    limit: u32,
                ) -> Result<u64, StoreError> {
                    use $crate::domain::event::ExpiryNotice;
                    let mut transaction = self.begin_write().await?;
                    let mut sent = 0u64;
                    for notice in ExpiryNotice::ALL {
                        let (from, until) = notice.window(now);
                        let rows: Vec<TokenRow> = sqlx::query_as(concat!(
                            "SELECT ",
                            token_columns!("t."),
                            " FROM tokens t WHERE t.revoked_at IS NULL \
                             AND t.expires_at > $1 AND t.expires_at <= $2 \
                             AND NOT EXISTS (SELECT 1 FROM token_expiry_notices n \
                             WHERE n.token_id = t.id AND n.kind = $3 AND n.expires_at = t.expires_at) \
                             ORDER BY t.expires_at LIMIT $4"
                        ))
                        .bind(micros(from))
                        .bind(micros(until))
                        .bind(notice.as_str())
                        .bind(i64::from(limit))
                        .fetch_all(&mut *transaction)
                        .await
                        .map_err(map_error)?;
                        for row in rows {
                            let token = row.into_token()?;
                            // The key decides between replicas scanning at once: the second
                            // waits for the first to commit, then inserts nothing and sends
                            // nothing.
                            let claimed = sqlx::query(
                                "INSERT INTO token_expiry_notices \
                                 (token_id, kind, expires_at, sent_at) VALUES ($1, $2, $3, $4) \
                                 ON CONFLICT (token_id, kind, expires_at) DO NOTHING",
                            )
                            .bind(token.id.as_str())
                            .bind(notice.as_str())
                            .bind(micros(token.expires_at))
                            .bind(micros(now))
                            .execute(&mut *transaction)
                            .await
                            .map_err(map_error)?
                            .rows_affected();
                            if claimed == 1 {
                                let event = notice.event(&token, now);
                                Self::insert_event_row(&mut transaction, &event).await?;
                                sent += 1;
                            }
                        }
                    }
                    transaction.commit().await.map_err(map_error)?;
                    Ok(sent)
                }

                async fn secret_hashes(&self, id: &TokenId) -> Result<Vec<SecretHash>, StoreError> {
                    let hashes: Vec<Vec<u8>> = sqlx::query_scalar(
                        "SELECT secret_hash FROM tokens WHERE id = $1 \
                         UNION ALL \
                         SELECT secret_hash FROM retired_secrets WHERE token_id = $1",
                    )
                    .bind(id.as_str())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_error)?;
                    // Every token has a current secret: no rows means no token.
                    if hashes.is_empty() {
                        return Err(StoreError::NotFound("token"));
                    }
                    hashes
                        .iter()
                        .map(|hash| {
                            SecretHash::from_slice(hash).ok_or_else(|| corrupt("secret_hash"))
                        })
                        .collect()
                }

                async fn write_usage(&self, batch: &UsageBatch) -> Result<(), StoreError> {
                    self.write_usage_batch(batch).await
                }

                async fn read_usage(&self, query: &UsageQuery) -> Result<UsageFigures, StoreError> {
                    self.read_usage_figures(query).await
                }

                async fn prune_usage(
                    &self,
                    cutoffs: &UsageCutoffs,
                    limit: u32,
                ) -> Result<u64, StoreError> {
                    self.prune_usage_rows(cutoffs, limit).await
                }

                async fn count_tokens_needing_attention(
                    &self,
                    now: DateTime<Utc>,
                    expiring_before: DateTime<Utc>,
                    unused_since: DateTime<Utc>,
                ) -> Result<TokensNeedingAttention, StoreError> {
                    self.count_tokens_for_attention(now, expiring_before, unused_since)
                        .await
                }

                async fn publish(&self, invalidation: &Invalidation) -> Result<(), StoreError> {
                    self.publish_invalidation(invalidation).await
                }

                fn watch_invalidations(
                    &self,
                    sink: Arc<dyn InvalidationSink>,
                ) -> Option<tokio::task::JoinHandle<()>> {
                    self.watch(sink)
                }

                // Principals and roles beyond upsert (issue 13).

                async fn update_principal(
                    &self,
                    tenant: &Tenant,
                    id: &PrincipalId,
                    changes: &PrincipalChanges,
                    updated_at: DateTime<Utc>,
                    audit: &AuditEvent,
                ) -> Result<Principal, StoreError> {
                    let mut transaction = self.begin_write().await?;
                    // Only the columns of the mask: a concurrent update of other fields keeps
                    // its values.
                    let mut builder = sqlx::QueryBuilder::<$database>::new(
                        "UPDATE principals SET updated_at = ",
                    );
                    builder.push_bind(micros(updated_at));
                    if let Some(permissions) = &changes.permissions {
                        builder
                            .push(", permissions = ")
                            .push_bind(grants_json(permissions));
                    }
                    if let Some(disabled) = changes.disabled {
                        builder.push(", disabled = ").push_bind(disabled);
                    }
                    if let Some(rate_limit) = changes.rate_limit_per_minute {
                        builder
                            .push(", rate_limit_per_minute = ")
                            .push_bind(rate_limit.map(i64::from));
                    }
                    builder
                        .push(" WHERE tenant = ")
                        .push_bind(tenant.as_str())
                        .push(" AND id = ")
                        .push_bind(id.as_str())
                        .push(
                            " RETURNING tenant, id, permissions, disabled, \
                             rate_limit_per_minute, created_at, updated_at",
                        );
                    let row: Option<PrincipalRow> = builder
                        .build_query_as()
                        .fetch_optional(&mut *transaction)
                        .await
                        .map_err(map_error)?;
                    let row = row.ok_or(StoreError::NotFound("principal"))?;
                    let principal = row.into_principal()?;
                    let event = NewEvent::principal(&principal, updated_at);
                    Self::commit_with_audit_and_events(transaction, audit, &[event]).await?;
                    Ok(principal)
                }

                async fn list_principals(
                    &self,
                    tenant: &Tenant,
                    after: Option<&PrincipalId>,
                    limit: u32,
                ) -> Result<Vec<Principal>, StoreError> {
                    let mut builder = sqlx::QueryBuilder::<$database>::new(
                        "SELECT tenant, id, permissions, disabled, rate_limit_per_minute, \
                         created_at, updated_at FROM principals WHERE tenant = ",
                    );
                    builder.push_bind(tenant.as_str());
                    if let Some(after) = after {
                        builder.push(" AND id > ").push_bind(after.as_str());
                    }
                    builder
                        .push(" ORDER BY id LIMIT ")
                        .push_bind(i64::from(limit));
                    let rows: Vec<PrincipalRow> = builder
                        .build_query_as()
                        .fetch_all(&self.pool)
                        .await
                        .map_err(map_error)?;
                    rows.into_iter().map(PrincipalRow::into_principal).collect()
                }

                async fn checkpoint(&self) -> Result<(), StoreError> {
                    self.checkpoint_on_close().await
                }

                async fn spend_credits(
                    &self,
                    id: &TokenId,
                    cost: u32,
                    now: DateTime<Utc>,
                ) -> Result<CreditSpend, StoreError> {
                    // `credit_take!` with the cost as both the amount and the balance needed.
                    let spent: Option<CreditTake> = sqlx::query_as(credit_take!())
                        .bind(id.as_str())
                        .bind(i64::from(cost))
                        .bind(micros(now))
                        .bind(i64::from(cost))
                        .fetch_optional(&self.check_pool)
                        .await
                        .map_err(map_error)?;
                    if let Some(take) = spent {
                        // The credits are spent whatever becomes of the notice: its failure must not
                        // turn a spend that committed into an error (the Check would be refused
                        // with its credits gone). The next low take sends it instead.
                        if let Err(error) = self.note_low_credits(id, &take, now).await {
                            tracing::warn!(%error, "credits.low event not written");
                        }
                        let (remaining, _, _, _) = take;
                        return Ok(CreditSpend::Spent {
                            remaining: u64::try_from(remaining)
                                .map_err(|_| corrupt("tokens.credits_remaining"))?,
                        });
                    }
                    // Too few, or no credits at all: read what is there (off the allowed path).
                    let stored: Option<StoredCredits> = sqlx::query_as(
                        "SELECT credits_remaining, credits_refill_amount, \
                         credits_refill_interval, credits_refilled_at FROM tokens WHERE id = $1",
                    )
                    .bind(id.as_str())
                    .fetch_optional(&self.check_pool)
                    .await
                    .map_err(map_error)?;
                    match stored.map(StoredCredits::into_credits).transpose()?.flatten() {
                        Some(credits) => Ok(CreditSpend::Exhausted {
                            remaining: credits.at(now).remaining,
                        }),
                        None => Ok(CreditSpend::Unmetered),
                    }
                }

                async fn lease_credits(
                    &self,
                    id: &TokenId,
                    amount: u64,
                    min_balance: u64,
                    now: DateTime<Utc>,
                ) -> Result<Option<CreditLease>, StoreError> {
                    let bound = |n: u64| i64::try_from(n.min(MAX_CREDITS)).unwrap_or(i64::MAX);
                    let taken: Option<CreditTake> = sqlx::query_as(credit_take!())
                        .bind(id.as_str())
                        .bind(bound(amount))
                        .bind(micros(now))
                        .bind(bound(min_balance.max(amount)))
                        .fetch_optional(&self.check_pool)
                        .await
                        .map_err(map_error)?;
                    if let Some(take) = &taken {
                        // The credits are spent whatever becomes of the notice: its failure must not
                        // turn a spend that committed into an error (the Check would be refused
                        // with its credits gone). The next low take sends it instead.
                        if let Err(error) = self.note_low_credits(id, take, now).await {
                            tracing::warn!(%error, "credits.low event not written");
                        }
                    }
                    taken
                        .map(|(remaining, period, _, _)| {
                            Ok(CreditLease {
                                remaining: u64::try_from(remaining)
                                    .map_err(|_| corrupt("tokens.credits_remaining"))?,
                                period: instant(period)?,
                            })
                        })
                        .transpose()
                }

                async fn return_credits(
                    &self,
                    id: &TokenId,
                    amount: u64,
                    period: DateTime<Utc>,
                    now: DateTime<Utc>,
                ) -> Result<bool, StoreError> {
                    // Only within the lease's period: no refill since (`credits_refilled_at`
                    // unchanged, which an UpdateToken of the credits also moves) and none due.
                    let returned = sqlx::query(
                        "UPDATE tokens SET credits_remaining = CASE \
                         WHEN credits_remaining + $2 > $5 THEN $5 ELSE credits_remaining + $2 END \
                         WHERE id = $1 AND credits_remaining IS NOT NULL \
                         AND credits_refilled_at = $4 AND (credits_refill_interval IS NULL \
                         OR $3 < credits_refilled_at + credits_refill_interval)",
                    )
                    .bind(id.as_str())
                    .bind(i64::try_from(amount.min(MAX_CREDITS)).unwrap_or(i64::MAX))
                    .bind(micros(now))
                    .bind(micros(period))
                    .bind(i64::try_from(MAX_CREDITS).unwrap_or(i64::MAX))
                    .execute(&self.pool)
                    .await
                    .map_err(map_error)?;
                    Ok(returned.rows_affected() > 0)
                }

                async fn add_credits(
                    &self,
                    id: &TokenId,
                    amount: u64,
                    now: DateTime<Utc>,
                    audit: &AuditEvent,
                ) -> Result<Token, StoreError> {
                    let mut transaction = self.begin_write().await?;
                    let row: Option<TokenRow> = sqlx::query_as(concat!(
                        "UPDATE tokens SET credits_remaining = CASE WHEN ",
                        credit_balance!(),
                        " + $2 > $4 THEN $4 ELSE ",
                        credit_balance!(),
                        " + $2 END, ",
                        credit_refilled_at!(),
                        ", version = version + 1, updated_at = $3 \
                         WHERE id = $1 AND credits_remaining IS NOT NULL AND revoked_at IS NULL \
                         RETURNING ",
                        token_columns!("")
                    ))
                    .bind(id.as_str())
                    .bind(i64::try_from(amount).unwrap_or(i64::MAX))
                    .bind(micros(now))
                    .bind(i64::try_from(MAX_CREDITS).unwrap_or(i64::MAX))
                    .fetch_optional(&mut *transaction)
                    .await
                    .map_err(map_error)?;
                    let Some(row) = row else {
                        let why: Option<(Option<i64>, Option<i64>)> = sqlx::query_as(
                            "SELECT credits_remaining, revoked_at FROM tokens WHERE id = $1",
                        )
                        .bind(id.as_str())
                        .fetch_optional(&mut *transaction)
                        .await
                        .map_err(map_error)?;
                        return Err(match why {
                            None => StoreError::NotFound("token"),
                            Some((_, Some(_))) => StoreError::TokenRevoked,
                            Some((None, None)) | Some((Some(_), None)) => StoreError::NoCredits,
                        });
                    };
                    Self::commit_with_token_event(transaction, audit, row, EventType::TokenUpdated, now)
                        .await
                }

                async fn delete_role(
                    &self,
                    tenant: &Tenant,
                    name: &RoleName,
                    audit: &AuditEvent,
                ) -> Result<Role, StoreError> {
                    let mut transaction = self.begin_write().await?;
                    // Locks the role first (on SQLite the transaction holds the write lock
                    // already), so an upsert of the same role waits for the verdict below.
                    let role: Option<RoleRow> = sqlx::query_as(
                        "UPDATE roles SET updated_at = updated_at \
                         WHERE tenant = $1 AND name = $2 \
                         RETURNING tenant, name, permissions, created_at, updated_at",
                    )
                    .bind(tenant.as_str())
                    .bind(name.as_str())
                    .fetch_optional(&mut *transaction)
                    .await
                    .map_err(map_error)?;
                    let role = role.ok_or(StoreError::NotFound("role"))?;
                    // Expired tokens count: a rotation or a new expiry makes them live again.
                    let users: i64 = sqlx::query_scalar(concat!(
                        "SELECT COUNT(*) FROM tokens \
                         WHERE tenant = $1 AND revoked_at IS NULL AND ",
                        $token_names_role
                    ))
                    .bind(tenant.as_str())
                    .bind(name.as_str())
                    .fetch_one(&mut *transaction)
                    .await
                    .map_err(map_error)?;
                    if users > 0 {
                        return Err(StoreError::RoleInUse {
                            tokens: u64::try_from(users).unwrap_or(u64::MAX),
                        });
                    }
                    sqlx::query("DELETE FROM roles WHERE tenant = $1 AND name = $2")
                        .bind(tenant.as_str())
                        .bind(name.as_str())
                        .execute(&mut *transaction)
                        .await
                        .map_err(map_error)?;
                    Self::commit_with_audit(transaction, audit).await?;
                    role.into_role()
                }

                // Tenant token policies and imports (issue 16).

                async fn get_tenant_policy(
                    &self,
                    tenant: &Tenant,
                ) -> Result<TenantPolicy, StoreError> {
                    let row: Option<PolicyRow> = sqlx::query_as(concat!(
                        "SELECT ",
                        policy_columns!(""),
                        " FROM tenant_policies WHERE tenant = $1"
                    ))
                    .bind(tenant.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_error)?;
                    match row {
                        Some(row) => Ok(row
                            .into_policy()?
                            .unwrap_or_else(|| TenantPolicy::none(tenant.clone()))),
                        None => Ok(TenantPolicy::none(tenant.clone())),
                    }
                }

                async fn set_tenant_policy(
                    &self,
                    policy: &TenantPolicy,
                    audit: &AuditEvent,
                ) -> Result<TenantPolicy, StoreError> {
                    let params = PolicyParams::of(policy);
                    let mut transaction = self.begin_write().await?;
                    let row: PolicyRow = sqlx::query_as(concat!(
                        "INSERT INTO tenant_policies (tenant, max_lifetime_seconds, \
                         default_lifetime_seconds, require_expiry, max_tokens_per_owner, \
                         allowed_permissions, require_ip_allowlist, enforce_on_existing, \
                         updated_at, leak_action) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                         ON CONFLICT (tenant) DO UPDATE SET \
                         max_lifetime_seconds = excluded.max_lifetime_seconds, \
                         default_lifetime_seconds = excluded.default_lifetime_seconds, \
                         require_expiry = excluded.require_expiry, \
                         max_tokens_per_owner = excluded.max_tokens_per_owner, \
                         allowed_permissions = excluded.allowed_permissions, \
                         require_ip_allowlist = excluded.require_ip_allowlist, \
                         enforce_on_existing = excluded.enforce_on_existing, \
                         updated_at = excluded.updated_at, \
                         leak_action = excluded.leak_action \
                         RETURNING ",
                        policy_columns!("")
                    ))
                    .bind(policy.tenant.as_str())
                    .bind(params.max_lifetime_seconds)
                    .bind(params.default_lifetime_seconds)
                    .bind(policy.require_expiry)
                    .bind(params.max_tokens_per_owner)
                    .bind(params.allowed_permissions)
                    .bind(policy.require_ip_allowlist)
                    .bind(policy.enforce_on_existing)
                    .bind(params.updated_at)
                    .bind(policy.leak_action.as_str())
                    .fetch_one(&mut *transaction)
                    .await
                    .map_err(map_error)?;
                    Self::commit_with_audit(transaction, audit).await?;
                    row.into_policy()?
                        .ok_or_else(|| corrupt("tenant_policies: upsert returned no row"))
                }

                // Leak reports (issue 17).

                async fn report_leak(
                    &self,
                    hash: &SecretHash,
                    report: &LeakReport,
                ) -> Result<LeakFinding, StoreError> {
                    let nothing = |outcome| LeakFinding { outcome, token: None };
                    // A read first, outside any transaction: a secret no token has (the common
                    // case of a flood) takes no write lock.
                    let matched: Option<(String, Option<i64>)> = sqlx::query_as(
                        "SELECT id, NULL AS grace_until FROM tokens WHERE secret_hash = $1 \
                         UNION ALL \
                         SELECT token_id, grace_until FROM retired_secrets WHERE secret_hash = $1 \
                         LIMIT 1",
                    )
                    .bind(hash.0.as_slice())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_error)?;
                    let token_id = match matched {
                        None => return Ok(nothing(LeakOutcome::Unknown)),
                        // A retired secret past its grace authenticates nothing.
                        Some((_, Some(grace_until))) if grace_until <= micros(report.at) => {
                            return Ok(nothing(LeakOutcome::Inactive));
                        }
                        Some((token_id, _)) => token_id,
                    };
                    let mut transaction = self.begin_write().await?;
                    // Locks the token (a no-op update, see the top of this file), so that of
                    // concurrent reports of one token one decides and the others see its result.
                    let row: Option<TokenRow> = sqlx::query_as(concat!(
                        "UPDATE tokens SET version = version WHERE id = $1 RETURNING ",
                        token_columns!("")
                    ))
                    .bind(&token_id)
                    .fetch_optional(&mut *transaction)
                    .await
                    .map_err(map_error)?;
                    let Some(row) = row else {
                        // Deleted since the read: as unknown now.
                        return Ok(nothing(LeakOutcome::Unknown));
                    };
                    let token = row.into_token()?;
                    if token.revoked_at.is_some() || token.expires_at <= report.at {
                        return Ok(LeakFinding {
                            outcome: LeakOutcome::Inactive,
                            token: Some(token),
                        });
                    }
                    let stored_action: Option<String> = sqlx::query_scalar(
                        "SELECT leak_action FROM tenant_policies WHERE tenant = $1",
                    )
                    .bind(token.tenant.as_str())
                    .fetch_optional(&mut *transaction)
                    .await
                    .map_err(map_error)?;
                    let action = match stored_action {
                        None => LeakAction::default(),
                        Some(stored) => LeakAction::parse(&stored)
                            .ok_or_else(|| corrupt("tenant_policies.leak_action"))?,
                    };
                    let (outcome, token) = match action {
                        LeakAction::Revoke => {
                            let revoked: TokenRow = sqlx::query_as(concat!(
                                "UPDATE tokens SET revoked_at = $2, updated_at = $2, \
                                 version = version + 1 WHERE id = $1 RETURNING ",
                                token_columns!("")
                            ))
                            .bind(token.id.as_str())
                            .bind(micros(report.at))
                            .fetch_one(&mut *transaction)
                            .await
                            .map_err(map_error)?;
                            (LeakOutcome::Revoked, revoked.into_token()?)
                        }
                        LeakAction::Notify => {
                            let since = report.at
                                - chrono::Duration::seconds(leak::REPEAT_WINDOW_SECONDS);
                            let recent: Option<i64> = sqlx::query_scalar(
                                "SELECT seq FROM events WHERE tenant = $1 AND token_id = $2 \
                                 AND type = $3 AND time >= $4 LIMIT 1",
                            )
                            .bind(token.tenant.as_str())
                            .bind(token.id.as_str())
                            .bind(EventType::TokenLeaked.as_str())
                            .bind(micros(since))
                            .fetch_optional(&mut *transaction)
                            .await
                            .map_err(map_error)?;
                            if recent.is_some() {
                                return Ok(LeakFinding {
                                    outcome: LeakOutcome::Repeated,
                                    token: Some(token),
                                });
                            }
                            (LeakOutcome::Notified, token)
                        }
                    };
                    let audit = leak::leak_audit(&token, report, outcome);
                    let events = leak::leak_events(&token, report, outcome);
                    Self::commit_with_audit_and_events(transaction, &audit, &events).await?;
                    Ok(LeakFinding {
                        outcome,
                        token: Some(token),
                    })
                }

                async fn known_secret_hashes(
                    &self,
                    hashes: &[SecretHash],
                ) -> Result<Vec<SecretHash>, StoreError> {
                    let mut known = Vec::new();
                    // One statement per hash keeps the SQL one text for both dialects; an import
                    // is at most `admin::MAX_IMPORT_BATCH` of them, on one connection.
                    let mut connection = self.pool.acquire().await.map_err(map_error)?;
                    for hash in hashes {
                        let found: Option<Vec<u8>> = sqlx::query_scalar(
                            "SELECT secret_hash FROM tokens WHERE secret_hash = $1 \
                             UNION ALL \
                             SELECT secret_hash FROM retired_secrets WHERE secret_hash = $1 \
                             LIMIT 1",
                        )
                        .bind(hash.0.as_slice())
                        .fetch_optional(&mut *connection)
                        .await
                        .map_err(map_error)?;
                        if found.is_some() {
                            known.push(*hash);
                        }
                    }
                    Ok(known)
                }

                async fn import_tokens(
                    &self,
                    tokens: &[NewToken],
                    max_live_per_owner: u32,
                    audits: &[AuditEvent],
                ) -> Result<Vec<Token>, StoreError> {
                    let mut transaction = self.begin_write().await?;
                    // Each owner's row is locked (in id order, so two imports cannot wait on each
                    // other in a cycle) before its live tokens are counted, as create_token does.
                    let mut owners: std::collections::BTreeMap<(&str, &str), (i64, i64)> =
                        std::collections::BTreeMap::new();
                    for new in tokens {
                        let token = &new.token;
                        let entry = owners
                            .entry((token.tenant.as_str(), token.owner_id.as_str()))
                            .or_insert((micros(token.created_at), 0));
                        if token.revoked_at.is_none() && token.expires_at > token.updated_at {
                            entry.1 += 1;
                        }
                        entry.0 = entry.0.max(micros(token.updated_at));
                    }
                    for ((tenant, owner_id), (now, adding)) in &owners {
                        let (owner_exists, live_tokens) =
                            Self::lock_owner_counting_live(&mut transaction, tenant, owner_id, *now)
                                .await?;
                        if !owner_exists {
                            return Err(StoreError::NotFound("principal"));
                        }
                        if live_tokens + adding > i64::from(max_live_per_owner) {
                            return Err(StoreError::OwnerTokenLimit {
                                limit: max_live_per_owner,
                            });
                        }
                    }
                    let mut stored = Vec::with_capacity(tokens.len());
                    for new in tokens {
                        let row = Self::insert_token_row(&mut transaction, new).await?;
                        stored.push(row.into_token()?);
                    }
                    for audit in audits {
                        Self::insert_audit_row(&mut transaction, audit).await?;
                    }
                    for token in &stored {
                        let event = NewEvent::token(EventType::TokenCreated, token, token.updated_at);
                        Self::insert_event_row(&mut transaction, &event).await?;
                    }
                    transaction.commit().await.map_err(map_error)?;
                    Ok(stored)
                }

                // Webhooks (issue 17).

                async fn create_webhook(
                    &self,
                    new: &NewWebhook,
                    max_per_tenant: u32,
                    audit: &AuditEvent,
                ) -> Result<Webhook, StoreError> {
                    let webhook = &new.webhook;
                    let mut transaction = self.begin_write().await?;
                    // Locks the tenant's webhooks (a no-op update) before counting them, so
                    // concurrent creates in a tenant that has one count one after the other.
                    sqlx::query("UPDATE webhooks SET updated_at = updated_at WHERE tenant = $1")
                        .bind(webhook.tenant.as_str())
                        .execute(&mut *transaction)
                        .await
                        .map_err(map_error)?;
                    let existing: i64 =
                        sqlx::query_scalar("SELECT COUNT(*) FROM webhooks WHERE tenant = $1")
                            .bind(webhook.tenant.as_str())
                            .fetch_one(&mut *transaction)
                            .await
                            .map_err(map_error)?;
                    if existing >= i64::from(max_per_tenant) {
                        return Err(StoreError::WebhookLimit {
                            limit: max_per_tenant,
                        });
                    }
                    let row: WebhookRow = sqlx::query_as(concat!(
                        "INSERT INTO webhooks (id, tenant, url, event_types, description, \
                         sealed_secret, secret_hint, disabled, failing_since, created_at, \
                         updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, $9, $10) \
                         RETURNING ",
                        webhook_columns!("")
                    ))
                    .bind(webhook.id.as_str())
                    .bind(webhook.tenant.as_str())
                    .bind(webhook.url.as_str())
                    .bind(encode_event_types(&webhook.event_types))
                    .bind(webhook.description.as_str())
                    .bind(new.sealed_secret.as_bytes())
                    .bind(&webhook.secret_hint)
                    .bind(webhook.disabled)
                    .bind(micros(webhook.created_at))
                    .bind(micros(webhook.updated_at))
                    .fetch_one(&mut *transaction)
                    .await
                    .map_err(map_error)?;
                    Self::commit_with_audit(transaction, audit).await?;
                    row.into_webhook()
                }

                async fn get_webhook(&self, id: &WebhookId) -> Result<Webhook, StoreError> {
                    let row: Option<WebhookRow> = sqlx::query_as(concat!(
                        "SELECT ",
                        webhook_columns!(""),
                        " FROM webhooks WHERE id = $1"
                    ))
                    .bind(id.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_error)?;
                    row.ok_or(StoreError::NotFound("webhook"))?.into_webhook()
                }

                async fn list_webhooks(
                    &self,
                    tenant: &Tenant,
                    after: Option<&WebhookId>,
                    limit: u32,
                ) -> Result<Vec<Webhook>, StoreError> {
                    let rows: Vec<WebhookRow> = sqlx::query_as(concat!(
                        "SELECT ",
                        webhook_columns!(""),
                        " FROM webhooks WHERE tenant = $1 AND id > $2 ORDER BY id LIMIT $3"
                    ))
                    .bind(tenant.as_str())
                    .bind(after.map(WebhookId::as_str).unwrap_or_default())
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_error)?;
                    rows.into_iter().map(WebhookRow::into_webhook).collect()
                }

                async fn update_webhook(
                    &self,
                    id: &WebhookId,
                    changes: &WebhookChanges,
                    updated_at: DateTime<Utc>,
                    audit: &AuditEvent,
                ) -> Result<Webhook, StoreError> {
                    let mut transaction = self.begin_write().await?;
                    // Only the named columns, so concurrent updates of other fields stay.
                    let mut builder =
                        sqlx::QueryBuilder::<$database>::new("UPDATE webhooks SET updated_at = ");
                    builder.push_bind(micros(updated_at));
                    if let Some(url) = &changes.url {
                        builder.push(", url = ").push_bind(url.as_str().to_owned());
                    }
                    if let Some(types) = &changes.event_types {
                        builder
                            .push(", event_types = ")
                            .push_bind(encode_event_types(types));
                    }
                    if let Some(description) = &changes.description {
                        builder
                            .push(", description = ")
                            .push_bind(description.as_str().to_owned());
                    }
                    if let Some(disabled) = changes.disabled {
                        builder.push(", disabled = ").push_bind(disabled);
                        if !disabled {
                            builder.push(", failing_since = NULL");
                        }
                    }
                    builder.push(" WHERE id = ").push_bind(id.as_str().to_owned());
                    builder.push(concat!(" RETURNING ", webhook_columns!("")));
                    let row: Option<WebhookRow> = builder
                        .build_query_as()
                        .fetch_optional(&mut *transaction)
                        .await
                        .map_err(map_error)?;
                    let row = row.ok_or(StoreError::NotFound("webhook"))?;
                    if changes.disabled == Some(true) {
                        sqlx::query(
                            "UPDATE webhook_deliveries SET state = 'failed', \
                             last_error = 'the webhook was disabled', leased_until = NULL \
                             WHERE webhook_id = $1 AND state = 'pending'",
                        )
                        .bind(id.as_str())
                        .execute(&mut *transaction)
                        .await
                        .map_err(map_error)?;
                    }
                    Self::commit_with_audit(transaction, audit).await?;
                    row.into_webhook()
                }

                async fn delete_webhook(
                    &self,
                    id: &WebhookId,
                    audit: &AuditEvent,
                ) -> Result<Webhook, StoreError> {
                    let mut transaction = self.begin_write().await?;
                    let row: Option<WebhookRow> = sqlx::query_as(concat!(
                        "DELETE FROM webhooks WHERE id = $1 RETURNING ",
                        webhook_columns!("")
                    ))
                    .bind(id.as_str())
                    .fetch_optional(&mut *transaction)
                    .await
                    .map_err(map_error)?;
                    let row = row.ok_or(StoreError::NotFound("webhook"))?;
                    sqlx::query("DELETE FROM webhook_deliveries WHERE webhook_id = $1")
                        .bind(id.as_str())
                        .execute(&mut *transaction)
                        .await
                        .map_err(map_error)?;
                    Self::commit_with_audit(transaction, audit).await?;
                    row.into_webhook()
                }

                async fn list_webhook_deliveries(
                    &self,
                    webhook: &WebhookId,
                    before: Option<i64>,
                    limit: u32,
                ) -> Result<Vec<WebhookDelivery>, StoreError> {
                    let rows: Vec<DeliveryRow> = sqlx::query_as(concat!(
                        "SELECT ",
                        delivery_columns!(),
                        " FROM webhook_deliveries d JOIN events e ON e.seq = d.event_seq \
                         WHERE d.webhook_id = $1 AND d.id < $2 ORDER BY d.id DESC LIMIT $3"
                    ))
                    .bind(webhook.as_str())
                    .bind(before.unwrap_or(i64::MAX))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_error)?;
                    rows.into_iter().map(DeliveryRow::into_delivery).collect()
                }

                async fn claim_webhook_deliveries(
                    &self,
                    now: DateTime<Utc>,
                    lease_until: DateTime<Utc>,
                    limit: u32,
                ) -> Result<Vec<DueDelivery>, StoreError> {
                    let now = micros(now);
                    let mut transaction = self.begin_write().await?;
                    // On Postgres the subquery's row locks skip deliveries another replica is
                    // claiming (SQLite's transaction holds the write lock already).
                    let claimed: Vec<i64> = sqlx::query_scalar(concat!(
                        "UPDATE webhook_deliveries SET leased_until = $2 WHERE id IN (\
                         SELECT d.id FROM webhook_deliveries d JOIN webhooks w \
                         ON w.id = d.webhook_id WHERE d.state = 'pending' \
                         AND d.next_attempt_at <= $1 \
                         AND (d.leased_until IS NULL OR d.leased_until <= $1) \
                         AND NOT w.disabled ORDER BY d.next_attempt_at, d.id LIMIT $3",
                        $skip_locked,
                        ") RETURNING id"
                    ))
                    .bind(now)
                    .bind(micros(lease_until))
                    .bind(i64::from(limit))
                    .fetch_all(&mut *transaction)
                    .await
                    .map_err(map_error)?;
                    let mut due = Vec::with_capacity(claimed.len());
                    for id in claimed {
                        let row: Option<DueRow> = sqlx::query_as(
                            "SELECT d.id, d.attempts, w.id AS webhook_id, w.tenant, w.url, \
                             w.sealed_secret, e.seq AS event_seq, e.id AS event_id, \
                             e.type AS event_type, e.tenant AS event_tenant, \
                             e.time AS event_time, e.data AS event_data \
                             FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
                             JOIN events e ON e.seq = d.event_seq WHERE d.id = $1",
                        )
                        .bind(id)
                        .fetch_optional(&mut *transaction)
                        .await
                        .map_err(map_error)?;
                        match row {
                            Some(row) => due.push(row.into_due()?),
                            // Its event was pruned: nothing is left to send.
                            None => {
                                sqlx::query(
                                    "UPDATE webhook_deliveries SET state = 'failed', \
                                     last_error = 'the event is no longer kept' WHERE id = $1",
                                )
                                .bind(id)
                                .execute(&mut *transaction)
                                .await
                                .map_err(map_error)?;
                            }
                        }
                    }
                    transaction.commit().await.map_err(map_error)?;
                    Ok(due)
                }

                async fn record_webhook_attempt(
                    &self,
                    attempt: &Attempt,
                ) -> Result<bool, StoreError> {
                    let attempted_at = micros(attempt.attempted_at);
                    let (state, next_attempt_at, delivered_at) = match &attempt.result {
                        AttemptResult::Delivered => ("delivered", None, Some(attempted_at)),
                        AttemptResult::Retry { at } => ("pending", Some(micros(*at)), None),
                        AttemptResult::Failed => ("failed", None, None),
                    };
                    let mut transaction = self.begin_write().await?;
                    let updated = sqlx::query(
                        "UPDATE webhook_deliveries SET state = $2, attempts = attempts + 1, \
                         next_attempt_at = COALESCE($3, next_attempt_at), leased_until = NULL, \
                         last_attempt_at = $4, last_status = $5, last_error = $6, \
                         delivered_at = $7 WHERE id = $1 AND state = 'pending'",
                    )
                    .bind(attempt.delivery_id)
                    .bind(state)
                    .bind(next_attempt_at)
                    .bind(attempted_at)
                    .bind(attempt.status.map(i32::from))
                    .bind(&attempt.error)
                    .bind(delivered_at)
                    .execute(&mut *transaction)
                    .await
                    .map_err(map_error)?;
                    if updated.rows_affected() == 0 {
                        // Deleted, or failed by a disable, meanwhile: nothing to record.
                        return Ok(false);
                    }
                    let mut became_failing = false;
                    match &attempt.result {
                        AttemptResult::Delivered => {
                            sqlx::query(
                                "UPDATE webhooks SET failing_since = NULL \
                                 WHERE id = $1 AND failing_since IS NOT NULL",
                            )
                            .bind(attempt.webhook_id.as_str())
                            .execute(&mut *transaction)
                            .await
                            .map_err(map_error)?;
                        }
                        AttemptResult::Retry { .. } => {}
                        AttemptResult::Failed => {
                            // Only the attempt that starts a failing episode sets it, so the
                            // event is written once per episode.
                            let started: Option<(String, String)> = sqlx::query_as(
                                "UPDATE webhooks SET failing_since = $2 \
                                 WHERE id = $1 AND failing_since IS NULL RETURNING tenant, url",
                            )
                            .bind(attempt.webhook_id.as_str())
                            .bind(attempted_at)
                            .fetch_optional(&mut *transaction)
                            .await
                            .map_err(map_error)?;
                            if let Some((tenant, url)) = started {
                                let event_id: String = sqlx::query_scalar(
                                    "SELECT e.id FROM webhook_deliveries d \
                                     JOIN events e ON e.seq = d.event_seq WHERE d.id = $1",
                                )
                                .bind(attempt.delivery_id)
                                .fetch_optional(&mut *transaction)
                                .await
                                .map_err(map_error)?
                                .unwrap_or_default();
                                let data = failing_event_data(
                                    &attempt.webhook_id,
                                    &url,
                                    &event_id,
                                    &attempt.error,
                                );
                                let event = NewEvent::other(
                                    EventType::WebhookFailing,
                                    tenant,
                                    attempt.attempted_at,
                                    data,
                                );
                                let seq =
                                    Self::insert_event_row(&mut transaction, &event).await?;
                                // Other webhooks of the tenant hear of it; the failing one
                                // would only fail it again for a day.
                                sqlx::query(
                                    "DELETE FROM webhook_deliveries \
                                     WHERE event_seq = $1 AND webhook_id = $2",
                                )
                                .bind(seq)
                                .bind(attempt.webhook_id.as_str())
                                .execute(&mut *transaction)
                                .await
                                .map_err(map_error)?;
                                became_failing = true;
                            }
                        }
                    }
                    transaction.commit().await.map_err(map_error)?;
                    Ok(became_failing)
                }

                async fn create_session(
                    &self,
                    new: &NewSession,
                    audit: &AuditEvent,
                ) -> Result<(), StoreError> {
                    let (kind, admin_key_hash, tenant, principal_id, return_url) =
                        session_kind_columns(&new.kind);
                    let mut transaction = self.begin_write().await?;
                    sqlx::query(
                        "INSERT INTO console_sessions (id, kind, secret_hash, code_hash, \
                         admin_key_hash, actor, tenant, principal_id, return_url, created_at, \
                         last_seen_at, expires_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11)",
                    )
                    .bind(new.id.as_str())
                    .bind(kind)
                    .bind(new.secret_hash.as_ref().map(|hash| hash.0.to_vec()))
                    .bind(new.code_hash.as_ref().map(|hash| hash.0.to_vec()))
                    .bind(admin_key_hash.map(<[u8]>::to_vec))
                    .bind(&new.actor)
                    .bind(tenant)
                    .bind(principal_id)
                    .bind(return_url)
                    .bind(micros(new.created_at))
                    .bind(micros(new.expires_at))
                    .execute(&mut *transaction)
                    .await
                    .map_err(map_error)?;
                    Self::commit_with_audit(transaction, audit).await
                }

                async fn find_session(
                    &self,
                    secret_hash: &SecretHash,
                ) -> Result<Option<Session>, StoreError> {
                    let row: Option<SessionRow> = sqlx::query_as(concat!(
                        "SELECT ",
                        session_columns!(),
                        " FROM console_sessions WHERE secret_hash = $1"
                    ))
                    .bind(secret_hash.0.as_slice())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_error)?;
                    row.map(SessionRow::into_session).transpose()
                }

                async fn redeem_session_code(
                    &self,
                    code_hash: &SecretHash,
                    secret_hash: &SecretHash,
                    now: DateTime<Utc>,
                ) -> Result<Option<Session>, StoreError> {
                    // One conditional UPDATE: the code is cleared as the secret is set, so a
                    // second exchange (or a concurrent one) matches no row.
                    let row: Option<SessionRow> = sqlx::query_as(concat!(
                        "UPDATE console_sessions SET code_hash = NULL, secret_hash = $2, \
                         last_seen_at = $3 \
                         WHERE code_hash = $1 AND revoked_at IS NULL AND expires_at > $3 \
                         RETURNING ",
                        session_columns!()
                    ))
                    .bind(code_hash.0.as_slice())
                    .bind(secret_hash.0.as_slice())
                    .bind(micros(now))
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_error)?;
                    row.map(SessionRow::into_session).transpose()
                }

                async fn touch_session(
                    &self,
                    id: &SessionId,
                    at: DateTime<Utc>,
                ) -> Result<(), StoreError> {
                    sqlx::query(
                        "UPDATE console_sessions SET last_seen_at = $2 \
                         WHERE id = $1 AND last_seen_at < $2",
                    )
                    .bind(id.as_str())
                    .bind(micros(at))
                    .execute(&self.pool)
                    .await
                    .map_err(map_error)?;
                    Ok(())
                }

                async fn revoke_session(
                    &self,
                    id: &SessionId,
                    at: DateTime<Utc>,
                ) -> Result<(), StoreError> {
                    sqlx::query(
                        "UPDATE console_sessions SET revoked_at = $2 \
                         WHERE id = $1 AND revoked_at IS NULL",
                    )
                    .bind(id.as_str())
                    .bind(micros(at))
                    .execute(&self.pool)
                    .await
                    .map_err(map_error)?;
                    Ok(())
                }

                async fn prune_sessions(
                    &self,
                    before: DateTime<Utc>,
                    limit: u32,
                ) -> Result<u64, StoreError> {
                    let deleted = sqlx::query(
                        "DELETE FROM console_sessions WHERE id IN \
                         (SELECT id FROM console_sessions WHERE expires_at < $1 LIMIT $2)",
                    )
                    .bind(micros(before))
                    .bind(i64::from(limit))
                    .execute(&self.pool)
                    .await
                    .map_err(map_error)?;
                    Ok(deleted.rows_affected())
                }

                async fn set_portal_branding(
                    &self,
                    branding: &PortalBranding,
                    updated_at: DateTime<Utc>,
                    audit: &AuditEvent,
                ) -> Result<PortalBranding, StoreError> {
                    let mut transaction = self.begin_write().await?;
                    let row: BrandingRow = sqlx::query_as(
                        "INSERT INTO portal_branding \
                         (tenant, product_name, logo_url, accent_color, updated_at) \
                         VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (tenant) DO UPDATE SET product_name = excluded.product_name, \
                         logo_url = excluded.logo_url, accent_color = excluded.accent_color, \
                         updated_at = excluded.updated_at \
                         RETURNING tenant, product_name, logo_url, accent_color, updated_at",
                    )
                    .bind(branding.tenant.as_str())
                    .bind(&branding.product_name)
                    .bind(&branding.logo_url)
                    .bind(&branding.accent_color)
                    .bind(micros(updated_at))
                    .fetch_one(&mut *transaction)
                    .await
                    .map_err(map_error)?;
                    Self::commit_with_audit(transaction, audit).await?;
                    row.into_branding()
                }

                async fn get_portal_branding(
                    &self,
                    tenant: &Tenant,
                ) -> Result<Option<PortalBranding>, StoreError> {
                    let row: Option<BrandingRow> = sqlx::query_as(
                        "SELECT tenant, product_name, logo_url, accent_color, updated_at \
                         FROM portal_branding WHERE tenant = $1",
                    )
                    .bind(tenant.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_error)?;
                    row.map(BrandingRow::into_branding).transpose()
                }
            }
        }
    };
}
pub(super) use impl_store;
