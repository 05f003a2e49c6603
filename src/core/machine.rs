//! The worker's state machine.
//!
//! [`Worker`] takes events with the time they were seen and queues commands;
//! [`Worker::poll`] adds what time alone makes due (claims, heartbeats,
//! lease extensions, timeouts, retried writes) and hands the commands out.
//! [`Worker::next_wake`] says when `poll` next has something to do. The
//! phases are drawn in `docs/state-machine.md`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::Value;

use super::backoff::Backoff;
use super::config::{Config, LogLevel};
use super::error_text::ErrorText;
use super::event::{
    AbortReason, Claimed, Command, DbError, Event, Failure, Fenced, LogRecord, MsgId, Outcome,
    Stats, StopReason, WriteBatch, WriteId,
};
use super::retry::RetryPolicy;
use super::time::Timestamp;

/// Longest delay a handler may ask for with a retry-after error.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// Where the worker is in its life.
#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// Created; `start` not called yet.
    Idle,
    /// Creating the queue and registering the worker row.
    SettingUp(Step),
    /// Claiming and running handlers.
    Running,
    /// No more claims; waiting for handlers and writes to finish.
    Draining {
        reason: StopReason,
        deadline: Timestamp,
    },
    /// Marking the worker row stopped and closing the pool.
    Stopping,
    /// Done. `Err` holds why the worker could not run at all.
    Stopped(Result<(), String>),
}

/// A periodic or retried call (setup, heartbeat): waiting for its time, or
/// under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Due(Timestamp),
    InFlight,
}

/// Where the worker's one claim (`read_with_poll`) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClaimStep {
    /// The next claim may go out at this time, if a slot is free.
    Due(Timestamp),
    /// A claim is under way; its leases count from `sent_at`.
    InFlight { sent_at: Timestamp },
    /// A claim is under way and its cancellation was asked for.
    Cancelling { sent_at: Timestamp },
}

/// What a tracked message is doing.
#[derive(Debug, Clone, PartialEq)]
enum Stage {
    /// Its handler runs; `deadline` is the handler timeout.
    Running { deadline: Option<Timestamp> },
    /// Aborted for its timeout; the slot is held until the handler settles
    /// or the grace period ends.
    TimedOut { grace_until: Timestamp },
    /// Its outcome is decided; a write is pending or in flight.
    Writing,
}

/// The worker's hold on a message's visibility timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lease {
    /// Held until `until` by this worker's clock.
    Held { until: Timestamp },
    /// An extension is in flight.
    Extending { until: Timestamp },
    /// Another worker has re-read the message.
    Lost,
    /// Handed back (release pending or in flight): never extended again.
    Released,
}

#[derive(Debug, Clone)]
struct Tracked {
    /// The fence: the read count of this worker's latest claim.
    read_ct: i32,
    /// The read count the handler was started with; a claim that finds the
    /// message still running here moves `read_ct` on but not this.
    run_read_ct: i32,
    lease: Lease,
    stage: Stage,
}

impl Tracked {
    fn holds_slot(&self) -> bool {
        !matches!(self.stage, Stage::Writing)
    }

    fn fenced(&self, msg_id: MsgId) -> Fenced {
        Fenced {
            msg_id,
            read_ct: self.read_ct,
        }
    }
}

/// A write that waits to be sent, one message each; `poll` batches them.
#[derive(Debug, Clone)]
enum PendingWrite {
    Archive(Fenced),
    Retry(Fenced, Duration, ErrorText),
    DeadLetter(Fenced, ErrorText),
    Release(Fenced),
}

impl PendingWrite {
    fn fenced(&self) -> Fenced {
        match self {
            PendingWrite::Archive(f) | PendingWrite::Release(f) => *f,
            PendingWrite::Retry(f, _, _) | PendingWrite::DeadLetter(f, _) => *f,
        }
    }

    /// The kind of batch it goes into, as [`WriteBatch::kind`] names it.
    fn kind(&self) -> &'static str {
        match self {
            PendingWrite::Archive(_) => "archive",
            PendingWrite::Retry(..) => "retry",
            PendingWrite::DeadLetter(..) => "dead_letter",
            PendingWrite::Release(_) => "release",
        }
    }
}

