//! sqlx errors → [`StoreError`]: the one place the store decides what a database error means.
//!
//! Both backends map through [`map_error`], so a Postgres outage and a busy SQLite file look the
//! same to the layers above: `Unavailable` ("not now", retry), `Conflict` (a uniqueness rule), or
//! `Internal` (a bug or corrupt data). Failures are counted once per `Store` call, with the
//! operation, by the decorator every backend is wrapped in (`bounded.rs`), not here.

use super::StoreError;

/// Maps every sqlx error to the store's small set.
pub(super) fn map_error(error: sqlx::Error) -> StoreError {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => StoreError::Unavailable(error),
        sqlx::Error::Database(ref database_error) => {
            let code = database_error.code().unwrap_or_default();
            if is_unique_violation(&code) {
                // The message names the constraint, never the values (Postgres puts those in
                // the detail, which is not part of the message).
                StoreError::Conflict(database_error.message().to_owned())
            } else if is_database_unavailable(&code) {
                StoreError::Unavailable(error)
            } else {
                StoreError::Internal(format!(
                    "database error {code}: {}",
                    database_error.message()
                ))
            }
        }
        other => StoreError::Internal(other.to_string()),
    }
}

/// A failed migration: its statement's error as [`map_error`] maps it (an unreachable database
/// stays `Unavailable`, so the start keeps retrying), anything else `Internal`.
pub(super) fn migrate_error(error: sqlx::migrate::MigrateError) -> StoreError {
    match error {
        sqlx::migrate::MigrateError::Execute(error) => map_error(error),
        other => StoreError::Internal(format!("migration failed: {other}")),
    }
}

/// Postgres SQLSTATE 23505; SQLite extended codes 2067 (UNIQUE) and 1555 (PRIMARY KEY).
fn is_unique_violation(code: &str) -> bool {
    matches!(code, "23505" | "2067" | "1555")
}

