// The worker's batched work with tracing on (docs/decisions/0034): the group commit's statement is one
// span linked to every send it stored, the publish of a commit's messages is one span linked to each,
// and the delivery batch's headers carry each message's send context in message order.
import type { MsgHdrs } from "@nats-io/transport-node";
import { installTracing, type TraceContext } from "@cellwire/cluster";
import type { CellReply, CellSendRequest } from "@cellwire/protocol";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { MessagePublisher, type StoredMessage } from "./message-publisher.ts";
import { SendCommitter } from "./send-committer.ts";
import { MemoryConversationStore } from "../test/memory-store.ts";
import { newGroupId } from "../test/store-contract.ts";
import { recordingTracing } from "../test/recording-span-exporter.ts";
import type { AppendMessageInput, AppendMessageResult } from "./store/store.ts";

const { tracing, spans } = recordingTracing();
afterEach(() => installTracing(undefined));
afterAll(() => tracing.shutdown());

const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
const logger = { info: () => undefined, warn: () => undefined, error: () => undefined };

function sendTo(conversationId: string, body: string): CellSendRequest {
  return { type: "cell.send", senderUserId: "alice", senderDeviceId: "phone", conversationId, clientMessageId: body, body };
}

describe("the group commit and the publish with tracing on", () => {
  it("makes one statement span linked to each send of the batch, and carries each send's context to its message", async () => {
    installTracing(tracing);
    const memory = new MemoryConversationStore();
    const conversationId = newGroupId();
    await memory.createGroup({ conversationId, creatorUserId: "alice", title: "t", memberUserIds: ["bob"], epoch: 1 });
    // The first batch is held until the others have queued behind it, so they are stored together.
    let releaseFirst: () => void = () => undefined;
    const firstHeld = new Promise<void>((resolve) => (releaseFirst = resolve));
    let batches = 0;
    const store = {
      appendMessages: async (inputs: readonly AppendMessageInput[]): Promise<AppendMessageResult[]> => {
        if (batches++ === 0) await firstHeld;
        return memory.appendMessages(inputs);
      },
      settledSends: memory.settledSends.bind(memory),
    };
    const published: StoredMessage[][] = [];
    const committer = new SendCommitter({
      workerId: "a-1",
      store,
      ownership: { snapshot: () => ({ ring: { ownerOf: () => "a-1" }, ringEpoch: 3 }), leaseHeld: () => true },
      publish: async (messages) => void published.push([...messages]),
      monotonicNowMs: () => 1000,
      logger,
      limits: { batchSendsMax: 100, pendingSendsMax: 1000, queueWaitMsMax: 1000 },
    });
    const sendSpans = ["a", "b", "c"].map(() => tracing.startSpan("worker.send", {}));
    const replies: CellReply[] = [];
    ["a", "b", "c"].forEach((body, index) => {
      const span = sendSpans[index];
      if (span !== undefined)
        committer.submit(sendTo(conversationId, body), 10_000, (reply) => replies.push(reply), tracing.contextOf(span));
    });
    releaseFirst();
    await committer.whenIdle();
    await settle();
    expect(replies.map((reply) => reply.type)).toEqual(["cell.stored", "cell.stored", "cell.stored"]);
    await tracing.flush();
    const commits = spans.filter((span) => span.name === "worker.send_commit");
    expect(commits.map((span) => span.attributes["cellwire.batch.sends"])).toEqual([1, 2]);
    const spanIdsOf = (contexts: readonly (TraceContext | undefined)[]): (string | undefined)[] =>
      contexts.map((context) => context?.spanId);
    const sendContexts = sendSpans.map((span) => tracing.contextOf(span));
    expect(commits.map((span) => span.links.map((link) => link.context.spanId))).toEqual([
      spanIdsOf(sendContexts.slice(0, 1)),
      spanIdsOf(sendContexts.slice(1)),
    ]);
    // Each batch span is a root of its own trace, not a child of one of its sends.
    for (const commit of commits) expect(commit.parentSpanContext).toBeUndefined();
    expect(spanIdsOf(published.flat().map((stored) => stored.trace))).toEqual(spanIdsOf(sendContexts));
  });

  it("publishes a batch's messages with each one's context in the headers, in message order, and one linked span", async () => {
    installTracing(tracing);
    const memory = new MemoryConversationStore();
    const conversationId = newGroupId();
    await memory.createGroup({ conversationId, creatorUserId: "alice", title: "t", memberUserIds: ["bob"], epoch: 1 });
    const results = await memory.appendMessages(
      ["x", "y", "z"].map((body) => ({
        conversationId,
        senderUserId: "alice",
        senderDeviceId: "phone",
        clientMessageId: body,
        body,
        epoch: 1,
      })),
    );
    const contexts = [
      tracing.contextOf(tracing.startSpan("worker.send", {})),
      undefined,
      tracing.contextOf(tracing.startSpan("worker.send", {})),
    ];
    const stored: StoredMessage[] = results.map((result, index) => {
      if (result.outcome !== "stored" || result.deduplicated) throw new Error(`not stored: ${result.outcome}`);
      return { message: result.message, membersVersion: result.membersVersion, trace: contexts[index] };
    });
    const publishes: { payload: string; headers: MsgHdrs | undefined }[] = [];
    const publisher = new MessagePublisher({
      members: (id) => memory.members(id),
      publish: (payload, headers) => void publishes.push({ payload, headers }),
      logger,
      conversationsMax: 10,
    });
    await publisher.publish(stored);
    expect(publishes).toHaveLength(1);
    const spanIds = tracing.extractEach(publishes[0]?.headers, 3).map((context) => context?.spanId);
    expect(spanIds).toEqual(contexts.map((context) => context?.spanId));
    await tracing.flush();
    const publish = spans.filter((span) => span.name === "worker.publish_deliveries").at(-1);
    expect(publish?.links.map((link) => link.context.spanId)).toEqual([contexts[0]?.spanId, contexts[2]?.spanId]);
  });

  it("publishes without headers when tracing is off", async () => {
    const memory = new MemoryConversationStore();
    const conversationId = newGroupId();
    await memory.createGroup({ conversationId, creatorUserId: "alice", title: "t", memberUserIds: ["bob"], epoch: 1 });
    const [result] = await memory.appendMessages([
      { conversationId, senderUserId: "alice", senderDeviceId: "phone", clientMessageId: "q", body: "q", epoch: 1 },
    ]);
    if (result?.outcome !== "stored" || result.deduplicated) throw new Error("not stored");
    const calls: unknown[][] = [];
    const publisher = new MessagePublisher({
      members: (id) => memory.members(id),
      publish: (...args) => void calls.push(args),
      logger,
      conversationsMax: 10,
    });
    await publisher.publish([{ message: result.message, membersVersion: result.membersVersion }]);
    expect(calls.map((args) => args.length)).toEqual([1]);
  });
});
