//! The soak's judgement, as pure functions: what each kind of token must be answered, the
//! per-window figures, the verdict over them, and the markdown that goes into BENCHMARKS.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use tessera::proto::DenyReason;

/// The kinds of token the soak presents; each has its intended answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Issued, live, with a limit far above the load: allowed.
    Valid,
    /// Well formed (checksum right) but never issued: `TOKEN_UNKNOWN`.
    Unknown,
    /// Wrong prefix, length, alphabet or checksum: `TOKEN_MALFORMED`.
    Malformed,
    /// Revoked, or a secret rotated away: `TOKEN_REVOKED`.
    Revoked,
    /// Live with a low per-minute limit: allowed within the limit, else `RATE_LIMITED`.
    RateLimited,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Valid,
        Kind::Unknown,
        Kind::Malformed,
        Kind::Revoked,
        Kind::RateLimited,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Valid => "valid",
            Kind::Unknown => "unknown",
            Kind::Malformed => "malformed",
            Kind::Revoked => "revoked",
            Kind::RateLimited => "rate-limited",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// The answers that are correct for this kind, as `DenyReason`s (`ALLOWED` when allowed).
    pub fn intended(self) -> &'static [DenyReason] {
        match self {
            Kind::Valid => &[DenyReason::Allowed],
            Kind::Unknown => &[DenyReason::TokenUnknown],
            Kind::Malformed => &[DenyReason::TokenMalformed],
            Kind::Revoked => &[DenyReason::TokenRevoked],
            Kind::RateLimited => &[DenyReason::Allowed, DenyReason::RateLimited],
        }
    }
}

/// What one Check came back with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A decision: `allowed`, and the `DenyReason` number.
    Answered { allowed: bool, reason: i32 },
    /// No decision: a gRPC error, a transport failure, a timeout.
    Failed(String),
}

/// How an outcome counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// One of the kind's intended answers; `allowed` tells the rate-limited kind's two apart.
    Intended { allowed: bool },
    /// Anything else, described for the report.
    Unintended(String),
}

/// Judges one outcome against its kind. An `allowed` flag that disagrees with the reason is
/// unintended even when the reason alone would be right.
pub fn classify(kind: Kind, outcome: &Outcome) -> Class {
    match outcome {
        Outcome::Failed(error) => Class::Unintended(format!("{}: no answer: {error}", kind.name())),
        &Outcome::Answered { allowed, reason } => {
            let decoded = DenyReason::try_from(reason).ok();
            let consistent = allowed == (decoded == Some(DenyReason::Allowed));
            match decoded {
                Some(reason) if consistent && kind.intended().contains(&reason) => {
                    Class::Intended { allowed }
                }
                _ => Class::Unintended(format!(
                    "{}: answered allowed={allowed} reason={}",
                    kind.name(),
                    decoded.map_or_else(|| format!("#{reason}"), |r| r.as_str_name().to_owned())
                )),
            }
        }
    }
}

/// Distinct descriptions of unintended answers, with their counts; only the first
/// [`Examples::MAX_DISTINCT`] descriptions are kept (the rest are counted as "other").
#[derive(Debug, Default, Clone)]
pub struct Examples {
    pub counts: BTreeMap<String, u64>,
    pub other: u64,
}

impl Examples {
    const MAX_DISTINCT: usize = 20;

    pub fn add(&mut self, description: String, count: u64) {
        if let Some(existing) = self.counts.get_mut(&description) {
            *existing += count;
        } else if self.counts.len() < Self::MAX_DISTINCT {
            self.counts.insert(description, count);
        } else {
            self.other += count;
        }
    }

    pub fn merge(&mut self, other: Examples) {
        for (description, count) in other.counts {
            self.add(description, count);
        }
        self.other += other.other;
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum::<u64>() + self.other
    }
}

/// Per kind: calls answered as intended (and of those, allowed), and unintended ones.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KindCount {
    pub intended: u64,
    pub allowed: u64,
    pub unintended: u64,
}

/// Counts by kind over a phase, with examples of what went wrong.
#[derive(Debug, Default, Clone)]
pub struct Totals {
    pub kinds: [KindCount; 5],
    pub examples: Examples,
}

impl Totals {
    /// Classifies `outcome` and counts it; returns whether it was intended.
    pub fn record(&mut self, kind: Kind, outcome: &Outcome) -> bool {
        let count = &mut self.kinds[kind.index()];
        match classify(kind, outcome) {
            Class::Intended { allowed } => {
                count.intended += 1;
                count.allowed += u64::from(allowed);
                true
            }
            Class::Unintended(description) => {
                count.unintended += 1;
                self.examples.add(description, 1);
                false
            }
        }
    }

