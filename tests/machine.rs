//! The worker state machine, one behaviour per test, with fake time.

use std::time::Duration;

use edge_worker::core::error_text::ErrorText;
use edge_worker::core::event::{
    AbortReason, Claimed, Command, DbError, DbErrorKind, Event, Failure, Fenced, Outcome,
    StopReason, WriteBatch, WriteId,
};
use edge_worker::core::{Config, Timestamp, Worker};
use serde_json::{json, Value};

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn config(extra: Value) -> Config {
    let mut raw = json!({ "queue": { "name": "q" } });
    for (k, v) in extra.as_object().unwrap() {
        raw[k] = v.clone();
    }
    Config::parse(&raw).unwrap().config
}

/// A worker past setup, with its first claim taken from the outbox.
fn running(extra: Value) -> (Worker, Command) {
    let mut w = Worker::new(config(extra), 7);
    w.start(at(0));
    assert_eq!(w.poll(at(0)), vec![Command::Setup]);
    w.handle(at(0), Event::SetupFinished);
    let claim = w.poll(at(0)).into_iter().find(is_claim).expect("a claim");
    (w, claim)
}

fn is_claim(c: &Command) -> bool {
    matches!(c, Command::Claim { .. })
}

fn is_mark_stopped(c: &Command) -> bool {
    matches!(c, Command::MarkStopped(_))
}

fn claimed(ids: &[(i64, i32)]) -> Event {
    Event::ClaimFinished(
        ids.iter()
            .map(|&(msg_id, read_ct)| Claimed { msg_id, read_ct })
            .collect(),
    )
}

fn failed(retryable: bool, retry_after: Option<Duration>) -> Outcome {
    Outcome::Failed(Failure {
        error: ErrorText::new("Error", "boom"),
        retryable,
        retry_after,
    })
}

fn finished(msg_id: i64, read_ct: i32, outcome: Outcome) -> Event {
    Event::HandlerFinished {
        msg_id,
        read_ct,
        outcome,
    }
}

fn writes(commands: &[Command]) -> Vec<(WriteId, WriteBatch)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Write { id, batch } => Some((*id, batch.clone())),
            _ => None,
        })
        .collect()
}

fn started(commands: &[Command]) -> Vec<i64> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::StartHandler { msg_id, .. } => Some(*msg_id),
            _ => None,
        })
        .collect()
}

fn fence(msg_id: i64, read_ct: i32) -> Fenced {
    Fenced { msg_id, read_ct }
}

fn db_error(kind: DbErrorKind) -> DbError {
    DbError {
        kind,
        code: None,
        message: "connection reset".into(),
    }
}

#[test]
fn setup_comes_first_and_the_first_claim_fills_every_slot() {
    let (_, claim) = running(json!({ "concurrency": { "maxConcurrent": 4 } }));
    assert_eq!(
        claim,
        Command::Claim {
            qty: 4,
            vt: Duration::from_secs(30),
            max_poll_seconds: 5,
            poll_interval_ms: 100
        }
    );
}

#[test]
fn a_claim_takes_no_more_than_the_batch_size() {
    let (_, claim) = running(json!({ "queue": { "name": "q", "batchSize": 3 } }));
    assert!(matches!(claim, Command::Claim { qty: 3, .. }));
}

#[test]
fn claimed_messages_start_at_once_with_their_attempt() {
    let (mut w, _) = running(json!({}));
    w.handle(at(5), claimed(&[(1, 1), (2, 3)]));
    let out = w.poll(at(5));
    assert!(out.contains(&Command::StartHandler {
        msg_id: 2,
        read_ct: 3,
        attempt: 3
    }));
    assert_eq!(started(&out), vec![1, 2]);
}

#[test]
fn one_finished_handler_refills_its_slot_without_waiting_for_the_batch() {
    let (mut w, _) = running(json!({ "concurrency": { "maxConcurrent": 2 } }));
    w.handle(at(1), claimed(&[(1, 1), (2, 1)]));
    let out = w.poll(at(1));
    assert!(!out.iter().any(is_claim), "no slot is free yet");
    w.handle(at(2), finished(1, 1, Outcome::Succeeded));
    let out = w.poll(at(2));
    assert!(out.contains(&Command::Claim {
        qty: 1,
        vt: Duration::from_secs(30),
        max_poll_seconds: 5,
        poll_interval_ms: 100
    }));
}

