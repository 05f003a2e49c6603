/**
 * What a handler receives as `ctx`, seen from inside a real worker: exact
 * ids above 2^53, read counts and attempts, the raw row, a live signal, a
 * usable pool, the environment and a frozen configuration.
 */

import assert from "node:assert/strict";
import type { HandlerContext, ResolvedConfig } from "../js/mod.ts";
import { archiveRows, send, waitFor } from "./support/db.ts";
import { withQueue } from "./support/worker_fixture.ts";

/** 2^53 + 1: a message id a JS number cannot hold exactly. */
const BIG_ID = "9007199254740993";

/** What one handler run saw, copied out of its context. */
interface Seen {
  ctx: HandlerContext<{ greeting: string }>;
  aborted: boolean;
  sqlAnswer: string;
  configMutation: unknown;
}

Deno.test("the handler context describes the message and the worker", () =>
  withQueue("context", async ({ sql, queue, start }) => {
    await sql`
      alter table ${sql(`pgmq.q_${queue}`)}
      alter column msg_id restart with ${sql.unsafe(BIG_ID)}`;
    const seen: Seen[] = [];
    const worker = start(
      async (_payload: { greeting: string }, ctx) => {
        const [row] = await ctx.sql<{ next: string }[]>`
          select (${ctx.msgId}::bigint + 1)::text as next`;
        let configMutation: unknown;
        try {
          (ctx.config.retry as { limit: number }).limit = 99;
        } catch (error) {
          configMutation = error;
        }
        seen.push({
          ctx,
          aborted: ctx.signal.aborted,
          sqlAnswer: row.next,
          configMutation,
        });
        if (ctx.attempt === 1) throw new Error("see the second attempt too");
      },
      { retry: { limit: 1, strategy: "fixed", delaySeconds: 0 } },
    );
    const payload = { greeting: "hello" };
    const msgId = await send(sql, queue, payload);
    const [archived] = await waitFor(async () => {
      const rows = await archiveRows(sql, queue);
      return rows.length > 0 ? rows : undefined;
    }, { description: "the message archived on its second attempt" });

    assert.equal(msgId, BIG_ID);
    assert.deepEqual(
      seen.map(({ ctx }) => [ctx.msgId, ctx.readCt, ctx.attempt]),
      [[BIG_ID, 1, 1], [BIG_ID, 2, 2]],
    );
    for (const { ctx, aborted, sqlAnswer, configMutation } of seen) {
      assert.ok(ctx.enqueuedAt instanceof Date);
      assert.equal(ctx.enqueuedAt.getTime(), archived.enqueued_at.getTime());
      assert.equal(ctx.record.msg_id, BIG_ID);
      assert.equal(ctx.record.read_ct, ctx.readCt);
      assert.deepEqual(ctx.record.message, payload);
      assert.equal(
        ctx.record.enqueued_at.getTime(),
        archived.enqueued_at.getTime(),
      );
      assert.ok(ctx.record.vt > ctx.record.enqueued_at, "vt is the lease");
      assert.ok(ctx.signal instanceof AbortSignal);
      assert.equal(aborted, false);
      assert.equal(sqlAnswer, "9007199254740994");
      assert.equal(
        ctx.env.EDGE_WORKER_DB_URL,
        Deno.env.get("EDGE_WORKER_DB_URL"),
      );
      assert.ok(configMutation instanceof TypeError, "config is frozen");
      assertDeepFrozen(ctx.config);
      assert.equal(ctx.config.retry.limit, 1);
      assert.equal(ctx.config.queue.name, queue);
      assert.equal(ctx.queueName, queue);
      assert.equal(ctx.workerId, worker.workerId);
    }
    assert.equal(archived.msg_id, BIG_ID);
    assert.equal(archived.read_ct, 2);
  }));

function assertDeepFrozen(config: ResolvedConfig): void {
  assert.ok(Object.isFrozen(config));
  for (const group of Object.values(config)) {
    assert.ok(Object.isFrozen(group), "every group is frozen");
  }
}