    /// A problem outside any one call (e.g. sends skipped by the schedule).
    pub fn record_problem(&mut self, count: u64, description: String) {
        self.examples.add(description, count);
    }

    pub fn merge(&mut self, other: Totals) {
        for (mine, theirs) in self.kinds.iter_mut().zip(other.kinds) {
            mine.intended += theirs.intended;
            mine.allowed += theirs.allowed;
            mine.unintended += theirs.unintended;
        }
        self.examples.merge(other.examples);
    }

    pub fn answered(&self) -> u64 {
        self.kinds.iter().map(|k| k.intended + k.unintended).sum()
    }

    /// Every unintended call, including problems outside calls.
    pub fn unintended(&self) -> u64 {
        self.examples.total()
    }
}

/// Most calls the rate-limited tokens may have had allowed: GCRA at `per_minute` starts with a
/// full burst of `per_minute` and refills `per_minute` per minute, for each of `tokens`, over
/// `elapsed`; plus one call per token for the refill in progress at the end.
pub fn rate_limit_ceiling(tokens: u64, per_minute: u32, elapsed: Duration) -> u64 {
    let per_token = f64::from(per_minute) * (1.0 + elapsed.as_secs_f64() / 60.0);
    tokens * (per_token.floor() as u64 + 1)
}

/// One window of the open loop.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Seconds from the open loop's start to the window's end.
    pub end_seconds: f64,
    pub length_seconds: f64,
    /// Calls answered (intended or not).
    pub answered: u64,
    pub unintended: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// The server's resident memory at the window's end (last sample in the window).
    pub rss_kib: Option<u64>,
}

impl Window {
    pub fn throughput(&self) -> f64 {
        self.answered as f64 / self.length_seconds
    }
}

/// Median latency beyond which an open-loop step counts as overloaded: a sustained rate
/// answers in well under a millisecond, while a queue that grows for a whole step pushes the
/// median to hundreds of milliseconds.
pub const SUSTAINED_P50_US: u64 = 10_000;

/// Whether an open-loop step held its rate: every call answered as intended, in time.
pub fn sustained(step: &Window) -> bool {
    step.unintended == 0 && step.answered > 0 && step.p50_us <= SUSTAINED_P50_US
}

/// What the verdict allows.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Every window's p99 at most this many times the median window p99.
    pub p99_factor: f64,
    /// RSS growth from the end of the first window to the end of the last.
    pub rss_growth_kib: u64,
}

/// Everything the verdict weighs besides the windows.
#[derive(Debug, Clone, Copy)]
pub struct Evidence {
    /// Unintended Check answers and failures of the open loop.
    pub unintended_checks: u64,
    /// Failed admin writes, and Checks of churned tokens answered wrongly.
    pub unintended_admin: u64,
    /// Admin writes that succeeded.
    pub admin_writes: u64,
    /// Allowed calls of the rate-limited kind, over the saturation and soak phases.
    pub rate_limited_allowed: u64,
    pub rate_limited_ceiling: u64,
    /// ERROR lines in the server's log.
    pub server_errors: u64,
}

/// One line of the verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub name: &'static str,
    pub measured: String,
    pub passed: bool,
}

/// The verdict: every finding must pass.
pub fn judge(windows: &[Window], evidence: &Evidence, bounds: &Bounds) -> Vec<Finding> {
    let mut findings = vec![
        Finding {
            name: "no unintended Check answers or failures",
            measured: evidence.unintended_checks.to_string(),
            passed: evidence.unintended_checks == 0,
        },
        Finding {
            name: "no failed admin writes or wrong answers for churned tokens",
            measured: format!(
                "{} (of {} writes)",
                evidence.unintended_admin, evidence.admin_writes
            ),
            passed: evidence.unintended_admin == 0 && evidence.admin_writes > 0,
        },
        Finding {
            name: "rate-limited tokens allowed no more than their limits",
            measured: format!(
                "{} allowed, ceiling {}",
                evidence.rate_limited_allowed, evidence.rate_limited_ceiling
            ),
            passed: evidence.rate_limited_allowed <= evidence.rate_limited_ceiling,
        },
    ];
    findings.push(rss_finding(windows, bounds));
    findings.push(p99_finding(windows, bounds));
    findings.push(Finding {
        name: "no ERROR lines in the server's log",
        measured: evidence.server_errors.to_string(),
        passed: evidence.server_errors == 0,
    });
    findings
}

