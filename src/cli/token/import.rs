//! `tessera token import FILE.jsonl`: the file's lines as ImportedTokens, checked before any
//! call, sent in batches of [`BATCH`].

use std::io::Read;
use std::path::Path;

use tessera::proto;
use tonic::Status;

use super::super::error::CliError;
use super::super::parse;

/// Tokens per ImportTokens call: the server's limit.
pub(super) const BATCH: usize = 1000;

/// One line of the file, in the names of `tessera.v1.ImportedToken`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    owner_id: String,
    name: String,
    secret_sha256: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    permissions: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    allowed_ips: Vec<String>,
    #[serde(default)]
    rate_limit_per_minute: u32,
    expires_at: Option<String>,
    created_at: Option<String>,
    #[serde(default)]
    metadata: std::collections::HashMap<String, String>,
}

/// Every token of the file (`-`: stdin), or the first line that is not one, by number.
pub(super) fn read(file: &Path) -> Result<Vec<proto::ImportedToken>, CliError> {
    let mut text = String::new();
    let read = if file == Path::new("-") {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::File::open(file)
            .and_then(|mut opened| opened.read_to_string(&mut text).map(|_| ()))
    };
    read.map_err(|error| {
        CliError::Local(
            anyhow::Error::new(error).context(format!("cannot read {}", file.display())),
        )
    })?;
    parse_lines(&text).map_err(|(number, problem)| {
        CliError::Usage(format!("{} line {number}: {problem}", file.display()))
    })
}

/// The tokens of JSON Lines `text` (blank lines skipped), or a line's number and what is wrong.
fn parse_lines(text: &str) -> Result<Vec<proto::ImportedToken>, (usize, String)> {
    let mut tokens = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(raw).map_err(|error| (number, error.to_string()))?;
        let time = |field: &str, raw: Option<String>| {
            raw.map(|raw| {
                parse::timestamp(&raw).map_err(|error| (number, format!("{field}: {error}")))
            })
            .transpose()
        };
        tokens.push(proto::ImportedToken {
            owner_id: line.owner_id,
            name: line.name,
            secret_sha256: line.secret_sha256,
            permissions: line.permissions,
            roles: line.roles,
            allowed_ips: line.allowed_ips,
            rate_limit_per_minute: line.rate_limit_per_minute,
            expires_at: time("expires_at", line.expires_at)?,
            created_at: time("created_at", line.created_at)?,
            description: line.description,
            metadata: line.metadata,
        });
    }
    if tokens.is_empty() {
        return Err((0, "no tokens in the file".to_owned()));
    }
    Ok(tokens)
}

/// The error of batch `batch` (0-based), saying which lines it held and how many tokens earlier
/// batches imported; the server's details (`tokens[i]…`, counted within the batch) are kept.
pub(super) fn failed(status: Status, batch: usize, imported_before: usize) -> CliError {
    let first_line = batch * BATCH + 1;
    let message = format!(
        "{} (batch {} from token {first_line}, `tokens[i]` is token {first_line}+i; {imported_before} \
         tokens of earlier batches were imported)",
        status.message(),
        batch + 1,
    );
    let status = Status::with_details(
        status.code(),
        message,
        tonic::codegen::Bytes::copy_from_slice(status.details()),
    );
    CliError::Rpc {
        rpc: "ImportTokens",
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_of_json_lines_becomes_imported_tokens_and_blank_lines_are_skipped() {
        let text = concat!(
            r#"{"owner_id":"alice","name":"ci","secret_sha256":"ab","permissions":["orders:read"],"expires_at":"2030-01-31T00:00:00Z"}"#,
            "\n\n",
            r#"{"owner_id":"bob","name":"cd","secret_sha256":"cd"}"#,
            "\n"
        );
        let tokens = parse_lines(text).expect("parses");
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens[0].permissions, vec!["orders:read"]);
        assert_eq!(
            tokens[0].expires_at.map(|time| time.seconds),
            Some(1_896_048_000)
        );
        assert_eq!(tokens[1].owner_id, "bob");
        assert!(tokens[1].expires_at.is_none());
    }

    #[test]
    fn a_bad_line_is_named_by_its_number_before_anything_is_sent() {
        let text =
            "{\"owner_id\":\"a\",\"name\":\"n\",\"secret_sha256\":\"x\"}\n{\"owner\":\"a\"}\n";
        let (number, problem) = parse_lines(text).expect_err("unknown field");
        assert_eq!(number, 2);
        assert!(problem.contains("owner"), "{problem}");
        let (number, _) =
            parse_lines(r#"{"owner_id":"a","name":"n","secret_sha256":"x","expires_at":"soon"}"#)
                .expect_err("bad time");
        assert_eq!(number, 1);
    }
}
