/**
 * The chaos run (`./build.sh chaos`; a smaller one in `./build.sh test`):
 * a worker process drains a queue while everything around it fails, once
 * connected to Postgres directly and once through pgbouncer in transaction
 * mode. During each run:
 *
 * - a share of handler calls fail (they are retried, then dead-lettered);
 * - the worker's backends are terminated with `pg_terminate_backend`
 *   every few seconds;
 * - the worker's Deno process is SIGKILLed every so often and started
 *   again at once;
 * - Postgres itself is restarted once, when half the messages are done.
 *
 * The worker is `scripts/chaos_worker.ts`, whose handler records each
 * successful run in `chaos_runs` before it returns. Afterwards SQL counts
 * what happened to every message sent. The run passes when nothing was
 * lost, no success was recorded twice (fencing), the queue drained, no
 * worker held more connections than its pool allows, handlers ran twice
 * only where a kill came between success and archive, and the worker never
 * died or hung by itself.
 *
 * Prints a summary and one line `N passed, N failed` (one check per rule
 * and mode), writes the figures to `target/chaos/latest.json` (the `small`
 * scenario: `target/chaos/small.json`) and each worker's output to
 * `target/chaos/<scenario>-<mode>-worker.log`. Exits 1 when a check
 * failed.
 *
 *   deno run --allow-all scripts/chaos.ts [full|small] [MODE]
 *
 * MODE (`direct` or `pgbouncer_transaction`) runs only that mode.
 *
 * Needs what `./build.sh db` exports: `EDGE_WORKER_DB_URL`,
 * `EDGE_WORKER_PGBOUNCER_TX_URL` and `EDGE_WORKER_PG_CTL` (the run restarts
 * that server, so point it at a cluster nobody else is using).
 *
 * @module
 */

import {
  connect,
  resetQueue,
  sendBatch,
  type Sql,
} from "../deno-tests/support/db.ts";
import {
  ConnectionSampler,
  connectObserver,
  databaseTargets,
  restartPostgres,
  terminateBackends,
  withTimeout,
} from "../deno-tests/support/faults.ts";
import { readLines } from "../deno-tests/support/edge_host.ts";
import {
  CHAOS_WORKER_COMPONENT,
  type HandlerSettings,
} from "./chaos_worker.ts";

/** How much work, and which faults how often. */
interface Scenario {
  /** Messages sent before the worker starts. */
  messages: number;
  /** Period of `pg_terminate_backend` on the worker's backends, in ms. */
  terminateEveryMs: number;
  /** Period of SIGKILL on the worker process, in ms. */
  killEveryMs: number;
  /** Give up waiting for the queue to drain after this long, in ms. */
  drainTimeoutMs: number;
  /** Where the figures go, in `target/chaos/`. */
  resultFile: string;
  /** What the handler does. */
  handler: HandlerSettings;
  /** The worker's configuration (the URL comes from the environment). */
  worker: {
    queue: { batchSize: number };
    concurrency: { maxConcurrent: number };
    connection: { maxConnections: number };
    polling: { maxPollSeconds: number };
    lease: { visibilityTimeoutSeconds: number };
    retry: {
      limit: number;
      strategy: "fixed";
      delaySeconds: number;
    };
    lifecycle: { heartbeatIntervalSeconds: number };
    logging: { level: "info" };
  };
}

/** The worker's settings shared by both scenarios, with the lease given. */
function workerConfig(visibilityTimeoutSeconds: number): Scenario["worker"] {
  return {
    queue: { batchSize: 10 },
    concurrency: { maxConcurrent: 10 },
    connection: { maxConnections: 4 },
    polling: { maxPollSeconds: 2 },
    lease: { visibilityTimeoutSeconds },
    // Two retries at a 10% failure rate dead-letter about one message in a
    // thousand, so both endings of a message are exercised.
    retry: { limit: 2, strategy: "fixed", delaySeconds: 1 },
    lifecycle: { heartbeatIntervalSeconds: 2 },
    logging: { level: "info" },
  };
}

