//! What goes wrong, and how fast things are: every draw comes from the seed.
//!
//! A schedule draws its rates once ([`FaultRates::draw`],
//! [`HandlerProfile::draw`]); then every database call draws its latency and
//! fault ([`Faults::call`]) and every handler run its duration and outcome
//! ([`Faults::handler`]). Turning faults off for the quiet period leaves
//! handlers as they are: failing handlers are the user's, not a fault.

use std::time::Duration;

use edge_worker::core::error_text::ErrorText;
use edge_worker::core::event::{DbError, DbErrorKind, Failure, Outcome};

/// Latency of one leg of an ordinary database call, in milliseconds.
const FAST_LATENCY_MS: std::ops::RangeInclusive<u64> = 1..=40;
/// Latency of one leg of a slow database call, in milliseconds.
const SLOW_LATENCY_MS: std::ops::RangeInclusive<u64> = 400..=3_000;
/// The longest one leg of a call can take.
pub const MAX_LATENCY: Duration = Duration::from_millis(*SLOW_LATENCY_MS.end());

/// How often each kind of fault hits a call, for one schedule.
#[derive(Debug, Clone, Default)]
pub struct FaultRates {
    /// The call fails before the database applies it.
    pub fail_before: f64,
    /// The call is applied but its reply is lost as a connection error.
    pub reply_lost: f64,
    /// The call is slow on both legs.
    pub slow: f64,
    /// Database outages (a restart, a failover), as offsets from the start
    /// and lengths: every call sent during one fails before it is applied.
    pub outages: Vec<(Duration, Duration)>,
}

impl FaultRates {
    /// Rates for one schedule of `chaos` length: a fifth of schedules have
    /// no faults at all, the rest up to a few percent of each and up to two
    /// outages of up to 8 s.
    pub fn draw(rng: &mut fastrand::Rng, chaos: Duration) -> Self {
        if rng.u8(..5) == 0 {
            return Self::default();
        }
        let outages = (0..rng.u8(..3))
            .map(|_| {
                let start = rng.u64(0..chaos.as_millis() as u64);
                let length = rng.u64(200..=8_000);
                (Duration::from_millis(start), Duration::from_millis(length))
            })
            .collect();
        Self {
            fail_before: rng.f64() * 0.08,
            reply_lost: rng.f64() * 0.08,
            slow: rng.f64() * 0.03,
            outages,
        }
    }

    fn in_outage(&self, since_start: Duration) -> bool {
        self.outages
            .iter()
            .any(|&(start, length)| start <= since_start && since_start < start + length)
    }
}

/// How a database call goes wrong, if it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallFault {
    /// Fails with this error before it is applied.
    FailBefore(DbError),
    /// Applied, but the reply is lost as a connection error.
    ReplyLost,
}

/// How one database call will go.
#[derive(Debug, Clone)]
pub struct CallPlan {
    /// From the worker to the database.
    pub request: Duration,
    /// From the database back to the worker.
    pub reply: Duration,
    /// What goes wrong, if anything.
    pub fault: Option<CallFault>,
}

impl CallPlan {
    /// Whether anything about this call could cost the worker its lease: a
    /// fault or a slow leg.
    pub fn is_disturbed(&self) -> bool {
        self.fault.is_some()
            || self.request > Duration::from_millis(*FAST_LATENCY_MS.end())
            || self.reply > Duration::from_millis(*FAST_LATENCY_MS.end())
    }
}

/// How handlers behave in one schedule.
#[derive(Debug, Clone, Copy)]
pub struct HandlerProfile {
    /// Share of runs that fail.
    pub fail: f64,
    /// Share of failures that are not retryable.
    pub non_retryable: f64,
    /// Share of retryable failures that ask for their own delay.
    pub retry_after: f64,
    /// Share of runs that take seconds instead of milliseconds.
    pub medium: f64,
    /// Share of runs that take one to four visibility timeouts.
    pub slow: f64,
    /// Share of runs that settle soon after their AbortSignal fires.
    pub heeds_abort: f64,
}

impl HandlerProfile {
    /// A profile for one schedule.
    pub fn draw(rng: &mut fastrand::Rng) -> Self {
        Self {
            fail: rng.f64() * 0.5,
            non_retryable: rng.f64() * 0.3,
            retry_after: rng.f64() * 0.3,
            medium: rng.f64() * 0.2,
            slow: rng.f64() * 0.08,
            heeds_abort: 0.5 + rng.f64() * 0.5,
        }
    }
}

