/**
 * The worker's configuration as users write it and as the wasm module
 * returns it after validation. The fields, defaults and limits are defined in
 * `docs/configuration.md`; validation itself happens in Rust
 * (`validateConfig`), never here.
 *
 * @module
 */

/** Least severe level a logger prints. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** Shape of the delay between attempts. */
export type RetryStrategy = "fixed" | "exponential";

/** Randomisation applied to each retry delay. */
export type RetryJitter = "none" | "full" | "equal";

/**
 * The configuration passed to `EdgeWorker.start`, grouped by concern. Every
 * field except `queue.name` has a default; see `docs/configuration.md` for
 * defaults and allowed values. Unknown keys are refused.
 *
 * @example Grouped configuration
 * ```ts
 * import type { EdgeWorkerConfig } from "./mod.ts";
 *
 * const config: EdgeWorkerConfig = {
 *   queue: { name: "emails", batchSize: 20 },
 *   retry: { limit: 3, strategy: "fixed", delaySeconds: 10 },
 *   logging: { level: "debug" },
 * };
 * ```
 */
export interface EdgeWorkerConfig {
  /** Which pgmq queue to work on (created if absent). */
  queue?: {
    /** 1 to 47 characters of `a-z`, `0-9`, `_`, not starting with a digit. */
    name?: string;
    /** Most messages one claim may take: 1 to 1000, default 10. */
    batchSize?: number;
  };
  /** How many handlers run at once. */
  concurrency?: {
    /** Handlers running at once: 1 to 1000, default 10. */
    maxConcurrent?: number;
  };
  /** How a claim waits for messages (`pgmq.read_with_poll`). */
  polling?: {
    /** Longest wait of one claim, in seconds: 1 to 60, default 5. */
    maxPollSeconds?: number;
    /** How often a waiting claim looks, in ms: 10 to 10000, default 100. */
    pollIntervalMs?: number;
  };
  /** Visibility timeouts (leases) on claimed messages. */
  lease?: {
    /**
     * Lease taken on claim and extension, in seconds: 2 to 43200,
     * default 30.
     */
    visibilityTimeoutSeconds?: number;
    /**
     * Extend a running handler's lease when this many seconds are left:
     * 1 to the timeout minus 1, default half the timeout.
     */
    renewBeforeExpirySeconds?: number;
  };
  /** Retries after a failed attempt, then dead letters. */
  retry?: {
    /** Retries after the first attempt: 0 to 1000, default 5. */
    limit?: number;
    /** Delay shape, default `"exponential"`. */
    strategy?: RetryStrategy;
    /** Fixed delay or exponential base, in seconds: 0 to 86400, default 5. */
    delaySeconds?: number;
    /** Cap of the exponential delay, in seconds: default 300. */
    maxDelaySeconds?: number;
    /** Randomisation of each delay, default `"none"`. */
    jitter?: RetryJitter;
  };
  /** Limits on one handler run. */
  handler?: {
    /** Abort the handler after this many seconds, or `null` (the default). */
    timeoutSeconds?: number | null;
    /** After a timeout, ms an aborted handler keeps its slot; default 2000. */
    graceMs?: number;
  };
  /** The database connection pool. */
  connection?: {
    /** Pool size, handlers' `ctx.sql` included: 1 to 100, default 4. */
    maxConnections?: number;
    /**
     * A `postgres://` URL. Defaults to the environment variable
     * `EDGE_WORKER_DB_URL`, then `SUPABASE_DB_URL`.
     */
    url?: string;
    /**
     * Longest wait in seconds for one of the worker's own statements (a
     * claim may take `polling.maxPollSeconds` more); a statement that takes
     * longer counts as a lost connection and is tried again: 1 to 600,
     * default 30.
     */
    queryTimeoutSeconds?: number;
  };
  /** The worker row in `edge_worker.workers`. */
  lifecycle?: {
    /** Heartbeat period in seconds: 1 to 300, default 5. */
    heartbeatIntervalSeconds?: number;
  };
  /** Structured log output. */
  logging?: {
    /** Least severe level printed, default `"info"`. */
    level?: LogLevel;
  };

