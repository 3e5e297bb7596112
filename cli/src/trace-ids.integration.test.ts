// Trace ids with tracing off, end to end (issue 13 item 2, docs/decisions/0037): on a topology of real
// processes without an OTLP endpoint, a send the worker fails to store (a trigger in the cell's database
// refuses its body) is answered internal, and the edge's error line about it and the worker's error line
// about its batch carry the same 32-hex traceId, the one derived from the send (sendTraceId). A send that
// succeeds reaches the deliveries subject with no trace context: recipient edges derive the same id.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import pg from "pg";
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import { ensureCellDatabase } from "@cellwire/cells";
import { decodeMessage, sendTraceId } from "@cellwire/cluster";
import { defaultDevKeyDirectory, signDevToken } from "@cellwire/edge/dev-keys";
import { deliveriesSubject, deliveryBatch, protocolVersion, type Message } from "@cellwire/protocol";
import { pollUntil } from "@cellwire/testkit";
import { parseLogLine, type ServiceLogLine } from "../test/log-lines.ts";
import { RawSocket } from "../test/raw-socket.ts";
import { placeUsers, startTestTopology, testServices, type TestTopology } from "./test-topology.ts";

const deadlineMs = 20_000;
const refusedBody = "refused by the test trigger";

let test: TestTopology;
let database: pg.Client | undefined;
let nats: NatsConnection | undefined;
const sockets: RawSocket[] = [];

beforeAll(async () => {
  test = await startTestTopology({
    label: "traceids",
    cells: [{ cellId: "a", workerCount: 1 }],
    edgeCount: 1,
    // Tracing off, whatever the environment running the tests says (an empty endpoint is off).
    extraEnvironment: { OTEL_EXPORTER_OTLP_ENDPOINT: "" },
  });
  await placeUsers(test, [
    ["alice", "a"],
    ["bob", "a"],
  ]);
  database = new pg.Client({ connectionString: await ensureCellDatabase(testServices.postgresAdminUrl, test.namespace, "a") });
  await database.connect();
  // A send whose body is refusedBody fails in the worker's statement: not the database's absence, so it
  // is answered internal at once and logged, as a broken statement would be.
  await database.query(`create function refuse_test_body() returns trigger language plpgsql as $$
    begin
      if new.body = '${refusedBody}' then raise exception 'the test trigger refused this body'; end if;
      return new;
    end $$`);
  await database.query(`create trigger refuse_test_body before insert on messages for each row execute function refuse_test_body()`);
});

afterAll(async () => {
  for (const socket of sockets) socket.close();
  await nats?.close();
  await database?.end().catch(() => undefined);
  await test?.destroy();
});

async function session(userId: string): Promise<RawSocket> {
  const edge = test.topology.edges[0];
  if (edge === undefined) throw new Error("no edge");
  const socket = await RawSocket.open(edge.webSocketUrl, deadlineMs);
  sockets.push(socket);
  socket.send(
    JSON.stringify({ type: "hello", protocolVersion, token: await signDevToken(defaultDevKeyDirectory, userId), deviceId: "phone" }),
  );
  await socket.frame((frame) => frame["type"] === "welcome", deadlineMs);
  return socket;
}

/** The log lines so far of the processes whose name contains `process`, at `level`, whose message contains `text`. */
function linesOf(process: string, level: string, text: string): ServiceLogLine[] {
  return test.output
    .map(parseLogLine)
    .filter((line): line is ServiceLogLine => line !== undefined)
    .filter((line) => line.processName.includes(process) && line.level === level && line.msg.includes(text));
}

describe("trace ids with tracing off", () => {
  it("names one send's trace id, derived from the send, in the edge's and the worker's error lines about it, and carries nothing for it in the deliveries", async () => {
    const alice = await session("alice");
    alice.send(JSON.stringify({ type: "openDirect", requestId: "open", peerUserId: "bob" }));
    const opened = await alice.frame((frame) => frame["requestId"] === "open", deadlineMs);
    const conversation = opened["conversation"] as { conversationId?: unknown } | undefined;
    const conversationId = String(conversation?.conversationId);

    alice.send(JSON.stringify({ type: "send", requestId: "refused", conversationId, clientMessageId: "c-refused", body: refusedBody }));
    expect(await alice.frame((frame) => frame["requestId"] === "refused", deadlineMs)).toMatchObject({ type: "error", code: "internal" });
    const [edgeLine, workerLine] = await pollUntil(
      "the edge's and the worker's error lines about the refused send",
      () => {
        const edge = linesOf("edge", "error", "the cell answered internal")[0];
        const worker = linesOf("worker", "error", "sends failed")[0];
        return edge === undefined || worker === undefined ? undefined : ([edge, worker] as const);
      },
      { deadlineMs },
    );
    const traceId = edgeLine.fields["traceId"];
    expect(traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(traceId).not.toBe("0".repeat(32));
    expect(workerLine.fields["traceId"]).toBe(traceId);
    expect(workerLine.msg).toContain("the test trigger refused this body");

    // A send's id is derived from the send (0037): the same at the edge, its worker and a recipient edge.
    expect(traceId).toBe(sendTraceId({ senderUserId: "alice", senderDeviceId: "phone", conversationId, clientMessageId: "c-refused" }));

    // The fan-out: a stored send's delivery batch carries no trace context (nothing on the message path);
    // a recipient edge names the message by the id derived from it, the one its edge and worker name.
    nats = await test.connectNats("edge");
    const deliveries: { readonly message: Message; readonly traceparents: number }[] = [];
    const subscription: Subscription = nats.subscribe(deliveriesSubject(test.namespace), {
      callback: (_error, received) => {
        const decoded = decodeMessage(deliveryBatch, received.data);
        if (!decoded.ok) return;
        const traceparents = received.headers?.values("traceparent").length ?? 0;
        for (const { message } of decoded.value.messages) deliveries.push({ message, traceparents });
      },
    });
    await nats.flush();
    // From bob: alice's session would make this send wait for her refused one (its predecessor, 0020).
    const bob = await session("bob");
    bob.send(JSON.stringify({ type: "send", requestId: "stored", conversationId, clientMessageId: "c-stored", body: "hello" }));
    expect(await bob.frame((frame) => frame["requestId"] === "stored", deadlineMs)).toMatchObject({ type: "ack" });
    const delivered = await pollUntil(
      "the stored send's delivery",
      () => deliveries.find(({ message }) => message.clientMessageId === "c-stored"),
      { deadlineMs },
    );
    subscription.unsubscribe();
    expect(delivered.traceparents).toBe(0);
    expect(sendTraceId(delivered.message)).toBe(
      sendTraceId({ senderUserId: "bob", senderDeviceId: "phone", conversationId, clientMessageId: "c-stored" }),
    );
  });
});
