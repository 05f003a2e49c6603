/**
 * Edge Worker: a pgmq queue worker for Supabase Edge Functions.
 *
 * An edge function calls {@linkcode EdgeWorker.start} once with a handler
 * and a configuration. The first HTTP request to the function starts the
 * worker, which then claims messages from the queue, runs the handler with
 * bounded concurrency, retries failures with backoff, keeps leases alive and
 * hands over cleanly when the runtime retires the isolate.
 *
 * @example An email worker
 * ```ts
 * import { EdgeWorker } from "./mod.ts";
 *
 * EdgeWorker.start(async (payload: { to: string; body: string }, ctx) => {
 *   await fetch("https://mail.example/send", {
 *     method: "POST",
 *     body: JSON.stringify(payload),
 *     signal: ctx.signal,
 *   });
 * }, { queue: { name: "emails" }, retry: { limit: 5 } });
 * ```
 *
 * @module
 */

import type { EdgeWorkerConfig } from "./config.ts";
import type { Handler } from "./handler.ts";
import { createLogger, type Logger } from "./log.ts";
import { edgePlatform, type Platform } from "./platform.ts";
import {
  DEFAULT_FUNCTION_NAME,
  DEFAULT_STOP_BUDGET_MS,
  prepareConfig,
  startWorker,
  type WorkerHandle,
} from "./worker.ts";

export type { AbortReason, StopReason } from "./boundary.ts";
export type {
  EdgeWorkerConfig,
  LogLevel,
  ResolvedConfig,
  RetryJitter,
  RetryStrategy,
} from "./config.ts";
export {
  EdgeWorkerConfigError,
  HandlerAbortError,
  NonRetryableError,
  RetryAfterError,
} from "./errors.ts";
export type { Handler, HandlerContext, MessageRecord } from "./handler.ts";
export type { LogSink } from "./log.ts";
export type { Platform } from "./platform.ts";
export type { Sql } from "./pool.ts";
export {
  startWorker,
  type StartWorkerOptions,
  type WorkerHandle,
} from "./worker.ts";

/** Where the isolate's one worker is in its life. */
type Phase =
  | { name: "idle" }
  | { name: "listening"; start: (request: Request) => WorkerHandle }
  | { name: "running"; worker: WorkerHandle }
  | { name: "stopped"; workerId: string | null };

/**
 * The entry point of an edge function: one worker per isolate, started by
 * the function's first HTTP request.
 *
 * @example Starting and, in a test, stopping the worker
 * ```ts
 * import { EdgeWorker } from "./mod.ts";
 *
 * EdgeWorker.start((payload: { n: number }) => {
 *   console.log(payload.n);
 * }, { queue: { name: "numbers" } });
 *
 * // Later, when the isolate should stop working on its own accord:
 * await EdgeWorker.stop();
 * ```
 */
export class EdgeWorker {
  static #phase: Phase = { name: "idle" };

  private constructor() {}

  /**
   * Validates `config`, then registers the HTTP handler. The first request
   * starts the worker and answers `200 {"worker_id": "…"}`; later requests
   * get the same answer while it runs, and `503` once it has stopped. On the
   * Edge Runtime the isolate is kept alive with `EdgeRuntime.waitUntil`
   * until the worker stops, and `beforeunload` makes it retire.
   *
   * @param handler called once per claimed message with its payload.
   * @param config see `docs/configuration.md`; only `queue.name` is required.
   * @throws {EdgeWorkerConfigError} at once on an invalid configuration or
   *   when no database URL is configured; nothing is claimed.
   * @throws {Error} when called a second time in the same isolate.
   *
   * @example A worker with retries and a handler timeout
   * ```ts
   * import { EdgeWorker } from "./mod.ts";
   *
   * EdgeWorker.start(async (payload: { url: string }, ctx) => {
   *   await fetch(payload.url, { signal: ctx.signal });
   * }, {
   *   queue: { name: "webhooks" },
   *   retry: { limit: 3, strategy: "exponential", delaySeconds: 2 },
   *   handler: { timeoutSeconds: 20 },
   * });
   * ```
   */
  static start<T = unknown>(
    handler: Handler<T>,
    config: EdgeWorkerConfig,
  ): void {
    EdgeWorker.#start(handler, config, edgePlatform());
  }

  /**
   * Stops the worker: nothing new is claimed, unstarted messages are
   * released, running handlers are aborted with reason `"stop"` and have
   * until `deadlineMs` (epoch ms, default five seconds from now). Resolves
   * when the worker has stopped. Before the first request it only prevents
   * the worker from starting.
   *
   * @example Stopping from a test
   * ```ts
   * import { EdgeWorker } from "./mod.ts";
   *
   * await EdgeWorker.stop(Date.now() + 2_000);
   * ```
   */
  static stop(deadlineMs = Date.now() + DEFAULT_STOP_BUDGET_MS): Promise<void> {
    const phase = EdgeWorker.#phase;
    switch (phase.name) {
      case "idle":
        return Promise.resolve();
      case "listening":
        EdgeWorker.#phase = { name: "stopped", workerId: null };
        return Promise.resolve();
      case "running":
        return phase.worker.stop("stop", deadlineMs);
      case "stopped":
        return Promise.resolve();
    }
  }

  static #start<T>(
    handler: Handler<T>,
    config: EdgeWorkerConfig,
    platform: Platform,
  ): void {
    if (EdgeWorker.#phase.name !== "idle") {
      throw new Error(
        "EdgeWorker.start was called twice in this isolate; " +
          "an edge function runs exactly one worker, so call it once",
      );
    }
    const prepared = prepareConfig(config);
    const logger = createLogger({
      level: prepared.config.logging.level,
      base: { queue: prepared.config.queue.name },
    });
    EdgeWorker.#phase = {
      name: "listening",
      start: (request) =>
        startWorker(handler, config, {
          platform,
          functionName: functionNameOf(request),
        }),
    };
    platform.serve((request) => EdgeWorker.#respond(request, platform, logger));
  }

  static #respond(
    request: Request,
    platform: Platform,
    logger: Logger,
  ): Response {
    const phase = EdgeWorker.#phase;
    switch (phase.name) {
      case "idle":
      case "stopped":
        return Response.json(
          {
            error: "worker stopped",
            worker_id: phase.name === "stopped" ? phase.workerId : null,
          },
          { status: 503 },
        );
      case "running":
        return Response.json({ worker_id: phase.worker.workerId });
      case "listening":
        break;
    }

    let worker: WorkerHandle;
    try {
      worker = phase.start(request);
    } catch (error) {
      logger.error("worker_start_failed", { error });
      return Response.json({ error: "worker could not start" }, {
        status: 500,
      });
    }
    EdgeWorker.#phase = { name: "running", worker };
    const settled = worker.done.then(
      () => {},
      // startWorker has logged it; the isolate must not die of it.
      () => {},
    ).finally(() => {
      EdgeWorker.#phase = { name: "stopped", workerId: worker.workerId };
    });
    platform.keepAlive(settled);
    return Response.json({ worker_id: worker.workerId });
  }
}

/**
 * The function's name from the request path: the Edge Runtime routes
 * `/<name>/…` (hosted: `/functions/v1/<name>/…`) to the function.
 */
function functionNameOf(request: Request): string {
  const segments = new URL(request.url).pathname.split("/").filter((s) =>
    s !== ""
  );
  const name = segments[0] === "functions" && segments[1] === "v1"
    ? segments[2]
    : segments[0];
  return name !== undefined && name !== "" ? name : DEFAULT_FUNCTION_NAME;
}
