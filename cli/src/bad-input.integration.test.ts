// The bad-input suite (issue 10): a real topology (directory, a worker, an edge in jwks mode; real Redis,
// NATS and Postgres) receives what no well-behaved client sends: forged and malformed tokens, broken
// handshakes, malformed frames, requests for other users' data, ids with NATS, Redis and SQL
// metacharacters, numbers out of range and floods. Each case asserts the documented error or close code
// (docs/protocol.md); after each case every process is still running, nothing reached another user, and
// a normal user still chats (afterEach).
import { createHmac, generateKeyPairSync, randomBytes, sign, type KeyObject } from "node:crypto";
import { createServer, type Server } from "node:http";
import { connect as connectTcp, type Socket } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import { closeCodes, decodeServerFrame, frameBytesMax, protocolVersion, standardCloseCodes, upgradeRefusals } from "@cellwire/protocol";
import { Waiters } from "@cellwire/testkit";
import { placeUsers, startTestTopology, type TestTopology } from "./test-topology.ts";

const issuer = "https://issuer.bad-input.test";
const audience = "cellwire-bad-input";
const keyId = "k1";
const deadlineMs = 10_000;

let test: TestTopology;
let jwksServer: Server;
/** GET requests the edge made for the JWKS: an unknown kid must not make it fetch the keys each time. */
let jwksRequests = 0;
const signingKeys = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
/** A key the edge does not know, under the edge's kid: a forged token. */
const strangerKeys = generateKeyPairSync("ec", { namedCurve: "prime256v1" });

// ---------------------------------------------------------------------------------------------------
// Tokens, signed here: the edge trusts the JWKS this test serves.

type Claims = Record<string, unknown>;
type Header = Record<string, unknown>;

function segment(value: unknown): string {
  return Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");
}

function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

function claimsFor(userId: string, overrides: Claims = {}): Claims {
  return { sub: userId, iss: issuer, aud: audience, iat: nowSeconds(), exp: nowSeconds() + 600, ...overrides };
}

function es256(claims: Claims, header: Header = {}, key: KeyObject = signingKeys.privateKey): string {
  const input = `${segment({ alg: "ES256", typ: "JWT", kid: keyId, ...header })}.${segment(claims)}`;
  return `${input}.${sign("sha256", Buffer.from(input), { key, dsaEncoding: "ieee-p1363" }).toString("base64url")}`;
}

function tokenFor(userId: string): string {
  return es256(claimsFor(userId));
}

// ---------------------------------------------------------------------------------------------------
// A WebSocket that sends anything (text that is not UTF-8, binary, huge frames) and records what comes back.

type Frame = Record<string, unknown>;

class Probe {
  static readonly opened: Probe[] = [];
  readonly texts: string[] = [];
  closeCode: number | undefined;
  private checkedCount = 0;
  private readonly waiters = new Waiters(deadlineMs);

  private constructor(private readonly socket: WebSocket) {
    socket.on("message", (data: Buffer, isBinary) => {
      this.texts.push(isBinary ? `<binary ${data.length}>` : data.toString("utf8"));
      this.notify();
    });
    socket.on("close", (code) => {
      this.closeCode = code;
      this.notify();
    });
    // An edge that cuts the socket makes `ws` emit an error before the close; the close is what is asserted.
    socket.on("error", () => undefined);
  }

  static open(url = edgeUrl()): Promise<Probe> {
    const socket = new WebSocket(url);
    const probe = new Probe(socket);
    Probe.opened.push(probe);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`could not open ${url} within ${deadlineMs} ms`)), deadlineMs);
      socket.once("open", () => {
        clearTimeout(timer);
        resolve(probe);
      });
      socket.once("close", (code) => {
        clearTimeout(timer);
        reject(new Error(`closed with ${code} before it opened`));
      });
    });
  }

  get frames(): Frame[] {
    return this.texts.flatMap((text) => {
      try {
        const value: unknown = JSON.parse(text);
        return typeof value === "object" && value !== null && !Array.isArray(value) ? [value as Frame] : [];
      } catch {
        return [];
      }
    });
  }

  /** Texts not handed out by an earlier call (each frame is checked once). */
  uncheckedTexts(): string[] {
    const texts = this.texts.slice(this.checkedCount);
    this.checkedCount = this.texts.length;
    return texts;
  }

  get isOpen(): boolean {
    return this.closeCode === undefined && this.socket.readyState === WebSocket.OPEN;
  }

  sendText(text: string | Buffer): void {
    this.socket.send(text, { binary: false });
  }

  sendBinary(data: Buffer): void {
    this.socket.send(data, { binary: true });
  }

  sendJson(frame: Frame): void {
    this.sendText(JSON.stringify(frame));
  }

  /** The first frame from index `from` on that matches. */
  async frame(matches: (frame: Frame) => boolean, from = 0): Promise<Frame> {
    const found = (): Frame | undefined => this.frames.slice(from).find(matches);
    await this.until(() => found() !== undefined || this.closeCode !== undefined, "a matching frame");
    const frame = found();
    if (frame === undefined)
      throw new Error(`closed with ${String(this.closeCode)} before a matching frame; got ${this.texts.slice(-5).join(" | ")}`);
    return frame;
  }

  async closed(waitMs = deadlineMs): Promise<number> {
    await this.until(() => this.closeCode !== undefined, "the close", waitMs);
    return this.closeCode ?? 0;
  }

  /** Answers a ping: the socket is open and served. */
  async stillServed(): Promise<void> {
    const requestId = `alive-${randomBytes(4).toString("hex")}`;
    const from = this.frames.length;
    this.sendJson({ type: "ping", requestId });
    expect(await this.frame((frame) => frame["requestId"] === requestId, from)).toEqual({ type: "pong", requestId });
  }

  close(): void {
    if (this.socket.readyState === WebSocket.OPEN || this.socket.readyState === WebSocket.CONNECTING) this.socket.terminate();
  }

  until(condition: () => boolean, what: string, waitMs = deadlineMs): Promise<void> {
    return this.waiters.until(condition, what, waitMs, () => `last frames: ${this.texts.slice(-3).join(" | ")}`);
  }

  private notify(): void {
    this.waiters.notify();
  }
}

function edgeUrl(): string {
  const edge = test.topology.edges[0];
  if (edge === undefined) throw new Error("the topology has no edge");
  return edge.webSocketUrl;
}

function edgePort(): number {
  return test.topology.edges[0]?.port ?? 0;
}

/** A welcomed session of `userId` whose initial sync is done. */
async function session(userId: string, hello: Frame = {}): Promise<Probe> {
  const probe = await Probe.open();
  probe.sendJson({ type: "hello", protocolVersion, token: tokenFor(userId), ...hello });
  await probe.frame((frame) => frame["type"] === "synced");
  return probe;
}

/** Opens a socket, sends `frames` as they are, and returns the close code. */
async function closeCodeFor(...frames: (string | Buffer)[]): Promise<number> {
  const probe = await Probe.open();
  for (const frame of frames) probe.sendText(frame);
  return probe.closed();
}

function helloWith(token: string, fields: Frame = {}): string {
  return JSON.stringify({ type: "hello", protocolVersion, token, ...fields });
}

let requestCounter = 0;
function nextRequestId(): string {
  return `bad-${++requestCounter}`;
}

/**
 * Sends `text` on mallory's session and returns the error it is answered with: the one carrying
 * `requestId`, or (for a frame without a usable one) the next error without any. The socket must stay
 * open and keep serving.
 */
async function errorFor(text: string, requestId?: string): Promise<Frame> {
  const from = mallory.frames.length;
  mallory.sendText(text);
  const error = await mallory.frame((frame) => frame["type"] === "error" && frame["requestId"] === requestId, from);
  await mallory.stillServed();
  return error;
}

/** A frame as JSON text with `raw` spliced in verbatim for field `name` (NaN, 1e309, keys JSON.stringify would not write). */
function withRawField(frame: Frame, name: string, raw: string): string {
  const text = JSON.stringify(frame);
  return `${text.slice(0, -1)},${JSON.stringify(name)}:${raw}}`;
}

// ---------------------------------------------------------------------------------------------------
// The cast: alice and bob chat after every case (the canary); carol and dave hold a conversation nobody
// else may see; mallory attacks.

