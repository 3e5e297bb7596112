// Dev mode: a local ES256 key pair, created on first use and kept out of git (.cellwire/ is ignored), so
// `npx cellwire token <user>` can sign tokens that a dev edge accepts. Never used with EDGE_AUTH_MODE=jwks.
import { randomUUID } from "node:crypto";
import { link, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { exportJWK, generateKeyPair, importJWK, SignJWT, type JWK } from "jose";

export const devIssuer = "cellwire-dev";
export const devAudience = "cellwire";
const algorithm = "ES256";
const privateKeyFile = "private.jwk.json";

/** <repository>/.cellwire/dev-keys, whatever the working directory. */
export const defaultDevKeyDirectory = fileURLToPath(new URL("../../../.cellwire/dev-keys/", import.meta.url));

export type DevKeyPair = { readonly privateJwk: JWK; readonly publicJwk: JWK };

function isJwk(value: unknown): value is JWK {
  return (
    typeof value === "object" &&
    value !== null &&
    (value as { kty?: unknown }).kty === "EC" &&
    typeof (value as { d?: unknown }).d === "string"
  );
}

async function readKeyPair(path: string): Promise<DevKeyPair> {
  const parsed: unknown = JSON.parse(await readFile(path, "utf8"));
  if (!isJwk(parsed)) throw new Error(`${path} is not an EC private JWK; delete it to make a new dev key pair`);
  const { d: _private, ...publicJwk } = parsed;
  return { privateJwk: parsed, publicJwk };
}

/** Loads the dev key pair from `directory`, creating it if missing. Safe when two processes race. */
export async function ensureDevKeyPair(directory: string): Promise<DevKeyPair> {
  const path = join(directory, privateKeyFile);
  try {
    return await readKeyPair(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
  }
  await mkdir(directory, { recursive: true, mode: 0o700 });
  const { privateKey } = await generateKeyPair(algorithm, { extractable: true });
  const privateJwk = { ...(await exportJWK(privateKey)), alg: algorithm, kid: `dev-${Date.now().toString(36)}` };
  // The key is written whole to a file of this call's own, then published with link(), which is atomic and
  // fails if another caller published first: a racing reader never sees a half-written key file, and every
  // caller ends up with the first published pair.
  const candidatePath = `${path}.${process.pid}.${randomUUID()}.tmp`;
  try {
    await writeFile(candidatePath, JSON.stringify(privateJwk), { flag: "wx", mode: 0o600 });
    await link(candidatePath, path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
  } finally {
    await rm(candidatePath, { force: true });
  }
  return readKeyPair(path);
}

export type DevTokenOptions = { readonly deviceId?: string; readonly expiresInSeconds?: number };

export type DevTokenSigner = (userId: string, options?: DevTokenOptions) => Promise<string>;

/**
 * A signer that holds the dev key, for callers that sign many tokens (a benchmark's load process): the key
 * file is read and imported once instead of once per token.
 */
export async function createDevTokenSigner(directory: string): Promise<DevTokenSigner> {
  const { privateJwk } = await ensureDevKeyPair(directory);
  const key = await importJWK(privateJwk, algorithm);
  const protectedHeader = privateJwk.kid === undefined ? { alg: algorithm } : { alg: algorithm, kid: privateJwk.kid };
  return (userId, options = {}) => {
    const claims = options.deviceId === undefined ? {} : { device_id: options.deviceId };
    return new SignJWT(claims)
      .setProtectedHeader(protectedHeader)
      .setSubject(userId)
      .setIssuer(devIssuer)
      .setAudience(devAudience)
      .setIssuedAt()
      .setExpirationTime(`${options.expiresInSeconds ?? 12 * 3600}s`)
      .sign(key);
  };
}

/** Signs a dev token for `userId` (the JWT sub), optionally naming the device. */
export async function signDevToken(directory: string, userId: string, options: DevTokenOptions = {}): Promise<string> {
  return (await createDevTokenSigner(directory))(userId, options);
}
