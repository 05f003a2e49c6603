//! The invariants of `DESIGN.md`, checked while a schedule runs and at its
//! end.
//!
//! Two observers share the work. [`Ledger`] sees the database side: which
//! worker holds which lease, every write that lands, and the tables at the
//! end. [`WorkerWatch`] sees one core: the events it is fed and the commands
//! it returns. Neither changes what happens; both record [`Violation`]s,
//! whose details name the worker and message they are about.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use edge_worker::core::backoff::{DB_BACKOFF_BASE, DB_BACKOFF_MAX};
use edge_worker::core::config::{Jitter, RetryConfig, RetryStrategy};
use edge_worker::core::error_text::ErrorText;
use edge_worker::core::event::{
    AbortReason, Command, Event, Fenced, LogRecord, MsgId, Outcome, Stats, StopReason, WriteBatch,
    WriteId,
};
use edge_worker::core::machine::MAX_RETRY_AFTER;
use edge_worker::core::{Config, Timestamp};

use super::clock::EPOCH;
use super::db::{SimDb, Taken};

/// Identifies one worker incarnation in a schedule.
pub type HostId = usize;

/// The invariants, one name each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Invariant {
    /// Every message sent ends archived or dead-lettered, exactly once.
    NothingLost,
    /// The queue drains once faults stop and a worker runs.
    Drains,
    /// Never more than `maxConcurrent` handlers in flight per worker.
    BoundedWork,
    /// A message is archived only for a handler run that succeeded.
    SuccessRecorded,
    /// A live worker whose calls for a message went through keeps its lease
    /// until it completes or releases the message.
    LeasesHold,
    /// A write that was already applied, or that belongs to another claim,
    /// changes nothing.
    FencedWrites,
    /// Retries use the policy's delay and the message stays invisible for it.
    RetriesFollowPolicy,
    /// Dead letters only after `limit + 1` attempts or a non-retryable
    /// failure, with the error recorded.
    DeadLettersFollowPolicy,
    /// After a stop request nothing new is claimed or started, unstarted
    /// messages are released before their lease ends (so without using an
    /// attempt) and running handlers are aborted.
    CleanRetirement,
    /// A worker that is not killed ends `stopped()`, by its deadline.
    EndsStopped,
    /// The counters a worker reports match what the database did for it.
    StatsMatch,
    /// `next_wake` never asks to be woken again and again at the same time.
    NoBusyLoop,
    /// After a database call fails, the same kind of call waits at least the
    /// shortest backoff before it is sent again.
    BacksOff,
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One broken invariant.
#[derive(Debug, Clone)]
pub struct Violation {
    /// Which invariant.
    pub invariant: Invariant,
    /// When it was seen.
    pub at: Timestamp,
    /// What happened, with ids.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[t={} ms] {}: {}",
            self.at.as_millis().saturating_sub(EPOCH.as_millis()),
            self.invariant,
            self.detail
        )
    }
}

/// Counters of what happened, for the summary line.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Handler runs started.
    pub runs: u64,
    /// Runs started for a message whose earlier run vanished with a killed
    /// or retired worker (allowed: delivery is at least once).
    pub kill_reruns: u64,
    /// Runs that vanished with their worker.
    pub vanished: u64,
    /// Leases that lapsed where faults excuse it.
    pub excused_lapses: u64,
    /// Claims a worker adopted for the handler it still ran for the message
    /// (`lease_reclaimed`).
    pub adoptions: u64,
    /// Archives, retries and dead letters written for an adopted claim.
    pub adopted_completions: u64,
    /// Claims of a message whose outcome the worker had decided for an
    /// older claim, started over (`claimed_again`).
    pub start_overs: u64,
    /// Failed releases given up (`release_abandoned`).
    pub abandoned_releases: u64,
    /// Extensions sent again after one failed.
    pub extends_after_failure: u64,
    /// Retries the database skipped because their attempt was closed while
    /// the fence still matched: a retry sent again after its reply was lost.
    pub closed_retries: u64,
    /// Extensions the database skipped for the same reason: one that landed
    /// after the retry.
    pub closed_extends: u64,
}

impl Counts {
    /// Adds `other` into these.
    pub fn add(&mut self, other: &Counts) {
        self.runs += other.runs;
        self.kill_reruns += other.kill_reruns;
        self.vanished += other.vanished;
        self.excused_lapses += other.excused_lapses;
        self.adoptions += other.adoptions;
        self.adopted_completions += other.adopted_completions;
        self.start_overs += other.start_overs;
        self.abandoned_releases += other.abandoned_releases;
        self.extends_after_failure += other.extends_after_failure;
        self.closed_retries += other.closed_retries;
        self.closed_extends += other.closed_extends;
    }
}

/// A lease as the ledger sees it: who holds which claim.
#[derive(Debug, Clone, Copy)]
struct Held {
    host: HostId,
    read_ct: i32,
    /// A call for this message was disturbed (fault or slow), so losing the
    /// lease is not the core's fault.
    excused: bool,
    /// Claimed after the worker's stop: no handler needs the lease, and the
    /// worker owes a release that gives the read back before it ends.
    owes_release: bool,
}