let alice: Probe;
let bob: Probe;
let carol: Probe;
let dave: Probe;
let mallory: Probe;
let canaryConversationId: string;
let secretConversationId: string;
let secretGroupId: string;
let malloryConversationId: string;
const secretBody = `secret-${randomBytes(6).toString("hex")}`;
let canaryCount = 0;
/** Frames carol and dave hold after the setup: any later one came from a case. */
let victimFrameCounts: { carol: number; dave: number };

async function request(probe: Probe, frame: Frame): Promise<Frame> {
  const requestId = nextRequestId();
  const from = probe.frames.length;
  probe.sendJson({ ...frame, requestId });
  return probe.frame((reply) => reply["requestId"] === requestId, from);
}

/**
 * A send as the SDK makes it: refused rate_limited (the cases send a lot as alice), it waits retryAfterMs
 * and sends the same clientMessageId again, a bounded number of times.
 */
async function sendLikeTheSdk(probe: Probe, frame: Frame): Promise<Frame> {
  for (let attempt = 1; ; attempt++) {
    const reply = await request(probe, frame);
    const retryAfterMs = reply["retryAfterMs"];
    if (reply["type"] !== "error" || reply["code"] !== "rate_limited" || typeof retryAfterMs !== "number" || attempt === 10) return reply;
    await new Promise((resolve) => setTimeout(resolve, retryAfterMs));
  }
}

function conversationIdOf(reply: Frame): string {
  const conversation = reply["conversation"] as { conversationId?: unknown } | undefined;
  if (typeof conversation?.conversationId !== "string") throw new Error(`not a conversation reply: ${JSON.stringify(reply)}`);
  return conversation.conversationId;
}

beforeAll(async () => {
  jwksServer = createServer((incoming, response) => {
    jwksRequests++;
    const jwk = { ...signingKeys.publicKey.export({ format: "jwk" }), kid: keyId, alg: "ES256", use: "sig" };
    response.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ keys: [jwk] }));
    incoming.resume();
  });
  await new Promise<void>((resolve) => jwksServer.listen(0, "127.0.0.1", resolve));
  const address = jwksServer.address();
  if (address === null || typeof address === "string") throw new Error("the JWKS server has no port");
  test = await startTestTopology({
    label: "badin",
    cells: [{ cellId: "a", workerCount: 1 }],
    edgeCount: 1,
    extraEnvironment: {
      EDGE_AUTH_MODE: "jwks",
      EDGE_JWKS_URL: `http://127.0.0.1:${address.port}/jwks.json`,
      EDGE_JWT_ISSUER: issuer,
      EDGE_JWT_AUDIENCE: audience,
      EDGE_AUTH_TIMEOUT_MS: "1000",
      // jwks mode refuses the public dev key: a secret of this run's own, for the edge and the worker alike.
      CELLWIRE_DIRECT_CONVERSATION_KEY: randomBytes(36).toString("base64url"),
    },
  });
  await placeUsers(
    test,
    ["alice", "bob", "carol", "dave", "mallory", "trent"].map((userId) => [userId, "a"] as const),
  );
  [alice, bob, carol, dave, mallory] = await Promise.all([
    session("alice"),
    session("bob"),
    session("carol"),
    session("dave"),
    session("mallory"),
  ]);
  canaryConversationId = conversationIdOf(await request(alice, { type: "openDirect", peerUserId: "bob" }));
  secretConversationId = conversationIdOf(await request(carol, { type: "openDirect", peerUserId: "dave" }));
  secretGroupId = conversationIdOf(await request(carol, { type: "createGroup", title: "secret plans", memberUserIds: ["dave"] }));
  malloryConversationId = conversationIdOf(await request(mallory, { type: "openDirect", peerUserId: "trent" }));
  expect(
    await request(carol, { type: "send", conversationId: secretConversationId, clientMessageId: "secret-1", body: secretBody }),
  ).toMatchObject({ type: "ack" });
  expect(
    await request(carol, { type: "send", conversationId: secretGroupId, clientMessageId: "secret-2", body: secretBody }),
  ).toMatchObject({ type: "ack" });
  // Both victims hold both messages of each of their conversations before the cases start.
  for (const victim of [carol, dave]) {
    for (const conversationId of [secretConversationId, secretGroupId]) {
      await victim.frame(
        (frame) => frame["type"] === "message" && (frame["message"] as { conversationId?: unknown }).conversationId === conversationId,
      );
    }
  }
  await bob.frame((frame) => frame["type"] === "event");
  victimFrameCounts = { carol: carol.texts.length, dave: dave.texts.length };
});

afterAll(async () => {
  for (const probe of Probe.opened) probe.close();
  await test?.destroy();
  await new Promise((resolve) => jwksServer?.close(resolve));
});

afterEach(async () => {
  // Every process is still running and the edge answers HTTP.
  expect(
    test.topology
      .processes()
      .map((process) => process.processName)
      .sort(),
  ).toEqual([...test.topology.processNames].sort());
  expect((await fetch(`http://127.0.0.1:${edgePort()}/healthz`)).status).toBe(200);
  // A normal user still chats: alice sends, bob receives it live.
  const body = `canary-${++canaryCount}`;
  const from = bob.frames.length;
  expect(
    await sendLikeTheSdk(alice, { type: "send", conversationId: canaryConversationId, clientMessageId: `canary-${canaryCount}`, body }),
  ).toMatchObject({ type: "ack" });
  await bob.frame((frame) => frame["type"] === "message" && (frame["message"] as { body?: unknown }).body === body, from);
  // Nothing reached another user: carol and dave received nothing since the setup, and no socket of the
  // suite but theirs ever carried their messages.
  // A `synced` names only the victim's own cursor: a catch-up after the topology's rings formed ends with
  // one, up to EDGE_CATCH_UP_SPREAD_MS after the setup (docs/decisions/0024), and carries nobody's data.
  const carried = (texts: readonly string[]): string[] => texts.filter((text) => !text.startsWith('{"type":"synced",'));
  expect(carried(carol.texts.slice(victimFrameCounts.carol))).toEqual([]);
  expect(carried(dave.texts.slice(victimFrameCounts.dave))).toEqual([]);
  for (const probe of Probe.opened) {
    if (probe === carol || probe === dave) continue;
    expect(
      probe.texts.filter((text) => text.includes(secretBody) || text.includes(secretConversationId) || text.includes(secretGroupId)),
    ).toEqual([]);
  }
  expect(
    bob.frames.filter(
      (frame) => frame["type"] === "message" && (frame["message"] as { conversationId?: unknown }).conversationId !== canaryConversationId,
    ),
  ).toEqual([]);
  // No undocumented answer: every frame the edge wrote to any socket is one the SDK's decoder accepts.
  for (const probe of Probe.opened) {
    for (const text of probe.uncheckedTexts()) {
      const decoded = decodeServerFrame(text);
      expect(decoded.ok && decoded.value !== null, `an SDK cannot read ${text.slice(0, 300)}`).toBe(true);
    }
  }
});

// ---------------------------------------------------------------------------------------------------

