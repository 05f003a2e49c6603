//! Conversions between JavaScript values and the core's types.
//!
//! Ids go out as decimal strings and come back as strings (or numbers, which
//! are accepted when they are exact). Nothing here decides anything.

use std::time::Duration;

use js_sys::{Array, Reflect};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use wasm_bindgen::prelude::*;

use super::classify::classify;
use super::port::WorkerPort;
use crate::core::config::Deprecation;
use crate::core::error_text::ErrorText;
use crate::core::event::{
    Claimed, DbError, DbErrorKind, Failure, MsgId, Outcome, Stats, WriteBatch,
};
use crate::core::{Config, ConfigError, Parsed, Timestamp};

/// Reads the user's configuration object and validates it.
pub fn parse_config(raw: JsValue) -> Result<Parsed, ConfigError> {
    if let Some((field, value)) = non_finite_number(&raw, "") {
        return Err(ConfigError::Invalid {
            field,
            value,
            allowed: "a finite number".to_owned(),
        });
    }
    let json: Value = serde_wasm_bindgen::from_value(raw).map_err(|e| ConfigError::Invalid {
        field: "config".to_owned(),
        value: e.to_string(),
        allowed: "a plain object of strings, numbers and nested objects".to_owned(),
    })?;
    Config::parse(&json)
}

/// The `ConfigValidation` object: `ok` plus either the resolved config and
/// its warnings, or the error.
/// The path and text of the first `NaN` or infinite number in `value`.
/// JSON has no such numbers: converting the object would turn them into
/// `null`, which means "the default", and a mistake would pass unnoticed.
fn non_finite_number(value: &JsValue, path: &str) -> Option<(String, String)> {
    if let Some(n) = value.as_f64() {
        return (!n.is_finite()).then(|| {
            let field = if path.is_empty() { "config" } else { path };
            let text = match n {
                n if n.is_nan() => "NaN",
                n if n > 0.0 => "Infinity",
                _ => "-Infinity",
            };
            (field.to_owned(), text.to_owned())
        });
    }
    if !value.is_object() || Array::is_array(value) {
        return None;
    }
    js_sys::Object::entries(value.unchecked_ref())
        .iter()
        .find_map(|entry| {
            let entry = Array::from(&entry);
            let key = entry.get(0).as_string().unwrap_or_default();
            let path = if path.is_empty() {
                key
            } else {
                format!("{path}.{key}")
            };
            non_finite_number(&entry.get(1), &path)
        })
}

#[derive(Serialize)]
struct Validation<'a> {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    config: Option<&'a Config>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warnings: Option<&'a [Deprecation]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<InvalidField>,
}

#[derive(Serialize)]
struct InvalidField {
    field: String,
    value: Option<String>,
    allowed: String,
    message: String,
}

/// The `ConfigValidation` object `validateConfig` returns.
pub fn validation_result(result: Result<Parsed, ConfigError>) -> JsValue {
    let body = match &result {
        Ok(parsed) => Validation {
            ok: true,
            config: Some(&parsed.config),
            warnings: Some(&parsed.warnings),
            error: None,
        },
        Err(error) => Validation {
            ok: false,
            config: None,
            warnings: None,
            error: Some(InvalidField {
                field: error.field().to_owned(),
                value: match error {
                    ConfigError::Invalid { value, .. } => Some(value.clone()),
                    _ => None,
                },
                allowed: match error {
                    ConfigError::Invalid { allowed, .. }
                    | ConfigError::Missing { allowed, .. }
                    | ConfigError::UnknownKey { allowed, .. } => allowed.clone(),
                    ConfigError::Conflict { field, .. } => format!("only {field}"),
                },
                message: error.to_string(),
            }),
        },
    };
    to_js(&body)
}

fn to_js<T: Serialize + ?Sized>(value: &T) -> JsValue {
    let serializer = serde_wasm_bindgen::Serializer::json_compatible();
    value.serialize(&serializer).unwrap_or(JsValue::NULL)
}

/// A JavaScript time (epoch ms, possibly fractional or negative) as a
/// core timestamp.
pub fn timestamp(ms: f64) -> Timestamp {
    Timestamp::from_millis(if ms.is_finite() && ms > 0.0 {
        ms as u64
    } else {
        0
    })
}

