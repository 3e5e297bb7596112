// Trace ids made without OpenTelemetry (docs/decisions/0037): the traceparent values an edge gives its
// requests with tracing off, and the parse every receiver applies to the values it reads from the network.
import { describe, expect, it } from "vitest";
import { sendTraceId, traceIdFields, traceIdOf, TraceIds } from "./trace-ids.ts";

const fixedPrefix = (size: number): Uint8Array => Uint8Array.from({ length: size }, (_, index) => 0xa0 + index);

describe("TraceIds", () => {
  it("makes W3C traceparent values, not sampled: the process's random prefix and a counter from 1", () => {
    const ids = new TraceIds(fixedPrefix);
    expect(ids.next()).toBe("00-a0a1a2a3a4a5a6a70000000000000001-0000000000000001-00");
    expect(ids.next()).toBe("00-a0a1a2a3a4a5a6a70000000000000002-0000000000000002-00");
  });

  it("never makes an all-zero trace id or span id, even with an all-zero prefix", () => {
    const ids = new TraceIds((size) => new Uint8Array(size));
    const value = ids.next();
    expect(traceIdOf(value)).toBe("0000000000000000" + "0000000000000001");
  });

  it("makes distinct values, each valid, with the default random prefix", () => {
    const ids = new TraceIds();
    const values = Array.from({ length: 1000 }, () => ids.next());
    expect(new Set(values).size).toBe(1000);
    for (const value of values) expect(traceIdOf(value)).toMatch(/^[0-9a-f]{32}$/);
    // Two processes: two prefixes.
    expect(traceIdOf(new TraceIds().next())).not.toBe(traceIdOf(new TraceIds().next()));
  });
});

describe("traceIdOf", () => {
  const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";

  it("reads the trace id of a version-00 traceparent, sampled or not", () => {
    expect(traceIdOf(`00-${traceId}-00f067aa0ba902b7-01`)).toBe(traceId);
    expect(traceIdOf(`00-${traceId}-00f067aa0ba902b7-00`)).toBe(traceId);
  });

  it.each([
    ["absent", undefined],
    ["empty", ""],
    ["the batch placeholder", "-"],
    ["garbage", "not a traceparent at all, but exactly fifty-five chars!"],
    ["upper-case hex", `00-${traceId.toUpperCase()}-00f067aa0ba902b7-01`],
    ["an all-zero trace id", `00-${"0".repeat(32)}-00f067aa0ba902b7-01`],
    ["an all-zero span id", `00-${traceId}-${"0".repeat(16)}-01`],
    ["another version", `01-${traceId}-00f067aa0ba902b7-01`],
    ["a short trace id", `00-${traceId.slice(1)}-00f067aa0ba902b7-01`],
    ["a trailing field", `00-${traceId}-00f067aa0ba902b7-01-extra`],
    ["a non-hex character", `00-${traceId.slice(0, 31)}g-00f067aa0ba902b7-01`],
    ["a huge value", "0".repeat(100_000)],
  ])("ignores %s", (_, value) => {
    expect(traceIdOf(value)).toBeUndefined();
  });
});

describe("traceIdFields", () => {
  it("names one request's trace id as traceId, a batch's distinct ids as traceIds, none as nothing", () => {
    expect(traceIdFields([])).toBeUndefined();
    expect(traceIdFields([undefined, undefined])).toBeUndefined();
    expect(traceIdFields(["a", undefined, "a"])).toEqual({ traceId: "a" });
    expect(traceIdFields(["a", "b", undefined, "a", "c"])).toEqual({ traceIds: "a,b,c" });
  });
});

describe("sendTraceId", () => {
  const send = { senderUserId: "alice", senderDeviceId: "phone", conversationId: "g-AAAAAAAAAAAAAAAAAAAAAA", clientMessageId: "c-1" };

  it("is a W3C-shaped trace id, the same wherever the send is named (edge, worker, message), and another for another send", () => {
    const id = sendTraceId(send);
    expect(id).toMatch(/^[0-9a-f]{32}$/);
    expect(traceIdOf(`00-${id}-${"1".repeat(16)}-00`)).toBe(id);
    expect(sendTraceId({ ...send, body: "ignored", seq: 4 } as typeof send)).toBe(id);
    expect(sendTraceId({ ...send, clientMessageId: "c-2" })).not.toBe(id);
    expect(sendTraceId({ ...send, senderDeviceId: "laptop" })).not.toBe(id);
    // Fields are separated: moving a character from one field to the next names another send.
    expect(sendTraceId({ ...send, senderUserId: "alic", senderDeviceId: "ephone" })).not.toBe(id);
  });
});
