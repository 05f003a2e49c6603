//! One schedule: a seed becomes a configuration, a set of workers, messages
//! and a plan of faults; the schedule runs in three phases and the
//! invariants are judged at the end.
//!
//! 1. **Chaos.** Messages arrive in bursts while database calls fail, lose
//!    their replies or crawl, the database goes down for seconds at a time,
//!    and workers are killed and restarted, asked to stop (most followed by
//!    a successor) and deprecated.
//! 2. **Quiet.** Faults stop. At least one worker serves the queue, started
//!    if none does, until every message is archived or dead-lettered.
//! 3. **Final.** Every live worker is asked to stop; each must reach
//!    `stopped()` by its deadline.

use std::time::Duration;

use edge_worker::core::event::{Event, MsgId, Outcome, StopReason};
use edge_worker::core::{Config, Timestamp};
use serde_json::{json, Value};

use super::clock::{Scheduler, EPOCH};
use super::db::SimDb;
use super::faults::{FaultRates, Faults, HandlerProfile, MAX_LATENCY};
use super::host::{Env, Host, Life};
use super::invariants::{Counts, HostId, Invariant, Ledger, Violation};
use super::link::{CallId, Link, Wire};
use super::trace::Trace;

/// How long after its stop deadline a worker may still be marking itself
/// stopped: one slow call there and back.
pub const STOP_SLACK: Duration = Duration::from_millis(2 * MAX_LATENCY.as_millis() as u64 + 1);
/// Longest the quiet phase may take to drain the queue.
const MAX_QUIET: Duration = Duration::from_secs(4 * 3600);
/// Most steps one schedule may take before it counts as stuck.
const MAX_STEPS: u64 = 1_000_000;
/// Range of the number of messages per schedule.
const MESSAGES: std::ops::RangeInclusive<u32> = 20..=200;

/// Something due in the simulation.
#[derive(Debug)]
pub enum Due {
    /// A host's timer for `next_wake`.
    Wake {
        /// Whose.
        host: HostId,
        /// Which arming; older ones are stale.
        gen: u64,
    },
    /// A handler settles.
    Settle {
        /// Whose.
        host: HostId,
        /// The message.
        msg_id: MsgId,
        /// The claim it runs for.
        read_ct: i32,
        /// How it ends.
        outcome: Outcome,
    },
    /// A call reaches the database.
    Arrive(CallId),
    /// A polling claim looks again.
    Poll(CallId),
    /// A claim's cancellation reaches the database.
    Cancel(CallId),
    /// An event reaches a host (a reply, or a stop request).
    Deliver {
        /// Whose.
        host: HostId,
        /// What.
        event: Event,
    },
    /// The schedule's plan.
    Act(Action),
    /// A host asked to stop must have stopped by now.
    StopCheck {
        /// Whose.
        host: HostId,
    },
}

/// A step of the schedule's plan.
#[derive(Debug, Clone, Copy)]
pub enum Action {
    /// `pgmq.send` this many messages.
    Send(u32),
    /// Start a new worker.
    StartWorker,
    /// Kill a random live worker; maybe start another later.
    Kill,
    /// Ask a random live worker to stop, and start its successor.
    Stop,
    /// Deprecate a random live worker's row.
    Deprecate,
    /// Faults end; the queue must drain.
    Quiet,
}

/// Everything a seed decides up front.
pub struct Scenario {
    /// The configuration as the user wrote it.
    pub raw_config: Value,
    /// The validated configuration.
    pub config: Config,
    /// Workers at the start.
    pub workers: u32,
    /// Messages sent in all.
    pub messages: u32,
    /// The first message's id.
    pub first_msg_id: MsgId,
    /// Length of the chaos phase.
    pub chaos: Duration,
    /// Database fault rates during chaos.
    pub rates: FaultRates,
    /// Handler behaviour.
    pub handlers: HandlerProfile,
    /// The plan, as offsets from the start.
    pub plan: Vec<(Duration, Action)>,
}

