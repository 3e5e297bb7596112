// The dev web page: one direct conversation between the user and a peer, over the SDK, and the
// conversations the user joins while it is open. Served by an edge in dev mode, which also signs tokens at
// /dev/token. Plain DOM, no framework.
import { CellwireClient, CellwireClientError, isUserId, type Joined, type Message } from "@cellwire/client";
import { statusText } from "./connection-status.ts";
import { ConversationList, formatConversationLine } from "./conversation-list.ts";
import { MessageList, formatMessageLine } from "./message-list.ts";
import { createDeviceId, parseTokenResponse, startParametersFrom, tokenPathFor, webSocketUrlFor } from "./page-urls.ts";

/** The newest messages loaded when the conversation opens, and again after a resync. */
const historyPageLimit = 50;
const deviceIdStorageKey = "cellwire.deviceId";

function element<T extends HTMLElement>(id: string, type: new () => T): T {
  const found = document.getElementById(id);
  if (!(found instanceof type)) throw new Error(`the page lacks #${id}`);
  return found;
}

const elements = {
  connectForm: element("connect-form", HTMLFormElement),
  userId: element("user-id", HTMLInputElement),
  peerId: element("peer-id", HTMLInputElement),
  connect: element("connect", HTMLButtonElement),
  status: element("status", HTMLElement),
  problem: element("problem", HTMLElement),
  conversations: element("conversations", HTMLUListElement),
  sendForm: element("send-form", HTMLFormElement),
  messageInput: element("message-input", HTMLInputElement),
  send: element("send", HTMLButtonElement),
  messages: element("messages", HTMLUListElement),
};

type Session = {
  readonly client: CellwireClient;
  readonly userId: string;
  readonly deviceId: string;
  conversationId: string | null;
  readonly list: MessageList;
  readonly conversations: ConversationList;
};

let session: Session | null = null;

function tabDeviceId(): string {
  try {
    const stored = sessionStorage.getItem(deviceIdStorageKey);
    if (stored !== null) return stored;
    const created = createDeviceId((array) => crypto.getRandomValues(array));
    sessionStorage.setItem(deviceIdStorageKey, created);
    return created;
  } catch {
    // Storage can be disabled; a fresh id per load is fine for a dev page.
    return createDeviceId((array) => crypto.getRandomValues(array));
  }
}

async function fetchToken(userId: string, deviceId: string): Promise<string> {
  const response = await fetch(tokenPathFor(userId, deviceId), { cache: "no-store" });
  if (!response.ok) throw new Error(`GET /dev/token answered ${response.status}`);
  return parseTokenResponse(await response.json());
}

function showProblem(text: string | null): void {
  elements.problem.textContent = text ?? "";
  elements.problem.hidden = text === null;
}

function describe(error: unknown): string {
  if (error instanceof CellwireClientError) return `${error.code}: ${error.message}`;
  return error instanceof Error ? error.message : String(error);
}

function render(current: Session): void {
  // A replaced session's client may still report its own closing.
  if (session !== current) return;
  const ready = current.conversationId !== null;
  elements.status.textContent = statusText(current.client.state, ready);
  elements.status.dataset["state"] = current.client.state;
  elements.messageInput.disabled = !ready;
  elements.send.disabled = !ready;
}

function show(current: Session, message: Message): void {
  if (session !== current || message.conversationId !== current.conversationId) return;
  const insertion = current.list.insert(message.seq);
  if (insertion === null) return;
  const item = document.createElement("li");
  item.dataset["seq"] = String(message.seq);
  item.dataset["sender"] = message.senderUserId;
  if (message.senderUserId === current.userId) item.classList.add("own");
  item.textContent = formatMessageLine(message);
  const atBottom = elements.messages.scrollTop + elements.messages.clientHeight >= elements.messages.scrollHeight - 8;
  elements.messages.insertBefore(item, elements.messages.children[insertion.index] ?? null);
  for (let evicted = 0; evicted < insertion.evictedCount; evicted++) elements.messages.firstElementChild?.remove();
  if (atBottom) elements.messages.scrollTop = elements.messages.scrollHeight;
}

