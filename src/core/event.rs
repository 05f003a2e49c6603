//! What flows into the core (events) and out of it (commands).

use std::time::Duration;

use serde_json::Value;

use super::config::LogLevel;
use super::error_text::ErrorText;
use super::time::Timestamp;

/// A pgmq message id. pgmq ids are `bigint`; they cross into JavaScript as
/// decimal strings because they may exceed 2^53.
pub type MsgId = i64;

/// Identifies one batch write the core asked for, so that its result can be
/// matched to the messages in it.
pub type WriteId = u64;

/// A message as a claim returned it. Payloads stay in the shim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimed {
    /// The message id.
    pub msg_id: MsgId,
    /// pgmq's read count after this claim: the fence for every later write.
    pub read_ct: i32,
}

/// A message and the read count it was claimed with. Writes carrying it
/// apply only while the message still has that read count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fenced {
    /// The message id.
    pub msg_id: MsgId,
    /// The read count the worker claimed it with.
    pub read_ct: i32,
}

/// How a handler's attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The handler resolved.
    Succeeded,
    /// The handler threw or rejected.
    Failed(Failure),
}

/// A failed attempt as the shim reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Error class name and message.
    pub error: ErrorText,
    /// `false` sends the message straight to dead letters.
    pub retryable: bool,
    /// A delay the handler asked for, instead of the policy's.
    pub retry_after: Option<Duration>,
}

/// Why a handler's AbortSignal fired or the worker stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The Edge Runtime announced the isolate's end (`beforeunload`).
    Shutdown,
    /// `EdgeWorker.stop()` was called.
    Stop,
    /// An operator set `deprecated_at` on the worker's row.
    Deprecated,
}

impl StopReason {
    /// The name used in logs and AbortSignal reasons.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Shutdown => "shutdown",
            StopReason::Stop => "stop",
            StopReason::Deprecated => "deprecated",
        }
    }
}

/// Why a running handler is asked to abort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortReason {
    /// It ran longer than `handler.timeoutSeconds`.
    Timeout,
    /// The worker is stopping.
    Stopping(StopReason),
}

impl AbortReason {
    /// The name passed to the shim.
    pub fn as_str(self) -> &'static str {
        match self {
            AbortReason::Timeout => "timeout",
            AbortReason::Stopping(reason) => reason.as_str(),
        }
    }
}

/// What kind of database failure a call met, as the driver classified it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbErrorKind {
    /// The connection was lost, refused or ended; try again later.
    Connection,
    /// Deadlock, serialization failure, lock or statement timeout; try again.
    Conflict,
    /// Anything else: bad input, a missing object or permission.
    Fatal,
}

impl DbErrorKind {
    /// Whether trying the same call again may succeed.
    pub fn is_transient(self) -> bool {
        !matches!(self, DbErrorKind::Fatal)
    }

    /// The name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DbErrorKind::Connection => "connection",
            DbErrorKind::Conflict => "conflict",
            DbErrorKind::Fatal => "fatal",
        }
    }
}

/// A failed database call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbError {
    /// The classification.
    pub kind: DbErrorKind,
    /// SQLSTATE or client error code, when there was one.
    pub code: Option<String>,
    /// The error's message.
    pub message: String,
}

/// Counters reported with each heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages archived as succeeded.
    pub succeeded: u64,
    /// Handler attempts that failed.
    pub failed: u64,
    /// Messages moved to dead letters.
    pub dead_lettered: u64,
    /// Writes that found the message re-read by another worker.
    pub stale: u64,
    /// Handlers running now.
    pub in_flight: u32,
    /// The last handler error, `name: message`.
    pub last_error: Option<String>,
}

