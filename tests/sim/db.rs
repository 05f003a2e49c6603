//! The simulated database: one pgmq queue plus the `edge_worker` tables, with
//! the fenced batch operations of `docs/boundary.md`.
//!
//! It does what the SQL does and nothing more: a read takes visible rows in
//! `msg_id` order and leases them; every batch write applies per item only
//! while the row exists and still carries the claimed `read_ct`, and returns
//! the ids it changed. Durations arrive in whole seconds, as the driver
//! sends them. Whether the core used these operations correctly is for
//! `invariants` to judge; this file only keeps the tables.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use edge_worker::core::error_text::ErrorText;
use edge_worker::core::event::{Claimed, Fenced, MsgId};
use edge_worker::core::Timestamp;

/// Identifies one worker incarnation: the `worker_id` of its row.
pub type WorkerKey = u64;

/// A row of `pgmq.q_<queue>`.
#[derive(Debug, Clone)]
pub struct Row {
    /// Times read (decremented by a release).
    pub read_ct: i32,
    /// Invisible until this time.
    pub vt: Timestamp,
    /// Set by a retry: the row must not be read before this time. Kept so
    /// that the invariants can tell if a later write shortened the delay.
    pub retry_until: Option<Timestamp>,
    /// The operation that last set `vt`.
    pub vt_set_by: &'static str,
}

/// A row of `pgmq.a_<queue>`: a message archived as succeeded.
#[derive(Debug, Clone)]
pub struct Archived {
    /// The message.
    pub msg_id: MsgId,
}

/// A row of `edge_worker.dead_letters`.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The message.
    pub msg_id: MsgId,
    /// Its read count when dead-lettered.
    pub read_ct: i32,
    /// The final error.
    pub error: ErrorText,
}

/// A row of `edge_worker.attempt_errors`.
#[derive(Debug, Clone)]
pub struct AttemptError {
    /// The message.
    pub msg_id: MsgId,
    /// The read count it failed with.
    pub attempt: i32,
    /// The error.
    pub error: ErrorText,
}

/// A row of `edge_worker.workers`.
#[derive(Debug, Clone, Default)]
pub struct WorkerRow {
    /// `deprecated_at is not null`.
    pub deprecated: bool,
    /// `stopped_at is not null`.
    pub stopped: bool,
}

/// A row a read took, with what it looked like just before.
#[derive(Debug, Clone)]
pub struct Taken {
    /// The message and its new read count.
    pub claimed: Claimed,
    /// The retry delay's end the row carried, if it was retried.
    pub retry_until: Option<Timestamp>,
    /// The operation that last set its `vt`.
    pub vt_set_by: &'static str,
}

/// The queue, its archive and the `edge_worker` tables.
#[derive(Debug)]
pub struct SimDb {
    /// `pgmq.q_<queue>`.
    pub queue: BTreeMap<MsgId, Row>,
    /// `pgmq.a_<queue>`, in the order rows arrived.
    pub archive: Vec<Archived>,
    /// `edge_worker.dead_letters`, in the order rows arrived.
    pub dead_letters: Vec<DeadLetter>,
    /// `edge_worker.attempt_errors`, in the order rows arrived.
    pub attempt_errors: Vec<AttemptError>,
    /// `edge_worker.workers`.
    pub workers: BTreeMap<WorkerKey, WorkerRow>,
    /// Retry items skipped because their attempt was closed, that the fence
    /// alone would have let through.
    pub closed_retries: u64,
    /// Extend items skipped the same way.
    pub closed_extends: u64,
    next_msg_id: MsgId,
    /// No row is visible before this time. Set by a read that found
    /// nothing; cleared by any write that may make a row visible sooner.
    /// Only saves work: polling claims would otherwise scan every row.
    hidden_until: Option<Timestamp>,
}