/** 10% of handler calls fail; each call takes 10 to 50 ms. */
const HANDLER: HandlerSettings = {
  failRate: 0.1,
  minDurationMs: 10,
  maxDurationMs: 50,
};

/** `full` for `./build.sh chaos`, `small` for `./build.sh test`. */
const SCENARIOS: Readonly<Record<string, Scenario>> = {
  full: {
    messages: 20_000,
    terminateEveryMs: 2_000,
    killEveryMs: 15_000,
    drainTimeoutMs: 600_000,
    resultFile: "latest.json",
    handler: HANDLER,
    worker: workerConfig(10),
  },
  small: {
    messages: 2_000,
    terminateEveryMs: 500,
    killEveryMs: 4_000,
    drainTimeoutMs: 180_000,
    resultFile: "small.json",
    handler: HANDLER,
    worker: workerConfig(5),
  },
};

/** A way of reaching the database, and the queue its run uses. */
interface Mode {
  name: "direct" | "pgbouncer_transaction";
  url: string;
  queue: string;
}

/** The figures of one mode, as written to the JSON file. */
interface Figures {
  /** Messages sent. */
  sent: number;
  /** Messages archived (distinct ids). */
  succeeded: number;
  /** Messages in `edge_worker.dead_letters`. */
  dead_lettered: number;
  /** Sent messages found nowhere: not queued, archived or dead-lettered. */
  lost: number;
  /** Messages archived twice, or archived and dead-lettered. */
  succeeded_twice: number;
  /** Messages that ran successfully in two or more worker processes. */
  rerun_after_kill: number;
  /** Most server connections one worker held in any sample. */
  max_connections: number;
  /** The pool size the worker was configured with. */
  connection_cap: number;
  /** Messages still in the queue table at the end. */
  queued_at_end: number;
  /** Whether the queue was empty before the drain timeout. */
  drained: boolean;
  /** Messages that ran successfully twice inside one worker process. */
  rerun_within_worker: number;
  /** Archived messages with no successful run recorded. */
  archived_without_run: number;
  /** Messages dead-lettered after at least one successful run. */
  dead_lettered_after_run: number;
  /** Failed attempts recorded in `edge_worker.attempt_errors`. */
  failed_attempts: number;
  /** SIGKILLs sent to the worker process. */
  kills: number;
  /**
   * Handlers in flight when the worker was killed, summed over the kills:
   * running, or succeeded with the archive not yet applied.
   */
  handlers_in_flight_at_kills: number;
  /** Of those, the ones that had succeeded (the candidates for a rerun). */
  unarchived_at_kills: number;
  /** Backends ended by `pg_terminate_backend`. */
  backends_terminated: number;
  /** Postgres restarts, and how long the last one took. */
  postgres_restarts: number;
  postgres_restart_ms: number | null;
  /** Worker processes that exited without being killed or stopped. */
  unexpected_exits: number;
  /** Handlers in flight in those processes when they exited, summed. */
  handlers_in_flight_at_crashes: number;
  /** Of those, the ones that had succeeded. */
  unarchived_at_crashes: number;
  /** Whether the last worker stopped by itself after SIGTERM. */
  stopped_cleanly: boolean;
  /** Connection samples taken, and those that failed (server down). */
  connection_samples: number;
  connection_samples_failed: number;
  /** Wall-clock time of the run, in seconds. */
  duration_s: number;
}

/** How long the last worker may take to stop after SIGTERM. */
const STOP_TIMEOUT_MS = 15_000;
/** How often the runner checks progress and drain. */
const PROGRESS_CHECK_MS = 250;
/** Longest wait for one query of the runner's own during the faults. */
const QUERY_TIMEOUT_MS = 5_000;
/** Pause before a worker that died by itself is started again. */
const RESPAWN_DELAY_MS = 1_000;
/** How often connections are sampled. */
const SAMPLE_INTERVAL_MS = 50;

