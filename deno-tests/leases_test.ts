/**
 * Leases against real Postgres: a running handler keeps its message
 * invisible to other workers however long it takes, a worker whose lease
 * was taken over cannot complete the message any more, and a worker that
 * reads its own message again does not run more handlers than allowed.
 */

import assert from "node:assert/strict";
import type { HandlerContext } from "../js/mod.ts";
import {
  archiveRows,
  attemptErrors,
  deadLetters,
  queueRows,
  send,
  waitFor,
} from "./support/db.ts";
import {
  Gate,
  gateOrAbort,
  withQueue,
  workFor,
} from "./support/worker_fixture.ts";

/** One handler run as the handler saw it. */
interface Run {
  workerId: string;
  msgId: string;
  readCt: number;
}

function runOf(ctx: HandlerContext): Run {
  return { workerId: ctx.workerId, msgId: ctx.msgId, readCt: ctx.readCt };
}

Deno.test(
  "a handler running three leases long runs once while another worker polls",
  () =>
    withQueue("leases", async ({ sql, queue, logs, start }) => {
      const visibilityTimeoutSeconds = 2;
      const handlerMs = 3 * visibilityTimeoutSeconds * 1_000;
      const runs: Run[] = [];
      const handler = async (_payload: unknown, ctx: HandlerContext) => {
        runs.push(runOf(ctx));
        await workFor(handlerMs, ctx.signal);
      };
      const config = { lease: { visibilityTimeoutSeconds } };
      const first = start(handler, config);
      const second = start(handler, config);
      await waitFor(() => logs.events("worker_started").length === 2, {
        description: "both workers started",
      });

      const msgId = await send(sql, queue, { job: "long" });
      const claimed = await waitFor(async () => {
        const [row] = await queueRows(sql, queue);
        return row?.read_ct === 1 ? row : undefined;
      }, { description: "the message claimed" });

      // While the handler runs, the lease must move forward: the latest vt
      // seen ends up well past the lease the claim took.
      let latestVt = claimed.vt;
      await waitFor(async () => {
        const [row] = await queueRows(sql, queue);
        if (row !== undefined) {
          assert.equal(row.read_ct, 1, "no other worker re-read the message");
          if (row.vt > latestVt) latestVt = row.vt;
        }
        return (await archiveRows(sql, queue)).length === 1;
      }, {
        timeoutMs: handlerMs + 5_000,
        intervalMs: 100,
        description: "the long message archived",
      });

      assert.deepEqual(runs.map((run) => run.msgId), [msgId]);
      assert.ok(
        [first.workerId, second.workerId].includes(runs[0].workerId),
      );
      const archived = await archiveRows(sql, queue);
      assert.deepEqual(
        archived.map((row) => [row.msg_id, row.read_ct]),
        [[msgId, 1]],
      );
      assert.ok(
        latestVt.getTime() - claimed.vt.getTime() >=
          (handlerMs - 2 * visibilityTimeoutSeconds * 1_000),
        `lease extended from ${claimed.vt.toISOString()} only to ` +
          latestVt.toISOString(),
      );
      assert.equal((await queueRows(sql, queue)).length, 0);
      assert.equal((await attemptErrors(sql, queue)).length, 0);
      assert.deepEqual(logs.events("lease_lost"), []);
      assert.deepEqual(logs.events("stale_write"), []);
    }),
);

Deno.test(
  "a worker whose lease was taken over archives nothing and counts it stale",
  () =>
    withQueue("leases", async ({ sql, queue, logs, start }) => {
      const release = new Gate();
      const runs: Run[] = [];
      let firstWorkerId = "";
      const handler = async (_payload: unknown, ctx: HandlerContext) => {
        runs.push(runOf(ctx));
        if (ctx.workerId === firstWorkerId) {
          await gateOrAbort(release, ctx.signal);
        }
      };
      // One slot, held by the blocked handler: the first worker cannot
      // re-read the message itself, so the second one becomes its owner.
      const first = start(handler, { concurrency: { maxConcurrent: 1 } });
      firstWorkerId = first.workerId;
      const msgId = await send(sql, queue, { job: "contested" });
      await waitFor(() => runs.length === 1, {
        description: "the first worker's handler running",
      });

      // Another reader takes the message over as if the lease had expired:
      // its read count moves on and it is visible again.
      await sql`
        update ${sql(`pgmq.q_${queue}`)}
        set read_ct = read_ct + 1, vt = clock_timestamp()
        where msg_id = ${msgId}`;
      const second = start(handler);
      await waitFor(
        async () => (await archiveRows(sql, queue)).length === 1,
        { description: "the new owner archived the message" },
      );

      release.open();
      const stale = await waitFor(
        () => logs.first("stale_write", first.workerId),
        { description: "the first worker's late archive reported stale" },
      );
      await first.stop();

      assert.deepEqual(runs, [
        { workerId: first.workerId, msgId, readCt: 1 },
        { workerId: second.workerId, msgId, readCt: 3 },
      ]);
      assert.equal(stale.write, "archive");
      assert.deepEqual(stale.msg_ids, [msgId]);
      const [stopped] = logs.events("worker_stopped", first.workerId);
      assert.equal(stopped.stale, 1);
      assert.equal(stopped.succeeded, 0);
      const [row] = await sql<{ stale: string; succeeded: string }[]>`
        select stale, succeeded from edge_worker.workers
        where worker_id = ${first.workerId}`;
      assert.deepEqual(row, { stale: "1", succeeded: "0" });
      const archived = await archiveRows(sql, queue);
      assert.deepEqual(
        archived.map((row) => [row.msg_id, row.read_ct]),
        [[msgId, 3]],
      );
      assert.equal((await queueRows(sql, queue)).length, 0);
      assert.equal((await deadLetters(sql, queue)).length, 0);
    }),
);

Deno.test(
  "a worker re-reading a message it still runs keeps its handlers in bounds",
  () =>
    withQueue("leases", async ({ sql, queue, start }) => {
      const release = new Gate();
      let running = 0;
      let peak = 0;
      const runs: Run[] = [];
      const handler = async (_payload: unknown, ctx: HandlerContext) => {
        runs.push(runOf(ctx));
        running++;
        peak = Math.max(peak, running);
        try {
          await gateOrAbort(release, ctx.signal);
        } finally {
          running--;
        }
      };
      const maxConcurrent = 2;
      const worker = start(handler, { concurrency: { maxConcurrent } });
      try {
        const firstId = await send(sql, queue, { job: "first" });
        await waitFor(() => runs.length === 1, {
          description: "the first handler running",
        });

        // The lease runs out under the running handler (as when extensions
        // fail while the database is away): the same worker reads it again.
        await sql`
          update ${sql(`pgmq.q_${queue}`)}
          set vt = clock_timestamp()
          where msg_id = ${firstId}`;
        await waitFor(async () => {
          const [row] = await queueRows(sql, queue);
          return row?.read_ct === 2;
        }, { description: "the worker re-read its own message" });
        const secondId = await send(sql, queue, { job: "second" });
        await waitFor(() => runs.some((run) => run.msgId === secondId), {
          description: "the second message's handler running",
        });

        // Stopping aborts every handler the worker runs, so none is left.
        await worker.stop("stop", Date.now() + 1_000);
        const leftRunning = running;

        assert.ok(
          peak <= maxConcurrent,
          `${peak} handlers ran at once with maxConcurrent ` +
            `${maxConcurrent}: ${JSON.stringify(runs)}`,
        );
        assert.equal(leftRunning, 0, "handlers still running after stop");
      } finally {
        release.open();
      }
    }),
);
