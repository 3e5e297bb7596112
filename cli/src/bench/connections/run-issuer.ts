// The token issuer of one connections run with `--tokens <algorithm>`: a key pair of that algorithm made
// for the run, its public half in a JWKS file the edges read in jwks mode (the production path: the key
// picked by kid and alg, the signature and claims checked as for any issuer's token), its private half
// handed to the load processes, which sign the run's tokens with it before anything is timed.
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { exportJWK, exportPKCS8, generateKeyPair, importPKCS8, SignJWT } from "jose";
import type { IssuerAlgorithm, IssuerKey } from "./connections-messages.ts";

export type RunIssuer = {
  readonly issuerKey: IssuerKey;
  /** For every process of the topology: the edges' jwks settings, and the direct-id secret jwks mode asks of edges and workers alike. */
  readonly environment: Readonly<Record<string, string>>;
  /** Removes the JWKS file and its directory. */
  readonly remove: () => Promise<void>;
};

export async function createRunIssuer(algorithm: IssuerAlgorithm, runId: string): Promise<RunIssuer> {
  const { publicKey, privateKey } = await generateKeyPair(algorithm, { extractable: true });
  const kid = `${runId}-${algorithm}`;
  const issuer = `cellwire-bench-${runId}`;
  const audience = "cellwire";
  const directory = await mkdtemp(join(tmpdir(), "cellwire-bench-issuer-"));
  const remove = (): Promise<void> => rm(directory, { recursive: true, force: true });
  try {
    const jwksFile = join(directory, "jwks.json");
    await writeFile(jwksFile, JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), alg: algorithm, kid, use: "sig" }] }));
    return {
      issuerKey: { algorithm, privateKeyPem: await exportPKCS8(privateKey), kid, issuer, audience },
      environment: {
        EDGE_AUTH_MODE: "jwks",
        EDGE_JWKS_FILE: jwksFile,
        EDGE_JWT_ISSUER: issuer,
        EDGE_JWT_AUDIENCE: audience,
        CELLWIRE_DIRECT_CONVERSATION_KEY: randomBytes(32).toString("hex"),
      },
      remove,
    };
  } catch (error) {
    await remove();
    throw error;
  }
}

/** Tokens live long enough for any run (the kill measurement's clients keep theirs). */
export const tokenLifetimeS = 12 * 3600;

/** Signs the run's tokens with its issuer key (in a load process, which gets the key over IPC). */
export async function issuerTokenSigner(issuerKey: IssuerKey): Promise<(userId: string, deviceId: string) => Promise<string>> {
  const { algorithm, kid, issuer, audience } = issuerKey;
  const key = await importPKCS8(issuerKey.privateKeyPem, algorithm);
  return (userId, deviceId) =>
    new SignJWT({ device_id: deviceId })
      .setProtectedHeader({ alg: algorithm, kid })
      .setSubject(userId)
      .setIssuer(issuer)
      .setAudience(audience)
      .setIssuedAt()
      .setExpirationTime(`${tokenLifetimeS}s`)
      .sign(key);
}
