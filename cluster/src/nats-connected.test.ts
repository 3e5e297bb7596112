import type { Status } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import { watchNatsConnected } from "./nats-connected.ts";

/** A connection whose status events the test pushes, and which the test may close. */
function fakeConnection(): {
  push: (type: string) => Promise<void>;
  close: () => void;
  connection: Parameters<typeof watchNatsConnected>[0];
} {
  const waiting: ((status: IteratorResult<Status>) => void)[] = [];
  const queued: Status[] = [];
  let closed = false;
  const iterator: AsyncIterableIterator<Status> = {
    next: () =>
      new Promise((resolve) => {
        const status = queued.shift();
        if (status !== undefined) resolve({ value: status, done: false });
        else waiting.push(resolve);
      }),
    [Symbol.asyncIterator]() {
      return this;
    },
  };
  return {
    push: async (type) => {
      const status = { type } as Status;
      const resolve = waiting.shift();
      if (resolve !== undefined) resolve({ value: status, done: false });
      else queued.push(status);
      // Lets the watcher's loop take the event.
      await new Promise((resolved) => setImmediate(resolved));
    },
    close: () => {
      closed = true;
    },
    connection: { status: () => iterator, isClosed: () => closed },
  };
}

describe("watchNatsConnected", () => {
  it("follows NATS status events: down at a disconnect, up at the reconnect, down for good once closed", async () => {
    const fake = fakeConnection();
    const link = watchNatsConnected(fake.connection);
    expect(link.connected()).toBe(true);
    await fake.push("disconnect");
    expect(link.connected()).toBe(false);
    await fake.push("reconnecting");
    expect(link.connected()).toBe(false);
    await fake.push("reconnect");
    expect(link.connected()).toBe(true);
    fake.close();
    expect(link.connected()).toBe(false);
  });
});