const ROOT = new URL("../", import.meta.url);
/** Where the figures and the worker logs go, relative to `ROOT`. */
const CHAOS_DIR = "target/chaos/";
const WORKER_SCRIPT = new URL("./chaos_worker.ts", import.meta.url);

/** Resolves after `ms`, or at once when `signal` aborts. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
  });
}

/**
 * Counts the successful runs a dead worker recorded whose message it never
 * archived: still in the queue with the read count of that run.
 */
type UnarchivedCounter = (workerId: string) => Promise<number>;

/** What a worker process had in hand when it ended abruptly. */
interface InFlight {
  /** Handlers that had started and not yet returned. */
  running: number;
  /** Handlers that had returned successfully, their archive not applied. */
  unarchived: number;
}

/**
 * One worker process after another: starts `chaos_worker.ts`, kills it and
 * starts the next one, and counts processes that ended on their own. For
 * every process that ended abruptly it notes the handlers it had in flight:
 * the ones running (from its last `progress` line) plus the ones that had
 * succeeded but whose archive had not been applied (from the database, once
 * the process is gone and nothing can archive them any more). Every line
 * the processes print goes to the log file.
 */
class WorkerSupervisor {
  readonly #env: Record<string, string>;
  readonly #log: Deno.FsFile;
  readonly #countUnarchived: UnarchivedCounter;
  readonly #encoder = new TextEncoder();
  readonly #measuring: Promise<void>[] = [];
  #child: Deno.ChildProcess | undefined;
  #exited: Promise<Deno.CommandStatus> | undefined;
  #reading: Promise<unknown> | undefined;
  #expectingExit = false;
  #respawn: number | undefined;
  #workerId: string | undefined;
  #running = 0;
  #generation = 0;
  kills = 0;
  unexpectedExits = 0;
  readonly atKills: InFlight = { running: 0, unarchived: 0 };
  readonly atCrashes: InFlight = { running: 0, unarchived: 0 };

  constructor(
    env: Record<string, string>,
    log: Deno.FsFile,
    countUnarchived: UnarchivedCounter,
  ) {
    this.#env = env;
    this.#log = log;
    this.#countUnarchived = countUnarchived;
  }