/// How handler runs of one claim ended, as the cores were told.
#[derive(Debug, Clone, Copy, Default)]
struct Results {
    succeeded: bool,
    non_retryable: bool,
}

/// Database-side and cross-worker checks.
pub struct Ledger {
    limit: u32,
    /// Every violation seen so far.
    pub violations: Vec<Violation>,
    /// What happened.
    pub counts: Counts,
    sent: Vec<MsgId>,
    active: BTreeSet<HostId>,
    leases: BTreeMap<MsgId, Held>,
    retried: BTreeSet<(MsgId, i32)>,
    released: BTreeSet<(MsgId, i32, HostId)>,
    results: BTreeMap<(MsgId, i32), Results>,
    vanished: BTreeSet<MsgId>,
    /// Per worker, its last failed write, while no write it sent after that
    /// failure has gone through: its writes may be backing off.
    write_trouble: BTreeMap<HostId, Timestamp>,
}

impl Ledger {
    /// A ledger for workers running `config`.
    pub fn new(config: &Config) -> Self {
        Self {
            limit: config.retry.limit,
            violations: Vec::new(),
            counts: Counts::default(),
            sent: Vec::new(),
            active: BTreeSet::new(),
            leases: BTreeMap::new(),
            retried: BTreeSet::new(),
            released: BTreeSet::new(),
            results: BTreeMap::new(),
            vanished: BTreeSet::new(),
            write_trouble: BTreeMap::new(),
        }
    }

    /// Records a violation.
    pub fn violate(&mut self, invariant: Invariant, at: Timestamp, detail: String) {
        self.violations.push(Violation {
            invariant,
            at,
            detail,
        });
    }

    /// A message was sent.
    pub fn sent(&mut self, msg_id: MsgId) {
        self.sent.push(msg_id);
    }

    /// The worker runs and may hold leases.
    pub fn host_active(&mut self, host: HostId) {
        self.active.insert(host);
    }

    /// The worker was killed, stopped, or is marking itself stopped: it
    /// holds no lease any more.
    pub fn host_gone(&mut self, host: HostId) {
        self.active.remove(&host);
        self.leases.retain(|_, held| held.host != host);
    }

    /// A read took `taken` for `host`. The message must not be inside a
    /// retry delay, nor leased by a live worker whose calls for it went
    /// through.
    pub fn read(&mut self, now: Timestamp, host: HostId, taken: &Taken, disturbed: bool) {
        let msg_id = taken.claimed.msg_id;
        if let Some(until) = taken.retry_until.filter(|until| now < *until) {
            self.violate(
                Invariant::RetriesFollowPolicy,
                now,
                format!(
                    "msg {msg_id} read {} ms before its retry delay ended; {} set its vt last",
                    now.until(until).as_millis(),
                    taken.vt_set_by
                ),
            );
        }
        if let Some(held) = self.leases.remove(&msg_id) {
            if held.read_ct == taken.claimed.read_ct - 1 {
                if held.excused {
                    self.counts.excused_lapses += 1;
                } else if held.owes_release {
                    // Writes may wait out a backoff, and the release with
                    // them, but not once the database has taken a write
                    // sent after the failure.
                    let backing_off = self
                        .write_trouble
                        .get(&held.host)
                        .is_some_and(|&failed| now < failed + DB_BACKOFF_MAX);
                    if backing_off {
                        self.counts.excused_lapses += 1;
                    } else {
                        self.violate(
                            Invariant::CleanRetirement,
                            now,
                            format!(
                                "msg {msg_id}, claimed by live worker {} after its stop, read \
                                 again (read_ct {}) before it was released: the claim used up \
                                 an attempt",
                                held.host, taken.claimed.read_ct
                            ),
                        );
                    }
                } else {
                    self.violate(
                        Invariant::LeasesHold,
                        now,
                        format!(
                            "msg {msg_id} read again (read_ct {}) while live worker {} held it \
                             and none of its calls for it failed",
                            taken.claimed.read_ct, held.host
                        ),
                    );
                }
            }
        }
        if self.active.contains(&host) {
            self.leases.insert(
                msg_id,
                Held {
                    host,
                    read_ct: taken.claimed.read_ct,
                    excused: disturbed,
                    owes_release: false,
                },
            );
        }
    }

    /// A write of `host` failed at `now`.
    pub fn write_failed(&mut self, host: HostId, now: Timestamp) {
        self.write_trouble.insert(host, now);
    }

    /// A write of `host` sent at `sent_at` went through.
    pub fn write_succeeded(&mut self, host: HostId, sent_at: Timestamp) {
        if self
            .write_trouble
            .get(&host)
            .is_some_and(|&failed| failed <= sent_at)
        {
            self.write_trouble.remove(&host);
        }
    }

    /// `host` claimed `msg_id` at `read_ct` after its stop and must release
    /// it at once.
    pub fn owes_release(&mut self, host: HostId, msg_id: MsgId, read_ct: i32) {
        if let Some(held) = self.leases.get_mut(&msg_id) {
            if held.host == host && held.read_ct == read_ct {
                held.owes_release = true;
            }
        }
    }

