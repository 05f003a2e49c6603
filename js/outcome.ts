/**
 * Turning whatever a handler threw into a {@linkcode HandlerOutcome}. A
 * handler may throw anything: an `Error`, a string, `undefined`, a proxy
 * whose every property access throws. The conversion never throws; it only
 * describes the value. Truncation and NUL stripping happen in Rust.
 *
 * @module
 */

import type { HandlerOutcome } from "./boundary.ts";
import { NonRetryableError, RetryAfterError } from "./errors.ts";

/** The outcome of a handler that returned normally. */
export const SUCCEEDED: HandlerOutcome = Object.freeze({ ok: true });

/** Stands in for a value that cannot be described at all. */
const UNPRINTABLE = "(value could not be converted to text)";

/**
 * Describes a thrown value as a failed outcome. `NonRetryableError` is not
 * retryable; `RetryAfterError` carries its delay; everything else is a
 * retryable failure left to the retry policy.
 */
export function failedOutcome(thrown: unknown): HandlerOutcome {
  try {
    return {
      ok: false,
      errorName: errorName(thrown),
      errorMessage: errorMessage(thrown),
      retryable: !isInstance(thrown, NonRetryableError),
      retryAfterMs: retryAfterMs(thrown),
    };
  } catch {
    return {
      ok: false,
      errorName: "Error",
      errorMessage: UNPRINTABLE,
      retryable: true,
      retryAfterMs: null,
    };
  }
}

/** `instanceof` that survives proxies whose traps throw. */
function isInstance(
  value: unknown,
  // deno-lint-ignore no-explicit-any -- any constructor signature is fine here
  type: abstract new (...args: any[]) => unknown,
): boolean {
  try {
    return value instanceof type;
  } catch {
    return false;
  }
}

function retryAfterMs(thrown: unknown): number | null {
  if (!isInstance(thrown, RetryAfterError)) return null;
  const delay = safeGet(thrown, "delayMs");
  return typeof delay === "number" && Number.isFinite(delay) && delay >= 0
    ? delay
    : null;
}

/** The class name for errors and objects, a type tag for anything else. */
function errorName(thrown: unknown): string {
  if (thrown === null) return "null";
  if (typeof thrown !== "object" && typeof thrown !== "function") {
    return typeof thrown;
  }
  const name = isInstance(thrown, Error) ? safeGet(thrown, "name") : undefined;
  if (typeof name === "string" && name !== "") return name;
  const ctor = safeGet(thrown, "constructor");
  const ctorName = typeof ctor === "function" ? safeGet(ctor, "name") : "";
  return typeof ctorName === "string" && ctorName !== "" ? ctorName : "Object";
}

/** The message for errors, the text of anything else. */
function errorMessage(thrown: unknown): string {
  if (typeof thrown === "string") return thrown;
  if (thrown === undefined || thrown === null) return String(thrown);
  if (isInstance(thrown, Error)) {
    const message = safeGet(thrown, "message");
    return typeof message === "string" ? message : safeText(message);
  }
  return safeText(thrown);
}

/** Reads a property, treating a throwing getter as absent. */
function safeGet(target: unknown, key: string): unknown {
  try {
    return (target as Record<string, unknown>)[key];
  } catch {
    return undefined;
  }
}

/** JSON for plain data, `String()` otherwise, a placeholder if both throw. */
function safeText(value: unknown): string {
  if (typeof value === "object" && value !== null) {
    try {
      const json = JSON.stringify(value);
      if (typeof json === "string" && json !== "{}") return json;
    } catch {
      // Circular or throwing toJSON: fall back to String() below.
    }
  }
  try {
    return String(value);
  } catch {
    return UNPRINTABLE;
  }
}
