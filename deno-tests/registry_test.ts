/**
 * The worker registry in `edge_worker.workers` and the operator views over
 * it: heartbeats and counters that match what happened, retirement on
 * deprecation, and sensible numbers in `active_workers`, `stale_workers`
 * and `queue_stats`.
 */

import assert from "node:assert/strict";
import { type HandlerContext, NonRetryableError } from "../js/mod.ts";
import {
  archiveRows,
  deadLetters,
  queueRows,
  send,
  sendBatch,
  type Sql,
  waitFor,
  type WorkerRow,
} from "./support/db.ts";
import { Gate, gateOrAbort, withQueue } from "./support/worker_fixture.ts";

const HEARTBEAT_INTERVAL_S = 1;

/** Slack on top of one heartbeat interval for the round trips, in ms. */
const HEARTBEAT_SLACK_MS = 500;

async function workerRow(sql: Sql, workerId: string): Promise<WorkerRow> {
  const [row] = await sql<WorkerRow[]>`
    select worker_id, queue_name, function_name, started_at,
      last_heartbeat_at, stopped_at, deprecated_at, succeeded, failed,
      dead_lettered, in_flight, last_error
    from edge_worker.workers
    where worker_id = ${workerId}`;
  assert.ok(row !== undefined, `worker ${workerId} is registered`);
  return row;
}

async function idsInView(
  sql: Sql,
  view: "active_workers" | "stale_workers",
  queue: string,
): Promise<string[]> {
  const rows = await sql<{ worker_id: string }[]>`
    select worker_id from ${sql(`edge_worker.${view}`)}
    where queue_name = ${queue}
    order by worker_id`;
  return rows.map((row) => row.worker_id);
}

/** A row of `edge_worker.queue_stats`. */
interface QueueStats {
  depth: string;
  visible: string;
  in_flight: string;
  oldest_msg_age_s: number | null;
  dead_letters: string;
}

async function queueStats(sql: Sql, queue: string): Promise<QueueStats> {
  const [row] = await sql<QueueStats[]>`
    select depth, visible, in_flight, oldest_msg_age_s, dead_letters
    from edge_worker.queue_stats
    where queue_name = ${queue}`;
  assert.ok(row !== undefined, `queue_stats has ${queue}`);
  return row;
}

Deno.test(
  "a deprecated worker stops claiming within a heartbeat and retires",
  () =>
    withQueue("deprecate", async ({ sql, queue, logs, start }) => {
      const finish = new Gate();
      let started = 0;
      const worker = start(
        async (_payload: unknown, ctx: HandlerContext) => {
          started++;
          await gateOrAbort(finish, ctx.signal);
        },
        { lifecycle: { heartbeatIntervalSeconds: HEARTBEAT_INTERVAL_S } },
      );
      const runningId = await send(sql, queue, { job: "running" });
      await waitFor(() => started === 1, {
        description: "a handler running",
      });

      const deprecatedAtMs = Date.now();
      await sql`
        update edge_worker.workers set deprecated_at = now()
        where worker_id = ${worker.workerId}`;
      const noticed = await waitFor(
        () => logs.first("worker_deprecated", worker.workerId),
        { timeoutMs: 5_000, description: "the worker noticed" },
      );
      assert.ok(
        noticed.seenAtMs - deprecatedAtMs <=
          HEARTBEAT_INTERVAL_S * 1_000 + HEARTBEAT_SLACK_MS,
        `noticed ${noticed.seenAtMs - deprecatedAtMs} ms after deprecation`,
      );

      // Messages sent now stay put, though the worker still runs a handler
      // and keeps heartbeating: give it a full heartbeat to claim them.
      const sentAt = new Date();
      const lateIds = await sendBatch(sql, queue, [{ late: 1 }, { late: 2 }]);
      await waitFor(
        async () =>
          (await workerRow(sql, worker.workerId)).last_heartbeat_at > sentAt,
        { timeoutMs: 3_000, description: "a heartbeat after the late send" },
      );
      assert.equal(started, 1, "no handler started after deprecation");
      finish.open();
      await worker.done;

      const row = await workerRow(sql, worker.workerId);
      assert.ok(row.deprecated_at !== null);
      assert.ok(row.stopped_at !== null, "stopped_at is set");
      assert.ok(row.stopped_at >= row.deprecated_at);
      assert.deepEqual(
        (await archiveRows(sql, queue)).map((r) => r.msg_id),
        [runningId],
        "the running handler was let finish",
      );
      assert.deepEqual(
        (await queueRows(sql, queue)).map((r) => [r.msg_id, r.read_ct]),
        lateIds.map((id) => [id, 0]),
      );
      const [draining] = logs.events("worker_draining", worker.workerId);
      assert.equal(draining.reason, "deprecated");
    }),
);