impl SimDb {
    /// An empty queue whose first message gets `first_msg_id`.
    pub fn new(first_msg_id: MsgId) -> Self {
        Self {
            queue: BTreeMap::new(),
            archive: Vec::new(),
            dead_letters: Vec::new(),
            attempt_errors: Vec::new(),
            workers: BTreeMap::new(),
            closed_retries: 0,
            closed_extends: 0,
            next_msg_id: first_msg_id,
            hidden_until: None,
        }
    }

    /// `pgmq.send`: a new message, visible at once.
    pub fn send(&mut self, now: Timestamp) -> MsgId {
        let msg_id = self.next_msg_id;
        self.next_msg_id += 1;
        self.hidden_until = None;
        self.queue.insert(
            msg_id,
            Row {
                read_ct: 0,
                vt: now,
                retry_until: None,
                vt_set_by: "send",
            },
        );
        msg_id
    }

    /// One look of `pgmq.read_with_poll`: up to `qty` visible rows, lowest
    /// ids first, each leased for `vt_s` seconds and its read count raised.
    pub fn read(&mut self, now: Timestamp, qty: u32, vt_s: u64) -> Vec<Taken> {
        if self.hidden_until.is_some_and(|until| now < until) {
            return Vec::new();
        }
        let lease_until = now + Duration::from_secs(vt_s);
        let mut taken = Vec::new();
        for (&msg_id, row) in self.queue.iter_mut() {
            if taken.len() >= qty as usize {
                break;
            }
            if row.vt > now {
                continue;
            }
            row.read_ct += 1;
            row.vt = lease_until;
            taken.push(Taken {
                claimed: Claimed {
                    msg_id,
                    read_ct: row.read_ct,
                },
                retry_until: row.retry_until.take(),
                vt_set_by: row.vt_set_by,
            });
            row.vt_set_by = "read";
        }
        if taken.is_empty() {
            self.hidden_until = self.queue.values().map(|row| row.vt).min();
        }
        taken
    }

    /// `edge_worker.archive`: moves each still-claimed row to the archive.
    pub fn archive(&mut self, items: &[Fenced]) -> Vec<MsgId> {
        let mut applied = Vec::new();
        for fenced in distinct(items.iter().copied()) {
            if self.take_fenced(fenced).is_some() {
                self.archive.push(Archived {
                    msg_id: fenced.msg_id,
                });
                applied.push(fenced.msg_id);
            }
        }
        applied
    }

    /// `edge_worker.retry`: makes each still-claimed row visible after its
    /// delay and records its error under attempt `read_ct`.
    pub fn retry(&mut self, now: Timestamp, items: &[(Fenced, u64, ErrorText)]) -> Vec<MsgId> {
        let mut applied = Vec::new();
        let mut seen = BTreeSet::new();
        for (fenced, delay_s, error) in items {
            if !seen.insert((fenced.msg_id, fenced.read_ct)) {
                continue;
            }
            if self.attempt_closed(*fenced) {
                self.closed_retries += u64::from(self.fence_matches(*fenced));
                continue;
            }
            let Some(row) = self.fenced_row(*fenced) else {
                continue;
            };
            let until = now + Duration::from_secs(*delay_s);
            row.vt = until;
            row.retry_until = Some(until);
            row.vt_set_by = "retry";
            self.attempt_errors.push(AttemptError {
                msg_id: fenced.msg_id,
                attempt: fenced.read_ct,
                error: error.clone(),
            });
            applied.push(fenced.msg_id);
        }
        applied
    }

    /// `edge_worker.dead_letter`: records the error and moves each
    /// still-claimed row to the dead letters.
    pub fn dead_letter(&mut self, items: &[(Fenced, ErrorText)]) -> Vec<MsgId> {
        let mut applied = Vec::new();
        let mut seen = BTreeSet::new();
        for (fenced, error) in items {
            if !seen.insert((fenced.msg_id, fenced.read_ct)) || self.take_fenced(*fenced).is_none()
            {
                continue;
            }
            self.attempt_errors.push(AttemptError {
                msg_id: fenced.msg_id,
                attempt: fenced.read_ct,
                error: error.clone(),
            });
            self.dead_letters.push(DeadLetter {
                msg_id: fenced.msg_id,
                read_ct: fenced.read_ct,
                error: error.clone(),
            });
            applied.push(fenced.msg_id);
        }
        applied
    }

