//! Calls between a worker and the database: each travels for its drawn
//! latency, lands on the database (unless it fails first), and its reply
//! travels back (unless it is lost).
//!
//! A claim is `read_with_poll`: it looks at once, and while it finds nothing
//! it looks again every poll interval until `maxPollSeconds` have passed. A
//! cancelled claim that has not taken rows rejects with `57014` and leaves
//! the queue untouched. Requests that were sent keep landing after their
//! worker died; only the replies go nowhere.

use std::collections::BTreeMap;
use std::time::Duration;

use edge_worker::core::event::{DbError, Event, MsgId, WriteBatch, WriteId};
use edge_worker::core::Timestamp;

use super::clock::Scheduler;
use super::db::{SimDb, WorkerKey};
use super::faults::{self, CallFault, CallPlan};
use super::invariants::{HostId, Ledger};
use super::trace::Trace;
use super::world::Due;

/// Names one call in flight.
pub type CallId = u64;

/// What a worker asks of the database.
#[derive(Debug, Clone)]
pub enum Request {
    /// `pgmq.create` and `edge_worker.register_worker`.
    Setup,
    /// `pgmq.read_with_poll`.
    Claim {
        /// Most rows to take.
        qty: u32,
        /// Lease per row, in whole seconds.
        vt_s: u64,
        /// Longest wait for rows.
        max_poll: Duration,
        /// Time between looks.
        interval: Duration,
    },
    /// One of the fenced batch functions.
    Write {
        /// The core's name for the write.
        id: WriteId,
        /// What to write.
        batch: WriteBatch,
    },
    /// `edge_worker.heartbeat`.
    Heartbeat,
    /// `edge_worker.stop_worker`.
    MarkStopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// On its way to the database.
    Sent { cancelled: bool },
    /// A claim that found nothing yet and looks again until `until`.
    Polling { until: Timestamp },
}

#[derive(Debug)]
struct Call {
    host: HostId,
    key: WorkerKey,
    request: Request,
    plan: CallPlan,
    state: State,
}

/// Every call between the workers and the database still under way.
#[derive(Debug, Default)]
pub struct Link {
    calls: BTreeMap<CallId, Call>,
    sent: CallId,
}

/// What `Link::send` and friends need from the world.
pub struct Wire<'a> {
    /// The clock.
    pub sched: &'a mut Scheduler<Due>,
    /// The database.
    pub db: &'a mut SimDb,
    /// The invariant ledger.
    pub ledger: &'a mut Ledger,
    /// The trace.
    pub trace: &'a mut Trace,
}

impl Link {
    /// Sends `request` for worker `host` (row `key`) with the drawn `plan`.
    pub fn send(
        &mut self,
        sched: &mut Scheduler<Due>,
        host: HostId,
        key: WorkerKey,
        request: Request,
        plan: CallPlan,
    ) -> CallId {
        self.sent += 1;
        let id = self.sent;
        sched.after(plan.request, Due::Arrive(id));
        self.calls.insert(
            id,
            Call {
                host,
                key,
                request,
                plan,
                state: State::Sent { cancelled: false },
            },
        );
        id
    }

    /// Call `id` reaches the database.
    pub fn arrive(&mut self, id: CallId, wire: &mut Wire<'_>) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let now = wire.sched.now();
        if let Some(CallFault::FailBefore(error)) = &call.plan.fault {
            let error = error.clone();
            wire.trace
                .line(now, || format!("db   call {id} fails before applying"));
            return self.fail(id, error, wire);
        }
        if let State::Sent { cancelled: true } = call.state {
            return self.fail(id, faults::claim_cancelled(), wire);
        }
        let event = match &call.request {
            Request::Setup => {
                wire.db.register(call.key);
                Event::SetupFinished
            }
            Request::Claim { max_poll, .. } => {
                let until = now + *max_poll;
                self.calls.get_mut(&id).expect("call exists").state = State::Polling { until };
                return self.look(id, wire);
            }
            Request::Write { id: write, batch } => {
                let applied = apply(wire.db, now, batch);
                wire.trace.line(now, || {
                    format!(
                        "db   w{} {} {} applied {:?}",
                        call.host,
                        batch.kind(),
                        ids(batch),
                        applied
                    )
                });
                wire.ledger.write_applied(now, call.host, batch, &applied);
                Event::WriteFinished {
                    id: *write,
                    applied,
                }
            }
            Request::Heartbeat => Event::HeartbeatFinished {
                deprecated: wire.db.heartbeat(call.key),
            },
            Request::MarkStopped => {
                wire.db.stop_worker(call.key);
                Event::MarkStoppedFinished
            }
        };
        self.finish(id, event, wire);
    }

