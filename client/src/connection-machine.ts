// The client's connection as a pure state machine: (state, input) → (next state, effects). It does no
// I/O and reads no clock: the time and the random source arrive in `environment`, and the shell
// (cellwire-client.ts) performs the effects. client/BEHAVIOUR.md documents every transition; the tests
// follow that document.
import { closeAdvice, standardCloseCodes, type CloseAdvice } from "@cellwire/protocol";
import { backoffDelayMs, failoverDelayMs, type BackoffOptions, type RandomSource } from "./backoff.ts";

export type ConnectionStateName = "idle" | "connecting" | "authenticating" | "open" | "waiting_to_reconnect" | "closed";

export const connectionStateNames: readonly ConnectionStateName[] = [
  "idle",
  "connecting",
  "authenticating",
  "open",
  "waiting_to_reconnect",
  "closed",
];

/** Why the machine reached `closed`. */
export type ClosedReason = "close_requested" | "stopped_by_server" | "reconnect_limit";

/**
 * Why a token is asked for: "refresh" follows a close in the 4100 range, or comes before the session's
 * token expires (a refresh on the open socket), so a cached token must not be reused.
 */
export type TokenReason = "connect" | "reconnect" | "refresh";

export type ConnectionState = {
  readonly name: ConnectionStateName;
  /** The current (or last) connection attempt, 0 before the first; inputs of other attempts are stale. */
  readonly attemptId: number;
  /** In `connecting`: the token has arrived and the socket is opening. */
  readonly socketRequested: boolean;
  /** Consecutive failed attempts since the last stable session; drives the backoff and its limit. */
  readonly failedAttempts: number;
  /** The last close asked for fresh credentials: the next attempt fetches its token with reason "refresh". */
  readonly tokenRefreshRequired: boolean;
  /** When the current session reached `open` (welcome received). */
  readonly openedAtMs: number | null;
  readonly closedReason: ClosedReason | null;
  /**
   * Index into the edge URLs of the current attempt or session; while waiting, of the next attempt. It
   * survives close() and connect(), so a client that was moved off a dead edge does not go back to it first.
   */
  readonly urlIndex: number;
};

export const initialConnectionState: ConnectionState = {
  name: "idle",
  attemptId: 0,
  socketRequested: false,
  failedAttempts: 0,
  tokenRefreshRequired: false,
  openedAtMs: null,
  closedReason: null,
  urlIndex: 0,
};

export type ConnectionInput =
  | { readonly type: "connect_requested" }
  | { readonly type: "token_received"; readonly attemptId: number }
  | { readonly type: "token_failed"; readonly attemptId: number }
  | { readonly type: "socket_opened"; readonly attemptId: number }
  | { readonly type: "welcome_received"; readonly attemptId: number }
  | { readonly type: "socket_closed"; readonly attemptId: number; readonly code: number }
  | { readonly type: "heartbeat_missed"; readonly attemptId: number }
  /**
   * The edge skipped a seq on this session: an event frame skipped mailbox seqs, or a message frame seqs of
   * its conversation. A fresh session resumes from what the device holds.
   */
  | { readonly type: "sequence_gap"; readonly attemptId: number }
  | { readonly type: "timer_fired" }
  | { readonly type: "close_requested" };

export type StateChangeDetail = {
  /** The WebSocket close code that caused the change, when a close did. */
  readonly closeCode: number | null;
  /** Set when entering `waiting_to_reconnect`. */
  readonly reconnectDelayMs: number | null;
  /** Set when entering `closed`. */
  readonly closedReason: ClosedReason | null;
};

export type ConnectionEffect =
  | {
      readonly type: "emit_state";
      readonly state: ConnectionStateName;
      readonly previousState: ConnectionStateName;
      readonly detail: StateChangeDetail;
      /** The URL index of the new state (see ConnectionState.urlIndex). */
      readonly urlIndex: number;
    }
  /** Call the token provider; report token_received or token_failed with this attemptId. */
  | { readonly type: "fetch_token"; readonly attemptId: number; readonly reason: TokenReason }
  /** Open a socket to the edge URL at urlIndex with the fetched token; report its open and close with this attemptId. */
  | { readonly type: "open_socket"; readonly attemptId: number; readonly urlIndex: number }
  | { readonly type: "send_hello"; readonly attemptId: number }
  /** Close the current socket, if any, and stop listening to it: its later events are not reported. */
  | { readonly type: "close_socket"; readonly code: number }
  /**
   * Replaces the machine's single timer; report timer_fired when it expires. "failover" is a reconnect
   * that skips the backoff once, to another edge URL, after an established session dropped.
   */
  | { readonly type: "set_timer"; readonly delayMs: number; readonly purpose: "connect_deadline" | "reconnect" | "failover" }
  | { readonly type: "clear_timer" }
  /** The session is open: resolve connect(), flush queued requests, start the heartbeat. */
  | { readonly type: "start_session"; readonly attemptId: number }
  /** The session is gone: stop the heartbeat; requests in flight are re-queued or rejected (BEHAVIOUR.md). */
  | { readonly type: "end_session"; readonly closeCode: number | null }
  /** Reject every pending request and connect() call: the client will not reconnect by itself. */
  | { readonly type: "fail_requests"; readonly reason: ClosedReason; readonly closeCode: number | null };

