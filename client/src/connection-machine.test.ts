// Follows client/BEHAVIOUR.md: one test per row of its transition and close-code tables, then properties
// over random input sequences (fast-check prints the seed and the shrunk sequence on failure).
import fc from "fast-check";
import { closeCodes, standardCloseCodes } from "@cellwire/protocol";
import { describe, expect, it } from "vitest";
import { defaultBackoffOptions } from "./backoff.ts";
import {
  connectionStateNames,
  initialConnectionState,
  nextUrlIndex,
  transition,
  type ConnectionEffect,
  type ConnectionInput,
  type ConnectionMachineOptions,
  type ConnectionState,
} from "./connection-machine.ts";

const options: ConnectionMachineOptions = {
  backoff: { initialDelayMs: 100, delayMsMax: 1000, multiplier: 2, jitterRatio: 0.5 },
  connectTimeoutMs: 5000,
  stableConnectionMs: 10_000,
  reconnectAttemptsMax: 3,
  urlCount: 1,
};
// random() = 0 puts every delay at its bound, so the expected delays below are exact.
const environment = { nowMs: 50_000, random: () => 0 };

function step(state: ConnectionState, input: ConnectionInput, nowMs = environment.nowMs, machineOptions = options) {
  return transition(state, input, machineOptions, { ...environment, nowMs });
}

function run(
  inputs: readonly ((state: ConnectionState) => ConnectionInput)[],
  from = initialConnectionState,
  machineOptions = options,
): ConnectionState {
  return inputs.reduce((state, input) => step(state, input(state), environment.nowMs, machineOptions).state, from);
}

const connect = (): ConnectionInput => ({ type: "connect_requested" });
const token = (state: ConnectionState): ConnectionInput => ({ type: "token_received", attemptId: state.attemptId });
const opened = (state: ConnectionState): ConnectionInput => ({ type: "socket_opened", attemptId: state.attemptId });
const welcome = (state: ConnectionState): ConnectionInput => ({ type: "welcome_received", attemptId: state.attemptId });
const closedWith =
  (code: number) =>
  (state: ConnectionState): ConnectionInput => ({ type: "socket_closed", attemptId: state.attemptId, code });
const timer = (): ConnectionInput => ({ type: "timer_fired" });

const connectingForToken = () => run([connect]);
const connectingSocket = () => run([connect, token]);
const authenticating = () => run([connect, token, opened]);
const open = () => run([connect, token, opened, welcome]);
const waiting = () => run([connect, token, opened, welcome, closedWith(closeCodes.going_away.code)]);
const closed = () => run([connect, () => ({ type: "close_requested" })]);

const types = (effects: readonly ConnectionEffect[]) => effects.map((effect) => effect.type);

