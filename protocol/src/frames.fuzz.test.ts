// Fuzzes the client-frame decoder (decodeClientFrame), the edge's first line against hostile input: any
// text, any JSON value, and valid frames with fields replaced, removed or added (__proto__, constructor,
// NaN, 1e309, NATS and SQL metacharacters). fast-check prints the seed and path of a failure; rerun one
// with `fc.assert(..., { seed, path })`.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decodeClientFrame, type ClientFrame } from "./frames.ts";
import { clientMessageIdPattern, conversationIdPattern, deviceIdPattern, userIdPattern } from "./ids.ts";

const conversationId = "g-AAAAAAAAAAAAAAAAAAAAAA";
/** One valid frame of each client type. */
const validFrames: readonly Record<string, unknown>[] = [
  {
    type: "hello",
    protocolVersion: 2,
    token: "a.b.c",
    deviceId: "phone",
    resumeAfterSeq: 3,
    conversations: [{ conversationId, afterSeq: 1 }],
  },
  { type: "send", requestId: "r-1", conversationId, clientMessageId: "c-1", body: "hello" },
  { type: "openDirect", requestId: "r-2", peerUserId: "bob" },
  { type: "createGroup", requestId: "r-3", title: "crew", memberUserIds: ["bob", "carol"] },
  { type: "addMembers", requestId: "r-4", conversationId, userIds: ["dave"] },
  { type: "history", requestId: "r-5", conversationId, beforeSeq: 10, limit: 50 },
  { type: "ping", requestId: "r-6" },
  { type: "typing", requestId: "r-7", conversationId },
  { type: "watchPresence", requestId: "r-8", userIds: ["bob"] },
  { type: "read", requestId: "r-9", conversationId, seq: 4 },
  { type: "delivered", requestId: "r-10", conversationId, seq: 4 },
];

const fieldNames = [...new Set(validFrames.flatMap((frame) => Object.keys(frame)))];
const hostileKeys = ["__proto__", "constructor", "prototype", "hasOwnProperty", "toString", "isAdmin", ""];
const hostileCharacters = [".", "*", ">", " ", "'", ";", "--", "\u0000", ":", "\r\n", "é", "\ud800", "\u202e", "$", "{", "\\"];
const idCharacters = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-".split("");

/** A JSON value as text, including what JSON.stringify never writes (1e309, -0) and near-valid ids. */
const rawValue: fc.Arbitrary<string> = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }).map((value) => JSON.stringify(value)),
  fc.constantFrom(
    "1e309",
    "-1e309",
    "-0",
    "9007199254740992",
    "9007199254740991",
    "-1",
    "1.5",
    "0",
    "2",
    "null",
    "true",
    "[]",
    "{}",
    '"NaN"',
    '""',
    `${"[".repeat(500)}${"]".repeat(500)}`,
  ),
  fc.string({ unit: fc.constantFrom(...idCharacters, ...hostileCharacters), maxLength: 30 }).map((value) => JSON.stringify(value)),
  fc.string({ unit: fc.constantFrom(...idCharacters), minLength: 22, maxLength: 22 }).map((tail) => JSON.stringify(`d-${tail}`)),
  fc
    .array(fc.string({ unit: fc.constantFrom(...idCharacters, "."), minLength: 1, maxLength: 8 }), { maxLength: 4 })
    .map((values) => JSON.stringify(values)),
);

type Mutation = { readonly kind: "set"; readonly key: string; readonly raw: string } | { readonly kind: "remove"; readonly key: string };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant("set" as const), key: fc.constantFrom(...fieldNames, ...hostileKeys), raw: rawValue }),
  fc.record({ kind: fc.constant("remove" as const), key: fc.constantFrom(...fieldNames) }),
);

/** Writes the object as JSON text by hand, so that a `__proto__` key is a key and a key may repeat. */
function frameText(frame: Record<string, unknown>, mutations: readonly Mutation[]): string {
  const entries = new Map<string, string>(Object.entries(frame).map(([key, value]) => [key, JSON.stringify(value)]));
  const repeated: [string, string][] = [];
  for (const change of mutations) {
    if (change.kind === "remove") entries.delete(change.key);
    else if (entries.has(change.key) && change.raw.length % 2 === 0) repeated.push([change.key, change.raw]);
    else entries.set(change.key, change.raw);
  }
  return `{${[...entries, ...repeated].map(([key, raw]) => `${JSON.stringify(key)}:${raw}`).join(",")}}`;
}

const mutatedFrame: fc.Arbitrary<string> = fc
  .tuple(fc.constantFrom(...validFrames), fc.array(mutation, { minLength: 0, maxLength: 4 }))
  .map(([frame, mutations]) => frameText(frame, mutations));

const anyText: fc.Arbitrary<string> = fc.oneof(
  fc.string({ unit: "binary", maxLength: 200 }),
  fc.jsonValue().map((value) => JSON.stringify(value)),
  mutatedFrame,
  // A valid frame cut anywhere.
  fc.tuple(fc.constantFrom(...validFrames), fc.nat()).map(([frame, at]) => {
    const text = JSON.stringify(frame);
    return text.slice(0, at % text.length);
  }),
);

