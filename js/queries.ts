/**
 * Every SQL statement the worker runs, named after the port operation that
 * uses it. Parameters are always bound, never spliced, and every one is cast
 * because pgmq 1.11 overloads its functions. The `edge_worker.*` functions
 * are defined in `supabase/migrations` and described in `docs/boundary.md`.
 *
 * @module
 */

import type { WorkerStats } from "./boundary.ts";

/** `$1` queue. Creates the queue if absent (idempotent in pgmq). */
export const ENSURE_QUEUE = "select pgmq.create($1::text)";

/**
 * `$1` queue, `$2` visibility timeout (s), `$3` quantity, `$4` longest poll
 * (s), `$5` poll interval (ms). Named columns only: newer pgmq versions add
 * `headers` and `last_read_at`.
 */
export const CLAIM = "select msg_id, read_ct, enqueued_at, vt, message " +
  "from pgmq.read_with_poll($1::text, $2::int, $3::int, $4::int, $5::int)";

/** `$1` worker id, `$2` queue, `$3` function name. */
export const REGISTER =
  "select edge_worker.register_worker($1::uuid, $2::text, $3::text)";

/** The heartbeat's arguments, in {@linkcode heartbeatParameters}' order. */
const HEARTBEAT_ARGS =
  "$1::uuid, $2::bigint, $3::bigint, $4::bigint, $5::bigint, $6::int, $7::text";

/** Stores the counters; returns `deprecated`. */
export const HEARTBEAT =
  `select edge_worker.heartbeat(${HEARTBEAT_ARGS}) as deprecated`;

/**
 * The final heartbeat (parameters as {@linkcode HEARTBEAT}), then sets
 * `stopped_at` (idempotent): one statement, so the counters a short-lived
 * worker reached are never lost to a stop that comes before its first beat.
 */
export const STOP = `select edge_worker.heartbeat(${HEARTBEAT_ARGS}), ` +
  "edge_worker.stop_worker($1::uuid)";

/**
 * The parameters of {@linkcode HEARTBEAT} and {@linkcode STOP}: worker id,
 * succeeded, failed, dead-lettered, stale, in flight, last error.
 */
export function heartbeatParameters(
  workerId: string,
  stats: WorkerStats,
): (string | number | null)[] {
  return [
    workerId,
    stats.succeeded,
    stats.failed,
    stats.deadLettered,
    stats.stale,
    stats.inFlight,
    stats.lastError,
  ];
}

/** `$1` queue, `$2` ids, `$3` read counts. Returns the archived ids. */
export const ARCHIVE = "select msg_id from edge_worker.archive(" +
  "$1::text, $2::bigint[], $3::int[]) as msg_id";

/**
 * `$1` queue, `$2` ids, `$3` read counts, `$4` delays (s), `$5` error names,
 * `$6` error messages, `$7` worker id. Returns the retried ids.
 */
export const RETRY = "select msg_id from edge_worker.retry(" +
  "$1::text, $2::bigint[], $3::int[], $4::int[], $5::text[], $6::text[], " +
  "$7::uuid) as msg_id";

/**
 * `$1` queue, `$2` ids, `$3` read counts, `$4` error names, `$5` error
 * messages, `$6` worker id. Returns the dead-lettered ids.
 */
export const DEAD_LETTER = "select msg_id from edge_worker.dead_letter(" +
  "$1::text, $2::bigint[], $3::int[], $4::text[], $5::text[], $6::uuid" +
  ") as msg_id";

/** `$1` queue, `$2` ids, `$3` read counts, `$4` lease (s). */
export const EXTEND = "select msg_id from edge_worker.extend(" +
  "$1::text, $2::bigint[], $3::int[], $4::int) as msg_id";

/** `$1` queue, `$2` ids, `$3` read counts. Returns the released ids. */
export const RELEASE = "select msg_id from edge_worker.release(" +
  "$1::text, $2::bigint[], $3::int[]) as msg_id";
