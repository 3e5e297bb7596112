// Pins the public API: what callers (web page, CLI, load tests) import from @cellwire/client.
import { describe, expect, expectTypeOf, it } from "vitest";
import * as client from "./index.ts";
import type { Ack, CellwireClient, CellwireClientErrorCode, ConnectionStateName, ConversationSummary, HistoryPage, Message, TokenProvider, Welcome } from "./index.ts";

describe("@cellwire/client public entry", () => {
  it("exports the client, its error class and the id checks", () => {
    expect(Object.keys(client).sort()).toEqual(
      ["CellwireClient", "CellwireClientError", "defaultBackoffOptions", "isConversationId", "isDeviceId", "isUserId", "messageBodyLengthMax"].sort(),
    );
  });

  it("types each request by its reply", () => {
    expectTypeOf<CellwireClient["connect"]>().returns.resolves.toEqualTypeOf<Welcome>();
    expectTypeOf<CellwireClient["send"]>().returns.resolves.toEqualTypeOf<Ack>();
    expectTypeOf<CellwireClient["openDirect"]>().returns.resolves.toEqualTypeOf<ConversationSummary>();
    expectTypeOf<CellwireClient["history"]>().returns.resolves.toEqualTypeOf<HistoryPage>();
    expectTypeOf<HistoryPage["messages"]>().toEqualTypeOf<Message[]>();
    expectTypeOf<CellwireClient["state"]>().toEqualTypeOf<ConnectionStateName>();
    expectTypeOf<"timeout" | "closed" | "too_many_pending" | "not_a_member">().toExtend<CellwireClientErrorCode>();
    // A provider that ignores its argument fits, as the brief's `() => Promise<string>` does.
    expectTypeOf<() => Promise<string>>().toExtend<TokenProvider>();
  });
});