/// A write the driver is performing.
#[derive(Debug, Clone)]
struct InFlightWrite {
    batch: WriteBatch,
    sent_at: Timestamp,
}

/// The worker's state machine. It does no I/O and reads no clock.
#[derive(Debug)]
pub struct Worker {
    config: Config,
    retry: RetryPolicy,
    rng: fastrand::Rng,
    phase: Phase,
    claim: ClaimStep,
    claim_backoff: Backoff,
    heartbeat: Step,
    heartbeat_backoff: Backoff,
    setup_backoff: Backoff,
    messages: BTreeMap<MsgId, Tracked>,
    pending: Vec<PendingWrite>,
    writes_due: Timestamp,
    extends_due: Timestamp,
    write_backoff: Backoff,
    writes: HashMap<WriteId, InFlightWrite>,
    next_write_id: WriteId,
    stats: Stats,
    outbox: Vec<Command>,
}

impl Worker {
    /// A worker for `config`; `seed` drives retry jitter and backoff.
    pub fn new(config: Config, seed: u64) -> Self {
        let retry = RetryPolicy::new(&config.retry);
        Self {
            config,
            retry,
            rng: fastrand::Rng::with_seed(seed),
            phase: Phase::Idle,
            claim: ClaimStep::Due(Timestamp::default()),
            claim_backoff: Backoff::default(),
            heartbeat: Step::Due(Timestamp::default()),
            heartbeat_backoff: Backoff::default(),
            setup_backoff: Backoff::default(),
            messages: BTreeMap::new(),
            pending: Vec::new(),
            writes_due: Timestamp::default(),
            extends_due: Timestamp::default(),
            write_backoff: Backoff::default(),
            writes: HashMap::new(),
            next_write_id: 1,
            stats: Stats::default(),
            outbox: Vec::new(),
        }
    }

    /// The configuration the worker runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters as the next heartbeat would report them.
    pub fn stats(&self) -> Stats {
        Stats {
            in_flight: self.handlers_in_flight(),
            ..self.stats.clone()
        }
    }

    /// Begins setting up at `now`.
    pub fn start(&mut self, now: Timestamp) {
        if self.phase == Phase::Idle {
            self.phase = Phase::SettingUp(Step::Due(now));
        }
    }

    /// `Some` once the worker has stopped: `Ok` after a clean stop, `Err`
    /// with the reason when it could not run at all.
    pub fn stopped(&self) -> Option<Result<(), String>> {
        match &self.phase {
            Phase::Stopped(result) => Some(result.clone()),
            _ => None,
        }
    }

    /// Messages this worker holds (running or waiting for a write).
    pub fn tracked(&self) -> usize {
        self.messages.len()
    }