describe("connection machine: transition table", () => {
  it("idle + connect_requested → connecting: deadline timer, token fetched with reason connect", () => {
    const { state, effects } = step(initialConnectionState, { type: "connect_requested" });
    expect(state).toMatchObject({ name: "connecting", attemptId: 1, socketRequested: false, failedAttempts: 0 });
    expect(effects).toEqual([
      {
        type: "emit_state",
        state: "connecting",
        previousState: "idle",
        detail: { closeCode: null, reconnectDelayMs: null, closedReason: null },
        urlIndex: 0,
      },
      { type: "set_timer", delayMs: 5000, purpose: "connect_deadline" },
      { type: "fetch_token", attemptId: 1, reason: "connect" },
    ]);
  });

  it("closed + connect_requested → connecting with the failed-attempt count reset", () => {
    const stopped = run([
      connect,
      token,
      closedWith(standardCloseCodes.abnormal),
      timer,
      token,
      closedWith(closeCodes.protocol_violation.code),
    ]);
    expect(stopped).toMatchObject({ name: "closed", closedReason: "stopped_by_server" });
    const { state, effects } = step(stopped, { type: "connect_requested" });
    expect(state).toMatchObject({ name: "connecting", failedAttempts: 0, closedReason: null });
    expect(effects).toContainEqual({ type: "fetch_token", attemptId: stopped.attemptId + 1, reason: "connect" });
  });

  it("waiting_to_reconnect + connect_requested → connecting now, token reason reconnect", () => {
    const { state, effects } = step(waiting(), { type: "connect_requested" });
    expect(state.name).toBe("connecting");
    expect(effects).toContainEqual({ type: "fetch_token", attemptId: 2, reason: "reconnect" });
  });

  it("waiting_to_reconnect + timer_fired → connecting, token reason reconnect", () => {
    const { state, effects } = step(waiting(), { type: "timer_fired" });
    expect(state).toMatchObject({ name: "connecting", attemptId: 2 });
    expect(types(effects)).toEqual(["emit_state", "set_timer", "fetch_token"]);
    expect(effects).toContainEqual({ type: "fetch_token", attemptId: 2, reason: "reconnect" });
  });

  it("connecting + token_received → open the socket (same state, no state event)", () => {
    const { state, effects } = step(connectingForToken(), { type: "token_received", attemptId: 1 });
    expect(state).toMatchObject({ name: "connecting", socketRequested: true });
    expect(effects).toEqual([{ type: "open_socket", attemptId: 1, urlIndex: 0 }]);
  });

  it("connecting + token_failed → waiting_to_reconnect after the first backoff delay", () => {
    const { state, effects } = step(connectingForToken(), { type: "token_failed", attemptId: 1 });
    expect(state).toMatchObject({ name: "waiting_to_reconnect", failedAttempts: 1 });
    expect(effects).toEqual([
      {
        type: "emit_state",
        state: "waiting_to_reconnect",
        previousState: "connecting",
        detail: { closeCode: null, reconnectDelayMs: 100, closedReason: null },
        urlIndex: 0,
      },
      { type: "clear_timer" },
      { type: "set_timer", delayMs: 100, purpose: "reconnect" },
    ]);
  });

  it("connecting + socket_opened → authenticating: send hello", () => {
    const { state, effects } = step(connectingSocket(), { type: "socket_opened", attemptId: 1 });
    expect(state.name).toBe("authenticating");
    expect(types(effects)).toEqual(["emit_state", "send_hello"]);
  });

  it("authenticating + welcome_received → open: clear the deadline, start the session", () => {
    const { state, effects } = step(authenticating(), { type: "welcome_received", attemptId: 1 });
    expect(state).toMatchObject({ name: "open", openedAtMs: environment.nowMs });
    expect(effects).toEqual([
      {
        type: "emit_state",
        state: "open",
        previousState: "authenticating",
        detail: { closeCode: null, reconnectDelayMs: null, closedReason: null },
        urlIndex: 0,
      },
      { type: "clear_timer" },
      { type: "start_session", attemptId: 1 },
    ]);
  });

  it.each([
    ["connecting (token)", connectingForToken],
    ["connecting (socket)", connectingSocket],
    ["authenticating", authenticating],
  ])("%s + timer_fired (deadline) → close the socket, waiting_to_reconnect", (_name, from) => {
    const { state, effects } = step(from(), { type: "timer_fired" });
    expect(state).toMatchObject({ name: "waiting_to_reconnect", failedAttempts: 1 });
    expect(types(effects)).toEqual(["emit_state", "close_socket", "clear_timer", "set_timer"]);
  });

  it("open + heartbeat_missed → close the socket, end the session, waiting_to_reconnect", () => {
    const { state, effects } = step(open(), { type: "heartbeat_missed", attemptId: 1 });
    expect(state.name).toBe("waiting_to_reconnect");
    expect(types(effects)).toEqual(["emit_state", "close_socket", "end_session", "set_timer"]);
  });

  it("open + sequence_gap → close the socket, end the session, waiting_to_reconnect (as a drop)", () => {
    const { state, effects } = step(open(), { type: "sequence_gap", attemptId: 1 });
    expect(state).toMatchObject({ name: "waiting_to_reconnect", failedAttempts: 1 });
    expect(effects).toEqual([
      {
        type: "emit_state",
        state: "waiting_to_reconnect",
        previousState: "open",
        detail: { closeCode: null, reconnectDelayMs: 100, closedReason: null },
        urlIndex: 0,
      },
      { type: "close_socket", code: standardCloseCodes.normal },
      { type: "end_session", closeCode: null },
      { type: "set_timer", delayMs: 100, purpose: "reconnect" },
    ]);
    const next = step(state, { type: "timer_fired" });
    expect(next.effects).toContainEqual({ type: "fetch_token", attemptId: 2, reason: "reconnect" });
    // A gap reported by the socket of an earlier attempt does not end the current session.
    const reopened = run([token, opened, welcome], next.state);
    expect(reopened).toMatchObject({ name: "open", attemptId: 2 });
    expect(step(reopened, { type: "sequence_gap", attemptId: 1 })).toEqual({ state: reopened, effects: [] });
  });

  it.each([
    ["connecting", connectingSocket],
    ["authenticating", authenticating],
    ["waiting_to_reconnect", waiting],
  ])("%s + sequence_gap does nothing (no session to leave)", (_name, from) => {
    const state = from();
    expect(step(state, { type: "sequence_gap", attemptId: state.attemptId })).toEqual({ state, effects: [] });
  });

  it.each([
    ["idle", () => initialConnectionState, ["emit_state", "fail_requests"]],
    ["connecting", connectingForToken, ["emit_state", "clear_timer", "close_socket", "fail_requests"]],
    ["authenticating", authenticating, ["emit_state", "clear_timer", "close_socket", "fail_requests"]],
    ["open", open, ["emit_state", "close_socket", "end_session", "fail_requests"]],
    ["waiting_to_reconnect", waiting, ["emit_state", "clear_timer", "fail_requests"]],
  ])("%s + close_requested → closed", (_name, from, expectedEffects) => {
    const { state, effects } = step(from(), { type: "close_requested" });
    expect(state).toMatchObject({ name: "closed", closedReason: "close_requested" });
    expect(types(effects)).toEqual(expectedEffects);
    expect(effects).toContainEqual({ type: "fail_requests", reason: "close_requested", closeCode: null });
  });

  it("closed + close_requested does nothing", () => {
    const from = closed();
    expect(step(from, { type: "close_requested" })).toEqual({ state: from, effects: [] });
  });

  it("ignores inputs of an earlier attempt", () => {
    const current = run([connect, token, closedWith(standardCloseCodes.abnormal), timer, token, opened]);
    expect(current).toMatchObject({ name: "authenticating", attemptId: 2 });
    for (const input of [
      { type: "welcome_received", attemptId: 1 },
      { type: "socket_closed", attemptId: 1, code: closeCodes.protocol_violation.code },
      { type: "socket_opened", attemptId: 1 },
      { type: "token_received", attemptId: 1 },
    ] as const) {
      expect(step(current, input)).toEqual({ state: current, effects: [] });
    }
  });

  it("ignores a socket close while waiting (the socket the client itself closed)", () => {
    const from = run([connect, token, opened, welcome, (state) => ({ type: "heartbeat_missed", attemptId: state.attemptId })]);
    expect(step(from, { type: "socket_closed", attemptId: from.attemptId, code: standardCloseCodes.normal })).toEqual({
      state: from,
      effects: [],
    });
  });
});

