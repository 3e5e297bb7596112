// The coordinator's side of a benchmark's load processes: forks them, sends each its commands and waits
// for the reply with the same id, and stops them all, whatever happened. A process that reports `failed`,
// exits or stays silent past a command's deadline fails every command waiting on it, so the run stops with
// a reason instead of hanging. Each benchmark brings its own entry and its own messages (with a decoder
// for the replies): the chat bench's load-process.ts, the connections bench's connections-load-process.ts.
//
// A load process MUST send `{type: "ready"}` once loaded, `{type: "failed", message}` when it cannot go
// on, and answer each command `{…, id}` with one reply carrying the same id; it exits when the channel
// closes.
import { fork, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { DecodeResult } from "@cellwire/protocol";

const readyDeadlineMs = 30_000;
/** Past this after the channel closed, a load process is sent SIGKILL. */
const stopDeadlineMs = 10_000;

export type FleetCommand = { readonly type: string; readonly id: number };
export type FleetReply =
  { readonly type: "ready" } | { readonly type: "failed"; readonly message: string } | { readonly type: string; readonly id: number };

/** A command as the fleet sends it: the id is the fleet's to give. */
export type CommandBody<Command extends FleetCommand> = Command extends FleetCommand ? Omit<Command, "id"> : never;
export type AnsweringType<Reply extends FleetReply> = Exclude<Reply["type"], "ready" | "failed">;
export type ReplyOf<Reply extends FleetReply, T extends AnsweringType<Reply>> = Extract<Reply, { type: T }>;

export class LoadProcessError extends Error {
  override readonly name = "LoadProcessError";
}

type Waiting<Reply> = {
  readonly expected: string;
  readonly resolve: (reply: Reply) => void;
  readonly reject: (error: Error) => void;
  readonly timer: NodeJS.Timeout;
};

function hasId(reply: FleetReply): reply is { readonly type: string; readonly id: number } {
  return "id" in reply && typeof reply.id === "number";
}

class LoadProcessHandle<Command extends FleetCommand, Reply extends FleetReply> {
  private readonly waiting = new Map<number, Waiting<Reply>>();
  private nextId = 1;
  private failure: LoadProcessError | undefined;
  readonly exited: Promise<void>;
  readonly ready: Promise<void>;

  constructor(
    readonly processName: string,
    private readonly child: ChildProcess,
    decodeReply: (input: unknown) => DecodeResult<Reply>,
  ) {
    let markReady: () => void = () => undefined;
    let failReady: (error: Error) => void = () => undefined;
    this.ready = new Promise<void>((resolve, reject) => {
      markReady = resolve;
      failReady = reject;
    });
    // The rejection is handled by whoever awaits `ready`; this keeps an unawaited one from crashing us.
    this.ready.catch(() => undefined);
    const readyTimer = setTimeout(
      () => failReady(new LoadProcessError(`${processName} was not ready within ${readyDeadlineMs} ms`)),
      readyDeadlineMs,
    );
    this.exited = new Promise<void>((resolve) => {
      child.once("exit", (code, signal) => {
        clearTimeout(readyTimer);
        this.fail(new LoadProcessError(`${processName} exited (${signal ?? `status ${String(code)}`})`));
        failReady(this.failure ?? new LoadProcessError(`${processName} exited`));
        resolve();
      });
      child.on("error", (error) => {
        if (child.pid === undefined) {
          this.fail(new LoadProcessError(`${processName} could not be started: ${error.message}`));
          failReady(this.failure ?? error);
          resolve();
        }
      });
    });
    child.on("message", (input: unknown) => {
      const decoded = decodeReply(input);
      if (!decoded.ok) {
        this.fail(new LoadProcessError(`${processName} sent an undecodable reply: ${decoded.failure.path} ${decoded.failure.reason}`));
        return;
      }
      const reply: FleetReply = decoded.value;
      if (reply.type === "ready") {
        clearTimeout(readyTimer);
        markReady();
        return;
      }
      if (!hasId(reply)) {
        const message = "message" in reply && typeof reply.message === "string" ? reply.message : "no reason given";
        this.fail(new LoadProcessError(`${processName} failed: ${message}`));
        return;
      }
      const waiting = this.waiting.get(reply.id);
      if (waiting === undefined) return;
      this.waiting.delete(reply.id);
      clearTimeout(waiting.timer);
      if (reply.type === waiting.expected) waiting.resolve(decoded.value);
      else waiting.reject(new LoadProcessError(`${processName} answered command ${reply.id} with ${reply.type}, not ${waiting.expected}`));
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  request<T extends AnsweringType<Reply>>(command: CommandBody<Command>, expected: T, deadlineMs: number): Promise<ReplyOf<Reply, T>> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    const id = this.nextId++;
    return new Promise<ReplyOf<Reply, T>>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new LoadProcessError(`${this.processName} did not answer ${command.type} within ${deadlineMs} ms`));
      }, deadlineMs);
      // The reply's type was checked against `expected` on arrival.
      this.waiting.set(id, { expected, resolve: (reply) => resolve(reply as ReplyOf<Reply, T>), reject, timer });
      this.child.send({ ...command, id }, (error) => {
        if (error === null) return;
        const waiting = this.waiting.get(id);
        if (waiting === undefined) return;
        this.waiting.delete(id);
        clearTimeout(timer);
        reject(new LoadProcessError(`${this.processName}: cannot send ${command.type}: ${error.message}`, { cause: error }));
      });
    });
  }

  /** Closes the channel (the process exits on its own), SIGKILL past the deadline. */
  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      if (this.child.connected) this.child.disconnect();
      else this.child.kill("SIGTERM");
      const timer = setTimeout(() => this.child.kill("SIGKILL"), stopDeadlineMs);
      await this.exited;
      clearTimeout(timer);
    }
    this.fail(new LoadProcessError(`${this.processName} was stopped`));
  }

  private fail(error: LoadProcessError): void {
    this.failure ??= error;
    for (const [id, waiting] of this.waiting) {
      this.waiting.delete(id);
      clearTimeout(waiting.timer);
      waiting.reject(error);
    }
  }
}

