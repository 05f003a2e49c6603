/**
 * The one postgres.js pool a worker owns. Port operations and handlers'
 * `ctx.sql` share it, so `connection.maxConnections` bounds both.
 *
 * @module
 */

import postgres from "npm:postgres@3.4.5";
import type { Logger } from "./log.ts";
import { lateCloseSockets, type SocketTarget } from "./socket.ts";

/** The postgres.js client type handlers receive as `ctx.sql`. */
export type Sql = postgres.Sql;

/** A query that was sent (or queued) and can still be cancelled. */
export type PendingQuery<T extends readonly postgres.MaybeRow[]> =
  postgres.PendingQuery<T>;

/** Options of {@linkcode createPool}. */
export interface PoolOptions {
  /** A `postgres://` URL. */
  url: string;
  /** Most connections open at once. */
  maxConnections: number;
  /** The queue, shown in `pg_stat_activity.application_name`. */
  queue: string;
  /** The worker id; its first 8 characters go into the application name. */
  workerId: string;
  /** Receives server NOTICEs (pgmq emits them) at debug level. */
  logger: Logger;
}

/**
 * Creates the worker's pool. Statements are never prepared, because
 * transaction-mode poolers (Supavisor, pgbouncer) cannot keep prepared
 * statements across transactions. int8 columns arrive as strings, which is
 * how message ids stay exact above 2^53. Sockets come from
 * {@linkcode lateCloseSockets}, which works around a postgres.js crash on
 * dropped connections.
 */
export function createPool(options: PoolOptions): Sql {
  ignoreFailedTypeFetches();
  const settings: postgres.Options<Record<string, never>> & SocketOption = {
    prepare: false,
    max: options.maxConnections,
    connection: {
      application_name: `edge_worker:${options.queue}:${
        options.workerId.slice(0, 8)
      }`,
    },
    onnotice: (notice) =>
      options.logger.debug("pg_notice", {
        severity: notice.severity,
        code: notice.code,
        message: notice.message,
      }),
    socket: lateCloseSockets(),
  };
  return postgres(options.url, settings);
}

/**
 * postgres.js accepts a `socket` factory (its README documents it for
 * runtimes without `node:net`), but its type declarations leave it out.
 */
interface SocketOption {
  socket: (target: SocketTarget) => unknown;
}

/** Text unique to postgres.js's internal array-type query. */
const TYPE_FETCH_MARKER = "where a.typcategory = 'A'";
let typeFetchGuarded = false;

/**
 * postgres.js 3.4.x runs an array-type query on every new connection and
 * drops its promise (porsager/postgres#1192, #1205, #1223): when that query
 * fails (terminated backend, pooler refusing), the rejection is unhandled
 * and ends the isolate. The connection itself fails and reconnects as
 * usual, so the rejection carries nothing the worker needs. Only that one
 * statement's rejections are silenced; every other stays fatal as before.
 *
 * TODO(shim): remove once a postgres.js 3.4 release handles the type
 * fetch's rejection itself.
 */
function ignoreFailedTypeFetches(): void {
  if (typeFetchGuarded) return;
  typeFetchGuarded = true;
  globalThis.addEventListener("unhandledrejection", (event) => {
    const query: unknown = (event.reason as { query?: unknown })?.query;
    if (typeof query === "string" && query.includes(TYPE_FETCH_MARKER)) {
      event.preventDefault();
    }
  });
}
