/**
 * A local stand-in for the Supabase Edge Runtime, which needs Docker. It runs
 * one edge function in a child `deno run --allow-net --allow-env` (no
 * `--allow-read`, as on the platform) with `edge_runtime_shim.ts` loaded
 * first, and plays the runtime's part from outside: the HTTP trigger, the
 * retirement (`beforeunload` after the wall-clock budget, or on request) and
 * the hard kill `graceMs` after it.
 *
 * The CPU-time limit is not simulated.
 *
 * @module
 */

import {
  HOST_COMPONENT,
  PORT_ENV,
  RETIRE_PATH,
  WALL_CLOCK_ENV,
} from "./edge_protocol.ts";

/** Options of {@linkcode startEdgeFunction}. */
export interface EdgeFunctionOptions {
  /** Path or file URL of the function's `index.ts`. */
  entry: string | URL;
  /** Extra environment for the function (added to this process's). */
  env?: Record<string, string>;
  /** Port to serve on; default a free one. */
  port?: number;
  /** Wall-clock budget before `beforeunload`, in ms; default 150 000. */
  wallClockMs?: number;
  /** Time from `beforeunload` to the hard kill, in ms; default 1 000. */
  graceMs?: number;
  /** Function name in the request path; default the entry's folder name. */
  name?: string;
  /** Called with each line the function prints; default nothing. */
  onLine?: (line: OutputLine) => void;
}

/** One line of the function's output. */
export interface OutputLine {
  /** Which stream it came from. */
  stream: "stdout" | "stderr";
  /** The text, without the line break. */
  text: string;
}

/** A running edge function. */
export interface EdgeFunction extends AsyncDisposable {
  /** The port it serves on. */
  readonly port: number;
  /** The child's process id. */
  readonly pid: number;
  /** Every line printed so far. */
  readonly lines: readonly OutputLine[];
  /** Settles when the child has exited, with its status. */
  readonly exited: Promise<Deno.CommandStatus>;
  /**
   * POSTs to the function (retrying until it listens, at most `timeoutMs`,
   * default 60 000) and returns the status and body.
   */
  trigger(
    body?: unknown,
    timeoutMs?: number,
  ): Promise<{ status: number; body: string }>;
  /** Dispatches `beforeunload` now; the hard kill follows `graceMs` later. */
  retire(): Promise<void>;
  /** Sends `signal` (default SIGKILL) unless the child has exited. */
  kill(signal?: Deno.Signal): void;
  /** Resolves with the first line matching `predicate`, or rejects. */
  waitForLine(
    predicate: (line: OutputLine) => boolean,
    timeoutMs: number,
  ): Promise<OutputLine>;
  /** Lines that are JSON objects, parsed. */
  jsonLines(): Record<string, unknown>[];
}

/** Default wall-clock budget, as on Supabase's free plan. */
export const DEFAULT_WALL_CLOCK_MS = 150_000;
/** Default time between `beforeunload` and the hard kill. */
export const DEFAULT_GRACE_MS = 1_000;
/** Interval between trigger attempts while the function boots. */
const TRIGGER_RETRY_MS = 100;

const SHIM_URL = new URL("./edge_runtime_shim.ts", import.meta.url);

/**
 * Starts an edge function under the local host.
 *
 * @example Running the demo function for a while
 * ```ts
 * import { startEdgeFunction } from "./edge_host.ts";
 *
 * await using fn = await startEdgeFunction({
 *   entry: new URL(
 *     "../../supabase/functions/demo-worker/index.ts",
 *     import.meta.url,
 *   ),
 *   wallClockMs: 10_000,
 * });
 * console.log(await fn.trigger());
 * await fn.retire();
 * console.log(await fn.exited);
 * ```
 */