    /// A call of `host` that extends or releases these leases was
    /// disturbed.
    pub fn excuse(&mut self, host: HostId, items: &[Fenced]) {
        for fenced in items {
            if let Some(held) = self.leases.get_mut(&fenced.msg_id) {
                if held.host == host && held.read_ct == fenced.read_ct {
                    held.excused = true;
                }
            }
        }
    }

    /// A handler run for `fenced` settled and its core was told so.
    /// `timed_out` runs count as failed whatever they returned.
    pub fn settled(&mut self, fenced: Fenced, outcome: &Outcome, timed_out: bool) {
        let results = self
            .results
            .entry((fenced.msg_id, fenced.read_ct))
            .or_default();
        match outcome {
            Outcome::Succeeded if !timed_out => results.succeeded = true,
            Outcome::Failed(failure) if !timed_out && !failure.retryable => {
                results.non_retryable = true
            }
            Outcome::Succeeded | Outcome::Failed(_) => {}
        }
    }

    /// A handler run started.
    pub fn run_started(&mut self, msg_id: MsgId) {
        self.counts.runs += 1;
        if self.vanished.remove(&msg_id) {
            self.counts.kill_reruns += 1;
        }
    }

    /// A running handler vanished with its worker.
    pub fn run_vanished(&mut self, msg_id: MsgId) {
        self.counts.vanished += 1;
        self.vanished.insert(msg_id);
    }

    /// A batch write of `host` landed and changed `applied`.
    pub fn write_applied(
        &mut self,
        now: Timestamp,
        host: HostId,
        batch: &WriteBatch,
        applied: &[MsgId],
    ) {
        for fenced in batch.messages() {
            if applied.contains(&fenced.msg_id) {
                self.applied(now, host, batch, fenced);
            }
        }
    }

    fn applied(&mut self, now: Timestamp, host: HostId, batch: &WriteBatch, fenced: Fenced) {
        let key = (fenced.msg_id, fenced.read_ct);
        let held = self.leases.get(&fenced.msg_id).copied();
        if let Some(held) = held.filter(|h| h.host != host) {
            let note = if self.released.contains(&(key.0, key.1, host)) {
                ", after its own release of that claim"
            } else {
                ""
            };
            self.violate(
                Invariant::FencedWrites,
                now,
                format!(
                    "{} of worker {host} for msg {} (read_ct {}) applied to the claim of \
                     worker {}{note}",
                    batch.kind(),
                    key.0,
                    key.1,
                    held.host
                ),
            );
        }
        let results = self.results.get(&key).copied().unwrap_or_default();
        match batch {
            WriteBatch::Extend { .. } => return,
            WriteBatch::Release(_) => {
                self.released.insert((key.0, key.1, host));
            }
            WriteBatch::Archive(_) if !results.succeeded => self.violate(
                Invariant::SuccessRecorded,
                now,
                format!(
                    "msg {} archived at read_ct {} without a successful run",
                    key.0, key.1
                ),
            ),
            WriteBatch::Retry(_) if !self.retried.insert(key) => self.violate(
                Invariant::FencedWrites,
                now,
                format!(
                    "retry of msg {} attempt {} applied twice (error recorded twice, delay \
                     restarted)",
                    key.0, key.1
                ),
            ),
            WriteBatch::DeadLetter(_) => {
                let attempts_used = u32::try_from(key.1).unwrap_or(0) > self.limit;
                if !attempts_used && !results.non_retryable {
                    self.violate(
                        Invariant::DeadLettersFollowPolicy,
                        now,
                        format!(
                            "msg {} dead-lettered at read_ct {} with retries left and no \
                             non-retryable failure",
                            key.0, key.1
                        ),
                    );
                }
            }
            WriteBatch::Archive(_) | WriteBatch::Retry(_) => {}
        }
        if held.is_some_and(|h| h.host == host) {
            self.leases.remove(&fenced.msg_id);
        }
    }

    /// The end of the schedule: every message sent is archived or
    /// dead-lettered, exactly once, and every dead letter has its error.
    pub fn finish(&mut self, now: Timestamp, db: &SimDb) {
        let mut archived: BTreeMap<MsgId, u32> = BTreeMap::new();
        for row in &db.archive {
            *archived.entry(row.msg_id).or_default() += 1;
        }
        let mut dead: BTreeMap<MsgId, u32> = BTreeMap::new();
        for row in &db.dead_letters {
            *dead.entry(row.msg_id).or_default() += 1;
        }
        let errors: BTreeMap<(MsgId, i32), &ErrorText> = db
            .attempt_errors
            .iter()
            .map(|e| ((e.msg_id, e.attempt), &e.error))
            .collect();
        let sent = std::mem::take(&mut self.sent);
        for &msg_id in &sent {
            let a = archived.get(&msg_id).copied().unwrap_or(0);
            let d = dead.get(&msg_id).copied().unwrap_or(0);
            if a + d != 1 {
                let in_queue = db.queue.get(&msg_id).map(|row| row.read_ct);
                self.violate(
                    Invariant::NothingLost,
                    now,
                    format!(
                        "msg {msg_id}: archived {a} times, dead-lettered {d} times, in queue \
                         with read_ct {in_queue:?}"
                    ),
                );
            }
        }
        for row in &db.dead_letters {
            let recorded = errors.get(&(row.msg_id, row.read_ct));
            if recorded != Some(&&row.error) || row.error.name.is_empty() {
                self.violate(
                    Invariant::DeadLettersFollowPolicy,
                    now,
                    format!(
                        "dead letter {} does not have its error recorded for attempt {}",
                        row.msg_id, row.read_ct
                    ),
                );
            }
        }
        let total = archived.len() + dead.len();
        if total != sent.len() {
            self.violate(
                Invariant::NothingLost,
                now,
                format!(
                    "{} messages sent, {total} archived or dead-lettered",
                    sent.len()
                ),
            );
        }
        self.sent = sent;
    }
}