    /// Handlers that hold a concurrency slot now.
    pub fn handlers_in_flight(&self) -> u32 {
        let n = self.messages.values().filter(|t| t.holds_slot()).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Feeds one event seen at `now`.
    pub fn handle(&mut self, now: Timestamp, event: Event) {
        match event {
            Event::SetupFinished => self.on_setup_finished(now),
            Event::SetupFailed(error) => self.on_setup_failed(now, error),
            Event::ClaimFinished(claimed) => self.on_claimed(now, claimed),
            Event::ClaimFailed(error) => self.on_claim_failed(now, error),
            Event::HandlerFinished {
                msg_id,
                read_ct,
                outcome,
            } => self.on_handler_finished(msg_id, read_ct, outcome),
            Event::WriteFinished { id, applied } => self.on_write_finished(id, &applied),
            Event::WriteFailed { id, error } => self.on_write_failed(now, id, error),
            Event::HeartbeatFinished { deprecated } => self.on_heartbeat(now, deprecated),
            Event::HeartbeatFailed(error) => self.on_heartbeat_failed(now, error),
            Event::StopRequested { reason, deadline } => self.on_stop(now, reason, deadline),
            Event::MarkStoppedFinished => self.on_mark_stopped(),
        }
    }

    /// Adds what is due at `now` and returns every queued command.
    pub fn poll(&mut self, now: Timestamp) -> Vec<Command> {
        match self.phase.clone() {
            Phase::Idle | Phase::Stopping | Phase::Stopped(_) => {}
            Phase::SettingUp(step) => {
                if matches!(step, Step::Due(at) if at <= now) {
                    self.phase = Phase::SettingUp(Step::InFlight);
                    self.outbox.push(Command::Setup);
                }
            }
            Phase::Running => {
                self.expire_handlers(now);
                self.send_heartbeat(now);
                self.extend_leases(now);
                self.flush_writes(now);
                self.claim_more(now);
            }
            Phase::Draining { deadline, .. } => {
                self.expire_handlers(now);
                self.send_heartbeat(now);
                self.extend_leases(now);
                self.flush_writes(now);
                self.cancel_claim();
                self.finish_draining(now, deadline);
            }
        }
        std::mem::take(&mut self.outbox)
    }

    /// The earliest time at which [`Worker::poll`] has something to do that
    /// no event will bring; `None` when only an event can move the worker.
    pub fn next_wake(&self) -> Option<Timestamp> {
        let mut wake = Wake::default();
        match &self.phase {
            Phase::Idle | Phase::Stopping | Phase::Stopped(_) => return None,
            Phase::SettingUp(step) => {
                if let Step::Due(at) = step {
                    wake.at(*at);
                }
                return wake.0;
            }
            Phase::Running => {
                if let ClaimStep::Due(at) = self.claim {
                    if self.free_slots() > 0 {
                        wake.at(at);
                    }
                }
            }
            Phase::Draining { deadline, .. } => wake.at(*deadline),
        }
        if let Step::Due(at) = self.heartbeat {
            wake.at(at);
        }
        if self.has_sendable_write() {
            wake.at(self.writes_due);
        }
        for tracked in self.messages.values() {
            if let Lease::Held { until } = tracked.lease {
                wake.at((until - self.config.renew_before_expiry()).max(self.extends_due));
            }
            match tracked.stage {
                Stage::Running {
                    deadline: Some(deadline),
                } => wake.at(deadline),
                Stage::TimedOut { grace_until } => wake.at(grace_until),
                Stage::Running { deadline: None } | Stage::Writing => {}
            }
        }
        wake.0
    }

    fn free_slots(&self) -> u32 {
        self.config
            .concurrency
            .max_concurrent
            .saturating_sub(self.handlers_in_flight())
    }

    fn log(&mut self, level: LogLevel, event: &'static str, fields: Vec<(&'static str, Value)>) {
        self.outbox.push(Command::Log(LogRecord {
            level,
            event,
            fields,
        }));
    }

    fn log_db_error(&mut self, call: &'static str, error: &DbError, retry_in: Option<Duration>) {
        let level = if error.kind.is_transient() {
            LogLevel::Warn
        } else {
            LogLevel::Error
        };
        let mut fields = vec![
            ("call", Value::from(call)),
            ("kind", Value::from(error.kind.as_str())),
            ("code", error.code.clone().map_or(Value::Null, Value::from)),
            ("error", Value::from(error.message.clone())),
        ];
        if let Some(delay) = retry_in {
            fields.push(("retry_in_ms", millis(delay)));
        }
        self.log(level, "db_call_failed", fields);
    }

    fn on_setup_finished(&mut self, now: Timestamp) {
        if !matches!(self.phase, Phase::SettingUp(_)) {
            return;
        }
        self.setup_backoff.succeed();
        self.phase = Phase::Running;
        self.claim = ClaimStep::Due(now);
        self.heartbeat = Step::Due(now + self.config.heartbeat_interval());
        self.log(
            LogLevel::Info,
            "worker_started",
            vec![
                (
                    "max_concurrent",
                    Value::from(self.config.concurrency.max_concurrent),
                ),
                ("batch_size", Value::from(self.config.queue.batch_size)),
            ],
        );
    }

    fn on_setup_failed(&mut self, now: Timestamp, error: DbError) {
        if !matches!(self.phase, Phase::SettingUp(_)) {
            return;
        }
        if !error.kind.is_transient() {
            self.log_db_error("setup", &error, None);
            self.phase = Phase::Stopped(Err(format!("setup failed: {}", error.message)));
            return;
        }
        let delay = self.setup_backoff.fail(self.rng.f64());
        self.log_db_error("setup", &error, Some(delay));
        self.phase = Phase::SettingUp(Step::Due(now + delay));
    }

