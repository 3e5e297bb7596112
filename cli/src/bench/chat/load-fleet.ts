// The chat benchmark's load processes (load-process.ts) as a ProcessFleet: the coordinator forks them,
// sends each its commands (load-messages.ts) and waits for the replies.
import { fileURLToPath } from "node:url";
import { LoadProcessError, ProcessFleet, type CommandBody, type ProcessFleetOptions } from "../process-fleet.ts";
import { decodeLoadReply, type LoadCommand, type LoadReply } from "./load-messages.ts";

export { LoadProcessError };

const loadProcessEntry = fileURLToPath(new URL("./load-process.ts", import.meta.url));

export type LoadCommandBody = CommandBody<LoadCommand>;
export type LoadFleet = ProcessFleet<LoadCommand, LoadReply>;
export type LoadFleetOptions = Omit<ProcessFleetOptions<LoadReply>, "entry" | "decodeReply">;

export const LoadFleet = {
  /** Forks every load process and waits until each has loaded; stops them all if one does not. */
  start: (options: LoadFleetOptions): Promise<LoadFleet> =>
    ProcessFleet.start<LoadCommand, LoadReply>({ ...options, entry: loadProcessEntry, decodeReply: decodeLoadReply }),
};