describe("connection machine: close codes", () => {
  it.each([
    [closeCodes.going_away.code, "reconnect"],
    [closeCodes.slow_consumer.code, "reconnect"],
    // The user at the edge's per-user limit, and a session of theirs taken for gone: a client with fewer
    // live sockets than the limit must never be told to stop (docs/decisions/0018).
    [closeCodes.too_many_sessions.code, "reconnect"],
    [closeCodes.stale_session.code, "reconnect"],
    [standardCloseCodes.normal, "reconnect"],
    [standardCloseCodes.goingAway, "reconnect"],
    [standardCloseCodes.abnormal, "reconnect"],
    [standardCloseCodes.messageTooBig, "reconnect"],
    [closeCodes.token_invalid.code, "refresh"],
    [closeCodes.token_expired.code, "refresh"],
    [closeCodes.authentication_timeout.code, "refresh"],
  ] as const)("open + close %i → waiting_to_reconnect, next token reason %s", (code, reason) => {
    const lost = step(open(), { type: "socket_closed", attemptId: 1, code });
    expect(lost.state.name).toBe("waiting_to_reconnect");
    expect(lost.effects).toContainEqual({ type: "end_session", closeCode: code });
    expect(lost.effects[0]).toMatchObject({ type: "emit_state", detail: { closeCode: code, reconnectDelayMs: 100 } });
    const next = step(lost.state, { type: "timer_fired" });
    expect(next.effects).toContainEqual({ type: "fetch_token", attemptId: 2, reason });
  });

  it.each([closeCodes.protocol_violation.code, closeCodes.unsupported_protocol_version.code])(
    "close %i (4200 range) → closed, pending requests fail, no timer",
    (code) => {
      for (const from of [connectingSocket(), authenticating(), open()]) {
        const { state, effects } = step(from, { type: "socket_closed", attemptId: 1, code });
        expect(state).toMatchObject({ name: "closed", closedReason: "stopped_by_server" });
        expect(effects).toContainEqual({ type: "fail_requests", reason: "stopped_by_server", closeCode: code });
        expect(types(effects)).not.toContain("set_timer");
      }
    },
  );

  it("backs off exponentially over consecutive failures, then gives up past reconnectAttemptsMax", () => {
    let state = run([connect, token]);
    const delays: (number | null)[] = [];
    for (let failure = 0; failure < 4; failure++) {
      const lost = step(state, { type: "socket_closed", attemptId: state.attemptId, code: standardCloseCodes.abnormal });
      const emitted = lost.effects[0];
      delays.push(emitted?.type === "emit_state" ? emitted.detail.reconnectDelayMs : null);
      state = lost.state;
      if (state.name === "closed") break;
      state = run([timer, token], state);
    }
    expect(delays).toEqual([100, 200, 400, null]);
    expect(state).toMatchObject({ name: "closed", closedReason: "reconnect_limit" });
  });

  it("a session that lasted stableConnectionMs resets the backoff; a short one does not", () => {
    const afterTwoFailures = run([
      connect,
      token,
      closedWith(standardCloseCodes.abnormal),
      timer,
      token,
      closedWith(standardCloseCodes.abnormal),
      timer,
      token,
      opened,
      welcome,
    ]);
    expect(afterTwoFailures).toMatchObject({ name: "open", failedAttempts: 2, openedAtMs: environment.nowMs });
    const code = { type: "socket_closed", attemptId: afterTwoFailures.attemptId, code: standardCloseCodes.abnormal } as const;
    expect(step(afterTwoFailures, code, environment.nowMs + 9_999).state.failedAttempts).toBe(3);
    expect(step(afterTwoFailures, code, environment.nowMs + 10_000).state.failedAttempts).toBe(1);
  });
});

