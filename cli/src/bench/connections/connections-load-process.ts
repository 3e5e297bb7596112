// A load process of the connections benchmark, forked by the coordinator (main.ts through
// process-fleet.ts). It holds its share of the sockets and SDK clients and times what they see. It shares
// the two cores with the edge it measures, so it stays light: tokens are signed before anything is timed,
// a minimal session is a socket of our own lean client (lean-websocket.ts) that sends one hello and reads
// frames only until `synced`, and nothing is kept per frame.
//
// Commands arrive over IPC (connections-messages.ts), one at a time; each reply carries the command's id.
// A failed connect is counted, never fatal. The process exits when the coordinator closes the channel (or
// dies), so it can never outlive a run.
import { WebSocket } from "ws";
import { LeanWebSocket } from "./lean-websocket.ts";
import { issuerTokenSigner, tokenLifetimeS } from "./run-issuer.ts";
import { CellwireClient } from "@cellwire/client";
import { createDevTokenSigner, defaultDevKeyDirectory } from "@cellwire/edge/dev-keys";
import { protocolVersion } from "@cellwire/protocol";
import { describeError } from "../chat/load-messages.ts";
import { createLatencyHistogram, encodeHistogram, recordLatencyUs } from "../chat/latency-histogram.ts";
import { runBounded } from "../run-bounded.ts";
import {
  decodeConnectionsCommand,
  type AwaitResyncCommand,
  type ConnectionsCommand,
  type ConnectionsReply,
  type IssuerKey,
  type OpenClientsCommand,
  type OpenSessionsCommand,
  type OpenSilentCommand,
  type ResyncReport,
} from "./connections-messages.ts";

/** A socket that has not opened (or a session that has not synced) by then counts as failed. */
const connectDeadlineMs = 60_000;
/** Synced events and attempts remembered per SDK client: the kill needs only those after it. */
const clientEventsMax = 64;
const resyncPollIntervalMs = 50;

type TokenSigner = (userId: string, deviceId: string) => Promise<string>;

/** Signs with the run's issuer key (the edges verify it in jwks mode), or with the dev key pair without one. */
async function tokenSignerFor(issuerKey: IssuerKey | undefined): Promise<TokenSigner> {
  if (issuerKey !== undefined) return issuerTokenSigner(issuerKey);
  const signDev = await createDevTokenSigner(defaultDevKeyDirectory);
  return (userId, deviceId) => signDev(userId, { deviceId, expiresInSeconds: tokenLifetimeS });
}

/** Wall-clock microseconds, comparable across the processes of the machine. */
function wallNowUs(): number {
  return (performance.timeOrigin + performance.now()) * 1000;
}

type PreparedUser = {
  readonly userId: string;
  readonly token: string;
  /** The seq of this user's last `synced`, for a returning hello. */ syncedSeq: number | undefined;
};

/** What the edge answered before `synced`, for the failure's reason. */
function frameType(text: string): string | undefined {
  try {
    const frame: unknown = JSON.parse(text);
    if (typeof frame === "object" && frame !== null && "type" in frame && typeof frame.type === "string") return frame.type;
  } catch {
    // Not JSON: reported as such by the caller.
  }
  return undefined;
}

/**
 * Opens a socket and, when `hello` is given, sends it and resolves once `synced` arrives (with its seq),
 * recording the times to welcome and to synced from the socket's request. A socket that closes, errs or
 * answers an error frame first rejects. The socket stays open, and in `sockets`, until it closes.
 */
function openSocket(
  url: string,
  hello: string | undefined,
  onTimes: (welcomeUs: number, syncedUs: number) => void,
  sockets: Set<LeanWebSocket>,
): Promise<number | undefined> {
  return new Promise((resolve, reject) => {
    const startedUs = wallNowUs();
    let welcomeUs = 0;
    let settled = false;
    const settle = (error: Error | undefined, seq?: number): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (error === undefined) resolve(seq);
      else {
        socket.terminate();
        reject(error);
      }
    };
    const onText = (text: string): void => {
      if (settled) return;
      if (welcomeUs === 0) {
        if (frameType(text) !== "welcome") return settle(new Error(`the edge answered ${text.slice(0, 200)} before welcome`));
        welcomeUs = wallNowUs() - startedUs;
        return;
      }
      const type = frameType(text);
      if (type === "synced") {
        const seq: unknown = (JSON.parse(text) as { seq?: unknown }).seq;
        onTimes(welcomeUs, wallNowUs() - startedUs);
        return settle(undefined, typeof seq === "number" ? seq : undefined);
      }
      if (type === "error") settle(new Error(`the edge answered ${text.slice(0, 200)} before synced`));
    };
    const socket: LeanWebSocket = new LeanWebSocket(url, {
      onOpen: () => {
        if (hello === undefined) return settle(undefined);
        socket.send(hello);
      },
      onText,
      onError: (error) => settle(error),
      onClose: (code, reason) => {
        sockets.delete(socket);
        settle(
          new Error(`closed ${code ?? "without a close frame"} ${reason.slice(0, 200)} before ${hello === undefined ? "open" : "synced"}`),
        );
      },
    });
    sockets.add(socket);
    const timer = setTimeout(
      () => settle(new Error(`no ${hello === undefined ? "open" : "synced"} within ${connectDeadlineMs} ms`)),
      connectDeadlineMs,
    );
  });
}

