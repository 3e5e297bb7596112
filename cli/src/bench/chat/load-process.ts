// A load process of the chat benchmark, forked by the coordinator (main.ts through load-fleet.ts): it
// holds its share of the users' connections, sends its share of each window's rate, and counts what its
// connections receive. It must stay lean, since it shares the two cores with every server it measures: one
// timer for the send loop (never one per send), typed arrays and numeric keys for the tallies, no
// per-delivery objects kept, and the history recording (Cellwire) appended to a file in chunks.
//
// Constant arrival rate without coordinated omission: send k is intended at a fixed time (workload.ts);
// the loop issues every send whose time has passed, however late, and latency counts from that time.
//
// Commands arrive over IPC (load-messages.ts), one at a time; each reply carries the command's id. A
// failed send or a dropped connection is counted, never fatal. The process exits when the coordinator
// closes the channel (or dies), so it can never outlive a run.
import type { ChatConnection, ChatConnectionFactory } from "./chat-connection.ts";
import type { HistoryRecorder } from "./history-recording.ts";
import { createLatencyHistogram, encodeHistogram, recordLatencyUs, type Histogram } from "./latency-histogram.ts";
import {
  decodeLoadCommand,
  describeError,
  loadLimits,
  type CatchUpCommand,
  type ConnectCommand,
  type CreateCommand,
  type JoinCommand,
  type LoadCommand,
  type LoadReply,
  type SetupCommand,
  type WindowCommand,
} from "./load-messages.ts";
import { runBounded } from "../run-bounded.ts";
import {
  intendedUs,
  isMeasured,
  messageBody,
  messageKey,
  onTimeDeliveryUsMax,
  parseMessageBody,
  senderOrder,
  sendSchedule,
  type SendSchedule,
} from "./workload.ts";

/**
 * Sends awaiting their answer, over all windows. Past it a send is counted as failed without going out:
 * a server that stopped answering must not grow this process until it swaps and skews what it measures.
 */
const inFlightSendsMax = 50_000;
/** Joins and creations in flight at once, like connects (the coordinator says how many of those). */
const setupOperationsInFlightMax = 50;

/** Wall-clock microseconds, comparable across the processes of the machine (see workload.ts). */
function wallNowUs(): number {
  return (performance.timeOrigin + performance.now()) * 1000;
}

/** A typed array that grows by doubling, up to loadLimits.windowKeysMax items. */
class GrowableArray<T extends Float64Array | Uint32Array> {
  private items: T;
  length = 0;

  constructor(private readonly make: (capacity: number) => T) {
    this.items = make(1024);
  }

  push(value: number): void {
    if (this.length === this.items.length) {
      if (this.length >= loadLimits.windowKeysMax) throw new RangeError(`more than ${loadLimits.windowKeysMax} keys in one window`);
      const grown = this.make(Math.min(loadLimits.windowKeysMax, this.items.length * 2));
      grown.set(this.items);
      this.items = grown;
    }
    this.items[this.length++] = value;
  }

  /** A copy of exactly the pushed items. */
  toArray(): T {
    return this.items.slice(0, this.length) as T;
  }
}

type UserSlot = {
  readonly userIndex: number;
  readonly userId: string;
  readonly connection: ChatConnection;
  /** The conversation this user sends to, its index and its member count: set by the join command. */
  conversationId: string | undefined;
  conversationIndex: number;
  members: number;
  /** Keys of this window's messages this connection received: a second arrival is a duplicate. */
  readonly seenKeys: Set<number>;
};

/** Everything counted of one window; replaced at the next window, so late answers land in the old one. */
class WindowCounts {
  nextSend = 0;
  sendingDone = false;
  timer: NodeJS.Timeout | undefined;
  sent = 0;
  acked = 0;
  failed = 0;
  settled = 0;
  firstError: string | null = null;
  expected = 0;
  delivered = 0;
  duplicates = 0;
  connectionsLost = 0;
  readonly ackHistogram: Histogram = createLatencyHistogram();
  readonly deliveryHistogram: Histogram = createLatencyHistogram();
  readonly issueLatenessHistogram: Histogram = createLatencyHistogram();
  readonly sentKeys = new GrowableArray((capacity) => new Float64Array(capacity));
  readonly sentMembers = new GrowableArray((capacity) => new Uint32Array(capacity));
  readonly onTime = new Map<number, number>();
  readonly late = new Map<number, number>();