describe("connection machine: edge URLs", () => {
  const threeUrls: ConnectionMachineOptions = { ...options, urlCount: 3, reconnectAttemptsMax: 10 };
  const go = (inputs: readonly ((state: ConnectionState) => ConnectionInput)[], from = initialConnectionState) =>
    run(inputs, from, threeUrls);
  const at = (state: ConnectionState, input: ConnectionInput, nowMs = environment.nowMs) => step(state, input, nowMs, threeUrls);
  const timerOf = (effects: readonly ConnectionEffect[]) => effects.find((effect) => effect.type === "set_timer");
  const abnormal = closedWith(standardCloseCodes.abnormal);

  it("round robin: the index after the last is the first; one URL is always index 0", () => {
    expect([0, 1, 2].map((index) => nextUrlIndex(index, 3))).toEqual([1, 2, 0]);
    expect(nextUrlIndex(0, 1)).toBe(0);
  });

  it("the first attempt opens the first URL", () => {
    const { state, effects } = at(go([connect]), { type: "token_received", attemptId: 1 });
    expect(state.urlIndex).toBe(0);
    expect(effects).toEqual([{ type: "open_socket", attemptId: 1, urlIndex: 0 }]);
  });

  it("a failed attempt moves to the next URL after the usual backoff; the next attempt opens it", () => {
    const { state, effects } = at(go([connect, token]), { type: "socket_closed", attemptId: 1, code: standardCloseCodes.abnormal });
    expect(state).toMatchObject({ name: "waiting_to_reconnect", urlIndex: 1, failedAttempts: 1 });
    expect(effects[0]).toMatchObject({ type: "emit_state", urlIndex: 1, detail: { reconnectDelayMs: 100 } });
    expect(timerOf(effects)).toEqual({ type: "set_timer", delayMs: 100, purpose: "reconnect" });
    expect(at(go([timer, token], state), { type: "socket_opened", attemptId: 2 }).state).toMatchObject({
      name: "authenticating",
      urlIndex: 1,
    });
    expect(at(go([timer], state), { type: "token_received", attemptId: 2 }).effects).toEqual([
      { type: "open_socket", attemptId: 2, urlIndex: 1 },
    ]);
  });

  it("all URLs down: the URLs rotate while the backoff grows", () => {
    let state = go([connect, token]);
    const tried: number[] = [];
    const delays: number[] = [];
    for (let failure = 0; failure < 5; failure++) {
      tried.push(state.urlIndex);
      const lost = at(state, { type: "socket_closed", attemptId: state.attemptId, code: standardCloseCodes.abnormal });
      const waitTimer = timerOf(lost.effects);
      if (waitTimer?.type === "set_timer") delays.push(waitTimer.delayMs);
      state = go([timer, token], lost.state);
    }
    expect(tried).toEqual([0, 1, 2, 0, 1]);
    expect(delays).toEqual([100, 200, 400, 800, 1000]);
  });

  it("an attempt that fails after the socket opened (deadline while authenticating) also moves on", () => {
    const { state } = at(go([connect, token, opened]), { type: "timer_fired" });
    expect(state).toMatchObject({ name: "waiting_to_reconnect", urlIndex: 1 });
  });

  it.each([
    [
      "the token provider failed",
      (state: ConnectionState): ConnectionInput => ({ type: "token_failed", attemptId: state.attemptId }),
      go([connect]),
    ],
    ["the deadline passed while waiting for the token", timer, go([connect])],
    ["the edge asked for a fresh token (4101)", closedWith(closeCodes.token_expired.code), go([connect, token, opened])],
    ["the edge refused a frame too big (1009)", closedWith(standardCloseCodes.messageTooBig), go([connect, token, opened, welcome])],
  ])("stays on the same URL when the edge is not at fault: %s", (_name, input, from) => {
    const { state, effects } = at(from, input(from));
    expect(state).toMatchObject({ name: "waiting_to_reconnect", urlIndex: 0 });
    expect(timerOf(effects)).toMatchObject({ purpose: "reconnect", delayMs: 100 });
  });

  it.each([
    ["an abnormal close (1006)", abnormal],
    ["the edge going away (4000)", closedWith(closeCodes.going_away.code)],
    ["a missed heartbeat", (state: ConnectionState): ConnectionInput => ({ type: "heartbeat_missed", attemptId: state.attemptId })],
    ["a sequence gap", (state: ConnectionState): ConnectionInput => ({ type: "sequence_gap", attemptId: state.attemptId })],
  ])("an open session lost to %s fails over: next URL, within the failover window instead of the backoff", (_name, input) => {
    const from = go([connect, token, opened, welcome]);
    const { state, effects } = at(from, input(from));
    // random() = 0: the top of the failover window, initialDelayMs × jitterRatio = 50, below the first backoff (100).
    expect(state).toMatchObject({ name: "waiting_to_reconnect", urlIndex: 1, failedAttempts: 1 });
    expect(effects[0]).toMatchObject({ type: "emit_state", urlIndex: 1, detail: { reconnectDelayMs: 50 } });
    expect(timerOf(effects)).toEqual({ type: "set_timer", delayMs: 50, purpose: "failover" });
  });

  it("one failover per drop: when the edge it went to fails too, the usual backoff follows", () => {
    const failedOver = go([connect, token, opened, welcome, abnormal]);
    expect(failedOver).toMatchObject({ name: "waiting_to_reconnect", urlIndex: 1 });
    const { state, effects } = at(go([timer, token], failedOver), {
      type: "socket_closed",
      attemptId: 2,
      code: standardCloseCodes.abnormal,
    });
    expect(state).toMatchObject({ name: "waiting_to_reconnect", urlIndex: 2, failedAttempts: 2 });
    expect(timerOf(effects)).toEqual({ type: "set_timer", delayMs: 200, purpose: "reconnect" });
  });

  it("a session that drops again before it is stable backs off; after a stable one, failover is allowed again", () => {
    const shortSession = go([connect, token, opened, welcome, abnormal, timer, token, opened, welcome]);
    expect(shortSession).toMatchObject({ name: "open", urlIndex: 1, failedAttempts: 1 });
    const drop = { type: "socket_closed", attemptId: shortSession.attemptId, code: standardCloseCodes.abnormal } as const;
    expect(timerOf(at(shortSession, drop).effects)).toEqual({ type: "set_timer", delayMs: 200, purpose: "reconnect" });
    expect(at(shortSession, drop).state.urlIndex).toBe(2);
    const afterStable = at(shortSession, drop, environment.nowMs + options.stableConnectionMs);
    expect(timerOf(afterStable.effects)).toEqual({ type: "set_timer", delayMs: 50, purpose: "failover" });
    expect(afterStable.state).toMatchObject({ urlIndex: 2, failedAttempts: 1 });
  });

  it("with one URL nothing rotates and a drop waits the usual backoff", () => {
    const from = run([connect, token, opened, welcome]);
    const { state, effects } = step(from, { type: "socket_closed", attemptId: 1, code: standardCloseCodes.abnormal });
    expect(state.urlIndex).toBe(0);
    expect(timerOf(effects)).toEqual({ type: "set_timer", delayMs: 100, purpose: "reconnect" });
  });

  it("a 4200-range stop keeps the URL; reconnect_limit moves on; connect() after closed starts at the kept URL", () => {
    const stopped = at(go([connect, token, opened]), {
      type: "socket_closed",
      attemptId: 1,
      code: closeCodes.protocol_violation.code,
    }).state;
    expect(stopped).toMatchObject({ name: "closed", urlIndex: 0 });
    const limited = run([connect, token, abnormal], initialConnectionState, { ...threeUrls, reconnectAttemptsMax: 0 });
    expect(limited).toMatchObject({ name: "closed", closedReason: "reconnect_limit", urlIndex: 1 });
    const again = at(limited, { type: "connect_requested" });
    expect(again.state).toMatchObject({ name: "connecting", urlIndex: 1, failedAttempts: 0 });
    expect(again.effects[0]).toMatchObject({ type: "emit_state", urlIndex: 1 });
  });
});

