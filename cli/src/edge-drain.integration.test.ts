// A rolling restart of both edges under traffic: each edge in turn gets SIGTERM, drains (its sessions
// closed with going_away spread over EDGE_DRAIN_MS, each once its requests are answered), exits 0 and
// is started again on its port before the next one goes. Every client moves to the other edge and
// resumes, and the history checker finds nothing lost, doubled or reordered.
import { afterAll, beforeAll, expect, it, onTestFailed } from "vitest";
import { closeCodes } from "@cellwire/protocol";
import { RecordedRun, type RecordedDevice } from "../test/recorded-run.ts";
import { placeUsers, startTestTopology, testServices, type TestTopology } from "./test-topology.ts";
import { parseLogLine } from "../test/log-lines.ts";

const drainMs = 2000;
const drainGraceMs = 3000;

let test: TestTopology;
const run = new RecordedRun();

beforeAll(async () => {
  test = await startTestTopology({
    label: "edgedrain",
    extraEnvironment: { EDGE_DRAIN_MS: String(drainMs), EDGE_DRAIN_GRACE_MS: String(drainGraceMs) },
  });
  await placeUsers(test, [
    ["alice", "a"],
    ["bob", "b"],
    ["carol", "a"],
    ["dave", "b"],
  ]);
});

afterAll(async () => {
  run.closeAll();
  await test?.destroy();
});

/** A session of one device that ended: on which edge, when, and with which close code. */
type SessionEnd = { readonly device: string; readonly url: string; readonly atMs: number; readonly closeCode: number | null };

/** Resolves once every device is open; fails after deadlineMs naming those that are not. */
async function untilAllOpen(devices: readonly RecordedDevice[], deadlineMs: number): Promise<void> {
  const deadline = performance.now() + deadlineMs;
  for (;;) {
    const notOpen = devices.filter((device) => device.client.state !== "open");
    if (notOpen.length === 0) return;
    if (performance.now() > deadline)
      throw new Error(
        `not open after ${deadlineMs} ms: ${notOpen.map((device) => `${device.userId}/${device.deviceId} (${device.client.state})`).join(", ")}`,
      );
    await new Promise<void>((resolve) => {
      const waits = notOpen.map((device) =>
        device.client.on("state", ({ state }) => {
          if (state !== "open") return;
          for (const stop of waits) stop();
          resolve();
        }),
      );
      setTimeout(() => {
        for (const stop of waits) stop();
        resolve();
      }, 200);
    });
  }
}

