// Tracing end to end (issue 13 item 3, docs/decisions/0034): a topology of real processes exports its
// spans over OTLP/HTTP to a collector in this test; one message from alice (cell a, edge 1) to bob (cell
// b, edge 2) makes one trace from the edge's send frame to the worker's handling of the send, and the
// batched work (the group commit's statement, the publish of the deliveries, bob's edge's delivery) is
// one span each that links to the send. The trace is printed as a tree with durations.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import { CellwireClient } from "@cellwire/client";
import { defaultDevKeyDirectory, signDevToken } from "@cellwire/edge/dev-keys";
import type { Message } from "@cellwire/protocol";
import { pollUntil } from "@cellwire/testkit";
import { startOtlpCollector, traceTree, type CollectedSpan, type OtlpCollector } from "../test/otlp-collector.ts";
import { placeUsers, startTestTopology, type TestTopology } from "./test-topology.ts";

let collector: OtlpCollector;
let test: TestTopology;
const clients: CellwireClient[] = [];

beforeAll(async () => {
  collector = await startOtlpCollector();
  test = await startTestTopology({
    label: "tracing",
    cells: [
      { cellId: "a", workerCount: 1 },
      { cellId: "b", workerCount: 1 },
    ],
    // OpenTelemetry's own settings: the endpoint turns tracing on; the batch processor exports every 100 ms.
    extraEnvironment: { OTEL_EXPORTER_OTLP_ENDPOINT: collector.endpoint, OTEL_BSP_SCHEDULE_DELAY: "100" },
  });
  await placeUsers(test, [
    ["alice", "a"],
    ["bob", "b"],
  ]);
});

afterAll(async () => {
  for (const client of clients) client.close();
  await test?.destroy();
  await collector?.stop();
});

async function connect(userId: string, edgeIndex: number, received: Message[]): Promise<CellwireClient> {
  const edge = test.topology.edges[edgeIndex];
  if (edge === undefined) throw new Error(`no edge ${edgeIndex}`);
  const client = new CellwireClient({
    url: edge.webSocketUrl,
    deviceId: "phone",
    WebSocket,
    tokenProvider: () => signDevToken(defaultDevKeyDirectory, userId, { deviceId: "phone" }),
  });
  clients.push(client);
  client.on("message", (message) => received.push(message));
  await client.connect();
  return client;
}

const linksTo = (span: CollectedSpan, target: CollectedSpan): boolean =>
  span.links.some((link) => link.traceId === target.traceId && link.spanId === target.spanId);

