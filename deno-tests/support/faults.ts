/**
 * Database faults for the fault tests and the chaos runner: where the local
 * Postgres and its two pgbouncers listen, a client that survives the faults
 * it watches, terminating a worker's backends, restarting Postgres through
 * `EDGE_WORKER_PG_CTL`, and sampling how many server connections each
 * worker holds.
 *
 * A worker's connections are recognised by the `application_name` its pool
 * sets (`js/pool.ts`): `edge_worker:<queue>:<first 8 characters of the
 * worker id>`. Behind pgbouncer the server connections carry the name of
 * the client that used them last, so the same queries work there.
 *
 * @module
 */

import postgres from "npm:postgres@3.4.5";
import { lateCloseSockets } from "../../js/socket.ts";
import { databaseUrl, type Sql } from "./db.ts";

/** `application_name` of the fault tooling's own connections. */
export const FAULTS_APPLICATION_NAME = "edge_worker_faults";

/** Where the local database and its poolers listen, as `build.sh` says. */
export interface DatabaseTargets {
  /** Postgres itself. */
  direct: string;
  /** pgbouncer in transaction mode. */
  pgbouncerTransaction: string;
  /** pgbouncer in session mode. */
  pgbouncerSession: string;
  /** `scripts/pg-ctl.sh`, which starts, stops and restarts Postgres. */
  pgCtl: string;
}

/**
 * Reads the targets `build.sh test` (or `build.sh db`) exports.
 *
 * @throws {Error} naming the variable that is missing, since a fault test
 *   without its pooler or its restart script would prove nothing.
 */
export function databaseTargets(): DatabaseTargets {
  return {
    direct: databaseUrl(),
    pgbouncerTransaction: requiredEnv("EDGE_WORKER_PGBOUNCER_TX_URL"),
    pgbouncerSession: requiredEnv("EDGE_WORKER_PGBOUNCER_SESSION_URL"),
    pgCtl: requiredEnv("EDGE_WORKER_PG_CTL"),
  };
}

function requiredEnv(name: string): string {
  const value = Deno.env.get(name);
  if (value === undefined || value === "") {
    throw new Error(
      `${name} is not set; run through ./build.sh test, or export what ` +
        "./build.sh db prints",
    );
  }
  return value;
}

/**
 * Settles like `promise`, or rejects after `ms` if it has not settled by
 * then. A query on a connection that a fault left wedged (postgres.js can
 * lose track of a write when its socket closes) never settles and keeps no
 * timer; awaiting one unguarded would end the whole Deno program with "Top-
 * level await promise never resolved".
 */
