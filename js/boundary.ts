/**
 * Types of the wasm boundary: what the Rust driver calls on the shim. They
 * mirror `docs/boundary.md`, which is the reference; change both together.
 *
 * Ids cross as decimal strings (pgmq ids are int8 and may exceed 2^53) and
 * times as epoch milliseconds. Batch arrays are parallel: `ids[i]` goes with
 * `readCts[i]`.
 *
 * @module
 */

import type { LogLevel } from "./config.ts";

/** Why the driver aborts a running handler. */
export type AbortReason = "timeout" | "shutdown" | "stop" | "deprecated";

/** Why the worker is asked to stop (`driver.requestStop`). */
export type StopReason = "shutdown" | "stop" | "deprecated";

/** A message the shim claimed, as the driver sees it (no payload). */
export interface ClaimedMessage {
  /** pgmq message id, as a decimal string. */
  msgId: string;
  /** pgmq `read_ct` after this claim; the fence for completions. */
  readCt: number;
  /** When the message was sent, in epoch ms. */
  enqueuedAtMs: number;
}

/** Counters the driver reports with each heartbeat. */
export interface WorkerStats {
  /** Messages archived as succeeded since start. */
  succeeded: number;
  /** Failed attempts since start. */
  failed: number;
  /** Messages dead-lettered since start. */
  deadLettered: number;
  /** Handlers running now. */
  inFlight: number;
  /** The last failure's message, if any. */
  lastError: string | null;
}

/** How one handler run ended, as the driver needs to know it. */
export type HandlerOutcome =
  | { ok: true }
  | {
    ok: false;
    /** Class name of the thrown value, or a tag for non-errors. */
    errorName: string;
    /** Human-readable message of the thrown value. */
    errorMessage: string;
    /** `false` sends the message straight to dead letters. */
    retryable: boolean;
    /** A delay the handler asked for, in ms; `null` lets the policy decide. */
    retryAfterMs: number | null;
  };

/**
 * Everything the wasm driver needs from the host: a clock, timers, logging,
 * the SQL operations and the handler executor. The driver classifies
 * rejections itself from the untouched postgres.js error (`code`,
 * `message`), so implementations never wrap errors.
 */
export interface WorkerPort {
  /** Current time in epoch ms. */
  now(): number;
  /**
   * Resolves after `ms`. A new call supersedes the previous one, whose
   * promise may then resolve early; the driver ignores it.
   */
  sleep(ms: number): Promise<void>;
  /** Prints one structured log line. */
  log(level: LogLevel, event: string, fields: Record<string, unknown>): void;

  /** Creates the queue if it is absent (`pgmq.create`). */
  ensureQueue(): Promise<void>;
  /** Inserts this worker's row (`edge_worker.register_worker`). */
  register(): Promise<void>;
  /** Updates the worker row; `deprecated` asks the worker to retire. */
  heartbeat(stats: WorkerStats): Promise<{ deprecated: boolean }>;
  /** Marks the worker row stopped, then ends the connection pool. */
  markStopped(): Promise<void>;

  /** Claims up to `qty` messages with `pgmq.read_with_poll`. */
  claim(
    qty: number,
    vtSeconds: number,
    maxPollSeconds: number,
    pollIntervalMs: number,
  ): Promise<ClaimedMessage[]>;
  /** Cancels the claim in flight, if any; its messages stay untouched. */
  cancelClaim(): void;
  /** Runs the user handler for a claimed message. Never rejects. */
  startHandler(
    msgId: string,
    readCt: number,
    attempt: number,
  ): Promise<HandlerOutcome>;
  /** Aborts a running handler's signal with `reason`. */
  abortHandler(msgId: string, reason: AbortReason): void;

  /** Archives succeeded messages; returns the ids changed. */
  archive(ids: string[], readCts: number[]): Promise<string[]>;
  /** Schedules retries and records the errors; returns the ids changed. */
  retry(
    ids: string[],
    readCts: number[],
    delaysSeconds: number[],
    errorNames: string[],
    errorMessages: string[],
  ): Promise<string[]>;
  /** Moves messages to dead letters; returns the ids changed. */
  deadLetter(
    ids: string[],
    readCts: number[],
    errorNames: string[],
    errorMessages: string[],
  ): Promise<string[]>;
  /** Extends leases by `vtSeconds` from now; returns the ids changed. */
  extend(
    ids: string[],
    readCts: number[],
    vtSeconds: number,
  ): Promise<string[]>;
  /** Makes messages visible again without using an attempt. */
  release(ids: string[], readCts: number[]): Promise<string[]>;
}
