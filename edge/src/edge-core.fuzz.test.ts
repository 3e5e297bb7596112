// Fuzzes the edge's frame handler (EdgeCore and its Session over the in-memory fakes) with fast-check:
// before welcome, any first frame that is not a valid hello closes the session with 4200 and writes
// nothing; after welcome, any sequence of frames (text or binary, hostile or merely wrong) leaves the
// socket open, gets exactly one reply per frame, each a valid server frame with a documented code, and
// logs no unexpected error. fast-check prints the seed and path of a failure.
import fc from "fast-check";
import { afterEach, describe, expect, it } from "vitest";
import { closeCodes, decodeClientFrame, errorCodeList, protocolVersion, type CellRequest } from "@cellwire/protocol";
import { fakeEdge, type FakeEdge } from "../test/edge-fakes.ts";

const conversationId = "g-AAAAAAAAAAAAAAAAAAAAAA";
const requestFrames: readonly Record<string, unknown>[] = [
  { type: "send", requestId: "r-1", conversationId, clientMessageId: "c-1", body: "hello" },
  { type: "openDirect", requestId: "r-2", peerUserId: "bob" },
  { type: "createGroup", requestId: "r-3", title: "crew", memberUserIds: ["bob"] },
  { type: "addMembers", requestId: "r-4", conversationId, userIds: ["dave"] },
  { type: "history", requestId: "r-5", conversationId, limit: 5 },
  { type: "ping", requestId: "r-6" },
  { type: "typing", requestId: "r-7", conversationId },
  { type: "watchPresence", requestId: "r-8", userIds: ["bob"] },
  { type: "read", requestId: "r-9", conversationId, seq: 1 },
  { type: "delivered", requestId: "r-10", conversationId, seq: 1 },
  { type: "hello", protocolVersion, token: "valid:mallory" },
];
const fieldNames = [...new Set(requestFrames.flatMap((frame) => Object.keys(frame)))];
const hostileKeys = ["__proto__", "constructor", "prototype", "toString", "isAdmin"];
const idCharacters = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-".split("");
const hostileCharacters = [".", "*", ">", " ", "'", ";", "\u0000", ":", "\r\n", "\ud800"];

const rawValue: fc.Arbitrary<string> = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }).map((value) => JSON.stringify(value)),
  fc.constantFrom("1e309", "-0", "9007199254740992", "-1", "1.5", "0", "null", "[]", "{}", '"NaN"', '""'),
  fc.string({ unit: fc.constantFrom(...idCharacters, ...hostileCharacters), maxLength: 24 }).map((value) => JSON.stringify(value)),
);

/** A known field, a hostile key, or any name, short or up to 3,000 characters (an error quotes it). */
const fieldName: fc.Arbitrary<string> = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(...fieldNames, ...hostileKeys) },
  { weight: 1, arbitrary: fc.string({ maxLength: 20 }) },
  {
    weight: 1,
    arbitrary: fc
      .tuple(fc.string({ minLength: 1, maxLength: 1 }), fc.nat({ max: 3000 }))
      .map(([character, length]) => character.repeat(length)),
  },
);

/** A request frame with fields set (hostile keys included), removed, or left alone, as JSON text. */
const mutatedFrame: fc.Arbitrary<string> = fc
  .tuple(
    fc.constantFrom(...requestFrames),
    fc.array(fc.tuple(fieldName, fc.option(rawValue, { nil: undefined })), { maxLength: 3 }),
    fc.string({ unit: fc.constantFrom(...idCharacters), minLength: 1, maxLength: 8 }),
  )
  .map(([frame, changes, requestId]) => {
    const entries = new Map<string, string>(Object.entries(frame).map(([key, value]) => [key, JSON.stringify(value)]));
    if (entries.has("requestId")) entries.set("requestId", JSON.stringify(requestId));
    for (const [key, raw] of changes) {
      if (raw === undefined) entries.delete(key);
      else entries.set(key, raw);
    }
    return `{${[...entries].map(([key, raw]) => `${JSON.stringify(key)}:${raw}`).join(",")}}`;
  });

type Incoming = { readonly text: string; readonly isBinary: boolean };
const incoming: fc.Arbitrary<Incoming> = fc.oneof(
  { weight: 6, arbitrary: mutatedFrame.map((text) => ({ text, isBinary: false })) },
  { weight: 2, arbitrary: fc.string({ unit: "binary", maxLength: 60 }).map((text) => ({ text, isBinary: false })) },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }).map((value) => ({ text: JSON.stringify(value), isBinary: false })) },
  { weight: 1, arbitrary: fc.constant({ text: "", isBinary: true }) },
);

/** Every request the fake cells receive is answered the way a cell answers a stranger. */
const cellRequestTypes: readonly CellRequest["type"][] = [
  "cell.send",
  "cell.openDirect",
  "cell.createGroup",
  "cell.addMembers",
  "cell.history",
  "cell.members",
  "cell.receipt",
];

const edges: FakeEdge[] = [];

function edgeForFuzzing(): FakeEdge {
  const edge = fakeEdge();
  edges.push(edge);
  for (const type of cellRequestTypes) {
    edge.router.answers.set(type, async () => ({ type: "cell.error", code: "not_a_member", message: "not a member of this conversation" }));
  }
  return edge;
}

afterEach(() => {
  for (const edge of edges.splice(0)) edge.core.closeAll();
});

const documentedCodes = new Set<string>(errorCodeList);

describe("the edge's frame handler under fuzzing", () => {
  it("closes a session whose first frame is not a valid hello with 4200, writing nothing", async () => {
    await fc.assert(
      fc.asyncProperty(incoming, async ({ text, isBinary }) => {
        const decoded = decodeClientFrame(text);
        fc.pre(isBinary || !decoded.ok || decoded.frame.type !== "hello");
        const edge = edgeForFuzzing();
        const { transport, session } = edge.connect();
        session?.receive(text, isBinary);
        expect(transport.closeCode).toBe(closeCodes.protocol_violation.code);
        expect(transport.texts).toEqual([]);
        expect(transport.violations).toEqual([]);
        expect(edge.core.sessionCount).toBe(0);
        edge.core.closeAll();
      }),
      { numRuns: 500 },
    );
  });

  it("answers every frame after welcome exactly once with a valid server frame and a documented code, and keeps the socket open", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(incoming, { minLength: 1, maxLength: 12 }), async (frames) => {
        const edge = edgeForFuzzing();
        const { transport, session } = await edge.authenticated("mallory");
        const before = transport.texts.length;
        for (const { text, isBinary } of frames) session.receive(text, isBinary);
        // One reply per frame: a request's success frame or an error (the backlog's synced may come too).
        const replies = (): Record<string, unknown>[] => transport.frames.slice(before).filter((frame) => frame["type"] !== "synced");
        await transport.frame(() => replies().length >= frames.length, before);
        expect(replies()).toHaveLength(frames.length);
        expect(transport.isOpen).toBe(true);
        expect(transport.violations).toEqual([]);
        for (const reply of replies()) {
          if (reply["type"] === "error") {
            expect(documentedCodes.has(String(reply["code"]))).toBe(true);
            // internal would be a throw nobody expected: a bug, whatever the frame.
            expect(reply["code"]).not.toBe("internal");
          }
        }
        expect(edge.logger.lines.filter((line) => line.level === "error")).toEqual([]);
        edge.core.closeAll();
      }),
      { numRuns: 300 },
    );
  });
});