/** Lists a conversation the user joined (from a "joined" event), newest at the top. */
function showConversation(current: Session, joined: Joined): void {
  if (session !== current) return;
  const added = current.conversations.add(joined.conversationId);
  if (added === null) return;
  const item = document.createElement("li");
  item.dataset["conversationId"] = joined.conversationId;
  item.classList.toggle("current", joined.conversationId === current.conversationId);
  item.textContent = formatConversationLine(joined, current.userId);
  elements.conversations.prepend(item);
  for (let evicted = 0; evicted < added.evictedCount; evicted++) elements.conversations.lastElementChild?.remove();
  elements.conversations.hidden = false;
}

/** Marks the open conversation in the list (its joined event may come before or after openDirect's reply). */
function markCurrentConversation(current: Session): void {
  for (const item of elements.conversations.children) {
    if (item instanceof HTMLElement) item.classList.toggle("current", item.dataset["conversationId"] === current.conversationId);
  }
}

/** Starts the list over from the newest history page: what was shown may have holes the edge cannot fill. */
function reloadConversation(current: Session): void {
  if (session !== current || current.conversationId === null) return;
  current.list.clear();
  elements.messages.replaceChildren();
  loadHistory(current).catch((error: unknown) => showProblem(describe(error)));
}

async function loadHistory(current: Session): Promise<void> {
  if (current.conversationId === null) return;
  const page = await current.client.history(current.conversationId, { limit: historyPageLimit });
  for (const message of page.messages) show(current, message);
}

async function connect(userId: string, peerUserId: string): Promise<void> {
  session?.client.close();
  elements.messages.replaceChildren();
  elements.conversations.replaceChildren();
  elements.conversations.hidden = true;
  showProblem(null);
  const deviceId = tabDeviceId();
  const client = new CellwireClient({
    url: webSocketUrlFor(window.location),
    deviceId,
    tokenProvider: () => fetchToken(userId, deviceId),
  });
  const current: Session = {
    client,
    userId,
    deviceId,
    conversationId: null,
    list: new MessageList(),
    conversations: new ConversationList(),
  };
  session = current;
  client.on("state", () => render(current));
  // Messages of every conversation arrive here; show() keeps those of the open one.
  client.on("message", (message) => show(current, message));
  client.on("joined", (joined) => showConversation(current, joined));
  client.on("error", (error) => {
    if (session === current) showProblem(describe(error));
  });
  // A reconnect resumes each conversation after the last message the client holds (and the mailbox after
  // its last event), so missed messages arrive as "message" events; only a resync (mailbox events were cut
  // by retention) needs the history reloaded.
  client.on("resync", () => reloadConversation(current));
  render(current);
  try {
    await client.connect();
    const conversation = await client.openDirect(peerUserId);
    if (session !== current) return;
    current.conversationId = conversation.conversationId;
    markCurrentConversation(current);
    await loadHistory(current);
    render(current);
    elements.messageInput.focus();
  } catch (error) {
    if (session === current) showProblem(describe(error));
  }
}

async function sendMessage(): Promise<void> {
  const current = session;
  const body = elements.messageInput.value.trim();
  if (current === null || current.conversationId === null || body === "") return;
  elements.messageInput.value = "";
  try {
    const ack = await current.client.send(current.conversationId, body);
    // The sender's own message frame may come before or after the ack; the list ignores the second.
    show(current, {
      conversationId: ack.conversationId,
      messageId: ack.messageId,
      seq: ack.seq,
      senderUserId: current.userId,
      senderDeviceId: current.deviceId,
      clientMessageId: ack.clientMessageId,
      body,
      sentAtMs: ack.sentAtMs,
    });
  } catch (error) {
    showProblem(describe(error));
    if (elements.messageInput.value === "") elements.messageInput.value = body;
  }
}

function start(userId: string, peerUserId: string): void {
  if (!isUserId(userId) || !isUserId(peerUserId)) {
    showProblem("user ids are 1 to 64 letters, digits, '_' or '-'");
    return;
  }
  if (userId === peerUserId) {
    showProblem("pick a peer other than yourself");
    return;
  }
  void connect(userId, peerUserId);
}

elements.connectForm.addEventListener("submit", (event) => {
  event.preventDefault();
  start(elements.userId.value.trim(), elements.peerId.value.trim());
});

// A form submit covers both the #send button and Enter in #message-input.
elements.sendForm.addEventListener("submit", (event) => {
  event.preventDefault();
  void sendMessage();
});

const parameters = startParametersFrom(window.location.search);
if (parameters !== null) {
  elements.userId.value = parameters.userId;
  elements.peerId.value = parameters.peerUserId;
  start(parameters.userId, parameters.peerUserId);
}
