import { describe, expect, it } from "vitest";
import type { DirectoryEntry, DirectoryEntryKind } from "@cellwire/protocol";
import * as cluster from "./index.ts";
import { directoryHomes } from "./start-router.ts";

describe("one routing path", () => {
  it("exports startRouter from @cellwire/cluster and not the ring-level CellRouter", () => {
    expect(typeof cluster.startRouter).toBe("function");
    expect(typeof cluster.Router).toBe("function");
    expect("CellRouter" in cluster).toBe(false);
  });
});

describe("directoryHomes", () => {
  const entries = new Map<string, DirectoryEntry>([["user:alice", { kind: "user", id: "alice", cellId: "b", epoch: 3 }]]);
  const asked: string[] = [];
  const homes = directoryHomes({
    lookup: async (kind: DirectoryEntryKind, id: string) => {
      asked.push(`${kind}:${id}`);
      return entries.get(`${kind}:${id}`);
    },
  });

  it("asks the directory at every resolve and keeps nothing, moves included", async () => {
    expect(await homes.resolve({ kind: "user", id: "alice" })).toEqual({ cellId: "b", epoch: 3 });
    homes.moved({ kind: "user", id: "alice" }, { cellId: "c", epoch: 4 });
    expect(await homes.resolve({ kind: "user", id: "alice" })).toEqual({ cellId: "b", epoch: 3 });
    expect(await homes.resolve({ kind: "conversation", id: "g1" })).toBeUndefined();
    expect(asked).toEqual(["user:alice", "user:alice", "conversation:g1"]);
  });
});
