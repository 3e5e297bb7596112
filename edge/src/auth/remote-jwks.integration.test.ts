// A remote JWKS served over http on loopback (the one place the config allows plain http), counting its
// requests: a flood of tokens with unknown kids costs at most one fetch per cooldown, and a key added by a
// rotation is picked up once the configured cooldown has passed.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from "jose";
import { createTokenVerifier, type TokenVerifier } from "./token-verifier.ts";

const issuer = "https://issuer.example";
const audience = "cellwire";
const deadlineMs = 10_000;

type JwksServer = { readonly url: string; fetches: number; keys: JWK[]; readonly server: Server };

const servers: Server[] = [];

afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
});

async function jwksServer(keys: JWK[]): Promise<JwksServer> {
  const state: { fetches: number; keys: JWK[] } = { fetches: 0, keys };
  const server = createServer((_request, response) => {
    state.fetches++;
    response.writeHead(200, { "content-type": "application/json" });
    response.end(JSON.stringify({ keys: state.keys }));
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(state, { url: `http://127.0.0.1:${port}/jwks.json`, server });
}

async function keyPair(kid: string): Promise<{ privateKey: CryptoKey; jwk: JWK }> {
  const { privateKey, publicKey } = await generateKeyPair("ES256");
  return { privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg: "ES256", use: "sig" } };
}

function sign(privateKey: CryptoKey, kid: string, subject = "alice"): Promise<string> {
  return new SignJWT({})
    .setProtectedHeader({ alg: "ES256", kid })
    .setSubject(subject)
    .setIssuer(issuer)
    .setAudience(audience)
    .setIssuedAt()
    .setExpirationTime("1h")
    .sign(privateKey);
}

function remoteVerifier(jwksUrl: string, jwksCooldownMs: number): Promise<TokenVerifier> {
  return createTokenVerifier({ mode: "jwks", jwksUrl, jwksFile: undefined, issuer, audience, jwksCooldownMs, jwksCacheMaxAgeMs: 600_000 });
}

describe("a remote JWKS", () => {
  it("turns a flood of unknown kids into at most one fetch per cooldown", async () => {
    const known = await keyPair("k1");
    const jwks = await jwksServer([known.jwk]);
    const verifier = await remoteVerifier(jwks.url, 60_000);
    expect(await verifier.verify(await sign(known.privateKey, "k1"))).toMatchObject({ ok: true, identity: { userId: "alice" } });
    expect(jwks.fetches).toBe(1);
    const stranger = await keyPair("unused");
    const flood = await Promise.all(
      Array.from({ length: 200 }, async (_, index) => verifier.verify(await sign(stranger.privateKey, `unknown-${index}`))),
    );
    for (const outcome of flood) expect(outcome).toMatchObject({ ok: false, reason: "token_invalid" });
    // Within the cooldown after the first fetch: not one more request.
    expect(jwks.fetches).toBe(1);
    expect(await verifier.verify(await sign(known.privateKey, "k1"))).toMatchObject({ ok: true });
    expect(jwks.fetches).toBe(1);
  });

  it("picks up a rotated-in key by kid once the configured cooldown has passed, with one fetch for it", async () => {
    const first = await keyPair("k1");
    const jwks = await jwksServer([first.jwk]);
    const cooldownMs = 300;
    const verifier = await remoteVerifier(jwks.url, cooldownMs);
    expect(await verifier.verify(await sign(first.privateKey, "k1"))).toMatchObject({ ok: true });
    const second = await keyPair("k2");
    jwks.keys = [first.jwk, second.jwk];
    const rotated = await sign(second.privateKey, "k2", "bob");
    const startedAtMs = Date.now();
    let outcome = await verifier.verify(rotated);
    // Waits on the condition (the new key accepted), polling; each failed poll inside the cooldown costs no fetch.
    while (!outcome.ok && Date.now() - startedAtMs < deadlineMs) {
      await new Promise((resolve) => setTimeout(resolve, 25));
      outcome = await verifier.verify(rotated);
    }
    expect(outcome).toMatchObject({ ok: true, identity: { userId: "bob" } });
    expect(jwks.fetches).toBe(2);
    expect(await verifier.verify(await sign(first.privateKey, "k1"))).toMatchObject({ ok: true });
    expect(jwks.fetches).toBe(2);
  });
});
