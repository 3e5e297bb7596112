import { describe, expect, it } from "vitest";
import { PresenceWatch } from "./presence-watch.ts";

describe("PresenceWatch", () => {
  it("turns changes of watched users into news once, and ignores users not watched", () => {
    const watch = new PresenceWatch();
    watch.replace(["bob"]);
    expect(watch.changed({ userId: "bob", status: "online", changedAtMs: 1 })).toEqual({ userId: "bob", status: "online", changedAtMs: 1 });
    expect(watch.changed({ userId: "bob", status: "online", changedAtMs: 2 })).toBeUndefined();
    expect(watch.changed({ userId: "carol", status: "online", changedAtMs: 3 })).toBeUndefined();
    expect(watch.changed({ userId: "bob", status: "offline", changedAtMs: 4 })).toMatchObject({ status: "offline" });
    expect(watch.stateOf("bob")).toEqual({ userId: "bob", status: "offline", changedAtMs: 4 });
  });

  it("reports from a snapshot only the changes of users it already knew", () => {
    const watch = new PresenceWatch();
    watch.replace(["bob", "carol"]);
    expect(
      watch.snapshot([
        { userId: "bob", status: "online", changedAtMs: 1 },
        { userId: "carol", status: "offline", changedAtMs: null },
      ]),
    ).toEqual([]);
    expect(
      watch.snapshot([
        { userId: "bob", status: "offline", changedAtMs: 5 },
        { userId: "carol", status: "offline", changedAtMs: null },
        { userId: "dave", status: "online", changedAtMs: 6 },
      ]),
    ).toEqual([{ userId: "bob", status: "offline", changedAtMs: 5 }]);
    expect(watch.stateOf("dave")).toBeUndefined();
  });

  it("forgets users no longer watched", () => {
    const watch = new PresenceWatch();
    watch.replace(["bob"]);
    watch.changed({ userId: "bob", status: "online", changedAtMs: 1 });
    watch.replace(["carol"]);
    expect(watch.userIds).toEqual(["carol"]);
    expect(watch.stateOf("bob")).toBeUndefined();
    watch.replace(["bob"]);
    // Known afresh: a snapshot saying online again is not news.
    expect(watch.snapshot([{ userId: "bob", status: "online", changedAtMs: 1 }])).toEqual([]);
  });
});
