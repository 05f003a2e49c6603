/**
 * The benchmark (`./build.sh bench`): how fast the worker drains a queue
 * with a no-op handler, compared with the plainest possible consumer, a
 * postgres.js loop of `pgmq.read` then `pgmq.archive` on one connection.
 *
 * Both runs start from the same pre-filled queue of
 * {@linkcode MESSAGES} messages and read {@linkcode BATCH} at a time. Prints
 * both rates and their ratio and writes them to `target/bench/latest.json`.
 *
 * @module
 */

import {
  connect,
  databaseUrl,
  dropQueue,
  resetQueue,
  sendBatch,
  type Sql,
} from "../deno-tests/support/db.ts";
import { startWorker } from "../js/worker.ts";

/** The benchmark's queue. */
const QUEUE = "bench";
/** Messages drained per run. */
const MESSAGES = 20_000;
/** Messages per claim, for both the worker and the baseline. */
const BATCH = 10;
/** Handlers the worker runs at once. */
const CONCURRENCY = 10;
/** The worker's pool size. */
const CONNECTIONS = 4;
/** Lease taken per read, in seconds; long enough that none expires. */
const VISIBILITY_TIMEOUT_S = 60;
/** How often the worker run checks whether the queue is empty. */
const EMPTY_CHECK_INTERVAL_MS = 20;
/** Give up a run after this long. */
const RUN_TIMEOUT_MS = 300_000;
/** Where the results go, relative to the repository root. */
const RESULT_PATH = new URL("../target/bench/latest.json", import.meta.url);

/** Fills the queue afresh with {@linkcode MESSAGES} small messages. */
async function prefill(sql: Sql): Promise<void> {
  await resetQueue(sql, QUEUE);
  await sendBatch(
    sql,
    QUEUE,
    Array.from({ length: MESSAGES }, (_, n) => ({ n })),
  );
}

async function isEmpty(sql: Sql): Promise<boolean> {
  const [row] = await sql<{ empty: boolean }[]>`
    select not exists (select from ${sql(`pgmq.q_${QUEUE}`)}) as empty`;
  return row.empty;
}

/** Drains the queue with the worker; returns the elapsed seconds. */
async function runWorker(sql: Sql, url: string): Promise<number> {
  const started = performance.now();
  const worker = startWorker(() => {}, {
    queue: { name: QUEUE, batchSize: BATCH },
    concurrency: { maxConcurrent: CONCURRENCY },
    connection: { maxConnections: CONNECTIONS, url },
    polling: { maxPollSeconds: 1 },
    lease: { visibilityTimeoutSeconds: VISIBILITY_TIMEOUT_S },
    logging: { level: "warn" },
  }, { functionName: "bench" });
  const deadline = Date.now() + RUN_TIMEOUT_MS;
  try {
    while (!(await isEmpty(sql))) {
      if (Date.now() >= deadline) throw new Error("the worker run timed out");
      await new Promise((resolve) =>
        setTimeout(resolve, EMPTY_CHECK_INTERVAL_MS)
      );
    }
    return (performance.now() - started) / 1000;
  } finally {
    await worker.stop();
  }
}

/**
 * Drains the queue with read-then-archive on one connection, with
 * postgres.js's defaults (prepared statements), as a plain script would. The
 * worker cannot prepare: transaction-mode poolers do not keep them.
 */
async function runBaseline(url: string): Promise<number> {
  const sql = connect(url, { max: 1, prepare: true });
  try {
    const started = performance.now();
    const deadline = Date.now() + RUN_TIMEOUT_MS;
    while (true) {
      const rows = await sql<{ msg_id: string }[]>`
        select msg_id from pgmq.read(
          ${QUEUE}::text, ${VISIBILITY_TIMEOUT_S}::int, ${BATCH}::int)`;
      if (rows.length === 0) break;
      await sql`select pgmq.archive(${QUEUE}::text, ${
        rows.map((r) => r.msg_id)
      }::bigint[])`;
      if (Date.now() >= deadline) throw new Error("the baseline timed out");
    }
    return (performance.now() - started) / 1000;
  } finally {
    await sql.end();
  }
}

async function main(): Promise<void> {
  const url = databaseUrl();
  const sql = connect(url);
  try {
    console.log(
      `Worker: ${MESSAGES} messages, batch ${BATCH}, ` +
        `concurrency ${CONCURRENCY}, ${CONNECTIONS} connections`,
    );
    await prefill(sql);
    const workerS = await runWorker(sql, url);
    const workerRate = MESSAGES / workerS;
    console.log(
      `  ${workerRate.toFixed(0)} msg/s (${workerS.toFixed(2)} s)`,
    );

    console.log(
      `Baseline: pgmq.read + pgmq.archive loop, prepared statements, ` +
        `batch ${BATCH}, ` +
        "1 connection",
    );
    await prefill(sql);
    const baselineS = await runBaseline(url);
    const baselineRate = MESSAGES / baselineS;
    console.log(
      `  ${baselineRate.toFixed(0)} msg/s (${baselineS.toFixed(2)} s)`,
    );

    const ratio = workerRate / baselineRate;
    console.log(`Ratio worker / baseline: ${ratio.toFixed(2)}`);

    const result = {
      worker_msgs_per_s: round(workerRate),
      baseline_msgs_per_s: round(baselineRate),
      ratio: Math.round(ratio * 1000) / 1000,
      batch: BATCH,
      concurrency: CONCURRENCY,
      connections: CONNECTIONS,
      messages: MESSAGES,
      deno: Deno.version.deno,
      measured_at: new Date().toISOString(),
    };
    await Deno.mkdir(new URL(".", RESULT_PATH), { recursive: true });
    await Deno.writeTextFile(
      RESULT_PATH,
      JSON.stringify(result, null, 2) + "\n",
    );
    console.log(`Wrote ${RESULT_PATH.pathname}`);
  } finally {
    await dropQueue(sql, QUEUE);
    await sql.end();
  }
}

function round(rate: number): number {
  return Math.round(rate * 10) / 10;
}

if (import.meta.main) {
  await main();
}