#[test]
fn only_one_claim_is_in_flight_at_a_time() {
    let (mut w, _) = running(json!({}));
    w.handle(at(1), claimed(&[(1, 1)]));
    assert!(w.poll(at(1)).iter().any(is_claim));
    w.handle(at(2), finished(1, 1, Outcome::Succeeded));
    assert!(!w.poll(at(2)).iter().any(is_claim));
}

#[test]
fn successes_between_two_polls_are_archived_in_one_batch_in_id_order() {
    let (mut w, _) = running(json!({}));
    w.handle(at(1), claimed(&[(5, 1), (3, 1), (9, 2)]));
    w.poll(at(1));
    w.handle(at(2), finished(9, 2, Outcome::Succeeded));
    w.handle(at(2), finished(3, 1, Outcome::Succeeded));
    w.handle(at(2), finished(5, 1, Outcome::Succeeded));
    let batches = writes(&w.poll(at(2)));
    assert_eq!(batches.len(), 1);
    assert_eq!(
        batches[0].1,
        WriteBatch::Archive(vec![fence(3, 1), fence(5, 1), fence(9, 2)])
    );
}

#[test]
fn a_failure_is_retried_after_the_fixed_delay() {
    let (mut w, _) = running(json!({ "retry": { "strategy": "fixed", "delaySeconds": 4 } }));
    w.handle(at(1), claimed(&[(1, 1)]));
    w.poll(at(1));
    w.handle(at(2), finished(1, 1, failed(true, None)));
    let batches = writes(&w.poll(at(2)));
    let WriteBatch::Retry(items) = &batches[0].1 else {
        panic!("expected a retry, got {batches:?}");
    };
    assert_eq!(items[0].0, fence(1, 1));
    assert_eq!(items[0].1, Duration::from_secs(4));
    assert_eq!(items[0].2.message, "boom");
}

#[test]
fn exponential_delays_grow_with_the_attempt() {
    let (mut w, _) = running(json!({ "retry": { "delaySeconds": 2, "limit": 9 } }));
    w.handle(at(1), claimed(&[(1, 3)]));
    w.poll(at(1));
    w.handle(at(2), finished(1, 3, failed(true, None)));
    let batches = writes(&w.poll(at(2)));
    let WriteBatch::Retry(items) = &batches[0].1 else {
        panic!("expected a retry");
    };
    assert_eq!(items[0].1, Duration::from_secs(8));
}

#[test]
fn the_last_allowed_attempt_failing_dead_letters_the_message() {
    let (mut w, _) = running(json!({ "retry": { "limit": 2 } }));
    w.handle(at(1), claimed(&[(1, 3)]));
    w.poll(at(1));
    w.handle(at(2), finished(1, 3, failed(true, None)));
    let batches = writes(&w.poll(at(2)));
    assert!(matches!(&batches[0].1, WriteBatch::DeadLetter(items) if items[0].0 == fence(1, 3)));
}

#[test]
fn a_non_retryable_failure_goes_straight_to_dead_letters() {
    let (mut w, _) = running(json!({}));
    w.handle(at(1), claimed(&[(1, 1)]));
    w.poll(at(1));
    w.handle(at(2), finished(1, 1, failed(false, None)));
    let batches = writes(&w.poll(at(2)));
    assert!(matches!(&batches[0].1, WriteBatch::DeadLetter(_)));
}

#[test]
fn a_retry_after_request_replaces_the_policy_delay() {
    let (mut w, _) = running(json!({}));
    w.handle(at(1), claimed(&[(1, 1)]));
    w.poll(at(1));
    w.handle(
        at(2),
        finished(1, 1, failed(true, Some(Duration::from_secs(42)))),
    );
    let batches = writes(&w.poll(at(2)));
    let WriteBatch::Retry(items) = &batches[0].1 else {
        panic!("expected a retry");
    };
    assert_eq!(items[0].1, Duration::from_secs(42));
}

#[test]
fn a_message_read_more_often_than_allowed_is_dead_lettered_without_running() {
    let (mut w, _) = running(json!({ "retry": { "limit": 1 } }));
    w.handle(at(1), claimed(&[(1, 3)]));
    let out = w.poll(at(1));
    assert!(started(&out).is_empty());
    let batches = writes(&out);
    let WriteBatch::DeadLetter(items) = &batches[0].1 else {
        panic!("expected a dead letter, got {out:?}");
    };
    assert_eq!(items[0].1.name, "AttemptsExhausted");
}

