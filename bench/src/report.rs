//! Results: one [`Measurement`] per run, medians over interleaved rounds, ratios against the
//! no-op floor measured in the same rounds, the hot-path targets (BENCHMARKS.md), as a table or
//! as JSON.

use std::fmt::Write as _;
use std::time::Duration;

use comfy_table::{CellAlignment, ContentArrangement, Table, presets};
use serde::Serialize;

use super::load::Tally;

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// grpc.health.v1.Health/Check: the floor of a unary call on this server and transport.
    Noop,
    /// AuthorizationService/Check of the seeded token, cache on.
    Check,
    /// The same Check on a server started with the token cache off.
    CheckCacheOff,
    /// The same Check on a server this tool starts with its rate limits shared on the Redis at
    /// `--redis-url`: the cost of fleet-wide limits for a high-limit token.
    CheckSharedLimits,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Noop => "noop",
            Scenario::Check => "check",
            Scenario::CheckCacheOff => "check-cache-off",
            Scenario::CheckSharedLimits => "check-shared-limits",
        }
    }
}

/// How load is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Mode {
    /// `concurrency` workers, each waiting for its answer before the next call.
    Closed { concurrency: usize },
    /// `rate` calls per second on a fixed schedule.
    Open { rate: u32 },
}

impl Mode {
    fn label(self) -> String {
        match self {
            Mode::Closed { concurrency } => format!("closed c={concurrency}"),
            Mode::Open { rate } => format!("open {rate}/s"),
        }
    }
}

/// One run: one scenario, one mode, one round.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub round: usize,
    pub scenario: Scenario,
    pub mode: Mode,
    /// Answered calls per second.
    pub throughput: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub good: u64,
    pub unexpected: u64,
    pub failed: u64,
    pub first_problem: Option<String>,
    /// Open loop only: how late the generator started calls (part of their latency).
    pub send_lag: Option<SendLag>,
}

/// How late after its scheduled time an open-loop call started: the generator's own delay.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SendLag {
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl Measurement {
    pub fn new(
        round: usize,
        scenario: Scenario,
        mode: Mode,
        tally: &Tally,
        measured: Duration,
    ) -> Self {
        let latencies = &tally.latencies;
        Self {
            round,
            scenario,
            mode,
            throughput: tally.throughput(measured),
            p50_us: latencies.value_at_quantile(0.50),
            p90_us: latencies.value_at_quantile(0.90),
            p99_us: latencies.value_at_quantile(0.99),
            p999_us: latencies.value_at_quantile(0.999),
            max_us: latencies.max(),
            good: tally.good,
            unexpected: tally.unexpected,
            failed: tally.failed,
            first_problem: tally.first_problem.clone(),
            send_lag: tally.send_lags.as_ref().map(|lags| SendLag {
                p50_us: lags.value_at_quantile(0.50),
                p99_us: lags.value_at_quantile(0.99),
                max_us: lags.max(),
            }),
        }
    }

    pub fn problems(&self) -> u64 {
        self.unexpected + self.failed
    }

    /// The one-line progress note printed after each run.
    pub fn progress_line(&self) -> String {
        let mut line = format!(
            "round {} {:<13} {:<16} {:>9.0} req/s  p50 {}µs  p99 {}µs",
            self.round,
            self.mode.label(),
            self.scenario.name(),
            self.throughput,
            self.p50_us,
            self.p99_us
        );
        if let Some(lag) = self.send_lag {
            let _ = write!(
                line,
                "  send lag p50 {}µs p99 {}µs max {}µs",
                lag.p50_us, lag.p99_us, lag.max_us
            );
        }
        if self.problems() > 0 {
            let _ = write!(
                line,
                "  PROBLEMS: {} unexpected, {} failed ({})",
                self.unexpected,
                self.failed,
                self.first_problem.as_deref().unwrap_or("?")
            );
        }
        line
    }
}

/// Medians over the rounds of one scenario in one mode; problems are summed.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub scenario: Scenario,
    pub mode: Mode,
    pub rounds: usize,
    pub throughput: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// Open loop only: medians of the generator's send lag percentiles.
    pub send_lag_p50_us: Option<f64>,
    pub send_lag_p99_us: Option<f64>,
    pub unexpected: u64,
    pub failed: u64,
    pub first_problem: Option<String>,
}

/// A scenario against the no-op floor in the same mode: the median over rounds of the
/// per-round ratio (each round's pair ran back to back, so drift between rounds cancels).
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub scenario: Scenario,
    pub mode: Mode,
    pub p50: f64,
    pub p99: f64,
    pub throughput: f64,
}