  /**
   * Queue name, from the alpha.
   *
   * @deprecated Use `queue.name`.
   */
  queueName?: string;
  /**
   * Handlers at once, from the alpha.
   *
   * @deprecated Use `concurrency.maxConcurrent`.
   */
  maxConcurrent?: number;
  /**
   * Pool size, from the alpha.
   *
   * @deprecated Use `connection.maxConnections`.
   */
  maxPgConnections?: number;
  /**
   * Longest poll in seconds, from the alpha.
   *
   * @deprecated Use `polling.maxPollSeconds`.
   */
  maxPollSeconds?: number;
  /**
   * Poll interval in ms, from the alpha.
   *
   * @deprecated Use `polling.pollIntervalMs`.
   */
  pollIntervalMs?: number;
  /**
   * Fixed retry delay in seconds, from the alpha.
   *
   * @deprecated Use `retry.delaySeconds` with `retry.strategy: "fixed"`.
   */
  retryDelay?: number;
  /**
   * Retries after the first attempt, from the alpha.
   *
   * @deprecated Use `retry.limit`.
   */
  retryLimit?: number;
  /**
   * Lease in seconds, from the alpha.
   *
   * @deprecated Use `lease.visibilityTimeoutSeconds`.
   */
  visibilityTimeout?: number;
}

/**
 * A validated configuration with every default filled in, as returned by the
 * wasm module's `validateConfig`. Handlers see it, deep-frozen, as
 * `ctx.config`.
 *
 * @example Reading the resolved retry limit in a handler
 * ```ts
 * import type { HandlerContext } from "./mod.ts";
 *
 * function isLastAttempt(ctx: HandlerContext): boolean {
 *   return ctx.attempt > ctx.config.retry.limit;
 * }
 * ```
 */
export interface ResolvedConfig {
  /** Which queue, and how much per claim. */
  readonly queue: { readonly name: string; readonly batchSize: number };
  /** How many handlers at once. */
  readonly concurrency: { readonly maxConcurrent: number };
  /** How claims wait for messages. */
  readonly polling: {
    readonly maxPollSeconds: number;
    readonly pollIntervalMs: number;
  };
  /** Visibility timeouts, in seconds. */
  readonly lease: {
    readonly visibilityTimeoutSeconds: number;
    readonly renewBeforeExpirySeconds: number;
  };
  /** Retries and dead letters. */
  readonly retry: {
    readonly limit: number;
    readonly strategy: RetryStrategy;
    readonly delaySeconds: number;
    readonly maxDelaySeconds: number;
    readonly jitter: RetryJitter;
  };
  /** Handler limits. */
  readonly handler: {
    readonly timeoutSeconds: number | null;
    readonly graceMs: number;
  };
  /** Database connections; `url` is `null` when taken from the environment. */
  readonly connection: {
    readonly maxConnections: number;
    readonly url: string | null;
    readonly queryTimeoutSeconds: number;
  };
  /** Heartbeats. */
  readonly lifecycle: { readonly heartbeatIntervalSeconds: number };
  /** Log output. */
  readonly logging: { readonly level: LogLevel };
}

/** Environment variables read, in order, when `connection.url` is unset. */
export const DATABASE_URL_ENV_VARS = [
  "EDGE_WORKER_DB_URL",
  "SUPABASE_DB_URL",
] as const;

/**
 * Returns the database URL for a resolved configuration: `connection.url`,
 * else the first of {@linkcode DATABASE_URL_ENV_VARS} that is set.
 *
 * @throws {TypeError} when no URL is configured anywhere.
 */
export function databaseUrl(
  config: ResolvedConfig,
  env: (name: string) => string | undefined,
): string {
  if (config.connection.url !== null) return config.connection.url;
  for (const name of DATABASE_URL_ENV_VARS) {
    const value = env(name);
    if (value !== undefined && value !== "") return value;
  }
  throw new TypeError(
    `connection.url is not set and neither is ${
      DATABASE_URL_ENV_VARS.join(" nor ")
    }; expected a postgres:// URL in one of them`,
  );
}

/** Freezes `value` and everything reachable from it, then returns it. */
export function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}
