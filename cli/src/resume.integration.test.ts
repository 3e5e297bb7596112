// Mailboxes and resume on the real topology: a device that was away receives exactly what it missed, in
// mailbox order, whether it comes back to an idle mailbox or while messages keep arriving; every device
// of a user converges on the same mailbox; the history checker finds nothing wrong with the whole run.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SequencedEvent } from "@cellwire/protocol";
import { RecordedRun, type RecordedDevice } from "./recorded-run.ts";
import { placeUsers, startTestTopology, testServices, type TestTopology } from "./test-topology.ts";

let test: TestTopology;
const run = new RecordedRun();

function device(userId: string, deviceId: string, edgeIndex: number, resumeAfterSeq?: number): Promise<RecordedDevice> {
  const edge = test.topology.edges[edgeIndex];
  if (edge === undefined) throw new Error(`no edge ${edgeIndex}`);
  return run.openDevice(userId, deviceId, [edge.webSocketUrl], resumeAfterSeq);
}

let sent = 0;
function send(from: RecordedDevice, conversationId: string, body: string): Promise<{ messageId: string; seq: number }> {
  return run.send(from, conversationId, body, `${from.userId}-${from.deviceId}-${sent++}`);
}

const seqsOf = (events: readonly SequencedEvent[]): number[] => events.map((event) => event.seq);
const idsOf = (events: readonly SequencedEvent[]): string[] => events.map((event) => (event.event.kind === "message" ? event.event.message.messageId : "?"));
const oneTo = (count: number, from = 1): number[] => Array.from({ length: count - from + 1 }, (_, index) => from + index);

beforeAll(async () => {
  test = await startTestTopology({ label: "resume" });
  await placeUsers(test, [
    ["alice", "a"],
    ["bob", "b"],
    ["carol", "a"],
  ]);
});

afterAll(async () => {
  run.closeAll();
  await test?.destroy();
});

describe("mailboxes and resume", () => {
  it("gives a returning device exactly what it missed and makes every device converge", async () => {
    const alice = await device("alice", "phone", 0);
    const carol = await device("carol", "phone", 1);
    const bobPhone = await device("bob", "phone", 1);
    const bobLaptop = await device("bob", "laptop", 0, 0);
    bobLaptop.client.close();

    const direct = await alice.client.openDirect("bob");
    const group = await carol.client.createGroup("trio", ["alice", "bob"]);
    run.conversation(direct.conversationId, direct.memberUserIds);
    run.conversation(group.conversationId, group.memberUserIds);
    for (let index = 0; index < 40; index++) {
      await send(alice, direct.conversationId, `direct ${index}`);
      if (index % 4 === 0) await send(carol, group.conversationId, `group ${index}`);
    }
    const total = 50;
    await bobPhone.untilSeq(total, 15_000);
    expect(seqsOf(bobPhone.events)).toEqual(oneTo(total));

    const startedAt = performance.now();
    const laptopAgain = await device("bob", "laptop", 0, 0);
    const resumeMs = performance.now() - startedAt;
    expect(seqsOf(laptopAgain.events)).toEqual(oneTo(total));
    expect(idsOf(laptopAgain.events)).toEqual(idsOf(bobPhone.events));
    process.stdout.write(`resume of ${total} missed events took ${resumeMs.toFixed(0)} ms\n`);

    const tablet = await device("bob", "tablet", 1, 20);
    expect(seqsOf(tablet.events)).toEqual(oneTo(total, 21));

    // Alice's own messages reach her mailbox too, so her other devices converge on them.
    const aliceLaptop = await device("alice", "laptop", 1, 0);
    expect(aliceLaptop.events).toHaveLength(total);
  });

  it("resumes while messages keep arriving without losing or doubling any", async () => {
    const alice = await device("alice", "desk", 0);
    const direct = await alice.client.openDirect("bob");
    const bobWatch = await device("bob", "watch", 1);
    const base = bobWatch.lastSeq();

    const sending = (async () => {
      for (let index = 0; index < 30; index++) await send(alice, direct.conversationId, `during resume ${index}`);
    })();
    const late = await device("bob", "late", 0, 0);
    await sending;
    await bobWatch.untilSeq(base + 30, 15_000);
    await late.untilSeq(base + 30, 15_000);
    expect(seqsOf(late.events)).toEqual(oneTo(base + 30));
    expect(idsOf(late.events.slice(base))).toEqual(idsOf(bobWatch.events));
  });

  it("passes the history checker over the whole run", async () => {
    // Quiescence: every open device has received its user's whole mailbox, so the checker may demand completeness.
    await run.settle(15_000);
    const report = await run.check(testServices.postgresAdminUrl, test.namespace, ["a", "b"]);
    expect(report.findings).toEqual([]);
    expect(report.ok).toBe(true);
    expect(run.record.acks.length).toBeGreaterThan(70);
  });
});