impl Scenario {
    /// The scenario of `seed`.
    pub fn draw(seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let raw_config = draw_config(&mut rng);
        let config = Config::parse(&raw_config)
            .unwrap_or_else(|e| panic!("seed {seed}: drew an invalid config: {e}"))
            .config;
        let workers = rng.u32(1..=4);
        // Most schedules are small, a few use the whole range.
        let spread = f64::from(MESSAGES.end() - MESSAGES.start());
        let messages = MESSAGES.start() + (spread * rng.f64().powi(2)).round() as u32;
        let first_msg_id = match rng.u8(..4) {
            0 => 1,
            1 => (1 << 53) - rng.i64(0..100),
            2 => (1 << 53) + rng.i64(0..1_000_000_000),
            _ => i64::MAX - 1_000_000 + rng.i64(0..1_000),
        };
        let chaos = Duration::from_millis(rng.u64(5_000..=40_000));
        let rates = FaultRates::draw(&mut rng, chaos);
        let handlers = HandlerProfile::draw(&mut rng);

        let mut plan = Vec::new();
        let at = |rng: &mut fastrand::Rng, share: f64| {
            Duration::from_millis(rng.u64(0..=chaos.mul_f64(share).as_millis() as u64))
        };
        let bursts = rng.u32(1..=4);
        let mut left = messages;
        for burst in 0..bursts {
            let n = if burst + 1 == bursts {
                left
            } else {
                rng.u32(0..=left)
            };
            left -= n;
            plan.push((at(&mut rng, 0.75), Action::Send(n)));
        }
        for _ in 0..workers {
            plan.push((Duration::ZERO, Action::StartWorker));
        }
        if rng.u8(..10) < 7 {
            for (action, most) in [(Action::Kill, 3), (Action::Stop, 2), (Action::Deprecate, 2)] {
                for _ in 0..rng.u32(0..=most) {
                    plan.push((at(&mut rng, 1.0), action));
                }
            }
        }
        plan.push((chaos, Action::Quiet));
        Self {
            raw_config,
            config,
            workers,
            messages,
            first_msg_id,
            chaos,
            rates,
            handlers,
            plan,
        }
    }
}

/// A configuration that keeps schedules short: small timeouts and delays.
fn draw_config(rng: &mut fastrand::Rng) -> Value {
    let vt = rng.u32(2..=10);
    let mut lease = json!({ "visibilityTimeoutSeconds": vt });
    if rng.bool() {
        lease["renewBeforeExpirySeconds"] = json!(rng.u32(1..vt));
    }
    let delay = rng.u32(0..=4);
    let mut handler = json!({ "graceMs": rng.u32(0..=2_000) });
    if rng.bool() {
        handler["timeoutSeconds"] = json!(rng.u32(1..=12));
    }
    let jitter = ["none", "full", "equal"][rng.usize(..3)];
    json!({
        "queue": { "name": "sim", "batchSize": rng.u32(1..=10) },
        "concurrency": { "maxConcurrent": rng.u32(1..=8) },
        "polling": {
            "maxPollSeconds": rng.u32(1..=3),
            "pollIntervalMs": rng.u32(100..=1_000),
        },
        "lease": lease,
        "retry": {
            "limit": rng.u32(0..=4),
            "strategy": if rng.bool() { "fixed" } else { "exponential" },
            "delaySeconds": delay,
            "maxDelaySeconds": delay + rng.u32(0..=20),
            "jitter": jitter,
        },
        "handler": handler,
        "lifecycle": { "heartbeatIntervalSeconds": rng.u32(1..=5) },
    })
}

/// What a schedule did, for the summary line.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Messages sent.
    pub messages: u64,
    /// Messages archived.
    pub archived: u64,
    /// Messages dead-lettered.
    pub dead_lettered: u64,
    /// Worker incarnations started.
    pub workers: u64,
    /// Workers killed (by the plan or at a missed deadline).
    pub kills: u64,
    /// Steps taken.
    pub steps: u64,
    /// Simulated time, in milliseconds.
    pub sim_ms: u64,
    /// Handler runs and re-runs.
    pub counts: Counts,
}

impl Summary {
    /// Adds `other` into this one.
    pub fn add(&mut self, other: &Summary) {
        self.messages += other.messages;
        self.archived += other.archived;
        self.dead_lettered += other.dead_lettered;
        self.workers += other.workers;
        self.kills += other.kills;
        self.steps += other.steps;
        self.sim_ms += other.sim_ms;
        self.counts.add(&other.counts);
    }
}

/// The result of one schedule.
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Every invariant broken, in the order seen.
    pub violations: Vec<Violation>,
    /// What happened.
    pub summary: Summary,
    /// The trace, if it was on.
    pub trace: Trace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Chaos,
    Quiet { since: Timestamp },
    Final,
}

/// A running schedule.
struct World {
    config: Config,
    sched: Scheduler<Due>,
    db: SimDb,
    link: Link,
    faults: Faults,
    ledger: Ledger,
    trace: Trace,
    hosts: Vec<Host>,
    rng: fastrand::Rng,
    phase: Phase,
    summary: Summary,
}

/// Runs the schedule of `seed`, tracing it if `trace` is set.
pub fn run(seed: u64, trace: bool) -> Report {
    let scenario = Scenario::draw(seed);
    let mut world = World::new(seed, &scenario, trace);
    world.trace.line(EPOCH, || {
        format!(
            "seed {seed}: {} workers, {} messages from id {}, chaos {:?}, {:?}, {:?}, config {}",
            scenario.workers,
            scenario.messages,
            scenario.first_msg_id,
            scenario.chaos,
            scenario.rates,
            scenario.handlers,
            scenario.raw_config
        )
    });
    for &(offset, action) in &scenario.plan {
        world.sched.at(EPOCH + offset, Due::Act(action));
    }
    world.run();
    world.report(seed)
}

