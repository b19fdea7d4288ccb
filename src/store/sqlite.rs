//! The SQLite backend: the embedded default, for a single node.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::error::{map_error, migrate_error};
use super::invalidation::{Invalidation, InvalidationSink};
use super::{PoolOptions, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// SQLite has one writer at a time: more connections only add readers, and a few suffice (per
/// pool).
const MAX_CONNECTIONS: u32 = 4;

/// How long a writer waits for another's transaction before giving up with `Unavailable`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// sqlx takes no lock for SQLite migrations, so two stores opening one fresh file at once would
/// both try to apply them. A single process is the supported deployment; within it, this lock
/// makes concurrent opens safe.
static MIGRATION_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Writes a consistent copy of the SQLite database at `url` to `destination`, a file that must
/// not exist yet, while servers keep using the database: `VACUUM INTO` reads one snapshot (a
/// read transaction; writers go on in the WAL meanwhile) and writes it out compacted, committed
/// WAL pages included. The database itself is opened as it is, never created or migrated.
pub async fn backup(url: &str, destination: &std::path::Path) -> Result<(), StoreError> {
    use sqlx::Connection as _;
    let destination = destination.to_str().ok_or_else(|| {
        StoreError::Internal("the backup file's path is not valid UTF-8".to_owned())
    })?;
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|error| StoreError::Internal(format!("invalid sqlite url: {error}")))?
        .create_if_missing(false)
        .busy_timeout(BUSY_TIMEOUT);
    let mut connection = sqlx::SqliteConnection::connect_with(&options)
        .await
        .map_err(map_error)?;
    sqlx::query("VACUUM INTO $1")
        .bind(destination)
        .execute(&mut connection)
        .await
        .map_err(map_error)?;
    connection.close().await.map_err(map_error)
}

super::sql::impl_store! {
    store: SqliteStore,
    database: sqlx::Sqlite,
    backend: "sqlite",
    json_array_elements: "SELECT value FROM json_each($2)",
    // One writer at a time, and an event's id is taken inside its writer's transaction: ids
    // become visible in the order they were taken, so there is nothing to wait for.
    wait_for_audit_writers: "SELECT 1",
    wait_for_event_writers: "SELECT 1",
    token_names_role: "EXISTS (SELECT 1 FROM json_each(tokens.roles) WHERE value = $2)",
    skip_locked: "",
    // Write transactions take the write lock first (see `begin_write`, src/store/sql.rs).
    begin_write: "BEGIN IMMEDIATE",
}

pub struct SqliteStore {
    /// The admin/usage pool: every write (SQLite's one writer at a time) and the admin reads.
    pool: SqlitePool,
    /// The Check pool (a bulkhead): only `find_credential` and `get_api_status`, readers that WAL
    /// lets run beside the writer. An in-memory database is one per pool, so it shares `pool`.
    check_pool: SqlitePool,
}

impl SqliteStore {
    pub async fn connect(url: &str, options: &PoolOptions) -> Result<Self, StoreError> {
        let connect_options = SqliteConnectOptions::from_str(url)
            .map_err(|error| StoreError::Internal(format!("invalid sqlite url: {error}")))?
            .create_if_missing(true)
            // WAL lets readers (Check's cache fills) proceed while an admin write commits.
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable across application crashes in WAL mode; only an OS crash may
            // lose the last commits, in exchange for no fsync per commit.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        // Held from the first connection to the last: a connection's opening pragmas (journal
        // mode) fail with SQLITE_BUSY, rather than wait, while another store of this process
        // is migrating the same file.
        let migration_guard = MIGRATION_LOCK.lock().await;
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections.clamp(1, MAX_CONNECTIONS))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect_options.clone())
            .await
            .map_err(map_error)?;

        MIGRATOR.run(&pool).await.map_err(migrate_error)?;
        let check_pool = if in_memory {
            pool.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(options.check_max_connections.clamp(1, MAX_CONNECTIONS))
                .acquire_timeout(options.acquire_timeout)
                .connect_with(connect_options)
                .await
                .map_err(map_error)?
        };
        drop(migration_guard);
        Ok(Self { pool, check_pool })
    }

    /// One node holds the only cache, and the admin layer invalidates it directly.
    async fn publish_invalidation(&self, _invalidation: &Invalidation) -> Result<(), StoreError> {
        Ok(())
    }

    fn watch(&self, _sink: Arc<dyn InvalidationSink>) -> Option<tokio::task::JoinHandle<()>> {
        None
    }

    /// Moves every committed page from the `-wal` file into the database file and empties the
    /// log, so that copying the database file alone copies everything.
    async fn checkpoint_on_close(&self) -> Result<(), StoreError> {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await
            .map_err(map_error)?;
        Ok(())
    }
}
