/**
 * Error classes a handler throws to steer what happens to its message, and
 * the reason its abort signal carries.
 *
 * @module
 */

import type { AbortReason } from "./boundary.ts";

/**
 * Thrown by a handler to fail this attempt and ask for a specific delay
 * before the next one, instead of the configured retry policy's delay. The
 * retry limit still applies.
 *
 * @example Honouring a rate limit
 * ```ts
 * import { EdgeWorker, RetryAfterError } from "./mod.ts";
 *
 * EdgeWorker.start(async (payload: { url: string }) => {
 *   const response = await fetch(payload.url);
 *   if (response.status === 429) {
 *     throw new RetryAfterError("rate limited", 30_000);
 *   }
 * }, { queue: { name: "webhooks" } });
 * ```
 */
export class RetryAfterError extends Error {
  /** Requested delay before the next attempt, in milliseconds. */
  readonly delayMs: number;

  /**
   * Fails this attempt and asks for the next one after `delayMs`.
   *
   * @param message what went wrong, stored with the attempt's error.
   * @param delayMs delay before the next attempt, in milliseconds (>= 0).
   * @throws {RangeError} when `delayMs` is not a finite number >= 0.
   */
  constructor(message: string, delayMs: number, options?: ErrorOptions) {
    super(message, options);
    if (!Number.isFinite(delayMs) || delayMs < 0) {
      throw new RangeError(
        `RetryAfterError delayMs: ${delayMs} is not allowed; ` +
          "expected a finite number of milliseconds >= 0",
      );
    }
    this.name = "RetryAfterError";
    this.delayMs = delayMs;
  }
}

/**
 * Thrown by a handler when retrying cannot help (a malformed payload, a
 * permanent refusal). The message goes straight to dead letters with this
 * error recorded, whatever retries are left.
 *
 * @example Rejecting a malformed payload
 * ```ts
 * import { EdgeWorker, NonRetryableError } from "./mod.ts";
 *
 * EdgeWorker.start((payload: { to?: string }) => {
 *   if (typeof payload.to !== "string") {
 *     throw new NonRetryableError("payload.to must be a string");
 *   }
 * }, { queue: { name: "emails" } });
 * ```
 */
export class NonRetryableError extends Error {
  /**
   * Fails the message for good.
   *
   * @param message what went wrong, stored with the dead letter.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "NonRetryableError";
  }
}

/**
 * The reason carried by `ctx.signal` when the worker aborts a handler: its
 * timeout passed, the isolate is shutting down, the worker was stopped, or a
 * newer deployment replaced it.
 *
 * @example Telling a timeout from a shutdown
 * ```ts
 * import { EdgeWorker, HandlerAbortError } from "./mod.ts";
 *
 * EdgeWorker.start(async (_payload, ctx) => {
 *   ctx.signal.addEventListener("abort", () => {
 *     const reason = ctx.signal.reason;
 *     if (reason instanceof HandlerAbortError && reason.reason === "timeout") {
 *       console.log("took too long");
 *     }
 *   });
 *   await fetch("https://example.com", { signal: ctx.signal });
 * }, { queue: { name: "crawl" }, handler: { timeoutSeconds: 10 } });
 * ```
 */
export class HandlerAbortError extends Error {
  /** Why the handler was aborted. */
  readonly reason: AbortReason;

  /**
   * The abort reason for one handler.
   *
   * @param reason why the handler was aborted.
   */
  constructor(reason: AbortReason) {
    super(`handler aborted: ${reason}`);
    this.name = "HandlerAbortError";
    this.reason = reason;
  }
}

/**
 * A configuration value that is not allowed, thrown by `EdgeWorker.start`
 * before anything is claimed. The message names the field, the value and
 * what is allowed; the same three are available as properties.
 *
 * @example Reporting a bad configuration
 * ```ts
 * import { EdgeWorker, EdgeWorkerConfigError } from "./mod.ts";
 *
 * try {
 *   EdgeWorker.start(() => {}, { queue: { name: "Bad-Name" } });
 * } catch (error) {
 *   if (error instanceof EdgeWorkerConfigError) {
 *     console.error(error.field, error.allowed); // "queue.name", "1 to 47 …"
 *   }
 * }
 * ```
 */
export class EdgeWorkerConfigError extends Error {
  /** Dotted path of the offending field, such as `retry.limit`. */
  readonly field: string;
  /** The refused value as JSON text; `null` when the field is missing. */
  readonly value: string | null;
  /** What the field accepts. */
  readonly allowed: string;

  /**
   * Describes one refused field.
   *
   * @param details the field, value and allowed values, and the full
   *   sentence to use as the message.
   */
  constructor(details: {
    field: string;
    value: string | null;
    allowed: string;
    message: string;
  }) {
    super(details.message);
    this.name = "EdgeWorkerConfigError";
    this.field = details.field;
    this.value = details.value;
    this.allowed = details.allowed;
  }
}