export type ConnectionMachineOptions = {
  readonly backoff: BackoffOptions;
  /** Deadline for one attempt, from asking for the token to receiving welcome. */
  readonly connectTimeoutMs: number;
  /** A session open at least this long resets the failed-attempt count when it ends. */
  readonly stableConnectionMs: number;
  /** Consecutive failed attempts after which the machine gives up (state closed, reason reconnect_limit). */
  readonly reconnectAttemptsMax: number;
  /** How many edge URLs the client rotates through (at least 1); the shell maps an index to its URL. */
  readonly urlCount: number;
};

export type ConnectionEnvironment = { readonly nowMs: number; readonly random: RandomSource };

export type Transition = { readonly state: ConnectionState; readonly effects: readonly ConnectionEffect[] };

const noChange = (state: ConnectionState): Transition => ({ state, effects: [] });

export function transition(
  state: ConnectionState,
  input: ConnectionInput,
  options: ConnectionMachineOptions,
  environment: ConnectionEnvironment,
): Transition {
  const current = "attemptId" in input && input.attemptId === state.attemptId;
  switch (input.type) {
    case "connect_requested":
      if (state.name === "idle" || state.name === "closed") {
        return startAttempt({ ...state, failedAttempts: 0, tokenRefreshRequired: false }, "connect", options);
      }
      // A caller that knows the network is back (browser "online") need not wait for the timer.
      if (state.name === "waiting_to_reconnect") return startAttempt(state, nextTokenReason(state), options);
      return noChange(state);

    case "close_requested":
      return closeRequested(state);

    case "token_received":
      if (state.name !== "connecting" || state.socketRequested || !current) return noChange(state);
      return {
        state: { ...state, socketRequested: true },
        effects: [{ type: "open_socket", attemptId: state.attemptId, urlIndex: state.urlIndex }],
      };

    case "token_failed":
      if (state.name !== "connecting" || state.socketRequested || !current) return noChange(state);
      return connectionLost(state, null, "reconnect", [], options, environment);

    case "socket_opened":
      if (state.name !== "connecting" || !state.socketRequested || !current) return noChange(state);
      return enter(state, { ...state, name: "authenticating" }, noDetail, [{ type: "send_hello", attemptId: state.attemptId }]);

    case "welcome_received":
      if (state.name !== "authenticating" || !current) return noChange(state);
      return enter(state, { ...state, name: "open", openedAtMs: environment.nowMs }, noDetail, [
        { type: "clear_timer" },
        { type: "start_session", attemptId: state.attemptId },
      ]);

    case "socket_closed":
      if (!current || !hasSocket(state)) return noChange(state);
      return connectionLost(state, input.code, closeAdvice(input.code), [], options, environment);

    case "heartbeat_missed":
    case "sequence_gap":
      if (state.name !== "open" || !current) return noChange(state);
      return connectionLost(state, null, "reconnect", [{ type: "close_socket", code: standardCloseCodes.normal }], options, environment);

    case "timer_fired":
      if (state.name === "waiting_to_reconnect") return startAttempt(state, nextTokenReason(state), options);
      if (state.name === "connecting" || state.name === "authenticating") {
        // The attempt's deadline passed: a silent server is treated like a dropped connection.
        return connectionLost(state, null, "reconnect", [{ type: "close_socket", code: standardCloseCodes.normal }], options, environment);
      }
      return noChange(state);
  }
}

const noDetail: StateChangeDetail = { closeCode: null, reconnectDelayMs: null, closedReason: null };

/** Whether the machine is waiting on a socket (so a close of it matters). */
function hasSocket(state: ConnectionState): boolean {
  return (state.name === "connecting" && state.socketRequested) || state.name === "authenticating" || state.name === "open";
}

function nextTokenReason(state: ConnectionState): TokenReason {
  return state.tokenRefreshRequired ? "refresh" : "reconnect";
}

/** The transition into `next`; emit_state comes first so listeners hear of a state before its effects run. */
function enter(
  previous: ConnectionState,
  next: ConnectionState,
  detail: StateChangeDetail,
  effects: readonly ConnectionEffect[],
): Transition {
  const emitted: ConnectionEffect[] =
    previous.name === next.name
      ? []
      : [{ type: "emit_state", state: next.name, previousState: previous.name, detail, urlIndex: next.urlIndex }];
  return { state: next, effects: [...emitted, ...effects] };
}

