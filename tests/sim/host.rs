//! One simulated worker: the real core, and around it what the wasm driver
//! and the TypeScript shim do.
//!
//! The host feeds the core each event with the simulated time, polls it,
//! and performs every command: database calls go over the [`Link`] with a
//! drawn latency and fault, handlers run for a drawn time and settle with a
//! drawn outcome, and a wake-up is scheduled for `next_wake`. Killing the
//! host drops the core: its handlers vanish and its leases are left to
//! expire. A [`WorkerWatch`] sees everything the core is fed and returns.

use std::collections::BTreeMap;
use std::time::Duration;

use edge_worker::core::event::{Command, Event, MsgId, Outcome, WriteBatch};
use edge_worker::core::{Config, Timestamp, Worker};

use super::clock::{elapsed, Scheduler};
use super::db::WorkerKey;
use super::faults::{self, Faults};
use super::invariants::{HostId, Invariant, Ledger, WorkerWatch};
use super::link::{whole_seconds, CallId, Link, Request};
use super::trace::Trace;
use super::world::Due;

/// Polls in a row at one instant after which `next_wake` counts as a busy
/// loop.
const MAX_POLLS_AT_ONE_INSTANT: u32 = 100;

/// Where a host is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    /// The core runs.
    Alive,
    /// The core reached `stopped()`; the isolate is gone.
    Retired,
    /// Dropped without warning.
    Killed,
}

/// A handler the shim is running.
#[derive(Debug, Clone, Copy)]
struct Run {
    abort_after: Option<Duration>,
}

/// What a host needs from the world to act.
pub struct Env<'a> {
    /// The clock.
    pub sched: &'a mut Scheduler<Due>,
    /// Calls in flight.
    pub link: &'a mut Link,
    /// Latency, faults and handler behaviour.
    pub faults: &'a mut Faults,
    /// The invariant ledger.
    pub ledger: &'a mut Ledger,
    /// The trace.
    pub trace: &'a mut Trace,
}

/// One worker incarnation.
pub struct Host {
    id: HostId,
    key: WorkerKey,
    worker: Option<Worker>,
    life: Life,
    watch: WorkerWatch,
    runs: BTreeMap<(MsgId, i32), Run>,
    claim: Option<CallId>,
    armed: Option<Timestamp>,
    wake_gen: u64,
}

impl Host {
    /// A host `id` whose worker row is `key`, running `config`; `seed`
    /// seeds the core.
    pub fn new(id: HostId, key: WorkerKey, config: &Config, seed: u64) -> Self {
        Self {
            id,
            key,
            worker: Some(Worker::new(config.clone(), seed)),
            life: Life::Alive,
            watch: WorkerWatch::new(id, config),
            runs: BTreeMap::new(),
            claim: None,
            armed: None,
            wake_gen: 0,
        }
    }

    /// The worker row's id.
    pub fn key(&self) -> WorkerKey {
        self.key
    }

    /// Where the host is in its life.
    pub fn life(&self) -> Life {
        self.life
    }

    /// Alive and not asked to stop: it will keep claiming.
    pub fn is_serving(&self) -> bool {
        self.life == Life::Alive && !self.watch.stopping()
    }

    /// Starts the core.
    pub fn start(&mut self, env: &mut Env<'_>) {
        let now = env.sched.now();
        env.ledger.host_active(self.id);
        if let Some(worker) = &mut self.worker {
            worker.start(now);
        }
        self.pump(env);
    }

    /// Feeds `event` to the core, then polls it.
    pub fn deliver(&mut self, env: &mut Env<'_>, event: Event) {
        if self.life != Life::Alive {
            return;
        }
        let now = env.sched.now();
        if matches!(event, Event::ClaimFinished(_) | Event::ClaimFailed(_)) {
            self.claim = None;
        }
        env.trace.line(now, || {
            format!("w{}  <- {}", self.id, describe_event(&event))
        });
        self.watch.delivered(now, &event, env.ledger);
        if let Some(worker) = &mut self.worker {
            worker.handle(now, event);
        }
        self.pump(env);
    }