export type ProcessFleetOptions<Reply extends FleetReply> = {
  /** The load process's module (run with tsx). */
  readonly entry: string;
  readonly decodeReply: (input: unknown) => DecodeResult<Reply>;
  readonly count: number;
  /** CPU profiles go to <directory>/<processName>/ when set. */
  readonly profileDirectory?: string;
  /** Receives each line a load process prints. */
  readonly onOutput: (processName: string, line: string) => void;
};

export class ProcessFleet<Command extends FleetCommand, Reply extends FleetReply> {
  private stopped: Promise<void> | undefined;

  private constructor(private readonly handles: readonly LoadProcessHandle<Command, Reply>[]) {}

  /** Forks every load process and waits until each has loaded; stops them all if one does not. */
  static async start<Command extends FleetCommand, Reply extends FleetReply>(
    options: ProcessFleetOptions<Reply>,
  ): Promise<ProcessFleet<Command, Reply>> {
    const handles = Array.from({ length: options.count }, (_, index) => {
      const processName = `load-${index + 1}`;
      const profile =
        options.profileDirectory === undefined ? [] : ["--cpu-prof", `--cpu-prof-dir=${join(options.profileDirectory, processName)}`];
      const child = fork(options.entry, [], {
        execArgv: ["--import", "tsx", ...profile],
        // Structured clone, so tallies travel as typed arrays.
        serialization: "advanced",
        stdio: ["ignore", "pipe", "pipe", "ipc"],
      });
      for (const stream of [child.stdout, child.stderr]) {
        if (stream !== null) createInterface({ input: stream }).on("line", (line) => options.onOutput(processName, line));
      }
      return new LoadProcessHandle<Command, Reply>(processName, child, options.decodeReply);
    });
    const fleet = new ProcessFleet<Command, Reply>(handles);
    try {
      await Promise.all(handles.map((handle) => handle.ready));
    } catch (error) {
      await fleet.stop();
      throw error;
    }
    return fleet;
  }

  get size(): number {
    return this.handles.length;
  }

  get processes(): { processName: string; pid: number }[] {
    return this.handles.flatMap((handle) => (handle.pid === undefined ? [] : [{ processName: handle.processName, pid: handle.pid }]));
  }

  /** One command per process (`commandOf(processIndex)`), in parallel; resolves with the replies in process order. */
  all<T extends AnsweringType<Reply>>(
    commandOf: (processIndex: number) => CommandBody<Command>,
    expected: T,
    deadlineMs: number,
  ): Promise<ReplyOf<Reply, T>[]> {
    return Promise.all(this.handles.map((handle, index) => handle.request(commandOf(index), expected, deadlineMs)));
  }

  one<T extends AnsweringType<Reply>>(
    processIndex: number,
    command: CommandBody<Command>,
    expected: T,
    deadlineMs: number,
  ): Promise<ReplyOf<Reply, T>> {
    const handle = this.handles[processIndex];
    if (handle === undefined) return Promise.reject(new RangeError(`no load process ${processIndex}`));
    return handle.request(command, expected, deadlineMs);
  }

  /** Stops every process; resolves once all have exited. Safe to call twice. */
  stop(): Promise<void> {
    this.stopped ??= Promise.all(this.handles.map((handle) => handle.stop())).then(() => undefined);
    return this.stopped;
  }
}
