/**
 * A fixture for tests that run real workers on a throwaway queue: it makes
 * the queue, starts workers with fast polling and a log recorder, and on the
 * way out stops every worker, drops the queue with its `edge_worker` rows
 * and closes the test's own pool, whether the test passed or not.
 *
 * @module
 */

import {
  type EdgeWorkerConfig,
  type Handler,
  type LogLevel,
  startWorker,
  type WorkerHandle,
} from "../../js/mod.ts";
import { connect, createQueue, dropQueue, type Sql } from "./db.ts";

/** How long the fixture lets workers drain when a test ends, in ms. */
const STOP_BUDGET_MS = 2_000;

/**
 * Polling tuned for tests: a claim waits at most one second and looks every
 * 20 ms, so a visible message is picked up at once and `stop()` is quick.
 */
export const FAST_POLLING = { maxPollSeconds: 1, pollIntervalMs: 20 } as const;

/** One structured log line a worker printed, parsed. */
export interface LogEntry {
  /** Severity of the line. */
  level: LogLevel;
  /** Short event name, such as `stale_write`. */
  event: string;
  /** The worker that printed it. */
  worker_id: string;
  /** When the test saw the line, in epoch ms. */
  seenAtMs: number;
  /** Every other field of the line. */
  [field: string]: unknown;
}

/** Collects the parsed log lines of every worker a fixture starts. */
export class LogRecorder {
  readonly entries: LogEntry[] = [];

  /** Receives one formatted line (a `LogSink`). */
  readonly sink = (_level: LogLevel, line: string): void => {
    this.entries.push({ ...JSON.parse(line), seenAtMs: Date.now() });
  };

  /** The lines named `event`, optionally only those of one worker. */
  events(event: string, workerId?: string): LogEntry[] {
    return this.entries.filter((entry) =>
      entry.event === event &&
      (workerId === undefined || entry.worker_id === workerId)
    );
  }

  /** The first line named `event` (of one worker), if any arrived yet. */
  first(event: string, workerId?: string): LogEntry | undefined {
    return this.events(event, workerId)[0];
  }
}

/** What a test body gets from {@linkcode withQueue}. */
export interface QueueFixture {
  /** The test's own pool (two connections), separate from the workers'. */
  sql: Sql;
  /** The throwaway queue's name. */
  queue: string;
  /** Log lines of every worker started through {@linkcode start}. */
  logs: LogRecorder;
  /**
   * Starts a worker on the fixture's queue. `config` is merged group by
   * group over fast polling and debug logging; `queue.name` is filled in.
   */
  start<T>(handler: Handler<T>, config?: EdgeWorkerConfig): WorkerHandle;
}

/**
 * Runs `body` against a fresh queue named `<prefix>_<random>`, then stops
 * the workers it started, drops the queue and ends the pool.
 */
export async function withQueue(
  prefix: string,
  body: (fixture: QueueFixture) => Promise<void>,
): Promise<void> {
  const sql = connect();
  const queue = await createQueue(sql, prefix);
  const logs = new LogRecorder();
  const started: WorkerHandle[] = [];
  const fixture: QueueFixture = {
    sql,
    queue,
    logs,
    start(handler, config = {}) {
      const worker = startWorker(handler, testConfig(queue, config), {
        logSink: logs.sink,
      });
      started.push(worker);
      return worker;
    },
  };
  try {
    await body(fixture);
  } finally {
    const deadlineMs = Date.now() + STOP_BUDGET_MS;
    await Promise.allSettled(
      started.map((worker) => worker.stop("stop", deadlineMs)),
    );
    await dropQueue(sql, queue);
    await sql.end();
  }
}

/** `overrides` over the test defaults, one group at a time. */
function testConfig(
  queue: string,
  overrides: EdgeWorkerConfig,
): EdgeWorkerConfig {
  return {
    ...overrides,
    queue: { ...overrides.queue, name: queue },
    polling: { ...FAST_POLLING, ...overrides.polling },
    logging: { level: "debug", ...overrides.logging },
  };
}

/**
 * A promise with its resolver, for handlers that must wait until the test
 * lets them go.
 */
export class Gate {
  readonly #opened = Promise.withResolvers<void>();
  #isOpen = false;

  /** Resolves once {@linkcode open} has been called. */
  get passed(): Promise<void> {
    return this.#opened.promise;
  }

  /** Whether {@linkcode open} has been called. */
  get isOpen(): boolean {
    return this.#isOpen;
  }

  /** Lets every waiter through (idempotent). */
  open(): void {
    this.#isOpen = true;
    this.#opened.resolve();
  }
}

/** Seconds between two timestamps, `later - earlier`. */
export function secondsBetween(earlier: Date, later: Date): number {
  return (later.getTime() - earlier.getTime()) / 1_000;
}

/**
 * Stands for a handler's real work: resolves after `ms`, or as soon as
 * `signal` aborts, so an aborted handler ends and leaves no timer behind.
 */
export function workFor(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const finish = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", finish);
      resolve();
    };
    const timer = setTimeout(finish, ms);
    signal.addEventListener("abort", finish, { once: true });
  });
}

/** Resolves when `gate` opens or `signal` aborts, whichever comes first. */
export function gateOrAbort(gate: Gate, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const finish = () => {
      signal.removeEventListener("abort", finish);
      resolve();
    };
    signal.addEventListener("abort", finish, { once: true });
    gate.passed.then(finish);
  });
}
