/**
 * Database helpers for tests, the demo and the benchmark: connecting, making
 * throwaway queues, sending messages, reading the queue, archive and
 * dead-letter tables, and waiting for a condition with a deadline instead of
 * sleeping.
 *
 * @module
 */

import postgres from "npm:postgres@3.4.5";

/** A postgres.js client. */
export type Sql = postgres.Sql;

/** Where `build.sh` starts the local Postgres. */
export const DEFAULT_DB_URL = "postgres://postgres@127.0.0.1:54329/edge_worker";

/** Most messages `sendBatch` puts in one `pgmq.send_batch` call. */
const SEND_CHUNK = 1_000;

/** The URL tests use: `EDGE_WORKER_DB_URL`, else {@linkcode DEFAULT_DB_URL}. */
export function databaseUrl(): string {
  return Deno.env.get("EDGE_WORKER_DB_URL") ?? DEFAULT_DB_URL;
}

/**
 * Connects as the worker does (unprepared statements, int8 as strings),
 * with NOTICEs dropped. End it with `sql.end()`.
 */
export function connect(
  url: string = databaseUrl(),
  options: { max?: number; prepare?: boolean } = {},
): Sql {
  return postgres(url, {
    prepare: options.prepare ?? false,
    max: options.max ?? 2,
    onnotice: () => {},
    connection: { application_name: "edge_worker_tests" },
  });
}

/** A queue name no other test uses: `<prefix>_<12 hex digits>`. */
export function uniqueQueueName(prefix = "t"): string {
  const suffix = crypto.randomUUID().replaceAll("-", "").slice(0, 12);
  return checkedQueueName(`${prefix}_${suffix}`);
}

/** Creates a fresh queue and returns its name. */
export async function createQueue(sql: Sql, prefix = "t"): Promise<string> {
  const queue = uniqueQueueName(prefix);
  await sql`select pgmq.create(${queue}::text)`;
  return queue;
}

/**
 * Drops `queue` if it exists and forgets its workers, attempt errors and
 * dead letters, then creates it again, empty.
 */
export async function resetQueue(sql: Sql, queue: string): Promise<void> {
  await dropQueue(sql, queue);
  await sql`select pgmq.create(${checkedQueueName(queue)}::text)`;
}

/** Drops `queue` if it exists, with its `edge_worker` rows. */
export async function dropQueue(sql: Sql, queue: string): Promise<void> {
  checkedQueueName(queue);
  await sql.begin(async (tx) => {
    const [{ exists }] = await tx<{ exists: boolean }[]>`
      select exists (
        select from pgmq.meta where queue_name = ${queue}
      ) as exists`;
    if (exists) await tx`select pgmq.drop_queue(${queue}::text)`;
    await tx`
      delete from edge_worker.attempt_errors where queue_name = ${queue}`;
    await tx`delete from edge_worker.dead_letters where queue_name = ${queue}`;
    await tx`delete from edge_worker.workers where queue_name = ${queue}`;
  });
}

/** Sends one message; returns its id (a decimal string). */
export async function send(
  sql: Sql,
  queue: string,
  message: unknown,
  delaySeconds = 0,
): Promise<string> {
  const [row] = await sql<{ msg_id: string }[]>`
    select pgmq.send(
      ${queue}::text, ${
    JSON.stringify(message)
  }::text::jsonb, ${delaySeconds}::int
    ) as msg_id`;
  return row.msg_id;
}

/** Sends many messages, in order, 1 000 per call; returns their ids. */
export async function sendBatch(
  sql: Sql,
  queue: string,
  messages: readonly unknown[],
  delaySeconds = 0,
): Promise<string[]> {
  const ids: string[] = [];
  for (let start = 0; start < messages.length; start += SEND_CHUNK) {
    const chunk = JSON.stringify(messages.slice(start, start + SEND_CHUNK));
    const rows = await sql<{ msg_id: string }[]>`
      select msg_id from pgmq.send_batch(
        ${queue}::text,
        array(
          select e.value
          from jsonb_array_elements(${chunk}::text::jsonb)
            with ordinality as e(value, position)
          order by e.position
        ),
        ${delaySeconds}::int
      ) as msg_id`;
    ids.push(...rows.map((row) => row.msg_id));
  }
  return ids;
}

/** A row of `pgmq.q_<queue>` or `pgmq.a_<queue>`. */
export interface QueueRow {
  msg_id: string;
  read_ct: number;
  enqueued_at: Date;
  vt: Date;
  message: unknown;
}

/** The messages still in the queue, by id. */
export function queueRows(sql: Sql, queue: string): Promise<QueueRow[]> {
  return sql<QueueRow[]>`
    select msg_id, read_ct, enqueued_at, vt, message
    from ${sql(`pgmq.q_${checkedQueueName(queue)}`)}
    order by msg_id`;
}

/** The archived (succeeded) messages, by id. */
export function archiveRows(
  sql: Sql,
  queue: string,
): Promise<(QueueRow & { archived_at: Date })[]> {
  return sql<(QueueRow & { archived_at: Date })[]>`
    select msg_id, read_ct, enqueued_at, vt, message, archived_at
    from ${sql(`pgmq.a_${checkedQueueName(queue)}`)}
    order by msg_id`;
}