  /** Starts a worker process. */
  start(): void {
    this.#generation++;
    const generation = this.#generation;
    this.#expectingExit = false;
    this.#running = 0;
    this.#workerId = undefined;
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-net",
        "--allow-env",
        "--no-prompt",
        WORKER_SCRIPT.pathname,
      ],
      cwd: ROOT.pathname,
      env: { ...this.#env, NO_COLOR: "1", RUST_BACKTRACE: "0" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#child = child;
    this.#write(`# worker process ${generation} (pid ${child.pid}) started`);
    this.#reading = Promise.all([
      readLines(child.stdout, (line) => this.#onLine(line, generation)),
      readLines(child.stderr, (line) => this.#onLine(line, generation)),
    ]);
    this.#exited = child.status.then((status) => {
      this.#write(
        `# worker process ${generation} exited: code ${status.code}` +
          (status.signal ? `, signal ${status.signal}` : ""),
      );
      if (!this.#expectingExit && generation === this.#generation) {
        // The worker died by itself: count it and start another after a
        // pause, as a platform would, so the run can still finish.
        this.unexpectedExits++;
        this.#noteInFlight(this.atCrashes);
        this.#respawn = setTimeout(() => {
          this.#respawn = undefined;
          this.start();
        }, RESPAWN_DELAY_MS);
      }
      return status;
    });
  }

  /** SIGKILLs the worker process, waits for it, and starts the next. */
  async killAndRestart(): Promise<void> {
    const child = this.#child;
    // Nothing to kill while a worker that died is waiting to respawn.
    if (child === undefined || this.#respawn !== undefined) return;
    this.#expectingExit = true;
    this.kills++;
    this.#write(`# SIGKILL with ${this.#running} handlers running`);
    try {
      child.kill("SIGKILL");
    } catch {
      // It exited a moment ago; the status below says how.
    }
    await this.#exited;
    await this.#reading;
    this.#noteInFlight(this.atKills);
    this.start();
  }

  /**
   * Sends SIGTERM and waits for the worker to drain and exit. Returns
   * whether it exited by itself within `timeoutMs`; if not, it is killed.
   */
  async stop(timeoutMs: number): Promise<boolean> {
    const child = this.#child;
    this.#expectingExit = true;
    let exitedInTime = true;
    if (this.#respawn !== undefined) {
      // The last worker died by itself; that is counted already.
      clearTimeout(this.#respawn);
      this.#respawn = undefined;
      exitedInTime = false;
    } else if (child !== undefined) {
      this.#write("# SIGTERM");
      try {
        child.kill("SIGTERM");
      } catch {
        // Already gone.
      }
      const waited = new AbortController();
      const timeout = sleep(timeoutMs, waited.signal).then(() => undefined);
      const status = await Promise.race([this.#exited, timeout]);
      waited.abort();
      if (status === undefined) {
        this.#write(`# no exit within ${timeoutMs} ms of SIGTERM: SIGKILL`);
        child.kill("SIGKILL");
        await this.#exited;
        exitedInTime = false;
      }
      await this.#reading;
    }
    await Promise.all(this.#measuring);
    return exitedInTime;
  }

  /** Adds what the process that just ended had in flight to `into`. */
  #noteInFlight(into: InFlight): void {
    into.running += this.#running;
    const workerId = this.#workerId;
    if (workerId === undefined) return;
    this.#measuring.push(
      this.#countUnarchived(workerId).then((unarchived) => {
        into.unarchived += unarchived;
        this.#write(
          `# worker ${workerId} ended with ${unarchived} successful runs ` +
            "not archived",
        );
      }),
    );
  }

  #write(line: string): void {
    this.#log.writeSync(this.#encoder.encode(`${line}\n`));
  }

  #onLine(line: string, generation: number): void {
    if (line.includes(`"component":"${CHAOS_WORKER_COMPONENT}"`)) {
      const fields = JSON.parse(line) as {
        event: string;
        running?: number;
        worker_id?: string;
      };
      const current = generation === this.#generation;
      if (fields.event === "progress") {
        if (current) this.#running = fields.running ?? 0;
        return;
      }
      if (fields.event === "started" && current) {
        this.#workerId = fields.worker_id;
      }
    }
    this.#write(line);
  }
}

/**
 * Runs `action` every `periodMs` until `signal` aborts. A fault that fails
 * (its query meets the server while it restarts) is skipped.
 */
async function every(
  periodMs: number,
  signal: AbortSignal,
  action: () => Promise<void>,
): Promise<void> {
  while (true) {
    await sleep(periodMs, signal);
    if (signal.aborted) return;
    try {
      await action();
    } catch {
      // Skipped; the next period tries again.
    }
  }
}

/** Messages archived or dead-lettered so far, and messages still queued. */
async function progress(
  sql: Sql,
  queue: string,
): Promise<{ finished: number; queued: number }> {
  const [row] = await sql<{ finished: number; queued: number }[]>`
    select
      (select count(*) from ${sql(`pgmq.a_${queue}`)})::int
        + (select count(*) from edge_worker.dead_letters
          where queue_name = ${queue})::int as finished,
      (select count(*) from ${sql(`pgmq.q_${queue}`)})::int as queued`;
  return row;
}

/** Creates `chaos_runs` if needed and forgets the queue's earlier runs. */
async function prepareRuns(sql: Sql, queue: string): Promise<void> {
  await sql`
    create table if not exists chaos_runs (
      queue_name text not null,
      msg_id bigint not null,
      read_ct int not null,
      worker_id uuid not null,
      run_at timestamptz not null default clock_timestamp()
    )`;
  await sql`delete from chaos_runs where queue_name = ${queue}`;
}

