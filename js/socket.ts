/**
 * The sockets the worker's postgres.js pool connects with: ordinary
 * `node:net` sockets whose `close` event reaches postgres.js two turns of the
 * `setImmediate` queue late.
 *
 * Why: postgres.js (3.4.5 to 3.4.9) defers small writes with `setImmediate`.
 * When a socket closes while such a write is pending, which is what a
 * terminated backend or a dropped pooler connection does, the connection
 * either throws `TypeError: Cannot read properties of null (reading
 * 'write')` from the timer, an uncaught exception that ends the isolate, or
 * keeps a stale timer and never sends again, so every later connect attempt
 * on it ends in `CONNECT_TIMEOUT`
 * (https://github.com/porsager/postgres/issues/1154,
 * https://github.com/porsager/postgres/issues/1208). Delivering `close` only
 * after the pending write has run (immediates run in order) lets that write
 * go harmlessly to the closed socket, keeps postgres.js's timer consistent,
 * and postgres.js then reconnects as designed.
 *
 * TODO(shim): connections that negotiate TLS are wrapped by postgres.js
 * itself (`tls.connect`) and keep the upstream race; remove this module when
 * a postgres.js release guards `nextWrite`.
 *
 * @module
 */

import net from "node:net";
import { setImmediate } from "node:timers";

/** The part of postgres.js's parsed options a socket factory receives. */
export interface SocketTarget {
  /** Host names or addresses, tried in turn. */
  host: string[];
  /** Ports, parallel to `host`. */
  port: number[];
  /** A Unix socket path, when the URL names one. */
  path?: string | false;
}

/**
 * Returns the `socket` option for postgres.js: a function that starts
 * connecting a new socket and returns it at once. postgres.js writes its
 * startup message right away; the socket buffers it until connected, and a
 * failed connect arrives as the usual `error` and `close` events, so
 * `connect_timeout` and reconnection behave as with postgres.js's own
 * sockets.
 */
export function lateCloseSockets(): (target: SocketTarget) => net.Socket {
  let attempt = 0;
  return (target) => {
    const socket = new net.Socket();
    deferClose(socket);
    if (target.path) {
      socket.connect(target.path);
      return socket;
    }
    const index = attempt++ % target.host.length;
    const host = target.host[index];
    const port = target.port[index] ?? target.port[0];
    socket.connect(port, host);
    // postgres.js reads these for TLS server names and error messages.
    return Object.assign(socket, { host, port });
  };
}

/**
 * Turns of the `setImmediate` queue a `close` event is held back. One turn
 * lets a write postgres.js scheduled before the close run first; the second
 * also covers a write scheduled while the first turn was waiting. Measured:
 * with one turn a worker under repeated `pg_terminate_backend` still lost a
 * connection to a stale timer about one run in five; with two, none in eight.
 */
const CLOSE_DELAY_TURNS = 2;

/** Delivers `socket`'s `close` event {@linkcode CLOSE_DELAY_TURNS} late. */
function deferClose(socket: net.Socket): void {
  const emit = socket.emit.bind(socket);
  const later = (turns: number, deliver: () => void): void => {
    setImmediate(turns > 1 ? () => later(turns - 1, deliver) : deliver);
  };
  const lateEmit = (event: string | symbol, ...args: unknown[]): boolean => {
    if (event !== "close") return emit(event, ...args);
    later(CLOSE_DELAY_TURNS, () => emit(event, ...args));
    return socket.listenerCount(event) > 0;
  };
  socket.emit = lateEmit as typeof socket.emit;
}
