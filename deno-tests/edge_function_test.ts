/**
 * End to end through the local edge host: an edge function importing
 * `js/mod.ts` runs in a child Deno without `--allow-read`, is woken by an
 * HTTP request, works its queue until its wall-clock budget sends
 * `beforeunload`, retires, and a fresh instance finishes what was left.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  archiveRows,
  connect,
  counts,
  createQueue,
  deadLetters,
  dropQueue,
  queueRows,
  sendBatch,
  type Sql,
  waitFor,
  workers,
} from "./support/db.ts";
import {
  type EdgeFunction,
  type EdgeFunctionOptions,
  startEdgeFunction,
} from "./support/edge_host.ts";

const ENTRY = new URL("./functions/queue-worker/index.ts", import.meta.url);

/** The function's name, from its folder: the worker row records it. */
const FUNCTION_NAME = "queue-worker";

/** Messages sent; at 150 ms each, two at a time, about 3 s of work. */
const TOTAL = 40;
const WORK_MS = 150;

/** The first instance's budget: enough to start and finish some work. */
const FIRST_WALL_CLOCK_MS = 2_000;

Deno.test(
  "an edge function retired at its wall clock leaves the rest to a new one",
  async () => {
    const sql = connect();
    const queue = await createQueue(sql, "edge");
    try {
      await handOver(sql, queue);
    } finally {
      await dropQueue(sql, queue);
      await sql.end();
    }
  },
);

Deno.test(
  "a second EdgeWorker.start in one isolate throws and the first keeps working",
  async () => {
    const sql = connect();
    const queue = await createQueue(sql, "edge");
    try {
      const [id] = await sendBatch(sql, queue, [{ n: 1 }]);
      await using fn = await startEdgeFunction({
        entry: ENTRY,
        env: { EDGE_TEST_QUEUE: queue, EDGE_TEST_START_TWICE: "1" },
      });
      const line = await fn.waitForLine(
        (l) => l.text.includes('"event":"second_start_refused"'),
        30_000,
      );
      assert.match(
        JSON.parse(line.text).message,
        /EdgeWorker\.start was called twice in this isolate/,
      );
      await triggerWorker(fn);
      await waitFor(async () => (await counts(sql, queue)).archived === 1, {
        description: "the message archived by the first worker",
      });
      assert.deepEqual(handled(fn), [id]);
      await fn.retire();
      await fn.exited;
    } finally {
      await dropQueue(sql, queue);
      await sql.end();
    }
  },
);

async function handOver(sql: Sql, queue: string): Promise<void> {
  const ids = await sendBatch(
    sql,
    queue,
    Array.from({ length: TOTAL }, (_, n) => ({ n })),
  );
  const options: EdgeFunctionOptions = {
    entry: ENTRY,
    env: { EDGE_TEST_QUEUE: queue, EDGE_TEST_WORK_MS: String(WORK_MS) },
  };

  // The first instance works until beforeunload, then retires.
  await using first = await startEdgeFunction({
    ...options,
    wallClockMs: FIRST_WALL_CLOCK_MS,
    graceMs: 1_000,
  });
  await assertRunsWithoutReadPermission(first);
  const firstWorker = await triggerWorker(first);
  const firstExit = await first.exited;

  const lines = first.jsonLines();
  assert.deepEqual(
    lines.filter((l) =>
      l.component === "edge_host" && l.event === "beforeunload"
    )
      .map((l) => l.reason),
    ["WallClockTime"],
  );
  assert.equal(
    lines.filter((l) => l.event === "worker_stopped").length,
    1,
    "the first worker stopped cleanly",
  );
  assert.deepEqual(
    { code: firstExit.code, signal: firstExit.signal },
    { code: 0, signal: null },
    "the first instance ended by itself before the hard kill",
  );
  const handledFirst = handled(first);
  const afterFirst = await counts(sql, queue);
  assert.ok(
    afterFirst.archived > 0 && afterFirst.archived < TOTAL,
    `the first instance should finish some but not all messages: ${
      JSON.stringify(afterFirst)
    }`,
  );
  assert.equal(afterFirst.archived, handledFirst.length);
  // Nothing waits out a lease: what the first instance held is visible.
  const [{ now }] = await sql<{ now: Date }[]>`select clock_timestamp() as now`;
  const leased = (await queueRows(sql, queue)).filter((row) => row.vt > now);
  assert.deepEqual(leased.map((row) => row.msg_id), []);
  const [firstRow] = await workers(sql, queue);
  assert.equal(firstRow.worker_id, firstWorker);
  assert.equal(firstRow.function_name, FUNCTION_NAME);
  assert.notEqual(firstRow.stopped_at, null);

  // A fresh instance, woken by a new request, finishes the rest.
  await using second = await startEdgeFunction(options);
  const secondWorker = await triggerWorker(second);
  assert.notEqual(secondWorker, firstWorker);
  await waitFor(async () => (await counts(sql, queue)).archived === TOTAL, {
    description: "every message archived by the second instance",
    timeoutMs: 20_000,
  });
  await second.retire();
  await second.exited;

  const archived = await archiveRows(sql, queue);
  assert.deepEqual(archived.map((row) => row.msg_id), ids);
  assert.equal((await queueRows(sql, queue)).length, 0);
  assert.equal((await deadLetters(sql, queue)).length, 0);
  const succeeded = [...handledFirst, ...handled(second)].sort((a, b) =>
    Number(BigInt(a) - BigInt(b))
  );
  assert.deepEqual(succeeded, ids, "each message succeeded exactly once");
}

/** POSTs the wake-up request and returns the worker id it answers with. */
async function triggerWorker(fn: EdgeFunction): Promise<string> {
  const answer = await fn.trigger();
  assert.equal(answer.status, 200, answer.body);
  const { worker_id: workerId } = JSON.parse(answer.body);
  assert.match(workerId, /^[0-9a-f-]{36}$/);
  return workerId;
}

/** The ids whose handler finished successfully in `fn`. */
function handled(fn: EdgeFunction): string[] {
  return fn.jsonLines()
    .filter((line) => line.component === "queue_worker")
    .filter((line) => line.event === "handled")
    .map((line) => String(line.msg_id));
}

/**
 * The child's command line has no read permission flag, and the function
 * itself sees read permission as not granted.
 */
async function assertRunsWithoutReadPermission(
  fn: EdgeFunction,
): Promise<void> {
  const args = (await Deno.readTextFile(`/proc/${fn.pid}/cmdline`))
    .split("\0");
  assert.ok(args.includes("run"), `not a deno run: ${args.join(" ")}`);
  assert.ok(args.includes("--allow-net"), args.join(" "));
  assert.deepEqual(
    args.filter((arg) =>
      arg === "-A" || arg === "--allow-all" || arg.startsWith("--allow-read") ||
      arg.startsWith("-R")
    ),
    [],
  );
  const line = await fn.waitForLine(
    (l) => l.text.includes('"event":"permissions"'),
    30_000,
  );
  const { read } = JSON.parse(line.text);
  assert.equal(read, "prompt");
}