it("restarts both edges in turn under traffic: closes spread over the drain window, every client resumes elsewhere, nothing lost", async () => {
  onTestFailed(() => {
    process.stdout.write(
      `${test.output
        .filter((line) => parseLogLine(line)?.processName.startsWith("cellwire-edge") === true)
        .slice(-80)
        .join("\n")}\n`,
    );
  });
  const urls = test.topology.edges.map((edge) => edge.webSocketUrl);
  const devices: RecordedDevice[] = [];
  for (const userId of ["alice", "bob", "carol", "dave"]) {
    devices.push(await run.openDevice(userId, "phone", urls));
    devices.push(await run.openDevice(userId, "laptop", [...urls].reverse()));
  }
  const ends: SessionEnd[] = [];
  for (const device of devices) {
    let openUrl = device.client.url;
    device.client.on("state", ({ state, previousState, url, closeCode }) => {
      if (state === "open") openUrl = url;
      else if (previousState === "open")
        ends.push({ device: `${device.userId}/${device.deviceId}`, url: openUrl, atMs: performance.now(), closeCode });
    });
  }
  const [alicePhone, bobPhone, carolPhone, davePhone] = devices.filter((device) => device.deviceId === "phone");
  if (alicePhone === undefined || bobPhone === undefined || carolPhone === undefined || davePhone === undefined)
    throw new Error("devices missing");
  for (const [from, peer] of [
    [alicePhone, "bob"],
    [carolPhone, "dave"],
    [bobPhone, "carol"],
  ] as const) {
    const conversation = await from.client.openDirect(peer);
    run.conversation(conversation.conversationId, conversation.memberUserIds);
  }
  const group = await davePhone.client.createGroup("everyone", ["alice", "bob", "carol"]);
  run.conversation(group.conversationId, group.memberUserIds);

  // Every phone sends without pause, one send at a time, until the restarts are over.
  let stopping = false;
  const traffic = Promise.all(
    [alicePhone, bobPhone, carolPhone, davePhone].map(async (sender) => {
      const conversations = run.conversationsOf(sender.userId);
      for (let index = 0; !stopping || index < 10; index++) {
        const conversationId = conversations[index % conversations.length] ?? "";
        await run.send(sender, conversationId, `drain ${index} from ${sender.userId}`, `${sender.userId}-${index}`);
      }
    }),
  );

  const drains: {
    processName: string;
    url: string;
    signalledAtMs: number;
    exitedAtMs: number;
    respawnedAtMs: number;
    sessionsBefore: number;
  }[] = [];
  for (const [index, edge] of test.topology.edges.entries()) {
    await untilAllOpen(devices, 30_000);
    const processName = `cellwire-edge-${edge.edgeId}`;
    const url = urls[index] ?? "";
    const sessionsBefore = devices.filter((device) => device.client.url === url).length;
    const signalledAtMs = performance.now();
    const exitCode = await test.topology.signal(processName, "SIGTERM");
    const exitedAtMs = performance.now();
    expect(exitCode).toBe(0);
    await test.topology.respawn(processName);
    // A client may learn of its close after the test process saw the edge exit: closes are counted up to
    // the respawn (no session of this edge can close between its exit and then but by the drain).
    drains.push({ processName, url, signalledAtMs, exitedAtMs, respawnedAtMs: performance.now(), sessionsBefore });
  }
  await untilAllOpen(devices, 30_000);
  stopping = true;
  await traffic;

  await run.settle(30_000);
  const report = await run.check(testServices.postgresAdminUrl, test.namespace, ["a", "b"]);
  const summary = drains.map((drain) => {
    const closes = ends.filter((end) => end.url === drain.url && end.atMs >= drain.signalledAtMs && end.atMs <= drain.respawnedAtMs);
    const spreadMs = closes.length === 0 ? 0 : Math.max(...closes.map((end) => end.atMs)) - Math.min(...closes.map((end) => end.atMs));
    return { ...drain, closes, spreadMs };
  });
  process.stdout.write(
    [
      ...summary.map(
        (drain) =>
          `edge drain: ${drain.processName} held ${drain.sessionsBefore} sessions, closed ${drain.closes.length} (codes ${[...new Set(drain.closes.map((end) => end.closeCode))].join(",")}) over ${drain.spreadMs.toFixed(0)} ms, exited ${(drain.exitedAtMs - drain.signalledAtMs).toFixed(0)} ms after SIGTERM`,
      ),
      `edge drain: ${run.record.acks.length} acked of ${run.record.sends.length} sends, ${run.retries} app-level retries; checker: ${report.summary}`,
      "",
    ].join("\n"),
  );

  // The second edge held every device (the first one's moved to it): all eight sessions were closed by
  // its drain, each with going_away, spread over the window rather than at once.
  const [, second] = summary;
  expect(second?.sessionsBefore).toBe(devices.length);
  expect(second?.closes).toHaveLength(devices.length);
  expect(second?.spreadMs).toBeGreaterThanOrEqual(drainMs / 2);
  for (const drain of summary) {
    expect(drain.closes.length).toBe(drain.sessionsBefore);
    for (const end of drain.closes) expect(end.closeCode).toBe(closeCodes.going_away.code);
    // Drained within the window and its grace (plus the process's own stop), not cut short at the deadline.
    expect(drain.exitedAtMs - drain.signalledAtMs).toBeLessThan(drainMs + drainGraceMs + 5000);
  }
  // Every client resumed: open again, holding every acked message of its conversations (settle above).
  expect(report.findings).toEqual([]);
  expect(run.sequenceGaps).toEqual([]);
  expect(run.record.acks).toHaveLength(run.record.sends.length);
  expect(run.retries).toBe(0);
});
