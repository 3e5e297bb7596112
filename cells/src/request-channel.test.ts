import { cellRequestChannel, workerChannels } from "@cellwire/protocol";
import { describe, expect, it } from "vitest";
import { offChannelRefusal } from "./request-channel.ts";

describe("offChannelRefusal", () => {
  it("refuses the admin and peer kinds on the edge channel, so edge credentials cannot migrate or append", () => {
    for (const type of ["cell.migrate", "cell.stats", "cell.deadLetters", "cell.redriveDeadLetters", "cell.import", "cell.appendMailbox"]) {
      const refusal = offChannelRefusal(type, "edge");
      expect(refusal?.type).toBe("cell.error");
      expect(refusal?.message).toContain(`${type} is served on the`);
    }
  });

  it("refuses an edge's kinds on the admin and peer channels", () => {
    expect(offChannelRefusal("cell.send", "admin")?.message).toContain("served on the edge subject, not on admin");
    expect(offChannelRefusal("cell.sendBatch", "peer")?.message).toContain("served on the edge subject, not on peer");
  });

  it("serves every kind on its own channel and leaves unknown types to the decoder", () => {
    const kinds = [
      "cell.send",
      "cell.sendBatch",
      "cell.mailboxPageBatch",
      "cell.openDirect",
      "cell.createGroup",
      "cell.addMembers",
      "cell.history",
      "cell.mailboxPage",
      "cell.messagesAfter",
      "cell.members",
      "cell.receipt",
      "cell.appendMailbox",
      "cell.import",
      "cell.migrate",
      "cell.stats",
      "cell.deadLetters",
      "cell.redriveDeadLetters",
    ] as const;
    for (const type of kinds) {
      expect(offChannelRefusal(type, cellRequestChannel(type))).toBeUndefined();
      expect(workerChannels.filter((channel) => offChannelRefusal(type, channel) === undefined)).toEqual([cellRequestChannel(type)]);
    }
    expect(offChannelRefusal("cell.nope", "edge")).toBeUndefined();
    expect(offChannelRefusal(42, "admin")).toBeUndefined();
    expect(offChannelRefusal("__proto__", "admin")).toBeUndefined();
  });
});
