import { describe, expect, it } from "vitest";
import { DatabaseWatchdog } from "./database-watchdog.ts";

/** A watchdog on a hand-driven clock whose probes the test settles one by one. */
function harness(unreachableMs = 1000, probeIntervalMs = 100) {
  let nowMs = 0;
  const probes: { resolve: () => void; reject: (error: Error) => void }[] = [];
  const events: string[] = [];
  let tick: (() => void) | undefined;
  const watchdog = new DatabaseWatchdog({
    probe: () => new Promise<void>((resolve, reject) => void probes.push({ resolve, reject })),
    giveUpLease: async () => void events.push("give up"),
    rejoin: async () => void events.push("rejoin"),
    monotonicNowMs: () => nowMs,
    setInterval: (_ms, callback) => {
      tick = callback;
      return () => {
        tick = undefined;
      };
    },
    logger: { info: () => undefined, warn: () => undefined },
    limits: { unreachableMs, probeIntervalMs },
  });
  // Lets the promise callbacks of settled probes and lease changes run.
  const settle = async (): Promise<void> => {
    for (let turn = 0; turn < 5; turn++) await Promise.resolve();
  };
  const advance = async (ms: number): Promise<void> => {
    await settle();
    nowMs += ms;
    tick?.();
    await settle();
  };
  return { watchdog, probes, events, advance };
}

describe("DatabaseWatchdog", () => {
  it("keeps the lease while probes answer, each probe in turn", async () => {
    const { watchdog, probes, events, advance } = harness();
    watchdog.start();
    for (let period = 0; period < 30; period++) {
      await advance(100);
      probes.at(-1)?.resolve();
    }
    expect(probes).toHaveLength(30);
    expect(events).toEqual([]);
    expect(watchdog.serving).toBe(true);
  });

  it("gives up the lease once no probe answered for longer than the bound, with one probe in flight at most, and rejoins at the first answer", async () => {
    const { watchdog, probes, events, advance } = harness(1000, 100);
    watchdog.start();
    await advance(100);
    probes[0]?.resolve();
    // Silence: the second probe hangs.
    await advance(100);
    for (let period = 0; period < 9; period++) await advance(100);
    expect(events).toEqual([]);
    expect(watchdog.serving).toBe(true);
    await advance(100);
    expect(events).toEqual(["give up"]);
    expect(watchdog.serving).toBe(false);
    expect(probes).toHaveLength(2);
    // A probe that fails lets the next one start; the lease stays given up while they fail.
    probes[1]?.reject(new Error("Query read timeout"));
    await advance(100);
    expect(probes).toHaveLength(3);
    probes[2]?.reject(new Error("timeout exceeded when trying to connect"));
    await advance(100);
    expect(events).toEqual(["give up"]);
    probes[3]?.resolve();
    await advance(0);
    expect(events).toEqual(["give up", "rejoin"]);
    expect(watchdog.serving).toBe(true);
  });

  it("does not rejoin after stop", async () => {
    const { watchdog, probes, events, advance } = harness(200, 100);
    watchdog.start();
    for (let period = 0; period < 4; period++) await advance(100);
    expect(events).toEqual(["give up"]);
    await watchdog.stop();
    probes[0]?.resolve();
    await advance(0);
    expect(events).toEqual(["give up"]);
  });
});
