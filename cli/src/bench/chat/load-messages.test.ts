import { deserialize, serialize } from "node:v8";
import { describe, expect, it } from "vitest";
import { decodeLoadCommand, decodeLoadReply, describeError, type LoadCommand, type LoadReply } from "./load-messages.ts";

/** What Node's "advanced" IPC serialization does to a message: a structured clone through v8's serializer. */
function overIpc(message: unknown): unknown {
  return deserialize(serialize(message));
}

describe("load process commands", () => {
  const setup: LoadCommand = {
    type: "setup",
    id: 1,
    system: "cellwire",
    processIndex: 0,
    processCount: 2,
    bodyBytes: 100,
    deviceId: "bench",
    recordingPath: "/tmp/recording-0.tsv",
    users: [{ userIndex: 0, userId: "chatrun-u0", serverUrls: ["ws://127.0.0.1:1234/ws", "ws://127.0.0.1:1235/ws"] }],
  };

  it("decode as they were sent", () => {
    const commands: LoadCommand[] = [
      setup,
      { type: "connect", id: 2, connectsInFlightMax: 50 },
      { type: "create", id: 3, conversations: [{ index: 0, memberUserIds: ["chatrun-u0", "chatrun-u1"] }] },
      { type: "join", id: 4, conversations: [{ index: 0, conversationId: "d-abc", memberUserIndexes: [0, 1] }] },
      { type: "window", id: 5, rate: 12.5, startUs: 1_765_000_000_000_000, warmupS: 0, durationS: 2 },
      { type: "catchUp", id: 6, deadlineMs: 1000, positions: [{ userIndex: 0, position: 7 }] },
      { type: "finish", id: 7 },
    ];
    for (const command of commands) expect(decodeLoadCommand(overIpc(command))).toEqual({ ok: true, value: command });
  });

  it("reject a wrong field, an unknown type or a bad user id, naming where", () => {
    expect(decodeLoadCommand({ ...setup, system: "kafka" })).toMatchObject({ ok: false, failure: { path: "$.system" } });
    expect(decodeLoadCommand({ type: "explode", id: 1 })).toMatchObject({ ok: false, failure: { path: "$.type" } });
    const badUser = { ...setup, users: [{ userIndex: 0, userId: "not valid!", serverUrls: ["ws://x"] }] };
    expect(decodeLoadCommand(badUser)).toMatchObject({ ok: false, failure: { path: "$.users[0].userId" } });
    expect(decodeLoadCommand({ type: "window", id: 1, rate: 0, startUs: 0, warmupS: 0, durationS: 1 })).toMatchObject({
      ok: false,
      failure: { path: "$.rate" },
    });
    expect(decodeLoadCommand("setup")).toMatchObject({ ok: false });
  });
});

describe("load process replies", () => {
  const report: LoadReply = {
    type: "report",
    id: 9,
    sent: 2,
    acked: 2,
    failed: 0,
    firstError: null,
    duplicates: 0,
    connectionsLost: 0,
    ackHistogram: "HISTFAAAA",
    deliveryHistogram: "HISTFAAAA",
    issueLatenessHistogram: "HISTFAAAA",
    sentKeys: Float64Array.from([1_000_000_000, 1_000_000_001]),
    sentMembers: Uint32Array.from([2, 2]),
    deliveredKeys: Float64Array.from([1_000_000_000]),
    onTime: Uint32Array.from([2]),
    late: Uint32Array.from([0]),
  };

  it("keep their typed arrays across the channel", () => {
    const decoded = decodeLoadReply(overIpc(report));
    expect(decoded).toEqual({ ok: true, value: report });
    if (decoded.ok && decoded.value.type === "report") expect(decoded.value.sentKeys).toBeInstanceOf(Float64Array);
  });

  it("reject a plain array where a typed array belongs", () => {
    expect(decodeLoadReply({ ...report, sentKeys: [1, 2] })).toMatchObject({ ok: false, failure: { path: "$.sentKeys" } });
  });
});

describe("describeError", () => {
  it("keeps the first line, cut to fit", () => {
    expect(describeError(new RangeError("too far\nstack"))).toBe("RangeError: too far");
    expect(describeError("x".repeat(600))).toHaveLength(501);
  });
});