    fn on_claimed(&mut self, now: Timestamp, claimed: Vec<Claimed>) {
        let (ClaimStep::InFlight { sent_at } | ClaimStep::Cancelling { sent_at }) = self.claim
        else {
            return;
        };
        self.claim_backoff.succeed();
        self.claim = ClaimStep::Due(now);
        let lease_until = sent_at + self.config.visibility_timeout();
        let running = self.phase == Phase::Running;
        self.log(
            LogLevel::Debug,
            "claimed",
            vec![
                ("count", Value::from(claimed.len())),
                ("wait_ms", millis(sent_at.until(now))),
            ],
        );
        let mut free = self.free_slots();
        for message in claimed {
            let fenced = Fenced {
                msg_id: message.msg_id,
                read_ct: message.read_ct,
            };
            if self.reclaimed(fenced, lease_until) {
                continue;
            }
            let attempt = u32::try_from(message.read_ct).unwrap_or(0).max(1);
            if !running || free == 0 {
                self.track(fenced, Lease::Released, Stage::Writing);
                self.pending.push(PendingWrite::Release(fenced));
                continue;
            }
            let lease = Lease::Held { until: lease_until };
            if self.retry.exhausted(attempt) {
                // Read more often than the policy allows: earlier workers
                // died while running it. Do not run it yet again.
                let error = ErrorText::new(
                    "AttemptsExhausted",
                    &format!(
                        "claimed {} times, more than 1 + retry.limit ({}); \
                         earlier workers stopped while running it",
                        message.read_ct, self.config.retry.limit
                    ),
                );
                self.track(fenced, lease, Stage::Writing);
                self.pending.push(PendingWrite::DeadLetter(fenced, error));
                continue;
            }
            free -= 1;
            let deadline = self.config.handler_timeout().map(|t| now + t);
            self.track(fenced, lease, Stage::Running { deadline });
            self.outbox.push(Command::StartHandler {
                msg_id: message.msg_id,
                read_ct: message.read_ct,
                attempt,
            });
        }
    }

    /// Handles a claim of a message this worker still tracks, which happens
    /// when its lease lapsed (the database was out of reach for longer than
    /// the margin) and this same worker read it again. Returns whether the
    /// claim was absorbed.
    ///
    /// A handler still running keeps running under the new claim: the new
    /// read count becomes its fence and the new lease its lease, so it is
    /// neither forgotten nor run twice. A message whose outcome was already
    /// decided starts over as a fresh claim; the writes for the old claim
    /// are dropped, since the new read fenced them out.
    fn reclaimed(&mut self, fenced: Fenced, lease_until: Timestamp) -> bool {
        let Some(tracked) = self.messages.get_mut(&fenced.msg_id) else {
            return false;
        };
        if tracked.holds_slot() {
            tracked.read_ct = fenced.read_ct;
            tracked.lease = Lease::Held { until: lease_until };
            self.log(
                LogLevel::Warn,
                "lease_reclaimed",
                vec![
                    ("msg_id", id_value(fenced.msg_id)),
                    ("read_ct", Value::from(fenced.read_ct)),
                ],
            );
            return true;
        }
        self.messages.remove(&fenced.msg_id);
        self.pending.retain(|w| w.fenced().msg_id != fenced.msg_id);
        self.log(
            LogLevel::Warn,
            "claimed_again",
            vec![
                ("msg_id", id_value(fenced.msg_id)),
                ("read_ct", Value::from(fenced.read_ct)),
            ],
        );
        false
    }

    fn track(&mut self, fenced: Fenced, lease: Lease, stage: Stage) {
        self.messages.insert(
            fenced.msg_id,
            Tracked {
                read_ct: fenced.read_ct,
                run_read_ct: fenced.read_ct,
                lease,
                stage,
            },
        );
    }

    fn on_claim_failed(&mut self, now: Timestamp, error: DbError) {
        if matches!(self.claim, ClaimStep::Due(_)) {
            return;
        }
        let delay = self.claim_backoff.fail(self.rng.f64());
        if self.phase == Phase::Running {
            self.log_db_error("claim", &error, Some(delay));
        }
        self.claim = ClaimStep::Due(now + delay);
    }

