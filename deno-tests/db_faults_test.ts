/**
 * The worker against a failing database: backends terminated at the worst
 * moments, Postgres restarted under running handlers, a pool much smaller
 * than the concurrency, pgbouncer in transaction and session mode, and a
 * connection cut off right after it opened. Every fault is real;
 * `./build.sh test` provides the poolers and the restart script
 * (`deno-tests/support/faults.ts`). The long-running mix of all of them is
 * `scripts/chaos.ts`.
 *
 * These tests restart the Postgres that `EDGE_WORKER_PG_CTL` controls:
 * run them only against a cluster no one else is using at the time.
 */

import assert from "node:assert/strict";
import postgres from "npm:postgres@3.4.5";
import type { HandlerContext } from "../js/mod.ts";
import {
  archiveRows,
  attemptErrors,
  counts,
  databaseUrl,
  deadLetters,
  send,
  sendBatch,
  type Sql,
  waitFor,
} from "./support/db.ts";
import { FaultProxy } from "./support/fault_proxy.ts";
import {
  ConnectionSampler,
  databaseTargets,
  restartPostgres,
  terminateBackends,
  workerApplicationName,
  workerBackends,
} from "./support/faults.ts";
import {
  Gate,
  gateOrAbort,
  type LogEntry,
  withQueue,
  workFor,
} from "./support/worker_fixture.ts";

/** Whether `worker.done` has settled, checked without waiting for it. */
function settledFlag(done: Promise<void>): () => boolean {
  let settled = false;
  done.then(() => settled = true, () => settled = true);
  return () => settled;
}

/** When the server last started, by its own clock. */
async function serverStartedAt(sql: Sql): Promise<Date> {
  const [row] = await sql<{ started_at: Date }[]>`
    select pg_postmaster_start_time() as started_at`;
  return row.started_at;
}

/** `db_call_failed` lines of one call that the driver saw as transient. */
function connectionFailures(entries: LogEntry[], call: string): LogEntry[] {
  return entries.filter((entry) =>
    entry.event === "db_call_failed" && entry.call === call &&
    entry.kind === "connection"
  );
}

Deno.test(
  "a backend terminated while the worker waits in read_with_poll is retried",
  () =>
    withQueue("faults", async ({ sql, queue, logs, start }) => {
      const handled: string[] = [];
      const worker = start((_payload: unknown, ctx: HandlerContext) => {
        handled.push(ctx.msgId);
      }, { polling: { maxPollSeconds: 10 } });
      const stopped = settledFlag(worker.done);

      // The queue is empty, so the claim sits in read_with_poll.
      await waitFor(async () =>
        (await workerBackends(sql, queue)).some((backend) =>
          backend.state === "active" &&
          backend.query.includes("read_with_poll")
        ), { description: "a claim waiting in read_with_poll" });
      assert.equal(await terminateBackends(sql, queue, "read_with_poll"), 1);

      const ids = await sendBatch(sql, queue, [{ n: 1 }, { n: 2 }, { n: 3 }]);
      await waitFor(async () =>
        (await counts(sql, queue)).archived === 3, {
        description: "the messages sent after the termination archived",
      });

      assert.deepEqual(handled.toSorted(), ids.toSorted());
      const failures = connectionFailures(logs.entries, "claim");
      assert.ok(failures.length >= 1, "the failed claim was logged");
      assert.equal(failures[0].code, "57P01");
      assert.equal(stopped(), false, "the worker kept running");
      assert.deepEqual([...await attemptErrors(sql, queue)], []);
    }),
);