#[test]
fn a_running_handlers_lease_is_extended_before_it_expires() {
    let (mut w, _) = running(json!({
        "lease": { "visibilityTimeoutSeconds": 10, "renewBeforeExpirySeconds": 4 }
    }));
    w.handle(at(0), claimed(&[(1, 1), (2, 1)]));
    w.poll(at(0));
    assert_eq!(w.next_wake(), Some(at(5_000)), "heartbeat comes first");
    assert!(writes(&w.poll(at(5_999))).is_empty());
    let batches = writes(&w.poll(at(6_000)));
    assert_eq!(
        batches[0].1,
        WriteBatch::Extend {
            items: vec![fence(1, 1), fence(2, 1)],
            vt: Duration::from_secs(10)
        }
    );
    // Extended from when the extension was sent: next renewal 6 s later.
    w.handle(
        at(6_010),
        Event::WriteFinished {
            id: batches[0].0,
            applied: vec![1, 2],
        },
    );
    assert!(writes(&w.poll(at(11_999))).is_empty());
    assert_eq!(writes(&w.poll(at(12_000))).len(), 1);
}

#[test]
fn a_lease_found_lost_is_not_extended_again() {
    let (mut w, _) = running(json!({
        "lease": { "visibilityTimeoutSeconds": 10, "renewBeforeExpirySeconds": 4 }
    }));
    w.handle(at(0), claimed(&[(1, 1)]));
    w.poll(at(0));
    let batches = writes(&w.poll(at(6_000)));
    w.handle(
        at(6_001),
        Event::WriteFinished {
            id: batches[0].0,
            applied: vec![],
        },
    );
    assert!(writes(&w.poll(at(60_000))).is_empty());
}

#[test]
fn a_stale_archive_is_counted_and_forgotten() {
    let (mut w, _) = running(json!({}));
    w.handle(at(1), claimed(&[(1, 1), (2, 1)]));
    w.poll(at(1));
    w.handle(at(2), finished(1, 1, Outcome::Succeeded));
    w.handle(at(2), finished(2, 1, Outcome::Succeeded));
    let batches = writes(&w.poll(at(2)));
    w.handle(
        at(3),
        Event::WriteFinished {
            id: batches[0].0,
            applied: vec![2],
        },
    );
    let out = w.poll(at(3));
    assert!(out
        .iter()
        .any(|c| matches!(c, Command::Log(r) if r.event == "stale_write")));
    assert_eq!(w.stats().succeeded, 1);
    assert_eq!(w.stats().stale, 1);
    assert_eq!(w.tracked(), 0);
}

#[test]
fn a_write_that_failed_is_sent_again_after_a_backoff() {
    let (mut w, _) = running(json!({}));
    w.handle(at(1), claimed(&[(1, 1)]));
    w.poll(at(1));
    w.handle(at(2), finished(1, 1, Outcome::Succeeded));
    let batches = writes(&w.poll(at(2)));
    w.handle(
        at(3),
        Event::WriteFailed {
            id: batches[0].0,
            error: db_error(DbErrorKind::Connection),
        },
    );
    assert!(writes(&w.poll(at(3))).is_empty(), "not before the backoff");
    let wake = w.next_wake().unwrap();
    assert!(wake > at(3) && wake <= at(3 + 250));
    let again = writes(&w.poll(wake));
    assert_eq!(again[0].1, WriteBatch::Archive(vec![fence(1, 1)]));
}

#[test]
fn a_failed_claim_backs_off_before_claiming_again() {
    let (mut w, _) = running(json!({}));
    w.handle(
        at(10),
        Event::ClaimFailed(db_error(DbErrorKind::Connection)),
    );
    assert!(!w.poll(at(10)).iter().any(is_claim));
    let wake = w.next_wake().unwrap();
    assert!(w.poll(wake).iter().any(is_claim));
}