    fn on_handler_finished(&mut self, msg_id: MsgId, read_ct: i32, outcome: Outcome) {
        let Some(tracked) = self.messages.get(&msg_id) else {
            return;
        };
        if tracked.run_read_ct != read_ct {
            return;
        }
        let outcome = match tracked.stage {
            Stage::Running { .. } => outcome,
            // The attempt already counts as failed by its timeout.
            Stage::TimedOut { .. } => Outcome::Failed(self.timeout_failure()),
            Stage::Writing => return,
        };
        self.decide(msg_id, outcome);
    }

    fn timeout_failure(&self) -> Failure {
        let seconds = self.config.handler.timeout_seconds.unwrap_or_default();
        Failure {
            error: ErrorText::new(
                "HandlerTimeout",
                &format!("handler did not finish within handler.timeoutSeconds ({seconds} s)"),
            ),
            retryable: true,
            retry_after: None,
        }
    }

    /// Turns an attempt's outcome into the write that records it.
    fn decide(&mut self, msg_id: MsgId, outcome: Outcome) {
        let Some(tracked) = self.messages.get_mut(&msg_id) else {
            return;
        };
        tracked.stage = Stage::Writing;
        let fenced = tracked.fenced(msg_id);
        let failure = match outcome {
            Outcome::Succeeded => {
                self.pending.push(PendingWrite::Archive(fenced));
                return;
            }
            Outcome::Failed(failure) => failure,
        };
        let attempt = u32::try_from(fenced.read_ct).unwrap_or(0).max(1);
        self.stats.failed += 1;
        self.stats.last_error = Some(format!(
            "{}: {}",
            failure.error.name,
            truncate_chars(&failure.error.message, 500)
        ));
        let mut fields = vec![
            ("msg_id", id_value(msg_id)),
            ("attempt", Value::from(attempt)),
            ("error_name", Value::from(failure.error.name.clone())),
            (
                "error",
                Value::from(truncate_chars(&failure.error.message, 500)),
            ),
        ];
        if failure.retryable && self.retry.may_retry(attempt) {
            let delay = match failure.retry_after {
                Some(asked) => asked.min(MAX_RETRY_AFTER),
                None => self.retry.delay(attempt, self.rng.f64()),
            };
            fields.push(("retry_in_ms", millis(delay)));
            self.log(LogLevel::Warn, "handler_failed", fields);
            self.pending
                .push(PendingWrite::Retry(fenced, delay, failure.error));
        } else {
            fields.push(("retryable", Value::from(failure.retryable)));
            self.log(LogLevel::Error, "dead_lettering", fields);
            self.pending
                .push(PendingWrite::DeadLetter(fenced, failure.error));
        }
    }

    fn on_write_finished(&mut self, id: WriteId, applied: &[MsgId]) {
        let Some(write) = self.writes.remove(&id) else {
            return;
        };
        self.write_backoff.succeed();
        let kind = write.batch.kind();
        let mut stale = Vec::new();
        for fenced in write.batch.messages() {
            let was_applied = applied.contains(&fenced.msg_id);
            if !was_applied {
                stale.push(id_value(fenced.msg_id));
            }
            match &write.batch {
                WriteBatch::Extend { vt, .. } => {
                    self.on_extended(fenced, was_applied, write.sent_at + *vt);
                    continue;
                }
                WriteBatch::Archive(_) if was_applied => self.stats.succeeded += 1,
                WriteBatch::DeadLetter(_) if was_applied => self.stats.dead_lettered += 1,
                _ => {}
            }
            if !was_applied {
                self.stats.stale += 1;
            }
            if self
                .messages
                .get(&fenced.msg_id)
                .is_some_and(|t| t.read_ct == fenced.read_ct)
            {
                self.messages.remove(&fenced.msg_id);
            }
        }
        if !stale.is_empty() {
            let event = match write.batch {
                WriteBatch::Extend { .. } => "lease_lost",
                _ => "stale_write",
            };
            self.log(
                LogLevel::Warn,
                event,
                vec![
                    ("write", Value::from(kind)),
                    ("msg_ids", Value::from(stale)),
                ],
            );
        }
    }