describe("JWT: the hello is closed with the documented code", () => {
  const pem = signingKeys.publicKey.export({ format: "pem", type: "spki" });
  const hs256 = (secret: string | Buffer): string => {
    const input = `${segment({ alg: "HS256", typ: "JWT", kid: keyId })}.${segment(claimsFor("mallory"))}`;
    return `${input}.${createHmac("sha256", secret).update(input).digest("base64url")}`;
  };
  const withoutExp = claimsFor("mallory");
  delete withoutExp["exp"];
  const withoutSub = claimsFor("mallory");
  delete withoutSub["sub"];

  const cases: readonly (readonly [name: string, token: () => string, code: number])[] = [
    [
      "alg none, no signature → 4100",
      () => `${segment({ alg: "none", typ: "JWT" })}.${segment(claimsFor("mallory"))}.`,
      closeCodes.token_invalid.code,
    ],
    [
      "alg none with a garbage signature → 4100",
      () => `${segment({ alg: "none" })}.${segment(claimsFor("mallory"))}.AAAA`,
      closeCodes.token_invalid.code,
    ],
    ["HS256 signed with the edge's public key (PEM) → 4100", () => hs256(pem), closeCodes.token_invalid.code],
    [
      "HS256 signed with the edge's public JWK → 4100",
      () => hs256(JSON.stringify(signingKeys.publicKey.export({ format: "jwk" }))),
      closeCodes.token_invalid.code,
    ],
    [
      "ES256 signed with a stranger's key under the edge's kid → 4100",
      () => es256(claimsFor("mallory"), {}, strangerKeys.privateKey),
      closeCodes.token_invalid.code,
    ],
    [
      "a valid token of alice with mallory's sub swapped into the payload → 4100",
      () => {
        const [header, , signature] = tokenFor("alice").split(".");
        return `${header}.${segment(claimsFor("mallory"))}.${signature}`;
      },
      closeCodes.token_invalid.code,
    ],
    ["no exp → 4100", () => es256(withoutExp), closeCodes.token_invalid.code],
    ["no sub → 4100", () => es256(withoutSub), closeCodes.token_invalid.code],
    ["wrong aud → 4100", () => es256(claimsFor("mallory", { aud: "another-service" })), closeCodes.token_invalid.code],
    ["wrong iss → 4100", () => es256(claimsFor("mallory", { iss: "https://evil.test" })), closeCodes.token_invalid.code],
    ["exp as a string → 4100", () => es256(claimsFor("mallory", { exp: String(nowSeconds() + 600) })), closeCodes.token_invalid.code],
    ["expired (exp an hour ago) → 4101", () => es256(claimsFor("mallory", { exp: nowSeconds() - 3600 })), closeCodes.token_expired.code],
    ["nbf an hour ahead → 4100", () => es256(claimsFor("mallory", { nbf: nowSeconds() + 3600 })), closeCodes.token_invalid.code],
    ["unknown kid → 4100", () => es256(claimsFor("mallory"), { kid: "no-such-key" }), closeCodes.token_invalid.code],
    ["crit header → 4100", () => es256(claimsFor("mallory"), { crit: ["exp"] }), closeCodes.token_invalid.code],
    ["two segments only → 4100", () => tokenFor("mallory").split(".").slice(0, 2).join("."), closeCodes.token_invalid.code],
    ["not base64url → 4100", () => "a*b.c*d.e*f", closeCodes.token_invalid.code],
    ["header that is not JSON → 4100", () => `${segment("not json")}.${segment(claimsFor("mallory"))}.AAAA`, closeCodes.token_invalid.code],
    ["sub with * → 4100", () => es256(claimsFor("mallory*")), closeCodes.token_invalid.code],
    ["sub with > → 4100", () => es256(claimsFor("carol.>")), closeCodes.token_invalid.code],
    ["sub > alone → 4100", () => es256(claimsFor(">")), closeCodes.token_invalid.code],
    ["sub with dots → 4100", () => es256(claimsFor("carol.dave")), closeCodes.token_invalid.code],
    ["sub with a space → 4100", () => es256(claimsFor("carol dave")), closeCodes.token_invalid.code],
    ["sub in unicode (carоl with a Cyrillic o) → 4100", () => es256(claimsFor("car\u043el")), closeCodes.token_invalid.code],
    ["sub with a newline → 4100", () => es256(claimsFor("carol\nINFO fake log line")), closeCodes.token_invalid.code],
    ["sub empty → 4100", () => es256(claimsFor("")), closeCodes.token_invalid.code],
    ["sub of 65 characters → 4100", () => es256(claimsFor("m".repeat(65))), closeCodes.token_invalid.code],
    ["sub a number → 4100", () => es256(claimsFor("mallory", { sub: 42 })), closeCodes.token_invalid.code],
    ["device_id claim with a dot → 4100", () => es256(claimsFor("mallory", { device_id: "phone.>" })), closeCodes.token_invalid.code],
    [
      "oversize token (8,193 characters) → 4200, an invalid hello",
      () => es256(claimsFor("mallory", { pad: "x".repeat(9000) })),
      closeCodes.protocol_violation.code,
    ],
  ];

  it.each(cases)("%s", async (_name, token, code) => {
    expect(await closeCodeFor(helloWith(token()))).toBe(code);
  });

  it("a valid token with an unknown claim and a device_id is welcomed (the control case)", async () => {
    const probe = await Probe.open();
    probe.sendText(helloWith(es256(claimsFor("mallory", { device_id: "tablet", extra: { nested: true } }))));
    expect(await probe.frame((frame) => frame["type"] === "welcome")).toMatchObject({ userId: "mallory", deviceId: "tablet" });
    probe.close();
  });

  it("a flood of 200 hellos with random unknown kids → each 4100, and at most one fetch of the JWKS", async () => {
    const before = jwksRequests;
    const probes = await Promise.all(Array.from({ length: 200 }, () => Probe.open()));
    for (const probe of probes) probe.sendText(helloWith(es256(claimsFor("mallory"), { kid: randomBytes(8).toString("hex") })));
    const codes = await Promise.all(probes.map((probe) => probe.closed()));
    expect(new Set(codes)).toEqual(new Set([closeCodes.token_invalid.code]));
    // jose refetches a JWKS for an unknown kid at most once per cooldown (30 s): the flood cannot turn
    // the edge into an amplifier against the identity provider.
    expect(jwksRequests - before).toBeLessThanOrEqual(1);
  });
});

describe("handshake", () => {
  it("no hello after the upgrade → 4102 at EDGE_AUTH_TIMEOUT_MS", async () => {
    const probe = await Probe.open();
    expect(await probe.closed()).toBe(closeCodes.authentication_timeout.code);
  });

  it("first frame not a hello (a ping) → 4200", async () => {
    expect(await closeCodeFor(JSON.stringify({ type: "ping", requestId: "early" }))).toBe(closeCodes.protocol_violation.code);
  });

  it("a second frame before welcome (in the hello's TCP segment) → 4200", async () => {
    // One write, so the edge reads both frames in one turn: sent apart, the ping may arrive after welcome.
    const wire = await RawWire.open();
    wire.write(
      maskedFrame(textOpcode, helloWith(tokenFor("mallory"))),
      maskedFrame(textOpcode, JSON.stringify({ type: "ping", requestId: "eager" })),
    );
    expect(await wire.closed()).toBe(closeCodes.protocol_violation.code);
  });

  it("hello of protocol version 1 → 4201", async () => {
    expect(await closeCodeFor(JSON.stringify({ type: "hello", protocolVersion: 1, token: tokenFor("mallory") }))).toBe(
      closeCodes.unsupported_protocol_version.code,
    );
  });

  it('hello with protocolVersion "2" as a string → 4200', async () => {
    expect(await closeCodeFor(JSON.stringify({ type: "hello", protocolVersion: "2", token: tokenFor("mallory") }))).toBe(
      closeCodes.protocol_violation.code,
    );
  });

  it("hello with an unknown field → 4200", async () => {
    expect(await closeCodeFor(helloWith(tokenFor("mallory"), { userId: "carol" }))).toBe(closeCodes.protocol_violation.code);
  });

  it("slow or incomplete upgrades (a header dripped a byte every 500 ms; 50 headers) → never upgraded, both cut within 20 s, others served meanwhile", async () => {
    const loris = connectTcp(edgePort(), "127.0.0.1");
    const crowded = connectTcp(edgePort(), "127.0.0.1");
    const answers = new Map<Socket, string>([
      [loris, ""],
      [crowded, ""],
    ]);
    const ended = new Set<Socket>();
    for (const socket of [loris, crowded]) {
      socket.on("data", (data) => answers.set(socket, `${answers.get(socket) ?? ""}${data.toString("latin1")}`));
      socket.on("error", () => undefined);
      socket.on("close", () => ended.add(socket));
      await new Promise((resolve) => socket.once("connect", resolve));
    }
    const upgrade =
      "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    loris.write(upgrade);
    crowded.write(`${upgrade}${Array.from({ length: 50 }, (_, index) => `X-H${index}: v\r\n`).join("")}\r\n`);
    const drip = setInterval(() => {
      if (!ended.has(loris)) loris.write("X");
    }, 500);
    try {
      const other = await session("trent");
      await other.stillServed();
      other.close();
      await waitFor(async () => ended.size === 2, "the edge to cut both connections", 20_000);
    } finally {
      clearInterval(drip);
      loris.destroy();
      crowded.destroy();
    }
    expect([answers.get(loris), answers.get(crowded)]).toEqual(["", ""]);
  }, 40_000);

  it("1 MiB of headers → cut without an answer (uWebSockets.js caps a request's headers)", async () => {
    expect(
      await rawHttp(
        `GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Big: ${"a".repeat(1024 * 1024)}\r\n\r\n`,
      ),
    ).toBe("");
  });

  it("2,000 headers → cut without an answer", async () => {
    const headers = Array.from({ length: 2000 }, (_, index) => `X-H${index}: v\r\n`).join("");
    expect(
      await rawHttp(
        `GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n${headers}\r\n`,
      ),
    ).toBe("");
  });

  // uWebSockets.js 20.30 parses a request that arrives in one read whatever its size (up to its 512 KiB
  // read buffer), but buffers one that arrives in pieces in a fallback of 4 KiB and cuts it past that. Which
  // of the two a large header meets depends on how the kernel hands the bytes over: a 64 KiB header written
  // at once was upgraded in most runs and cut under load. So the suite sends headers in pieces, the way a
  // real network delivers them, where the 4 KiB cap is what decides.
  it("a 3 KiB header arriving in pieces (under the 4 KiB cap) → upgraded, then 4102 for want of a hello like any socket", async () => {
    const wire = await RawWire.open(`X-Big: ${"a".repeat(3 * 1024)}\r\n`, { pieceBytes: 256, intervalMs: 20 });
    expect(await wire.closed()).toBe(closeCodes.authentication_timeout.code);
  });

  it("an 8 KiB header arriving in pieces (over the 4 KiB cap) → cut without an answer", async () => {
    // 16 pieces over 1.5 s: the edge reads the request before it is whole unless it stalls that long.
    const request = `${upgradeHead()}X-Big: ${"a".repeat(8 * 1024)}\r\n\r\n`;
    expect(await rawHttp(request, { pieceBytes: Math.ceil(request.length / 16), intervalMs: 100 })).toBe("");
  });

  it("connection churn: 300 sockets opened and cut at once, mid-hello or after → the session count returns to where it was", async () => {
    const sessionsBefore = await edgeSessionCount();
    const churn = await Promise.all(
      Array.from({ length: 300 }, async (_, index) => {
        const probe = await Probe.open();
        if (index % 3 === 1) probe.sendText(helloWith(tokenFor("trent")).slice(0, 50));
        if (index % 3 === 2) probe.sendText(helloWith(tokenFor("trent")));
        probe.close();
      }),
    );
    expect(churn).toHaveLength(300);
    await waitFor(async () => (await edgeSessionCount()) === sessionsBefore, "the edge to forget the churned sessions");
  });
});

