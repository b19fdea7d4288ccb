//! `tessera-bench flood`: distinct unknown but well-formed tokens presented under load beside
//! valid traffic. Two phases of equal length on one server: valid Checks alone (the baseline),
//! then the same valid Checks with the flood beside them. Judged on what the flood costs the
//! store (at most one credential lookup per distinct token: the negative cache answers every
//! repeat) and what it costs the valid traffic (its p99 within `--max-p99-ratio` of the
//! baseline's); exit 1 when either fails, or when any answer is not the expected one.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use secrecy::ExposeSecret;
use tessera::domain::token::{self, TokenPrefix};
use tonic::client::Grpc;
use tonic::transport::Channel;

use super::load::{self, OPEN_LOOP_CALL_TIMEOUT, Tally, Timing};
use super::probe::Probe;
use super::servers::{self, Cache, Databases, Server, ServerBinary};

/// `DenyReason::TOKEN_UNKNOWN` on the wire.
const TOKEN_UNKNOWN: i32 = 4;
/// Each run of the flood presents a block of this many tokens, each `--repeat` times, before
/// the next block: a repeat comes back well within the negative cache's TTL, after the first
/// presentation's lookup has ended (so it is the cache that answers, not a shared load).
const BLOCK: usize = 1_000;
/// The servers' positive cache TTL (`TESSERA_CACHE_TTL_MS`, default 60 s): the valid token's own
/// entry is reloaded once per TTL, which the store-lookup count allows for.
const CREDENTIAL_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub struct FloodFlags {
    /// Distinct unknown well-formed tokens in the flood.
    #[arg(long, default_value_t = 100_000)]
    tokens: usize,

    /// How often each unknown token is presented.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    repeat: u32,

    /// Flood calls per second (the flood lasts tokens × repeat ÷ this).
    #[arg(long, default_value_t = 4_000)]
    flood_rate: u32,

    /// Valid Checks per second, in both phases.
    #[arg(long, default_value_t = 1_000)]
    rate: u32,

    /// HTTP/2 connections of each loop.
    #[arg(long, default_value_t = 4)]
    connections: usize,

    /// Unmeasured time before each phase.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,

    /// Fail when the valid traffic's p99 with the flood exceeds this multiple of its p99 alone.
    #[arg(long, default_value_t = 2.0)]
    max_p99_ratio: f64,

    /// A Postgres server on which to create (and afterwards drop) the server's database
    /// [default: SQLite in a temporary directory].
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
}

/// What the flood's own calls were answered.
#[derive(Debug, Default)]
struct FloodAnswers {
    unknown: AtomicU64,
    other: AtomicU64,
    first_other: Mutex<Option<String>>,
}

impl FloodAnswers {
    fn other(&self, description: String) {
        self.other.fetch_add(1, Ordering::Relaxed);
        self.first_other
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(description);
    }
}

