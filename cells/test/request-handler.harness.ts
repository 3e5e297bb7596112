// Test support, not shipped (index.ts does not export it): a CellRequestHandler wired as worker.ts wires
// it (its sends through a SendCommitter on the same store), with what it hands on (relayed outbox rows,
// published messages, mailbox deliveries, member changes) recorded for the tests to read.
import { expect } from "vitest";
import type { CellReply, CellRequest, CellSendBatch, CellSendBatchReplies, Delivery } from "@cellwire/protocol";
import { devDirectConversationKey, type ServiceLogger } from "@cellwire/cluster";
import { KeyedSerialQueue } from "../src/keyed-serial-queue.ts";
import type { StoredMessage } from "../src/message-publisher.ts";
import { CellRequestHandler, type MigrationDependencies } from "../src/request-handler.ts";
import type { OwnershipView } from "../src/worker-ownership.ts";
import { SendCommitter, type SendCommitterLimits } from "../src/send-committer.ts";
import { MemoryConversationStore } from "./memory-store.ts";
import type { ConversationStore, OutboxEntry } from "../src/store/store.ts";

export const silentLogger = { info: () => undefined, warn: () => undefined, error: () => undefined };

/** What the committer and the handler log through (a worker's ServiceLogger, or a silent or recording one). */
type TestLogger = Pick<ServiceLogger, "info" | "warn" | "error">;

/** Limits that never refuse a test's sends unless the test asks for it. */
export const testSendLimits: SendCommitterLimits = { batchSendsMax: 100, pendingSendsMax: 1000, queueWaitMsMax: 60_000 };

/** A SendCommitter as worker.ts builds it, recording what it publishes. */
export function testSendCommitter(options: {
  readonly workerId: string;
  readonly store: Pick<ConversationStore, "appendMessages" | "settledSends">;
  readonly ownership: OwnershipView;
  readonly published?: StoredMessage[];
  readonly logger?: TestLogger;
  readonly monotonicNowMs?: () => number;
  readonly limits?: Partial<SendCommitterLimits>;
}): SendCommitter {
  const { published } = options;
  return new SendCommitter({
    workerId: options.workerId,
    store: options.store,
    ownership: options.ownership,
    publish: async (messages) => void published?.push(...messages),
    monotonicNowMs: options.monotonicNowMs ?? (() => performance.now()),
    logger: options.logger ?? silentLogger,
    limits: { ...testSendLimits, ...options.limits },
  });
}

/** The worker's view of the ring in a test: read at each check, so a test can change it between two. */
export type TestRing = {
  /** The owner of a key; by default the harness's own worker owns every key. */
  readonly ownerOf?: (key: string) => string | undefined;
  readonly epoch?: () => number;
  readonly leaseHeld?: () => boolean;
};

export type HandlerHarnessOptions = {
  readonly store?: ConversationStore;
  readonly ring?: TestRing;
  readonly pendingPerKeyMax?: number;
  readonly workerId?: string;
  readonly cellId?: string;
  readonly warnings?: string[];
  /** Records the lines of the handler and its committer with their fields (instead of `warnings`). */
  readonly logger?: TestLogger;
  readonly migration?: MigrationDependencies;
  readonly sendLimits?: Partial<SendCommitterLimits>;
  readonly drainOutbox?: (conversationId: string) => void;
  /** The clock of request deadlines and of the committer; performance.now() by default. */
  readonly monotonicNowMs?: () => number;
};

