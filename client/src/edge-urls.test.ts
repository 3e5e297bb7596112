import { describe, expect, it } from "vitest";
import { edgeUrlCountMax, normaliseEdgeUrls } from "./edge-urls.ts";

describe("edge URLs", () => {
  it("turns one URL into a list of one, and keeps a list in its order", () => {
    expect(normaliseEdgeUrls("ws://a.test/ws")).toEqual(["ws://a.test/ws"]);
    expect(normaliseEdgeUrls(["wss://b.test/ws", "ws://a.test:8080/ws"])).toEqual(["wss://b.test/ws", "ws://a.test:8080/ws"]);
  });

  it("copies the caller's list, so changing it later changes nothing", () => {
    const urls = ["ws://a.test/ws", "ws://b.test/ws"];
    const normalised = normaliseEdgeUrls(urls);
    urls.push("ws://c.test/ws");
    expect(normalised).toEqual(["ws://a.test/ws", "ws://b.test/ws"]);
    expect(Object.isFrozen(normalised)).toBe(true);
  });

  it("refuses an empty list, a duplicate, a list over the limit, and any URL that is not ws: or wss:", () => {
    expect(() => normaliseEdgeUrls([])).toThrow(/non-empty/);
    expect(() => normaliseEdgeUrls(["ws://a.test/ws", "ws://a.test/ws"])).toThrow(/twice/);
    const tooMany = Array.from({ length: edgeUrlCountMax + 1 }, (_unused, index) => `ws://edge-${index}.test/ws`);
    expect(() => normaliseEdgeUrls(tooMany)).toThrow(RangeError);
    expect(normaliseEdgeUrls(tooMany.slice(0, edgeUrlCountMax))).toHaveLength(edgeUrlCountMax);
    for (const bad of ["http://a.test/ws", "not a url", "/ws", ""]) {
      expect(() => normaliseEdgeUrls(bad)).toThrow(TypeError);
      expect(() => normaliseEdgeUrls(["ws://a.test/ws", bad])).toThrow(TypeError);
    }
  });

  it("refuses values that are not strings (callers without TypeScript)", () => {
    for (const bad of [undefined, null, 42, [42], { href: "ws://a.test/ws" }]) {
      expect(() => normaliseEdgeUrls(bad as unknown as string)).toThrow(TypeError);
    }
  });
});