/// How one handler run will go.
#[derive(Debug, Clone)]
pub struct HandlerPlan {
    /// How long it runs if nobody aborts it.
    pub duration: Duration,
    /// How it ends if nobody aborts it.
    pub outcome: Outcome,
    /// How long after its AbortSignal it settles, if it heeds the signal.
    pub abort_after: Option<Duration>,
}

/// The fault source of one schedule.
pub struct Faults {
    rng: fastrand::Rng,
    rates: FaultRates,
    handlers: HandlerProfile,
    vt: Duration,
    enabled: bool,
}

impl Faults {
    /// Faults at `rates`, handlers per `handlers`; `vt` is the visibility
    /// timeout that slow handlers are measured in.
    pub fn new(seed: u64, rates: FaultRates, handlers: HandlerProfile, vt: Duration) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
            rates,
            handlers,
            vt,
            enabled: true,
        }
    }

    /// Turns database faults and slow calls off for good.
    pub fn disable(&mut self) {
        self.enabled = false;
    }

    /// Draws how one database call sent `since_start` into the schedule
    /// goes.
    pub fn call(&mut self, since_start: Duration) -> CallPlan {
        let off = FaultRates::default();
        let rates = if self.enabled { &self.rates } else { &off };
        let outage = rates.in_outage(since_start);
        let (fail_before, reply_lost, slow) = (rates.fail_before, rates.reply_lost, rates.slow);
        let range = if self.rng.f64() < slow {
            SLOW_LATENCY_MS
        } else {
            FAST_LATENCY_MS
        };
        let request = Duration::from_millis(self.rng.u64(range.clone()));
        let reply = Duration::from_millis(self.rng.u64(range));
        let roll = self.rng.f64();
        let fault = if outage {
            Some(CallFault::FailBefore(refused()))
        } else if roll < fail_before {
            Some(CallFault::FailBefore(self.db_error()))
        } else if roll < fail_before + reply_lost {
            Some(CallFault::ReplyLost)
        } else {
            None
        };
        CallPlan {
            request,
            reply,
            fault,
        }
    }

    /// Draws how one handler run goes.
    pub fn handler(&mut self) -> HandlerPlan {
        let p = self.handlers;
        let roll = self.rng.f64();
        let duration = if roll < p.slow {
            self.vt.mul_f64(1.0 + 3.0 * self.rng.f64())
        } else if roll < p.slow + p.medium {
            Duration::from_millis(self.rng.u64(300..=3_000))
        } else {
            Duration::from_millis(self.rng.u64(1..=300))
        };
        let outcome = if self.rng.f64() < p.fail {
            let retryable = self.rng.f64() >= p.non_retryable;
            let retry_after = (retryable && self.rng.f64() < p.retry_after)
                .then(|| Duration::from_millis(self.rng.u64(0..=8_000)));
            Outcome::Failed(Failure {
                error: ErrorText::new("TestError", "handler failed on purpose"),
                retryable,
                retry_after,
            })
        } else {
            Outcome::Succeeded
        };
        let abort_after =
            (self.rng.f64() < p.heeds_abort).then(|| Duration::from_millis(self.rng.u64(0..=200)));
        HandlerPlan {
            duration,
            outcome,
            abort_after,
        }
    }

    /// A transient error as the driver would classify it.
    fn db_error(&mut self) -> DbError {
        if self.rng.bool() {
            DbError {
                kind: DbErrorKind::Connection,
                code: Some("CONNECTION_CLOSED".into()),
                message: "write CONNECTION_CLOSED".into(),
            }
        } else {
            DbError {
                kind: DbErrorKind::Conflict,
                code: Some("40001".into()),
                message: "could not serialize access due to concurrent update".into(),
            }
        }
    }
}

/// The error a handler rejects with when its AbortSignal fired.
pub fn aborted() -> Outcome {
    Outcome::Failed(Failure {
        error: ErrorText::new("AbortError", "the handler was aborted"),
        retryable: true,
        retry_after: None,
    })
}

/// The error of a call sent while the database is down.
fn refused() -> DbError {
    DbError {
        kind: DbErrorKind::Connection,
        code: Some("ECONNREFUSED".into()),
        message: "connect ECONNREFUSED 127.0.0.1:5432".into(),
    }
}

/// The error a lost reply arrives as.
pub fn reply_lost() -> DbError {
    DbError {
        kind: DbErrorKind::Connection,
        code: Some("CONNECTION_CLOSED".into()),
        message: "connection closed before the reply arrived".into(),
    }
}

/// The error a cancelled claim rejects with.
pub fn claim_cancelled() -> DbError {
    DbError {
        kind: DbErrorKind::Conflict,
        code: Some("57014".into()),
        message: "canceling statement due to user request".into(),
    }
}
