import assert from "node:assert/strict";
import { setImmediate } from "node:timers";
import { lateCloseSockets } from "./socket.ts";

/** A local server that accepts one connection and closes it at once. */
function closingServer(): { port: number; done: Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const done = listener.accept().then((conn) => {
    conn.close();
    listener.close();
  });
  return { port: (listener.addr as Deno.NetAddr).port, done };
}

Deno.test(
  "close comes after immediates queued when the peer hung up",
  async () => {
    const server = closingServer();
    const socket = lateCloseSockets()({
      host: ["127.0.0.1"],
      port: [server.port],
    });
    const order: string[] = [];
    const closed = Promise.withResolvers<void>();
    socket.on("end", () => {
      setImmediate(() => order.push("write scheduled at hang-up"));
    });
    socket.on("close", () => {
      order.push("close");
      closed.resolve();
    });
    await closed.promise;
    await server.done;
    assert.deepEqual(order, ["write scheduled at hang-up", "close"]);
  },
);

Deno.test("a refused connection still reports error, then close", async () => {
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  const socket = lateCloseSockets()({ host: ["127.0.0.1"], port: [port] });
  const events: string[] = [];
  const closed = Promise.withResolvers<void>();
  socket.on("error", () => events.push("error"));
  socket.on("close", () => {
    events.push("close");
    closed.resolve();
  });
  await closed.promise;
  assert.deepEqual(events, ["error", "close"]);
});