// ---------------------------------------------------------------------------------------------------
// Properties over random sequences of inputs.

type InputSpec =
  | { readonly kind: "connect_requested" | "close_requested" | "timer_fired" }
  | {
      readonly kind: "token_received" | "token_failed" | "socket_opened" | "welcome_received" | "heartbeat_missed" | "sequence_gap";
      readonly attemptOffset: number;
    }
  | { readonly kind: "socket_closed"; readonly attemptOffset: number; readonly code: number };

const interestingCodes = [1000, 1001, 1006, 1009, 3000, 4000, 4001, 4002, 4099, 4100, 4101, 4102, 4199, 4200, 4201, 4202, 4299, 4500];
// Mostly the current attempt, sometimes a stale or future one.
const attemptOffset = fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.constantFrom(-2, -1, 1) });

const inputSpec: fc.Arbitrary<InputSpec> = fc.oneof(
  fc.constantFrom("connect_requested", "close_requested", "timer_fired").map((kind) => ({ kind })),
  fc
    .record({
      kind: fc.constantFrom("token_received", "token_failed", "socket_opened", "welcome_received", "heartbeat_missed", "sequence_gap"),
      attemptOffset,
    })
    .map((spec) => spec as InputSpec),
  fc.record({ kind: fc.constant("socket_closed" as const), attemptOffset, code: fc.constantFrom(...interestingCodes) }),
);