/** How a request is written: all at once, or in pieces of `pieceBytes` every `intervalMs`. */
interface Pieces {
  readonly pieceBytes: number;
  readonly intervalMs: number;
}

function upgradeHead(): string {
  return (
    "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" +
    `Sec-WebSocket-Key: ${randomBytes(16).toString("base64")}\r\n`
  );
}

/** Writes `text` in pieces; the writes stop once the socket is closed. */
function writeInPieces(socket: Socket, text: string, pieces: Pieces | undefined): void {
  if (pieces === undefined) {
    socket.write(text);
    return;
  }
  let offset = 0;
  const next = (): void => {
    if (socket.destroyed || offset >= text.length) return;
    socket.write(text.slice(offset, offset + pieces.pieceBytes));
    offset += pieces.pieceBytes;
    setTimeout(next, pieces.intervalMs);
  };
  next();
}

async function rawHttp(text: string, pieces?: Pieces): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket: Socket = connectTcp(edgePort(), "127.0.0.1");
    let answer = "";
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer within ${deadlineMs} ms; got ${answer.slice(0, 200)}`));
    }, deadlineMs);
    socket.on("data", (data) => {
      answer += data.toString("latin1");
    });
    socket.on("error", () => undefined);
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(answer);
    });
    writeInPieces(socket, text, pieces);
  });
}

async function edgeSessionCount(): Promise<number> {
  const body = (await (await fetch(`http://127.0.0.1:${edgePort()}/healthz`)).json()) as { sessions?: unknown };
  if (typeof body.sessions !== "number") throw new Error(`healthz said ${JSON.stringify(body)}`);
  return body.sessions;
}

