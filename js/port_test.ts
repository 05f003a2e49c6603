import assert from "node:assert/strict";
import type { ResolvedConfig } from "./config.ts";
import { HandlerAbortError, NonRetryableError } from "./errors.ts";
import type { Handler } from "./handler.ts";
import { createLogger } from "./log.ts";
import type { Sql } from "./pool.ts";
import { PostgresPort } from "./port.ts";
import * as query from "./queries.ts";

const CONFIG = {
  queue: { name: "emails", batchSize: 10 },
  connection: { maxConnections: 4, url: null },
  logging: { level: "error" },
} as unknown as ResolvedConfig;

const WORKER_ID = "00000000-0000-4000-8000-000000000001";
const FINAL_STATS = {
  succeeded: 7,
  failed: 2,
  deadLettered: 1,
  stale: 3,
  inFlight: 0,
  lastError: "E: x",
};
const BIG_ID = "9007199254740993"; // 2^53 + 1: not exact as a number

/** A stand-in for the postgres.js pool that answers from a script. */
class FakeSql {
  calls: { statement: string; parameters: unknown[] }[] = [];
  ended = false;
  cancelled = 0;
  answer: (statement: string) => unknown[] = () => [];

  unsafe(statement: string, parameters: unknown[]) {
    this.calls.push({ statement, parameters });
    const result = Promise.resolve(this.answer(statement));
    return Object.assign(result, { cancel: () => this.cancelled++ });
  }

  end(_options: { timeout: number }): Promise<void> {
    this.ended = true;
    return Promise.resolve();
  }
}

function makePort<T>(handler: Handler<T>, fake = new FakeSql()) {
  const port = new PostgresPort<T>({
    sql: fake as unknown as Sql,
    handler,
    config: CONFIG,
    workerId: WORKER_ID,
    functionName: "emails-fn",
    logger: createLogger({ level: "error", sink: () => {} }),
    env: () => ({ A: "1" }),
  });
  return { port, fake };
}

function claimRow(msgId: string, message: unknown) {
  return {
    msg_id: msgId,
    read_ct: 1,
    enqueued_at: new Date(1_000),
    vt: new Date(31_000),
    message,
  };
}

Deno.test("claim keeps ids exact and holds the payload", async () => {
  const { port, fake } = makePort(() => {});
  fake.answer = () => [claimRow(BIG_ID, { to: "a@b.c" })];
  const claimed = await port.claim(5, 30, 2, 100);
  assert.deepEqual(claimed, [
    { msgId: BIG_ID, readCt: 1 },
  ]);
  assert.equal(fake.calls[0].statement, query.CLAIM);
  assert.deepEqual(fake.calls[0].parameters, ["emails", 30, 5, 2, 100]);
  assert.equal(port.heldPayloads, 1);
});

Deno.test(
  "startHandler passes payload and context, then drops them",
  async () => {
    let seen: unknown[] = [];
    const { port, fake } = makePort<{ to: string }>((payload, ctx) => {
      seen = [
        payload,
        ctx.msgId,
        ctx.attempt,
        ctx.readCt,
        ctx.enqueuedAt.getTime(),
        ctx.queueName,
        ctx.workerId,
        ctx.env.A,
        ctx.signal.aborted,
      ];
    });
    fake.answer = () => [claimRow(BIG_ID, { to: "a@b.c" })];
    await port.claim(1, 30, 1, 100);
    const outcome = await port.startHandler(BIG_ID, 1, 1);
    assert.deepEqual(outcome, { ok: true });
    assert.deepEqual(seen, [
      { to: "a@b.c" },
      BIG_ID,
      1,
      1,
      1_000,
      "emails",
      WORKER_ID,
      "1",
      false,
    ]);
    assert.equal(port.heldPayloads, 0);
  },
);

Deno.test("startHandler passes a JSON null payload through", async () => {
  let payload: unknown = "unset";
  const { port, fake } = makePort((p) => payload = p);
  fake.answer = () => [claimRow("7", null)];
  await port.claim(1, 30, 1, 100);
  await port.startHandler("7", 1, 1);
  assert.equal(payload, null);
});

Deno.test("startHandler never rejects, whatever is thrown", async () => {
  const thrown: unknown[] = [
    new NonRetryableError("no"),
    "text",
    undefined,
    null,
    {
      toString: () => {
        throw new Error("x");
      },
    },
  ];
  for (const value of thrown) {
    const { port, fake } = makePort(() => {
      throw value;
    });
    fake.answer = () => [claimRow("1", {})];
    await port.claim(1, 30, 1, 100);
    const outcome = await port.startHandler("1", 1, 1);
    assert.equal(outcome.ok, false);
    assert.equal(port.heldPayloads, 0);
  }
});

