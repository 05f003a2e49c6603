/**
 * The {@linkcode WorkerPort} over one postgres.js pool: the SQL of each
 * operation, the payloads of claimed messages, and handler invocation. It
 * decides nothing; the wasm driver says what to do and when.
 *
 * @module
 */

import type {
  AbortReason,
  ClaimedMessage,
  HandlerOutcome,
  WorkerPort,
  WorkerStats,
} from "./boundary.ts";
import type { LogLevel, ResolvedConfig } from "./config.ts";
import { HandlerAbortError } from "./errors.ts";
import type { Handler, HandlerContext, MessageRecord } from "./handler.ts";
import type { Logger } from "./log.ts";
import { failedOutcome, SUCCEEDED } from "./outcome.ts";
import type { PendingQuery, Sql } from "./pool.ts";
import * as query from "./queries.ts";
import { Sleeper } from "./sleeper.ts";

/**
 * Seconds `sql.end` waits for running statements (an abandoned handler's,
 * or a claim still polling) before it closes their connections.
 */
export const POOL_END_TIMEOUT_SECONDS = 1;

/** Options of {@linkcode PostgresPort}. */
export interface PostgresPortOptions<T> {
  /** The worker's pool; the port ends it in `markStopped`. */
  sql: Sql;
  /** The user's handler. */
  handler: Handler<T>;
  /** The validated configuration, deep-frozen (handlers see it). */
  config: ResolvedConfig;
  /** This worker's id (a UUID). */
  workerId: string;
  /** The edge function's name, stored in the worker row. */
  functionName: string;
  /** Logger carrying `queue` and `worker_id`. */
  logger: Logger;
  /** The environment handlers see as `ctx.env`. */
  env: () => Readonly<Record<string, string>>;
}

/** A claimed row as postgres.js returns it (int8 as string). */
interface ClaimRow {
  msg_id: string;
  read_ct: number;
  enqueued_at: Date;
  vt: Date;
  message: unknown;
}

/** The postgres.js implementation of the port the wasm driver calls. */
export class PostgresPort<T> implements WorkerPort {
  readonly #sql: Sql;
  readonly #handler: Handler<T>;
  readonly #config: ResolvedConfig;
  readonly #queue: string;
  readonly #workerId: string;
  readonly #functionName: string;
  readonly #logger: Logger;
  readonly #env: () => Readonly<Record<string, string>>;
  readonly #sleeper = new Sleeper();
  /** Payloads of claimed messages whose handler has not settled. */
  readonly #claimed = new Map<string, MessageRecord<T>>();
  /** Abort controllers of running handlers. */
  readonly #running = new Map<string, AbortController>();
  #pendingClaim: PendingQuery<ClaimRow[]> | undefined;
  #poolEnded: Promise<void> | undefined;

  constructor(options: PostgresPortOptions<T>) {
    this.#sql = options.sql;
    this.#handler = options.handler;
    this.#config = options.config;
    this.#queue = options.config.queue.name;
    this.#workerId = options.workerId;
    this.#functionName = options.functionName;
    this.#logger = options.logger;
    this.#env = options.env;
  }

  /** Claimed messages whose payload is still held (for tests). */
  get heldPayloads(): number {
    return this.#claimed.size;
  }

  now(): number {
    return Date.now();
  }

  sleep(ms: number): Promise<void> {
    return this.#sleeper.sleep(ms);
  }

  log(level: LogLevel, event: string, fields: Record<string, unknown>): void {
    this.#logger.log(level, event, fields);
  }

  async ensureQueue(): Promise<void> {
    await this.#sql.unsafe(query.ENSURE_QUEUE, [this.#queue]);
  }