/// Something that happened, fed to the core with the time it was seen.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The queue exists and the worker row is registered.
    SetupFinished,
    /// Setting up failed.
    SetupFailed(DbError),
    /// A claim returned these messages (possibly none).
    ClaimFinished(Vec<Claimed>),
    /// A claim failed.
    ClaimFailed(DbError),
    /// A handler settled.
    HandlerFinished {
        /// The message it ran for.
        msg_id: MsgId,
        /// The read count it was started with.
        read_ct: i32,
        /// How it ended.
        outcome: Outcome,
    },
    /// A batch write finished; `applied` lists the ids it changed.
    WriteFinished {
        /// The write, as the command named it.
        id: WriteId,
        /// Ids that still carried the claimed read count and were changed.
        applied: Vec<MsgId>,
    },
    /// A batch write failed as a whole.
    WriteFailed {
        /// The write, as the command named it.
        id: WriteId,
        /// Why.
        error: DbError,
    },
    /// A heartbeat was stored; `deprecated` tells whether an operator asked
    /// this worker to retire.
    HeartbeatFinished {
        /// Whether the worker row has `deprecated_at` set.
        deprecated: bool,
    },
    /// A heartbeat failed.
    HeartbeatFailed(DbError),
    /// The worker should stop by `deadline`.
    StopRequested {
        /// Who asked.
        reason: StopReason,
        /// When the isolate will be gone.
        deadline: Timestamp,
    },
    /// The worker row is marked stopped and the pool is closed (or that
    /// failed, which changes nothing any more).
    MarkStoppedFinished,
}

/// One batch of fenced writes.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteBatch {
    /// Succeeded: move to the archive table.
    Archive(Vec<Fenced>),
    /// Failed, will run again: make visible after each delay and record the
    /// error.
    Retry(Vec<(Fenced, Duration, ErrorText)>),
    /// Failed for good: record the error and move to dead letters.
    DeadLetter(Vec<(Fenced, ErrorText)>),
    /// Not started: make visible now without using an attempt.
    Release(Vec<Fenced>),
    /// Running: push the visibility timeout out by `vt`.
    Extend {
        /// The leases to extend.
        items: Vec<Fenced>,
        /// The new lease, from the moment the database applies it.
        vt: Duration,
    },
}

impl WriteBatch {
    /// The name used in logs.
    pub fn kind(&self) -> &'static str {
        match self {
            WriteBatch::Archive(_) => "archive",
            WriteBatch::Retry(_) => "retry",
            WriteBatch::DeadLetter(_) => "dead_letter",
            WriteBatch::Release(_) => "release",
            WriteBatch::Extend { .. } => "extend",
        }
    }

    /// The messages the batch touches, in `msg_id` order.
    pub fn messages(&self) -> Vec<Fenced> {
        match self {
            WriteBatch::Archive(items) | WriteBatch::Release(items) => items.clone(),
            WriteBatch::Extend { items, .. } => items.clone(),
            WriteBatch::Retry(items) => items.iter().map(|(f, _, _)| *f).collect(),
            WriteBatch::DeadLetter(items) => items.iter().map(|(f, _)| *f).collect(),
        }
    }
}

/// A structured log record; the shim prints it.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    /// Severity.
    pub level: LogLevel,
    /// Short snake_case event name, such as `lease_lost`.
    pub event: &'static str,
    /// snake_case fields; message ids as strings.
    pub fields: Vec<(&'static str, Value)>,
}

/// Something the core asks the driver to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Create the queue if absent and register the worker row.
    Setup,
    /// Claim up to `qty` messages with `read_with_poll`.
    Claim {
        /// Most messages to take.
        qty: u32,
        /// Lease taken on each claimed message.
        vt: Duration,
        /// Longest wait for messages, in seconds.
        max_poll_seconds: u32,
        /// Look-again interval while waiting, in milliseconds.
        poll_interval_ms: u32,
    },
    /// Cancel the claim in flight; its messages stay untouched.
    CancelClaim,
    /// Run the handler for a claimed message.
    StartHandler {
        /// The message.
        msg_id: MsgId,
        /// The read count it was claimed with.
        read_ct: i32,
        /// 1-based attempt number.
        attempt: u32,
    },
    /// Fire a running handler's AbortSignal.
    AbortHandler {
        /// The message whose handler to abort.
        msg_id: MsgId,
        /// Why.
        reason: AbortReason,
    },
    /// Perform a batch write and report [`Event::WriteFinished`].
    Write {
        /// Names the write in its result event.
        id: WriteId,
        /// What to write.
        batch: WriteBatch,
    },
    /// Store a heartbeat with these counters.
    Heartbeat(Stats),
    /// Store the final counters, mark the worker row stopped and close the
    /// pool.
    MarkStopped(Stats),
    /// Print a log record.
    Log(LogRecord),
}