    fn on_extended(&mut self, fenced: Fenced, applied: bool, until: Timestamp) {
        let Some(tracked) = self.messages.get_mut(&fenced.msg_id) else {
            return;
        };
        if tracked.read_ct != fenced.read_ct {
            return;
        }
        tracked.lease = if applied {
            Lease::Held { until }
        } else {
            Lease::Lost
        };
    }

    fn on_write_failed(&mut self, now: Timestamp, id: WriteId, error: DbError) {
        let Some(write) = self.writes.remove(&id) else {
            return;
        };
        let delay = self.write_backoff.fail(self.rng.f64());
        self.log_db_error(write.batch.kind(), &error, Some(delay));
        let held = |messages: &BTreeMap<MsgId, Tracked>, f: &Fenced| {
            messages
                .get(&f.msg_id)
                .is_some_and(|t| t.read_ct == f.read_ct)
        };
        // A completion goes back in line until it applies or its fence says
        // it is stale; one for a claim this worker has since replaced could
        // never apply and is dropped.
        match write.batch {
            WriteBatch::Archive(items) => self.pending.extend(
                items
                    .into_iter()
                    .filter(|f| held(&self.messages, f))
                    .map(PendingWrite::Archive),
            ),
            WriteBatch::Retry(items) => self.pending.extend(
                items
                    .into_iter()
                    .filter(|(f, _, _)| held(&self.messages, f))
                    .map(|(f, d, e)| PendingWrite::Retry(f, d, e)),
            ),
            WriteBatch::DeadLetter(items) => self.pending.extend(
                items
                    .into_iter()
                    .filter(|(f, _)| held(&self.messages, f))
                    .map(|(f, e)| PendingWrite::DeadLetter(f, e)),
            ),
            WriteBatch::Release(items) => {
                // Never sent again: a release gives the read back, so the
                // fence value comes round again with the next claim, and a
                // late second release could hand back another worker's
                // claim. Unreleased messages return when their lease ends.
                let ids: Vec<Value> = items.iter().map(|f| id_value(f.msg_id)).collect();
                for fenced in items {
                    if held(&self.messages, &fenced) {
                        self.messages.remove(&fenced.msg_id);
                    }
                }
                self.log(
                    LogLevel::Warn,
                    "release_abandoned",
                    vec![("msg_ids", Value::from(ids))],
                );
            }
            WriteBatch::Extend { items, .. } => {
                for fenced in items {
                    if let Some(tracked) = self.messages.get_mut(&fenced.msg_id) {
                        if let Lease::Extending { until } = tracked.lease {
                            tracked.lease = Lease::Held { until };
                        }
                    }
                }
                // Back off, but never past half the renewal margin, so one
                // more try still fits before the leases end; the other
                // writes wait no longer than the extension does.
                let hold = delay.min(self.config.renew_before_expiry() / 2);
                self.extends_due = now + hold;
                self.writes_due = now + hold;
                return;
            }
        }
        // The database just failed a write: every kind waits out the backoff.
        self.writes_due = now + delay;
    }

    fn on_heartbeat(&mut self, now: Timestamp, deprecated: bool) {
        self.heartbeat_backoff.succeed();
        self.heartbeat = Step::Due(now + self.config.heartbeat_interval());
        if deprecated && self.phase == Phase::Running {
            self.log(LogLevel::Info, "worker_deprecated", Vec::new());
            // Let running handlers finish within one lease.
            let deadline = now + self.config.visibility_timeout();
            self.begin_draining(now, StopReason::Deprecated, deadline);
        }
    }

    fn on_heartbeat_failed(&mut self, now: Timestamp, error: DbError) {
        let delay = self
            .heartbeat_backoff
            .fail(self.rng.f64())
            .min(self.config.heartbeat_interval());
        self.log_db_error("heartbeat", &error, Some(delay));
        self.heartbeat = Step::Due(now + delay);
    }