type ClientSlot = {
  readonly client: CellwireClient;
  /** Wall µs and URL of the latest `synced` events, oldest first (at most clientEventsMax). */
  readonly synced: { atUs: number; url: string }[];
  /** Wall µs of the latest connection attempts. */
  readonly attemptsAtUs: number[];
  /** Wall µs and close code (null: none) of the latest losses of an attempt or a session. */
  readonly lossesAtUs: { atUs: number; closeCode: number | null }[];
};

function remember<T>(list: T[], item: T): void {
  list.push(item);
  if (list.length > clientEventsMax) list.shift();
}

class ConnectionsLoadProcess {
  private deviceId = "bench";
  private users: PreparedUser[] = [];
  private readonly sockets = new Set<LeanWebSocket>();
  private clients: ClientSlot[] = [];

  constructor(private readonly reply: (message: ConnectionsReply) => void) {}

  async handle(command: ConnectionsCommand): Promise<void> {
    switch (command.type) {
      case "prepare": {
        const startedMs = performance.now();
        const sign = await tokenSignerFor(command.issuerKey);
        this.deviceId = command.deviceId;
        const tokens = await Promise.all(command.userIds.map((userId) => sign(userId, command.deviceId)));
        this.users = command.userIds.map((userId, index) => ({ userId, token: tokens[index] ?? "", syncedSeq: undefined }));
        return this.reply({ type: "prepared", id: command.id, signMs: performance.now() - startedMs });
      }
      case "openSilent":
        return this.reply({ type: "silentOpened", id: command.id, ...(await this.openSilent(command)) });
      case "openSessions":
        return this.reply({ type: "sessionsOpened", id: command.id, ...(await this.openSessions(command)) });
      case "census":
        return this.reply({ type: "censusTaken", id: command.id, open: this.openSocketCount() });
      case "closeSockets":
        return this.reply({ type: "socketsClosed", id: command.id, stillOpen: await this.closeSockets(command.deadlineMs) });
      case "openClients":
        return this.reply({ type: "clientsOpened", id: command.id, ...(await this.openClients(command)) });
      case "awaitResync":
        return this.reply({ type: "resynced", id: command.id, ...(await this.awaitResync(command)) });
      case "closeClients":
        for (const slot of this.clients) slot.client.close();
        this.clients = [];
        return this.reply({ type: "clientsClosed", id: command.id });
    }
  }

  private openSocketCount(): number {
    let open = 0;
    for (const socket of this.sockets) if (socket.isOpen) open++;
    return open;
  }

  private async openSilent(command: OpenSilentCommand): Promise<{ opened: number; failed: number; firstError: string | null }> {
    const items = Array.from({ length: command.count }, (_, index) => index);
    const outcome = await runBounded(items, command.inFlightMax, async () => {
      await openSocket(command.url, undefined, () => undefined, this.sockets);
    });
    return { opened: command.count - outcome.failed, ...outcome };
  }

  private async openSessions(
    command: OpenSessionsCommand,
  ): Promise<Omit<Extract<ConnectionsReply, { type: "sessionsOpened" }>, "type" | "id">> {
    const welcome = createLatencyHistogram();
    const synced = createLatencyHistogram();
    const startedAtUs = wallNowUs();
    const outcome = await runBounded(this.users, command.inFlightMax, async (user) => {
      const hello = JSON.stringify({
        type: "hello",
        protocolVersion,
        token: user.token,
        deviceId: this.deviceId,
        ...(command.resume && user.syncedSeq !== undefined ? { resumeAfterSeq: user.syncedSeq } : {}),
      });
      const seq = await openSocket(
        command.url,
        hello,
        (welcomeUs, syncedUs) => {
          recordLatencyUs(welcome, welcomeUs);
          recordLatencyUs(synced, syncedUs);
        },
        this.sockets,
      );
      user.syncedSeq = seq;
    });
    const finishedAtUs = wallNowUs();
    return {
      opened: this.users.length - outcome.failed,
      ...outcome,
      startedAtUs: Math.round(startedAtUs),
      finishedAtUs: Math.round(finishedAtUs),
      welcomeHistogram: encodeHistogram(welcome),
      syncedHistogram: encodeHistogram(synced),
    };
  }

  private async closeSockets(deadlineMs: number): Promise<number> {
    const sockets = [...this.sockets];
    await Promise.all(
      sockets.map(async (socket) => {
        if (socket.isClosed) return;
        const timer = setTimeout(() => socket.terminate(), deadlineMs);
        socket.close(1000, "bench done");
        await socket.closed;
        clearTimeout(timer);
      }),
    );
    const stillOpen = this.openSocketCount();
    this.sockets.clear();
    return stillOpen;
  }