describe("tracing", () => {
  it("makes one trace per send, from the edge through the worker, with the batches linked and the delivery on bob's edge", async () => {
    const atAlice: Message[] = [];
    const atBob: Message[] = [];
    const alice = await connect("alice", 0, atAlice);
    await connect("bob", 1, atBob);
    const conversation = await alice.openDirect("bob");
    // The first send of a worker prepares its statement; the second shows what a send costs.
    for (const body of ["first hello", "traced hello"]) {
      const ack = await alice.send(conversation.conversationId, body);
      await pollUntil(`bob's "${body}"`, () => (atBob.some((message) => message.messageId === ack.messageId) ? true : undefined), {
        deadlineMs: 10_000,
      });
    }

    const detail = (): string => collector.spans.map((span) => `${span.processName} ${span.name} ${span.traceId}`).join("\n");
    const sendSpans = await pollUntil(
      "the edge's two send spans",
      () => {
        const spans = collector.spans.filter((span) => span.name === "edge.send" && span.attributes["cellwire.frame.type"] === "send");
        return spans.length === 2 ? spans.sort((a, b) => (a.startTimeNanos < b.startTimeNanos ? -1 : 1)) : undefined;
      },
      { deadlineMs: 10_000, detail },
    );
    const sendSpan = sendSpans[1];
    if (sendSpan === undefined) throw new Error("no second send span");
    const { traceId } = sendSpan;
    expect(sendSpan).toMatchObject({ service: "cellwire-edge", processName: "cellwire-edge-1", parentSpanId: "", statusCode: 0 });

    // The worker continues the send's trace: its span of the send is a child of the edge's.
    const workerSend = await pollUntil(
      "the worker's send span",
      () => collector.spans.find((span) => span.name === "worker.send" && span.traceId === traceId),
      { deadlineMs: 10_000, detail },
    );
    expect(workerSend).toMatchObject({ service: "cellwire-worker", processName: "cellwire-worker-a-1", parentSpanId: sendSpan.spanId });

    // The batched work links to the send's span on the worker: the group commit's statement, the publish
    // of the deliveries, and bob's edge's delivery (in traces of their own).
    const linked = (name: string, processName: string): Promise<CollectedSpan> =>
      pollUntil(
        `${name} on ${processName} linked to the send`,
        () => collector.spans.find((span) => span.name === name && span.processName === processName && linksTo(span, workerSend)),
        { deadlineMs: 10_000, detail },
      );
    const commit = await linked("worker.send_commit", "cellwire-worker-a-1");
    const publish = await linked("worker.publish_deliveries", "cellwire-worker-a-1");
    const delivery = await linked("edge.deliver", "cellwire-edge-2");
    expect(commit.attributes).toMatchObject({ "db.operation.name": "append_messages", "cellwire.batch.sends": 1 });
    expect(commit.links).toHaveLength(1);
    expect(commit.parentSpanId).toBe("");
    expect(publish.attributes["cellwire.batch.messages"]).toBe(1);
    expect(delivery.attributes["cellwire.delivery.messages"]).toBe(1);
    // Each happened within the send's life, in order: stored, published, delivered.
    expect(commit.startTimeNanos).toBeGreaterThanOrEqual(workerSend.startTimeNanos);
    expect(publish.startTimeNanos).toBeGreaterThanOrEqual(commit.endTimeNanos);
    expect(delivery.endTimeNanos).toBeGreaterThanOrEqual(publish.startTimeNanos);
    expect(collector.rejected).toEqual([]);

    console.log(`one send, as exported:\n${traceTree(collector.spans, traceId)}`);
  });

  it("carries the trace of a request that is not a send to the worker and the requests the worker makes for it", async () => {
    // openDirect above: edge.request → worker.request (cell.openDirect), in one trace; the worker's relay of
    // the joined events (a batch of outbox rows) is a span linked to that request, and its appends to the
    // mailboxes, one of them bob's in cell b, are its children.
    const openSpan = collector.spans.find(
      (span) => span.name === "edge.request" && span.attributes["cellwire.frame.type"] === "openDirect",
    );
    expect(openSpan).toBeDefined();
    const traceId = openSpan?.traceId ?? "";
    const workerRequest = await pollUntil(
      "the worker's openDirect span",
      () =>
        collector.spans.find(
          (span) =>
            span.name === "worker.request" && span.traceId === traceId && span.attributes["cellwire.request.type"] === "cell.openDirect",
        ),
      { deadlineMs: 10_000 },
    );
    expect(workerRequest.parentSpanId).toBe(openSpan?.spanId);
    const relay = await pollUntil(
      "the relay linked to the openDirect",
      () => collector.spans.find((span) => span.name === "worker.relay" && linksTo(span, workerRequest)),
      { deadlineMs: 10_000 },
    );
    expect(relay).toMatchObject({ processName: "cellwire-worker-a-1", parentSpanId: "" });
    const appended = await pollUntil(
      "the relay's append to bob's mailbox in cell b",
      () =>
        collector.spans.find(
          (span) =>
            span.traceId === relay.traceId &&
            span.processName === "cellwire-worker-b-1" &&
            span.attributes["cellwire.request.type"] === "cell.appendMailbox",
        ),
      { deadlineMs: 10_000 },
    );
    expect(appended).toMatchObject({ name: "worker.request", parentSpanId: relay.spanId });
    console.log(`one openDirect, as exported:\n${traceTree(collector.spans, traceId)}`);
  });
});
