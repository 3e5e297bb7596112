import { afterEach, describe, expect, it, vi } from "vitest";
import { Listeners } from "./listeners.ts";

type Events = { ping: number; note: string };

afterEach(() => {
  vi.restoreAllMocks();
});

describe("Listeners", () => {
  it("delivers to each subscription and stops after unsubscribe", () => {
    const listeners = new Listeners<Events>();
    const seen: string[] = [];
    const record = (value: number) => seen.push(`a${value}`);
    const first = listeners.on("ping", record);
    listeners.on("ping", record);
    listeners.on("note", (text) => seen.push(text));
    listeners.emit("ping", 1);
    first();
    first();
    listeners.emit("ping", 2);
    listeners.emit("note", "n");
    expect(seen).toEqual(["a1", "a1", "a2", "n"]);
    expect(listeners.count("ping")).toBe(1);
  });

  it("keeps delivering when a listener throws, and rethrows that error on a microtask", () => {
    const scheduled: (() => void)[] = [];
    vi.spyOn(globalThis, "queueMicrotask").mockImplementation((callback) => {
      scheduled.push(callback);
    });
    const listeners = new Listeners<Events>();
    const seen: number[] = [];
    listeners.on("ping", () => {
      throw new Error("listener bug");
    });
    listeners.on("ping", (value) => seen.push(value));
    expect(() => listeners.emit("ping", 7)).not.toThrow();
    expect(seen).toEqual([7]);
    expect(scheduled).toHaveLength(1);
    expect(() => scheduled[0]?.()).toThrow("listener bug");
  });
});
