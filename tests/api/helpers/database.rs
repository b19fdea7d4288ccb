//! A fresh, empty database per test: its own Postgres database on the test server, or a SQLite
//! file in its own temporary directory. Dropping the guard removes it.

use sqlx::{AssertSqlSafe, Connection, PgConnection, SqliteConnection};

/// Where the Postgres tests create their databases; the default matches CI and a local
/// `postgres` with trust authentication.
pub const POSTGRES_URL_VARIABLE: &str = "TESSERA_TEST_POSTGRES_URL";
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The maintenance URL of the Postgres server the tests use.
pub fn postgres_server_url() -> String {
    std::env::var(POSTGRES_URL_VARIABLE).unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

pub struct TestDatabase {
    url: String,
    backend: Backend,
}

enum Backend {
    Postgres {
        /// The server's maintenance database, from which the test database is created and dropped.
        server_url: String,
        name: String,
    },
    Sqlite {
        /// Keeps the file alive as long as the guard; removed with it.
        _directory: tempfile::TempDir,
    },
}

impl TestDatabase {
    /// A new, empty database on the test Postgres server. Panics (failing the test, never
    /// skipping it) when the server cannot be reached.
    pub async fn postgres() -> Self {
        let server_url = postgres_server_url();
        let name = format!(
            "tessera_test_{}",
            ulid::Ulid::new().to_string().to_lowercase()
        );
        let mut server = PgConnection::connect(&server_url)
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "the Postgres tests need a server: cannot connect to it ({error}); \
                 start one or set {POSTGRES_URL_VARIABLE}"
                )
            });
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut server)
            .await
            .unwrap_or_else(|error| panic!("cannot create test database {name}: {error}"));
        let _ = server.close().await;
        Self {
            url: database_url(&server_url, &name),
            backend: Backend::Postgres { server_url, name },
        }
    }

    /// A new SQLite file (not yet created: connecting creates it) in its own temporary directory.
    pub fn sqlite() -> Self {
        let directory = tempfile::tempdir().expect("temporary directory for sqlite");
        let path = directory.path().join("tessera.db");
        Self {
            url: format!("sqlite://{}", path.display()),
            backend: Backend::Sqlite {
                _directory: directory,
            },
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The Postgres database's name (None for SQLite).
    pub fn name(&self) -> Option<&str> {
        match &self.backend {
            Backend::Postgres { name, .. } => Some(name),
            Backend::Sqlite { .. } => None,
        }
    }

    /// The maintenance URL of the Postgres server holding the database (None for SQLite).
    pub fn server_url(&self) -> Option<&str> {
        match &self.backend {
            Backend::Postgres { server_url, .. } => Some(server_url),
            Backend::Sqlite { .. } => None,
        }
    }

    /// Runs raw SQL against the database, for tests that must reach past the store (deleting
    /// rows it never deletes, corrupting one).
    pub async fn execute(&self, sql: &'static str) {
        let result = match self.backend {
            Backend::Postgres { .. } => {
                let mut connection = PgConnection::connect(&self.url)
                    .await
                    .expect("connect to test database");
                sqlx::query(sql).execute(&mut connection).await.map(drop)
            }
            Backend::Sqlite { .. } => {
                let mut connection = SqliteConnection::connect(&self.url)
                    .await
                    .expect("connect to test database");
                sqlx::query(sql).execute(&mut connection).await.map(drop)
            }
        };
        result.unwrap_or_else(|error| panic!("raw sql failed ({sql}): {error}"));
    }

    /// The one BIGINT a raw query answers (a `SELECT COUNT(*) …`), for tests that count rows
    /// the store has no reader for.
    pub async fn scalar(&self, sql: &'static str) -> i64 {
        let result = match self.backend {
            Backend::Postgres { .. } => {
                let mut connection = PgConnection::connect(&self.url)
                    .await
                    .expect("connect to test database");
                sqlx::query_scalar(sql).fetch_one(&mut connection).await
            }
            Backend::Sqlite { .. } => {
                let mut connection = SqliteConnection::connect(&self.url)
                    .await
                    .expect("connect to test database");
                sqlx::query_scalar(sql).fetch_one(&mut connection).await
            }
        };
        result.unwrap_or_else(|error| panic!("raw sql failed ({sql}): {error}"))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Backend::Postgres { server_url, name } = &self.backend else {
            return;
        };
        // Drop cannot await, and a test's runtime may be single-threaded (blocking on it would
        // deadlock) or already shutting down, so the drop runs on its own thread and runtime.
        let server_url = server_url.clone();
        let name = name.clone();
        let dropped = std::thread::spawn(move || drop_database(&server_url, &name)).join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("could not drop a test database: {error}"),
            Err(_) => eprintln!("the thread dropping a test database panicked"),
        }
    }
}

fn drop_database(
    server_url: &str,
    name: &str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut server = PgConnection::connect(server_url).await?;
        // FORCE: the store under test may still hold pooled connections.
        sqlx::query(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut server)
        .await?;
        server.close().await?;
        Ok(())
    })
}

/// `server_url` with its database name replaced by `name`, keeping any query string.
fn database_url(server_url: &str, name: &str) -> String {
    let (base, query) = match server_url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (server_url, String::new()),
    };
    let authority_start = base.find("://").map_or(0, |scheme_end| scheme_end + 3);
    let without_database = match base[authority_start..].find('/') {
        Some(path_start) => &base[..authority_start + path_start],
        None => base,
    };
    format!("{without_database}/{name}{query}")
}
