// What verifying a hello's token costs the edge, per signature algorithm a production JWKS may use: the
// edge's own verifier (createTokenVerifier in jwks mode, from a JWKS file) verifies distinct tokens of
// one key, one at a time, and the CPU time per token is printed. Every authenticated connect verifies one,
// and the issuer's choice of algorithm decides much of what a connect costs the edge (docs/performance.md,
// "Where the time goes next", connects). A microbenchmark: it prints figures, asserts none.
//
//   npx tsx cli/src/bench/token-verify.ts [--tokens 2000] [--rounds 3]
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { createTokenVerifier } from "@cellwire/edge";

const { values } = parseArgs({ options: { tokens: { type: "string", default: "2000" }, rounds: { type: "string", default: "3" } } });
const tokenCount = Number(values.tokens);
const rounds = Number(values.rounds);
if (![tokenCount, rounds].every((value) => Number.isSafeInteger(value) && value > 0))
  throw new Error("--tokens and --rounds take positive integers");

const issuer = "token-verify-bench";
const audience = "cellwire";
const algorithms = ["ES256", "RS256", "PS256", "EdDSA"] as const;

const directory = await mkdtemp(join(tmpdir(), "cellwire-token-verify-"));
try {
  for (const alg of algorithms) {
    const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
    const kid = `bench-${alg}`;
    const jwksFile = join(directory, `${alg}.jwks.json`);
    await writeFile(jwksFile, JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), alg, kid }] }));
    const verifier = await createTokenVerifier({ mode: "jwks", jwksUrl: undefined, jwksFile, issuer, audience });
    const tokens = await Promise.all(
      Array.from({ length: tokenCount }, (_, index) =>
        new SignJWT({ device_id: "bench" })
          .setProtectedHeader({ alg, kid })
          .setSubject(`user_${index}`)
          .setIssuer(issuer)
          .setAudience(audience)
          .setIssuedAt()
          .setExpirationTime("1h")
          .sign(privateKey),
      ),
    );
    const perTokenUs: number[] = [];
    for (let round = 0; round < rounds; round++) {
      const startedCpu = process.cpuUsage();
      for (const token of tokens) {
        const outcome = await verifier.verify(token);
        if (!outcome.ok) throw new Error(`${alg}: a token the bench signed was refused: ${outcome.detail}`);
      }
      const used = process.cpuUsage(startedCpu);
      perTokenUs.push(Math.round(((used.user + used.system) / tokenCount) * 10) / 10);
    }
    process.stdout.write(
      `${JSON.stringify({ algorithm: alg, tokens: tokenCount, cpuUsPerToken: perTokenUs, tokenBytes: tokens[0]?.length })}\n`,
    );
  }
} finally {
  await rm(directory, { recursive: true, force: true });
}
