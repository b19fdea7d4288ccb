//! The tokens a soak presents, created through the admin API of the server under test, and the
//! weighted mix in which the load presents them.

use std::sync::Arc;

use anyhow::{Context, bail};
use rand::RngExt;
use rand::seq::IndexedRandom;
use secrecy::ExposeSecret;
use tessera::domain::token::{self, TokenPrefix};
use tessera::proto::{
    CreateTokenRequest, RevokeTokenRequest, RotateTokenRequest, UpsertPrincipalRequest,
};

use super::super::probe::Probe;
use super::super::servers::{AdminClient, UNLIMITED_PER_MINUTE};
use super::verdict::Kind;

/// What every Check asks for; every seeded token grants it.
pub const PERMISSION: &str = "orders:read";
pub const CLIENT_IP: &str = "10.0.0.1";
/// Owners of the seeded tokens, one per group so no owner nears the 64 live tokens limit.
const VALID_OWNER: &str = "soak-valid";
const LIMITED_OWNER: &str = "soak-limited";
const REVOKED_OWNER: &str = "soak-revoked";
/// The owner of the tokens the admin writes create and revoke all along.
pub const CHURN_OWNER: &str = "soak-churn";

const VALID_TOKENS: usize = 32;
const REVOKED_TOKENS: usize = 8;
/// Tokens rotated once at seeding: their old secrets are presented as revoked, their new ones
/// as valid.
const ROTATED_TOKENS: usize = 8;
const LIMITED_TOKENS: usize = 8;
/// Low enough that every limited token is far over its limit at any soak rate.
pub const LIMITED_PER_MINUTE: u32 = 30;
/// Distinct unknown tokens: more than the negative cache keeps for long, so unknown tokens keep
/// reaching the store (one query each per negative-cache TTL).
const UNKNOWN_TOKENS: usize = 2_000;
const MALFORMED_TOKENS: usize = 200;
/// Slots in the precomputed mix; calls cycle through it.
const PLAN_LENGTH: usize = 65_536;

/// The relative weights of the kinds in the mix, by [`Kind::index`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weights(pub [u32; 5]);

