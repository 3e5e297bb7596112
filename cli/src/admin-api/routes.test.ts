// The admin API's routing and request parsing, without a socket: every endpoint's typed request, and the
// 404, 405 and 400 answers for what is not one.
import { describe, expect, it } from "vitest";
import { AdminHttpError, matchRoute, parseAdminRequest, redriveRequestIdsMax, type AdminRequest } from "./routes.ts";

/** The request, after checking its route named the same operation (what a request refused for its input is counted under). */
function parse(method: string, url: string, body?: unknown): AdminRequest {
  const match = matchRoute(method, url);
  const request = parseAdminRequest(match, body);
  expect(match.route.operation).toBe(request.operation);
  return request;
}

function refusal(work: () => unknown): { status: number; code: string; message: string; headers: Readonly<Record<string, string>> } {
  try {
    work();
  } catch (error) {
    if (error instanceof AdminHttpError) return { status: error.status, code: error.code, message: error.message, headers: error.headers };
    throw error;
  }
  throw new Error("expected a refusal");
}

describe("matchRoute and parseAdminRequest: one typed request per endpoint", () => {
  it("maps each endpoint to its operation with defaults filled in", () => {
    expect(parse("GET", "/v1/cells")).toEqual({ operation: "cells" });
    expect(parse("POST", "/v1/cells", { cellId: "c" })).toEqual({ operation: "addCell", cellId: "c", workers: 2, weight: 100 });
    expect(parse("POST", "/v1/cells", { cellId: "c", workers: 3, weight: 50 })).toEqual({
      operation: "addCell",
      cellId: "c",
      workers: 3,
      weight: 50,
    });
    expect(parse("GET", "/v1/cells/a/ring")).toEqual({ operation: "ring", cellId: "a" });
    expect(parse("POST", "/v1/cells/b/drain", {})).toEqual({ operation: "drain", cellId: "b", concurrency: 8 });
    expect(parse("POST", "/v1/cells/b/drain", { concurrency: 4 })).toEqual({ operation: "drain", cellId: "b", concurrency: 4 });
    expect(parse("GET", "/v1/whereis?user=alice")).toEqual({ operation: "whereis", userId: "alice" });
    expect(parse("POST", "/v1/migrations", { kind: "user", id: "alice", toCellId: "b" })).toEqual({
      operation: "migrate",
      kind: "user",
      id: "alice",
      toCellId: "b",
    });
    const conversationId = "g-AAAAAAAAAAAAAAAAAAAAAA";
    expect(parse("POST", "/v1/migrations", { kind: "conversation", id: conversationId, toCellId: "a" })).toEqual({
      operation: "migrate",
      kind: "conversation",
      id: conversationId,
      toCellId: "a",
    });
    expect(parse("POST", "/v1/revoke", { userId: "mallory" })).toEqual({ operation: "revoke", userId: "mallory" });
    expect(parse("GET", "/v1/dead-letters")).toEqual({ operation: "deadLetters", cellId: undefined, rowsMax: 1000 });
    expect(parse("GET", "/v1/dead-letters?cell=a&limit=5")).toEqual({ operation: "deadLetters", cellId: "a", rowsMax: 5 });
    expect(parse("POST", "/v1/dead-letters/redrive", { cellId: "a", ids: [3, 1] })).toEqual({
      operation: "redrive",
      cellId: "a",
      selection: [3, 1],
    });
    expect(parse("POST", "/v1/dead-letters/redrive", { cellId: "a", all: true })).toEqual({
      operation: "redrive",
      cellId: "a",
      selection: "all",
    });
  });

  it("answers 404 unknown_path for a path that is no endpoint", () => {
    for (const url of [
      "/",
      "/v1",
      "/v1/",
      "/v2/cells",
      "/v1/cells/a",
      "/v1/cells/a/ring/x",
      "/v1/nope",
      "/cells",
      "//v1/cells",
      `/v1/${"x".repeat(600)}`,
    ]) {
      expect(
        refusal(() => matchRoute("GET", url)),
        url,
      ).toMatchObject({ status: 404, code: "unknown_path" });
    }
  });

  it("answers 405 with the methods the path takes", () => {
    expect(refusal(() => matchRoute("DELETE", "/v1/cells"))).toMatchObject({
      status: 405,
      code: "method_not_allowed",
      headers: { allow: "GET, POST" },
    });
    expect(refusal(() => matchRoute("POST", "/v1/cells/a/ring"))).toMatchObject({ status: 405, headers: { allow: "GET" } });
    expect(refusal(() => matchRoute("GET", "/v1/migrations"))).toMatchObject({ status: 405, headers: { allow: "POST" } });
    expect(refusal(() => matchRoute("GET", "/v1/cells/a/drain"))).toMatchObject({ status: 405, headers: { allow: "POST" } });
  });

  it("refuses malformed ids with the sentence the commands print for them", () => {
    expect(refusal(() => parse("GET", "/v1/cells/Nope/ring"))).toEqual({
      status: 400,
      code: "invalid_input",
      message: '"Nope" is not a cell id',
      headers: {},
    });
    expect(refusal(() => parse("GET", "/v1/cells/a%2Eb/ring")).message).toBe('"a.b" is not a cell id');
    expect(refusal(() => parse("GET", "/v1/cells/%E0%A4%A/ring")).message).toBe('"%E0%A4%A" is not a cell id');
    expect(refusal(() => parse("GET", "/v1/whereis?user=victim.%3E")).message).toBe('"victim.>" is not a user id');
    expect(refusal(() => parse("POST", "/v1/migrations", { kind: "conversation", id: "alice", toCellId: "b" })).message).toBe(
      '"alice" is not a conversation id',
    );
    expect(refusal(() => parse("POST", "/v1/migrations", { kind: "user", id: "alice", toCellId: "B" })).message).toBe(
      '"B" is not a cell id',
    );
    expect(refusal(() => parse("POST", "/v1/revoke", { userId: "a b" })).message).toBe('"a b" is not a user id');
    expect(refusal(() => parse("GET", "/v1/dead-letters?cell=*")).message).toBe('"*" is not a cell id');
    expect(refusal(() => parse("POST", "/v1/cells/x y/drain", {})).status).toBe(400);
  });

  it("refuses bodies and queries that are not exactly what the endpoint takes", () => {
    const bad: [string, string, unknown][] = [
      ["POST", "/v1/migrations", { kind: "user", id: "alice" }],
      ["POST", "/v1/migrations", { kind: "mailbox", id: "alice", toCellId: "b" }],
      ["POST", "/v1/migrations", { kind: "user", id: "alice", toCellId: "b", extra: 1 }],
      ["POST", "/v1/migrations", []],
      ["POST", "/v1/migrations", "alice"],
      ["POST", "/v1/migrations", { kind: "user", id: 7, toCellId: "b" }],
      ["POST", "/v1/revoke", {}],
      ["POST", "/v1/cells", { cellId: "c", workers: 0 }],
      ["POST", "/v1/cells", { cellId: "c", workers: 9 }],
      ["POST", "/v1/cells", { cellId: "c", weight: 1.5 }],
      ["POST", "/v1/cells/a/drain", { concurrency: 65 }],
      ["POST", "/v1/cells/a/drain", { concurrency: "8" }],
      ["POST", "/v1/dead-letters/redrive", { cellId: "a" }],
      ["POST", "/v1/dead-letters/redrive", { cellId: "a", ids: [1], all: true }],
      ["POST", "/v1/dead-letters/redrive", { cellId: "a", ids: [] }],
      ["POST", "/v1/dead-letters/redrive", { cellId: "a", ids: [0] }],
      ["POST", "/v1/dead-letters/redrive", { cellId: "a", ids: [1, 1] }],
      ["POST", "/v1/dead-letters/redrive", { cellId: "a", ids: Array.from({ length: redriveRequestIdsMax + 1 }, (_, index) => index + 1) }],
      ["GET", "/v1/whereis", undefined],
      ["GET", "/v1/whereis?user=alice&user=bob", undefined],
      ["GET", "/v1/whereis?user=alice&conversation=x", undefined],
      ["GET", "/v1/dead-letters?limit=0", undefined],
      ["GET", "/v1/dead-letters?limit=10001", undefined],
      ["GET", "/v1/dead-letters?limit=1e3", undefined],
      ["GET", "/v1/cells?x=1", undefined],
    ];
    for (const [method, url, body] of bad) {
      expect(
        refusal(() => parse(method, url, body)),
        `${method} ${url} ${JSON.stringify(body)?.slice(0, 80)}`,
      ).toMatchObject({
        status: 400,
        code: "invalid_input",
      });
    }
    expect(refusal(() => parse("POST", "/v1/migrations", { kind: "user", id: "alice", toCellId: "b", extra: 1 })).message).toBe(
      "$.extra is not a known field",
    );
  });
});
