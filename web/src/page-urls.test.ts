import { describe, expect, it } from "vitest";
import { createDeviceId, parseTokenResponse, startParametersFrom, tokenPathFor, webSocketUrlFor } from "./page-urls.ts";

describe("page URLs", () => {
  it("opens the WebSocket on the page's own host, wss for https", () => {
    expect(webSocketUrlFor({ protocol: "http:", host: "127.0.0.1:8080" })).toBe("ws://127.0.0.1:8080/ws");
    expect(webSocketUrlFor({ protocol: "https:", host: "chat.example" })).toBe("wss://chat.example/ws");
  });

  it("asks /dev/token for the user and device", () => {
    expect(tokenPathFor("alice", "web-01")).toBe("/dev/token?userId=alice&deviceId=web-01");
  });

  it("decodes the token response or says what is wrong", () => {
    expect(parseTokenResponse({ token: "abc" })).toBe("abc");
    expect(() => parseTokenResponse({ token: "" })).toThrow(/no token/);
    expect(() => parseTokenResponse({ error: "bad" })).toThrow(/no token/);
    expect(() => parseTokenResponse(["abc"])).toThrow(/not a JSON object/);
    expect(() => parseTokenResponse(null)).toThrow(/not a JSON object/);
  });

  it("starts from ?user=&peer= only with two valid, different user ids", () => {
    expect(startParametersFrom("?user=alice&peer=bob")).toEqual({ userId: "alice", peerUserId: "bob" });
    expect(startParametersFrom("?user=alice")).toBeNull();
    expect(startParametersFrom("?user=alice&peer=alice")).toBeNull();
    expect(startParametersFrom("?user=al.ice&peer=bob")).toBeNull();
  });

  it("creates a device id that the protocol accepts", () => {
    expect(createDeviceId((array) => array.fill(171))).toBe("web-abababababab");
  });
});