    /// A polling claim looks again.
    pub fn look(&mut self, id: CallId, wire: &mut Wire<'_>) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let (
            State::Polling { until },
            Request::Claim {
                qty,
                vt_s,
                interval,
                ..
            },
        ) = (call.state, &call.request)
        else {
            return;
        };
        let now = wire.sched.now();
        let taken = wire.db.read(now, *qty, *vt_s);
        if taken.is_empty() && now < until {
            wire.sched.at((now + *interval).min(until), Due::Poll(id));
            return;
        }
        let disturbed = call.plan.is_disturbed();
        for t in &taken {
            wire.ledger.read(now, call.host, t, disturbed);
        }
        let claimed: Vec<_> = taken.iter().map(|t| t.claimed).collect();
        wire.trace
            .line(now, || format!("db   w{} read {:?}", call.host, claimed));
        self.finish(id, Event::ClaimFinished(claimed), wire);
    }

    /// The worker cancels claim `id`: it stops unless it already took rows.
    pub fn cancel(&mut self, id: CallId, wire: &mut Wire<'_>) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        match call.state {
            State::Sent { .. } => call.state = State::Sent { cancelled: true },
            State::Polling { .. } => self.fail(id, faults::claim_cancelled(), wire),
        }
    }

    /// Sends the answer back, or a connection error if the reply is lost.
    fn finish(&mut self, id: CallId, event: Event, wire: &mut Wire<'_>) {
        let lost = self
            .calls
            .get(&id)
            .is_some_and(|c| c.plan.fault == Some(CallFault::ReplyLost));
        if lost {
            wire.trace
                .line(wire.sched.now(), || format!("db   call {id} reply lost"));
            return self.fail(id, faults::reply_lost(), wire);
        }
        self.reply(id, event, wire);
    }

    fn fail(&mut self, id: CallId, error: DbError, wire: &mut Wire<'_>) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let event = match &call.request {
            Request::Setup => Event::SetupFailed(error),
            Request::Claim { .. } => Event::ClaimFailed(error),
            Request::Write { id, .. } => Event::WriteFailed { id: *id, error },
            Request::Heartbeat => Event::HeartbeatFailed(error),
            Request::MarkStopped => Event::MarkStoppedFinished,
        };
        self.reply(id, event, wire);
    }

    fn reply(&mut self, id: CallId, event: Event, wire: &mut Wire<'_>) {
        let Some(call) = self.calls.remove(&id) else {
            return;
        };
        wire.sched.after(
            call.plan.reply,
            Due::Deliver {
                host: call.host,
                event,
            },
        );
    }
}

/// Applies a batch write as the SQL function would, with durations rounded
/// up to whole seconds as the driver sends them.
fn apply(db: &mut SimDb, now: Timestamp, batch: &WriteBatch) -> Vec<MsgId> {
    match batch {
        WriteBatch::Archive(items) => db.archive(items),
        WriteBatch::Retry(items) => {
            let items: Vec<_> = items
                .iter()
                .map(|(f, delay, error)| (*f, whole_seconds(*delay), error.clone()))
                .collect();
            db.retry(now, &items)
        }
        WriteBatch::DeadLetter(items) => db.dead_letter(items),
        WriteBatch::Release(items) => db.release(now, items),
        WriteBatch::Extend { items, vt } => db.extend(now, items, whole_seconds(*vt)),
    }
}

/// `d` in whole seconds, rounded up, as the driver converts it.
pub fn whole_seconds(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000_000)).unwrap_or(u64::MAX)
}

fn ids(batch: &WriteBatch) -> String {
    let items: Vec<String> = batch
        .messages()
        .iter()
        .map(|f| format!("{}@{}", f.msg_id, f.read_ct))
        .collect();
    format!("[{}]", items.join(","))
}