#[test]
fn a_fatal_setup_error_stops_the_worker_with_the_reason() {
    let mut w = Worker::new(config(json!({})), 1);
    w.start(at(0));
    w.poll(at(0));
    w.handle(
        at(1),
        Event::SetupFailed(DbError {
            kind: DbErrorKind::Fatal,
            code: Some("42883".into()),
            message: "function edge_worker.register_worker does not exist".into(),
        }),
    );
    let err = w.stopped().unwrap().unwrap_err();
    assert!(err.contains("register_worker"));
}

#[test]
fn a_transient_setup_error_is_retried() {
    let mut w = Worker::new(config(json!({})), 1);
    w.start(at(0));
    w.poll(at(0));
    w.handle(at(1), Event::SetupFailed(db_error(DbErrorKind::Connection)));
    assert!(w.stopped().is_none());
    let wake = w.next_wake().unwrap();
    assert!(w.poll(wake).contains(&Command::Setup));
}

#[test]
fn a_stop_cancels_the_claim_in_flight_and_aborts_running_handlers() {
    let (mut w, _) = running(json!({}));
    w.handle(at(1), claimed(&[(1, 1)]));
    w.poll(at(1));
    w.handle(
        at(2),
        Event::StopRequested {
            reason: StopReason::Shutdown,
            deadline: at(10_000),
        },
    );
    let out = w.poll(at(2));
    assert!(out.contains(&Command::CancelClaim));
    assert!(out.contains(&Command::AbortHandler {
        msg_id: 1,
        reason: AbortReason::Stopping(StopReason::Shutdown)
    }));
}

#[test]
fn messages_claimed_after_a_stop_are_released_without_running() {
    let (mut w, _) = running(json!({}));
    w.handle(
        at(1),
        Event::StopRequested {
            reason: StopReason::Shutdown,
            deadline: at(10_000),
        },
    );
    w.poll(at(1));
    w.handle(at(2), claimed(&[(4, 1), (3, 2)]));
    let out = w.poll(at(2));
    assert!(started(&out).is_empty());
    assert_eq!(
        writes(&out)[0].1,
        WriteBatch::Release(vec![fence(3, 2), fence(4, 1)])
    );
}

#[test]
fn the_worker_stops_once_handlers_and_writes_are_done() {
    let (mut w, _) = running(json!({}));
    w.handle(at(1), claimed(&[(1, 1)]));
    w.poll(at(1));
    w.handle(
        at(2),
        Event::StopRequested {
            reason: StopReason::Stop,
            deadline: at(10_000),
        },
    );
    w.poll(at(2));
    w.handle(at(3), Event::ClaimFinished(vec![]));
    w.handle(at(3), finished(1, 1, Outcome::Succeeded));
    let out = w.poll(at(3));
    assert!(!out.iter().any(is_mark_stopped), "archive still pending");
    w.handle(
        at(4),
        Event::WriteFinished {
            id: writes(&out)[0].0,
            applied: vec![1],
        },
    );
    assert!(w.poll(at(4)).iter().any(is_mark_stopped));
    w.handle(at(5), Event::MarkStoppedFinished);
    assert_eq!(w.stopped(), Some(Ok(())));
}

#[test]
fn the_final_counters_go_with_the_stop() {
    let (mut w, _) = running(json!({}));
    w.handle(at(1), claimed(&[(1, 1)]));
    w.poll(at(1));
    w.handle(at(2), finished(1, 1, Outcome::Succeeded));
    let out = w.poll(at(2));
    w.handle(
        at(3),
        Event::WriteFinished {
            id: writes(&out)[0].0,
            applied: vec![1],
        },
    );
    w.handle(
        at(3),
        Event::StopRequested {
            reason: StopReason::Stop,
            deadline: at(10_000),
        },
    );
    w.handle(at(3), Event::ClaimFinished(vec![]));
    let stop = w.poll(at(3)).into_iter().find(is_mark_stopped);
    assert!(matches!(stop, Some(Command::MarkStopped(s)) if s.succeeded == 1));
}

