/**
 * A TCP proxy in front of Postgres that can end a connection at one exact
 * statement, the way `pg_terminate_backend` would, for faults too quick to
 * hit from outside (a statement a client runs right after connecting).
 *
 * It forwards bytes both ways and looks at what the client sends: when a
 * chunk contains the text of an armed fault, the proxy answers with a FATAL
 * `ErrorResponse` carrying the fault's SQLSTATE instead of forwarding it,
 * then closes both sides. Statements are found by their text in one read
 * chunk; a statement split across two reads is not recognised, which is
 * fine for the short statements clients send on loopback.
 *
 * @module
 */

/** A fault waiting for its statement. */
interface ArmedFault {
  statement: string;
  /** `null`: swallow the statement and everything after it, unanswered. */
  sqlstate: string | null;
  message: string;
}

/** A proxy listening on a loopback port in front of one Postgres. */
export class FaultProxy implements AsyncDisposable {
  readonly #listener: Deno.TcpListener;
  readonly #target: URL;
  readonly #armed: ArmedFault[] = [];
  readonly #connections = new Set<Deno.Conn>();
  readonly #accepting: Promise<void>;
  #fired = 0;

  /** Starts a proxy for the Postgres at `targetUrl` (a postgres:// URL). */
  constructor(targetUrl: string) {
    this.#target = new URL(targetUrl);
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#accepting = this.#accept();
  }

  /** `targetUrl` with the host and port of the proxy. */
  get url(): string {
    const url = new URL(this.#target);
    url.hostname = "127.0.0.1";
    url.port = String((this.#listener.addr as Deno.NetAddr).port);
    return url.toString();
  }

  /** How many armed faults have ended a connection. */
  get fired(): number {
    return this.#fired;
  }

  /**
   * Arms a fault: the next statement containing `statement`, on any
   * connection, is answered with a FATAL error of `sqlstate` and its
   * connection is closed. Faults fire once each, in the order armed.
   */
  failNextStatement(
    statement: string,
    sqlstate = "57P01",
    message = "terminating connection due to administrator command",
  ): void {
    this.#armed.push({ statement, sqlstate, message });
  }

  /**
   * Arms a fault: the next statement containing `statement` is never
   * forwarded nor answered, and neither is anything after it on that
   * connection, which stays open: a connection wedged mid-query.
   */
  swallowNextStatement(statement: string): void {
    this.#armed.push({ statement, sqlstate: null, message: "" });
  }

  /** Stops listening and closes every connection. */
  async close(): Promise<void> {
    this.#listener.close();
    for (const conn of this.#connections) closeQuietly(conn);
    await this.#accepting;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #accept(): Promise<void> {
    try {
      for await (const client of this.#listener) {
        this.#serve(client).catch(() => closeQuietly(client));
      }
    } catch {
      // The listener was closed.
    }
  }

  async #serve(client: Deno.Conn): Promise<void> {
    const server = await Deno.connect({
      hostname: this.#target.hostname,
      port: Number(this.#target.port || 5432),
    });
    this.#connections.add(client);
    this.#connections.add(server);
    const end = () => {
      closeQuietly(client);
      closeQuietly(server);
      this.#connections.delete(client);
      this.#connections.delete(server);
    };
    const upstream = this.#pumpClient(client, server);
    const downstream = server.readable.pipeTo(client.writable, {
      preventClose: true,
    }).catch(() => {});
    await Promise.race([upstream, downstream]);
    end();
  }

  /** Forwards the client's bytes, unless they carry an armed statement. */
  async #pumpClient(client: Deno.Conn, server: Deno.Conn): Promise<void> {
    const decoder = new TextDecoder("latin1");
    let wedged = false;
    try {
      for await (const chunk of client.readable) {
        if (wedged) continue;
        const text = decoder.decode(chunk);
        const index = this.#armed.findIndex((fault) =>
          text.includes(fault.statement)
        );
        if (index !== -1) {
          const [fault] = this.#armed.splice(index, 1);
          this.#fired++;
          if (fault.sqlstate === null) {
            wedged = true;
            continue;
          }
          await client.write(errorResponse(fault.sqlstate, fault.message));
          return;
        }
        await server.write(chunk);
      }
    } catch {
      // Either side went away.
    }
  }
}

/** A FATAL `ErrorResponse` message of the Postgres wire protocol. */
function errorResponse(sqlstate: string, message: string): Uint8Array {
  const encoder = new TextEncoder();
  const fields = [
    ["S", "FATAL"],
    ["V", "FATAL"],
    ["C", sqlstate],
    ["M", message],
  ].map(([tag, value]) => encoder.encode(`${tag}${value}\0`));
  const bodyLength = fields.reduce((sum, field) => sum + field.length, 0) + 1;
  const bytes = new Uint8Array(1 + 4 + bodyLength);
  bytes[0] = "E".charCodeAt(0);
  new DataView(bytes.buffer).setInt32(1, 4 + bodyLength);
  let offset = 5;
  for (const field of fields) {
    bytes.set(field, offset);
    offset += field.length;
  }
  return bytes;
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}