/** How often a count is tried while the server may be restarting. */
const COUNT_ATTEMPTS = 20;

/** An {@linkcode UnarchivedCounter} for `queue`, retried through restarts. */
function unarchivedCounter(sql: Sql, queue: string): UnarchivedCounter {
  return async (workerId) => {
    for (let attempt = 1;; attempt++) {
      try {
        const [row] = await withTimeout(
          sql<{ unarchived: number }[]>`
          select count(*)::int as unarchived
          from chaos_runs as r
          join ${sql(`pgmq.q_${queue}`)} as q
            on q.msg_id = r.msg_id and q.read_ct = r.read_ct
          where r.queue_name = ${queue}
            and r.worker_id = ${workerId}::uuid
            and not exists (
              select from edge_worker.attempt_errors as e
              where e.queue_name = ${queue}
                and e.msg_id = r.msg_id
                and e.attempt = r.read_ct
            )`,
          QUERY_TIMEOUT_MS,
          "counting unarchived runs",
        );
        return row.unarchived;
      } catch (error) {
        if (attempt >= COUNT_ATTEMPTS) throw error;
        await sleep(PROGRESS_CHECK_MS);
      }
    }
  };
}

/** What SQL says happened to every message sent. */
async function countOutcomes(
  sql: Sql,
  queue: string,
  ids: string[],
): Promise<
  Pick<
    Figures,
    | "sent"
    | "succeeded"
    | "dead_lettered"
    | "lost"
    | "succeeded_twice"
    | "rerun_after_kill"
    | "queued_at_end"
    | "rerun_within_worker"
    | "archived_without_run"
    | "dead_lettered_after_run"
    | "failed_attempts"
  >
> {
  const archive = sql(`pgmq.a_${queue}`);
  const queued = sql(`pgmq.q_${queue}`);
  // A run counts as a success unless the same attempt has a recorded
  // failure: the handler's insert can commit and then lose its answer to a
  // terminated backend, which fails the attempt after all.
  const [row] = await sql<Record<string, number>[]>`
    with sent as (
      select unnest(${ids}::bigint[]) as msg_id
    ),
    archived as (
      select msg_id, count(*) as copies from ${archive} group by msg_id
    ),
    dead as (
      select msg_id from edge_worker.dead_letters where queue_name = ${queue}
    ),
    runs as (
      select r.msg_id, r.worker_id
      from chaos_runs as r
      where r.queue_name = ${queue}
        and not exists (
          select from edge_worker.attempt_errors as e
          where e.queue_name = ${queue}
            and e.msg_id = r.msg_id
            and e.attempt = r.read_ct
        )
    ),
    runs_per_msg as (
      select msg_id, count(*) as runs, count(distinct worker_id) as workers
      from runs
      group by msg_id
    )
    select
      (select count(*) from sent)::int as sent,
      (select count(*) from archived)::int as succeeded,
      (select count(*) from dead)::int as dead_lettered,
      (select count(*) from ${queued})::int as queued_at_end,
      (select count(*) from sent as s
        where not exists (select from archived as a where a.msg_id = s.msg_id)
          and not exists (select from dead as d where d.msg_id = s.msg_id)
          and not exists (select from ${queued} as q where q.msg_id = s.msg_id)
      )::int as lost,
      (select count(*) from archived as a
        where a.copies > 1
          or exists (select from dead as d where d.msg_id = a.msg_id)
      )::int as succeeded_twice,
      (select count(*) from runs_per_msg where workers > 1)::int
        as rerun_after_kill,
      (select count(*) from runs_per_msg where runs > workers)::int
        as rerun_within_worker,
      (select count(*) from archived as a
        where not exists (select from runs as r where r.msg_id = a.msg_id)
      )::int as archived_without_run,
      (select count(*) from dead as d
        where exists (select from runs as r where r.msg_id = d.msg_id)
      )::int as dead_lettered_after_run,
      (select count(*) from edge_worker.attempt_errors
        where queue_name = ${queue})::int as failed_attempts`;
  return {
    sent: row.sent,
    succeeded: row.succeeded,
    dead_lettered: row.dead_lettered,
    lost: row.lost,
    succeeded_twice: row.succeeded_twice,
    rerun_after_kill: row.rerun_after_kill,
    queued_at_end: row.queued_at_end,
    rerun_within_worker: row.rerun_within_worker,
    archived_without_run: row.archived_without_run,
    dead_lettered_after_run: row.dead_lettered_after_run,
    failed_attempts: row.failed_attempts,
  };
}

