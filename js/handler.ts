/**
 * What a user handler is and what it receives.
 *
 * @module
 */

import type { ResolvedConfig } from "./config.ts";
import type { Sql } from "./pool.ts";

/**
 * The pgmq row a message was claimed as, columns named as in the table.
 * `msg_id` is a decimal string because int8 ids may exceed 2^53.
 */
export interface MessageRecord<T = unknown> {
  /** pgmq message id, exact, as a decimal string. */
  readonly msg_id: string;
  /** How many times the message has been read, this claim included. */
  readonly read_ct: number;
  /** When the message was sent. */
  readonly enqueued_at: Date;
  /** When this claim's lease was due to expire at claim time. */
  readonly vt: Date;
  /** The payload (`jsonb`); may be `null`. */
  readonly message: T;
}

/**
 * Everything a handler gets besides its payload.
 *
 * @example Using the context
 * ```ts
 * import { EdgeWorker, type HandlerContext } from "./mod.ts";
 *
 * async function notify(
 *   payload: { userId: string },
 *   ctx: HandlerContext,
 * ): Promise<void> {
 *   console.log(`message ${ctx.msgId}, attempt ${ctx.attempt}`);
 *   await ctx.sql`
 *     update users set notified = true where id = ${payload.userId}`;
 * }
 *
 * EdgeWorker.start(notify, { queue: { name: "notify" } });
 * ```
 */
export interface HandlerContext<T = unknown> {
  /** pgmq message id, exact, as a decimal string. */
  readonly msgId: string;
  /** The read count this worker claimed the message with. */
  readonly readCt: number;
  /** Which attempt this is, from 1. */
  readonly attempt: number;
  /** When the message was sent. */
  readonly enqueuedAt: Date;
  /** The raw claimed row. */
  readonly record: MessageRecord<T>;
  /**
   * Aborted when the handler times out or the worker shuts down; the reason
   * is a `HandlerAbortError` naming why. Pass it to `fetch` and friends.
   */
  readonly signal: AbortSignal;
  /** The worker's postgres.js pool (shared with the worker itself). */
  readonly sql: Sql;
  /** The process environment, read once per worker. */
  readonly env: Readonly<Record<string, string>>;
  /** The validated configuration, deep-frozen. */
  readonly config: ResolvedConfig;
  /** The queue the message came from. */
  readonly queueName: string;
  /** The id of the worker running this handler. */
  readonly workerId: string;
}

/**
 * A message handler. Returning (or resolving) means success and the message
 * is archived; throwing (or rejecting) fails the attempt and the retry
 * policy decides what follows. Throw `NonRetryableError` to dead-letter at
 * once, or `RetryAfterError` to choose the delay.
 *
 * @example A handler with a typed payload
 * ```ts
 * import type { Handler } from "./mod.ts";
 *
 * const handler: Handler<{ to: string }> = async (payload, ctx) => {
 *   await fetch("https://mail.example/send", {
 *     method: "POST",
 *     body: JSON.stringify({ to: payload.to }),
 *     signal: ctx.signal,
 *   });
 * };
 * ```
 */
export type Handler<T = unknown> = (
  payload: T,
  ctx: HandlerContext<T>,
) => unknown;
