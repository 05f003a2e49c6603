//! Configuration parsing and validation: one rule per test.

use edge_worker::core::config::{Jitter, LogLevel, RetryStrategy};
use edge_worker::core::{Config, ConfigError};
use serde_json::{json, Value};

fn parse(raw: Value) -> Result<Config, ConfigError> {
    Config::parse(&raw).map(|p| p.config)
}

fn field_of(raw: Value) -> String {
    parse(raw).unwrap_err().field().to_owned()
}

#[test]
fn defaults_fill_every_group() {
    let c = parse(json!({ "queue": { "name": "emails" } })).unwrap();
    assert_eq!(c.queue.batch_size, 10);
    assert_eq!(c.concurrency.max_concurrent, 10);
    assert_eq!(c.polling.max_poll_seconds, 5);
    assert_eq!(c.polling.poll_interval_ms, 100);
    assert_eq!(c.lease.visibility_timeout_seconds, 30);
    assert_eq!(c.lease.renew_before_expiry_seconds, 15);
    assert_eq!(c.retry.limit, 5);
    assert_eq!(c.retry.strategy, RetryStrategy::Exponential);
    assert_eq!(c.retry.jitter, Jitter::None);
    assert_eq!(c.handler.timeout_seconds, None);
    assert_eq!(c.connection.max_connections, 4);
    assert_eq!(c.connection.query_timeout_seconds, 30);
    assert_eq!(c.lifecycle.heartbeat_interval_seconds, 5);
    assert_eq!(c.logging.level, LogLevel::Info);
}

#[test]
fn queue_name_is_required() {
    let err = parse(json!({})).unwrap_err();
    assert!(matches!(err, ConfigError::Missing { .. }));
    assert_eq!(err.field(), "queue.name");
}

#[test]
fn upper_case_queue_names_are_rejected() {
    let err = parse(json!({ "queue": { "name": "Emails" } })).unwrap_err();
    assert_eq!(
        err.to_string(),
        "queue.name: \"Emails\" is not allowed; expected 1 to 47 characters of \
         a-z, 0-9 and _, not starting with a digit"
    );
}

#[test]
fn hyphenated_queue_names_are_rejected() {
    assert_eq!(
        field_of(json!({ "queue": { "name": "my-queue" } })),
        "queue.name"
    );
}

#[test]
fn queue_names_starting_with_a_digit_are_rejected() {
    assert_eq!(
        field_of(json!({ "queue": { "name": "2fa" } })),
        "queue.name"
    );
    assert!(parse(json!({ "queue": { "name": "_2fa" } })).is_ok());
}

#[test]
fn queue_names_over_47_characters_are_rejected() {
    assert!(parse(json!({ "queue": { "name": "q".repeat(47) } })).is_ok());
    assert_eq!(
        field_of(json!({ "queue": { "name": "q".repeat(48) } })),
        "queue.name"
    );
}

#[test]
fn unknown_top_level_keys_list_the_allowed_ones() {
    let err = parse(json!({ "queue": { "name": "q" }, "retries": {} })).unwrap_err();
    assert_eq!(err.field(), "retries");
    assert!(err.to_string().contains("queue, concurrency, polling"));
}

#[test]
fn unknown_keys_inside_a_group_are_rejected() {
    let err = parse(json!({ "queue": { "name": "q" }, "retry": { "limt": 3 } })).unwrap_err();
    assert_eq!(err.field(), "retry.limt");
    assert!(err.to_string().contains("limit, strategy"));
}

#[test]
fn fractional_numbers_are_rejected() {
    let err = parse(json!({ "queue": { "name": "q" }, "concurrency": { "maxConcurrent": 2.5 } }))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "concurrency.maxConcurrent: 2.5 is not allowed; expected a whole number from 1 to 1000"
    );
}

#[test]
fn numbers_out_of_range_are_rejected() {
    let q = json!({ "name": "q" });
    assert_eq!(
        field_of(json!({ "queue": q, "concurrency": { "maxConcurrent": 0 } })),
        "concurrency.maxConcurrent"
    );
    assert_eq!(
        field_of(json!({ "queue": q, "retry": { "limit": -1 } })),
        "retry.limit"
    );
    assert_eq!(
        field_of(json!({ "queue": q, "polling": { "pollIntervalMs": 5 } })),
        "polling.pollIntervalMs"
    );
    assert_eq!(
        field_of(json!({ "queue": q, "connection": { "maxConnections": 101 } })),
        "connection.maxConnections"
    );
    assert_eq!(
        field_of(json!({ "queue": q, "connection": { "queryTimeoutSeconds": 0 } })),
        "connection.queryTimeoutSeconds"
    );
}