export async function startEdgeFunction(
  options: EdgeFunctionOptions,
): Promise<EdgeFunction> {
  const entry = options.entry instanceof URL
    ? options.entry
    : new URL(options.entry, `file://${Deno.cwd()}/`);
  const name = options.name ?? entry.pathname.split("/").at(-2) ?? "function";
  const port = options.port ?? freePort();
  const wallClockMs = options.wallClockMs ?? DEFAULT_WALL_CLOCK_MS;
  const graceMs = options.graceMs ?? DEFAULT_GRACE_MS;

  const dir = await Deno.makeTempDir({ prefix: "edge_host_" });
  const wrapper = `${dir}/main.ts`;
  await Deno.writeTextFile(
    wrapper,
    `import ${JSON.stringify(SHIM_URL.href)};\n` +
      `import ${JSON.stringify(entry.href)};\n`,
  );

  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-env",
      "--no-lock",
      "--no-prompt",
      wrapper,
    ],
    env: {
      ...options.env,
      [PORT_ENV]: String(port),
      [WALL_CLOCK_ENV]: String(wallClockMs),
      NO_COLOR: "1",
      RUST_BACKTRACE: "0",
    },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();

  const lines: OutputLine[] = [];
  const watchers = new Set<(line: OutputLine) => void>();
  const onLine = (line: OutputLine) => {
    lines.push(line);
    options.onLine?.(line);
    for (const watch of watchers) watch(line);
  };
  const reading = Promise.all([
    readLines(child.stdout, (text) => onLine({ stream: "stdout", text })),
    readLines(child.stderr, (text) => onLine({ stream: "stderr", text })),
  ]);

  let exitedYet = false;
  let killTimer: number | undefined;
  const kill = (signal: Deno.Signal = "SIGKILL") => {
    if (exitedYet) return;
    try {
      child.kill(signal);
    } catch {
      // Exited between the check and the kill.
    }
  };
  const scheduleHardKill = () => {
    if (killTimer === undefined) killTimer = setTimeout(kill, graceMs);
  };
  // The shim reports its beforeunload; the hard kill follows graceMs later.
  watchers.add((line) => {
    if (line.stream === "stderr" && isRetireReport(line.text)) {
      scheduleHardKill();
    }
  });
  // Backstop in case the child is too stuck to report.
  const backstop = setTimeout(() => kill(), wallClockMs + graceMs + 5_000);

  const exited = child.status.then(async (status) => {
    exitedYet = true;
    clearTimeout(killTimer);
    clearTimeout(backstop);
    await reading;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    return status;
  });

  const waitForLine = (
    predicate: (line: OutputLine) => boolean,
    timeoutMs: number,
  ): Promise<OutputLine> => {
    const seen = lines.find(predicate);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        watchers.delete(watch);
        reject(new Error(`no matching output line within ${timeoutMs} ms`));
      }, timeoutMs);
      const watch = (line: OutputLine) => {
        if (!predicate(line)) return;
        clearTimeout(timer);
        watchers.delete(watch);
        resolve(line);
      };
      watchers.add(watch);
    });
  };

  const base = `http://127.0.0.1:${port}`;
  return {
    port,
    pid: child.pid,
    lines,
    exited,
    trigger: (body = {}, timeoutMs = 60_000) =>
      post(`${base}/${name}`, body, timeoutMs, () => exitedYet),
    async retire() {
      await post(`${base}${RETIRE_PATH}`, {}, 5_000, () => exitedYet);
      scheduleHardKill();
    },
    kill,
    waitForLine,
    jsonLines: () => lines.flatMap((line) => parseJson(line.text)),
    async [Symbol.asyncDispose]() {
      kill();
      await exited;
    },
  };
}

function isRetireReport(text: string): boolean {
  return parseJson(text).some((line) =>
    line.component === HOST_COMPONENT && line.event === "beforeunload"
  );
}

function parseJson(text: string): Record<string, unknown>[] {
  if (!text.startsWith("{")) return [];
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === "object" && value !== null && !Array.isArray(value)
      ? [value as Record<string, unknown>]
      : [];
  } catch {
    return [];
  }
}

/** POSTs JSON, retrying refused connections until `timeoutMs`. */
async function post(
  url: string,
  body: unknown,
  timeoutMs: number,
  exited: () => boolean,
): Promise<{ status: number; body: string }> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    try {
      const response = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      return { status: response.status, body: await response.text() };
    } catch (error) {
      if (exited()) {
        throw new Error(`the function exited before answering ${url}`);
      }
      if (Date.now() >= deadline) {
        throw new Error(`no answer from ${url} within ${timeoutMs} ms`, {
          cause: error,
        });
      }
      await new Promise((resolve) => setTimeout(resolve, TRIGGER_RETRY_MS));
    }
  }
}

/**
 * Calls `onLine` with each line of a child's output as it arrives (without
 * the newline), and with what is left after the last newline at the end.
 */
export async function readLines(
  stream: ReadableStream<Uint8Array>,
  onLine: (text: string) => void,
): Promise<void> {
  let rest = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    rest += chunk;
    let newline;
    while ((newline = rest.indexOf("\n")) !== -1) {
      onLine(rest.slice(0, newline));
      rest = rest.slice(newline + 1);
    }
  }
  if (rest !== "") onLine(rest);
}

/** A TCP port nobody listens on right now. */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}