function startAttempt(state: ConnectionState, reason: TokenReason, options: ConnectionMachineOptions): Transition {
  const attemptId = state.attemptId + 1;
  const next: ConnectionState = {
    ...state,
    name: "connecting",
    attemptId,
    socketRequested: false,
    tokenRefreshRequired: false,
    openedAtMs: null,
    closedReason: null,
  };
  return enter(state, next, noDetail, [
    { type: "set_timer", delayMs: options.connectTimeoutMs, purpose: "connect_deadline" },
    { type: "fetch_token", attemptId, reason },
  ]);
}

function closeRequested(state: ConnectionState): Transition {
  if (state.name === "closed") return noChange(state);
  const effects: ConnectionEffect[] = [];
  if (state.name === "connecting" || state.name === "authenticating" || state.name === "waiting_to_reconnect") {
    effects.push({ type: "clear_timer" });
  }
  if (state.name === "connecting" || state.name === "authenticating" || state.name === "open") {
    effects.push({ type: "close_socket", code: standardCloseCodes.normal });
  }
  if (state.name === "open") effects.push({ type: "end_session", closeCode: null });
  effects.push({ type: "fail_requests", reason: "close_requested", closeCode: null });
  const next: ConnectionState = { ...state, name: "closed", socketRequested: false, openedAtMs: null, closedReason: "close_requested" };
  return enter(state, next, { ...noDetail, closedReason: "close_requested" }, effects);
}

/**
 * The current attempt or session ended (closed by the server, dropped, timed out, or no token): stop on a
 * 4200-range close, give up past reconnectAttemptsMax, otherwise wait a jittered backoff delay. When the
 * edge at the current URL is at fault the next attempt goes to the next URL; the first reconnect after an
 * established session dropped goes there at once (a failover delay instead of the backoff).
 */
function connectionLost(
  state: ConnectionState,
  closeCode: number | null,
  advice: CloseAdvice,
  leadingEffects: readonly ConnectionEffect[],
  options: ConnectionMachineOptions,
  environment: ConnectionEnvironment,
): Transition {
  const effects: ConnectionEffect[] = [...leadingEffects];
  if (state.name === "connecting" || state.name === "authenticating") effects.push({ type: "clear_timer" });
  if (state.name === "open") effects.push({ type: "end_session", closeCode });

  const base: ConnectionState = { ...state, socketRequested: false, openedAtMs: null };
  if (advice === "stop") return closeWith(state, base, "stopped_by_server", closeCode, effects);

  const stable = state.name === "open" && state.openedAtMs !== null && environment.nowMs - state.openedAtMs >= options.stableConnectionMs;
  const failedAttempts = (stable ? 0 : state.failedAttempts) + 1;
  const urlIndex = edgeAtFault(state, closeCode, advice) ? nextUrlIndex(state.urlIndex, options.urlCount) : state.urlIndex;
  if (failedAttempts > options.reconnectAttemptsMax) {
    return closeWith(state, { ...base, failedAttempts, urlIndex }, "reconnect_limit", closeCode, effects);
  }
  // Another edge is likely up, so waiting a backoff first only delays the user. Bounded to one per drop
  // and per run of failures: a session that drops again before it is stable backs off as usual.
  const failover = state.name === "open" && failedAttempts === 1 && urlIndex !== state.urlIndex;
  const delayMs = failover
    ? failoverDelayMs(options.backoff, environment.random)
    : backoffDelayMs(failedAttempts - 1, options.backoff, environment.random);
  const next: ConnectionState = {
    ...base,
    name: "waiting_to_reconnect",
    failedAttempts,
    tokenRefreshRequired: advice === "refresh_token",
    urlIndex,
  };
  effects.push({ type: "set_timer", delayMs, purpose: failover ? "failover" : "reconnect" });
  return enter(state, next, { closeCode, reconnectDelayMs: delayMs, closedReason: null }, effects);
}

function closeWith(
  previous: ConnectionState,
  base: ConnectionState,
  reason: ClosedReason,
  closeCode: number | null,
  effects: ConnectionEffect[],
): Transition {
  effects.push({ type: "fail_requests", reason, closeCode });
  return enter(
    previous,
    { ...base, name: "closed", closedReason: reason },
    { closeCode, reconnectDelayMs: null, closedReason: reason },
    effects,
  );
}

/** The URL after `urlIndex`, round robin. */
export function nextUrlIndex(urlIndex: number, urlCount: number): number {
  return urlCount <= 1 ? 0 : (urlIndex + 1) % urlCount;
}

/**
 * Whether the edge behind the current URL failed the client: a socket to it failed to open, went silent,
 * skipped a seq (a mailbox or conversation gap) or dropped. Not when no socket was opened (the token
 * provider failed or was slow), nor when the edge closed deliberately for a reason of the client's own: a
 * 4100-range close (the credentials) or 1009 (the client's frame was too big). Those reconnect to the
 * same URL.
 */
function edgeAtFault(state: ConnectionState, closeCode: number | null, advice: CloseAdvice): boolean {
  if (!hasSocket(state)) return false;
  return advice !== "refresh_token" && closeCode !== standardCloseCodes.messageTooBig;
}
