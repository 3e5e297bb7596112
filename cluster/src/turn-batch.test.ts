import { describe, expect, it } from "vitest";
import { TurnBatch, TurnQueue, type Settled } from "./turn-batch.ts";

/** A scheduler the test runs by hand: each flush() is the end of a turn. */
function manualTurns(): { readonly schedule: (callback: () => void) => void; readonly flush: () => void; readonly pending: () => number } {
  let callbacks: (() => void)[] = [];
  return {
    schedule: (callback) => callbacks.push(callback),
    flush: () => {
      const due = callbacks;
      callbacks = [];
      for (const callback of due) callback();
    },
    pending: () => callbacks.length,
  };
}

const doubled = (inputs: readonly number[]): Promise<Settled<number>[]> =>
  Promise.resolve(inputs.map((input) => ({ ok: true as const, value: input * 2 })));

/** A batch that doubles its inputs and records each run's inputs. */
function recordingBatch(itemsMax: number): {
  readonly turns: ReturnType<typeof manualTurns>;
  readonly runs: number[][];
  readonly batch: TurnBatch<number, number>;
} {
  const turns = manualTurns();
  const runs: number[][] = [];
  const batch = new TurnBatch<number, number>(
    (inputs) => {
      runs.push([...inputs]);
      return doubled(inputs);
    },
    itemsMax,
    turns.schedule,
  );
  return { turns, runs, batch };
}

describe("TurnQueue", () => {
  it("hands over what came within a turn at its end, in order, once per turn that had any", () => {
    const turns = manualTurns();
    const flushed: string[][] = [];
    const queue = new TurnQueue<string>((items) => flushed.push(items), turns.schedule);
    queue.push("a");
    queue.push("b");
    expect(turns.pending()).toBe(1);
    expect(flushed).toEqual([]);
    turns.flush();
    expect(flushed).toEqual([["a", "b"]]);
    turns.flush();
    expect(turns.pending()).toBe(0);
    queue.push("c");
    turns.flush();
    expect(flushed).toEqual([["a", "b"], ["c"]]);
  });
});

describe("TurnBatch", () => {
  it("runs the calls of one turn together, at the turn's end, each with its own outcome", async () => {
    const { turns, runs, batch } = recordingBatch(10);
    const answers = [batch.run(1), batch.run(2), batch.run(3)];
    expect(runs).toEqual([]);
    expect(turns.pending()).toBe(1);
    turns.flush();
    expect(await Promise.all(answers)).toEqual([2, 4, 6]);
    expect(runs).toEqual([[1, 2, 3]]);

    // The next turn is a run of its own.
    const next = batch.run(7);
    turns.flush();
    expect(await next).toBe(14);
    expect(runs).toEqual([[1, 2, 3], [7]]);
  });

  it("splits a turn into runs of at most itemsMax", async () => {
    const { turns, runs, batch } = recordingBatch(2);
    const answers = [1, 2, 3, 4, 5].map((input) => batch.run(input));
    turns.flush();
    expect(await Promise.all(answers)).toEqual([2, 4, 6, 8, 10]);
    expect(runs).toEqual([[1, 2], [3, 4], [5]]);
  });

  it("fails only the caller whose input failed", async () => {
    const turns = manualTurns();
    const batch = new TurnBatch<number, number>(
      (inputs) =>
        Promise.resolve(
          inputs.map((input) => (input === 2 ? { ok: false as const, error: new Error("bad row") } : { ok: true as const, value: input })),
        ),
      10,
      turns.schedule,
    );
    const answers = [1, 2, 3].map((input) => batch.run(input));
    turns.flush();
    const settled = await Promise.allSettled(answers);
    expect(settled.map((outcome) => outcome.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    expect(settled[1]).toMatchObject({ reason: new Error("bad row") });
  });

  it("fails every caller of a run that throws or answers the wrong number of inputs, and not the other runs", async () => {
    const turns = manualTurns();
    const batch = new TurnBatch<number, number>(
      (inputs) => {
        if (inputs.includes(1)) return Promise.reject(new Error("database down"));
        if (inputs.includes(3)) return Promise.resolve([{ ok: true as const, value: 3 }]);
        return doubled(inputs);
      },
      2,
      turns.schedule,
    );
    const answers = [1, 2, 3, 4, 5].map((input) => batch.run(input));
    turns.flush();
    const settled = await Promise.allSettled(answers);
    expect(settled.map((outcome) => (outcome.status === "fulfilled" ? outcome.value : String(outcome.reason)))).toEqual([
      "Error: database down",
      "Error: database down",
      "Error: a batched run answered 1 of 2 inputs",
      "Error: a batched run answered 1 of 2 inputs",
      10,
    ]);
  });

  it("refuses a bound that is not a positive integer", () => {
    expect(() => new TurnBatch<number, number>(doubled, 0, setImmediate)).toThrow(RangeError);
  });
});