/// A handler run as one worker's watch sees it, under the read count it
/// was started with.
#[derive(Debug, Clone)]
struct RunSeen {
    /// The read count its completion and extensions carry: the one it was
    /// started with, or that of the latest claim that adopted it.
    fence: i32,
    outcome: Option<Outcome>,
    timed_out: bool,
    aborted: bool,
    /// The core decided the attempt (after a timeout) while the handler
    /// still ran; it holds no slot any more.
    abandoned: bool,
}

/// Checks on what one core is fed and what it returns.
///
/// A claim of a message whose handler still runs here (its lease lapsed and
/// this worker read it again) is adopted: the core logs `lease_reclaimed`
/// and the running handler carries on as the run of the new claim. From
/// then on the watch judges that run's completion under the new read count,
/// as pgmq does: the lapse used up an attempt.
pub struct WorkerWatch {
    host: HostId,
    max_concurrent: u32,
    retry: RetryConfig,
    /// Every run started, by `(msg_id, read_ct it was started with)`.
    runs: BTreeMap<(MsgId, i32), RunSeen>,
    /// The runs that are in flight: the keys of `runs` whose run has not
    /// settled and was not abandoned.
    running: BTreeSet<(MsgId, i32)>,
    /// Claims adopted by a running handler, `(msg_id, read_ct)` of the
    /// claim, and the read count that run was started with.
    adopted: BTreeMap<(MsgId, i32), i32>,
    unstarted: BTreeSet<(MsgId, i32)>,
    exhausted: BTreeSet<(MsgId, i32)>,
    stopping: bool,
    claimed_after_stop: Vec<(MsgId, i32)>,
    abort_due: Option<StopReason>,
    last_write_failure: Option<Timestamp>,
    failed_at: BTreeMap<&'static str, Timestamp>,
    deadline_passed: bool,
    marking_stopped: bool,
    /// Writes in flight, with when they were sent.
    writes: BTreeMap<WriteId, (WriteBatch, Timestamp)>,
    archived: u64,
    dead_lettered: u64,
}

impl WorkerWatch {
    /// A watch over worker `host` running `config`.
    pub fn new(host: HostId, config: &Config) -> Self {
        Self {
            host,
            max_concurrent: config.concurrency.max_concurrent,
            retry: config.retry.clone(),
            runs: BTreeMap::new(),
            running: BTreeSet::new(),
            unstarted: BTreeSet::new(),
            exhausted: BTreeSet::new(),
            adopted: BTreeMap::new(),
            stopping: false,
            claimed_after_stop: Vec::new(),
            abort_due: None,
            last_write_failure: None,
            failed_at: BTreeMap::new(),
            deadline_passed: false,
            marking_stopped: false,
            writes: BTreeMap::new(),
            archived: 0,
            dead_lettered: 0,
        }
    }

    /// Whether the worker was asked to stop or saw its deprecation.
    pub fn stopping(&self) -> bool {
        self.stopping
    }

    /// Whether the run started for `(msg_id, read_ct)` was aborted for its
    /// timeout.
    pub fn timed_out(&self, msg_id: MsgId, read_ct: i32) -> bool {
        self.runs
            .get(&(msg_id, read_ct))
            .is_some_and(|r| r.timed_out)
    }

    /// The claim whose fence the run started for `(msg_id, read_ct)`
    /// carries now: its own, or the latest that adopted it.
    pub fn fence_of_run(&self, msg_id: MsgId, read_ct: i32) -> Fenced {
        let read_ct = self
            .runs
            .get(&(msg_id, read_ct))
            .map_or(read_ct, |run| run.fence);
        Fenced { msg_id, read_ct }
    }

    /// The run a write fenced with `f` completes: `runs`' key.
    fn run_of(&self, f: Fenced) -> (MsgId, i32) {
        let started = self
            .adopted
            .get(&(f.msg_id, f.read_ct))
            .copied()
            .unwrap_or(f.read_ct);
        (f.msg_id, started)
    }

