// The text of #status. "connected" means the page can send: the socket is open AND the conversation is
// loaded, so a user (or a test) that waits for it can type at once.
import type { ConnectionStateName } from "@cellwire/client";

export function statusText(state: ConnectionStateName, conversationReady: boolean): string {
  switch (state) {
    case "idle":
      return "disconnected";
    case "connecting":
    case "authenticating":
      return "connecting";
    case "open":
      return conversationReady ? "connected" : "loading";
    case "waiting_to_reconnect":
      return "reconnecting";
    case "closed":
      return "disconnected";
  }
}