/// Errors that say "not now" rather than "never": the server is shutting down or out of
/// connections, or a statement hit `statement_timeout` / SQLite's busy timeout. Callers treat
/// these like an unreachable database (Check answers `STORE_UNAVAILABLE`, not a bug).
fn is_database_unavailable(code: &str) -> bool {
    // Postgres: class 08 connection exception, 53 insufficient resources, 57014 query canceled
    // (statement_timeout), 57P01..57P05 shutdown and crash recovery.
    let postgres = code.len() == 5
        && (code.starts_with("08") || code.starts_with("53") || code.starts_with("57"));
    // SQLite: primary codes 5 (BUSY) and 6 (LOCKED), with any extended code.
    let sqlite = code
        .parse::<u32>()
        .is_ok_and(|extended| matches!(extended & 0xff, 5 | 6));
    postgres || sqlite
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
    use sqlx::{Connection, SqliteConnection};

    use super::*;

    /// A fresh SQLite file with one table whose `name` is unique.
    async fn sqlite_file(dir: &tempfile::TempDir) -> SqliteConnectOptions {
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("errors.db"))
            .create_if_missing(true);
        let mut connection = SqliteConnection::connect_with(&options)
            .await
            .expect("sqlite opens");
        sqlx::query("CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT UNIQUE)")
            .execute(&mut connection)
            .await
            .expect("table created");
        connection.close().await.expect("closed");
        options
    }

    async fn pool_of_one(options: &SqliteConnectOptions, acquire_timeout: Duration) -> SqlitePool {
        SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(acquire_timeout)
            .connect_with(options.clone())
            .await
            .expect("pool opens")
    }

    async fn failing(pool: &SqlitePool, statement: &'static str) -> StoreError {
        let error = sqlx::query(statement)
            .execute(pool)
            .await
            .expect_err("the statement fails");
        map_error(error)
    }

    #[tokio::test]
    async fn a_second_row_with_a_unique_value_or_the_same_key_is_a_conflict() {
        let dir = tempfile::tempdir().expect("dir");
        let pool = pool_of_one(&sqlite_file(&dir).await, Duration::from_secs(5)).await;
        sqlx::query("INSERT INTO things (id, name) VALUES (1, 'a')")
            .execute(&pool)
            .await
            .expect("first row");

        let unique = failing(&pool, "INSERT INTO things (id, name) VALUES (2, 'a')").await;
        assert!(
            matches!(&unique, StoreError::Conflict(message) if message.contains("things.name")),
            "{unique:?}"
        );
        let primary_key = failing(&pool, "INSERT INTO things (id, name) VALUES (1, 'b')").await;
        assert!(
            matches!(primary_key, StoreError::Conflict(_)),
            "{primary_key:?}"
        );
    }

    #[tokio::test]
    async fn a_write_that_waits_out_the_busy_timeout_is_unavailable() {
        let dir = tempfile::tempdir().expect("dir");
        let options = sqlite_file(&dir).await;
        let mut holder = SqliteConnection::connect_with(&options)
            .await
            .expect("holder connects");
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut holder)
            .await
            .expect("write lock held");
        let pool = pool_of_one(
            &options.clone().busy_timeout(Duration::from_millis(50)),
            Duration::from_secs(5),
        )
        .await;

        let busy = failing(&pool, "INSERT INTO things (id, name) VALUES (1, 'a')").await;
        assert!(matches!(busy, StoreError::Unavailable(_)), "{busy:?}");
    }

    #[tokio::test]
    async fn no_connection_within_the_acquire_timeout_or_a_closed_pool_is_unavailable() {
        let dir = tempfile::tempdir().expect("dir");
        let pool = pool_of_one(&sqlite_file(&dir).await, Duration::from_millis(50)).await;
        let held = pool.acquire().await.expect("the only connection");

        let timed_out = failing(&pool, "SELECT 1").await;
        assert!(
            matches!(
                timed_out,
                StoreError::Unavailable(sqlx::Error::PoolTimedOut)
            ),
            "{timed_out:?}"
        );
        drop(held);
        pool.close().await;
        let closed = failing(&pool, "SELECT 1").await;
        assert!(
            matches!(closed, StoreError::Unavailable(sqlx::Error::PoolClosed)),
            "{closed:?}"
        );
    }

    #[test]
    fn a_broken_link_is_unavailable() {
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(matches!(
            map_error(sqlx::Error::Io(reset)),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            map_error(sqlx::Error::Protocol("unexpected message".to_owned())),
            StoreError::Unavailable(_)
        ));
    }

    #[tokio::test]
    async fn a_statement_the_database_rejects_is_internal_and_names_the_code() {
        let dir = tempfile::tempdir().expect("dir");
        let pool = pool_of_one(&sqlite_file(&dir).await, Duration::from_secs(5)).await;

        let missing = failing(&pool, "SELECT * FROM no_such_table").await;
        assert!(
            matches!(&missing, StoreError::Internal(message) if message.contains("no such table")),
            "{missing:?}"
        );
        let row_not_found = map_error(sqlx::Error::RowNotFound);
        assert!(
            matches!(row_not_found, StoreError::Internal(_)),
            "{row_not_found:?}"
        );
    }

    #[test]
    fn postgres_connection_resource_and_cancel_classes_are_unavailable() {
        // 08006 connection failure, 53300 too many connections, 57014 statement_timeout,
        // 57P01 admin shutdown, 57P03 cannot connect now (recovery).
        for code in ["08006", "53300", "57014", "57P01", "57P03"] {
            assert!(is_database_unavailable(code), "{code}");
        }
        // 23503 foreign key, 42P01 undefined table, 40001 serialization failure.
        for code in ["23503", "42P01", "40001"] {
            assert!(!is_database_unavailable(code), "{code}");
        }
        assert!(is_unique_violation("23505"));
        assert!(!is_unique_violation("23503"));
    }

    #[test]
    fn sqlite_busy_and_locked_are_unavailable_with_any_extended_code() {
        // 5 BUSY, 261 BUSY_RECOVERY, 517 BUSY_SNAPSHOT, 6 LOCKED, 262 LOCKED_SHAREDCACHE.
        for code in ["5", "261", "517", "6", "262"] {
            assert!(is_database_unavailable(code), "{code}");
        }
        // 19 CONSTRAINT, 787 FOREIGNKEY, 1 ERROR.
        for code in ["19", "787", "1"] {
            assert!(!is_database_unavailable(code), "{code}");
        }
    }

    #[test]
    fn a_migration_that_cannot_reach_the_database_stays_unavailable() {
        let unreachable = sqlx::migrate::MigrateError::Execute(sqlx::Error::PoolTimedOut);
        assert!(matches!(
            migrate_error(unreachable),
            StoreError::Unavailable(_)
        ));
        let dirty = sqlx::migrate::MigrateError::Dirty(3);
        assert!(
            matches!(&migrate_error(dirty), StoreError::Internal(message) if message.starts_with("migration failed")),
        );
    }
}