const failureCodes = new Set(["malformed_frame", "unknown_frame_type", "invalid_field"]);
const requestIdPattern = /^[A-Za-z0-9_.:-]{1,64}$/;

/** Every id a decoded frame carries matches its allowlist, and every number is a safe integer. */
function checkDecoded(frame: ClientFrame): void {
  const ids: [string | undefined, RegExp][] = [];
  const numbers: (number | undefined)[] = [];
  switch (frame.type) {
    case "hello":
      ids.push(
        [frame.deviceId, deviceIdPattern],
        ...(frame.conversations ?? []).map((cursor): [string, RegExp] => [cursor.conversationId, conversationIdPattern]),
      );
      numbers.push(frame.protocolVersion, frame.resumeAfterSeq, ...(frame.conversations ?? []).map((cursor) => cursor.afterSeq));
      break;
    case "send":
      ids.push([frame.conversationId, conversationIdPattern], [frame.clientMessageId, clientMessageIdPattern]);
      break;
    case "openDirect":
      ids.push([frame.peerUserId, userIdPattern]);
      break;
    case "createGroup":
      ids.push(...frame.memberUserIds.map((userId): [string, RegExp] => [userId, userIdPattern]));
      break;
    case "addMembers":
      ids.push([frame.conversationId, conversationIdPattern], ...frame.userIds.map((userId): [string, RegExp] => [userId, userIdPattern]));
      break;
    case "history":
      ids.push([frame.conversationId, conversationIdPattern]);
      numbers.push(frame.beforeSeq, frame.limit);
      break;
    case "typing":
      ids.push([frame.conversationId, conversationIdPattern]);
      break;
    case "watchPresence":
      ids.push(...frame.userIds.map((userId): [string, RegExp] => [userId, userIdPattern]));
      break;
    case "read":
    case "delivered":
      ids.push([frame.conversationId, conversationIdPattern]);
      numbers.push(frame.seq);
      break;
    case "ping":
    case "refresh": // carries only an opaque token, which the edge verifies, not the decoder
      break;
  }
  if (frame.type !== "hello") expect(frame.requestId).toMatch(requestIdPattern);
  for (const [id, pattern] of ids) if (id !== undefined) expect(id).toMatch(pattern);
  for (const number of numbers) if (number !== undefined) expect(Number.isSafeInteger(number) && !Object.is(number, -0)).toBe(true);
}

function decodesSafely(text: string): void {
  const decoded = decodeClientFrame(text);
  if (decoded.ok) {
    checkDecoded(decoded.frame);
    // Only known fields survive: the frame written back decodes to itself.
    expect(decodeClientFrame(JSON.stringify(decoded.frame))).toEqual(decoded);
    return;
  }
  const { code, message, requestId } = decoded.failure;
  expect(failureCodes.has(code)).toBe(true);
  expect(typeof message).toBe("string");
  if (requestId !== undefined) expect(requestId).toMatch(requestIdPattern);
  if (code === "malformed_frame") expect(requestId).toBeUndefined();
}

describe("decodeClientFrame under fuzzing", () => {
  it("never throws on any text, and answers ok with allowlisted ids or one of its three codes", () => {
    fc.assert(fc.property(anyText, decodesSafely), { numRuns: 3000 });
  });

  it("never throws on mutated valid frames (hostile keys, NaN, 1e309, -0, metacharacters)", () => {
    fc.assert(fc.property(mutatedFrame, decodesSafely), { numRuns: 3000 });
  });

  it("refuses a frame with any key it does not know, whatever the key (__proto__ and constructor included)", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...validFrames),
        fc.oneof(fc.constantFrom(...hostileKeys), fc.string({ maxLength: 20 })),
        rawValue,
        (frame, key, raw) => {
          fc.pre(!Object.hasOwn(frame, key));
          const decoded = decodeClientFrame(frameText(frame, [{ kind: "set", key, raw }]));
          expect(decoded.ok).toBe(false);
          if (!decoded.ok) expect(decoded.failure.code).toBe("invalid_field");
        },
      ),
      { numRuns: 2000 },
    );
  });

  it("pollutes no prototype while decoding __proto__ and constructor keys", () => {
    fc.assert(
      fc.property(mutatedFrame, (text) => void decodeClientFrame(text)),
      { numRuns: 1000 },
    );
    for (const text of [
      '{"type":"ping","requestId":"r","__proto__":{"isAdmin":true}}',
      '{"__proto__":{"type":"ping","requestId":"r"}}',
      '{"type":"ping","requestId":"r","constructor":{"prototype":{"isAdmin":true}}}',
    ]) {
      decodeClientFrame(text);
    }
    expect(Object.keys(Object.prototype)).toEqual([]);
    expect(({} as Record<string, unknown>)["isAdmin"]).toBeUndefined();
    // A __proto__ key is an own field like any other, so the frame is refused rather than read through it.
    expect(decodeClientFrame('{"__proto__":{"type":"ping","requestId":"r"}}')).toMatchObject({
      ok: false,
      failure: { code: "invalid_field" },
    });
  });
});