/** Runs the scenario in one mode and returns its figures. */
async function runMode(
  scenarioName: string,
  scenario: Scenario,
  mode: Mode,
  directUrl: string,
): Promise<Figures> {
  const started = performance.now();
  // Setup and the final count run while the server is up, on a plain
  // client; the observer watches through the faults.
  const setup = connect(directUrl, { max: 1 });
  const observer = connectObserver(directUrl, 3);
  // The drain check has a client of its own, replaced when it stops
  // answering, so that the run always learns when the queue is empty.
  let watcher = connectObserver(directUrl, 1);
  const logPath = new URL(
    `${CHAOS_DIR}${scenarioName}-${mode.name}-worker.log`,
    ROOT,
  );
  const log = await Deno.open(logPath, {
    write: true,
    create: true,
    truncate: true,
  });
  try {
    await resetQueue(setup, mode.queue);
    await prepareRuns(setup, mode.queue);
    const ids = await sendBatch(
      setup,
      mode.queue,
      Array.from({ length: scenario.messages }, (_, n) => ({ n })),
    );
    await setup.end();

    const sampler = new ConnectionSampler(
      observer,
      mode.queue,
      SAMPLE_INTERVAL_MS,
    ).start();
    const supervisor = new WorkerSupervisor(
      {
        EDGE_WORKER_DB_URL: mode.url,
        CHAOS_WORKER_CONFIG: JSON.stringify({
          ...scenario.worker,
          queue: { ...scenario.worker.queue, name: mode.queue },
        }),
        CHAOS_HANDLER: JSON.stringify(scenario.handler),
      },
      log,
      unarchivedCounter(observer, mode.queue),
    );
    supervisor.start();

    const faults = new AbortController();
    let backendsTerminated = 0;
    const terminating = every(
      scenario.terminateEveryMs,
      faults.signal,
      async () => {
        backendsTerminated += await withTimeout(
          terminateBackends(observer, mode.queue),
          QUERY_TIMEOUT_MS,
          "terminating backends",
        );
      },
    );
    const killing = every(
      scenario.killEveryMs,
      faults.signal,
      () => supervisor.killAndRestart(),
    );

    let restartMs: number | null = null;
    let restarts = 0;
    let drained = false;
    const deadline = Date.now() + scenario.drainTimeoutMs;
    while (Date.now() < deadline) {
      await sleep(PROGRESS_CHECK_MS);
      let now;
      try {
        now = await withTimeout(
          progress(watcher, mode.queue),
          QUERY_TIMEOUT_MS,
          "the progress check",
        );
      } catch {
        // A wedged client is left behind, not reused.
        watcher.end({ timeout: 0 }).catch(() => {});
        watcher = connectObserver(directUrl, 1);
        continue;
      }
      if (now.queued === 0) {
        drained = true;
        break;
      }
      if (restarts === 0 && now.finished >= scenario.messages / 2) {
        restarts++;
        restartMs = (await restartPostgres()).elapsedMs;
      }
    }

    faults.abort();
    await Promise.all([terminating, killing]);
    const stoppedCleanly = await supervisor.stop(STOP_TIMEOUT_MS);
    await sampler.stop();

    const check = connect(directUrl, { max: 1 });
    try {
      const outcomes = await countOutcomes(check, mode.queue, ids);
      return {
        ...outcomes,
        max_connections: sampler.max,
        connection_cap: scenario.worker.connection.maxConnections,
        drained,
        kills: supervisor.kills,
        handlers_in_flight_at_kills: supervisor.atKills.running +
          supervisor.atKills.unarchived,
        unarchived_at_kills: supervisor.atKills.unarchived,
        backends_terminated: backendsTerminated,
        postgres_restarts: restarts,
        postgres_restart_ms: restartMs === null ? null : Math.round(restartMs),
        unexpected_exits: supervisor.unexpectedExits,
        handlers_in_flight_at_crashes: supervisor.atCrashes.running +
          supervisor.atCrashes.unarchived,
        unarchived_at_crashes: supervisor.atCrashes.unarchived,
        stopped_cleanly: stoppedCleanly,
        connection_samples: sampler.samples.taken,
        connection_samples_failed: sampler.samples.failed,
        duration_s: Math.round((performance.now() - started) / 100) / 10,
      };
    } finally {
      // The queue, its archive and chaos_runs stay for inspection; the
      // next run resets them.
      await check.end();
    }
  } finally {
    log.close();
    await Promise.all([
      observer.end({ timeout: 1 }),
      watcher.end({ timeout: 1 }),
    ]);
  }
}

