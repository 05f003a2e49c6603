//! Bindings to the `WorkerPort` object the TypeScript shim passes in.
//!
//! Every method that reaches the database returns a Promise. Methods are
//! bound with `catch` so that a synchronous throw in the shim becomes an
//! error value here instead of a wasm trap.

use js_sys::{Array, Promise};
use wasm_bindgen::prelude::*;

#[wasm_bindgen(typescript_custom_section)]
const PORT_TYPES: &str = r#"
/** A message as a claim returned it; the payload stays in the shim. */
export interface ClaimedMessage {
  /** pgmq message id as a decimal string (exact beyond 2^53). */
  msgId: string;
  /** pgmq read count after this claim. */
  readCt: number;
}

/** Counters stored with each heartbeat. */
export interface WorkerStats {
  succeeded: number;
  failed: number;
  deadLettered: number;
  /** Writes fenced out because another worker re-read the message. */
  stale: number;
  inFlight: number;
  lastError: string | null;
}

/** How a handler's attempt ended, as the shim reports it. */
export type HandlerOutcome =
  | { ok: true }
  | {
    ok: false;
    errorName: string;
    errorMessage: string;
    retryable: boolean;
    retryAfterMs: number | null;
  };

/** Result of `validateConfig`. */
export type ConfigValidation =
  | {
    ok: true;
    config: Record<string, unknown>;
    warnings: { key: string; replacement: string }[];
  }
  | {
    ok: false;
    error: { field: string; value: string | null; allowed: string; message: string };
  };

/**
 * What the driver needs from its host: time, timers, logging, the SQL of
 * each operation and handler calls. Ids cross as decimal strings, times as
 * epoch milliseconds. Batch methods resolve to the ids they changed; rejected
 * promises carry the postgres.js error untouched.
 */
export interface WorkerPort {
  now(): number;
  sleep(ms: number): Promise<void>;
  log(
    level: "debug" | "info" | "warn" | "error",
    event: string,
    fields: Record<string, unknown>,
  ): void;
  ensureQueue(): Promise<void>;
  register(): Promise<void>;
  heartbeat(stats: WorkerStats): Promise<{ deprecated: boolean }>;
  markStopped(stats: WorkerStats): Promise<void>;
  claim(
    qty: number,
    vtSeconds: number,
    maxPollSeconds: number,
    pollIntervalMs: number,
  ): Promise<ClaimedMessage[]>;
  cancelClaim(): void;
  startHandler(
    msgId: string,
    readCt: number,
    attempt: number,
  ): Promise<HandlerOutcome>;
  abortHandler(
    msgId: string,
    reason: "timeout" | "shutdown" | "stop" | "deprecated",
  ): void;
  archive(ids: string[], readCts: number[]): Promise<string[]>;
  retry(
    ids: string[],
    readCts: number[],
    delaysSeconds: number[],
    errorNames: string[],
    errorMessages: string[],
  ): Promise<string[]>;
  deadLetter(
    ids: string[],
    readCts: number[],
    errorNames: string[],
    errorMessages: string[],
  ): Promise<string[]>;
  extend(ids: string[], readCts: number[], vtSeconds: number): Promise<string[]>;
  release(ids: string[], readCts: number[]): Promise<string[]>;
}
"#;

#[wasm_bindgen]
extern "C" {
    /// The shim's implementation of the `WorkerPort` interface.
    #[wasm_bindgen(typescript_type = "WorkerPort")]
    #[derive(Clone)]
    pub type WorkerPort;

    #[wasm_bindgen(method)]
    pub fn now(this: &WorkerPort) -> f64;

    #[wasm_bindgen(method, catch)]
    pub fn sleep(this: &WorkerPort, ms: f64) -> Result<Promise, JsValue>;

    #[wasm_bindgen(method, catch)]
    pub fn log(this: &WorkerPort, level: &str, event: &str, fields: JsValue)
        -> Result<(), JsValue>;

    #[wasm_bindgen(method, catch, js_name = ensureQueue)]
    pub fn ensure_queue(this: &WorkerPort) -> Result<Promise, JsValue>;

    #[wasm_bindgen(method, catch)]
    pub fn register(this: &WorkerPort) -> Result<Promise, JsValue>;

    #[wasm_bindgen(method, catch)]
    pub fn heartbeat(this: &WorkerPort, stats: JsValue) -> Result<Promise, JsValue>;

    #[wasm_bindgen(method, catch, js_name = markStopped)]
    pub fn mark_stopped(this: &WorkerPort, stats: JsValue) -> Result<Promise, JsValue>;

    #[wasm_bindgen(method, catch)]
    pub fn claim(
        this: &WorkerPort,
        qty: u32,
        vt_seconds: f64,
        max_poll_seconds: u32,
        poll_interval_ms: u32,
    ) -> Result<Promise, JsValue>;

    #[wasm_bindgen(method, catch, js_name = cancelClaim)]
    pub fn cancel_claim(this: &WorkerPort) -> Result<(), JsValue>;

    #[wasm_bindgen(method, catch, js_name = startHandler)]
    pub fn start_handler(
        this: &WorkerPort,
        msg_id: &str,
        read_ct: i32,
        attempt: u32,
    ) -> Result<Promise, JsValue>;

    #[wasm_bindgen(method, catch, js_name = abortHandler)]
    pub fn abort_handler(this: &WorkerPort, msg_id: &str, reason: &str) -> Result<(), JsValue>;

    #[wasm_bindgen(method, catch)]
    pub fn archive(this: &WorkerPort, ids: Array, read_cts: Array) -> Result<Promise, JsValue>;

    #[wasm_bindgen(method, catch)]
    pub fn retry(
        this: &WorkerPort,
        ids: Array,
        read_cts: Array,
        delays_seconds: Array,
        error_names: Array,
        error_messages: Array,
    ) -> Result<Promise, JsValue>;

    #[wasm_bindgen(method, catch, js_name = deadLetter)]
    pub fn dead_letter(
        this: &WorkerPort,
        ids: Array,
        read_cts: Array,
        error_names: Array,
        error_messages: Array,
    ) -> Result<Promise, JsValue>;

    #[wasm_bindgen(method, catch)]
    pub fn extend(
        this: &WorkerPort,
        ids: Array,
        read_cts: Array,
        vt_seconds: f64,
    ) -> Result<Promise, JsValue>;

    #[wasm_bindgen(method, catch)]
    pub fn release(this: &WorkerPort, ids: Array, read_cts: Array) -> Result<Promise, JsValue>;
}
