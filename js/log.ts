/**
 * Structured logging: one JSON object per line, in the fixed vocabulary of
 * `STYLE.md` (component, short event name, snake_case fields). Library code
 * logs only through a {@linkcode Logger}; the wasm driver reaches it through
 * `WorkerPort.log`.
 *
 * @module
 */

import type { LogLevel } from "./config.ts";

/** Value of the `component` field on every line this library prints. */
export const LOG_COMPONENT = "edge_worker";

const SEVERITY: Readonly<Record<LogLevel, number>> = {
  debug: 0,
  info: 1,
  warn: 2,
  error: 3,
};

/** Receives each formatted line; the default writes to the console. */
export type LogSink = (level: LogLevel, line: string) => void;

/** Writes debug and info to stdout, warn and error to stderr. */
export const consoleSink: LogSink = (level, line) => {
  switch (level) {
    case "debug":
      console.debug(line);
      break;
    case "info":
      console.info(line);
      break;
    case "warn":
      console.warn(line);
      break;
    case "error":
      console.error(line);
      break;
  }
};

/** Options of {@linkcode createLogger}. */
export interface LoggerOptions {
  /** Least severe level printed. */
  level: LogLevel;
  /** Fields added to every line, such as `queue` and `worker_id`. */
  base?: Record<string, unknown>;
  /** Where lines go; defaults to {@linkcode consoleSink}. */
  sink?: LogSink;
}

/** A structured logger bound to a level and a set of base fields. */
export interface Logger {
  /** Prints one line if `level` passes the filter. */
  log(level: LogLevel, event: string, fields?: Record<string, unknown>): void;
  /** `log("debug", ...)`. */
  debug(event: string, fields?: Record<string, unknown>): void;
  /** `log("info", ...)`. */
  info(event: string, fields?: Record<string, unknown>): void;
  /** `log("warn", ...)`. */
  warn(event: string, fields?: Record<string, unknown>): void;
  /** `log("error", ...)`. */
  error(event: string, fields?: Record<string, unknown>): void;
  /** Whether a line at `level` would be printed. */
  enabled(level: LogLevel): boolean;
}

/**
 * Creates a logger that prints lines such as
 * `{"level":"info","component":"edge_worker","event":"message_archived",
 * "queue":"emails","worker_id":"…","msg_id":"42"}`.
 *
 * The `level`, `component` and `event` keys cannot be overridden by fields.
 * Values JSON cannot hold are converted: bigints to strings, errors to
 * `{name, message}`; a line that still cannot be serialised is printed with
 * `fields_error` instead of its fields.
 */
export function createLogger(options: LoggerOptions): Logger {
  const threshold = SEVERITY[options.level];
  const base = options.base ?? {};
  const sink = options.sink ?? consoleSink;

  const log = (
    level: LogLevel,
    event: string,
    fields: Record<string, unknown> = {},
  ): void => {
    if (SEVERITY[level] < threshold) return;
    const head = { level, component: LOG_COMPONENT, event };
    const line = Object.assign({ ...head }, base, fields, head);
    sink(level, formatLine(line, head, base));
  };

  return {
    log,
    debug: (event, fields) => log("debug", event, fields),
    info: (event, fields) => log("info", event, fields),
    warn: (event, fields) => log("warn", event, fields),
    error: (event, fields) => log("error", event, fields),
    enabled: (level) => SEVERITY[level] >= threshold,
  };
}

function formatLine(
  line: Record<string, unknown>,
  head: Record<string, unknown>,
  base: Record<string, unknown>,
): string {
  try {
    return JSON.stringify(line, jsonSafe);
  } catch (error) {
    const reason = error instanceof Error ? error.message : "unserialisable";
    return JSON.stringify({ ...head, ...base, fields_error: reason }, jsonSafe);
  }
}

function jsonSafe(_key: string, value: unknown): unknown {
  if (typeof value === "bigint") return value.toString();
  if (value instanceof Error) {
    return { name: value.name, message: value.message };
  }
  return value;
}