#[test]
fn a_second_batch_of_a_kind_waits_for_the_first_and_takes_all_that_piled_up() {
    let (mut w, _) = running(json!({}));
    w.handle(at(1), claimed(&[(1, 1), (2, 1), (3, 1)]));
    w.poll(at(1));
    w.handle(at(2), finished(1, 1, Outcome::Succeeded));
    let first = writes(&w.poll(at(2)));
    assert_eq!(first[0].1, WriteBatch::Archive(vec![fence(1, 1)]));
    w.handle(at(3), finished(2, 1, Outcome::Succeeded));
    assert!(
        writes(&w.poll(at(3))).is_empty(),
        "the first archive is out"
    );
    assert!(
        w.next_wake().is_some_and(|t| t > at(3)),
        "held writes do not make the loop spin"
    );
    w.handle(at(4), finished(3, 1, Outcome::Succeeded));
    w.handle(
        at(5),
        Event::WriteFinished {
            id: first[0].0,
            applied: vec![1],
        },
    );
    let second = writes(&w.poll(at(5)));
    assert_eq!(
        second[0].1,
        WriteBatch::Archive(vec![fence(2, 1), fence(3, 1)])
    );
}

#[test]
fn the_worker_stops_at_the_deadline_even_with_handlers_running() {
    let (mut w, _) = running(json!({}));
    w.handle(at(1), claimed(&[(1, 1)]));
    w.poll(at(1));
    w.handle(
        at(2),
        Event::StopRequested {
            reason: StopReason::Shutdown,
            deadline: at(1_000),
        },
    );
    w.poll(at(2));
    assert_eq!(w.next_wake(), Some(at(1_000)));
    assert!(w.poll(at(1_000)).iter().any(is_mark_stopped));
}

#[test]
fn a_deprecated_worker_stops_claiming_but_lets_handlers_finish() {
    let (mut w, _) = running(json!({}));
    w.handle(at(1), claimed(&[(1, 1)]));
    w.poll(at(1));
    let beat = w.poll(at(5_000));
    assert!(beat.iter().any(|c| matches!(c, Command::Heartbeat(_))));
    w.handle(at(5_001), Event::HeartbeatFinished { deprecated: true });
    let out = w.poll(at(5_001));
    assert!(!out
        .iter()
        .any(|c| matches!(c, Command::AbortHandler { .. })));
    w.handle(at(5_002), Event::ClaimFinished(vec![]));
    w.handle(at(5_002), finished(1, 1, Outcome::Succeeded));
    let out = w.poll(at(5_002));
    assert!(!out.iter().any(is_claim));
    assert_eq!(writes(&out)[0].1, WriteBatch::Archive(vec![fence(1, 1)]));
}

#[test]
fn heartbeats_keep_their_period_while_a_handler_runs() {
    let (mut w, _) = running(json!({ "lifecycle": { "heartbeatIntervalSeconds": 2 } }));
    w.handle(at(1), claimed(&[(1, 1)]));
    w.poll(at(1));
    for beat in 1..=3u64 {
        let t = at(beat * 2_000 + beat);
        let out = w.poll(t);
        assert!(
            out.iter()
                .any(|c| matches!(c, Command::Heartbeat(s) if s.in_flight == 1)),
            "heartbeat {beat}"
        );
        w.handle(t, Event::HeartbeatFinished { deprecated: false });
    }
}

#[test]
fn a_handler_past_its_timeout_is_aborted_then_failed_after_the_grace() {
    let (mut w, _) = running(json!({
        "concurrency": { "maxConcurrent": 1 },
        "handler": { "timeoutSeconds": 2, "graceMs": 500 },
        "retry": { "strategy": "fixed", "delaySeconds": 1 }
    }));
    w.handle(at(0), claimed(&[(1, 1)]));
    w.poll(at(0));
    let out = w.poll(at(2_000));
    assert!(out.contains(&Command::AbortHandler {
        msg_id: 1,
        reason: AbortReason::Timeout
    }));
    assert!(!out.iter().any(is_claim), "the slot is still held");
    let out = w.poll(at(2_500));
    let batches = writes(&out);
    assert!(
        matches!(&batches[0].1, WriteBatch::Retry(items) if items[0].2.name == "HandlerTimeout")
    );
    assert!(out.iter().any(is_claim), "the slot is free again");
}

#[test]
fn a_handler_that_settles_after_its_timeout_still_counts_as_failed() {
    let (mut w, _) = running(json!({ "handler": { "timeoutSeconds": 1 } }));
    w.handle(at(0), claimed(&[(1, 1)]));
    w.poll(at(0));
    w.poll(at(1_000));
    w.handle(at(1_100), finished(1, 1, Outcome::Succeeded));
    let batches = writes(&w.poll(at(1_100)));
    assert!(matches!(&batches[0].1, WriteBatch::Retry(_)));
}