    fn on_stop(&mut self, now: Timestamp, reason: StopReason, deadline: Timestamp) {
        match self.phase {
            Phase::Idle => self.phase = Phase::Stopped(Ok(())),
            Phase::SettingUp(_) => {
                self.phase = Phase::Stopping;
                self.outbox.push(Command::MarkStopped(self.stats()));
            }
            Phase::Running => self.begin_draining(now, reason, deadline),
            Phase::Draining {
                deadline: current, ..
            } => {
                // A later, harder stop may only bring the deadline closer.
                self.phase = Phase::Draining {
                    reason,
                    deadline: current.min(deadline),
                };
                self.abort_running(reason);
            }
            Phase::Stopping | Phase::Stopped(_) => {}
        }
    }

    fn begin_draining(&mut self, now: Timestamp, reason: StopReason, deadline: Timestamp) {
        self.phase = Phase::Draining { reason, deadline };
        self.log(
            LogLevel::Info,
            "worker_draining",
            vec![
                ("reason", Value::from(reason.as_str())),
                ("in_flight", Value::from(self.handlers_in_flight())),
                ("budget_ms", millis(now.until(deadline))),
            ],
        );
        if reason != StopReason::Deprecated {
            self.abort_running(reason);
        }
    }

    fn abort_running(&mut self, reason: StopReason) {
        for (msg_id, tracked) in &self.messages {
            if matches!(tracked.stage, Stage::Running { .. }) {
                self.outbox.push(Command::AbortHandler {
                    msg_id: *msg_id,
                    reason: AbortReason::Stopping(reason),
                });
            }
        }
    }

    fn on_mark_stopped(&mut self) {
        if self.phase == Phase::Stopping {
            self.phase = Phase::Stopped(Ok(()));
        }
    }

    fn expire_handlers(&mut self, now: Timestamp) {
        let grace = self.config.handler_grace();
        let mut expired = Vec::new();
        for (msg_id, tracked) in self.messages.iter_mut() {
            match tracked.stage {
                Stage::Running {
                    deadline: Some(deadline),
                } if deadline <= now => {
                    tracked.stage = Stage::TimedOut {
                        grace_until: now + grace,
                    };
                    self.outbox.push(Command::AbortHandler {
                        msg_id: *msg_id,
                        reason: AbortReason::Timeout,
                    });
                }
                Stage::TimedOut { grace_until } if grace_until <= now => expired.push(*msg_id),
                _ => {}
            }
        }
        for msg_id in expired {
            let failure = self.timeout_failure();
            self.log(
                LogLevel::Warn,
                "handler_abandoned",
                vec![("msg_id", id_value(msg_id))],
            );
            self.decide(msg_id, Outcome::Failed(failure));
        }
    }

    fn send_heartbeat(&mut self, now: Timestamp) {
        if matches!(self.heartbeat, Step::Due(at) if at <= now) {
            self.heartbeat = Step::InFlight;
            self.outbox.push(Command::Heartbeat(self.stats()));
        }
    }

    fn extend_leases(&mut self, now: Timestamp) {
        if now < self.extends_due {
            return;
        }
        let renew_at = now + self.config.renew_before_expiry();
        let mut items = Vec::new();
        for (msg_id, tracked) in self.messages.iter_mut() {
            if let Lease::Held { until } = tracked.lease {
                if until <= renew_at {
                    tracked.lease = Lease::Extending { until };
                    items.push(Fenced {
                        msg_id: *msg_id,
                        read_ct: tracked.read_ct,
                    });
                }
            }
        }
        if !items.is_empty() {
            let vt = self.config.visibility_timeout();
            self.send_write(now, WriteBatch::Extend { items, vt });
        }
    }