async function waitFor(condition: () => Promise<boolean>, what: string, waitMs = deadlineMs): Promise<void> {
  const deadline = Date.now() + waitMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`waited ${waitMs} ms for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

// ---------------------------------------------------------------------------------------------------
// A WebSocket written by hand over TCP: several frames in one segment, text that is not UTF-8.

const textOpcode = 0x1;
const binaryOpcode = 0x2;

function maskedFrame(opcode: number, payload: string | Buffer): Buffer {
  const data = typeof payload === "string" ? Buffer.from(payload, "utf8") : payload;
  const mask = randomBytes(4);
  const masked = Buffer.from(data.map((byte, index) => byte ^ (mask[index % 4] ?? 0)));
  let header: Buffer;
  if (data.length < 126) header = Buffer.from([0x80 | opcode, 0x80 | data.length]);
  else if (data.length < 65_536) {
    header = Buffer.from([0x80 | opcode, 0x80 | 126, 0, 0]);
    header.writeUInt16BE(data.length, 2);
  } else {
    header = Buffer.alloc(10);
    header[0] = 0x80 | opcode;
    header[1] = 0x80 | 127;
    header.writeBigUInt64BE(BigInt(data.length), 2);
  }
  return Buffer.concat([header, mask, masked]);
}

class RawWire {
  private received = Buffer.alloc(0);
  private upgraded = false;
  private readonly frames: Frame[] = [];
  /** The close frame's code; 1006 when the connection ended without one (RFC 6455). */
  private closeCode: number | undefined;
  private ended = false;
  private readonly waiters = new Waiters(deadlineMs);

  private constructor(private readonly socket: Socket) {
    socket.on("data", (data) => {
      this.received = Buffer.concat([this.received, data]);
      this.parse();
      this.notify();
    });
    socket.on("error", () => undefined);
    socket.on("close", () => {
      this.ended = true;
      this.notify();
    });
  }

  static async open(extraHeaders = "", pieces?: Pieces): Promise<RawWire> {
    const socket = connectTcp(edgePort(), "127.0.0.1");
    const wire = new RawWire(socket);
    writeInPieces(socket, `${upgradeHead()}${extraHeaders}\r\n`, pieces);
    await wire.until(() => wire.upgraded || wire.ended, "the upgrade");
    if (!wire.upgraded) throw new Error("the edge did not upgrade the connection");
    return wire;
  }

  write(...frames: Buffer[]): void {
    this.socket.write(Buffer.concat(frames));
  }

  /** The hello was answered with welcome. */
  async welcomed(): Promise<void> {
    await this.textFrame((frame) => frame["type"] === "welcome");
  }

  async textFrame(matches: (frame: Frame) => boolean): Promise<Frame> {
    const found = (): Frame | undefined => this.frames.find(matches);
    await this.until(() => found() !== undefined || this.ended, "a matching frame");
    const frame = found();
    if (frame === undefined) throw new Error(`the connection ended (close ${String(this.closeCode)}) before a matching frame`);
    return frame;
  }

  end(): void {
    this.socket.destroy();
  }

  async closed(): Promise<number> {
    // The close frame, or the end of the connection without one (the edge waits for a closing handshake
    // this client never sends, so the frame is what settles it).
    await this.until(() => this.closeCode !== undefined || this.ended, "the close");
    this.socket.destroy();
    return this.closeCode ?? standardCloseCodes.abnormal;
  }

  private parse(): void {
    if (!this.upgraded) {
      const end = this.received.indexOf("\r\n\r\n");
      if (end < 0) return;
      this.upgraded = this.received.subarray(0, 12).toString("latin1") === "HTTP/1.1 101";
      this.received = this.received.subarray(end + 4);
    }
    // Server frames are unmasked and never fragmented by the edge.
    while (this.received.length >= 2) {
      const opcode = (this.received[0] ?? 0) & 0x0f;
      let length = (this.received[1] ?? 0) & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (this.received.length < 4) return;
        length = this.received.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (this.received.length < 10) return;
        length = Number(this.received.readBigUInt64BE(2));
        offset = 10;
      }
      if (this.received.length < offset + length) return;
      if (opcode === 0x8) this.closeCode = length >= 2 ? this.received.readUInt16BE(offset) : 1005;
      if (opcode === textOpcode) this.frames.push(JSON.parse(this.received.subarray(offset, offset + length).toString("utf8")) as Frame);
      this.received = this.received.subarray(offset + length);
    }
  }

  private until(condition: () => boolean, what: string): Promise<void> {
    return this.waiters.until(condition, what);
  }

  private notify(): void {
    this.waiters.notify();
  }
}

// ---------------------------------------------------------------------------------------------------

describe("frames after welcome: answered with an error, the socket keeps serving", () => {
  const ping = (requestId: string): Frame => ({ type: "ping", requestId });
  const deepArray = (depth: number): string => `${"[".repeat(depth)}${"]".repeat(depth)}`;
  const deepObject = (depth: number): string => `${'{"a":'.repeat(depth)}1${"}".repeat(depth)}`;

  // [what is sent, the text, the code, whether the error echoes a requestId]
  const cases: readonly (readonly [name: string, text: (requestId: string) => string, code: string, echoes: boolean])[] = [
    ["invalid JSON → malformed_frame", () => '{"type":"ping",', "malformed_frame", false],
    ["an empty text frame → malformed_frame", () => "", "malformed_frame", false],
    ["a JSON array → malformed_frame", (id) => JSON.stringify([ping(id)]), "malformed_frame", false],
    ["the number 42 → malformed_frame", () => "42", "malformed_frame", false],
    ["a JSON string → malformed_frame", () => '"ping"', "malformed_frame", false],
    ["null → malformed_frame", () => "null", "malformed_frame", false],
    ["true → malformed_frame", () => "true", "malformed_frame", false],
    [
      "an unknown type → unknown_frame_type",
      (id) => JSON.stringify({ type: "deleteEverything", requestId: id }),
      "unknown_frame_type",
      true,
    ],
    ['type "__proto__" → unknown_frame_type', (id) => JSON.stringify({ type: "__proto__", requestId: id }), "unknown_frame_type", true],
    ['type "constructor" → unknown_frame_type', (id) => JSON.stringify({ type: "constructor", requestId: id }), "unknown_frame_type", true],
    ['type "toString" → unknown_frame_type', (id) => JSON.stringify({ type: "toString", requestId: id }), "unknown_frame_type", true],
    ["type as a number → invalid_field", (id) => JSON.stringify({ type: 7, requestId: id }), "invalid_field", true],
    ["no type → invalid_field", (id) => JSON.stringify({ requestId: id }), "invalid_field", true],
    [
      "requestId as a number → invalid_field without requestId",
      () => JSON.stringify({ type: "ping", requestId: 17 }),
      "invalid_field",
      false,
    ],
    ["requestId of 65 characters → invalid_field without requestId", () => JSON.stringify(ping("r".repeat(65))), "invalid_field", false],
    ["a ping without requestId → invalid_field", () => JSON.stringify({ type: "ping" }), "invalid_field", false],
    [
      'a "__proto__" key → invalid_field',
      (id) => `{"type":"ping","requestId":"${id}","__proto__":{"isAdmin":true}}`,
      "invalid_field",
      true,
    ],
    [
      'a "constructor" key → invalid_field',
      (id) => `{"type":"ping","requestId":"${id}","constructor":{"prototype":{"isAdmin":true}}}`,
      "invalid_field",
      true,
    ],
    [
      'a send with a "__proto__" key → invalid_field',
      (id) =>
        `{"type":"send","requestId":"${id}","conversationId":"${malloryConversationId}","clientMessageId":"p1","body":"x","__proto__":{"body":"y"}}`,
      "invalid_field",
      true,
    ],
    [
      "an unknown field (userId: carol) on a send → invalid_field",
      (id) =>
        JSON.stringify({
          type: "send",
          requestId: id,
          conversationId: malloryConversationId,
          clientMessageId: "u1",
          body: "x",
          userId: "carol",
        }),
      "invalid_field",
      true,
    ],
    [
      "an unknown field whose name has 5,000 characters → invalid_field",
      (id) => JSON.stringify({ type: "ping", requestId: id, ["k".repeat(5000)]: 1 }),
      "invalid_field",
      true,
    ],
    [
      "an unknown type of 5,000 characters → unknown_frame_type",
      (id) => JSON.stringify({ type: "t".repeat(5000), requestId: id }),
      "unknown_frame_type",
      true,
    ],
    [
      "10,000 unknown fields → invalid_field",
      (id) =>
        JSON.stringify({
          type: "ping",
          requestId: id,
          ...Object.fromEntries(Array.from({ length: 10_000 }, (_, index) => [`f${index}`, 1])),
        }),
      "invalid_field",
      true,
    ],
    [
      "arrays nested 100,000 deep in a field → invalid_field",
      (id) => `{"type":"ping","requestId":"${id}","x":${deepArray(100_000)}}`,
      "invalid_field",
      true,
    ],
    [
      "objects nested 30,000 deep in a field → invalid_field",
      (id) => `{"type":"ping","requestId":"${id}","x":${deepObject(30_000)}}`,
      "invalid_field",
      true,
    ],
    ["arrays nested 100,000 deep as the frame → malformed_frame", () => deepArray(100_000), "malformed_frame", false],
    [
      "nested arrays as memberUserIds → invalid_field",
      (id) => `{"type":"createGroup","requestId":"${id}","title":"t","memberUserIds":${deepArray(50_000)}}`,
      "invalid_field",
      true,
    ],
    [
      "body as a number → invalid_field",
      (id) => JSON.stringify({ type: "send", requestId: id, conversationId: malloryConversationId, clientMessageId: "b1", body: 5 }),
      "invalid_field",
      true,
    ],
    [
      "body null → invalid_field",
      (id) => JSON.stringify({ type: "send", requestId: id, conversationId: malloryConversationId, clientMessageId: "b2", body: null }),
      "invalid_field",
      true,
    ],
    [
      "body as an object → invalid_field",
      (id) =>
        JSON.stringify({ type: "send", requestId: id, conversationId: malloryConversationId, clientMessageId: "b3", body: { text: "x" } }),
      "invalid_field",
      true,
    ],
    [
      "body empty → invalid_field",
      (id) => JSON.stringify({ type: "send", requestId: id, conversationId: malloryConversationId, clientMessageId: "b4", body: "" }),
      "invalid_field",
      true,
    ],
    [
      "body of 32,769 characters → invalid_field",
      (id) =>
        JSON.stringify({
          type: "send",
          requestId: id,
          conversationId: malloryConversationId,
          clientMessageId: "b5",
          body: "x".repeat(32_769),
        }),
      "invalid_field",
      true,
    ],
    [
      "body with NUL → invalid_field",
      (id) =>
        JSON.stringify({ type: "send", requestId: id, conversationId: malloryConversationId, clientMessageId: "b6", body: "a\u0000b" }),
      "invalid_field",
      true,
    ],
    [
      "body with a lone surrogate → invalid_field",
      (id) =>
        JSON.stringify({ type: "send", requestId: id, conversationId: malloryConversationId, clientMessageId: "b7", body: "a\ud800b" }),
      "invalid_field",
      true,
    ],
    [
      "group title with NUL → invalid_field",
      (id) => JSON.stringify({ type: "createGroup", requestId: id, title: "a\u0000", memberUserIds: [] }),
      "invalid_field",
      true,
    ],
    [
      "memberUserIds as a string → invalid_field",
      (id) => JSON.stringify({ type: "createGroup", requestId: id, title: "t", memberUserIds: "carol" }),
      "invalid_field",
      true,
    ],
    [
      "watchPresence of 101 users → invalid_field",
      (id) => JSON.stringify({ type: "watchPresence", requestId: id, userIds: Array.from({ length: 101 }, (_, index) => `u${index}`) }),
      "invalid_field",
      true,
    ],
    ["a second hello → already_authenticated", () => helloWith(tokenFor("carol")), "already_authenticated", false],
  ];

  it.each(cases)("%s", async (_name, text, code, echoes) => {
    const requestId = nextRequestId();
    const error = await errorFor(text(requestId), echoes ? requestId : undefined);
    expect(error).toMatchObject({ type: "error", code, retryable: false });
  });

  it("a binary frame → malformed_frame", async () => {
    const from = mallory.frames.length;
    mallory.sendBinary(Buffer.from([0x7b, 0x7d, 0xff]));
    expect(await mallory.frame((frame) => frame["type"] === "error", from)).toMatchObject({ code: "malformed_frame" });
    await mallory.stillServed();
  });

  it("after the second hello the session is still mallory's (a ping, then its own conversation's history)", async () => {
    const reply = await request(mallory, { type: "history", conversationId: malloryConversationId });
    expect(reply["type"]).toBe("historyPage");
  });

  it("a binary first frame → 4200", async () => {
    const probe = await Probe.open();
    probe.sendBinary(Buffer.from(helloWith(tokenFor("mallory"))));
    expect(await probe.closed()).toBe(closeCodes.protocol_violation.code);
  });

  it("a frame of frameBytesMax + 1 bytes → 1009", async () => {
    const probe = await session("trent");
    probe.sendText(JSON.stringify(ping("big")).padEnd(frameBytesMax + 1, " "));
    expect(await probe.closed()).toBe(standardCloseCodes.messageTooBig);
  });

  it("a frame over twice frameBytesMax → 1006 (cut by uWebSockets.js)", async () => {
    const probe = await session("trent");
    probe.sendText("x".repeat(2 * frameBytesMax + 1));
    expect(await probe.closed()).toBe(standardCloseCodes.abnormal);
  });

  it.each([
    ["an invalid byte sequence (C3 28)", Buffer.from([0xc3, 0x28])],
    ["an overlong encoding (C0 AF)", Buffer.from([0xc0, 0xaf])],
    ["an encoded surrogate (ED A0 80)", Buffer.from([0xed, 0xa0, 0x80])],
    [
      "a JSON ping with a 0xFF byte in its requestId",
      Buffer.concat([Buffer.from('{"type":"ping","requestId":"'), Buffer.from([0xff]), Buffer.from('"}')]),
    ],
  ])("a text frame that is not UTF-8, %s → 1006 (cut by uWebSockets.js, no close frame)", async (_name, bytes) => {
    const wire = await RawWire.open();
    wire.write(maskedFrame(textOpcode, helloWith(tokenFor("trent"))));
    await wire.welcomed();
    wire.write(maskedFrame(textOpcode, bytes));
    expect(await wire.closed()).toBe(standardCloseCodes.abnormal);
  });

  it("a text frame that is not UTF-8 as the first frame → 1006", async () => {
    const wire = await RawWire.open();
    wire.write(maskedFrame(textOpcode, Buffer.from([0xfe, 0xfe])));
    expect(await wire.closed()).toBe(standardCloseCodes.abnormal);
  });

  it("a binary frame through the raw wire after welcome → malformed_frame, not a close", async () => {
    const wire = await RawWire.open();
    wire.write(maskedFrame(textOpcode, helloWith(tokenFor("trent"))));
    await wire.welcomed();
    wire.write(maskedFrame(binaryOpcode, Buffer.from([0, 1, 2])));
    expect(await wire.textFrame((frame) => frame["type"] === "error")).toMatchObject({ code: "malformed_frame" });
    wire.end();
  });
});

describe("authorization: mallory asks for carol's and dave's conversations", () => {
  const cases: readonly (readonly [name: string, frame: () => Frame, code: string])[] = [
    [
      "send into their direct conversation → not_a_member",
      () => ({ type: "send", conversationId: secretConversationId, clientMessageId: "m1", body: "hi" }),
      "not_a_member",
    ],
    [
      "send into their group → not_a_member",
      () => ({ type: "send", conversationId: secretGroupId, clientMessageId: "m2", body: "hi" }),
      "not_a_member",
    ],
    [
      "history of their direct conversation → not_a_member",
      () => ({ type: "history", conversationId: secretConversationId }),
      "not_a_member",
    ],
    ["history of their group → not_a_member", () => ({ type: "history", conversationId: secretGroupId, limit: 200 }), "not_a_member"],
    [
      "read receipt in their direct conversation → not_a_member",
      () => ({ type: "read", conversationId: secretConversationId, seq: 1 }),
      "not_a_member",
    ],
    [
      "delivered receipt in their group → not_a_member",
      () => ({ type: "delivered", conversationId: secretGroupId, seq: 1 }),
      "not_a_member",
    ],
    [
      "typing in their direct conversation → not_a_member",
      () => ({ type: "typing", conversationId: secretConversationId }),
      "not_a_member",
    ],
    ["typing in their group → not_a_member", () => ({ type: "typing", conversationId: secretGroupId }), "not_a_member"],
    [
      "addMembers of herself to their group → not_a_member",
      () => ({ type: "addMembers", conversationId: secretGroupId, userIds: ["mallory"] }),
      "not_a_member",
    ],
    [
      "addMembers of herself to their direct conversation → not_a_member",
      () => ({ type: "addMembers", conversationId: secretConversationId, userIds: ["mallory"] }),
      "not_a_member",
    ],
    [
      "send into a conversation that does not exist → not_a_member",
      () => ({ type: "send", conversationId: "g-AAAAAAAAAAAAAAAAAAAAAA", clientMessageId: "m3", body: "hi" }),
      "not_a_member",
    ],
    [
      "history of a direct conversation id that does not exist → not_a_member",
      () => ({ type: "history", conversationId: "d-AAAAAAAAAAAAAAAAAAAAAA" }),
      "not_a_member",
    ],
  ];

  it.each(cases)("%s", async (_name, frame, code) => {
    expect(await request(mallory, frame())).toMatchObject({ type: "error", code });
  });

  it("a hello listing their conversations as cursors from 0, and the mailbox from 0 → welcomed and synced with none of their messages", async () => {
    const probe = await session("mallory", {
      resumeAfterSeq: 0,
      conversations: [
        { conversationId: secretConversationId, afterSeq: 0 },
        { conversationId: secretGroupId, afterSeq: 0 },
      ],
    });
    expect(probe.frames.filter((frame) => frame["type"] === "message")).toEqual([]);
    await probe.stillServed();
    probe.close();
  });

  it("watchPresence of carol, who shares no conversation with mallory → a presenceSnapshot like that of a user never online", async () => {
    expect(await request(mallory, { type: "watchPresence", userIds: ["carol"] })).toMatchObject({
      type: "presenceSnapshot",
      users: [{ userId: "carol" }],
    });
    // carol is online (her session is open since the setup), yet mallory reads her as never seen.
    expect(await request(mallory, { type: "watchPresence", userIds: ["carol"] })).toMatchObject({
      users: [{ userId: "carol", status: "offline", changedAtMs: null }],
    });
    expect(await request(mallory, { type: "watchPresence", userIds: [] })).toMatchObject({ type: "presenceSnapshot", users: [] });
  });
});

// ---------------------------------------------------------------------------------------------------

/** NATS wildcards and separators, whitespace, Redis key and protocol separators, SQL metacharacters. */
const metacharacters: readonly (readonly [label: string, value: string])[] = [
  ["a dot", "."],
  ["*", "*"],
  [">", ">"],
  ["a space", " "],
  ["a quote '", "'"],
  ["a semicolon", ";"],
  ["-- (allowed by the allowlists)", "--"],
  ["NUL", "\u0000"],
  ["a colon", ":"],
  ["CRLF", "\r\n"],
];
/** The one metacharacter every id allowlist admits: an id holding it is an ordinary id, stored verbatim. */
const allowedInIds = new Set(["--"]);
/** Request ids admit `.` and `:` too: they are echoed, never put in a subject, key or statement. */
const allowedInRequestIds = new Set(["--", ".", ":"]);

function conversationIdWith(value: string): string {
  return `g-${"A".repeat(22 - value.length)}${value}`;
}

let malloryGroupId: string;
let idCaseCounter = 0;

type Expected = { readonly type: string; readonly code?: string };

type IdField = {
  readonly name: string;
  /** The frame (without requestId) carrying `value` in the field. */
  readonly frame: (value: string, unique: string) => Frame;
  /** The answer when the id is valid (it holds `--`). */
  readonly whenValid: Expected;
  /** Served on a session of its own (typing's rate limit counts conversations per session). */
  readonly ownSession?: boolean;
};

describe("ids with NATS, Redis and SQL metacharacters in every id field", () => {
  beforeAll(async () => {
    malloryGroupId = conversationIdOf(await request(mallory, { type: "createGroup", title: "mallory's", memberUserIds: ["trent"] }));
  });

  const fields: readonly IdField[] = [
    {
      name: "send.conversationId",
      frame: (value, unique) => ({ type: "send", conversationId: conversationIdWith(value), clientMessageId: unique, body: "x" }),
      whenValid: { type: "error", code: "not_a_member" },
    },
    {
      name: "send.clientMessageId",
      frame: (value, unique) => ({
        type: "send",
        conversationId: malloryConversationId,
        clientMessageId: `cm${value}${unique}`,
        body: "x",
      }),
      whenValid: { type: "ack" },
    },
    {
      name: "history.conversationId",
      frame: (value) => ({ type: "history", conversationId: conversationIdWith(value) }),
      whenValid: { type: "error", code: "not_a_member" },
    },
    {
      name: "typing.conversationId",
      frame: (value) => ({ type: "typing", conversationId: conversationIdWith(value) }),
      whenValid: { type: "error", code: "not_a_member" },
      ownSession: true,
    },
    {
      name: "read.conversationId",
      frame: (value) => ({ type: "read", conversationId: conversationIdWith(value), seq: 1 }),
      whenValid: { type: "error", code: "not_a_member" },
    },
    {
      name: "delivered.conversationId",
      frame: (value) => ({ type: "delivered", conversationId: conversationIdWith(value), seq: 1 }),
      whenValid: { type: "error", code: "not_a_member" },
    },
    {
      name: "addMembers.conversationId",
      frame: (value) => ({ type: "addMembers", conversationId: conversationIdWith(value), userIds: ["trent"] }),
      whenValid: { type: "error", code: "not_a_member" },
    },
    {
      name: "addMembers.userIds",
      frame: (value) => ({ type: "addMembers", conversationId: malloryGroupId, userIds: [`trent${value}x`] }),
      whenValid: { type: "conversation" },
    },
    {
      name: "openDirect.peerUserId",
      frame: (value) => ({ type: "openDirect", peerUserId: `trent${value}y` }),
      whenValid: { type: "conversation" },
    },
    {
      name: "createGroup.memberUserIds",
      frame: (value) => ({ type: "createGroup", title: "ids", memberUserIds: [`trent${value}z`] }),
      whenValid: { type: "conversation" },
    },
    {
      name: "watchPresence.userIds",
      frame: (value) => ({ type: "watchPresence", userIds: [`carol${value}`] }),
      whenValid: { type: "presenceSnapshot" },
    },
  ];

  const cases = fields.flatMap((field) => metacharacters.map(([label, value]) => [field, label, value] as const));
  it.each(
    cases.map(
      ([field, label, value]) =>
        [
          `${field.name} with ${label} → ${allowedInIds.has(value) ? (field.whenValid.code ?? field.whenValid.type) : "invalid_field"}`,
          field,
          value,
        ] as const,
    ),
  )("%s", async (_name, field, value) => {
    const probe = field.ownSession === true ? await session("mallory") : mallory;
    const reply = await request(probe, field.frame(value, `u${++idCaseCounter}`));
    const expected: Expected = allowedInIds.has(value) ? field.whenValid : { type: "error", code: "invalid_field" };
    expect(reply).toMatchObject(expected);
    await probe.stillServed();
    if (probe !== mallory) probe.close();
  });

  it.each(
    metacharacters.map(
      ([label, value]) =>
        [`requestId with ${label} → ${allowedInRequestIds.has(value) ? "pong" : "invalid_field without requestId"}`, value] as const,
    ),
  )("%s", async (_name, value) => {
    const requestId = `r${value}${++idCaseCounter}`;
    if (allowedInRequestIds.has(value)) {
      const from = mallory.frames.length;
      mallory.sendJson({ type: "ping", requestId });
      expect(await mallory.frame((frame) => frame["requestId"] === requestId, from)).toEqual({ type: "pong", requestId });
    } else {
      expect(await errorFor(JSON.stringify({ type: "ping", requestId }))).toMatchObject({ code: "invalid_field" });
    }
  });

  it.each(
    metacharacters.map(
      ([label, value]) => [`hello.deviceId with ${label} → ${allowedInIds.has(value) ? "welcome" : "4200"}`, value] as const,
    ),
  )("%s", async (_name, value) => {
    const probe = await Probe.open();
    probe.sendText(helloWith(tokenFor("mallory"), { deviceId: `phone${value}x` }));
    if (allowedInIds.has(value)) {
      expect(await probe.frame((frame) => frame["type"] === "welcome")).toMatchObject({ deviceId: `phone${value}x` });
      probe.close();
    } else expect(await probe.closed()).toBe(closeCodes.protocol_violation.code);
  });

  it.each(
    metacharacters.map(
      ([label, value]) =>
        [`hello.conversations[0].conversationId with ${label} → ${allowedInIds.has(value) ? "synced" : "4200"}`, value] as const,
    ),
  )("%s", async (_name, value) => {
    const probe = await Probe.open();
    probe.sendText(
      helloWith(tokenFor("mallory"), { resumeAfterSeq: 0, conversations: [{ conversationId: conversationIdWith(value), afterSeq: 0 }] }),
    );
    if (allowedInIds.has(value)) {
      await probe.frame((frame) => frame["type"] === "synced");
      probe.close();
    } else expect(await probe.closed()).toBe(closeCodes.protocol_violation.code);
  });

  it("the id with -- came back verbatim: the ack's clientMessageId is in mallory's history", async () => {
    const page = await request(mallory, { type: "history", conversationId: malloryConversationId, limit: 200 });
    const clientMessageIds = ((page["messages"] ?? []) as { clientMessageId: string }[]).map((message) => message.clientMessageId);
    expect(clientMessageIds.some((id) => id.startsWith("cm--"))).toBe(true);
  });
});

describe("numbers out of range in every numeric field", () => {
  // Raw JSON text: NaN and 1e309 cannot be written by JSON.stringify (1e309 parses to Infinity).
  const outOfRange: readonly (readonly [label: string, raw: string])[] = [
    ["-1", "-1"],
    ['"NaN" (a string)', '"NaN"'],
    ['"1" (a numeric string)', '"1"'],
    ["2^53", "9007199254740992"],
    ["1.5", "1.5"],
    ["1e309 (Infinity)", "1e309"],
    ["0", "0"],
  ];
  const requestFields: readonly (readonly [name: string, frame: () => Frame, field: string])[] = [
    ["history.beforeSeq", () => ({ type: "history", conversationId: malloryConversationId }), "beforeSeq"],
    ["history.limit", () => ({ type: "history", conversationId: malloryConversationId }), "limit"],
    ["read.seq", () => ({ type: "read", conversationId: malloryConversationId }), "seq"],
    ["delivered.seq", () => ({ type: "delivered", conversationId: malloryConversationId }), "seq"],
  ];

  it.each(
    requestFields.flatMap(([name, frame, field]) =>
      outOfRange.map(([label, raw]) => [`${name} = ${label} → invalid_field`, frame, field, raw] as const),
    ),
  )("%s", async (_name, frame, field, raw) => {
    const requestId = nextRequestId();
    const error = await errorFor(withRawField({ ...frame(), requestId }, field, raw), requestId);
    expect(error).toMatchObject({ code: "invalid_field" });
    expect(String(error["message"])).toContain(field);
  });

  it("history.limit = 201 → invalid_field", async () => {
    expect(await request(mallory, { type: "history", conversationId: malloryConversationId, limit: 201 })).toMatchObject({
      code: "invalid_field",
    });
  });

  it("read.seq = 2^53 - 1, beyond the conversation's last → invalid_field", async () => {
    expect(await request(mallory, { type: "read", conversationId: malloryConversationId, seq: Number.MAX_SAFE_INTEGER })).toMatchObject({
      code: "invalid_field",
    });
  });

  it("history.beforeSeq = 2^53 - 1 → a page (the newest messages)", async () => {
    expect(
      await request(mallory, { type: "history", conversationId: malloryConversationId, beforeSeq: Number.MAX_SAFE_INTEGER }),
    ).toMatchObject({ type: "historyPage" });
  });

  it.each([
    [
      "hello.resumeAfterSeq = 2^53 - 1, past the mailbox's head → welcome, then synced",
      (): Frame => ({ resumeAfterSeq: Number.MAX_SAFE_INTEGER }),
    ],
    [
      "hello.conversations[0].afterSeq = 2^53 - 1, past the conversation's head → welcome, then synced",
      (): Frame => ({ resumeAfterSeq: 0, conversations: [{ conversationId: malloryConversationId, afterSeq: Number.MAX_SAFE_INTEGER }] }),
    ],
  ] as const)("%s", async (_name, hello) => {
    const probe = await session("mallory", hello());
    await probe.stillServed();
    probe.close();
  });

  const helloFields: readonly (readonly [name: string, place: (raw: string) => string, whenZero: "welcome" | number])[] = [
    [
      "hello.protocolVersion",
      (raw) => `{"type":"hello","token":"${tokenFor("mallory")}","protocolVersion":${raw}}`,
      closeCodes.unsupported_protocol_version.code,
    ],
    [
      "hello.resumeAfterSeq",
      (raw) => withRawField({ type: "hello", protocolVersion, token: tokenFor("mallory") }, "resumeAfterSeq", raw),
      "welcome",
    ],
    [
      "hello.conversations[0].afterSeq",
      (raw) =>
        `{"type":"hello","protocolVersion":${protocolVersion},"token":"${tokenFor("mallory")}","conversations":[{"conversationId":"${malloryConversationId}","afterSeq":${raw}}]}`,
      "welcome",
    ],
  ];

  it.each(
    helloFields.flatMap(([name, place, whenZero]) =>
      outOfRange.map(
        ([label, raw]) =>
          [
            `${name} = ${label} → ${raw === "0" ? String(whenZero) : "4200"}`,
            place,
            raw === "0" ? whenZero : closeCodes.protocol_violation.code,
            raw,
          ] as const,
      ),
    ),
  )("%s", async (_name, place, expected, raw) => {
    const probe = await Probe.open();
    probe.sendText(place(raw));
    if (expected === "welcome") {
      await probe.frame((frame) => frame["type"] === "synced");
      probe.close();
    } else expect(await probe.closed()).toBe(expected);
  });
});

describe("floods", () => {
  // What docs/protocol.md documents: sends meet the session's token bucket (burst 40) before the 64 in
  // flight, typing EDGE_TYPING_INTERVAL_MS, pings the 64 in flight, and connects of one user 4005
  // (reconnect) past EDGE_SESSIONS_PER_USER_MAX (16).

  /** Sends every frame at once, then waits for one reply per requestId; returns them by requestId. */
  async function burst(probe: Probe, frames: Frame[]): Promise<Map<string, Frame[]>> {
    const from = probe.frames.length;
    const requestIds = frames.map((frame, index) => `${String(frame["type"])}-${index}`);
    frames.forEach((frame, index) => probe.sendJson({ ...frame, requestId: requestIds[index] }));
    const wanted = new Set(requestIds);
    const replies = (): Map<string, Frame[]> => {
      const byRequest = new Map<string, Frame[]>();
      for (const frame of probe.frames.slice(from)) {
        const requestId = frame["requestId"];
        if (typeof requestId === "string" && wanted.has(requestId)) byRequest.set(requestId, [...(byRequest.get(requestId) ?? []), frame]);
      }
      return byRequest;
    };
    await probe.until(() => replies().size === wanted.size || probe.closeCode !== undefined, `${wanted.size} replies`, 30_000);
    await probe.stillServed();
    return replies();
  }

  function codesOf(replies: Map<string, Frame[]>): Map<string, number> {
    const counts = new Map<string, number>();
    for (const frames of replies.values()) {
      expect(frames).toHaveLength(1);
      const frame = frames[0] ?? {};
      const key = frame["type"] === "error" ? String(frame["code"]) : String(frame["type"]);
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    return counts;
  }

  it("300 sends in one burst → each answered once: not_a_member for the session's burst of 40, rate_limited with retryAfterMs past it", async () => {
    const probe = await session("flooder");
    const replies = await burst(
      probe,
      Array.from({ length: 300 }, (_, index) => ({
        type: "send",
        conversationId: malloryGroupId,
        clientMessageId: `flood-${index}`,
        body: `flood ${index}`,
      })),
    );
    expect(replies.size).toBe(300);
    const counts = codesOf(replies);
    // flooder is not a member of mallory's group: each request in flight is refused by the cell.
    expect([...counts.keys()].sort()).toEqual(["not_a_member", "rate_limited"]);
    // The session's send bucket (EDGE_RATE_SENDS_PER_SESSION_BURST 40) runs out before the 64 in flight do,
    // so every refusal is the bucket's, with the wait until the next token.
    expect(counts.get("not_a_member") ?? 0).toBeGreaterThanOrEqual(40);
    expect(counts.get("not_a_member") ?? 0).toBeLessThanOrEqual(64);
    const refusals = [...replies.values()].flatMap((frames) => frames).filter((frame) => frame["code"] === "rate_limited");
    expect(refusals.every((frame) => typeof frame["retryAfterMs"] === "number" && frame["retryAfterMs"] > 0)).toBe(true);
    probe.close();
  });

  it("300 sends into her own conversation in one burst → each answered once, ack or rate_limited, each ack a new seq", async () => {
    const replies = await burst(
      mallory,
      Array.from({ length: 300 }, (_, index) => ({
        type: "send",
        conversationId: malloryConversationId,
        clientMessageId: `own-flood-${index}`,
        body: `flood ${index}`,
      })),
    );
    const counts = codesOf(replies);
    expect([...counts.keys()].sort()).toEqual(["ack", "rate_limited"]);
    const seqs = [...replies.values()]
      .flatMap((frames) => frames)
      .filter((frame) => frame["type"] === "ack")
      .map((frame) => frame["seq"]);
    expect(new Set(seqs).size).toBe(seqs.length);
    expect(seqs.length).toBeGreaterThanOrEqual(40);
  });

  it("50 typing frames in one burst → one typingAck, 49 rate_limited", async () => {
    const probe = await session("mallory");
    const counts = codesOf(
      await burst(
        probe,
        Array.from({ length: 50 }, () => ({ type: "typing", conversationId: malloryConversationId })),
      ),
    );
    expect(Object.fromEntries(counts)).toEqual({ typingAck: 1, rate_limited: 49 });
    probe.close();
  });

  it("1,000 pings in one burst → each answered once, pong or rate_limited", async () => {
    const probe = await session("flooder");
    const counts = codesOf(
      await burst(
        probe,
        Array.from({ length: 1000 }, () => ({ type: "ping" })),
      ),
    );
    expect([...counts.keys()].every((key) => key === "pong" || key === "rate_limited")).toBe(true);
    expect(counts.get("pong") ?? 0).toBeGreaterThanOrEqual(64);
    probe.close();
  });

  it("40 connects of one user at once → 16 welcomed, 24 closed with 4005 (reconnect, not stop)", async () => {
    const probes = await Promise.all(Array.from({ length: 40 }, () => Probe.open()));
    for (const probe of probes) probe.sendText(helloWith(tokenFor("connector")));
    await Promise.all(
      probes.map((probe) =>
        probe.until(() => probe.frames.some((frame) => frame["type"] === "welcome") || probe.closeCode !== undefined, "welcome or close"),
      ),
    );
    const welcomed = probes.filter((probe) => probe.closeCode === undefined);
    const refused = probes.filter((probe) => probe.closeCode !== undefined);
    expect(welcomed).toHaveLength(16);
    expect(new Set(refused.map((probe) => probe.closeCode))).toEqual(new Set([closeCodes.too_many_sessions.code]));
    for (const probe of welcomed) probe.close();
  });

  it("50 connects of new users at once → all welcomed, and the session count returns once they leave", async () => {
    const sessionsBefore = await edgeSessionCount();
    const probes = await Promise.all(Array.from({ length: 50 }, (_, index) => session(`newcomer-${index}`)));
    expect(probes.every((probe) => probe.frames[0]?.["type"] === "welcome")).toBe(true);
    for (const probe of probes) probe.close();
    await waitFor(async () => (await edgeSessionCount()) === sessionsBefore, "the newcomers' sessions to close");
  });

  it("300 connects with garbage first frames at once → each 4200", async () => {
    const probes = await Promise.all(Array.from({ length: 300 }, () => Probe.open()));
    probes.forEach((probe, index) => probe.sendText(index % 2 === 0 ? "garbage" : JSON.stringify({ type: "send" })));
    expect(new Set(await Promise.all(probes.map((probe) => probe.closed())))).toEqual(new Set([closeCodes.protocol_violation.code]));
  });

  it("an upgrade with a browser Origin not in the allowlist → HTTP 403 origin_not_allowed, no socket", async () => {
    const socket = new WebSocket(edgeUrl(), { origin: "https://evil.test" });
    const status = await new Promise<number>((resolve, reject) => {
      socket.once("unexpected-response", (_request, response: { statusCode?: number }) => resolve(response.statusCode ?? 0));
      socket.once("open", () => reject(new Error("upgraded")));
      socket.on("error", () => undefined);
    });
    expect(status).toBe(upgradeRefusals.origin_not_allowed.status);
    socket.terminate();
  });
});