/// One of the hot path's targets for cached Check against the floor (BENCHMARKS.md).
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    pub target: String,
    pub measured: f64,
    pub met: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub summaries: Vec<Summary>,
    pub ratios: Vec<Ratio>,
    pub targets: Vec<TargetCheck>,
    pub runs: Vec<Measurement>,
}

impl Report {
    /// `modes` and `scenarios` in the order they should be shown.
    pub fn new(runs: Vec<Measurement>, modes: &[Mode], scenarios: &[Scenario]) -> Self {
        let mut summaries = Vec::new();
        let mut ratios = Vec::new();
        for &mode in modes {
            for &scenario in scenarios {
                if let Some(summary) = summarize(&runs, scenario, mode) {
                    summaries.push(summary);
                }
                if scenario != Scenario::Noop
                    && let Some(ratio) = ratio_to_noop(&runs, scenario, mode)
                {
                    ratios.push(ratio);
                }
            }
        }
        let targets = check_targets(&ratios, modes);
        Self {
            summaries,
            ratios,
            targets,
            runs,
        }
    }

    pub fn problems(&self) -> u64 {
        self.runs.iter().map(Measurement::problems).sum()
    }

    pub fn to_text(&self) -> String {
        let mut results = new_table(&[
            "mode",
            "scenario",
            "req/s",
            "p50 µs",
            "p90 µs",
            "p99 µs",
            "p99.9 µs",
            "max µs",
            "problems",
        ]);
        for summary in &self.summaries {
            let problems = summary.unexpected + summary.failed;
            results.add_row(vec![
                summary.mode.label(),
                summary.scenario.name().to_owned(),
                format!("{:.0}", summary.throughput),
                format!("{:.0}", summary.p50_us),
                format!("{:.0}", summary.p90_us),
                format!("{:.0}", summary.p99_us),
                format!("{:.0}", summary.p999_us),
                format!("{:.0}", summary.max_us),
                if problems == 0 {
                    "0".to_owned()
                } else {
                    format!("{problems} !!")
                },
            ]);
        }
        let mut text = results.to_string();
        for summary in &self.summaries {
            if let (Some(p50), Some(p99)) = (summary.send_lag_p50_us, summary.send_lag_p99_us) {
                let _ = write!(
                    text,
                    "\n{} {}: latency counts from the scheduled send; the generator itself \
                     started calls {p50:.0}µs (p50) / {p99:.0}µs (p99) late",
                    summary.mode.label(),
                    summary.scenario.name()
                );
            }
        }

        if !self.ratios.is_empty() {
            let mut ratios = new_table(&["mode", "scenario / noop", "p50", "p99", "throughput"]);
            for ratio in &self.ratios {
                ratios.add_row(vec![
                    ratio.mode.label(),
                    ratio.scenario.name().to_owned(),
                    format!("{:.2}x", ratio.p50),
                    format!("{:.2}x", ratio.p99),
                    format!("{:.2}x", ratio.throughput),
                ]);
            }
            let _ = write!(text, "\n\n{ratios}");
        }
        for target in &self.targets {
            let verdict = if target.met { "met" } else { "MISSED" };
            let _ = write!(
                text,
                "\ntarget {}: {:.2}x {verdict}",
                target.target, target.measured
            );
        }
        text
    }
}

