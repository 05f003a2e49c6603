/**
 * The demo (`./build.sh demo`): fills the `demo` queue with 2 000 messages,
 * runs `supabase/functions/demo-worker` under the local edge host until the
 * queue has drained, retires the function the way the Edge Runtime does
 * (`beforeunload`), and prints what happened to the messages.
 *
 * Needs Postgres with pgmq and the migrations at `EDGE_WORKER_DB_URL` (set by
 * `build.sh`). Exits 1 if the queue does not drain within
 * {@linkcode DRAIN_TIMEOUT_MS} or the outcome is not the expected one.
 *
 * @module
 */

// @deno-types="npm:@types/cli-progress@3.11.6"
import cliProgress from "npm:cli-progress@3.12.0";
import {
  connect,
  counts,
  databaseUrl,
  type QueueCounts,
  resetQueue,
  sendBatch,
} from "../deno-tests/support/db.ts";
import {
  type EdgeFunction,
  startEdgeFunction,
} from "../deno-tests/support/edge_host.ts";

/** The queue the demo function works on. */
const QUEUE = "demo";
/** How many messages the demo sends. */
const MESSAGES = 2_000;
/** Out of every 50 messages: 1 always fails (2 %), 4 fail once (8 %). */
const PATTERN_LENGTH = 50;
const ALWAYS_FAIL_SLOTS = 1;
const FAIL_ONCE_SLOTS = 4;
/** Generous: the demo drains in seconds on a laptop. */
const DRAIN_TIMEOUT_MS = 120_000;
/** Wall-clock budget of the function: longer than the drain may take. */
const WALL_CLOCK_MS = 150_000;
/** From `beforeunload` to the hard kill, as on the Edge Runtime. */
const GRACE_MS = 1_000;
/** How often the progress bar reads the counts. */
const PROGRESS_INTERVAL_MS = 200;

type Behaviour = "ok" | "fail_once" | "always_fail";

/** The behaviour of message `n`: deterministic, spread evenly. */
function behaviourOf(n: number): Behaviour {
  const slot = n % PATTERN_LENGTH;
  if (slot < ALWAYS_FAIL_SLOTS) return "always_fail";
  if (slot < ALWAYS_FAIL_SLOTS + FAIL_ONCE_SLOTS) return "fail_once";
  return "ok";
}

