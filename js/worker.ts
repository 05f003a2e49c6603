/**
 * Starting one worker: validate, connect, build the port and the wasm
 * driver, run it. `EdgeWorker.start` uses this after the first request;
 * tests and the benchmark call it directly.
 *
 * @module
 */

import type { StopReason } from "./boundary.ts";
import { databaseUrl, type ResolvedConfig } from "./config.ts";
import { EdgeWorkerConfigError } from "./errors.ts";
import type { Handler } from "./handler.ts";
import { createLogger, type Logger, type LogSink } from "./log.ts";
import type { Platform } from "./platform.ts";
import { createPool } from "./pool.ts";
import { PostgresPort } from "./port.ts";
import { type Deprecation, resolveConfig } from "./validate.ts";
import { WorkerDriver } from "./wasm.ts";

/**
 * How long `stop()` lets in-flight handlers finish when no deadline is
 * given, in ms.
 */
export const DEFAULT_STOP_BUDGET_MS = 5_000;

/** Function name stored in the worker row when none is known. */
export const DEFAULT_FUNCTION_NAME = "standalone";

/** Options of {@linkcode startWorker}. */
export interface StartWorkerOptions {
  /**
   * The edge function's name, stored in `edge_worker.workers` so the
   * respawn safety net knows what to call. Default
   * {@linkcode DEFAULT_FUNCTION_NAME}.
   */
  functionName?: string;
  /**
   * Where `beforeunload` and termination signals come from. Without one,
   * the worker runs until `stop()` is called.
   */
  platform?: Platform;
  /** Where log lines go; default the console. */
  logSink?: LogSink;
  /** Reads an environment variable; default `Deno.env.get`. */
  env?: (name: string) => string | undefined;
}

/** A running worker. */
export interface WorkerHandle {
  /** This worker's id (a UUID), as in `edge_worker.workers.worker_id`. */
  readonly workerId: string;
  /** The validated configuration the worker runs with. */
  readonly config: ResolvedConfig;
  /**
   * Settles when the worker has stopped and its pool is closed. Rejects if
   * the worker could not start (for example, the migrations are missing).
   */
  readonly done: Promise<void>;
  /**
   * Asks the worker to stop claiming and drain by `deadlineMs` (epoch ms;
   * default now + {@linkcode DEFAULT_STOP_BUDGET_MS}), then returns `done`.
   */
  stop(reason?: StopReason, deadlineMs?: number): Promise<void>;
}

/** A configuration that passed validation, with everything needed to run. */
export interface PreparedConfig {
  /** The validated configuration, deep-frozen. */
  config: ResolvedConfig;
  /** Deprecated flat keys used, logged when the worker starts. */
  warnings: Deprecation[];
  /** The database URL, from the config or the environment. */
  url: string;
}

/**
 * Validates a configuration and resolves its database URL, without
 * connecting. `EdgeWorker.start` calls it to fail fast.
 *
 * @throws {EdgeWorkerConfigError} naming the first field not allowed, or
 *   `connection.url` when no URL is configured anywhere.
 */
export function prepareConfig(
  raw: unknown,
  env: (name: string) => string | undefined = (name) => Deno.env.get(name),
): PreparedConfig {
  const { config, warnings } = resolveConfig(raw);
  try {
    return { config, warnings, url: databaseUrl(config, env) };
  } catch (error) {
    throw new EdgeWorkerConfigError({
      field: "connection.url",
      value: null,
      allowed: "a postgres:// URL",
      message: error instanceof Error ? error.message : String(error),
    });
  }
}

/**
 * Starts a worker on `config.queue.name` with `handler` and returns at once;
 * claiming begins in the background.
 *
 * @throws {EdgeWorkerConfigError} on an invalid configuration, before
 *   anything connects.
 *
 * @example Draining a queue from a script
 * ```ts
 * import { startWorker } from "./worker.ts";
 *
 * const worker = startWorker(async (payload: { n: number }) => {
 *   console.log(payload.n);
 * }, { queue: { name: "numbers" } });
 * // ... later:
 * await worker.stop();
 * ```
 */
export function startWorker<T>(
  handler: Handler<T>,
  config: unknown,
  options: StartWorkerOptions = {},
): WorkerHandle {
  const env = options.env ?? ((name: string) => Deno.env.get(name));
  const prepared = prepareConfig(config, env);
  const workerId = crypto.randomUUID();
  const logger = createLogger({
    level: prepared.config.logging.level,
    base: { queue: prepared.config.queue.name, worker_id: workerId },
    sink: options.logSink,
  });
  for (const { key, replacement } of prepared.warnings) {
    logger.warn("config_key_deprecated", { key, replacement });
  }

  const sql = createPool({
    url: prepared.url,
    maxConnections: prepared.config.connection.maxConnections,
    queue: prepared.config.queue.name,
    workerId,
    logger,
  });
  const port = new PostgresPort({
    sql,
    handler,
    config: prepared.config,
    workerId,
    functionName: options.functionName ?? DEFAULT_FUNCTION_NAME,
    logger,
    env: environment(),
  });
  let driver: WorkerDriver;
  try {
    driver = new WorkerDriver(port, prepared.config, randomSeed());
  } catch (error) {
    port.close();
    throw error;
  }

  let running = true;
  const stop = (reason: StopReason, deadlineMs: number): void => {
    if (running) driver.requestStop(reason, deadlineMs);
  };
  const unwire = wirePlatform(options.platform, stop, logger);
  const done = run(driver, port, logger).finally(() => {
    running = false;
    unwire();
    driver.free();
  });

  return {
    workerId,
    config: prepared.config,
    done,
    stop(reason = "stop", deadlineMs = Date.now() + DEFAULT_STOP_BUDGET_MS) {
      stop(reason, deadlineMs);
      return done;
    },
  };
}

/** Runs the driver; the pool is closed however it ends. */
async function run<T>(
  driver: WorkerDriver,
  port: PostgresPort<T>,
  logger: Logger,
): Promise<void> {
  try {
    await driver.run();
  } catch (error) {
    logger.error("worker_failed", { error });
    throw error;
  } finally {
    await port.close();
  }
}

/** Connects retirement and termination to `stop`; returns the undo. */
function wirePlatform(
  platform: Platform | undefined,
  stop: (reason: StopReason, deadlineMs: number) => void,
  logger: Logger,
): () => void {
  if (platform === undefined) return () => {};
  const offRetire = platform.onRetire((deadlineMs, cause) => {
    logger.debug("retire_requested", { cause, deadline_ms: deadlineMs });
    stop("shutdown", deadlineMs);
  });
  // The termination listener resolves when the worker is done; `done` is
  // not known yet here, so the promise is created on demand.
  const finished = Promise.withResolvers<void>();
  const offTerminate = platform.onTerminate((signal, deadlineMs) => {
    logger.debug("signal_received", { signal, deadline_ms: deadlineMs });
    stop("stop", deadlineMs);
    return finished.promise;
  });
  return () => {
    offRetire();
    offTerminate();
    finished.resolve();
  };
}

/** `Deno.env.toObject()`, read once, on first use. */
function environment(): () => Readonly<Record<string, string>> {
  let cached: Readonly<Record<string, string>> | undefined;
  return () => (cached ??= Object.freeze(Deno.env.toObject()));
}

/** A random unsigned 32-bit seed for the driver's jitter. */
function randomSeed(): number {
  return crypto.getRandomValues(new Uint32Array(1))[0];
}