pub async fn run(flags: FloodFlags, server_binary: Option<PathBuf>) -> ExitCode {
    match flood(&flags, server_binary).await {
        Ok(passed) if passed => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn flood(flags: &FloodFlags, server_binary: Option<PathBuf>) -> anyhow::Result<bool> {
    if flags.tokens == 0 || flags.flood_rate == 0 || flags.rate == 0 || flags.connections == 0 {
        bail!("--tokens, --flood-rate, --rate and --connections must be above 0");
    }
    let binary = ServerBinary::resolve(server_binary)?;
    let mut databases = Databases::new(flags.database_url.as_deref())?;
    let database_url = databases.create("flood").await?;
    let admin_key = servers::random_admin_key();
    let server = Server::start(&binary, "flood", &database_url, &admin_key, Cache::On, None).await;
    let outcome = match server {
        Ok(server) => {
            let outcome = phases(flags, &server, &admin_key).await;
            server.stop().await;
            outcome
        }
        Err(error) => Err(error),
    };
    databases.remove().await;
    outcome
}

async fn phases(flags: &FloodFlags, server: &Server, admin_key: &str) -> anyhow::Result<bool> {
    let valid = Probe::check(
        &servers::seed(&server.url, admin_key).await?,
        "orders:read",
        "10.0.0.1",
    );
    // The servers the bench starts keep the default prefix.
    let prefix = TokenPrefix::default();
    let unknown: Arc<Vec<Probe>> = Arc::new(
        (0..flags.tokens)
            .map(|_| {
                let secret = token::generate(&prefix).secret;
                Probe::check(secret.expose_secret(), "orders:read", "10.0.0.1")
            })
            .collect(),
    );
    let calls = flags.tokens as u64 * u64::from(flags.repeat);
    let timing = Timing {
        warmup: flags.warmup,
        duration: Duration::from_secs_f64(calls as f64 / f64::from(flags.flood_rate)),
    };
    let channels = open_channels(&server.url, flags.connections).await?;
    eprintln!(
        "baseline: {} valid Checks/s for {:?} (+ {:?} warm-up)",
        flags.rate, timing.duration, timing.warmup
    );
    let alone = load::open_loop(&valid, &channels, flags.rate, timing).await;

    let lookups_before = lookups(server).await?;
    eprintln!(
        "flood: {} unknown tokens × {} at {}/s beside the same valid traffic",
        flags.tokens, flags.repeat, flags.flood_rate
    );
    let answers = Arc::new(FloodAnswers::default());
    let flood_channels = open_channels(&server.url, flags.connections).await?;
    // The flood starts with the warm-up's end so that all of it falls in the measured window.
    let flood_timing = Timing {
        warmup: Duration::ZERO,
        duration: timing.duration,
    };
    let (beside, flood_outcome) = tokio::join!(
        load::open_loop(&valid, &channels, flags.rate, timing),
        async {
            tokio::time::sleep(timing.warmup).await;
            present(
                flags,
                unknown.clone(),
                &flood_channels,
                flood_timing,
                answers.clone(),
            )
            .await
        }
    );
    let lookups = lookups(server).await? - lookups_before;
    let refreshes = (timing.warmup + timing.duration).as_secs() / CREDENTIAL_TTL.as_secs() + 1;

    let unknown_answers = answers.unknown.load(Ordering::Relaxed);
    let other_answers = answers.other.load(Ordering::Relaxed) + flood_outcome;
    let p99_alone = alone.latencies.value_at_quantile(0.99);
    let p99_beside = beside.latencies.value_at_quantile(0.99);
    let ratio = p99_beside as f64 / p99_alone.max(1) as f64;
    println!(
        "| valid Checks at {rate}/s | p50 µs | p99 µs | calls |\n\
         |---|---|---|---|\n\
         | alone | {a50} | {a99} | {an} |\n\
         | beside {tokens} unknown tokens × {repeat} at {flood_rate}/s | {b50} | {b99} | {bn} |\n\
         \n\
         valid p99 with the flood / without: {ratio:.2}x (limit {limit:.2}x)\n\
         store credential lookups during the flood: {lookups} for {tokens} distinct tokens \
         ({calls} calls; {unknown_answers} answered TOKEN_UNKNOWN; at most {refreshes} of the \
         lookups are the valid token's reloads, one per cache TTL)",
        rate = flags.rate,
        a50 = alone.latencies.value_at_quantile(0.5),
        a99 = p99_alone,
        an = alone.good,
        tokens = flags.tokens,
        repeat = flags.repeat,
        flood_rate = flags.flood_rate,
        b50 = beside.latencies.value_at_quantile(0.5),
        b99 = p99_beside,
        bn = beside.good,
        limit = flags.max_p99_ratio,
    );
    let mut passed = true;
    for (phase, tally) in [("alone", &alone), ("beside the flood", &beside)] {
        if let Some(problem) = problems(tally) {
            eprintln!("!!! valid traffic {phase}: {problem}");
            passed = false;
        }
    }
    if other_answers > 0 {
        let first = answers
            .first_other
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_default();
        eprintln!("!!! {other_answers} flood calls not answered TOKEN_UNKNOWN (first: {first})");
        passed = false;
    }
    // The valid token's own entry may be reloaded once per cache TTL, as the report says.
    if lookups > flags.tokens as u64 + refreshes {
        eprintln!(
            "!!! {lookups} store lookups for {} distinct tokens",
            flags.tokens
        );
        passed = false;
    }
    if ratio > flags.max_p99_ratio {
        eprintln!("!!! the flood raised the valid traffic's p99 {ratio:.2}x");
        passed = false;
    }
    Ok(passed)
}

/// The flood's calls, paced; returns how many calls the schedule could not make.
async fn present(
    flags: &FloodFlags,
    unknown: Arc<Vec<Probe>>,
    channels: &[Channel],
    timing: Timing,
    answers: Arc<FloodAnswers>,
) -> u64 {
    let clients: Vec<Grpc<Channel>> = channels.iter().cloned().map(Grpc::new).collect();
    let repeat = usize::try_from(flags.repeat).unwrap_or(1);
    let outcome = load::paced(flags.flood_rate, timing, move |call| {
        let probe = unknown[flood_token(call.index, unknown.len(), repeat)].clone();
        let mut client = clients[call.index % clients.len()].clone();
        let answers = answers.clone();
        async move {
            match tokio::time::timeout(OPEN_LOOP_CALL_TIMEOUT, probe.answer(&mut client)).await {
                Ok(Ok(answer)) => match answer.decision() {
                    (false, TOKEN_UNKNOWN) => {
                        answers.unknown.fetch_add(1, Ordering::Relaxed);
                    }
                    (allowed, reason) => {
                        answers.other(format!("allowed={allowed} reason={reason}"));
                    }
                },
                Ok(Err(error)) => answers.other(error),
                Err(_) => answers.other("no answer within 5s".to_owned()),
            }
        }
    })
    .await;
    outcome.problems().iter().map(|(count, _)| count).sum()
}

/// The token of flood call `index`: blocks of [`BLOCK`] tokens, each block presented `repeat`
/// times over before the next.
fn flood_token(index: usize, tokens: usize, repeat: usize) -> usize {
    let block_calls = BLOCK * repeat;
    let block = index / block_calls;
    (block * BLOCK + (index % block_calls) % BLOCK) % tokens
}

fn problems(tally: &Tally) -> Option<String> {
    (tally.failed + tally.unexpected > 0).then(|| {
        format!(
            "{} failed, {} unexpected (first: {})",
            tally.failed,
            tally.unexpected,
            tally.first_problem.as_deref().unwrap_or("?")
        )
    })
}

async fn lookups(server: &Server) -> anyhow::Result<u64> {
    server
        .counter("tessera_store_credential_lookups_total", "")
        .await
}

async fn open_channels(url: &str, count: usize) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count {
        channels.push(
            servers::connect(url)
                .await
                .with_context(|| format!("cannot connect to {url}"))?,
        );
    }
    Ok(channels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flood_token_is_presented_repeat_times_within_its_block() {
        let (tokens, repeat) = (2_500, 3);
        let mut presented = vec![0_u32; tokens];
        for index in 0..tokens * repeat {
            presented[flood_token(index, tokens, repeat)] += 1;
        }
        // The last, partial block wraps onto the first tokens; the full blocks are exact.
        assert!(presented[1_000..2_000].iter().all(|&count| count == 3));
        assert_eq!(presented.iter().sum::<u32>() as usize, tokens * repeat);
        assert_eq!(
            flood_token(0, tokens, repeat),
            flood_token(1_000, tokens, repeat)
        );
        assert_ne!(
            flood_token(0, tokens, repeat),
            flood_token(1, tokens, repeat)
        );
    }
}