async function main(): Promise<number> {
  const url = databaseUrl();
  const sql = connect(url);
  let fn: EdgeFunction | undefined;
  const onInterrupt = () => {
    fn?.kill();
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", onInterrupt);
  try {
    console.log(`Resetting queue "${QUEUE}" and sending ${MESSAGES} messages`);
    await resetQueue(sql, QUEUE);
    const payloads = Array.from(
      { length: MESSAGES },
      (_, n) => ({ n, behaviour: behaviourOf(n) }),
    );
    await sendBatch(sql, QUEUE, payloads);
    const expected = expectedCounts(payloads.map((p) => p.behaviour));

    console.log("Starting supabase/functions/demo-worker under the edge host");
    fn = await startEdgeFunction({
      entry: new URL(
        "../supabase/functions/demo-worker/index.ts",
        import.meta.url,
      ),
      env: { EDGE_WORKER_DB_URL: url },
      wallClockMs: WALL_CLOCK_MS,
      graceMs: GRACE_MS,
    });
    const answer = await fn.trigger();
    if (answer.status !== 200) {
      throw new Error(`trigger answered ${answer.status}: ${answer.body}`);
    }
    console.log(`Worker started: ${answer.body}`);

    const started = performance.now();
    const drained = await showProgress(sql, fn);
    const elapsedS = (performance.now() - started) / 1000;

    console.log("Retiring the function (beforeunload)");
    await fn.retire();
    const status = await fn.exited;
    const exit = status.signal === null
      ? `exited with code ${status.code}`
      : `killed by ${status.signal} after the ${GRACE_MS} ms grace`;

    const final = await counts(sql, QUEUE);
    printSummary(final, expected, elapsedS, exit, fn, url);

    if (!drained) {
      console.error(
        `FAILED: the queue did not drain within ${DRAIN_TIMEOUT_MS / 1000} s`,
      );
      printTail(fn);
      return 1;
    }
    if (!matches(final, expected)) {
      console.error("FAILED: the outcome differs from the expected one");
      printTail(fn);
      return 1;
    }
    return 0;
  } finally {
    Deno.removeSignalListener("SIGINT", onInterrupt);
    if (fn !== undefined) await fn[Symbol.asyncDispose]();
    await sql.end();
  }
}

/** What the demo function must produce from these behaviours. */
function expectedCounts(behaviours: Behaviour[]): QueueCounts {
  const count = (b: Behaviour) => behaviours.filter((x) => x === b).length;
  return {
    queued: 0,
    archived: count("ok") + count("fail_once"),
    deadLettered: count("always_fail"),
    retriedThenArchived: count("fail_once"),
  };
}

function matches(actual: QueueCounts, expected: QueueCounts): boolean {
  return actual.queued === expected.queued &&
    actual.archived === expected.archived &&
    actual.deadLettered === expected.deadLettered &&
    actual.retriedThenArchived === expected.retriedThenArchived;
}

/**
 * Shows archived + dead-lettered out of {@linkcode MESSAGES} until all are
 * done, the function exits, or the timeout passes. Returns whether the
 * queue drained.
 */
async function showProgress(
  sql: ReturnType<typeof connect>,
  fn: EdgeFunction,
): Promise<boolean> {
  const bar = new cliProgress.SingleBar({
    format: "  [{bar}] {percentage}% | {value}/{total} done | " +
      "{archived} archived, {dead} dead-lettered | {duration}s",
    noTTYOutput: true,
    notTTYSchedule: 2_000,
    hideCursor: true,
  }, cliProgress.Presets.shades_classic);
  bar.start(MESSAGES, 0, { archived: 0, dead: 0 });

  let exited = false;
  fn.exited.then(() => exited = true);
  const deadline = Date.now() + DRAIN_TIMEOUT_MS;
  try {
    while (true) {
      const now = await counts(sql, QUEUE);
      const done = now.archived + now.deadLettered;
      bar.update(done, { archived: now.archived, dead: now.deadLettered });
      if (done >= MESSAGES && now.queued === 0) return true;
      if (exited || Date.now() >= deadline) return false;
      await new Promise((resolve) => setTimeout(resolve, PROGRESS_INTERVAL_MS));
    }
  } finally {
    bar.stop();
  }
}

function printSummary(
  final: QueueCounts,
  expected: QueueCounts,
  elapsedS: number,
  exit: string,
  fn: EdgeFunction,
  url: string,
): void {
  const logs = fn.jsonLines().filter((line) =>
    line.component === "edge_worker"
  );
  const warnings = logs.filter((line) => line.level === "warn").length;
  const errors = logs.filter((line) => line.level === "error").length;
  const rate = (final.archived + final.deadLettered) / elapsedS;
  const row = (label: string, value: number, want: number) =>
    `  ${label.padEnd(34)} ${String(value).padStart(6)}` +
    (value === want ? "" : `   (expected ${want})`);

  console.log("");
  console.log("Summary");
  console.log(row("succeeded (archived)", final.archived, expected.archived));
  console.log(
    row(
      "  of which retried, then succeeded",
      final.retriedThenArchived,
      expected.retriedThenArchived,
    ),
  );
  console.log(row("dead-lettered", final.deadLettered, expected.deadLettered));
  console.log(row("left in the queue", final.queued, expected.queued));
  console.log(
    `  ${"throughput".padEnd(34)} ${rate.toFixed(0).padStart(6)} msg/s`,
  );
  console.log(`  ${"elapsed".padEnd(34)} ${elapsedS.toFixed(1).padStart(6)} s`);
  console.log(`  ${"function".padEnd(34)} ${exit}`);
  console.log(
    `  ${"worker log lines".padEnd(34)} ${logs.length} ` +
      `(${warnings} warn, ${errors} error)`,
  );
  console.log("");
  console.log(
    "Look at them: ./build.sh db (keeps the database running), then " +
      `psql ${url}`,
  );
  console.log(`  select msg_id, read_ct, archived_at, message
    from pgmq.a_${QUEUE} order by msg_id;`);
  console.log(`  select * from edge_worker.list_dead_letters('${QUEUE}');`);
  console.log(`  select msg_id, attempt, error_message, failed_at
    from edge_worker.attempt_errors
    where queue_name = '${QUEUE}' order by id;`);
  console.log(
    `  select * from edge_worker.workers where queue_name = '${QUEUE}';`,
  );
}

/** The function's last lines, to diagnose a failed run. */
function printTail(fn: EdgeFunction): void {
  console.error("Last lines of the function's output:");
  for (const line of fn.lines.slice(-30)) console.error(`  ${line.text}`);
}

if (import.meta.main) {
  Deno.exit(await main());
}
