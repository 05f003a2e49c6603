/**
 * A worker's life beyond single messages, against real Postgres and pgmq:
 * its heartbeat keeps going while a long handler runs, and a shutdown hands
 * claimed-but-unstarted messages back at once, without using an attempt.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  archiveRows,
  attemptErrors,
  counts,
  queueRows,
  send,
  sendBatch,
  type Sql,
  waitFor,
  workers,
} from "./support/db.ts";
import {
  Gate,
  type QueueFixture,
  withQueue,
} from "./support/worker_fixture.ts";

Deno.test(
  "heartbeats advance while one handler runs for several intervals",
  () =>
    withQueue("heartbeat", async ({ sql, queue, start }) => {
      await send(sql, queue, { n: 1 });
      const started = new Gate();
      const finish = new Gate();

      const worker = start(async () => {
        started.open();
        await finish.passed;
      }, { lifecycle: { heartbeatIntervalSeconds: 1 } });
      await started.passed;
      const beats: { at: Date; inFlight: number }[] = [];
      try {
        await waitFor(async () => {
          const [row] = await workers(sql, queue);
          const last = beats.at(-1);
          if (last === undefined || row.last_heartbeat_at > last.at) {
            beats.push({ at: row.last_heartbeat_at, inFlight: row.in_flight });
          }
          // The first value may predate the handler; three advances follow.
          return beats.length >= 4;
        }, {
          description: "three heartbeats while the handler runs",
          timeoutMs: 8_000,
          intervalMs: 100,
        });
        assert.equal(finish.isOpen, false);
      } finally {
        finish.open();
      }
      await waitFor(async () => (await counts(sql, queue)).archived === 1, {
        description: "the long message archived",
      });
      await worker.stop();

      assert.deepEqual(beats.slice(1).map((beat) => beat.inFlight), [1, 1, 1]);
    }),
);

/**
 * Test-only objects in their own schema: a log of every change to the
 * queue's rows, and a gate that holds any claim (an update raising
 * `read_ct`) until the test opens it. The gate swallows query
 * cancellation, so a claim the worker cancels while stopping still returns
 * its messages, after the stop: the case the worker must release.
 */
class ClaimGate {
  readonly #sql: Sql;
  readonly #schema: string;
  readonly #queue: string;
  // Two int4 keys, as pg_locks shows them in classid and objid.
  readonly #keys = crypto.getRandomValues(new Int32Array(2));
  #holder: Awaited<ReturnType<Sql["reserve"]>> | undefined;

  private constructor(sql: Sql, queue: string) {
    this.#sql = sql;
    this.#queue = queue;
    this.#schema = `fx_${queue}`;
  }