  constructor(readonly schedule: SendSchedule) {}

  fail(error: unknown): void {
    this.failed++;
    this.settled++;
    this.firstError ??= describeError(error);
  }
}

/** Waiters on conditions that change when sends settle or events arrive; each is woken to look again. */
class Wakeups {
  private readonly waiters = new Set<() => void>();

  notify(): void {
    for (const waiter of this.waiters) waiter();
  }

  /** Resolves true once `condition()` holds, false at the deadline. */
  until(condition: () => boolean, deadlineMs: number): Promise<boolean> {
    if (condition()) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      const finish = (result: boolean): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve(result);
      };
      const check = (): void => {
        if (condition()) finish(true);
      };
      const timer = setTimeout(() => finish(condition()), deadlineMs);
      this.waiters.add(check);
    });
  }
}

class LoadProcess {
  private processIndex = 0;
  private processCount = 1;
  private bodyBytes = 0;
  private slots: UserSlot[] = [];
  private slotByIndex = new Map<number, UserSlot>();
  /** Users with a conversation, in the order they take turns to send (workload.ts senderOrder). */
  private senders: UserSlot[] = [];
  private senderCursor = 0;
  private messageCounter = 0;
  private inFlight = 0;
  private window: WindowCounts | undefined;
  private recorder: HistoryRecorder | undefined;
  private readonly wakeups = new Wakeups();
  private connectionsLost = 0;

  constructor(private readonly reply: (message: LoadReply) => void) {}

  async handle(command: LoadCommand): Promise<void> {
    switch (command.type) {
      case "setup":
        await this.setup(command);
        return this.reply({ type: "setUp", id: command.id });
      case "connect":
        return this.reply({ type: "connected", id: command.id, ...(await this.connect(command)) });
      case "create":
        return this.reply({ type: "created", id: command.id, ...(await this.create(command)) });
      case "join":
        return this.reply({ type: "joined", id: command.id, ...(await this.join(command)) });
      case "window":
        this.startWindow(command);
        return this.reply({ type: "windowStarted", id: command.id });
      case "progress": {
        const window = this.window;
        return this.reply({
          type: "progress",
          id: command.id,
          sendingDone: window?.sendingDone ?? true,
          sent: window?.sent ?? 0,
          settled: window?.settled ?? 0,
          expected: window?.expected ?? 0,
          delivered: window?.delivered ?? 0,
        });
      }
      case "report":
        return this.reply({ id: command.id, ...this.report() });
      case "settle": {
        await this.wakeups.until(() => this.inFlight === 0, command.deadlineMs);
        return this.reply({ type: "settled", id: command.id, pending: this.inFlight });
      }
      case "catchUp":
        return this.reply({ type: "caughtUp", id: command.id, behind: await this.catchUp(command) });
      case "finish":
        await this.finish();
        return this.reply({ type: "finished", id: command.id });
    }
  }

  private async setup(command: SetupCommand): Promise<void> {
    if (this.slots.length > 0) throw new Error("setup came twice");
    this.processIndex = command.processIndex;
    this.processCount = command.processCount;
    this.bodyBytes = command.bodyBytes;
    process.title = `cellwire-bench-load-${command.processIndex + 1}`;
    let factory: ChatConnectionFactory;
    if (command.system === "cellwire") {
      // Imported per system: a load process carries only the client it drives.
      const [{ cellwireConnectionFactory }, { HistoryRecorder }] = await Promise.all([
        import("./cellwire-connection.ts"),
        import("./history-recording.ts"),
      ]);
      const recorder = command.recordingPath === null ? undefined : new HistoryRecorder(command.recordingPath, command.bodyBytes);
      this.recorder = recorder;
      const indexOf = new Map(command.users.map((user) => [user.userId, user.userIndex]));
      factory = cellwireConnectionFactory({
        deviceId: command.deviceId,
        observerOf: (userId) => {
          const userIndex = indexOf.get(userId);
          if (recorder === undefined || userIndex === undefined) return undefined;
          const observer = recorder.observerOf(userIndex);
          return {
            sending: observer.sending,
            acknowledged: observer.acknowledged,
            received: (message) => {
              observer.received(message);
              this.wakeups.notify();
            },
            receivedEvent: (event) => {
              observer.receivedEvent(event);
              this.wakeups.notify();
            },
          };
        },
      });
    } else {
      factory = (await import("./socketio-peer/socketio-connection.ts")).socketIoConnection;
    }
    for (const user of command.users) {
      const slot: UserSlot = {
        userIndex: user.userIndex,
        userId: user.userId,
        connection: factory(user.userId, user.serverUrls),
        conversationId: undefined,
        conversationIndex: -1,
        members: 0,
        seenKeys: new Set(),
      };
      slot.connection.onMessage((_conversationId, body) => this.delivered(slot, body));
      slot.connection.onConnectionLost(() => {
        this.connectionsLost++;
        if (this.window !== undefined) this.window.connectionsLost++;
      });
      this.slots.push(slot);
      this.slotByIndex.set(user.userIndex, slot);
    }
  }

