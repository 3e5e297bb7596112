// The SDK as it was at a pinned commit, built from git objects, for the protocol evolution test
// (docs/decisions/0010): clients built on an older SDK keep running against newer edges for months, so
// the test runs that SDK, not today's, against today's edge. The client and protocol sources of the commit
// are extracted with `git archive` into a temporary directory and bundled with esbuild (a dependency of
// the repository), with @cellwire/protocol resolved to the commit's own protocol module. Nothing is
// committed as a build artifact, so the pinned SDK cannot drift from what the commit held.
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { build } from "esbuild";

const run = promisify(execFile);

/** The repository this file belongs to (its git objects hold the pinned commit). */
const repositoryRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/**
 * What the protocol evolution test uses of an SDK: the public surface of CellwireClient that every SDK
 * since version 2 of the protocol has. Kept minimal on purpose, so a newer SDK's additions do not matter
 * and the old one's module is checked against it when loaded.
 */
export type PinnedClientOptions = {
  readonly url: string | readonly string[];
  readonly tokenProvider: () => Promise<string>;
  readonly deviceId?: string;
  readonly resumeAfterSeq?: number;
  readonly resumeConversations?: Readonly<Record<string, number>>;
  readonly WebSocket?: unknown;
  readonly requestTimeoutMs?: number;
};
export type PinnedMessage = {
  readonly conversationId: string;
  readonly seq: number;
  readonly messageId: string;
  readonly body: string;
  readonly senderUserId: string;
};
export type PinnedConversation = { readonly conversationId: string; readonly memberUserIds: readonly string[] };
export type PinnedStateChange = {
  readonly state: string;
  readonly previousState: string;
  readonly url: string;
  readonly closeCode: number | null;
};
export type PinnedClientError = Error & { readonly code: string; readonly retryable: boolean };
export interface PinnedClient {
  readonly state: string;
  readonly url: string;
  connect(): Promise<unknown>;
  whenSynced(): Promise<unknown>;
  close(): void;
  send(conversationId: string, body: string, options?: { clientMessageId?: string }): Promise<{ messageId: string; seq: number }>;
  openDirect(peerUserId: string): Promise<PinnedConversation>;
  positions(): { readonly lastSeq: number | undefined; readonly conversations: Readonly<Record<string, number>> };
  on(event: "message", listener: (message: PinnedMessage) => void): () => void;
  on(event: "state", listener: (change: PinnedStateChange) => void): () => void;
  on(event: "error", listener: (error: PinnedClientError) => void): () => void;
}
export type PinnedSdk = {
  readonly commit: string;
  readonly CellwireClient: new (options: PinnedClientOptions) => PinnedClient;
  /** Removes the build directory. */
  dispose(): Promise<void>;
};

/**
 * Builds the SDK of `commit` and loads it. Fails (never skips) when the commit is not in this
 * repository's objects: a shallow clone must fetch it first (`git fetch --unshallow`).
 */
export async function loadPinnedSdk(commit: string): Promise<PinnedSdk> {
  if (!/^[0-9a-f]{40}$/.test(commit)) throw new Error(`pin the SDK to a full commit id, not ${JSON.stringify(commit)}`);
  try {
    await run("git", ["-C", repositoryRoot, "cat-file", "-e", `${commit}^{commit}`]);
  } catch (error) {
    throw new Error(
      `the pinned SDK commit ${commit} is not in ${repositoryRoot}'s git objects (a shallow clone? run git fetch --unshallow)`,
      { cause: error },
    );
  }
  const directory = await mkdtemp(join(tmpdir(), "cellwire-pinned-sdk-"));
  try {
    const archive = join(directory, "source.tar");
    await run("git", ["-C", repositoryRoot, "archive", "--format=tar", `--output=${archive}`, commit, "client/src", "protocol/src"]);
    await run("tar", ["-x", "-f", archive, "-C", directory]);
    const protocolEntry = join(directory, "protocol", "src", "index.ts");
    const bundle = join(directory, `cellwire-client-${commit.slice(0, 12)}.mjs`);
    await build({
      entryPoints: [join(directory, "client", "src", "index.ts")],
      bundle: true,
      format: "esm",
      platform: "node",
      target: "node20",
      outfile: bundle,
      logLevel: "silent",
      plugins: [
        {
          name: "pinned-protocol",
          setup(builder) {
            // The commit's own protocol module, never today's.
            builder.onResolve({ filter: /^@cellwire\/protocol$/ }, () => ({ path: protocolEntry }));
          },
        },
      ],
    });
    const loaded: unknown = await import(pathToFileURL(bundle).href);
    const CellwireClient =
      typeof loaded === "object" && loaded !== null ? (loaded as Record<string, unknown>)["CellwireClient"] : undefined;
    if (typeof CellwireClient !== "function") throw new Error(`the SDK of ${commit} exports no CellwireClient class`);
    return {
      commit,
      // Checked to be a class above; its instances are used only through PinnedClient.
      CellwireClient: CellwireClient as new (options: PinnedClientOptions) => PinnedClient,
      dispose: () => rm(directory, { recursive: true, force: true }),
    };
  } catch (error) {
    await rm(directory, { recursive: true, force: true });
    throw error;
  }
}