  static async install(sql: Sql, queue: string): Promise<ClaimGate> {
    const gate = new ClaimGate(sql, queue);
    const schema = sql(gate.#schema);
    const [k1, k2] = gate.#keys;
    await sql.begin(async (tx) => {
      await tx`create schema ${schema}`;
      await tx`
        create table ${schema}.changes (
          id bigint generated always as identity primary key,
          msg_id bigint not null,
          old_read_ct int not null,
          new_read_ct int not null
        )`;
      await tx`create sequence ${schema}.cancels`;
      await tx.unsafe(`
        create function ${gate.#schema}.on_change() returns trigger
        language plpgsql as $$
        begin
          insert into ${gate.#schema}.changes (msg_id, old_read_ct, new_read_ct)
          values (new.msg_id, old.read_ct, new.read_ct);
          if new.read_ct > old.read_ct then
            loop
              begin
                perform pg_advisory_xact_lock_shared(${k1}, ${k2});
                exit;
              exception when query_canceled then
                perform nextval('${gate.#schema}.cancels');
              end;
            end loop;
          end if;
          return null;
        end $$`);
      await tx.unsafe(`
        create trigger claim_gate after update on pgmq.q_${queue}
        for each row execute function ${gate.#schema}.on_change()`);
    });
    return gate;
  }

  /** Makes claims wait from now on. */
  async close(): Promise<void> {
    this.#holder = await this.#sql.reserve();
    const [k1, k2] = this.#keys;
    await this.#holder`select pg_advisory_lock(${k1}::int, ${k2}::int)`;
  }

  /** Lets waiting and later claims through. */
  async open(): Promise<void> {
    const holder = this.#holder;
    if (holder === undefined) return;
    this.#holder = undefined;
    const [k1, k2] = this.#keys;
    try {
      await holder`select pg_advisory_unlock(${k1}::int, ${k2}::int)`;
    } finally {
      holder.release();
    }
  }

  /** Whether a claim is waiting at the gate. */
  async claimWaiting(): Promise<boolean> {
    const [k1, k2] = this.#keys;
    const [{ waiting }] = await this.#sql<{ waiting: boolean }[]>`
      select exists (
        select from pg_locks
        where locktype = 'advisory' and not granted
          and classid::int = ${k1}::int and objid::int = ${k2}::int
          and objsubid = 2
      ) as waiting`;
    return waiting;
  }

  /** Whether a cancel reached a claim waiting at the gate. */
  async cancelSwallowed(): Promise<boolean> {
    const [{ called }] = await this.#sql<{ called: boolean }[]>`
      select is_called as called from ${this.#sql(this.#schema)}.cancels`;
    return called;
  }

  /** Every change to the queue's rows, in order. */
  changes(): Promise<{ msg_id: string; from: number; to: number }[]> {
    return this.#sql<{ msg_id: string; from: number; to: number }[]>`
      select msg_id, old_read_ct as from, new_read_ct as to
      from ${this.#sql(this.#schema)}.changes
      order by id`;
  }

  /** Opens the gate and drops the trigger and the schema. */
  async remove(): Promise<void> {
    await this.open();
    await this.#sql.unsafe(
      `drop trigger if exists claim_gate on pgmq.q_${this.#queue}`,
    );
    await this.#sql`drop schema if exists ${this.#sql(this.#schema)} cascade`;
  }
}

Deno.test(
  "a shutdown releases claimed, unstarted messages without using an attempt",
  () =>
    withQueue("release", async (fixture) => {
      const gate = await ClaimGate.install(fixture.sql, fixture.queue);
      try {
        await releaseOnShutdown(fixture, gate);
      } finally {
        await gate.remove();
      }
    }),
);

async function releaseOnShutdown(
  { sql, queue, start }: QueueFixture,
  gate: ClaimGate,
): Promise<void> {
  const leaseSeconds = 60;
  const config = {
    concurrency: { maxConcurrent: 10 },
    lease: { visibilityTimeoutSeconds: leaseSeconds },
    retry: { strategy: "fixed", delaySeconds: 0, limit: 3 },
  } as const;
  const blocker = await send(sql, queue, { kind: "blocker" });
  const blocking = new Gate();
  const ranOnA: string[] = [];

  // A runs a handler that only ends when it is aborted, and keeps claiming
  // with its free slots.
  const a = start(async (_payload, ctx) => {
    ranOnA.push(ctx.msgId);
    blocking.open();
    await new Promise((_resolve, reject) => {
      ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason));
    });
  }, config);
  await blocking.passed;
  await gate.close();
  const unstarted = await sendBatch(
    sql,
    queue,
    Array.from({ length: 5 }, (_, n) => ({ n })),
  );
  await waitFor(() => gate.claimWaiting(), {
    description: "A's claim of the new messages waiting at the gate",
  });

  const stopped = a.stop("shutdown", Date.now() + 5_000);
  await waitFor(() => gate.cancelSwallowed(), {
    description: "A cancelling its claim as it stops",
  });
  await gate.open();
  await stopped;

  assert.deepEqual(ranOnA, [blocker]);
  const [{ now }] = await sql<{ now: Date }[]>`select clock_timestamp() as now`;
  const left = await queueRows(sql, queue);
  assert.deepEqual(
    left.map((row) => [row.msg_id, row.read_ct, row.vt <= now]),
    [
      [blocker, 1, true],
      ...unstarted.map((id) => [id, 0, true]),
    ],
    "A retried its aborted handler's message and released the others",
  );
  const changes = await gate.changes();
  for (const id of unstarted) {
    assert.deepEqual(
      changes.filter((c) => c.msg_id === id).map((c) => [c.from, c.to]),
      [[0, 1], [1, 0]],
      `message ${id} was claimed by A once, then released`,
    );
  }

  const attempts = new Map<string, number>();
  const b = start((_payload, ctx) => {
    attempts.set(ctx.msgId, ctx.attempt);
  }, config);
  // Far sooner than the 60 s lease A took: B did not wait for it.
  await waitFor(async () => (await counts(sql, queue)).archived === 6, {
    description: "B finishing every message",
    timeoutMs: 10_000,
  });
  await b.stop();

  assert.deepEqual(
    unstarted.map((id) => attempts.get(id)),
    unstarted.map(() => 1),
  );
  assert.equal(attempts.get(blocker), 2);
  const archived = await archiveRows(sql, queue);
  assert.deepEqual(
    archived.map((row) => [row.msg_id, row.read_ct]),
    [[blocker, 2], ...unstarted.map((id) => [id, 1])],
  );
  const errors = await attemptErrors(sql, queue);
  assert.deepEqual(
    errors.map((e) => [e.msg_id, e.attempt, e.error_name, e.error_message]),
    [[blocker, 1, "HandlerAbortError", "handler aborted: shutdown"]],
  );
}