impl World {
    fn new(seed: u64, scenario: &Scenario, trace: bool) -> Self {
        let vt = scenario.config.visibility_timeout();
        Self {
            config: scenario.config.clone(),
            sched: Scheduler::new(EPOCH),
            db: SimDb::new(scenario.first_msg_id),
            link: Link::default(),
            faults: Faults::new(
                seed ^ 0x5eed_fa17,
                scenario.rates.clone(),
                scenario.handlers,
                vt,
            ),
            ledger: Ledger::new(&scenario.config),
            trace: Trace::new(trace),
            hosts: Vec::new(),
            rng: fastrand::Rng::with_seed(seed ^ 0x0ac7_1045),
            phase: Phase::Chaos,
            summary: Summary::default(),
        }
    }

    fn run(&mut self) {
        while let Some(due) = self.sched.next() {
            self.summary.steps += 1;
            self.step(due);
            if self.stuck() {
                return;
            }
            match self.phase {
                Phase::Chaos => {}
                Phase::Quiet { .. } if self.db.queue.is_empty() => self.begin_final(),
                Phase::Quiet { .. } => {
                    if !self.hosts.iter().any(Host::is_serving) {
                        self.start_worker();
                    }
                }
                Phase::Final => {
                    if self.hosts.iter().all(|h| h.life() != Life::Alive) {
                        return;
                    }
                }
            }
        }
    }

    /// Whether the schedule ran too long; records why.
    fn stuck(&mut self) -> bool {
        let now = self.sched.now();
        let too_long = match self.phase {
            Phase::Quiet { since } => now > since + MAX_QUIET,
            _ => false,
        };
        if !too_long && self.summary.steps < MAX_STEPS {
            return false;
        }
        let left: Vec<_> = self
            .db
            .queue
            .iter()
            .take(10)
            .map(|(id, row)| format!("{id}@{} vt+{:?}", row.read_ct, now.until(row.vt)))
            .collect();
        self.ledger.violate(
            Invariant::Drains,
            now,
            format!(
                "{:?} not over after {} steps; {} messages left, such as {left:?}",
                self.phase,
                self.summary.steps,
                self.db.queue.len()
            ),
        );
        true
    }

    fn step(&mut self, due: Due) {
        match due {
            Due::Wake { host, gen } => self.with_host(host, |h, env| h.wake(env, gen)),
            Due::Settle {
                host,
                msg_id,
                read_ct,
                outcome,
            } => self.with_host(host, |h, env| h.settle(env, msg_id, read_ct, outcome)),
            Due::Deliver { host, event } => {
                let vt = self.config.visibility_timeout();
                self.with_host(host, |h, env| {
                    let deprecated = matches!(event, Event::HeartbeatFinished { deprecated: true })
                        && h.is_serving();
                    h.deliver(env, event);
                    if deprecated {
                        // The core gives its handlers one lease to finish.
                        env.sched.after(vt + STOP_SLACK, Due::StopCheck { host });
                    }
                })
            }
            Due::Arrive(id) => self.with_link(|link, wire| link.arrive(id, wire)),
            Due::Poll(id) => self.with_link(|link, wire| link.look(id, wire)),
            Due::Cancel(id) => self.with_link(|link, wire| link.cancel(id, wire)),
            Due::Act(action) => self.act(action),
            Due::StopCheck { host } => {
                if self.hosts[host].life() == Life::Alive {
                    let now = self.sched.now();
                    self.ledger.violate(
                        Invariant::EndsStopped,
                        now,
                        format!("worker {host} not stopped {STOP_SLACK:?} after its deadline"),
                    );
                    self.kill(host);
                }
            }
        }
    }

    fn act(&mut self, action: Action) {
        let now = self.sched.now();
        self.trace.line(now, || format!("plan {action:?}"));
        match action {
            Action::Send(n) => {
                for _ in 0..n {
                    let msg_id = self.db.send(now);
                    self.ledger.sent(msg_id);
                }
                self.summary.messages += u64::from(n);
            }
            // A restart planned during chaos comes too late once the
            // final stop has begun.
            Action::StartWorker if self.phase == Phase::Final => {}
            Action::StartWorker => self.start_worker(),
            Action::Kill => {
                if let Some(host) = self.pick(|h| h.life() == Life::Alive) {
                    self.kill(host);
                    if self.rng.u8(..5) > 0 {
                        let later = Duration::from_millis(self.rng.u64(0..=5_000));
                        self.sched.after(later, Due::Act(Action::StartWorker));
                    }
                }
            }
            Action::Stop => {
                if let Some(host) = self.pick(Host::is_serving) {
                    self.request_stop(host);
                    if self.rng.u8(..10) < 7 {
                        self.start_worker();
                    }
                }
            }
            Action::Deprecate => {
                if let Some(host) = self.pick(Host::is_serving) {
                    self.db.deprecate(self.hosts[host].key());
                }
            }
            Action::Quiet => {
                self.faults.disable();
                self.phase = Phase::Quiet { since: now };
                if !self.hosts.iter().any(Host::is_serving) {
                    self.start_worker();
                }
            }
        }
    }

