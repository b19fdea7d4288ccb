//! Admin writes all along the soak: a churn token is created, updated, rotated and revoked, over
//! and over, at a steady modest rate, and each step is checked by a Check of its secrets (the
//! write must be enforced at once on this server); the valid tokens under load are renamed too,
//! so their cache entries are invalidated and refilled while they are being checked.

use std::time::Duration;

use prost_types::FieldMask;
use tessera::proto::authorization_service_client::AuthorizationServiceClient;
use tessera::proto::{
    CheckRequest, CreateTokenRequest, DenyReason, RevokeTokenRequest, RotateTokenRequest,
    UpdateTokenRequest,
};
use tokio::sync::oneshot;
use tonic::transport::Channel;

use super::super::servers::AdminClient;
use super::mix::{CHURN_OWNER, CLIENT_IP, PERMISSION};
use super::verdict::Examples;

/// One admin call, or the Check after it, taking longer than this counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What the admin writes did.
#[derive(Debug, Default)]
pub struct Churn {
    /// Writes that succeeded.
    pub writes: u64,
    /// Failed writes and wrong Check answers after a write.
    pub examples: Examples,
}

impl Churn {
    pub fn unintended(&self) -> u64 {
        self.examples.total()
    }
}

/// Runs writes at `per_second` until `stop` fires (or its sender is dropped).
pub async fn run(
    admin: AdminClient,
    channel: Channel,
    valid_ids: Vec<String>,
    per_second: f64,
    mut stop: oneshot::Receiver<()>,
) -> Churn {
    let mut state = State {
        admin,
        checker: AuthorizationServiceClient::new(channel),
        churn: Churn::default(),
        current: None,
        cycle: 0,
    };
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut step = 0_usize;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = interval.tick() => {}
        }
        let id = &valid_ids[step % valid_ids.len()];
        state.write(step, id).await;
        step += 1;
    }
    state.churn
}

struct State {
    admin: AdminClient,
    checker: AuthorizationServiceClient<Channel>,
    churn: Churn,
    /// The live churn token: its id and current secret.
    current: Option<(String, String)>,
    cycle: u64,
}

impl State {
    /// Step `step` of the cycle create → update → rotate → revoke → rename a valid token.
    async fn write(&mut self, step: usize, valid_id: &str) {
        match (step % 5, self.current.clone()) {
            (0, _) => self.create().await,
            (1, Some((id, secret))) => self.update(&id, &secret).await,
            (2, Some((id, secret))) => self.rotate(&id, &secret).await,
            (3, Some((id, secret))) => self.revoke(&id, &secret).await,
            (4, _) => self.rename(valid_id).await,
            // The create of this cycle failed (already counted): nothing to update.
            _ => {}
        }
    }

    async fn create(&mut self) {
        self.cycle += 1;
        let request = CreateTokenRequest {
            owner_id: CHURN_OWNER.to_owned(),
            name: format!("churn {}", self.cycle),
            permissions: vec!["orders:*".to_owned()],
            ..CreateTokenRequest::default()
        };
        let Some(created) = self
            .call("create", self.admin.clone().create_token(request))
            .await
        else {
            return;
        };
        let Some(token) = created.token else {
            self.fail("create: answered no token".to_owned());
            return;
        };
        self.expect("after create", &created.secret, DenyReason::Allowed)
            .await;
        self.current = Some((token.id, created.secret));
    }

    async fn update(&mut self, id: &str, secret: &str) {
        let request = UpdateTokenRequest {
            id: id.to_owned(),
            name: format!("churn {} updated", self.cycle),
            rate_limit_per_minute: 600,
            update_mask: Some(FieldMask {
                paths: vec!["name".to_owned(), "rate_limit_per_minute".to_owned()],
            }),
            ..UpdateTokenRequest::default()
        };
        if self
            .call("update", self.admin.clone().update_token(request))
            .await
            .is_some()
        {
            self.expect("after update", secret, DenyReason::Allowed)
                .await;
        }
    }

    async fn rotate(&mut self, id: &str, old_secret: &str) {
        let request = RotateTokenRequest {
            id: id.to_owned(),
            grace_period: None,
        };
        let Some(rotated) = self
            .call("rotate", self.admin.clone().rotate_token(request))
            .await
        else {
            return;
        };
        self.expect(
            "old secret after rotate",
            old_secret,
            DenyReason::TokenRevoked,
        )
        .await;
        self.expect(
            "new secret after rotate",
            &rotated.secret,
            DenyReason::Allowed,
        )
        .await;
        self.current = Some((id.to_owned(), rotated.secret));
    }

    async fn revoke(&mut self, id: &str, secret: &str) {
        let request = RevokeTokenRequest { id: id.to_owned() };
        if self
            .call("revoke", self.admin.clone().revoke_token(request))
            .await
            .is_some()
        {
            self.current = None;
            self.expect("after revoke", secret, DenyReason::TokenRevoked)
                .await;
        }
    }

    /// Renames a valid token under load: its cache entry is invalidated while it is checked,
    /// and its answers (counted by the load) must stay allowed.
    async fn rename(&mut self, id: &str) {
        let request = UpdateTokenRequest {
            id: id.to_owned(),
            name: format!("soak-valid renamed {}", self.cycle),
            update_mask: Some(FieldMask {
                paths: vec!["name".to_owned()],
            }),
            ..UpdateTokenRequest::default()
        };
        self.call("rename", self.admin.clone().update_token(request))
            .await;
    }

    async fn call<T>(
        &mut self,
        what: &str,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Option<T> {
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(response)) => {
                self.churn.writes += 1;
                Some(response.into_inner())
            }
            Ok(Err(status)) => {
                self.fail(format!("{what}: {:?}: {}", status.code(), status.message()));
                None
            }
            Err(_) => {
                self.fail(format!("{what}: no answer within {CALL_TIMEOUT:?}"));
                None
            }
        }
    }

    /// Checks `secret` at once after a write; anything but `expected` is unintended.
    async fn expect(&mut self, when: &str, secret: &str, expected: DenyReason) {
        let request = CheckRequest {
            token: secret.to_owned(),
            permission: PERMISSION.to_owned(),
            client_ip: CLIENT_IP.to_owned(),
            ..CheckRequest::default()
        };
        let answer = tokio::time::timeout(CALL_TIMEOUT, self.checker.check(request)).await;
        let problem = match answer {
            Ok(Ok(response)) => {
                let response = response.into_inner();
                let reason = response.reason();
                (reason != expected || response.allowed != (expected == DenyReason::Allowed))
                    .then(|| format!("answered {}", reason.as_str_name()))
            }
            Ok(Err(status)) => Some(format!("{:?}: {}", status.code(), status.message())),
            Err(_) => Some(format!("no answer within {CALL_TIMEOUT:?}")),
        };
        if let Some(problem) = problem {
            self.fail(format!(
                "churn check {when}: expected {}, {problem}",
                expected.as_str_name()
            ));
        }
    }

    fn fail(&mut self, description: String) {
        self.churn.examples.add(description, 1);
    }
}