Deno.test("startHandler of an unknown id fails without rejecting", async () => {
  const { port } = makePort(() => {});
  const outcome = await port.startHandler("404", 1, 1);
  assert.equal(outcome.ok, false);
});

Deno.test("abortHandler aborts with a HandlerAbortError", async () => {
  let signal: AbortSignal | undefined;
  const released = Promise.withResolvers<void>();
  const { port, fake } = makePort(async (_payload, ctx) => {
    signal = ctx.signal;
    await released.promise;
  });
  fake.answer = () => [claimRow("3", {})];
  await port.claim(1, 30, 1, 100);
  const running = port.startHandler("3", 1, 1);
  await Promise.resolve();
  port.abortHandler("3", "timeout");
  await new Promise<void>((resolve) => queueMicrotask(resolve));
  assert.ok(signal?.aborted);
  assert.ok(signal?.reason instanceof HandlerAbortError);
  assert.equal((signal?.reason as HandlerAbortError).reason, "timeout");
  released.resolve();
  assert.deepEqual(await running, { ok: true });
});

Deno.test(
  "batch writes bind their arrays and return the changed ids",
  async () => {
    const { port, fake } = makePort(() => {});
    fake.answer = () => [{ msg_id: BIG_ID }];
    assert.deepEqual(await port.archive([BIG_ID, "2"], [1, 1]), [BIG_ID]);
    assert.deepEqual(fake.calls.at(-1), {
      statement: query.ARCHIVE,
      parameters: ["emails", [BIG_ID, "2"], [1, 1]],
    });
    await port.retry(["2"], [1], [5], ["Error"], ["boom"]);
    assert.deepEqual(fake.calls.at(-1)?.parameters, [
      "emails",
      ["2"],
      [1],
      [5],
      ["Error"],
      ["boom"],
      WORKER_ID,
    ]);
    await port.deadLetter(["2"], [3], ["Error"], ["boom"]);
    assert.equal(fake.calls.at(-1)?.statement, query.DEAD_LETTER);
    await port.extend(["2"], [3], 30);
    assert.deepEqual(fake.calls.at(-1)?.parameters, ["emails", ["2"], [3], 30]);
  },
);

Deno.test("release drops the payloads of released messages", async () => {
  const { port, fake } = makePort(() => {});
  fake.answer = (statement) =>
    statement === query.CLAIM
      ? [claimRow("1", {}), claimRow("2", {})]
      : [{ msg_id: "1" }];
  await port.claim(2, 30, 1, 100);
  assert.equal(port.heldPayloads, 2);
  await port.release(["1", "2"], [1, 1]);
  assert.equal(port.heldPayloads, 0);
});

Deno.test("heartbeat reports deprecation", async () => {
  const { port, fake } = makePort(() => {});
  fake.answer = () => [{ deprecated: true }];
  const stats = {
    succeeded: 1,
    failed: 2,
    deadLettered: 3,
    stale: 5,
    inFlight: 4,
    lastError: null,
  };
  assert.deepEqual(await port.heartbeat(stats), { deprecated: true });
  assert.deepEqual(fake.calls[0].parameters, [
    WORKER_ID,
    1,
    2,
    3,
    5,
    4,
    null,
  ]);
});

Deno.test("cancelClaim cancels the claim in flight only", async () => {
  const { port, fake } = makePort(() => {});
  port.cancelClaim();
  assert.equal(fake.cancelled, 0);
  const claiming = port.claim(1, 30, 1, 100);
  port.cancelClaim();
  await claiming;
  assert.equal(fake.cancelled, 1);
  port.cancelClaim();
  assert.equal(fake.cancelled, 1);
});

Deno.test(
  "markStopped records counters and stop, then ends the pool",
  async () => {
    const { port, fake } = makePort(() => {});
    await port.markStopped(FINAL_STATS);
    assert.equal(fake.calls[0].statement, query.STOP);
    assert.deepEqual(fake.calls[0].parameters, [
      WORKER_ID,
      7,
      2,
      1,
      3,
      0,
      "E: x",
    ]);
    assert.equal(fake.ended, true);
  },
);

Deno.test("markStopped keeps the pool open when the stop failed", async () => {
  const { port, fake } = makePort(() => {});
  fake.answer = () => {
    throw Object.assign(new Error("gone"), { code: "CONNECTION_CLOSED" });
  };
  await assert.rejects(port.markStopped(FINAL_STATS), {
    code: "CONNECTION_CLOSED",
  });
  assert.equal(fake.ended, false);
  await port.close();
  assert.equal(fake.ended, true);
});