function toInput(spec: InputSpec, state: ConnectionState): ConnectionInput {
  switch (spec.kind) {
    case "connect_requested":
    case "close_requested":
    case "timer_fired":
      return { type: spec.kind };
    case "socket_closed":
      return { type: "socket_closed", attemptId: state.attemptId + spec.attemptOffset, code: spec.code };
    default:
      return { type: spec.kind, attemptId: state.attemptId + spec.attemptOffset };
  }
}

const scenario = fc.record({
  urlCount: fc.integer({ min: 1, max: 4 }),
  steps: fc.array(fc.record({ spec: inputSpec, elapsedMs: fc.nat({ max: 20_000 }) }), { maxLength: 60 }),
  randomSamples: fc.infiniteStream(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true })),
});

describe("connection machine: properties", () => {
  it("keeps its invariants over any input sequence", () => {
    fc.assert(
      fc.property(scenario, ({ urlCount, steps, randomSamples }) => {
        const samples = randomSamples[Symbol.iterator]();
        const random = () => samples.next().value ?? 0;
        const machineOptions = { ...options, urlCount };
        let state = initialConnectionState;
        let nowMs = 0;
        const socketsOpenedForAttempt = new Set<number>();
        // A failover is allowed once per run of failures: again only after a fresh connect() or a stable session.
        let failoverAllowed = true;
        for (const { spec, elapsedMs } of steps) {
          nowMs += elapsedMs;
          const input = toInput(spec, state);
          const { state: next, effects } = transition(state, input, machineOptions, { nowMs, random });
          const kinds = types(effects);

          // Edge URLs: always a valid index, used by every socket and state event, and moved only round robin
          // when an attempt or session is lost.
          expect(next.urlIndex).toBeGreaterThanOrEqual(0);
          expect(next.urlIndex).toBeLessThan(urlCount);
          if (next.urlIndex !== state.urlIndex) {
            expect(next.urlIndex).toBe(nextUrlIndex(state.urlIndex, urlCount));
            expect(["waiting_to_reconnect", "closed"]).toContain(next.name);
            expect(next.closedReason === null || next.closedReason === "reconnect_limit").toBe(true);
          }
          for (const effect of effects) {
            if (effect.type === "open_socket" || effect.type === "emit_state") expect(effect.urlIndex).toBe(next.urlIndex);
          }
          if ((state.name === "idle" || state.name === "closed") && input.type === "connect_requested") failoverAllowed = true;
          if (state.name === "open" && state.openedAtMs !== null && nowMs - state.openedAtMs >= options.stableConnectionMs)
            failoverAllowed = true;
          const failovers = effects.filter((effect) => effect.type === "set_timer" && effect.purpose === "failover");
          if (failovers.length > 0) {
            expect(failoverAllowed).toBe(true);
            failoverAllowed = false;
            expect(state.name).toBe("open");
            expect(next).toMatchObject({
              name: "waiting_to_reconnect",
              failedAttempts: 1,
              urlIndex: nextUrlIndex(state.urlIndex, urlCount),
            });
            expect(urlCount).toBeGreaterThan(1);
            for (const failover of failovers) {
              if (failover.type === "set_timer")
                expect(failover.delayMs).toBeLessThanOrEqual(options.backoff.initialDelayMs * options.backoff.jitterRatio);
            }
          }

          expect(connectionStateNames).toContain(next.name);
          // One state event exactly when the state changes, first, naming both states.
          const emitted = effects.filter((effect) => effect.type === "emit_state");
          if (next.name === state.name) expect(emitted).toEqual([]);
          else expect(effects[0]).toMatchObject({ type: "emit_state", state: next.name, previousState: state.name });
          expect(emitted.length).toBeLessThanOrEqual(1);

          for (const effect of effects) {
            if (effect.type === "set_timer" && effect.purpose === "reconnect") {
              expect(effect.delayMs).toBeGreaterThanOrEqual(0);
              expect(effect.delayMs).toBeLessThanOrEqual(options.backoff.delayMsMax);
            }
            if (effect.type === "set_timer" && effect.purpose === "connect_deadline") expect(effect.delayMs).toBe(options.connectTimeoutMs);
            if (effect.type === "open_socket") {
              expect(socketsOpenedForAttempt.has(effect.attemptId)).toBe(false);
              socketsOpenedForAttempt.add(effect.attemptId);
              expect(next).toMatchObject({ name: "connecting", socketRequested: true, attemptId: effect.attemptId });
            }
            if (effect.type === "fetch_token") expect(effect.attemptId).toBe(state.attemptId + 1);
          }

          if (next.name === "waiting_to_reconnect" && state.name !== "waiting_to_reconnect") {
            expect(kinds.filter((kind) => kind === "set_timer")).toHaveLength(1);
            expect(next.failedAttempts).toBeLessThanOrEqual(options.reconnectAttemptsMax);
          }
          if (next.name === "closed" && state.name !== "closed") {
            expect(kinds.filter((kind) => kind === "fail_requests")).toHaveLength(1);
            expect(kinds).not.toContain("set_timer");
          }
          if (next.name === "connecting" && state.name !== "connecting") expect(kinds).toContain("fetch_token");
          expect(kinds.includes("start_session")).toBe(next.name === "open" && state.name !== "open");
          expect(kinds.includes("end_session")).toBe(state.name === "open" && next.name !== "open");
          if (input.type === "close_requested") expect(next.name).toBe("closed");
          if (input.type === "socket_closed" && input.code >= 4200 && input.code <= 4299 && kinds.length > 0)
            expect(next.name).toBe("closed");
          if (state.name === "closed" && input.type !== "connect_requested") expect(effects).toEqual([]);
          expect(next.failedAttempts).toBeLessThanOrEqual(options.reconnectAttemptsMax + 1);
          state = next;
        }
      }),
    );
  });

  it("reaches open from any state once the edge behaves, after connect_requested", () => {
    fc.assert(
      fc.property(fc.array(inputSpec, { maxLength: 40 }), (prefix) => {
        let state = prefix.reduce((current, spec) => step(current, toInput(spec, current)).state, initialConnectionState);
        state = step(state, { type: "connect_requested" }).state;
        for (const healthy of [token, opened, welcome]) {
          if (state.name === "open") break;
          if (healthy === opened && state.name !== "connecting") continue;
          if (healthy === token && (state.name !== "connecting" || state.socketRequested)) continue;
          state = step(state, healthy(state)).state;
        }
        expect(state.name).toBe("open");
      }),
    );
  });
});