/** One rule of the run, checked in one mode. */
interface Check {
  mode: string;
  name: string;
  passed: boolean;
  detail: string;
}

/** The rules a mode's figures must satisfy. */
function checks(mode: string, f: Figures): Check[] {
  const check = (name: string, passed: boolean, detail: string): Check => ({
    mode,
    name,
    passed,
    detail,
  });
  return [
    check(
      "faults_injected",
      f.kills > 0 && f.backends_terminated > 0 && f.postgres_restarts === 1,
      `${f.kills} kills, ${f.backends_terminated} backends terminated, ` +
        `${f.postgres_restarts} Postgres restart`,
    ),
    check(
      "queue_drained",
      f.drained && f.queued_at_end === 0,
      `${f.queued_at_end} messages left in the queue`,
    ),
    check(
      "nothing_lost",
      f.lost === 0 && f.succeeded + f.dead_lettered === f.sent,
      `${f.lost} lost; ${f.succeeded} succeeded + ${f.dead_lettered} ` +
        `dead-lettered of ${f.sent} sent`,
    ),
    check(
      "success_recorded_once",
      f.succeeded_twice === 0 && f.archived_without_run === 0,
      `${f.succeeded_twice} recorded twice, ${f.archived_without_run} ` +
        "archived without a successful run",
    ),
    check(
      "connections_within_cap",
      f.max_connections <= f.connection_cap,
      `at most ${f.max_connections} of ${f.connection_cap}`,
    ),
    // Every rerun must be a success that a dead worker left unarchived: no
    // more reruns than those, and fewer than the handlers in flight. A
    // worker that died by itself loses its work like a killed one; that
    // death already fails worker_survived.
    check(
      "reruns_only_after_kills",
      f.rerun_after_kill <= f.unarchived_at_kills + f.unarchived_at_crashes &&
        (f.rerun_after_kill === 0 ||
          f.rerun_after_kill <
            f.handlers_in_flight_at_kills + f.handlers_in_flight_at_crashes),
      `${f.rerun_after_kill} reruns after kills; at the kills ` +
        `${f.handlers_in_flight_at_kills} handlers in flight, ` +
        `${f.unarchived_at_kills} of them succeeded but not archived` +
        (f.unexpected_exits > 0
          ? `; at the crashes ${f.handlers_in_flight_at_crashes} and ` +
            `${f.unarchived_at_crashes}`
          : ""),
    ),
    check(
      "worker_survived",
      f.unexpected_exits === 0 && f.stopped_cleanly,
      `${f.unexpected_exits} unexpected exits, ` +
        (f.stopped_cleanly ? "stopped on SIGTERM" : "did not stop on SIGTERM"),
    ),
  ];
}