fn rss_finding(windows: &[Window], bounds: &Bounds) -> Finding {
    let name = "RSS growth from the end of the first window to the end";
    let (Some(first), Some(last)) = (
        windows.first().and_then(|w| w.rss_kib),
        windows.last().and_then(|w| w.rss_kib),
    ) else {
        return Finding {
            name,
            measured: "no RSS samples".to_owned(),
            passed: false,
        };
    };
    let growth = i128::from(last) - i128::from(first);
    // The calls the bound watches over. No leak rate per call is claimed from it: RSS lags the
    // allocator (freed pages are kept and reused), so after a burst growth can hide below it.
    let watched: u64 = windows.iter().skip(1).map(|w| w.answered).sum();
    Finding {
        name,
        measured: format!(
            "{:+.1} MiB ({:.1} → {:.1} MiB; bound {:.0} MiB over {watched} calls)",
            growth as f64 / 1024.0,
            first as f64 / 1024.0,
            last as f64 / 1024.0,
            bounds.rss_growth_kib as f64 / 1024.0
        ),
        passed: growth <= i128::from(bounds.rss_growth_kib),
    }
}

fn p99_finding(windows: &[Window], bounds: &Bounds) -> Finding {
    let name = "every window's p99 within the factor of the median window p99";
    let Some(median) = median_p99(windows) else {
        return Finding {
            name,
            measured: "no windows".to_owned(),
            passed: false,
        };
    };
    let worst = windows.iter().map(|w| w.p99_us).max().unwrap_or(0);
    let factor = worst as f64 / median.max(1) as f64;
    Finding {
        name,
        measured: format!(
            "worst {worst} µs = {factor:.2}x the median {median} µs (bound {:.1}x)",
            bounds.p99_factor
        ),
        passed: factor <= bounds.p99_factor,
    }
}

/// The median of the windows' p99s (the lower middle one for an even count).
fn median_p99(windows: &[Window]) -> Option<u64> {
    let mut p99s: Vec<u64> = windows.iter().map(|w| w.p99_us).collect();
    p99s.sort_unstable();
    p99s.get(p99s.len().checked_sub(1)? / 2).copied()
}

/// Report-ready markdown: the windows, the answers by kind, the verdict.
pub fn markdown(windows: &[Window], totals: &Totals, findings: &[Finding]) -> String {
    let mut text = String::from(
        "| window | calls/s | p50 µs | p99 µs | max µs | server RSS MiB | unintended |\n\
         |---|---|---|---|---|---|---|\n",
    );
    let mut start = 0.0;
    for window in windows {
        let rss = window.rss_kib.map_or_else(
            || "—".to_owned(),
            |kib| format!("{:.1}", kib as f64 / 1024.0),
        );
        let _ = writeln!(
            text,
            "| {} | {:.0} | {} | {} | {} | {rss} | {} |",
            span(start, window.end_seconds),
            window.throughput(),
            window.p50_us,
            window.p99_us,
            window.max_us,
            window.unintended
        );
        start = window.end_seconds;
    }
    text.push_str("\n| token kind | answered as intended | of which allowed | unintended |\n");
    text.push_str("|---|---|---|---|\n");
    for kind in Kind::ALL {
        let count = totals.kinds[kind.index()];
        let _ = writeln!(
            text,
            "| {} | {} | {} | {} |",
            kind.name(),
            count.intended,
            count.allowed,
            count.unintended
        );
    }
    text.push_str("\n| verdict | measured | |\n|---|---|---|\n");
    for finding in findings {
        let _ = writeln!(
            text,
            "| {} | {} | {} |",
            finding.name,
            finding.measured,
            if finding.passed { "pass" } else { "FAIL" }
        );
    }
    text
}