describe("connection machine: a wave of clients after their edge dies", () => {
  /** xorshift32, one seed per client: the clients of one edge draw independently, as Math.random does on each device. */
  function seededRandom(seed: number): () => number {
    let state = seed >>> 0 || 1;
    return () => {
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      return (state >>> 0) / 2 ** 32;
    };
  }

  /** The delay each of `clients` open sessions (default backoff) waits after the same abnormal close, and its purpose. */
  function waveDelays(clients: number, urlCount: number): { delayMs: number; purpose: string }[] {
    const waveOptions: ConnectionMachineOptions = { ...options, backoff: defaultBackoffOptions, reconnectAttemptsMax: 100, urlCount };
    return Array.from({ length: clients }, (_, client) => {
      const random = seededRandom(client * 7919 + 1);
      const stepOf = (state: ConnectionState, input: ConnectionInput) => transition(state, input, waveOptions, { nowMs: 0, random });
      let state = initialConnectionState;
      for (const input of [connect, token, opened, welcome]) state = stepOf(state, input(state)).state;
      const lost = stepOf(state, { type: "socket_closed", attemptId: state.attemptId, code: standardCloseCodes.abnormal });
      const timerEffect = lost.effects.find((effect) => effect.type === "set_timer");
      if (timerEffect?.type !== "set_timer") throw new Error("no reconnect timer");
      return { delayMs: timerEffect.delayMs, purpose: timerEffect.purpose };
    });
  }

  /** Clients per `bucketMs` of [fromMs, toMs]: evenly spread when no bucket holds much more than its share. */
  function buckets(delaysMs: readonly number[], fromMs: number, toMs: number, bucketMs: number): number[] {
    const counts = new Array<number>(Math.ceil((toMs - fromMs + 1) / bucketMs)).fill(0);
    for (const delayMs of delaysMs) {
      const index = Math.min(counts.length - 1, Math.floor((delayMs - fromMs) / bucketMs));
      counts[index] = (counts[index] ?? 0) + 1;
    }
    return counts;
  }

  it.each([
    // Several edge URLs: the failover, [0, initialDelayMs × jitterRatio] = [0, 250] ms.
    ["fails over (two edge URLs)", 2, "failover", 0, 250],
    // One URL (a balancer): the first backoff, [initialDelayMs × (1 − jitterRatio), initialDelayMs] = [250, 500] ms.
    ["backs off (one URL)", 1, "reconnect", 250, 500],
  ])(
    "6,000 clients whose sessions drop together %s spread over the window, not in one millisecond",
    (_name, urlCount, purpose, fromMs, toMs) => {
      const wave = waveDelays(6000, urlCount);
      expect(new Set(wave.map((entry) => entry.purpose))).toEqual(new Set([purpose]));
      const delaysMs = wave.map((entry) => entry.delayMs);
      expect(Math.min(...delaysMs)).toBeGreaterThanOrEqual(fromMs);
      expect(Math.max(...delaysMs)).toBeLessThanOrEqual(toMs);
      // Every millisecond of the window is used, and none by more than about twice its share (24 a ms).
      const perMs = buckets(delaysMs, fromMs, toMs, 1);
      expect(perMs.filter((count) => count > 0).length).toBeGreaterThanOrEqual(toMs - fromMs);
      expect(Math.max(...perMs)).toBeLessThanOrEqual(2 * (6000 / (toMs - fromMs + 1)));
      // Each 50 ms of the window takes its fifth of the wave, within 10%.
      for (const count of buckets(delaysMs, fromMs, toMs - 1, 50)) expect(Math.abs(count - 1200)).toBeLessThanOrEqual(120);
    },
  );
});