    /// Sends the pending writes as one batch per kind, in `msg_id` order,
    /// for each kind that has no batch in flight. Holding a kind back while
    /// its batch is out lets completions pile up into the next batch: under
    /// load few large statements, when idle no added latency.
    fn flush_writes(&mut self, now: Timestamp) {
        if self.pending.is_empty() || self.writes_due > now {
            return;
        }
        let mut archive = Vec::new();
        let mut retry = Vec::new();
        let mut dead = Vec::new();
        let mut release = Vec::new();
        let mut held = Vec::new();
        for write in std::mem::take(&mut self.pending) {
            if self.write_in_flight(write.kind()) {
                held.push(write);
                continue;
            }
            match write {
                PendingWrite::Archive(f) => archive.push(f),
                PendingWrite::Retry(f, d, e) => retry.push((f, d, e)),
                PendingWrite::DeadLetter(f, e) => dead.push((f, e)),
                PendingWrite::Release(f) => release.push(f),
            }
        }
        self.pending = held;
        archive.sort_by_key(|f| f.msg_id);
        retry.sort_by_key(|(f, _, _)| f.msg_id);
        dead.sort_by_key(|(f, _)| f.msg_id);
        release.sort_by_key(|f| f.msg_id);
        if !release.is_empty() {
            self.send_write(now, WriteBatch::Release(release));
        }
        if !archive.is_empty() {
            self.send_write(now, WriteBatch::Archive(archive));
        }
        if !retry.is_empty() {
            self.send_write(now, WriteBatch::Retry(retry));
        }
        if !dead.is_empty() {
            self.send_write(now, WriteBatch::DeadLetter(dead));
        }
    }

    fn write_in_flight(&self, kind: &str) -> bool {
        self.writes.values().any(|w| w.batch.kind() == kind)
    }

    /// Whether a pending write could be sent now if its backoff allowed.
    fn has_sendable_write(&self) -> bool {
        self.pending.iter().any(|w| !self.write_in_flight(w.kind()))
    }

    fn send_write(&mut self, now: Timestamp, batch: WriteBatch) {
        let id = self.next_write_id;
        self.next_write_id += 1;
        self.writes.insert(
            id,
            InFlightWrite {
                batch: batch.clone(),
                sent_at: now,
            },
        );
        self.outbox.push(Command::Write { id, batch });
    }

    fn claim_more(&mut self, now: Timestamp) {
        let ClaimStep::Due(at) = self.claim else {
            return;
        };
        let free = self.free_slots();
        if at > now || free == 0 {
            return;
        }
        self.claim = ClaimStep::InFlight { sent_at: now };
        self.outbox.push(Command::Claim {
            qty: free.min(self.config.queue.batch_size),
            vt: self.config.visibility_timeout(),
            max_poll_seconds: self.config.polling.max_poll_seconds,
            poll_interval_ms: self.config.polling.poll_interval_ms,
        });
    }

    fn cancel_claim(&mut self) {
        if let ClaimStep::InFlight { sent_at } = self.claim {
            self.claim = ClaimStep::Cancelling { sent_at };
            self.outbox.push(Command::CancelClaim);
        }
    }

    fn finish_draining(&mut self, now: Timestamp, deadline: Timestamp) {
        let idle = self.messages.is_empty()
            && self.pending.is_empty()
            && self.writes.is_empty()
            && matches!(self.claim, ClaimStep::Due(_));
        if !idle && now < deadline {
            return;
        }
        if !idle {
            // Whatever is left keeps its lease until the lease expires and
            // another worker takes it: late, never lost.
            self.log(
                LogLevel::Warn,
                "drain_deadline_passed",
                vec![
                    ("in_flight", Value::from(self.handlers_in_flight())),
                    (
                        "unwritten",
                        Value::from(self.pending.len() + self.writes.len()),
                    ),
                ],
            );
        }
        self.log(
            LogLevel::Info,
            "worker_stopped",
            vec![
                ("succeeded", Value::from(self.stats.succeeded)),
                ("failed", Value::from(self.stats.failed)),
                ("dead_lettered", Value::from(self.stats.dead_lettered)),
                ("stale", Value::from(self.stats.stale)),
            ],
        );
        self.phase = Phase::Stopping;
        self.outbox.push(Command::MarkStopped(self.stats()));
    }
}

/// The earliest of several candidate times.
#[derive(Default)]
struct Wake(Option<Timestamp>);

impl Wake {
    fn at(&mut self, t: Timestamp) {
        self.0 = Some(self.0.map_or(t, |w| w.min(t)));
    }
}

/// A message id as a log field: a string, exact beyond 2^53.
fn id_value(msg_id: MsgId) -> Value {
    Value::from(msg_id.to_string())
}

fn millis(d: Duration) -> Value {
    Value::from(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn truncate_chars(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}
