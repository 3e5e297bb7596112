import { describe, expect, it } from "vitest";
import { KeyedSerialQueue } from "./keyed-serial-queue.ts";

/** A promise the test settles by hand, so interleavings are chosen, not left to timers. */
function deferred<T = void>() {
  let resolve: (value: T) => void = () => {};
  let reject: (error: unknown) => void = () => {};
  const promise = new Promise<T>((resolvePromise, rejectPromise) => {
    resolve = resolvePromise;
    reject = rejectPromise;
  });
  return { promise, resolve, reject };
}

function accepted<T>(result: ReturnType<KeyedSerialQueue["enqueue"]>): Promise<T> {
  if (!result.accepted) throw new Error(`refused: ${result.reason}`);
  return result.result as Promise<T>;
}

describe("KeyedSerialQueue", () => {
  it("runs the tasks of one key one at a time, in enqueue order", async () => {
    const queue = new KeyedSerialQueue({ pendingPerKeyMax: 10, pendingTotalMax: 10 });
    const log: string[] = [];
    const gates = [deferred(), deferred(), deferred()];
    const results = gates.map((gate, index) =>
      accepted(
        queue.enqueue("c1", async () => {
          log.push(`start ${index}`);
          await gate.promise;
          log.push(`end ${index}`);
          return index;
        }),
      ),
    );
    // Finishing the gates in reverse does not reorder the tasks: each waits for its predecessor.
    gates[2]?.resolve();
    gates[1]?.resolve();
    await Promise.resolve();
    expect(log).toEqual(["start 0"]);
    gates[0]?.resolve();
    expect(await Promise.all(results)).toEqual([0, 1, 2]);
    expect(log).toEqual(["start 0", "end 0", "start 1", "end 1", "start 2", "end 2"]);
  });

  it("runs different keys concurrently", async () => {
    const queue = new KeyedSerialQueue({ pendingPerKeyMax: 10, pendingTotalMax: 10 });
    const blocker = deferred();
    const blocked = accepted(queue.enqueue("slow", () => blocker.promise));
    expect(await accepted(queue.enqueue("fast", async () => "done"))).toBe("done");
    blocker.resolve();
    await blocked;
  });

  it("keeps going after a task fails, rejecting only that task's result", async () => {
    const queue = new KeyedSerialQueue({ pendingPerKeyMax: 10, pendingTotalMax: 10 });
    const failing = accepted(queue.enqueue("c1", async () => Promise.reject(new Error("boom"))));
    const next = accepted(queue.enqueue("c1", async () => "after"));
    await expect(failing).rejects.toThrow("boom");
    expect(await next).toBe("after");
  });

  it("refuses past the per-key bound and past the total bound, and accepts again once drained", async () => {
    const queue = new KeyedSerialQueue({ pendingPerKeyMax: 2, pendingTotalMax: 3 });
    const gate = deferred();
    const first = accepted(queue.enqueue("a", () => gate.promise));
    const second = accepted(queue.enqueue("a", async () => undefined));
    expect(queue.enqueue("a", async () => undefined)).toEqual({ accepted: false, reason: "key_full" });
    const third = accepted(queue.enqueue("b", async () => undefined));
    await third;
    const fourth = accepted(queue.enqueue("c", () => gate.promise));
    expect(queue.enqueue("d", async () => undefined)).toEqual({ accepted: false, reason: "queue_full" });
    expect(queue.pending).toBe(3);
    gate.resolve();
    await Promise.all([first, second, fourth]);
    await queue.whenIdle();
    expect(queue.pending).toBe(0);
    expect(queue.pendingFor("a")).toBe(0);
    expect(await accepted(queue.enqueue("a", async () => "again"))).toBe("again");
  });

  it("whenIdle waits for running and queued tasks", async () => {
    const queue = new KeyedSerialQueue({ pendingPerKeyMax: 5, pendingTotalMax: 5 });
    await queue.whenIdle();
    const gate = deferred();
    let finished = false;
    void accepted(queue.enqueue("a", () => gate.promise));
    void accepted(queue.enqueue("a", async () => void (finished = true)));
    const idle = queue.whenIdle();
    gate.resolve();
    await idle;
    expect(finished).toBe(true);
  });
});