Deno.test(
  "a backend terminated while an archive is in flight archives once",
  () =>
    withQueue("faults", async ({ sql, queue, logs, start }) => {
      const finish = new Gate();
      let runs = 0;
      const worker = start(async (_payload: unknown, ctx: HandlerContext) => {
        runs++;
        await gateOrAbort(finish, ctx.signal);
      });
      const stopped = settledFlag(worker.done);
      const msgId = await send(sql, queue, { job: "archive under fire" });
      await waitFor(() => runs === 1, { description: "the handler running" });

      // Hold the message's row so the archive waits on its lock, then end
      // the backend that runs it.
      const holder = await sql.reserve();
      try {
        await holder`begin`;
        await holder`
          select msg_id from ${holder(`pgmq.q_${queue}`)}
          where msg_id = ${msgId} for update`;
        finish.open();
        await waitFor(async () =>
          (await workerBackends(sql, queue)).some((backend) =>
            backend.waitEventType === "Lock" &&
            backend.query.includes("edge_worker.archive")
          ), { description: "the archive waiting on the row lock" });
        assert.equal(
          await terminateBackends(sql, queue, "edge_worker.archive"),
          1,
        );
        await holder`rollback`;
      } finally {
        holder.release();
      }

      const archived = await waitFor(async () => {
        const rows = await archiveRows(sql, queue);
        return rows.length === 1 ? rows : undefined;
      }, { description: "the message archived after the retry" });
      assert.deepEqual(
        archived.map((row) => [row.msg_id, row.read_ct]),
        [[msgId, 1]],
      );
      assert.equal(runs, 1, "the handler ran once");
      assert.equal((await counts(sql, queue)).queued, 0);
      assert.deepEqual([...await deadLetters(sql, queue)], []);
      const failures = connectionFailures(logs.entries, "archive");
      assert.ok(failures.length >= 1, "the failed archive was logged");
      assert.equal(failures[0].code, "57P01");
      assert.deepEqual(logs.events("stale_write"), []);
      assert.equal(stopped(), false, "the worker kept running");
    }),
);

Deno.test(
  "handlers running while Postgres restarts finish and are archived once",
  () =>
    withQueue("faults", async ({ sql, queue, logs, start }) => {
      const targets = databaseTargets();
      const finish = new Gate();
      const runs = new Map<string, number>();
      const worker = start(async (_payload: unknown, ctx: HandlerContext) => {
        runs.set(ctx.msgId, (runs.get(ctx.msgId) ?? 0) + 1);
        await gateOrAbort(finish, ctx.signal);
      }, {
        concurrency: { maxConcurrent: 6 },
        polling: { maxPollSeconds: 10 },
      });
      const stopped = settledFlag(worker.done);
      const ids = await sendBatch(
        sql,
        queue,
        Array.from({ length: 5 }, (_, n) => ({ n })),
      );
      // Five handlers hold five slots; the sixth slot's claim waits in
      // read_with_poll when the server goes down.
      await waitFor(() => runs.size === 5, {
        description: "five handlers running",
      });
      await waitFor(async () =>
        (await workerBackends(sql, queue)).some((backend) =>
          backend.state === "active" &&
          backend.query.includes("read_with_poll")
        ), { description: "a claim waiting in read_with_poll" });
      const startedAt = await serverStartedAt(sql);

      await restartPostgres(targets.pgCtl);
      assert.ok((await serverStartedAt(sql)) > startedAt, "Postgres restarted");
      finish.open();

      await waitFor(async () =>
        (await counts(sql, queue)).archived === 5, {
        timeoutMs: 30_000,
        description: "every message archived after the restart",
      });
      assert.deepEqual([...runs.keys()].toSorted(), ids.toSorted());
      assert.deepEqual(
        [...runs.values()],
        [1, 1, 1, 1, 1],
        "no handler ran twice",
      );
      assert.deepEqual([...await deadLetters(sql, queue)], []);
      assert.ok(
        connectionFailures(logs.entries, "claim").length >= 1,
        "the claim cut off by the restart was logged",
      );
      assert.deepEqual(logs.events("stale_write"), []);
      assert.equal(stopped(), false, "the worker kept running");
    }),
);

