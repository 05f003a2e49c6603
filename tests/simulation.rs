//! Proof 1: deterministic simulation.
//!
//! A simulated pgmq database and clock drive the real core through seeded
//! random schedules (faults, kills, restarts, stops, deprecations, several
//! workers on one queue), and the invariants of `DESIGN.md` are checked
//! after each. See `tests/sim/` for the parts.
//!
//! - `cargo test --test simulation` runs the default sweep.
//! - `EDGE_WORKER_SIM_SEEDS=<n>` runs seeds `0..n` instead.
//! - `EDGE_WORKER_SIM_SEED=<seed>` replays one seed and prints its summary;
//!   add `EDGE_WORKER_SIM_TRACE=1` to print its whole trace.

mod sim;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use sim::clock::elapsed;
use sim::invariants::{Counts, Invariant};
use sim::world::{self, Report, Summary};

/// Seeds the default sweep runs.
const DEFAULT_SEEDS: u64 = 10_000;
/// The sweep is split into this many tests, which cargo runs in parallel;
/// each runs the seeds equal to its part modulo `PARTS`.
const PARTS: u64 = 4;
/// Trace lines printed before a failing seed's first violation.
const TRACE_TAIL: usize = 60;
/// Seeds a regression test looks through for a schedule in which its
/// scenario happens.
const SCENARIO_SEEDS: u64 = 2_000;

#[test]
fn seeded_schedules_keep_every_invariant_part_1_of_4() {
    sweep(0);
}

#[test]
fn seeded_schedules_keep_every_invariant_part_2_of_4() {
    sweep(1);
}

#[test]
fn seeded_schedules_keep_every_invariant_part_3_of_4() {
    sweep(2);
}

#[test]
fn seeded_schedules_keep_every_invariant_part_4_of_4() {
    sweep(3);
}

#[test]
fn a_seed_replays_identically() {
    for seed in [3, 1_234, 987_654_321] {
        let a = world::run(seed, true);
        let b = world::run(seed, true);
        assert_eq!(a.trace.lines(), b.trace.lines(), "seed {seed} diverged");
        assert!(!a.trace.lines().is_empty());
    }
}

#[test]
fn a_retry_sent_again_after_a_lost_reply_changes_nothing() {
    assert_scenario_keeps_invariants("a retry sent again for a closed attempt", |c| {
        c.closed_retries
    });
}

#[test]
fn an_extend_landing_after_a_retry_never_cuts_its_delay_short() {
    assert_scenario_keeps_invariants("an extend landing after the retry", |c| c.closed_extends);
}

#[test]
fn a_message_claimed_again_after_its_outcome_starts_over_under_one_fence() {
    assert_scenario_keeps_invariants("a decided message claimed again", |c| c.start_overs);
}

#[test]
fn a_failed_release_is_abandoned_and_never_touches_the_next_claim() {
    assert_scenario_keeps_invariants("a release that failed", |c| c.abandoned_releases);
}

#[test]
fn a_message_claimed_again_while_its_handler_runs_is_completed_by_that_handler() {
    assert_scenario_keeps_invariants("a completion of an adopted claim", |c| {
        c.adopted_completions
    });
}

#[test]
fn a_failed_extend_backs_off_before_it_is_sent_again() {
    assert_scenario_keeps_invariants("an extend sent again after a failure", |c| {
        c.extends_after_failure
    });
}

#[test]
fn a_release_owed_after_a_stop_goes_out_once_the_database_takes_writes_again() {
    // Worker 1's extend failed at 10.4 s with an 8.9 s backoff, and other
    // writes used to wait all of it: the release of a message claimed after
    // its deprecation waited until its lease lapsed at 15.8 s and worker 2
    // read the message again. A failed extend now holds other writes no
    // longer than the extend itself waits.
    let report = world::run(9_865, false);
    if !report.violations.is_empty() {
        panic!("{}", failure_message(1, std::slice::from_ref(&report)));
    }
}

