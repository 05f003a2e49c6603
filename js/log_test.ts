import assert from "node:assert/strict";
import type { LogLevel } from "./config.ts";
import { createLogger } from "./log.ts";

function capture(level: LogLevel) {
  const lines: { level: LogLevel; line: Record<string, unknown> }[] = [];
  const logger = createLogger({
    level,
    base: { queue: "emails", worker_id: "w-1" },
    sink: (lineLevel, text) =>
      lines.push({ level: lineLevel, line: JSON.parse(text) }),
  });
  return { logger, lines };
}

Deno.test("logger prints one JSON object with the fixed keys first", () => {
  const { logger, lines } = capture("debug");
  logger.info("message_archived", { msg_id: "42" });
  assert.equal(lines.length, 1);
  assert.deepEqual(Object.keys(lines[0].line), [
    "level",
    "component",
    "event",
    "queue",
    "worker_id",
    "msg_id",
  ]);
  assert.deepEqual(lines[0].line, {
    level: "info",
    component: "edge_worker",
    event: "message_archived",
    queue: "emails",
    worker_id: "w-1",
    msg_id: "42",
  });
});

Deno.test("logger drops lines below its level", () => {
  const { logger, lines } = capture("warn");
  logger.debug("a");
  logger.info("b");
  logger.warn("c");
  logger.error("d");
  assert.deepEqual(lines.map((l) => l.line.event), ["c", "d"]);
  assert.equal(logger.enabled("info"), false);
  assert.equal(logger.enabled("error"), true);
});

Deno.test("logger fields cannot override level, component or event", () => {
  const { logger, lines } = capture("debug");
  logger.warn("real", { level: "debug", component: "x", event: "fake" });
  assert.equal(lines[0].line.level, "warn");
  assert.equal(lines[0].line.component, "edge_worker");
  assert.equal(lines[0].line.event, "real");
});

Deno.test("logger converts bigints and errors", () => {
  const { logger, lines } = capture("debug");
  logger.error("failed", { n: 2n ** 64n, error: new RangeError("too big") });
  assert.equal(lines[0].line.n, "18446744073709551616");
  assert.deepEqual(lines[0].line.error, {
    name: "RangeError",
    message: "too big",
  });
});

Deno.test("logger prints a line even when fields are circular", () => {
  const { logger, lines } = capture("debug");
  const loop: Record<string, unknown> = {};
  loop.self = loop;
  logger.info("odd", { loop });
  assert.equal(lines[0].line.event, "odd");
  assert.equal(typeof lines[0].line.fields_error, "string");
});
