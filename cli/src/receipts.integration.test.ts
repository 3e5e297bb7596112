// Receipts on the real topology: a device reports delivered by itself, a read on one device reaches the
// reader's other devices and the other member, a lower read changes nothing, and a non-member is refused.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import type { NatsConnection } from "@nats-io/transport-node";
import { DirectoryClient } from "@cellwire/cluster";
import { CellwireClient, CellwireClientError, type Receipt } from "@cellwire/client";
import { defaultDevKeyDirectory, signDevToken } from "@cellwire/edge/dev-keys";
import { startTestTopology, type TestTopology } from "./test-topology.ts";

let test: TestTopology;
let nats: NatsConnection;
const clients: CellwireClient[] = [];
const waitMs = 15_000;

type Device = {
  readonly client: CellwireClient;
  readonly receipts: Receipt[];
  until: (match: (receipt: Receipt) => boolean) => Promise<Receipt>;
};

async function device(userId: string, deviceId: string, edgeIndex: number): Promise<Device> {
  const edge = test.topology.edges[edgeIndex];
  if (edge === undefined) throw new Error(`no edge ${edgeIndex}`);
  const client = new CellwireClient({
    url: edge.webSocketUrl,
    deviceId,
    WebSocket,
    deliveredDelayMs: 50,
    tokenProvider: () => signDevToken(defaultDevKeyDirectory, userId, { deviceId }),
  });
  clients.push(client);
  const receipts: Receipt[] = [];
  client.on("receipt", (receipt) => receipts.push(receipt));
  const synced = client.whenSynced();
  await client.connect();
  await synced;
  const until = (match: (receipt: Receipt) => boolean): Promise<Receipt> =>
    new Promise((resolve, reject) => {
      const found = receipts.find(match);
      if (found !== undefined) return resolve(found);
      const timer = setTimeout(() => {
        unsubscribe();
        reject(new Error(`${userId}/${deviceId}: no matching receipt within ${waitMs} ms; got ${JSON.stringify(receipts)}`));
      }, waitMs);
      const unsubscribe = client.on("receipt", (receipt) => {
        if (!match(receipt)) return;
        clearTimeout(timer);
        unsubscribe();
        resolve(receipt);
      });
    });
  return { client, receipts, until };
}

beforeAll(async () => {
  test = await startTestTopology({ label: "receipts" });
  nats = await test.connectNats();
  const directory = new DirectoryClient(nats, test.namespace, 5000);
  for (const [userId, cellId] of [
    ["alice", "a"],
    ["bob", "b"],
    ["mallory", "a"],
  ] as const) {
    await directory.assignUser(userId, cellId);
  }
});

afterAll(async () => {
  for (const client of clients) client.close();
  await nats?.close();
  await test?.destroy();
});

describe("receipts", () => {
  it("reports delivered by itself, syncs a read across devices and to the sender, and ignores a lower read", async () => {
    const alice = await device("alice", "phone", 0);
    const bobPhone = await device("bob", "phone", 1);
    const bobLaptop = await device("bob", "laptop", 0);
    const direct = await alice.client.openDirect("bob");
    const { conversationId } = direct;
    await alice.client.send(conversationId, "one");
    const second = await alice.client.send(conversationId, "two");

    // Bob's devices report delivered on their own; Alice learns it from a receipt event.
    const delivered = await alice.until((receipt) => receipt.userId === "bob" && receipt.deliveredSeq === second.seq);
    expect(delivered).toMatchObject({ conversationId, userId: "bob", readSeq: 0 });

    const read = await bobPhone.client.markRead(conversationId, second.seq);
    expect(read).toEqual({ conversationId, readSeq: second.seq, deliveredSeq: second.seq });
    const onLaptop = await bobLaptop.until((receipt) => receipt.userId === "bob" && receipt.readSeq === second.seq);
    expect(onLaptop).toEqual({ conversationId, userId: "bob", readSeq: second.seq, deliveredSeq: second.seq });
    await alice.until((receipt) => receipt.userId === "bob" && receipt.readSeq === second.seq);

    // A lower read changes nothing and announces nothing.
    const receiptsBefore = alice.receipts.length;
    expect(await bobLaptop.client.markRead(conversationId, 1)).toEqual({ conversationId, readSeq: second.seq, deliveredSeq: second.seq });
    // A probe that does announce something, so that "nothing arrived before it" is observable without sleeping.
    await alice.client.send(conversationId, "three");
    await alice.until((receipt) => receipt.userId === "bob" && receipt.deliveredSeq === second.seq + 1);
    expect(
      alice.receipts.slice(receiptsBefore).every((receipt) => receipt.readSeq === second.seq && receipt.deliveredSeq === second.seq + 1),
    ).toBe(true);

    // A read beyond the conversation's last message is refused.
    await expect(bobPhone.client.markRead(conversationId, 99)).rejects.toMatchObject({ code: "invalid_field" });
  });

  it("refuses a read by a non-member", async () => {
    const alice = await device("alice", "desk", 0);
    const mallory = await device("mallory", "phone", 1);
    const direct = await alice.client.openDirect("bob");
    const refused = await mallory.client.markRead(direct.conversationId, 1).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(CellwireClientError);
    expect(refused).toMatchObject({ code: "not_a_member" });
  });
});