fn new_table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    for index in 2..header.len() {
        if let Some(column) = table.column_mut(index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

fn runs_of(runs: &[Measurement], scenario: Scenario, mode: Mode) -> Vec<&Measurement> {
    runs.iter()
        .filter(|run| run.scenario == scenario && run.mode == mode)
        .collect()
}

fn summarize(runs: &[Measurement], scenario: Scenario, mode: Mode) -> Option<Summary> {
    let selected = runs_of(runs, scenario, mode);
    if selected.is_empty() {
        return None;
    }
    let median_of = |field: fn(&Measurement) -> f64| {
        median(selected.iter().map(|run| field(run)).collect()).unwrap_or(f64::NAN)
    };
    let median_lag = |field: fn(&SendLag) -> u64| {
        median(
            selected
                .iter()
                .filter_map(|run| run.send_lag.as_ref().map(|lag| field(lag) as f64))
                .collect(),
        )
    };
    Some(Summary {
        scenario,
        mode,
        rounds: selected.len(),
        throughput: median_of(|run| run.throughput),
        p50_us: median_of(|run| run.p50_us as f64),
        p90_us: median_of(|run| run.p90_us as f64),
        p99_us: median_of(|run| run.p99_us as f64),
        p999_us: median_of(|run| run.p999_us as f64),
        max_us: median_of(|run| run.max_us as f64),
        send_lag_p50_us: median_lag(|lag| lag.p50_us),
        send_lag_p99_us: median_lag(|lag| lag.p99_us),
        unexpected: selected.iter().map(|run| run.unexpected).sum(),
        failed: selected.iter().map(|run| run.failed).sum(),
        first_problem: selected.iter().find_map(|run| run.first_problem.clone()),
    })
}

fn ratio_to_noop(runs: &[Measurement], scenario: Scenario, mode: Mode) -> Option<Ratio> {
    let pairs: Vec<(&Measurement, &Measurement)> = runs_of(runs, scenario, mode)
        .into_iter()
        .filter_map(|run| {
            runs.iter()
                .find(|floor| {
                    floor.scenario == Scenario::Noop
                        && floor.mode == mode
                        && floor.round == run.round
                })
                .map(|floor| (run, floor))
        })
        .collect();
    let median_ratio = |field: fn(&Measurement) -> f64| {
        median(
            pairs
                .iter()
                .map(|(run, floor)| field(run) / field(floor))
                .collect(),
        )
    };
    Some(Ratio {
        scenario,
        mode,
        p50: median_ratio(|run| run.p50_us as f64)?,
        p99: median_ratio(|run| run.p99_us as f64)?,
        throughput: median_ratio(|run| run.throughput)?,
    })
}

/// The hot-path targets of BENCHMARKS.md: cached Check at concurrency 1 within 1.10x (p50) and
/// 1.25x (p99) of the floor; saturated throughput (the highest closed-loop concurrency run) at
/// least 0.85x of it.
fn check_targets(ratios: &[Ratio], modes: &[Mode]) -> Vec<TargetCheck> {
    let cached = |mode: Mode| {
        ratios
            .iter()
            .find(|ratio| ratio.scenario == Scenario::Check && ratio.mode == mode)
    };
    let mut targets = Vec::new();
    if let Some(ratio) = cached(Mode::Closed { concurrency: 1 }) {
        targets.push(TargetCheck {
            target: "check p50 at c=1 <= 1.10x noop".to_owned(),
            measured: ratio.p50,
            met: ratio.p50 <= 1.10,
        });
        targets.push(TargetCheck {
            target: "check p99 at c=1 <= 1.25x noop".to_owned(),
            measured: ratio.p99,
            met: ratio.p99 <= 1.25,
        });
    }
    let saturated = modes
        .iter()
        .filter_map(|mode| match mode {
            Mode::Closed { concurrency } if *concurrency > 1 => Some(*concurrency),
            _ => None,
        })
        .max();
    if let Some(concurrency) = saturated
        && let Some(ratio) = cached(Mode::Closed { concurrency })
    {
        targets.push(TargetCheck {
            target: format!("check throughput at c={concurrency} >= 0.85x noop"),
            measured: ratio.throughput,
            met: ratio.throughput >= 0.85,
        });
    }
    targets
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|value| value.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        Some(values[middle])
    } else {
        Some((values[middle - 1] + values[middle]) / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(round: usize, scenario: Scenario, p50_us: u64, throughput: f64) -> Measurement {
        Measurement {
            round,
            scenario,
            mode: Mode::Closed { concurrency: 1 },
            throughput,
            p50_us,
            p90_us: p50_us,
            p99_us: p50_us * 2,
            p999_us: p50_us * 3,
            max_us: p50_us * 4,
            good: 1,
            unexpected: 0,
            failed: 0,
            first_problem: None,
            send_lag: None,
        }
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn ratios_pair_each_run_with_the_floor_of_its_own_round() {
        let runs = vec![
            run(1, Scenario::Noop, 100, 1000.0),
            run(1, Scenario::Check, 105, 950.0),
            run(2, Scenario::Noop, 200, 500.0),
            run(2, Scenario::Check, 230, 450.0),
            run(3, Scenario::Noop, 100, 1000.0),
            run(3, Scenario::Check, 108, 900.0),
        ];
        let modes = [Mode::Closed { concurrency: 1 }];
        let report = Report::new(runs, &modes, &[Scenario::Noop, Scenario::Check]);
        let ratio = &report.ratios[0];
        assert!((ratio.p50 - 1.08).abs() < 1e-9);
        assert!((ratio.throughput - 0.9).abs() < 1e-9);
        assert_eq!(report.summaries[0].p50_us, 100.0);
        assert!(report.targets[0].met);
        assert!(report.targets[1].met);
    }
}