    /// `edge_worker.extend`: leases each still-claimed row for `vt_s` more
    /// seconds from now.
    pub fn extend(&mut self, now: Timestamp, items: &[Fenced], vt_s: u64) -> Vec<MsgId> {
        let mut applied = Vec::new();
        for fenced in distinct(items.iter().copied()) {
            if self.attempt_closed(fenced) {
                self.closed_extends += u64::from(self.fence_matches(fenced));
                continue;
            }
            if let Some(row) = self.fenced_row(fenced) {
                row.vt = now + Duration::from_secs(vt_s);
                row.vt_set_by = "extend";
                applied.push(fenced.msg_id);
            }
        }
        applied
    }

    /// `edge_worker.release`: makes each still-claimed row visible now and
    /// gives back the read (`read_ct - 1`, never below 0).
    pub fn release(&mut self, now: Timestamp, items: &[Fenced]) -> Vec<MsgId> {
        let mut applied = Vec::new();
        for fenced in distinct(items.iter().copied()) {
            if let Some(row) = self.fenced_row(fenced) {
                row.vt = now;
                row.vt_set_by = "release";
                row.read_ct = (row.read_ct - 1).max(0);
                applied.push(fenced.msg_id);
            }
        }
        applied
    }

    /// `edge_worker.register_worker` (idempotent).
    pub fn register(&mut self, worker: WorkerKey) {
        self.workers.entry(worker).or_default();
    }

    /// `edge_worker.heartbeat`: whether the worker has been deprecated. An
    /// unknown worker is not.
    pub fn heartbeat(&mut self, worker: WorkerKey) -> bool {
        self.workers.get(&worker).is_some_and(|row| row.deprecated)
    }

    /// `edge_worker.stop_worker` (idempotent).
    pub fn stop_worker(&mut self, worker: WorkerKey) {
        if let Some(row) = self.workers.get_mut(&worker) {
            row.stopped = true;
        }
    }

    /// `edge_worker.deprecate_workers` for one worker; whether it applied.
    pub fn deprecate(&mut self, worker: WorkerKey) -> bool {
        match self.workers.get_mut(&worker) {
            Some(row) if !row.stopped && !row.deprecated => {
                row.deprecated = true;
                true
            }
            _ => false,
        }
    }

    /// The row a write fenced with `fenced` may change. A changed row may
    /// become visible sooner, so the read shortcut is dropped.
    fn fenced_row(&mut self, fenced: Fenced) -> Option<&mut Row> {
        self.hidden_until = None;
        self.queue
            .get_mut(&fenced.msg_id)
            .filter(|row| row.read_ct == fenced.read_ct)
    }

    /// Whether the row of `fenced` exists and still carries its read count.
    fn fence_matches(&self, fenced: Fenced) -> bool {
        self.queue
            .get(&fenced.msg_id)
            .is_some_and(|row| row.read_ct == fenced.read_ct)
    }

    /// `edge_worker.attempt_closed`: the failure of this attempt is
    /// recorded, so retry and extend leave the row alone.
    fn attempt_closed(&self, fenced: Fenced) -> bool {
        self.attempt_errors
            .iter()
            .any(|e| e.msg_id == fenced.msg_id && e.attempt == fenced.read_ct)
    }

    fn take_fenced(&mut self, fenced: Fenced) -> Option<Row> {
        self.fenced_row(fenced)?;
        self.queue.remove(&fenced.msg_id)
    }
}

/// The items of a batch with repeated `(msg_id, read_ct)` pairs dropped, as
/// the `distinct` in every batch function does.
fn distinct(items: impl Iterator<Item = Fenced>) -> impl Iterator<Item = Fenced> {
    let mut seen = BTreeSet::new();
    items.filter(move |f| seen.insert((f.msg_id, f.read_ct)))
}