    /// Asks `host` to stop by a drawn deadline, sometimes twice.
    fn request_stop(&mut self, host: HostId) {
        let now = self.sched.now();
        let reason = if self.rng.bool() {
            StopReason::Shutdown
        } else {
            StopReason::Stop
        };
        let budget = Duration::from_millis(self.rng.u64(0..=8_000));
        let deadline = now + budget;
        self.with_host(host, |h, env| {
            h.deliver(env, Event::StopRequested { reason, deadline })
        });
        self.sched
            .at(deadline + STOP_SLACK, Due::StopCheck { host });
        if self.rng.u8(..10) < 3 {
            // A second, harder request: the isolate is about to go.
            let later = Duration::from_millis(self.rng.u64(0..=budget.as_millis() as u64));
            let event = Event::StopRequested {
                reason: StopReason::Shutdown,
                deadline: now + later + (budget - later) / 2,
            };
            self.sched.after(later, Due::Deliver { host, event });
        }
    }

    fn begin_final(&mut self) {
        self.phase = Phase::Final;
        let now = self.sched.now();
        self.trace.line(now, || "plan final stop".to_string());
        for host in 0..self.hosts.len() {
            if self.hosts[host].life() == Life::Alive {
                let deadline = now + Duration::from_millis(self.rng.u64(0..=5_000));
                self.with_host(host, |h, env| {
                    h.deliver(
                        env,
                        Event::StopRequested {
                            reason: StopReason::Shutdown,
                            deadline,
                        },
                    )
                });
                self.sched
                    .at(deadline + STOP_SLACK, Due::StopCheck { host });
            }
        }
    }

    fn start_worker(&mut self) {
        let id = self.hosts.len();
        let key = 1_000 + id as u64;
        let seed = self.rng.u64(..);
        self.hosts.push(Host::new(id, key, &self.config, seed));
        self.summary.workers += 1;
        self.trace.line(self.sched.now(), || {
            format!("plan start w{id} (core seed {seed})")
        });
        self.with_host(id, |h, env| h.start(env));
    }

    fn kill(&mut self, host: HostId) {
        self.summary.kills += 1;
        self.with_host(host, |h, env| h.kill(env));
    }

    /// A random host among those `which` accepts.
    fn pick(&mut self, which: impl Fn(&Host) -> bool) -> Option<HostId> {
        let candidates: Vec<HostId> = (0..self.hosts.len())
            .filter(|&i| which(&self.hosts[i]))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        Some(candidates[self.rng.usize(..candidates.len())])
    }

    fn with_host(&mut self, host: HostId, f: impl FnOnce(&mut Host, &mut Env<'_>)) {
        let mut env = Env {
            sched: &mut self.sched,
            link: &mut self.link,
            faults: &mut self.faults,
            ledger: &mut self.ledger,
            trace: &mut self.trace,
        };
        f(&mut self.hosts[host], &mut env);
    }

    fn with_link(&mut self, f: impl FnOnce(&mut Link, &mut Wire<'_>)) {
        let mut wire = Wire {
            sched: &mut self.sched,
            db: &mut self.db,
            ledger: &mut self.ledger,
            trace: &mut self.trace,
        };
        f(&mut self.link, &mut wire);
    }

    fn report(mut self, seed: u64) -> Report {
        let now = self.sched.now();
        for (id, host) in self.hosts.iter().enumerate() {
            if host.life() == Life::Alive {
                self.ledger.violate(
                    Invariant::EndsStopped,
                    now,
                    format!("worker {id} still running at the end"),
                );
            }
        }
        self.ledger.finish(now, &self.db);
        self.summary.archived = self.db.archive.len() as u64;
        self.summary.dead_lettered = self.db.dead_letters.len() as u64;
        self.summary.sim_ms = now.as_millis() - EPOCH.as_millis();
        self.summary.counts = self.ledger.counts.clone();
        self.summary.counts.closed_retries = self.db.closed_retries;
        self.summary.counts.closed_extends = self.db.closed_extends;
        Report {
            seed,
            violations: std::mem::take(&mut self.ledger.violations),
            summary: self.summary,
            trace: self.trace,
        }
    }
}