export function withTimeout<T>(
  promise: Promise<T>,
  ms: number,
  what: string,
): Promise<T> {
  let timer: number | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what} did not answer within ${ms} ms`)),
      ms,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** How long one connection sample may take before it counts as failed. */
const SAMPLE_TIMEOUT_MS = 2_000;

/**
 * A client for watching and injecting faults: unprepared statements, int8
 * as strings, and the worker's late-closing sockets, so that a restart of
 * Postgres fails its queries instead of crashing the process
 * (`js/socket.ts` says why). Queries fail while the server is down and
 * succeed again once it is back.
 */
export function connectObserver(url: string = databaseUrl(), max = 2): Sql {
  const options: postgres.Options<Record<string, never>> & {
    socket: ReturnType<typeof lateCloseSockets>;
  } = {
    prepare: false,
    max,
    onnotice: () => {},
    connect_timeout: 5,
    connection: { application_name: FAULTS_APPLICATION_NAME },
    socket: lateCloseSockets(),
  };
  return postgres(url, options);
}

/** The `application_name` prefix of every worker on `queue`. */
export function queueApplicationPrefix(queue: string): string {
  return `edge_worker:${queue}:`;
}

/** The `application_name` of one worker's connections. */
export function workerApplicationName(queue: string, workerId: string): string {
  return `${queueApplicationPrefix(queue)}${workerId.slice(0, 8)}`;
}

/**
 * Terminates every server backend of the workers on `queue` (or only those
 * whose last statement contains `statement`) with `pg_terminate_backend`.
 * Returns how many were terminated.
 */
export async function terminateBackends(
  sql: Sql,
  queue: string,
  statement = "",
): Promise<number> {
  // strpos(query, '') is 1, so an empty `statement` matches every backend.
  const rows = await sql<{ terminated: boolean }[]>`
    select pg_terminate_backend(pid) as terminated
    from pg_stat_activity
    where starts_with(application_name, ${queueApplicationPrefix(queue)})
      and backend_type = 'client backend'
      and strpos(query, ${statement}) > 0`;
  return rows.filter((row) => row.terminated).length;
}

/** A backend of a worker, as `pg_stat_activity` shows it. */
export interface WorkerBackend {
  pid: number;
  applicationName: string;
  state: string | null;
  waitEventType: string | null;
  query: string;
}

/** The backends of the workers on `queue` right now. */
export async function workerBackends(
  sql: Sql,
  queue: string,
): Promise<WorkerBackend[]> {
  const rows = await sql<
    {
      pid: number;
      application_name: string;
      state: string | null;
      wait_event_type: string | null;
      query: string;
    }[]
  >`
    select pid, application_name, state, wait_event_type, query
    from pg_stat_activity
    where starts_with(application_name, ${queueApplicationPrefix(queue)})
      and backend_type = 'client backend'
    order by pid`;
  return rows.map((row) => ({
    pid: row.pid,
    applicationName: row.application_name,
    state: row.state,
    waitEventType: row.wait_event_type,
    query: row.query,
  }));
}

/** What {@linkcode restartPostgres} measured. */
export interface RestartReport {
  /** From the start of the restart until the server accepted connections. */
  elapsedMs: number;
}

/**
 * Restarts Postgres with `pg-ctl.sh restart` (a fast shutdown: every
 * session ends, running transactions roll back) and waits until it accepts
 * connections again.
 *
 * @throws {Error} with the script's output when the restart failed.
 */
export async function restartPostgres(
  pgCtl: string = databaseTargets().pgCtl,
): Promise<RestartReport> {
  const started = performance.now();
  const output = await new Deno.Command(pgCtl, {
    args: ["restart"],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!output.success) {
    const decoder = new TextDecoder();
    throw new Error(
      `${pgCtl} restart exited with ${output.code}: ` +
        decoder.decode(output.stdout) + decoder.decode(output.stderr),
    );
  }
  return { elapsedMs: performance.now() - started };
}

/**
 * Watches how many server connections each worker on a queue holds, by
 * sampling `pg_stat_activity` every `intervalMs`. A sample that fails (the
 * server is restarting) is skipped and counted.
 */
export class ConnectionSampler {
  readonly #sql: Sql;
  readonly #queue: string;
  readonly #intervalMs: number;
  readonly #maxByName = new Map<string, number>();
  #samples = 0;
  #failedSamples = 0;
  #running: Promise<void> | undefined;
  #stopped = false;

  constructor(sql: Sql, queue: string, intervalMs = 50) {
    this.#sql = sql;
    this.#queue = queue;
    this.#intervalMs = intervalMs;
  }

  /** Starts sampling in the background. */
  start(): this {
    this.#running ??= this.#loop();
    return this;
  }

  /** Stops sampling and waits for the sample in progress. */
  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#running;
  }

  /** Most connections any one worker held in a sample. */
  get max(): number {
    return Math.max(0, ...this.#maxByName.values());
  }

  /** Most connections `applicationName` held in a sample. */
  maxFor(applicationName: string): number {
    return this.#maxByName.get(applicationName) ?? 0;
  }

  /** Samples taken, and samples that failed. */
  get samples(): { taken: number; failed: number } {
    return { taken: this.#samples, failed: this.#failedSamples };
  }

  /** Takes one sample now; returns the count per application name. */
  async sampleOnce(): Promise<Map<string, number>> {
    const rows = await this.#sql<{ name: string; connections: number }[]>`
      select application_name as name, count(*)::int as connections
      from pg_stat_activity
      where starts_with(application_name, ${
      queueApplicationPrefix(this.#queue)
    })
        and backend_type = 'client backend'
      group by application_name`;
    const counts = new Map<string, number>();
    for (const row of rows) {
      counts.set(row.name, row.connections);
      const seen = this.#maxByName.get(row.name) ?? 0;
      this.#maxByName.set(row.name, Math.max(seen, row.connections));
    }
    this.#samples++;
    return counts;
  }

  async #loop(): Promise<void> {
    while (!this.#stopped) {
      try {
        await withTimeout(
          this.sampleOnce(),
          SAMPLE_TIMEOUT_MS,
          "a connection sample",
        );
      } catch {
        this.#failedSamples++;
      }
      await new Promise((resolve) => setTimeout(resolve, this.#intervalMs));
    }
  }
}