export type HandlerHarness = {
  readonly handler: CellRequestHandler;
  readonly store: ConversationStore;
  readonly sends: SendCommitter;
  readonly queue: KeyedSerialQueue;
  /** Mailbox deliveries published by this worker as a mailbox owner. */
  readonly deliveries: Delivery[];
  /** Messages the committer handed to the publisher, in order. */
  readonly published: StoredMessage[];
  /** Outbox rows handed to the relay after a reply, one entry per write. */
  readonly relayed: { readonly conversationId: string; readonly entries: readonly OutboxEntry[] }[];
  /** Conversations whose members this worker changed (membersChanged calls). */
  readonly membersChanged: string[];
  /** What happened, in order: `reply <type>`, `relay <conversation>`, `members changed <conversation>`. */
  readonly events: string[];
  /** Each write the store fenced, as the handler and its committer told the ownership view: `<key> under <epoch>`. */
  readonly fenced: string[];
  /** Sends one request (or raw text) and resolves with its one reply once the request and its after-reply work are done. */
  readonly request: (request: CellRequest | string) => Promise<CellReply>;
  /** Sends a cell.sendBatch and resolves with its replies (answered once). */
  readonly sendBatch: (batch: CellSendBatch) => Promise<CellSendBatchReplies>;
};

export function handlerHarness(options: HandlerHarnessOptions = {}): HandlerHarness {
  const deliveries: Delivery[] = [];
  const published: StoredMessage[] = [];
  const relayed: HandlerHarness["relayed"][number][] = [];
  const membersChanged: string[] = [];
  const events: string[] = [];
  const queue = new KeyedSerialQueue({ pendingPerKeyMax: options.pendingPerKeyMax ?? 100, pendingTotalMax: 1000 });
  const workerId = options.workerId ?? "a-1";
  const ring = options.ring ?? {};
  const { warnings } = options;
  const logger =
    options.logger ?? (warnings === undefined ? silentLogger : { ...silentLogger, warn: (line: string) => void warnings.push(line) });
  const store = options.store ?? new MemoryConversationStore();
  const fenced: string[] = [];
  const ownership: OwnershipView = {
    snapshot: () => ({ ring: { ownerOf: ring.ownerOf ?? (() => workerId) }, ringEpoch: ring.epoch?.() ?? 1 }),
    leaseHeld: ring.leaseHeld ?? (() => true),
    fenced: (key, epoch) => void fenced.push(`${key} under ${epoch}`),
  };
  const monotonicNowMs = options.monotonicNowMs ?? (() => performance.now());
  const sends = testSendCommitter({ workerId, store, ownership, published, logger, monotonicNowMs, limits: options.sendLimits ?? {} });
  const handler = new CellRequestHandler({
    workerId,
    cellId: options.cellId ?? "a",
    store,
    ownership,
    queue,
    sends,
    sendBudgetMs: 10_000,
    monotonicNowMs,
    directConversationKey: devDirectConversationKey,
    relayOutbox: (conversationId, entries) => {
      relayed.push({ conversationId, entries });
      events.push(`relay ${conversationId}`);
    },
    membersChanged: (conversationId) => {
      membersChanged.push(conversationId);
      events.push(`members changed ${conversationId}`);
    },
    publishDelivery: (delivery) => void deliveries.push(delivery),
    logger,
    ...(options.drainOutbox === undefined ? {} : { drainOutbox: options.drainOutbox }),
    ...(options.migration === undefined ? {} : { migration: options.migration }),
  });
  const request = async (input: CellRequest | string): Promise<CellReply> => {
    const replies: CellReply[] = [];
    let answered: (reply: CellReply) => void = () => undefined;
    const firstReply = new Promise<CellReply>((resolve) => (answered = resolve));
    const handled = handler.handle(typeof input === "string" ? input : JSON.stringify(input), (reply) => {
      replies.push(reply);
      events.push(`reply ${reply.type}`);
      answered(reply);
    });
    // A send is answered by the committer after its commit, after handle() settled; anything else within it.
    const reply = await firstReply;
    await handled;
    await sends.whenIdle();
    expect(replies).toHaveLength(1);
    return reply;
  };
  const sendBatch = async (batch: CellSendBatch): Promise<CellSendBatchReplies> => {
    const answers: CellSendBatchReplies[] = [];
    const answer = await new Promise<CellSendBatchReplies>((resolve) =>
      handler.handleSendBatch(batch, (replies) => {
        answers.push(replies);
        resolve(replies);
      }),
    );
    await sends.whenIdle();
    expect(answers).toHaveLength(1);
    return answer;
  };
  return { handler, store, sends, queue, deliveries, published, relayed, membersChanged, events, fenced, request, sendBatch };
}