  private async openClients(command: OpenClientsCommand): Promise<{ opened: number; failed: number; firstError: string | null }> {
    this.clients = this.users.map((user) => {
      const client = new CellwireClient({
        url: [...command.urls],
        deviceId: this.deviceId,
        WebSocket,
        // Pre-signed: the token a reconnect asks for costs no signature in the middle of the measurement.
        tokenProvider: () => Promise.resolve(user.token),
      });
      const slot: ClientSlot = { client, synced: [], attemptsAtUs: [], lossesAtUs: [] };
      client.on("synced", () => remember(slot.synced, { atUs: wallNowUs(), url: client.url }));
      client.on("state", (change) => {
        if (change.state === "connecting") remember(slot.attemptsAtUs, wallNowUs());
        else if (change.state === "waiting_to_reconnect") remember(slot.lossesAtUs, { atUs: wallNowUs(), closeCode: change.closeCode });
      });
      return slot;
    });
    const deadline = performance.now() + command.deadlineMs;
    const outcome = await runBounded(this.clients, command.inFlightMax, async ({ client }) => {
      // Asked before connecting, so the first session's `synced` cannot slip past.
      const synced = client.whenSynced();
      synced.catch(() => undefined);
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`not synced within the ${command.deadlineMs} ms deadline`)),
          Math.max(0, deadline - performance.now()),
        );
      });
      try {
        await Promise.race([client.connect().then(() => synced), timeout]);
      } finally {
        clearTimeout(timer);
      }
    });
    return { opened: this.clients.length - outcome.failed, ...outcome };
  }

  private async awaitResync(command: AwaitResyncCommand): Promise<ResyncReport> {
    const resyncedAtUs = (slot: ClientSlot): number | undefined =>
      slot.synced.find((event) => event.atUs >= command.sinceUs && event.url !== command.lostUrl)?.atUs;
    const deadline = performance.now() + command.deadlineMs;
    while (performance.now() < deadline && this.clients.some((slot) => resyncedAtUs(slot) === undefined)) {
      await new Promise((resolve) => setTimeout(resolve, resyncPollIntervalMs));
    }
    const delaysMs = new Float64Array(this.clients.length);
    const reconnectDelaysMs = new Float64Array(this.clients.length);
    const attempts = new Uint32Array(this.clients.length);
    const firstFailures = new Uint32Array(this.clients.length);
    this.clients.forEach((slot, index) => {
      const atUs = resyncedAtUs(slot);
      delaysMs[index] = atUs === undefined ? Number.NaN : (atUs - command.sinceUs) / 1000;
      const attemptsAfterUs = slot.attemptsAtUs.filter((attemptAtUs) => attemptAtUs >= command.sinceUs);
      attempts[index] = attemptsAfterUs.length;
      const firstAttemptUs = attemptsAfterUs[0];
      reconnectDelaysMs[index] = firstAttemptUs === undefined ? Number.NaN : (firstAttemptUs - command.sinceUs) / 1000;
      // The first loss after the kill is the kill's own; a second one is the first failed attempt.
      const failure = slot.lossesAtUs.filter((loss) => loss.atUs >= command.sinceUs)[1];
      firstFailures[index] = failure === undefined ? 0 : (failure.closeCode ?? 1);
    });
    return { delaysMs, reconnectDelaysMs, attempts, firstFailures };
  }
}

function send(message: ConnectionsReply): void {
  // A coordinator that is gone can take no reply; the "disconnect" handler below ends this process.
  if (process.connected) process.send?.(message);
}

function main(): void {
  if (process.send === undefined) {
    process.stderr.write(
      "connections-load-process.ts is forked by the connections benchmark (npm run bench:connections); it does not run on its own\n",
    );
    process.exit(2);
  }
  const load = new ConnectionsLoadProcess(send);
  // Commands run one after another, in arrival order, whatever each awaits.
  let queue = Promise.resolve();
  process.on("message", (input: unknown) => {
    const decoded = decodeConnectionsCommand(input);
    if (!decoded.ok) {
      send({ type: "failed", message: `undecodable command: ${decoded.failure.path} ${decoded.failure.reason}` });
      return;
    }
    queue = queue.then(() =>
      load
        .handle(decoded.value)
        .catch((error: unknown) => send({ type: "failed", message: `${decoded.value.type}: ${describeError(error)}` })),
    );
  });
  // The coordinator stops this process by closing the channel (or by dying): exit normally, so that a
  // CPU profile (--cpu-prof) is written.
  process.on("disconnect", () => process.exit(0));
  // Ctrl-C reaches the whole process group: the coordinator, which also got it, decides when to stop us.
  process.on("SIGINT", () => undefined);
  send({ type: "ready" });
}

main();