/// Parses `valid=60,unknown=10,…`; kinds not named weigh 0.
pub fn parse_weights(raw: &str) -> Result<Weights, String> {
    let mut weights = [0_u32; 5];
    for part in raw
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
    {
        let (name, weight) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}` is not kind=weight"))?;
        let kind = Kind::from_name(name.trim()).ok_or_else(|| {
            let names: Vec<&str> = Kind::ALL.iter().map(|kind| kind.name()).collect();
            format!("unknown kind `{name}` (kinds: {})", names.join(", "))
        })?;
        weights[kind.index()] = weight
            .trim()
            .parse()
            .map_err(|_| format!("weight of {name} is not a whole number"))?;
    }
    if weights.iter().all(|&weight| weight == 0) {
        return Err("every weight is 0".to_owned());
    }
    Ok(Weights(weights))
}

/// The seeded secrets, by kind.
pub struct Population {
    pub secrets: [Vec<String>; 5],
    /// Ids of the valid tokens, which the admin writes rename under load.
    pub valid_ids: Vec<String>,
}

impl Population {
    pub fn limited_tokens(&self) -> u64 {
        self.secrets[Kind::RateLimited.index()].len() as u64
    }
}

/// Creates the principals and tokens of every kind on the server behind `admin`.
pub async fn seed(admin: &mut AdminClient) -> anyhow::Result<Population> {
    for owner in [VALID_OWNER, LIMITED_OWNER, REVOKED_OWNER, CHURN_OWNER] {
        admin
            .upsert_principal(UpsertPrincipalRequest {
                id: owner.to_owned(),
                permissions: vec!["*".to_owned()],
                ..UpsertPrincipalRequest::default()
            })
            .await
            .with_context(|| format!("cannot create principal {owner}"))?;
    }
    let mut population = Population {
        secrets: Default::default(),
        valid_ids: Vec::new(),
    };
    for index in 0..VALID_TOKENS {
        let (id, secret) = create(admin, VALID_OWNER, index, UNLIMITED_PER_MINUTE).await?;
        population.valid_ids.push(id);
        population.secrets[Kind::Valid.index()].push(secret);
    }
    for index in 0..LIMITED_TOKENS {
        let (_, secret) = create(admin, LIMITED_OWNER, index, LIMITED_PER_MINUTE).await?;
        population.secrets[Kind::RateLimited.index()].push(secret);
    }
    for index in 0..REVOKED_TOKENS {
        let (id, secret) = create(admin, REVOKED_OWNER, index, UNLIMITED_PER_MINUTE).await?;
        admin
            .revoke_token(RevokeTokenRequest { id })
            .await
            .context("cannot revoke a seeded token")?;
        population.secrets[Kind::Revoked.index()].push(secret);
    }
    for index in 0..ROTATED_TOKENS {
        let (id, old) = create(
            admin,
            REVOKED_OWNER,
            REVOKED_TOKENS + index,
            UNLIMITED_PER_MINUTE,
        )
        .await?;
        let rotated = admin
            .rotate_token(RotateTokenRequest {
                id,
                grace_period: None,
            })
            .await
            .context("cannot rotate a seeded token")?
            .into_inner();
        population.secrets[Kind::Revoked.index()].push(old);
        population.secrets[Kind::Valid.index()].push(rotated.secret);
    }
    let prefix = TokenPrefix::default();
    population.secrets[Kind::Unknown.index()] = (0..UNKNOWN_TOKENS)
        .map(|_| token::generate(&prefix).secret.expose_secret().to_owned())
        .collect();
    population.secrets[Kind::Malformed.index()] = (0..MALFORMED_TOKENS)
        .map(|index| malformed(token::generate(&prefix).secret.expose_secret(), index))
        .collect();
    Ok(population)
}

async fn create(
    admin: &mut AdminClient,
    owner: &str,
    index: usize,
    rate_limit_per_minute: u32,
) -> anyhow::Result<(String, String)> {
    let created = admin
        .create_token(CreateTokenRequest {
            owner_id: owner.to_owned(),
            name: format!("{owner} {index}"),
            permissions: vec!["orders:*".to_owned()],
            rate_limit_per_minute,
            ..CreateTokenRequest::default()
        })
        .await
        .with_context(|| format!("cannot create a token for {owner}"))?
        .into_inner();
    let id = created.token.context("CreateToken answered no token")?.id;
    Ok((id, created.secret))
}

/// A well-formed token spoiled in one of the ways the parser rejects, chosen by `index`: its
/// checksum, its prefix, its length, its alphabet.
pub fn malformed(well_formed: &str, index: usize) -> String {
    let mut bytes = well_formed.as_bytes().to_vec();
    match index % 4 {
        0 => {
            // The last checksum digit, changed to another base62 digit.
            let last = bytes.len() - 1;
            bytes[last] = if bytes[last] == b'0' { b'1' } else { b'0' };
        }
        1 => bytes[2] = b'x',
        2 => {
            bytes.pop();
        }
        _ => {
            let middle = bytes.len() / 2;
            bytes[middle] = b'-';
        }
    }
    String::from_utf8(bytes).expect("ASCII stays ASCII")
}

/// The calls of a soak, in a fixed random order of kinds by weight: call `n` presents slot
/// `n % len`, so every phase sees the same mix.
pub struct Plan {
    slots: Vec<(Kind, Probe)>,
}

impl Plan {
    pub fn new(population: &Population, weights: Weights) -> anyhow::Result<Arc<Self>> {
        let kinds: Vec<(Kind, u32)> = Kind::ALL
            .into_iter()
            .map(|kind| (kind, weights.0[kind.index()]))
            .filter(|&(_, weight)| weight > 0)
            .collect();
        for &(kind, _) in &kinds {
            if population.secrets[kind.index()].is_empty() {
                bail!("no {} tokens to present", kind.name());
            }
        }
        let total: u32 = kinds.iter().map(|&(_, weight)| weight).sum();
        if total == 0 {
            bail!("the mix weighs nothing");
        }
        let mut rng = rand::rng();
        let slots = (0..PLAN_LENGTH)
            .map(|_| {
                let mut pick = rng.random_range(0..total);
                let &(kind, _) = kinds
                    .iter()
                    .find(|&&(_, weight)| {
                        let hit = pick < weight;
                        pick = pick.saturating_sub(weight);
                        hit
                    })
                    .expect("the picks sum to the total");
                let secret = population.secrets[kind.index()]
                    .choose(&mut rng)
                    .expect("checked non-empty");
                (kind, Probe::check(secret, PERMISSION, CLIENT_IP))
            })
            .collect();
        Ok(Arc::new(Self { slots }))
    }

    pub fn get(&self, call: usize) -> &(Kind, Probe) {
        &self.slots[call % self.slots.len()]
    }

    /// The first slot of each kind in the mix.
    pub fn one_of_each(&self) -> Vec<&(Kind, Probe)> {
        let mut seen = Vec::new();
        for slot in &self.slots {
            if !seen
                .iter()
                .any(|(kind, _): &&(Kind, Probe)| *kind == slot.0)
            {
                seen.push(slot);
            }
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_malformed_variant_is_rejected_by_the_real_parser() {
        let prefix = TokenPrefix::default();
        for index in 0..40 {
            let good = token::generate(&prefix).secret.expose_secret().to_owned();
            assert!(token::parse(&good, &prefix).is_ok());
            let bad = malformed(&good, index);
            assert!(
                token::parse(&bad, &prefix).is_err(),
                "variant {} of {good} passed as {bad}",
                index % 4
            );
        }
    }

    #[test]
    fn the_plan_presents_each_kind_in_its_weight_and_only_its_own_secrets() {
        let mut population = Population {
            secrets: Default::default(),
            valid_ids: Vec::new(),
        };
        for kind in Kind::ALL {
            population.secrets[kind.index()] =
                (0..3).map(|n| format!("{}-{n}", kind.name())).collect();
        }
        let plan = Plan::new(&population, Weights([60, 10, 0, 20, 10])).expect("a plan");
        let mut counts = [0_usize; 5];
        for call in 0..PLAN_LENGTH {
            let (kind, probe) = plan.get(call);
            counts[kind.index()] += 1;
            let token = probe.token().expect("a Check probe");
            assert!(
                token.starts_with(kind.name()),
                "{token} presented as {kind:?}"
            );
        }
        assert_eq!(counts[Kind::Malformed.index()], 0);
        // 65,536 draws: a share is within 1.5 points of its weight far beyond any chance miss.
        for (kind, weight) in [
            (Kind::Valid, 60.0),
            (Kind::Unknown, 10.0),
            (Kind::Revoked, 20.0),
        ] {
            let share = counts[kind.index()] as f64 * 100.0 / PLAN_LENGTH as f64;
            assert!(
                (share - weight).abs() < 1.5,
                "{kind:?}: {share:.1}% for weight {weight}"
            );
        }
        assert_eq!(plan.one_of_each().len(), 4);
        assert!(Plan::new(&population, Weights([0, 0, 0, 0, 0])).is_err());
        population.secrets[Kind::Revoked.index()].clear();
        assert!(Plan::new(&population, Weights([60, 10, 0, 20, 10])).is_err());
    }

    #[test]
    fn weights_parse_by_kind_name_and_reject_nonsense() {
        let weights = parse_weights("valid=60, unknown=10,malformed=10,revoked=10,rate-limited=10")
            .expect("valid weights");
        assert_eq!(weights, Weights([60, 10, 10, 10, 10]));
        assert_eq!(parse_weights("valid=1"), Ok(Weights([1, 0, 0, 0, 0])));
        assert!(parse_weights("valid=0").is_err());
        assert!(parse_weights("expired=5").is_err());
        assert!(parse_weights("valid").is_err());
        assert!(parse_weights("valid=-1").is_err());
    }
}