/** A row of `edge_worker.dead_letters`. */
export interface DeadLetterRow {
  msg_id: string;
  read_ct: number;
  enqueued_at: Date;
  dead_lettered_at: Date;
  message: unknown;
  error_name: string | null;
  error_message: string | null;
}

/** The queue's dead letters, by id. */
export function deadLetters(sql: Sql, queue: string): Promise<DeadLetterRow[]> {
  return sql<DeadLetterRow[]>`
    select msg_id, read_ct, enqueued_at, dead_lettered_at, message,
      error_name, error_message
    from edge_worker.dead_letters
    where queue_name = ${queue}
    order by msg_id`;
}

/** A row of `edge_worker.attempt_errors`. */
export interface AttemptErrorRow {
  msg_id: string;
  attempt: number;
  failed_at: Date;
  error_name: string | null;
  error_message: string | null;
  worker_id: string | null;
}

/** The queue's recorded failed attempts, in the order they were written. */
export function attemptErrors(
  sql: Sql,
  queue: string,
): Promise<AttemptErrorRow[]> {
  return sql<AttemptErrorRow[]>`
    select msg_id, attempt, failed_at, error_name, error_message, worker_id
    from edge_worker.attempt_errors
    where queue_name = ${queue}
    order by id`;
}

/** A row of `edge_worker.workers`. */
export interface WorkerRow {
  worker_id: string;
  queue_name: string;
  function_name: string;
  started_at: Date;
  last_heartbeat_at: Date;
  stopped_at: Date | null;
  deprecated_at: Date | null;
  succeeded: string;
  failed: string;
  dead_lettered: string;
  in_flight: number;
  last_error: string | null;
}

/** The workers registered on the queue, oldest first. */
export function workers(sql: Sql, queue: string): Promise<WorkerRow[]> {
  return sql<WorkerRow[]>`
    select worker_id, queue_name, function_name, started_at,
      last_heartbeat_at, stopped_at, deprecated_at, succeeded, failed,
      dead_lettered, in_flight, last_error
    from edge_worker.workers
    where queue_name = ${queue}
    order by started_at`;
}

/** How many messages are in each place. */
export interface QueueCounts {
  /** Still in the queue table (visible or leased). */
  queued: number;
  /** In the archive table (succeeded). */
  archived: number;
  /** In `edge_worker.dead_letters`. */
  deadLettered: number;
  /** Archived messages that have at least one recorded failed attempt. */
  retriedThenArchived: number;
}

/** Counts the queue, archive and dead letters in one statement. */
export async function counts(sql: Sql, queue: string): Promise<QueueCounts> {
  const name = checkedQueueName(queue);
  const [row] = await sql<
    {
      queued: number;
      archived: number;
      dead_lettered: number;
      retried_then_archived: number;
    }[]
  >`
    select
      (select count(*) from ${sql(`pgmq.q_${name}`)})::int as queued,
      (select count(*) from ${sql(`pgmq.a_${name}`)})::int as archived,
      (select count(*) from edge_worker.dead_letters
        where queue_name = ${name})::int as dead_lettered,
      (select count(*) from ${sql(`pgmq.a_${name}`)} as a
        where exists (
          select from edge_worker.attempt_errors as e
          where e.queue_name = ${name} and e.msg_id = a.msg_id
        ))::int as retried_then_archived`;
  return {
    queued: row.queued,
    archived: row.archived,
    deadLettered: row.dead_lettered,
    retriedThenArchived: row.retried_then_archived,
  };
}

/** Options of {@linkcode waitFor}. */
export interface WaitOptions {
  /** Give up after this long, in ms; default 10 000. */
  timeoutMs?: number;
  /** Pause between checks, in ms; default 50. */
  intervalMs?: number;
  /** What is awaited, for the timeout error. */
  description?: string;
}

/**
 * Calls `check` until it returns something other than `undefined`, `null`
 * or `false`, and returns that. Rejects after `timeoutMs` with the
 * description and the last value seen, so a failing test says what it was
 * waiting for.
 *
 * @example Waiting for a queue to drain
 * ```ts
 * import { connect, counts, waitFor } from "./db.ts";
 *
 * const sql = connect();
 * await waitFor(async () => (await counts(sql, "demo")).queued === 0, {
 *   description: "demo queue drained",
 * });
 * ```
 */
export async function waitFor<T>(
  check: () => T | Promise<T>,
  options: WaitOptions = {},
): Promise<Exclude<T, undefined | null | false>> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const intervalMs = options.intervalMs ?? 50;
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  while (true) {
    last = await check();
    if (last !== undefined && last !== null && last !== false) {
      return last as Exclude<T, undefined | null | false>;
    }
    if (Date.now() >= deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${
          options.description ?? "a condition"
        } (last value: ${String(last)})`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** Throws unless `queue` is a name pgmq and our SQL can use as is. */
function checkedQueueName(queue: string): string {
  if (!/^[a-z_][a-z0-9_]{0,46}$/.test(queue)) {
    throw new RangeError(
      `queue name ${JSON.stringify(queue)} is not allowed; expected 1 to 47 ` +
        "characters of a-z, 0-9 and _, not starting with a digit",
    );
  }
  return queue;
}