/// Log fields as a plain object.
pub fn fields(fields: Vec<(&'static str, Value)>) -> JsValue {
    let map: serde_json::Map<String, Value> =
        fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    to_js(&map)
}

/// Classifies whatever a port call threw or rejected with.
pub fn db_error(error: &JsValue) -> DbError {
    let text = |key: &str| {
        Reflect::get(error, &key.into())
            .ok()
            .and_then(|v| v.as_string())
    };
    if !error.is_object() {
        let message = error.as_string().unwrap_or_else(|| format!("{error:?}"));
        return DbError {
            kind: DbErrorKind::Fatal,
            code: None,
            message,
        };
    }
    let message = text("message").unwrap_or_default();
    classify(text("code").as_deref(), text("name").as_deref(), &message)
}

fn parse_id(value: &JsValue) -> Option<MsgId> {
    if let Some(s) = value.as_string() {
        return s.parse().ok();
    }
    value
        .as_f64()
        .filter(|n| n.fract() == 0.0 && n.abs() <= 9_007_199_254_740_991.0)
        .map(|n| n as MsgId)
}

fn shape_error(what: &str) -> DbError {
    DbError {
        kind: DbErrorKind::Fatal,
        code: None,
        message: format!("the port returned {what}"),
    }
}

/// The ids a batch write returned.
pub fn ids(value: &JsValue) -> Result<Vec<MsgId>, DbError> {
    if !Array::is_array(value) {
        return Err(shape_error("something other than an array of ids"));
    }
    Array::from(value)
        .iter()
        .map(|v| parse_id(&v).ok_or_else(|| shape_error("an id that is not a whole number")))
        .collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClaimedJs {
    msg_id: String,
    read_ct: i32,
}

/// The messages a claim returned.
pub fn claimed(value: &JsValue) -> Result<Vec<Claimed>, DbError> {
    let rows: Vec<ClaimedJs> = serde_wasm_bindgen::from_value(value.clone())
        .map_err(|e| shape_error(&format!("claimed messages of the wrong shape: {e}")))?;
    rows.into_iter()
        .map(|row| {
            let msg_id = row
                .msg_id
                .parse()
                .map_err(|_| shape_error("a claimed id that is not a whole number"))?;
            Ok(Claimed {
                msg_id,
                read_ct: row.read_ct,
            })
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OutcomeJs {
    ok: bool,
    #[serde(default)]
    error_name: Option<String>,
    #[serde(default)]
    error_message: Option<String>,
    #[serde(default = "yes")]
    retryable: bool,
    #[serde(default)]
    retry_after_ms: Option<f64>,
}

fn yes() -> bool {
    true
}

/// How a handler settled. A rejected `startHandler` (which the shim should
/// never do) counts as a failed attempt, never as a success.
pub fn outcome(settled: Result<JsValue, JsValue>) -> Outcome {
    let failed = |name: &str, message: String| {
        Outcome::Failed(Failure {
            error: ErrorText::new(name, &message),
            retryable: true,
            retry_after: None,
        })
    };
    let value = match settled {
        Ok(value) => value,
        Err(error) => return failed("ShimError", db_error(&error).message),
    };
    let parsed: OutcomeJs = match serde_wasm_bindgen::from_value(value) {
        Ok(parsed) => parsed,
        Err(e) => {
            return failed(
                "ShimError",
                format!("handler outcome of the wrong shape: {e}"),
            )
        }
    };
    if parsed.ok {
        return Outcome::Succeeded;
    }
    Outcome::Failed(Failure {
        error: ErrorText::new(
            parsed.error_name.as_deref().unwrap_or("Error"),
            parsed.error_message.as_deref().unwrap_or(""),
        ),
        retryable: parsed.retryable,
        retry_after: parsed
            .retry_after_ms
            .filter(|ms| ms.is_finite() && *ms >= 0.0)
            .map(|ms| Duration::from_millis(ms as u64)),
    })
}

/// Heartbeat counters as the port's `WorkerStats`.
pub fn stats(stats: &Stats) -> JsValue {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct StatsJs<'a> {
        succeeded: u64,
        failed: u64,
        dead_lettered: u64,
        stale: u64,
        in_flight: u32,
        last_error: Option<&'a str>,
    }
    to_js(&StatsJs {
        succeeded: stats.succeeded,
        failed: stats.failed,
        dead_lettered: stats.dead_lettered,
        stale: stats.stale,
        in_flight: stats.in_flight,
        last_error: stats.last_error.as_deref(),
    })
}

/// Reads `{ deprecated }` from a heartbeat's answer.
pub fn deprecated(value: &JsValue) -> Result<bool, DbError> {
    Reflect::get(value, &"deprecated".into())
        .ok()
        .and_then(|v| v.as_bool())
        .ok_or_else(|| shape_error("a heartbeat answer without a boolean `deprecated`"))
}

fn strings<I: IntoIterator<Item = String>>(items: I) -> Array {
    items.into_iter().map(JsValue::from).collect()
}

fn numbers<I: IntoIterator<Item = f64>>(items: I) -> Array {
    items.into_iter().map(JsValue::from).collect()
}

/// Starts the port call that performs a batch write. Delays are sent in
/// whole seconds, rounded up, because that is what `set_vt` takes.
pub fn write(port: &WorkerPort, batch: &WriteBatch) -> Result<js_sys::Promise, JsValue> {
    let fences = batch.messages();
    let ids = || strings(fences.iter().map(|f| f.msg_id.to_string()));
    let read_cts = || numbers(fences.iter().map(|f| f.read_ct.into()));
    match batch {
        WriteBatch::Archive(_) => port.archive(ids(), read_cts()),
        WriteBatch::Release(_) => port.release(ids(), read_cts()),
        WriteBatch::Extend { vt, .. } => port.extend(ids(), read_cts(), vt.as_secs_f64().ceil()),
        WriteBatch::Retry(items) => port.retry(
            ids(),
            read_cts(),
            numbers(items.iter().map(|(_, d, _)| d.as_secs_f64().ceil())),
            strings(items.iter().map(|(_, _, e)| e.name.clone())),
            strings(items.iter().map(|(_, _, e)| e.message.clone())),
        ),
        WriteBatch::DeadLetter(items) => port.dead_letter(
            ids(),
            read_cts(),
            strings(items.iter().map(|(_, e)| e.name.clone())),
            strings(items.iter().map(|(_, e)| e.message.clone())),
        ),
    }
}
