// Two browser pages (Debian's chromium through playwright-core) chat through two different edges, using
// the dev web page built on the SDK: what a newcomer does first with `npm start`.
import { afterAll, beforeAll, expect, it } from "vitest";
import { chromium, type Browser, type Page } from "playwright-core";
import { buildWebPage } from "@cellwire/web";
import { startTestTopology, type TestTopology } from "./test-topology.ts";

let test: TestTopology;
let browser: Browser;

beforeAll(async () => {
  const webDirectory = await buildWebPage();
  test = await startTestTopology({ label: "web", webDirectory });
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

afterAll(async () => {
  await browser?.close();
  await test?.destroy();
});

async function openChat(edgeIndex: number, userId: string, peerId: string): Promise<Page> {
  const edge = test.topology.edges[edgeIndex];
  if (edge === undefined) throw new Error(`no edge ${edgeIndex}`);
  const page = await browser.newPage();
  page.on("pageerror", (error) => {
    throw error;
  });
  await page.goto(edge.httpUrl);
  await page.fill("#user-id", userId);
  await page.fill("#peer-id", peerId);
  await page.click("#connect");
  await page.locator("#status", { hasText: "connected" }).waitFor({ timeout: 15_000 });
  return page;
}

it("lets two browser pages on two edges exchange messages", async () => {
  const alice = await openChat(0, "alice", "bob");
  const bob = await openChat(1, "bob", "alice");

  await alice.fill("#message-input", "hello from the browser");
  await alice.press("#message-input", "Enter");
  await bob.locator("#messages li", { hasText: "alice: hello from the browser" }).waitFor({ timeout: 10_000 });

  await bob.fill("#message-input", "hello back");
  await bob.click("#send");
  await alice.locator("#messages li", { hasText: "bob: hello back" }).waitFor({ timeout: 10_000 });

  // Both pages show the same conversation in the same order, each message once.
  const linesAt = (page: Page): Promise<string[]> => page.locator("#messages li").allTextContents();
  const [atAlice, atBob] = await Promise.all([linesAt(alice), linesAt(bob)]);
  expect(atAlice).toEqual(atBob);
  expect(atAlice.filter((line) => line.includes("hello from the browser"))).toHaveLength(1);
  const seqs = await alice.locator("#messages li").evaluateAll((items) => items.map((item) => Number(item.getAttribute("data-seq"))));
  expect(seqs).toEqual([1, 2]);
});