/// Runs this part's share of the sweep, or replays one seed (in part 1).
fn sweep(part: u64) {
    if let Some(seed) = env_u64("EDGE_WORKER_SIM_SEED") {
        if part == 0 {
            replay(seed);
        }
        return;
    }
    let seeds = env_u64("EDGE_WORKER_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let mut total = Summary::default();
    let mut failed: Vec<Report> = Vec::new();
    for seed in (part..seeds).step_by(PARTS as usize) {
        let report = world::run(seed, false);
        total.add(&report.summary);
        if !report.violations.is_empty() {
            failed.push(report);
        }
    }
    let ran = seeds.saturating_sub(part).div_ceil(PARTS);
    println!(
        "part {} of {PARTS}, {ran} seeds: {}",
        part + 1,
        describe(&total)
    );
    if !failed.is_empty() {
        panic!("{}", failure_message(ran, &failed));
    }
}

/// Replays one seed with its trace and fails on any violation.
fn replay(seed: u64) {
    let report = world::run(seed, true);
    if std::env::var_os("EDGE_WORKER_SIM_TRACE").is_some() {
        for line in report.trace.lines() {
            println!("{line}");
        }
    }
    println!("seed {seed}: {}", describe(&report.summary));
    for v in &report.violations {
        println!("{v}");
    }
    if !report.violations.is_empty() {
        panic!("{}", failure_message(1, std::slice::from_ref(&report)));
    }
}

/// Finds the first seed whose schedule has `scenario` happen (`count` of
/// its counters above zero) and fails if it breaks an invariant, or if no
/// seed below `SCENARIO_SEEDS` has it happen.
/// Looking the seed up, rather than naming it, keeps the test on its
/// scenario when the way schedules are drawn changes.
fn assert_scenario_keeps_invariants(scenario: &str, count: impl Fn(&Counts) -> u64) {
    let found = (0..SCENARIO_SEEDS)
        .map(|seed| world::run(seed, false))
        .find(|report| count(&report.summary.counts) > 0);
    let Some(report) = found else {
        panic!("no seed below {SCENARIO_SEEDS} has {scenario} happen");
    };
    println!("seed {} has {scenario} happen", report.seed);
    if !report.violations.is_empty() {
        panic!("{}", failure_message(1, std::slice::from_ref(&report)));
    }
}

/// The panic message for failing seeds: how many broke each invariant, each
/// one's first violation, the trace leading to the first failing seed's
/// first violation, and how to replay it.
fn failure_message(seeds: u64, failed: &[Report]) -> String {
    let mut out = format!("{} of {seeds} seeds broke an invariant\n", failed.len());
    let mut by_invariant: BTreeMap<Invariant, Vec<u64>> = BTreeMap::new();
    for report in failed {
        let broken: BTreeSet<Invariant> = report.violations.iter().map(|v| v.invariant).collect();
        for invariant in broken {
            by_invariant.entry(invariant).or_default().push(report.seed);
        }
    }
    for (invariant, seeds) in &by_invariant {
        let first: Vec<_> = seeds.iter().take(10).collect();
        let _ = writeln!(
            out,
            "  {invariant}: {} seeds, such as {first:?}",
            seeds.len()
        );
    }
    for report in failed.iter().take(20) {
        let _ = writeln!(
            out,
            "  seed {}: {} ({} violations)",
            report.seed,
            report.violations[0],
            report.violations.len()
        );
    }
    let first = &failed[0];
    let at = elapsed(first.violations[0].at).as_millis();
    let traced = world::run(first.seed, true);
    let lines = traced.trace.lines();
    let end = lines
        .iter()
        .position(|line| trace_millis(line) > at)
        .unwrap_or(lines.len());
    let _ = writeln!(
        out,
        "trace of seed {} up to its first violation:",
        first.seed
    );
    for line in &lines[end.saturating_sub(TRACE_TAIL)..end] {
        let _ = writeln!(out, "  {line}");
    }
    let _ = write!(
        out,
        "replay: EDGE_WORKER_SIM_SEED={} EDGE_WORKER_SIM_TRACE=1 cargo test --test simulation \
         -- --nocapture",
        first.seed
    );
    out
}

/// The time a trace line starts with, in simulated milliseconds.
fn trace_millis(line: &str) -> u128 {
    line.split_whitespace()
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0)
}

fn describe(s: &Summary) -> String {
    let c = &s.counts;
    format!(
        "{} messages ({} archived, {} dead-lettered), {} workers ({} killed), {} handler runs, \
         {} re-runs after a kill or stop, {} lease lapses excused by faults, {} claims adopted \
         by a running handler, {} claims started over, {} failed releases abandoned, {} extends \
         re-sent after a failure, {} retries and {} extends of a closed attempt skipped, {} \
         steps, {} s simulated",
        s.messages,
        s.archived,
        s.dead_lettered,
        s.workers,
        s.kills,
        c.runs,
        c.kill_reruns,
        c.excused_lapses,
        c.adoptions,
        c.start_overs,
        c.abandoned_releases,
        c.extends_after_failure,
        c.closed_retries,
        c.closed_extends,
        s.steps,
        s.sim_ms / 1000
    )
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let parsed = value
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{name}={value:?} is not a whole number"));
    Some(parsed)
}
