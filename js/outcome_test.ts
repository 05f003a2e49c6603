import assert from "node:assert/strict";
import { NonRetryableError, RetryAfterError } from "./errors.ts";
import { failedOutcome } from "./outcome.ts";

Deno.test("failedOutcome describes an Error by name and message", () => {
  assert.deepEqual(failedOutcome(new TypeError("bad input")), {
    ok: false,
    errorName: "TypeError",
    errorMessage: "bad input",
    retryable: true,
    retryAfterMs: null,
  });
});

Deno.test("failedOutcome makes NonRetryableError not retryable", () => {
  const outcome = failedOutcome(new NonRetryableError("malformed"));
  assert.equal(outcome.ok, false);
  assert.equal(!outcome.ok && outcome.retryable, false);
  assert.equal(!outcome.ok && outcome.errorName, "NonRetryableError");
});

Deno.test("failedOutcome carries the delay of RetryAfterError", () => {
  const outcome = failedOutcome(new RetryAfterError("rate limited", 1500));
  assert.deepEqual(outcome, {
    ok: false,
    errorName: "RetryAfterError",
    errorMessage: "rate limited",
    retryable: true,
    retryAfterMs: 1500,
  });
});

Deno.test("RetryAfterError refuses a negative or non-finite delay", () => {
  assert.throws(() => new RetryAfterError("x", -1), RangeError);
  assert.throws(() => new RetryAfterError("x", Number.NaN), RangeError);
  assert.throws(() => new RetryAfterError("x", Infinity), RangeError);
});

Deno.test("failedOutcome tags thrown non-errors by type", () => {
  const cases: [unknown, string, string][] = [
    ["boom", "string", "boom"],
    [undefined, "undefined", "undefined"],
    [null, "null", "null"],
    [42, "number", "42"],
    [10n, "bigint", "10"],
    [{ code: 7 }, "Object", '{"code":7}'],
  ];
  for (const [thrown, name, message] of cases) {
    const outcome = failedOutcome(thrown);
    assert.equal(!outcome.ok && outcome.errorName, name, String(name));
    assert.equal(!outcome.ok && outcome.errorMessage, message, String(name));
    assert.equal(!outcome.ok && outcome.retryable, true);
  }
});

Deno.test("failedOutcome uses the class name of a thrown object", () => {
  class Refusal {
    toString() {
      return "refused";
    }
  }
  const outcome = failedOutcome(new Refusal());
  assert.equal(!outcome.ok && outcome.errorName, "Refusal");
  assert.equal(!outcome.ok && outcome.errorMessage, "refused");
});

Deno.test("failedOutcome survives an object whose toString throws", () => {
  const thrown = Object.create(null);
  thrown.toString = () => {
    throw new Error("no text for you");
  };
  thrown.toJSON = () => {
    throw new Error("no JSON either");
  };
  const outcome = failedOutcome(thrown);
  assert.equal(outcome.ok, false);
  assert.equal(!outcome.ok && typeof outcome.errorMessage, "string");
});

Deno.test("failedOutcome survives a proxy whose every trap throws", () => {
  const hostile = new Proxy({}, {
    get() {
      throw new Error("get");
    },
    getPrototypeOf() {
      throw new Error("getPrototypeOf");
    },
    ownKeys() {
      throw new Error("ownKeys");
    },
    getOwnPropertyDescriptor() {
      throw new Error("getOwnPropertyDescriptor");
    },
  });
  const outcome = failedOutcome(hostile);
  assert.equal(outcome.ok, false);
  assert.equal(!outcome.ok && typeof outcome.errorName, "string");
  assert.equal(!outcome.ok && typeof outcome.errorMessage, "string");
});

Deno.test("failedOutcome survives an error whose message getter throws", () => {
  const error = new Error("hidden");
  Object.defineProperty(error, "message", {
    get() {
      throw new Error("getter");
    },
  });
  const outcome = failedOutcome(error);
  assert.equal(!outcome.ok && outcome.errorName, "Error");
  assert.equal(!outcome.ok && typeof outcome.errorMessage, "string");
});