  private async connect(command: ConnectCommand): Promise<{ connected: number; failed: number; firstError: string | null }> {
    const outcome = await runBounded(this.slots, command.connectsInFlightMax, (slot) => slot.connection.connect());
    return { connected: this.slots.length - outcome.failed, ...outcome };
  }

  private async create(
    command: CreateCommand,
  ): Promise<{ conversations: { index: number; conversationId: string }[]; failed: number; firstError: string | null }> {
    const conversations: { index: number; conversationId: string }[] = [];
    const outcome = await runBounded(command.conversations, setupOperationsInFlightMax, async ({ index, memberUserIds }) => {
      const creator = this.slots.find((slot) => slot.userId === memberUserIds[0]);
      if (creator === undefined) throw new Error(`conversation ${index}: its creator ${String(memberUserIds[0])} is not in this process`);
      conversations.push({ index, conversationId: await creator.connection.createConversation(index, memberUserIds) });
    });
    return { conversations, ...outcome };
  }

  private async join(command: JoinCommand): Promise<{ failed: number; firstError: string | null }> {
    const joins: { slot: UserSlot; conversationId: string }[] = [];
    const indexById = new Map<string, number>();
    for (const { index, conversationId, memberUserIndexes } of command.conversations) {
      indexById.set(conversationId, index);
      for (const userIndex of memberUserIndexes) {
        const slot = this.slotByIndex.get(userIndex);
        if (slot === undefined) continue;
        slot.conversationId = conversationId;
        slot.conversationIndex = index;
        slot.members = memberUserIndexes.length;
        joins.push({ slot, conversationId });
      }
    }
    this.recorder?.setConversations(indexById);
    this.senders = senderOrder(this.slots.filter((slot) => slot.conversationId !== undefined));
    return runBounded(joins, setupOperationsInFlightMax, ({ slot, conversationId }) => slot.connection.joinConversation(conversationId));
  }

  private startWindow(command: WindowCommand): void {
    if (this.window !== undefined && !this.window.sendingDone) throw new Error("a window started while the previous one was still sending");
    if (this.senders.length === 0) throw new Error("no user of this process has a conversation to send to");
    for (const slot of this.slots) slot.seenKeys.clear();
    this.window = new WindowCounts(sendSchedule(command, this.processIndex, this.processCount));
    this.tick();
  }

  /** The send loop: issues every send whose intended time has passed, then one timer for the next. */
  private readonly tick = (): void => {
    const window = this.window;
    if (window === undefined || window.sendingDone) return;
    window.timer = undefined;
    const { schedule } = window;
    const now = wallNowUs();
    while (window.nextSend < schedule.sendCount) {
      const intended = intendedUs(schedule, window.nextSend);
      if (intended > now) break;
      window.nextSend++;
      this.issue(window, intended);
    }
    if (window.nextSend >= schedule.sendCount) {
      window.sendingDone = true;
      return;
    }
    const waitMs = (intendedUs(schedule, window.nextSend) - wallNowUs()) / 1000;
    window.timer = setTimeout(this.tick, Math.max(0, waitMs));
  };