Deno.test(
  "maxConcurrent 20 with maxPgConnections 2 does all the work on 2 connections",
  () =>
    withQueue("faults", async ({ sql, queue, start }) => {
      const messages = 200;
      let running = 0;
      let mostRunning = 0;
      const worker = start(async (_payload: unknown, ctx: HandlerContext) => {
        running++;
        mostRunning = Math.max(mostRunning, running);
        try {
          await ctx.sql`select pg_sleep(0.01)`;
          await workFor(20, ctx.signal);
        } finally {
          running--;
        }
      }, {
        concurrency: { maxConcurrent: 20 },
        connection: { maxConnections: 2 },
      });
      const sampler = new ConnectionSampler(sql, queue, 10).start();
      try {
        await sendBatch(
          sql,
          queue,
          Array.from({ length: messages }, (_, n) => ({ n })),
        );
        await waitFor(
          async () => (await counts(sql, queue)).archived === messages,
          { timeoutMs: 60_000, description: "every message archived" },
        );
      } finally {
        await sampler.stop();
      }

      const name = workerApplicationName(queue, worker.workerId);
      assert.ok(sampler.samples.taken > 10, "connections were sampled");
      assert.ok(sampler.maxFor(name) >= 1, "the worker's connections seen");
      assert.ok(
        sampler.maxFor(name) <= 2,
        `at most 2 server connections, saw ${sampler.maxFor(name)}`,
      );
      assert.equal(mostRunning, 20, "20 handlers ran at once");
      assert.deepEqual([...await attemptErrors(sql, queue)], []);
    }),
);

/** How a batch of queries through a pooler ended. */
interface QueryTally {
  answered: number;
  failed: string[];
  unanswered: number;
}

/**
 * Runs `rounds` rounds of `width` concurrent parameterised queries (two
 * different statements) on `client`, each given `timeoutMs` to answer.
 */
async function tallyQueries(
  client: postgres.Sql,
  rounds: number,
  width: number,
  timeoutMs: number,
): Promise<QueryTally> {
  const tally: QueryTally = { answered: 0, failed: [], unanswered: 0 };
  for (let round = 0; round < rounds; round++) {
    const outcomes = await Promise.all(
      Array.from({ length: width }, async (_, i) => {
        const query = i % 2 === 0
          ? client`select ${i}::int + ${round}::int as value`
          : client`select ${String(i)}::text || ${"x"}::text as value`;
        let timer: number | undefined;
        const late = new Promise<"late">((resolve) => {
          timer = setTimeout(() => resolve("late"), timeoutMs);
        });
        try {
          return await Promise.race([query, late]);
        } catch (error) {
          const { code, message } = error as { code?: string; message: string };
          return `${code ?? "no code"}: ${message}`;
        } finally {
          clearTimeout(timer);
        }
      }),
    );
    for (const outcome of outcomes) {
      if (outcome === "late") tally.unanswered++;
      else if (typeof outcome === "string") tally.failed.push(outcome);
      else tally.answered++;
    }
  }
  return tally;
}

Deno.test(
  "postgres.js with prepared statements fails behind a transaction pooler",
  async () => {
    const { pgbouncerTransaction } = databaseTargets();
    const connect = (prepare: boolean) =>
      postgres(pgbouncerTransaction, {
        prepare,
        max: 4,
        onnotice: () => {},
        connection: { application_name: "edge_worker_prepare_probe" },
      });

    const unprepared = connect(false);
    const plain = await tallyQueries(unprepared, 5, 8, 1_500);
    await unprepared.end({ timeout: 1 });
    assert.deepEqual(plain, { answered: 40, failed: [], unanswered: 0 });

    const prepared = connect(true);
    const broken = await tallyQueries(prepared, 5, 8, 1_500);
    await prepared.end({ timeout: 1 });
    // Prepared statements live on one server connection while the pooler
    // hands each transaction to any of them: Postgres answers "prepared
    // statement ... does not exist" and pgbouncer 1.18 then loses track of
    // the replies, so queries fail or are never answered.
    assert.ok(
      broken.failed.length + broken.unanswered > 0,
      `every prepared query was answered: ${JSON.stringify(broken)}`,
    );
    for (const failure of broken.failed) {
      assert.match(failure, /prepared statement/);
    }
  },
);