    /// The timer armed for wake-up `gen` fired.
    pub fn wake(&mut self, env: &mut Env<'_>, gen: u64) {
        if self.life == Life::Alive && gen == self.wake_gen {
            self.armed = None;
            self.pump(env);
        }
    }

    /// The handler for `(msg_id, read_ct)` settles with `outcome`, unless it
    /// already did or vanished.
    pub fn settle(&mut self, env: &mut Env<'_>, msg_id: MsgId, read_ct: i32, outcome: Outcome) {
        if self.life != Life::Alive || self.runs.remove(&(msg_id, read_ct)).is_none() {
            return;
        }
        // The outcome counts for the claim the run carries now, which is a
        // later one if this worker re-read the message while it ran.
        let fenced = self.watch.fence_of_run(msg_id, read_ct);
        let timed_out = self.watch.timed_out(msg_id, read_ct);
        env.ledger.settled(fenced, &outcome, timed_out);
        self.deliver(
            env,
            Event::HandlerFinished {
                msg_id,
                read_ct,
                outcome,
            },
        );
    }

    /// Drops the core without warning, as a killed isolate.
    pub fn kill(&mut self, env: &mut Env<'_>) {
        if self.life != Life::Alive {
            return;
        }
        env.trace
            .line(env.sched.now(), || format!("w{}  killed", self.id));
        self.life = Life::Killed;
        self.worker = None;
        self.vanish(env);
    }

    /// Polls the core until it has nothing more to do now, performing
    /// every command, then arms the timer for its next wake-up.
    fn pump(&mut self, env: &mut Env<'_>) {
        let now = env.sched.now();
        let mut polls = 0;
        loop {
            let Some(worker) = &mut self.worker else {
                return;
            };
            let commands = worker.poll(now);
            let stopped = worker.stopped();
            let wake = worker.next_wake();
            self.watch.commands(now, &commands, env.ledger);
            for command in commands {
                self.perform(env, command);
            }
            if let Some(result) = stopped {
                return self.retire(env, &result);
            }
            match wake {
                Some(at) if at <= now => {
                    polls += 1;
                    if polls >= MAX_POLLS_AT_ONE_INSTANT {
                        env.ledger.violate(
                            Invariant::NoBusyLoop,
                            now,
                            format!(
                                "worker {} asks to be woken now, {polls} polls in a row",
                                self.id
                            ),
                        );
                        return;
                    }
                }
                Some(at) => {
                    if self.armed != Some(at) {
                        self.armed = Some(at);
                        self.wake_gen += 1;
                        env.sched.at(
                            at,
                            Due::Wake {
                                host: self.id,
                                gen: self.wake_gen,
                            },
                        );
                    }
                    return;
                }
                None => {
                    self.armed = None;
                    return;
                }
            }
        }
    }