Deno.test(
  "the worker row and views report counters, heartbeats and stops",
  () =>
    withQueue("registry", async ({ sql, queue, start }) => {
      const block = new Gate();
      const handler = async (
        payload: { job: string },
        ctx: HandlerContext,
      ) => {
        switch (payload.job) {
          case "flaky":
            if (ctx.attempt === 1) throw new Error("first try fails");
            return;
          case "doomed":
            throw new NonRetryableError("doomed");
          case "block":
            await gateOrAbort(block, ctx.signal);
            return;
        }
      };
      const worker = start(handler, {
        lifecycle: { heartbeatIntervalSeconds: HEARTBEAT_INTERVAL_S },
        retry: { limit: 1, strategy: "fixed", delaySeconds: 0 },
      });

      await sendBatch(sql, queue, [{ job: "ok" }, { job: "ok" }, {
        job: "flaky",
      }]);
      await waitFor(async () => (await archiveRows(sql, queue)).length === 3, {
        description: "the three good messages archived",
      });
      await send(sql, queue, { job: "doomed" });
      await waitFor(async () => (await deadLetters(sql, queue)).length === 1, {
        description: "the doomed message dead-lettered",
      });
      await send(sql, queue, { job: "block" });
      // A delayed message counts as in flight in queue_stats too.
      await send(sql, queue, { job: "later" }, 60);

      const busy = await waitFor(async () => {
        const row = await workerRow(sql, worker.workerId);
        return row.in_flight === 1 && row.dead_lettered === "1" ? row : null;
      }, { description: "a heartbeat with the blocked handler in flight" });
      assert.equal(busy.queue_name, queue);
      assert.equal(busy.function_name, "standalone");
      assert.equal(busy.succeeded, "3");
      assert.equal(busy.failed, "2", "flaky's first try and doomed");
      assert.equal(busy.last_error, "NonRetryableError: doomed");
      assert.equal(busy.stopped_at, null);
      assert.ok(busy.started_at <= busy.last_heartbeat_at);

      assert.deepEqual(await idsInView(sql, "active_workers", queue), [
        worker.workerId,
      ]);
      assert.deepEqual(await idsInView(sql, "stale_workers", queue), []);
      const stats = await queueStats(sql, queue);
      assert.deepEqual(
        [stats.depth, stats.visible, stats.in_flight, stats.dead_letters],
        ["2", "0", "2", "1"],
      );
      assert.ok(
        stats.oldest_msg_age_s !== null && stats.oldest_msg_age_s >= 0 &&
          stats.oldest_msg_age_s < 60,
        `oldest message age ${stats.oldest_msg_age_s} s`,
      );

      // A worker that stopped heartbeating without stopping is stale.
      const [{ id: vanishedId }] = await sql<{ id: string }[]>`
        select gen_random_uuid()::text as id`;
      await sql`
        select edge_worker.register_worker(
          ${vanishedId}::uuid, ${queue}, 'registry_test')`;
      await sql`
        update edge_worker.workers
        set last_heartbeat_at = now() - interval '5 minutes'
        where worker_id = ${vanishedId}`;
      assert.deepEqual(await idsInView(sql, "stale_workers", queue), [
        vanishedId,
      ]);
      assert.deepEqual(await idsInView(sql, "active_workers", queue), [
        worker.workerId,
      ]);

      block.open();
      const idle = await waitFor(async () => {
        const row = await workerRow(sql, worker.workerId);
        return row.in_flight === 0 && row.succeeded === "4" ? row : null;
      }, { description: "a heartbeat after the blocked handler finished" });
      assert.ok(idle.last_heartbeat_at > busy.last_heartbeat_at);
      await worker.stop();

      const stopped = await workerRow(sql, worker.workerId);
      assert.ok(stopped.stopped_at !== null);
      assert.ok(stopped.last_heartbeat_at <= stopped.stopped_at);
      assert.ok(
        (await idsInView(sql, "active_workers", queue)).length === 0,
        "a stopped worker is not active",
      );
      assert.deepEqual(await idsInView(sql, "stale_workers", queue), [
        vanishedId,
      ]);
      const after = await queueStats(sql, queue);
      assert.deepEqual(
        [after.depth, after.visible, after.in_flight, after.dead_letters],
        ["1", "0", "1", "1"],
      );
    }),
);