  private issue(window: WindowCounts, intended: number): void {
    const slot = this.senders[this.senderCursor++ % this.senders.length];
    if (slot === undefined || slot.conversationId === undefined) return;
    const key = messageKey(this.processIndex, this.messageCounter++);
    const measured = isMeasured(window.schedule, intended);
    if (measured) {
      recordLatencyUs(window.issueLatenessHistogram, wallNowUs() - intended);
      window.sent++;
      window.expected += slot.members;
      window.sentKeys.push(key);
      window.sentMembers.push(slot.members);
    }
    if (this.inFlight >= inFlightSendsMax) {
      if (measured) window.fail(new Error(`not sent: ${inFlightSendsMax} sends already awaiting their answer`));
      return;
    }
    this.inFlight++;
    slot.connection.send(slot.conversationId, messageBody(key, intended, this.bodyBytes)).then(
      () => {
        this.inFlight--;
        if (measured) {
          window.acked++;
          window.settled++;
          recordLatencyUs(window.ackHistogram, wallNowUs() - intended);
        }
        if (this.inFlight === 0) this.wakeups.notify();
      },
      (error: unknown) => {
        this.inFlight--;
        if (measured) window.fail(error);
        if (this.inFlight === 0) this.wakeups.notify();
      },
    );
  }

  private delivered(slot: UserSlot, body: string): void {
    const window = this.window;
    if (window === undefined) return;
    const header = parseMessageBody(body);
    if (header === undefined || !isMeasured(window.schedule, header.intendedUs)) return;
    const { key } = header;
    if (slot.seenKeys.has(key)) {
      window.duplicates++;
      return;
    }
    slot.seenKeys.add(key);
    const latencyUs = wallNowUs() - header.intendedUs;
    recordLatencyUs(window.deliveryHistogram, latencyUs);
    const tally = latencyUs <= onTimeDeliveryUsMax ? window.onTime : window.late;
    tally.set(key, (tally.get(key) ?? 0) + 1);
    window.delivered++;
  }

  private report(): Omit<Extract<LoadReply, { type: "report" }>, "id"> {
    const window = this.window;
    if (window === undefined) throw new Error("report without a window");
    if (window.timer !== undefined) clearTimeout(window.timer);
    window.sendingDone = true;
    // Deliveries that come after the report count for no window.
    this.window = undefined;
    for (const slot of this.slots) slot.seenKeys.clear();
    const keys = new Set([...window.onTime.keys(), ...window.late.keys()]);
    const deliveredKeys = new Float64Array(keys.size);
    const onTime = new Uint32Array(keys.size);
    const late = new Uint32Array(keys.size);
    let position = 0;
    for (const key of keys) {
      deliveredKeys[position] = key;
      onTime[position] = window.onTime.get(key) ?? 0;
      late[position] = window.late.get(key) ?? 0;
      position++;
    }
    return {
      type: "report",
      sent: window.sent,
      acked: window.acked,
      failed: window.failed,
      firstError: window.firstError,
      duplicates: window.duplicates,
      connectionsLost: window.connectionsLost,
      ackHistogram: encodeHistogram(window.ackHistogram),
      deliveryHistogram: encodeHistogram(window.deliveryHistogram),
      issueLatenessHistogram: encodeHistogram(window.issueLatenessHistogram),
      sentKeys: window.sentKeys.toArray(),
      sentMembers: window.sentMembers.toArray(),
      deliveredKeys,
      onTime,
      late,
    };
  }

  private async catchUp(command: CatchUpCommand): Promise<number> {
    const recorder = this.recorder;
    if (recorder === undefined) throw new Error("catchUp needs a history recording");
    const behind = (): number => command.positions.filter(({ userIndex, position }) => recorder.position(userIndex) < position).length;
    await this.wakeups.until(() => behind() === 0, command.deadlineMs);
    return behind();
  }

  private async finish(): Promise<void> {
    if (this.window?.timer !== undefined) clearTimeout(this.window.timer);
    this.window = undefined;
    await Promise.all(this.slots.map((slot) => slot.connection.close()));
    await this.recorder?.close();
  }
}

function send(message: LoadReply): void {
  // A coordinator that is gone can take no reply; the "disconnect" handler below ends this process.
  if (process.connected) process.send?.(message);
}

function main(): void {
  if (process.send === undefined) {
    process.stderr.write("load-process.ts is forked by the chat benchmark (npm run bench:chat); it does not run on its own\n");
    process.exit(2);
  }
  const load = new LoadProcess(send);
  // Commands run one after another, in arrival order, whatever each awaits.
  let queue = Promise.resolve();
  process.on("message", (input: unknown) => {
    const decoded = decodeLoadCommand(input);
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