#[test]
fn strings_where_numbers_belong_are_rejected() {
    assert_eq!(
        field_of(json!({ "queue": { "name": "q", "batchSize": "10" } })),
        "queue.batchSize"
    );
}

#[test]
fn a_group_that_is_not_an_object_is_rejected() {
    assert_eq!(field_of(json!({ "queue": "emails" })), "queue");
}

#[test]
fn max_delay_below_the_delay_is_rejected() {
    let err = parse(json!({
        "queue": { "name": "q" },
        "retry": { "delaySeconds": 60, "maxDelaySeconds": 10 }
    }))
    .unwrap_err();
    assert_eq!(err.field(), "retry.maxDelaySeconds");
    assert!(err.to_string().contains("from 60 to 604800"));
}

#[test]
fn renewal_must_come_before_expiry() {
    let err = parse(json!({
        "queue": { "name": "q" },
        "lease": { "visibilityTimeoutSeconds": 10, "renewBeforeExpirySeconds": 10 }
    }))
    .unwrap_err();
    assert_eq!(err.field(), "lease.renewBeforeExpirySeconds");
}

#[test]
fn choices_name_the_allowed_values() {
    let err =
        parse(json!({ "queue": { "name": "q" }, "retry": { "jitter": "some" } })).unwrap_err();
    assert!(err
        .to_string()
        .contains("expected one of \"none\", \"full\", \"equal\""));
}

#[test]
fn a_url_that_is_not_postgres_is_rejected_without_echoing_it() {
    let err = parse(json!({
        "queue": { "name": "q" },
        "connection": { "url": "mysql://user:secret@host/db" }
    }))
    .unwrap_err();
    assert_eq!(err.field(), "connection.url");
    assert!(!err.to_string().contains("secret"));
}

#[test]
fn null_means_the_default() {
    let c = parse(json!({ "queue": { "name": "q", "batchSize": null }, "retry": null })).unwrap();
    assert_eq!(c.queue.batch_size, 10);
    assert_eq!(c.retry.limit, 5);
}

#[test]
fn legacy_flat_keys_map_onto_groups_with_one_warning_each() {
    let parsed = Config::parse(&json!({
        "queueName": "emails",
        "maxConcurrent": 3,
        "maxPgConnections": 2,
        "maxPollSeconds": 2,
        "pollIntervalMs": 250,
        "retryDelay": 7,
        "retryLimit": 1,
        "visibilityTimeout": 9
    }))
    .unwrap();
    let c = parsed.config;
    assert_eq!(c.queue.name, "emails");
    assert_eq!(c.concurrency.max_concurrent, 3);
    assert_eq!(c.connection.max_connections, 2);
    assert_eq!(c.polling.max_poll_seconds, 2);
    assert_eq!(c.polling.poll_interval_ms, 250);
    assert_eq!(c.retry.strategy, RetryStrategy::Fixed);
    assert_eq!(c.retry.delay_seconds, 7);
    assert_eq!(c.retry.limit, 1);
    assert_eq!(c.lease.visibility_timeout_seconds, 9);
    assert_eq!(parsed.warnings.len(), 8);
    assert_eq!(parsed.warnings[0].key, "queueName");
    assert_eq!(parsed.warnings[0].replacement, "queue.name");
    assert_eq!(
        parsed.warnings[0].to_string(),
        "config key queueName is deprecated; use queue.name instead"
    );
}

#[test]
fn a_legacy_key_and_its_group_field_together_are_rejected() {
    let err = parse(json!({ "queueName": "a", "queue": { "name": "b" } })).unwrap_err();
    assert_eq!(
        err.to_string(),
        "queueName and queue.name are both set; keep only queue.name"
    );
}

#[test]
fn legacy_keys_are_validated_under_their_new_names() {
    assert_eq!(
        field_of(json!({ "queueName": "q", "retryLimit": "five" })),
        "retry.limit"
    );
}

#[test]
fn a_resolved_config_parses_to_itself() {
    let c = parse(json!({
        "queue": { "name": "q" },
        "handler": { "timeoutSeconds": 30 },
        "connection": { "url": "postgres://localhost/db" }
    }))
    .unwrap();
    let again = parse(serde_json::to_value(&c).unwrap()).unwrap();
    assert_eq!(again, c);
}