    /// Sees `event` just before the core does.
    pub fn delivered(&mut self, now: Timestamp, event: &Event, ledger: &mut Ledger) {
        match event {
            Event::ClaimFinished(claimed) => {
                for c in claimed {
                    self.unstarted.insert((c.msg_id, c.read_ct));
                    if self.stopping {
                        self.claimed_after_stop.push((c.msg_id, c.read_ct));
                    }
                }
            }
            Event::HandlerFinished {
                msg_id,
                read_ct,
                outcome,
            } => {
                if let Some(run) = self.runs.get_mut(&(*msg_id, *read_ct)) {
                    run.outcome = Some(outcome.clone());
                    self.running.remove(&(*msg_id, *read_ct));
                }
            }
            Event::WriteFinished { id, applied } => {
                let Some((batch, sent_at)) = self.writes.remove(id) else {
                    return;
                };
                ledger.write_succeeded(self.host, sent_at);
                match batch {
                    WriteBatch::Archive(_) => self.archived += applied.len() as u64,
                    WriteBatch::DeadLetter(_) => self.dead_lettered += applied.len() as u64,
                    _ => {}
                }
            }
            Event::WriteFailed { id, .. } => {
                if let Some((batch, _)) = self.writes.remove(id) {
                    self.failed_at.insert(call_kind(&batch), now);
                }
                self.last_write_failure = Some(now);
                ledger.write_failed(self.host, now);
            }
            Event::SetupFailed(_) => {
                self.failed_at.insert("setup", now);
            }
            Event::ClaimFailed(_) => {
                self.failed_at.insert("claim", now);
            }
            Event::HeartbeatFailed(_) => {
                self.failed_at.insert("heartbeat", now);
            }
            Event::HeartbeatFinished { deprecated: true } => self.stopping = true,
            Event::StopRequested { reason, .. } => {
                self.stopping = true;
                self.abort_due = Some(*reason);
            }
            _ => {}
        }
    }

    /// Sees the commands one `poll` returned.
    pub fn commands(&mut self, now: Timestamp, commands: &[Command], ledger: &mut Ledger) {
        let mut released = BTreeSet::new();
        let mut aborted_for_stop = BTreeSet::new();
        for command in commands {
            self.check_backoff(now, command, ledger);
            match command {
                Command::Claim { .. } if self.stopping => ledger.violate(
                    Invariant::CleanRetirement,
                    now,
                    format!("worker {} claimed after its stop request", self.host),
                ),
                Command::StartHandler {
                    msg_id,
                    read_ct,
                    attempt,
                } => self.started(now, *msg_id, *read_ct, *attempt, ledger),
                Command::AbortHandler { msg_id, reason } => {
                    self.aborted(*msg_id, *reason);
                    if let AbortReason::Stopping(_) = reason {
                        aborted_for_stop.insert(*msg_id);
                    }
                }
                Command::Write { id, batch } => {
                    self.check_write(now, batch, &mut released, ledger);
                    self.writes.insert(*id, (batch.clone(), now));
                }
                Command::Log(record) => match record.event {
                    "drain_deadline_passed" => self.deadline_passed = true,
                    "handler_abandoned" => {
                        // The core gave up on a handler that ignored its
                        // abort: from now on it holds no slot, though it
                        // still runs.
                        if let Some(msg_id) = msg_id_field(record) {
                            self.abandon(msg_id);
                        }
                    }
                    "lease_reclaimed" => {
                        let (msg_id, read_ct) = claim_fields(record);
                        ledger.counts.adoptions += 1;
                        self.adopt(now, msg_id, read_ct, ledger);
                    }
                    "claimed_again" => {
                        let (msg_id, read_ct) = claim_fields(record);
                        ledger.counts.start_overs += 1;
                        self.start_over(now, msg_id, read_ct, ledger);
                    }
                    "release_abandoned" => ledger.counts.abandoned_releases += 1,
                    _ => {}
                },
                Command::MarkStopped { .. } => self.marking_stopped = true,
                _ => {}
            }
        }
        if self.marking_stopped {
            // Past its deadline (or never set up): what it still holds keeps
            // its lease until the lease expires.
            self.claimed_after_stop.clear();
            self.abort_due = None;
        }
        self.check_releases(now, &released, ledger);
        if let Some(reason) = self.abort_due.take() {
            self.check_aborts(now, reason, &aborted_for_stop, ledger);
        }
        self.check_in_flight(now, ledger);
    }

    /// The worker reached `stopped()` with `result` and these counters.
    pub fn retired(
        &mut self,
        now: Timestamp,
        result: &Result<(), String>,
        stats: &Stats,
        ledger: &mut Ledger,
    ) {
        if let Err(reason) = result {
            ledger.violate(
                Invariant::EndsStopped,
                now,
                format!("worker {} stopped with an error: {reason}", self.host),
            );
        }
        if !self.unstarted.is_empty() && !self.deadline_passed {
            ledger.violate(
                Invariant::CleanRetirement,
                now,
                format!(
                    "worker {} stopped before its deadline holding unstarted, unreleased \
                     messages {:?}",
                    self.host, self.unstarted
                ),
            );
        }
        if stats.succeeded != self.archived || stats.dead_lettered != self.dead_lettered {
            ledger.violate(
                Invariant::StatsMatch,
                now,
                format!(
                    "worker {} reports {} succeeded and {} dead-lettered; the database \
                     confirmed {} and {}",
                    self.host,
                    stats.succeeded,
                    stats.dead_lettered,
                    self.archived,
                    self.dead_lettered
                ),
            );
        }
    }

