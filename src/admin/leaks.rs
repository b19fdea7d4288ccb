//! Leak reports (issue 17, point 4) on the admin side: one reported secret recognised, acted on
//! in the store by its tenant's `leak_action`, the revocation announced to every replica as
//! RevokeToken announces it, and counted in `tessera_leaked_tokens_total{source, action}`.

use chrono::Utc;

use super::{Admin, AdminError};
use crate::domain::leak::{LeakOutcome, LeakReport, LeakSource};
use crate::domain::token::{self, SecretHash};

impl Admin {
    /// Acts on a report that `presented` leaked (found at `url`, already bounded by
    /// `leak::bounded_url`). A secret that is not a Tessera token (prefix, length, alphabet,
    /// checksum, as Check parses it) is [`LeakOutcome::Malformed`] without any store work;
    /// imported tokens of other formats are not recognised.
    pub async fn report_leak(
        &self,
        source: LeakSource,
        presented: &str,
        url: Option<&str>,
    ) -> Result<LeakOutcome, AdminError> {
        let outcome = match token::parse(presented, &self.prefix) {
            Err(_) => LeakOutcome::Malformed,
            Ok(_) => {
                let report = LeakReport {
                    source,
                    url: url.map(str::to_owned),
                    at: Utc::now(),
                };
                let hash = SecretHash::of(presented);
                let finding = self.store.report_leak(&hash, &report).await?;
                if let (LeakOutcome::Revoked, Some(token)) = (finding.outcome, &finding.token) {
                    self.announce_token(&token.id).await;
                }
                if let Some(token) = &finding.token {
                    tracing::info!(
                        token_id = %token.id,
                        tenant = %token.tenant,
                        source = source.as_str(),
                        action = finding.outcome.label(),
                        "leaked token reported"
                    );
                }
                finding.outcome
            }
        };
        metrics::counter!(
            "tessera_leaked_tokens_total",
            "source" => source.as_str(),
            "action" => outcome.label(),
        )
        .increment(1);
        Ok(outcome)
    }
}