    fn perform(&mut self, env: &mut Env<'_>, command: Command) {
        let now = env.sched.now();
        if !matches!(command, Command::Log(_)) {
            env.trace.line(now, || {
                format!("w{}  -> {}", self.id, describe_command(&command))
            });
        }
        match command {
            Command::Setup => {
                self.call(env, Request::Setup);
            }
            Command::Claim {
                qty,
                vt,
                max_poll_seconds,
                poll_interval_ms,
            } => {
                let request = Request::Claim {
                    qty,
                    vt_s: whole_seconds(vt),
                    max_poll: Duration::from_secs(max_poll_seconds.into()),
                    interval: Duration::from_millis(poll_interval_ms.into()),
                };
                self.claim = Some(self.call(env, request));
            }
            Command::CancelClaim => {
                if let Some(id) = self.claim {
                    let latency = env.faults.call(elapsed(now)).request;
                    env.sched.after(latency, Due::Cancel(id));
                }
            }
            Command::StartHandler {
                msg_id, read_ct, ..
            } => {
                let plan = env.faults.handler();
                env.ledger.run_started(msg_id);
                self.runs.insert(
                    (msg_id, read_ct),
                    Run {
                        abort_after: plan.abort_after,
                    },
                );
                env.sched.after(
                    plan.duration,
                    Due::Settle {
                        host: self.id,
                        msg_id,
                        read_ct,
                        outcome: plan.outcome,
                    },
                );
            }
            Command::AbortHandler { msg_id, .. } => {
                let heeding = self
                    .runs
                    .range((msg_id, i32::MIN)..=(msg_id, i32::MAX))
                    .filter_map(|(&(_, read_ct), run)| Some((read_ct, run.abort_after?)));
                for (read_ct, after) in heeding {
                    env.sched.after(
                        after,
                        Due::Settle {
                            host: self.id,
                            msg_id,
                            read_ct,
                            outcome: faults::aborted(),
                        },
                    );
                }
            }
            Command::Write { id, batch } => {
                let plan = env.faults.call(elapsed(now));
                if let WriteBatch::Extend { items, .. } | WriteBatch::Release(items) = &batch {
                    // A lease whose extension fails or crawls may lapse
                    // through no fault of the core, and so may one whose
                    // release fails: that release is never sent again.
                    if plan.is_disturbed() {
                        env.ledger.excuse(self.id, items);
                    }
                }
                env.link.send(
                    env.sched,
                    self.id,
                    self.key,
                    Request::Write { id, batch },
                    plan,
                );
            }
            Command::Heartbeat(_) => {
                self.call(env, Request::Heartbeat);
            }
            Command::MarkStopped { .. } => {
                env.ledger.host_gone(self.id);
                self.call(env, Request::MarkStopped);
            }
            Command::Log(record) => env.trace.line(now, || {
                format!("w{}  log {} {:?}", self.id, record.event, record.fields)
            }),
        }
    }

    fn call(&mut self, env: &mut Env<'_>, request: Request) -> CallId {
        let plan = env.faults.call(elapsed(env.sched.now()));
        env.link.send(env.sched, self.id, self.key, request, plan)
    }

    fn retire(&mut self, env: &mut Env<'_>, result: &Result<(), String>) {
        let now = env.sched.now();
        env.trace
            .line(now, || format!("w{}  stopped {result:?}", self.id));
        self.life = Life::Retired;
        if let Some(worker) = &self.worker {
            let stats = worker.stats();
            self.watch.retired(now, result, &stats, env.ledger);
        }
        self.vanish(env);
    }

    /// The isolate is gone: running handlers vanish, leases are left.
    fn vanish(&mut self, env: &mut Env<'_>) {
        env.ledger.host_gone(self.id);
        for (msg_id, _) in std::mem::take(&mut self.runs).into_keys() {
            env.ledger.run_vanished(msg_id);
        }
    }
}

fn describe_event(event: &Event) -> String {
    match event {
        Event::ClaimFinished(claimed) => {
            let ids: Vec<String> = claimed
                .iter()
                .map(|c| format!("{}@{}", c.msg_id, c.read_ct))
                .collect();
            format!("claimed [{}]", ids.join(","))
        }
        Event::HandlerFinished {
            msg_id,
            read_ct,
            outcome,
        } => {
            let outcome = match outcome {
                Outcome::Succeeded => "ok".to_string(),
                Outcome::Failed(f) => format!(
                    "failed {} retryable={} after={:?}",
                    f.error.name, f.retryable, f.retry_after
                ),
            };
            format!("handler {msg_id}@{read_ct} {outcome}")
        }
        other => format!("{other:?}"),
    }
}

fn describe_command(command: &Command) -> String {
    match command {
        Command::Heartbeat(_) => "heartbeat".into(),
        Command::Write { id, batch } => {
            let items: Vec<String> = batch
                .messages()
                .iter()
                .map(|f| format!("{}@{}", f.msg_id, f.read_ct))
                .collect();
            format!("write {id} {} [{}]", batch.kind(), items.join(","))
        }
        other => format!("{other:?}"),
    }
}