    /// The in-flight runs of `msg_id`, as `(msg_id, read_ct)`.
    fn running_of(&self, msg_id: MsgId) -> impl Iterator<Item = (MsgId, i32)> + '_ {
        self.running
            .range((msg_id, i32::MIN)..=(msg_id, i32::MAX))
            .copied()
    }

    fn started(
        &mut self,
        now: Timestamp,
        msg_id: MsgId,
        read_ct: i32,
        attempt: u32,
        ledger: &mut Ledger,
    ) {
        if self.stopping {
            ledger.violate(
                Invariant::CleanRetirement,
                now,
                format!(
                    "worker {} started msg {msg_id} after its stop request",
                    self.host
                ),
            );
        }
        if !self.unstarted.remove(&(msg_id, read_ct)) {
            ledger.violate(
                Invariant::FencedWrites,
                now,
                format!(
                    "worker {} started msg {msg_id} read_ct {read_ct}, which it did not claim",
                    self.host
                ),
            );
        }
        if i64::from(attempt) != i64::from(read_ct.max(1)) {
            ledger.violate(
                Invariant::RetriesFollowPolicy,
                now,
                format!("msg {msg_id} started as attempt {attempt} with read_ct {read_ct}"),
            );
        }
        if let Some((_, first)) = self.running_of(msg_id).next() {
            ledger.violate(
                Invariant::BoundedWork,
                now,
                format!(
                    "worker {} starts msg {msg_id} for read_ct {read_ct} while its run from \
                     read_ct {first} still holds a slot",
                    self.host
                ),
            );
        }
        // A fresh start is its own run, whatever the claim was before.
        self.adopted.remove(&(msg_id, read_ct));
        self.runs.insert(
            (msg_id, read_ct),
            RunSeen {
                fence: read_ct,
                outcome: None,
                timed_out: false,
                aborted: false,
                abandoned: false,
            },
        );
        self.running.insert((msg_id, read_ct));
    }

    /// The core absorbed its claim of `msg_id` at `read_ct` into the
    /// handler it still runs for that message: the claim is not unstarted
    /// (nothing to release), and the run's writes carry `read_ct` from now
    /// on.
    fn adopt(&mut self, now: Timestamp, msg_id: MsgId, read_ct: i32, ledger: &mut Ledger) {
        let key = (msg_id, read_ct);
        if !self.unstarted.remove(&key) {
            ledger.violate(
                Invariant::FencedWrites,
                now,
                format!(
                    "worker {} adopts msg {msg_id} read_ct {read_ct}, which it did not claim",
                    self.host
                ),
            );
        }
        self.claimed_after_stop.retain(|claimed| *claimed != key);
        let running: Vec<_> = self.running_of(msg_id).collect();
        let [run] = running[..] else {
            ledger.violate(
                Invariant::FencedWrites,
                now,
                format!(
                    "worker {} adopts msg {msg_id} read_ct {read_ct} for its running handler, \
                     but runs {running:?} for it",
                    self.host
                ),
            );
            return;
        };
        self.runs
            .get_mut(&run)
            .expect("running runs are known")
            .fence = read_ct;
        self.adopted.insert(key, run.1);
    }

    /// The core claimed `msg_id` again at `read_ct` after deciding its
    /// outcome for an older claim, and starts it over: the older claim is
    /// fenced out, so its unwritten release or dead letter is void. Only a
    /// message with no handler running may start over.
    fn start_over(&mut self, now: Timestamp, msg_id: MsgId, read_ct: i32, ledger: &mut Ledger) {
        self.unstarted.retain(|&(m, r)| m != msg_id || r >= read_ct);
        if let Some((_, started)) = self.running_of(msg_id).next() {
            ledger.violate(
                Invariant::BoundedWork,
                now,
                format!(
                    "worker {} starts msg {msg_id} over at read_ct {read_ct} while its run \
                     from read_ct {started} still holds a slot",
                    self.host
                ),
            );
        }
    }

    fn abandon(&mut self, msg_id: MsgId) {
        let keys: Vec<_> = self.running_of(msg_id).collect();
        for key in keys {
            let run = self.runs.get_mut(&key).expect("running runs are known");
            if run.timed_out {
                run.abandoned = true;
                self.running.remove(&key);
            }
        }
    }

    fn aborted(&mut self, msg_id: MsgId, reason: AbortReason) {
        let keys: Vec<_> = self.running_of(msg_id).collect();
        for key in keys {
            let run = self.runs.get_mut(&key).expect("running runs are known");
            run.aborted = true;
            if reason == AbortReason::Timeout {
                run.timed_out = true;
            }
        }
    }

    fn check_write(
        &mut self,
        now: Timestamp,
        batch: &WriteBatch,
        released: &mut BTreeSet<(MsgId, i32)>,
        ledger: &mut Ledger,
    ) {
        let messages = batch.messages();
        for pair in messages.windows(2) {
            if pair[0].msg_id == pair[1].msg_id {
                ledger.violate(
                    Invariant::FencedWrites,
                    now,
                    format!(
                        "worker {} sends one {} batch that carries msg {} twice (read_ct {} \
                         and {})",
                        self.host,
                        batch.kind(),
                        pair[0].msg_id,
                        pair[0].read_ct,
                        pair[1].read_ct
                    ),
                );
            }
        }
        if !matches!(batch, WriteBatch::Release(_) | WriteBatch::Extend { .. }) {
            ledger.counts.adopted_completions += messages
                .iter()
                .filter(|f| self.adopted.contains_key(&(f.msg_id, f.read_ct)))
                .count() as u64;
        }
        match batch {
            WriteBatch::Archive(items) => {
                for f in items {
                    self.check_archive(now, *f, ledger);
                }
            }
            WriteBatch::Retry(items) => {
                for (f, delay, _) in items {
                    self.check_retry(now, *f, *delay, ledger);
                }
            }
            WriteBatch::DeadLetter(items) => {
                for (f, error) in items {
                    self.check_dead_letter(now, *f, &error.name, ledger);
                }
            }
            WriteBatch::Release(items) => {
                for f in items {
                    let key = (f.msg_id, f.read_ct);
                    if self.runs.contains_key(&self.run_of(*f)) {
                        ledger.violate(
                            Invariant::CleanRetirement,
                            now,
                            format!(
                                "worker {} releases msg {} read_ct {} after starting it",
                                self.host, f.msg_id, f.read_ct
                            ),
                        );
                    }
                    self.unstarted.remove(&key);
                    released.insert(key);
                }
            }
            WriteBatch::Extend { .. } => {}
        }
    }

    fn check_archive(&mut self, now: Timestamp, f: Fenced, ledger: &mut Ledger) {
        let succeeded = self
            .runs
            .get(&self.run_of(f))
            .is_some_and(|r| !r.timed_out && matches!(r.outcome, Some(Outcome::Succeeded)));
        if !succeeded {
            ledger.violate(
                Invariant::SuccessRecorded,
                now,
                format!(
                    "worker {} archives msg {} read_ct {} without a successful run",
                    self.host, f.msg_id, f.read_ct
                ),
            );
        }
    }

    fn check_retry(&mut self, now: Timestamp, f: Fenced, delay: Duration, ledger: &mut Ledger) {
        // The attempt is pgmq's read count: an adopted run's lapse used one.
        let attempt = u32::try_from(f.read_ct.max(1)).unwrap_or(0);
        let Some(run) = self.runs.get(&self.run_of(f)) else {
            ledger.violate(
                Invariant::RetriesFollowPolicy,
                now,
                format!("worker {} retries msg {} it never ran", self.host, f.msg_id),
            );
            return;
        };
        let asked = match &run.outcome {
            _ if run.timed_out => None,
            Some(Outcome::Failed(failure)) if failure.retryable => failure.retry_after,
            Some(_) | None => {
                ledger.violate(
                    Invariant::RetriesFollowPolicy,
                    now,
                    format!(
                        "worker {} retries msg {} whose run did not fail retryably: {:?}",
                        self.host, f.msg_id, run.outcome
                    ),
                );
                return;
            }
        };
        if attempt > self.retry.limit {
            ledger.violate(
                Invariant::RetriesFollowPolicy,
                now,
                format!(
                    "msg {} retried after attempt {attempt}, limit {}",
                    f.msg_id, self.retry.limit
                ),
            );
        }
        let (lo, hi) = match asked {
            Some(asked) => (asked.min(MAX_RETRY_AFTER), asked.min(MAX_RETRY_AFTER)),
            None => retry_bounds(&self.retry, attempt),
        };
        if delay < lo || delay > hi {
            ledger.violate(
                Invariant::RetriesFollowPolicy,
                now,
                format!(
                    "msg {} attempt {attempt} retried after {delay:?}; the policy allows \
                     {lo:?} to {hi:?}",
                    f.msg_id
                ),
            );
        }
    }

    fn check_dead_letter(&mut self, now: Timestamp, f: Fenced, error: &str, ledger: &mut Ledger) {
        let key = (f.msg_id, f.read_ct);
        let attempt = u32::try_from(f.read_ct.max(1)).unwrap_or(0);
        if self.unstarted.remove(&key) {
            self.exhausted.insert(key);
        }
        let allowed = if self.exhausted.contains(&key) {
            // Claimed more often than allowed: dead-lettered without running.
            attempt > self.retry.limit.saturating_add(1)
        } else if let Some(run) = self.runs.get(&self.run_of(f)) {
            let non_retryable = !run.timed_out
                && matches!(&run.outcome, Some(Outcome::Failed(failure)) if !failure.retryable);
            let failed = run.timed_out || matches!(run.outcome, Some(Outcome::Failed(_)));
            failed && (non_retryable || attempt > self.retry.limit)
        } else {
            false
        };
        if !allowed || error.is_empty() {
            ledger.violate(
                Invariant::DeadLettersFollowPolicy,
                now,
                format!(
                    "worker {} dead-letters msg {} at attempt {attempt} (limit {}) with error \
                     {error:?}",
                    self.host, f.msg_id, self.retry.limit
                ),
            );
        }
    }

    /// A call of a kind that failed less than the shortest backoff ago must
    /// not be sent again yet.
    fn check_backoff(&mut self, now: Timestamp, command: &Command, ledger: &mut Ledger) {
        let kind = match command {
            Command::Setup => "setup",
            Command::Claim { .. } => "claim",
            Command::Heartbeat(_) => "heartbeat",
            Command::Write { batch, .. } => call_kind(batch),
            _ => return,
        };
        let shortest = DB_BACKOFF_BASE / 2;
        // Only the first call after a failure can come too soon.
        if let Some(failed) = self.failed_at.remove(kind) {
            if kind == "extend" {
                ledger.counts.extends_after_failure += 1;
            }
            if now < failed + shortest {
                ledger.violate(
                    Invariant::BacksOff,
                    now,
                    format!(
                        "worker {} sends {kind} again {} ms after one failed; the shortest \
                         backoff is {} ms",
                        self.host,
                        failed.until(now).as_millis(),
                        shortest.as_millis()
                    ),
                );
            }
        }
    }

    /// Messages claimed after the stop must be released in the same poll,
    /// unless writes are backing off after a failure.
    fn check_releases(
        &mut self,
        now: Timestamp,
        released: &BTreeSet<(MsgId, i32)>,
        ledger: &mut Ledger,
    ) {
        let claimed = std::mem::take(&mut self.claimed_after_stop);
        let backing_off = self
            .last_write_failure
            .is_some_and(|t| now < t + DB_BACKOFF_MAX);
        for key in claimed {
            ledger.owes_release(self.host, key.0, key.1);
            if !released.contains(&key) && !backing_off {
                ledger.violate(
                    Invariant::CleanRetirement,
                    now,
                    format!(
                        "worker {} did not release msg {} claimed after its stop at once",
                        self.host, key.0
                    ),
                );
            }
        }
    }

    /// Every running handler must get its AbortSignal when a stop arrives.
    fn check_aborts(
        &mut self,
        now: Timestamp,
        reason: StopReason,
        aborted_for_stop: &BTreeSet<MsgId>,
        ledger: &mut Ledger,
    ) {
        for key in &self.running {
            let msg_id = key.0;
            let run = &self.runs[key];
            if !run.aborted && !aborted_for_stop.contains(&msg_id) {
                ledger.violate(
                    Invariant::CleanRetirement,
                    now,
                    format!(
                        "worker {} did not abort msg {msg_id}'s handler on {}",
                        self.host,
                        reason.as_str()
                    ),
                );
            }
        }
        for key in &self.running {
            self.runs
                .get_mut(key)
                .expect("running runs are known")
                .aborted = true;
        }
    }

    /// Handlers the shim is running for this worker, less those the core
    /// gave up on after their timeout, never exceed `maxConcurrent`.
    fn check_in_flight(&self, now: Timestamp, ledger: &mut Ledger) {
        let in_flight = self.running.len();
        if in_flight <= self.max_concurrent as usize {
            return;
        }
        ledger.violate(
            Invariant::BoundedWork,
            now,
            format!(
                "worker {} has {in_flight} handlers in flight, max {}",
                self.host, self.max_concurrent
            ),
        );
    }
}

