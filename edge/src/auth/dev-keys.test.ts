// ensureDevKeyPair when another caller is in the middle of writing the key file: the one moment two
// racing processes can disagree. writeFile is wrapped so a test can hold a write half done.
import { mkdtemp, open, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { ensureDevKeyPair } from "./dev-keys.ts";

vi.mock("node:fs/promises", async (importOriginal) => {
  const actual = await importOriginal<typeof import("node:fs/promises")>();
  return { ...actual, writeFile: vi.fn(actual.writeFile) };
});

let temporaryDirectory: string;

beforeAll(async () => {
  temporaryDirectory = await mkdtemp(join(tmpdir(), "cellwire-dev-keys-"));
});

afterAll(async () => {
  await rm(temporaryDirectory, { recursive: true, force: true });
});

/** A promise with its resolver. */
function signal(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((resolvePromise) => {
    resolve = resolvePromise;
  });
  return { promise, resolve };
}

describe("ensureDevKeyPair", () => {
  it("never shows a half-written key file to a racing caller, and both end with one key pair", async () => {
    const directory = join(temporaryDirectory, "half-written");
    const created = signal();
    const finish = signal();
    // The next write creates its file, then stops before writing the key, as a slow process would.
    vi.mocked(writeFile).mockImplementationOnce(async (file, data, options) => {
      if (typeof file !== "string" || typeof data !== "string") throw new Error("unexpected writeFile call");
      const flag = typeof options === "object" && options !== null && typeof options.flag === "string" ? options.flag : "w";
      const handle = await open(file, flag, 0o600);
      try {
        created.resolve();
        await finish.promise;
        await handle.writeFile(data);
      } finally {
        await handle.close();
      }
    });
    const slow = ensureDevKeyPair(directory);
    await created.promise;
    const fast = await ensureDevKeyPair(directory);
    finish.resolve();
    const slowPair = await slow;
    expect(slowPair.privateJwk).toEqual(fast.privateJwk);
    expect(typeof fast.privateJwk.d).toBe("string");
    // No temporary file is left behind.
    expect(await readdir(directory)).toEqual(["private.jwk.json"]);
  });

  it("refuses a key file that is not an EC private key rather than overwriting it", async () => {
    const directory = join(temporaryDirectory, "corrupt");
    await ensureDevKeyPair(directory);
    await writeFile(join(directory, "private.jwk.json"), JSON.stringify({ kty: "oct", k: "c2VjcmV0" }));
    await expect(ensureDevKeyPair(directory)).rejects.toThrow(/not an EC private JWK/);
  });
});