function printFigures(mode: string, f: Figures): void {
  console.log(
    `\n${mode}: ${f.sent} sent in ${f.duration_s} s\n` +
      `  succeeded ${f.succeeded}, dead-lettered ${f.dead_lettered}, ` +
      `lost ${f.lost}, queued at end ${f.queued_at_end}\n` +
      `  succeeded twice ${f.succeeded_twice}, rerun after kill ` +
      `${f.rerun_after_kill}, rerun within a worker ` +
      `${f.rerun_within_worker}, dead-lettered after a run ` +
      `${f.dead_lettered_after_run}\n` +
      `  failed attempts ${f.failed_attempts}, kills ${f.kills} ` +
      `(${f.handlers_in_flight_at_kills} handlers in flight, ` +
      `${f.unarchived_at_kills} succeeded but not archived), ` +
      `unexpected exits ${f.unexpected_exits}, ` +
      `backends terminated ${f.backends_terminated}, Postgres restarts ` +
      `${f.postgres_restarts} (${f.postgres_restart_ms} ms)\n` +
      `  max connections ${f.max_connections} of ${f.connection_cap} ` +
      `(${f.connection_samples} samples, ${f.connection_samples_failed} ` +
      "failed while the server was down)",
  );
}

async function main(): Promise<void> {
  const scenarioName = Deno.args[0] ?? "full";
  const scenario = SCENARIOS[scenarioName];
  if (scenario === undefined) {
    console.error(
      `unknown scenario ${JSON.stringify(scenarioName)}; expected one of ` +
        Object.keys(SCENARIOS).join(", "),
    );
    Deno.exit(2);
  }
  const targets = databaseTargets();
  const allModes: Mode[] = [
    { name: "direct", url: targets.direct, queue: "chaos_direct" },
    {
      name: "pgbouncer_transaction",
      url: targets.pgbouncerTransaction,
      queue: "chaos_pgbouncer_transaction",
    },
  ];
  const only = Deno.args[1];
  const modes = allModes.filter((mode) =>
    only === undefined || mode.name === only
  );
  if (modes.length === 0) {
    console.error(
      `unknown mode ${JSON.stringify(only)}; expected one of ` +
        allModes.map((mode) => mode.name).join(", "),
    );
    Deno.exit(2);
  }
  const resultPath = new URL(`${CHAOS_DIR}${scenario.resultFile}`, ROOT);
  await Deno.mkdir(new URL(".", resultPath), { recursive: true });

  console.log(
    `Chaos (${scenarioName}): ${scenario.messages} messages per mode, ` +
      `${scenario.handler.failRate * 100}% of handler calls fail, backends ` +
      `terminated every ${scenario.terminateEveryMs} ms, worker killed ` +
      `every ${scenario.killEveryMs} ms, Postgres restarted once`,
  );
  const results: Record<string, Figures> = {};
  const allChecks: Check[] = [];
  for (const mode of modes) {
    console.log(`\n==> ${mode.name}`);
    const figures = await runMode(scenarioName, scenario, mode, targets.direct);
    results[mode.name] = figures;
    printFigures(mode.name, figures);
    allChecks.push(...checks(mode.name, figures));
  }

  await Deno.writeTextFile(resultPath, JSON.stringify(results, null, 2) + "\n");
  console.log(`\nWrote ${resultPath.pathname}\n`);
  for (const check of allChecks) {
    console.log(
      `${check.passed ? "ok    " : "FAILED"} ${check.mode} ${check.name}: ` +
        check.detail,
    );
  }
  const passed = allChecks.filter((check) => check.passed).length;
  const failed = allChecks.length - passed;
  console.log(`\n${passed} passed, ${failed} failed`);
  if (failed > 0) Deno.exitCode = 1;
}

if (import.meta.main) {
  await main();
}