Deno.test(
  "the worker's handlers and writes work through pgbouncer in transaction mode",
  () =>
    withQueue("faults", async ({ sql, queue, logs, start }) => {
      const { pgbouncerTransaction } = databaseTargets();
      const messages = 200;
      start(async (_payload: unknown, ctx: HandlerContext) => {
        const [row] = await ctx.sql<{ id: string }[]>`
          select ${ctx.msgId}::bigint as id`;
        assert.equal(row.id, ctx.msgId);
      }, {
        concurrency: { maxConcurrent: 8 },
        connection: { url: pgbouncerTransaction, maxConnections: 4 },
      });
      await sendBatch(
        sql,
        queue,
        Array.from({ length: messages }, (_, n) => ({ n })),
      );
      await waitFor(
        async () => (await counts(sql, queue)).archived === messages,
        { timeoutMs: 60_000, description: "every message archived" },
      );
      assert.deepEqual([...await attemptErrors(sql, queue)], []);
      assert.deepEqual(logs.events("db_call_failed"), []);
    }),
);

Deno.test(
  "the worker works through pgbouncer in session mode",
  () =>
    withQueue("faults", async ({ sql, queue, logs, start }) => {
      const { pgbouncerSession } = databaseTargets();
      const messages = 100;
      start(async (_payload: unknown, ctx: HandlerContext) => {
        await ctx.sql`select ${ctx.msgId}::bigint as id`;
      }, { connection: { url: pgbouncerSession, maxConnections: 4 } });
      await sendBatch(
        sql,
        queue,
        Array.from({ length: messages }, (_, n) => ({ n })),
      );
      await waitFor(
        async () => (await counts(sql, queue)).archived === messages,
        { timeoutMs: 60_000, description: "every message archived" },
      );
      assert.deepEqual([...await attemptErrors(sql, queue)], []);
      assert.deepEqual(logs.events("db_call_failed"), []);
    }),
);

Deno.test(
  "a connection ended during the pool's type fetch does not end the worker",
  () =>
    withQueue("faults", async ({ sql, queue, logs, start }) => {
      await using proxy = new FaultProxy(databaseUrl());
      // postgres.js asks for the array types as the first statement of
      // every new connection (its fetch_types option, on by default) and
      // drops that query's promise, so its failure is an unhandled
      // rejection that ends the process (porsager/postgres#1192, #1223).
      // A terminated backend or a pooler refusing logins right after a
      // connect is enough; the chaos run hits it through pgbouncer.
      proxy.failNextStatement("pg_catalog.pg_type");
      const worker = start(() => {}, { connection: { url: proxy.url } });
      const stopped = settledFlag(worker.done);

      await sendBatch(sql, queue, [{ n: 1 }, { n: 2 }, { n: 3 }]);
      await waitFor(async () => (await counts(sql, queue)).archived === 3, {
        description: "the messages archived",
      });
      assert.equal(proxy.fired, 1, "the type fetch was cut off");
      assert.equal(stopped(), false, "the worker kept running");
      assert.ok(logs.events("worker_started").length === 1);
      await worker.stop();
    }),
);

Deno.test(
  "an archive left unanswered on a wedged connection times out and is retried",
  () =>
    withQueue("faults", async ({ sql, queue, logs, start }) => {
      await using proxy = new FaultProxy(databaseUrl());
      // The statement is never forwarded nor answered and its connection
      // stays open: what postgres.js can leave behind when a socket closes
      // mid-write. Without a deadline the worker would wait for it forever.
      proxy.swallowNextStatement("edge_worker.archive");
      const worker = start(() => {}, {
        connection: { url: proxy.url, queryTimeoutSeconds: 1 },
      });

      await sendBatch(sql, queue, [{ n: 1 }]);
      await waitFor(async () => (await counts(sql, queue)).archived === 1, {
        description: "the message archived by the retried write",
      });
      assert.equal(proxy.fired, 1, "the first archive was swallowed");
      const [timedOut] = logs.events("db_call_failed");
      assert.equal(timedOut.call, "archive");
      assert.equal(timedOut.code, "CALL_TIMEOUT");
      assert.equal(timedOut.kind, "connection");
      await worker.stop();
    }),
);
