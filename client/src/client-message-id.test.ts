import { clientMessageIdPattern } from "@cellwire/protocol";
import { describe, expect, it } from "vitest";
import { createClientMessageId } from "./client-message-id.ts";

const uuidV4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe("createClientMessageId", () => {
  it("uses crypto.randomUUID where present", () => {
    const id = createClientMessageId();
    expect(id).toMatch(uuidV4);
    expect(id).toMatch(clientMessageIdPattern);
    expect(createClientMessageId()).not.toBe(id);
  });

  it("falls back to getRandomValues (plain-http pages have no randomUUID) with version and variant bits set", () => {
    const id = createClientMessageId({ getRandomValues: (array) => array.fill(0xff) });
    expect(id).toBe("ffffffff-ffff-4fff-bfff-ffffffffffff");
    expect(createClientMessageId({ getRandomValues: (array) => array.fill(0) })).toBe("00000000-0000-4000-8000-000000000000");
  });

  it("says what to do when there is no crypto at all", () => {
    expect(() => createClientMessageId({})).toThrow(/pass a clientMessageId/);
  });
});