#[test]
fn a_result_for_an_older_read_of_the_message_is_ignored() {
    let (mut w, _) = running(json!({}));
    w.handle(at(1), claimed(&[(1, 2)]));
    w.poll(at(1));
    w.handle(at(2), finished(1, 1, Outcome::Succeeded));
    assert!(writes(&w.poll(at(2))).is_empty());
}

#[test]
fn the_wake_time_is_the_earliest_due_work() {
    let (mut w, _) = running(json!({ "handler": { "timeoutSeconds": 3 } }));
    w.handle(at(0), claimed(&[(1, 1)]));
    w.poll(at(0));
    assert_eq!(w.next_wake(), Some(at(3_000)));
}

#[test]
fn a_reclaimed_message_whose_handler_runs_keeps_that_handler_under_the_new_fence() {
    let (mut w, _) = running(json!({ "concurrency": { "maxConcurrent": 2 } }));
    w.handle(at(1), claimed(&[(1, 1)]));
    assert!(w.poll(at(1)).iter().any(is_claim));
    // The lease lapsed during an outage and this worker read it again.
    w.handle(at(20_000), claimed(&[(1, 2)]));
    let out = w.poll(at(20_000));
    assert!(
        started(&out).is_empty(),
        "the running handler is not started twice"
    );
    assert_eq!(w.handlers_in_flight(), 1);
    w.handle(at(20_001), finished(1, 1, Outcome::Succeeded));
    let batches = writes(&w.poll(at(20_001)));
    assert_eq!(batches[0].1, WriteBatch::Archive(vec![fence(1, 2)]));
}

#[test]
fn a_reclaimed_message_whose_outcome_was_decided_starts_over_without_the_old_write() {
    let (mut w, _) = running(json!({}));
    w.handle(at(1), claimed(&[(1, 1)]));
    w.poll(at(1));
    w.handle(at(2), finished(1, 1, Outcome::Succeeded));
    let first = writes(&w.poll(at(2)));
    w.handle(
        at(3),
        Event::WriteFailed {
            id: first[0].0,
            error: db_error(DbErrorKind::Connection),
        },
    );
    w.handle(at(20_000), claimed(&[(1, 2)]));
    let out = w.poll(at(20_000));
    assert_eq!(started(&out), vec![1]);
    let archives = writes(&out)
        .into_iter()
        .filter(|(_, b)| matches!(b, WriteBatch::Archive(_)))
        .count();
    assert_eq!(archives, 0, "the archive for read 1 is dropped");
}

#[test]
fn a_release_that_failed_is_not_sent_again() {
    let (mut w, _) = running(json!({}));
    w.handle(
        at(1),
        Event::StopRequested {
            reason: StopReason::Shutdown,
            deadline: at(10_000),
        },
    );
    w.poll(at(1));
    w.handle(at(2), claimed(&[(1, 1)]));
    let release = writes(&w.poll(at(2)));
    w.handle(
        at(3),
        Event::WriteFailed {
            id: release[0].0,
            error: db_error(DbErrorKind::Connection),
        },
    );
    let out = w.poll(at(3));
    assert!(out
        .iter()
        .any(|c| matches!(c, Command::Log(r) if r.event == "release_abandoned")));
    assert_eq!(w.tracked(), 0);
    assert!(writes(&w.poll(at(5_000))).is_empty());
}

#[test]
fn a_failed_extension_backs_off_within_half_the_renewal_margin() {
    let (mut w, _) = running(json!({
        "lease": { "visibilityTimeoutSeconds": 10, "renewBeforeExpirySeconds": 4 }
    }));
    w.handle(at(0), claimed(&[(1, 1)]));
    w.poll(at(0));
    let extend = writes(&w.poll(at(6_000)));
    w.handle(
        at(6_010),
        Event::WriteFailed {
            id: extend[0].0,
            error: db_error(DbErrorKind::Connection),
        },
    );
    assert!(writes(&w.poll(at(6_011))).is_empty(), "not at once");
    let wake = w.next_wake().unwrap();
    assert!(wake > at(6_011) && wake <= at(6_010 + 2_000), "{wake:?}");
    let again = writes(&w.poll(wake));
    assert!(matches!(&again[0].1, WriteBatch::Extend { .. }));
}