/// `0:00–1:00`, in minutes and seconds.
fn span(from: f64, to: f64) -> String {
    let clock = |seconds: f64| {
        let whole = seconds.round() as u64;
        format!("{}:{:02}", whole / 60, whole % 60)
    };
    format!("{}–{}", clock(from), clock(to))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(allowed: bool, reason: DenyReason) -> Outcome {
        Outcome::Answered {
            allowed,
            reason: reason as i32,
        }
    }

    fn window(end_seconds: f64, p99_us: u64, rss_kib: Option<u64>) -> Window {
        Window {
            end_seconds,
            length_seconds: 60.0,
            answered: 6000,
            unintended: 0,
            p50_us: 200,
            p99_us,
            max_us: p99_us * 3,
            rss_kib,
        }
    }

    fn clean_evidence() -> Evidence {
        Evidence {
            unintended_checks: 0,
            unintended_admin: 0,
            admin_writes: 100,
            rate_limited_allowed: 10,
            rate_limited_ceiling: 20,
            server_errors: 0,
        }
    }

    const BOUNDS: Bounds = Bounds {
        p99_factor: 3.0,
        rss_growth_kib: 16 * 1024,
    };

    #[test]
    fn each_kind_accepts_exactly_its_intended_answers() {
        let intended = |kind, allowed, reason| {
            matches!(
                classify(kind, &answered(allowed, reason)),
                Class::Intended { .. }
            )
        };
        assert!(intended(Kind::Valid, true, DenyReason::Allowed));
        assert!(!intended(Kind::Valid, false, DenyReason::RateLimited));
        assert!(!intended(Kind::Valid, false, DenyReason::StoreUnavailable));
        assert!(intended(Kind::Unknown, false, DenyReason::TokenUnknown));
        assert!(!intended(Kind::Unknown, false, DenyReason::TokenMalformed));
        assert!(intended(Kind::Malformed, false, DenyReason::TokenMalformed));
        assert!(!intended(Kind::Malformed, false, DenyReason::TokenMissing));
        assert!(intended(Kind::Revoked, false, DenyReason::TokenRevoked));
        assert!(!intended(Kind::Revoked, true, DenyReason::Allowed));
        assert!(!intended(
            Kind::Revoked,
            false,
            DenyReason::StoreUnavailable
        ));
        assert!(intended(Kind::RateLimited, true, DenyReason::Allowed));
        assert!(intended(Kind::RateLimited, false, DenyReason::RateLimited));
        assert!(!intended(
            Kind::RateLimited,
            false,
            DenyReason::PermissionDenied
        ));
    }

    #[test]
    fn an_allowed_flag_contradicting_the_reason_is_unintended() {
        assert!(matches!(
            classify(Kind::Valid, &answered(false, DenyReason::Allowed)),
            Class::Unintended(_)
        ));
        assert!(matches!(
            classify(Kind::Revoked, &answered(true, DenyReason::TokenRevoked)),
            Class::Unintended(_)
        ));
        assert_eq!(
            classify(
                Kind::Unknown,
                &Outcome::Answered {
                    allowed: false,
                    reason: 999
                }
            ),
            Class::Unintended("unknown: answered allowed=false reason=#999".to_owned())
        );
    }

    #[test]
    fn failures_are_unintended_and_counted_with_their_description() {
        let mut totals = Totals::default();
        assert!(totals.record(Kind::Valid, &answered(true, DenyReason::Allowed)));
        assert!(totals.record(Kind::RateLimited, &answered(true, DenyReason::Allowed)));
        assert!(totals.record(Kind::RateLimited, &answered(false, DenyReason::RateLimited)));
        assert!(!totals.record(
            Kind::Valid,
            &Outcome::Failed("Unavailable: gone".to_owned())
        ));
        assert!(!totals.record(
            Kind::Valid,
            &Outcome::Failed("Unavailable: gone".to_owned())
        ));
        totals.record_problem(3, "3 sends skipped".to_owned());
        assert_eq!(totals.answered(), 5);
        assert_eq!(totals.unintended(), 5);
        assert_eq!(
            totals.kinds[Kind::RateLimited.index()],
            KindCount {
                intended: 2,
                allowed: 1,
                unintended: 0
            }
        );
        assert_eq!(
            totals
                .examples
                .counts
                .get("valid: no answer: Unavailable: gone"),
            Some(&2)
        );
    }

    #[test]
    fn examples_keep_a_bounded_number_of_distinct_descriptions() {
        let mut examples = Examples::default();
        for index in 0..50 {
            examples.add(format!("problem {index}"), 2);
        }
        assert_eq!(examples.counts.len(), Examples::MAX_DISTINCT);
        assert_eq!(examples.total(), 100);
    }

    #[test]
    fn the_rate_limit_ceiling_is_the_burst_plus_the_refill() {
        assert_eq!(rate_limit_ceiling(10, 30, Duration::ZERO), 310);
        assert_eq!(rate_limit_ceiling(10, 30, Duration::from_secs(120)), 910);
        assert_eq!(rate_limit_ceiling(1, 60, Duration::from_secs(30)), 91);
    }

    #[test]
    fn a_step_is_sustained_only_without_problems_or_a_growing_queue() {
        let held = window(5.0, 4_000, None);
        assert!(sustained(&held));
        let queued = Window {
            p50_us: SUSTAINED_P50_US + 1,
            ..held.clone()
        };
        assert!(!sustained(&queued));
        let failing = Window {
            unintended: 1,
            ..held.clone()
        };
        assert!(!sustained(&failing));
        let silent = Window {
            answered: 0,
            ..held
        };
        assert!(!sustained(&silent));
    }

    #[test]
    fn a_clean_steady_run_passes_every_finding() {
        let windows = [
            window(60.0, 900, Some(40_000)),
            window(120.0, 1200, Some(41_000)),
            window(180.0, 1000, Some(40_500)),
        ];
        let findings = judge(&windows, &clean_evidence(), &BOUNDS);
        assert_eq!(findings.len(), 6);
        assert!(findings.iter().all(|f| f.passed), "{findings:?}");
    }

    #[test]
    fn any_unintended_answer_fails_the_verdict() {
        let windows = [window(60.0, 900, Some(40_000))];
        let evidence = Evidence {
            unintended_checks: 1,
            ..clean_evidence()
        };
        let findings = judge(&windows, &evidence, &BOUNDS);
        assert!(!findings[0].passed);
        let evidence = Evidence {
            unintended_admin: 1,
            ..clean_evidence()
        };
        assert!(!judge(&windows, &evidence, &BOUNDS)[1].passed);
        let evidence = Evidence {
            admin_writes: 0,
            ..clean_evidence()
        };
        assert!(
            !judge(&windows, &evidence, &BOUNDS)[1].passed,
            "a soak whose admin writes never ran proves nothing about them"
        );
        let evidence = Evidence {
            rate_limited_allowed: 21,
            ..clean_evidence()
        };
        assert!(!judge(&windows, &evidence, &BOUNDS)[2].passed);
        let evidence = Evidence {
            server_errors: 1,
            ..clean_evidence()
        };
        assert!(!judge(&windows, &evidence, &BOUNDS)[5].passed);
    }

    #[test]
    fn rss_growth_beyond_the_bound_fails_and_a_missing_sample_fails() {
        let growing = [
            window(60.0, 900, Some(40_000)),
            window(120.0, 900, Some(50_000)),
            window(180.0, 900, Some(40_000 + 16 * 1024 + 1)),
        ];
        let finding = &judge(&growing, &clean_evidence(), &BOUNDS)[3];
        assert!(!finding.passed);
        assert!(
            finding.measured.ends_with("bound 16 MiB over 12000 calls)"),
            "{finding:?}"
        );
        let shrinking = [
            window(60.0, 900, Some(60_000)),
            window(120.0, 900, Some(40_000)),
        ];
        assert!(judge(&shrinking, &clean_evidence(), &BOUNDS)[3].passed);
        let unsampled = [window(60.0, 900, Some(40_000)), window(120.0, 900, None)];
        assert!(!judge(&unsampled, &clean_evidence(), &BOUNDS)[3].passed);
    }

    #[test]
    fn one_window_with_a_p99_beyond_the_factor_fails() {
        let windows = [
            window(60.0, 1000, Some(40_000)),
            window(120.0, 1100, Some(40_000)),
            window(180.0, 3301, Some(40_000)),
        ];
        let finding = &judge(&windows, &clean_evidence(), &BOUNDS)[4];
        assert!(!finding.passed);
        assert!(
            finding
                .measured
                .starts_with("worst 3301 µs = 3.00x the median 1100 µs"),
            "{finding:?}"
        );
        let within = [
            window(60.0, 1000, Some(40_000)),
            window(120.0, 1100, Some(40_000)),
            window(180.0, 3300, Some(40_000)),
        ];
        assert!(judge(&within, &clean_evidence(), &BOUNDS)[4].passed);
    }

    #[test]
    fn the_markdown_has_a_row_per_window_and_kind_and_finding() {
        let windows = [
            window(60.0, 900, Some(40_960)),
            window(120.0, 950, Some(41_984)),
        ];
        let findings = judge(&windows, &clean_evidence(), &BOUNDS);
        let text = markdown(&windows, &Totals::default(), &findings);
        assert!(
            text.contains("| 0:00–1:00 | 100 | 200 | 900 | 2700 | 40.0 | 0 |"),
            "{text}"
        );
        assert!(
            text.contains("| 1:00–2:00 | 100 | 200 | 950 | 2850 | 41.0 | 0 |"),
            "{text}"
        );
        assert!(text.contains("| rate-limited | 0 | 0 | 0 |"), "{text}");
        assert_eq!(text.matches("| pass |").count(), 6, "{text}");
    }
}