  async register(): Promise<void> {
    await this.#sql.unsafe(query.REGISTER, [
      this.#workerId,
      this.#queue,
      this.#functionName,
    ]);
  }

  async heartbeat(stats: WorkerStats): Promise<{ deprecated: boolean }> {
    const rows = await this.#sql.unsafe<{ deprecated: boolean }[]>(
      query.HEARTBEAT,
      query.heartbeatParameters(this.#workerId, stats),
    );
    return { deprecated: rows[0]?.deprecated === true };
  }

  /**
   * Records the stop, then ends the pool. If recording fails the pool stays
   * open and the error goes to the driver untouched, so it can try again;
   * {@linkcode close} ends the pool in any case once the driver is done.
   */
  async markStopped(stats: WorkerStats): Promise<void> {
    this.#sleeper.cancel();
    await this.#sql.unsafe(
      query.STOP,
      query.heartbeatParameters(this.#workerId, stats),
    );
    await this.close();
  }

  /**
   * Ends the pool (idempotent), clears the timer and drops every payload
   * still held. Statements still running get
   * {@linkcode POOL_END_TIMEOUT_SECONDS} before their connections close.
   */
  close(): Promise<void> {
    this.#sleeper.cancel();
    this.#claimed.clear();
    this.#poolEnded ??= this.#sql.end({ timeout: POOL_END_TIMEOUT_SECONDS });
    return this.#poolEnded;
  }

  async claim(
    qty: number,
    vtSeconds: number,
    maxPollSeconds: number,
    pollIntervalMs: number,
  ): Promise<ClaimedMessage[]> {
    const pending = this.#sql.unsafe<ClaimRow[]>(query.CLAIM, [
      this.#queue,
      vtSeconds,
      qty,
      maxPollSeconds,
      pollIntervalMs,
    ]);
    this.#pendingClaim = pending;
    let rows: ClaimRow[];
    try {
      rows = await pending;
    } finally {
      if (this.#pendingClaim === pending) this.#pendingClaim = undefined;
    }
    return rows.map((row) => {
      // A message whose handler still runs here was read again after its
      // lease lapsed; the driver keeps that handler, so no payload is needed.
      if (this.#running.has(row.msg_id)) {
        return { msgId: row.msg_id, readCt: row.read_ct };
      }
      this.#claimed.set(row.msg_id, {
        msg_id: row.msg_id,
        read_ct: row.read_ct,
        enqueued_at: row.enqueued_at,
        vt: row.vt,
        message: row.message as T,
      });
      return { msgId: row.msg_id, readCt: row.read_ct };
    });
  }

  /**
   * Cancels the claim in flight, if any (a CancelRequest to the server).
   * `read_with_poll` is one statement, so a cancelled claim takes nothing:
   * its promise rejects with SQLSTATE 57014. A claim that finished first
   * resolves as usual.
   */
  cancelClaim(): void {
    this.#pendingClaim?.cancel();
  }

  async startHandler(
    msgId: string,
    readCt: number,
    attempt: number,
  ): Promise<HandlerOutcome> {
    const record = this.#claimed.get(msgId);
    if (record === undefined) {
      return failedOutcome(
        new Error(`message ${msgId} has no claimed payload in this worker`),
      );
    }
    const controller = new AbortController();
    this.#running.set(msgId, controller);
    try {
      // Let the driver's call return before user code runs, so a handler
      // that calls back into the worker never re-enters the wasm module.
      await Promise.resolve();
      await this.#handler(
        record.message,
        this.#context(record, readCt, attempt, controller.signal),
      );
      return SUCCEEDED;
    } catch (thrown) {
      return failedOutcome(thrown);
    } finally {
      // A newer claim of the same id may have replaced these entries while
      // an abandoned handler ran on; leave those alone.
      if (this.#claimed.get(msgId) === record) this.#claimed.delete(msgId);
      if (this.#running.get(msgId) === controller) this.#running.delete(msgId);
    }
  }

  abortHandler(msgId: string, reason: AbortReason): void {
    const controller = this.#running.get(msgId);
    if (controller === undefined || controller.signal.aborted) return;
    // Abort listeners are user code: run them after the driver's call returns.
    queueMicrotask(() => controller.abort(new HandlerAbortError(reason)));
  }

  archive(ids: string[], readCts: number[]): Promise<string[]> {
    return this.#changed(query.ARCHIVE, [this.#queue, ids, readCts]);
  }

  retry(
    ids: string[],
    readCts: number[],
    delaysSeconds: number[],
    errorNames: string[],
    errorMessages: string[],
  ): Promise<string[]> {
    return this.#changed(query.RETRY, [
      this.#queue,
      ids,
      readCts,
      delaysSeconds,
      errorNames,
      errorMessages,
      this.#workerId,
    ]);
  }

  deadLetter(
    ids: string[],
    readCts: number[],
    errorNames: string[],
    errorMessages: string[],
  ): Promise<string[]> {
    return this.#changed(query.DEAD_LETTER, [
      this.#queue,
      ids,
      readCts,
      errorNames,
      errorMessages,
      this.#workerId,
    ]);
  }

  extend(
    ids: string[],
    readCts: number[],
    vtSeconds: number,
  ): Promise<string[]> {
    return this.#changed(query.EXTEND, [this.#queue, ids, readCts, vtSeconds]);
  }

  release(ids: string[], readCts: number[]): Promise<string[]> {
    // Released messages were never started and the claim is given up
    // whatever the answer, so their payloads go now.
    for (const id of ids) {
      if (!this.#running.has(id)) this.#claimed.delete(id);
    }
    return this.#changed(query.RELEASE, [this.#queue, ids, readCts]);
  }

  /** Runs a fenced batch statement and returns the ids it changed. */
  async #changed(
    statement: string,
    parameters: (string | number | string[] | number[])[],
  ): Promise<string[]> {
    const rows = await this.#sql.unsafe<{ msg_id: string }[]>(
      statement,
      parameters,
    );
    return rows.map((row) => row.msg_id);
  }

  #context(
    record: MessageRecord<T>,
    readCt: number,
    attempt: number,
    signal: AbortSignal,
  ): HandlerContext<T> {
    const env = this.#env;
    return {
      msgId: record.msg_id,
      readCt,
      attempt,
      enqueuedAt: record.enqueued_at,
      record,
      signal,
      sql: this.#sql,
      get env() {
        return env();
      },
      config: this.#config,
      queueName: this.#queue,
      workerId: this.#workerId,
    };
  }
}