/// The `msg_id` field of a log record, which carries ids as strings.
fn msg_id_field(record: &LogRecord) -> Option<MsgId> {
    record
        .fields
        .iter()
        .find(|(name, _)| *name == "msg_id")
        .and_then(|(_, v)| v.as_str()?.parse().ok())
}

/// The `msg_id` and `read_ct` fields of a log record about a claim.
fn claim_fields(record: &LogRecord) -> (MsgId, i32) {
    let read_ct = record
        .fields
        .iter()
        .find(|(name, _)| *name == "read_ct")
        .and_then(|(_, v)| i32::try_from(v.as_i64()?).ok());
    match (msg_id_field(record), read_ct) {
        (Some(msg_id), Some(read_ct)) => (msg_id, read_ct),
        _ => panic!("{} without msg_id and read_ct: {record:?}", record.event),
    }
}

/// Which backoff a write shares: lease extensions, or the completion
/// writes (which the core holds back together after a failure).
fn call_kind(batch: &WriteBatch) -> &'static str {
    match batch {
        WriteBatch::Extend { .. } => "extend",
        _ => "write",
    }
}

/// The least and most delay the retry policy allows after `attempt` failed.
fn retry_bounds(retry: &RetryConfig, attempt: u32) -> (Duration, Duration) {
    let delay = u128::from(retry.delay_seconds);
    let max = u128::from(retry.max_delay_seconds);
    let base_s = match retry.strategy {
        RetryStrategy::Fixed => delay,
        RetryStrategy::Exponential => {
            let doublings = attempt.saturating_sub(1).min(100);
            (delay << doublings).min(max)
        }
    };
    let base = Duration::from_secs(u64::try_from(base_s).unwrap_or(u64::MAX));
    match retry.jitter {
        Jitter::None => (base, base),
        Jitter::Full => (Duration::ZERO, base),
        Jitter::Equal => (base / 2, base),
    }
}
