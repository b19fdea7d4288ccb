//! `tessera backup FILE`: an online, consistent copy of the SQLite database the server settings
//! name (`VACUUM INTO`, `tessera::store::backup_sqlite`), taken while servers keep serving.
//! Postgres databases are copied with `pg_dump`, which the command points to instead.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use tessera::config::{Database, Settings};

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// Where to write the copy: a new file (an existing one is never overwritten).
    file: PathBuf,

    /// Optional TOML settings file, as for `tessera serve`; its `database_url` (or
    /// TESSERA_DATABASE_URL) names the database.
    #[arg(long, env = "TESSERA_CONFIG")]
    config: Option<PathBuf>,
}

pub async fn run(args: BackupArgs) -> ExitCode {
    match backup(args).await {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {}", crate::cli::error_chain(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

async fn backup(args: BackupArgs) -> anyhow::Result<String> {
    let settings = Settings::load(args.config.as_deref())?;
    let database = Database::parse(&settings.database_url)?;
    let url = match database {
        Database::Postgres { .. } => bail!(
            "tessera backup copies SQLite databases only; back up Postgres with pg_dump, e.g. \
             pg_dump --format=custom --file=tessera.dump \"$TESSERA_DATABASE_URL\" (restore \
             with pg_restore)"
        ),
        Database::Sqlite { path: None, .. } => {
            bail!(
                "TESSERA_DATABASE_URL names an in-memory SQLite database: there is no file to copy"
            )
        }
        Database::Sqlite { url, .. } => url,
    };
    if tokio::fs::try_exists(&args.file).await.unwrap_or(true) {
        bail!(
            "{} already exists (or cannot be checked); tessera backup writes a new file",
            args.file.display()
        );
    }
    tessera::store::backup_sqlite(&url, &args.file)
        .await
        .with_context(|| format!("cannot copy {} to {}", redacted(&url), args.file.display()))?;
    Ok(format!(
        "backed up {} to {}",
        redacted(&url),
        args.file.display()
    ))
}

/// A SQLite URL carries no password, but stays a secret in the settings; only its file is shown.
fn redacted(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sqlite_url_is_shown_without_its_options() {
        assert_eq!(
            redacted("sqlite:///var/lib/tessera.db?mode=rwc"),
            "sqlite:///var/lib/tessera.db"
        );
    }
}
