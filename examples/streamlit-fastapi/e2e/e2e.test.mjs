// End-to-end checks of the Streamlit + FastAPI example through the gateway.
// run.sh starts the three servers and passes their ports in E2E_*; run it, not this
// file, unless those servers are already up.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import http from "node:http";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: start this test with run.sh`);
  return value;
};
const GATEWAY_PORT = Number(env("E2E_GATEWAY_PORT"));
const API_PORT = Number(env("E2E_API_PORT"));
const PUBLIC_HOST = env("E2E_PUBLIC_HOST");
const PROFILE = env("E2E_PROFILE");
const OUT = env("E2E_OUT");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

const PUBLIC_URL = `http://${PUBLIC_HOST}:${GATEWAY_PORT}/`;
const GATEWAY_HOST = `127.0.0.1:${GATEWAY_PORT}`;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

// One HTTP/1.1 request to the gateway from a chosen loopback address (127.0.0.2 is
// not in the test config's trust.proxies; 127.0.0.1 is).
function request(path, { from = "127.0.0.1", headers = {} } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: "127.0.0.1", port: GATEWAY_PORT, path, headers, localAddress: from, agent: false },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk) => (body += chunk));
        res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body }));
      },
    );
    req.setTimeout(10_000, () => req.destroy(new Error(`no answer to ${path} in 10 s`)));
    req.on("error", reject);
    req.end();
  });
}

// What FastAPI's /api/echo saw: its path, query and headers (name -> all values).
async function echo(path, options) {
  const res = await request(path, options);
  assert.equal(res.status, 200, `GET ${path}: ${res.status} ${res.body}`);
  const seen = JSON.parse(res.body);
  const headers = new Map();
  for (const [name, value] of seen.headers) {
    headers.set(name, [...(headers.get(name) ?? []), value]);
  }
  return { res, seen, headers, one: (name) => headers.get(name)?.join(" | ") };
}

let context;
before(async () => {
  context = await chromium.launchPersistentContext(PROFILE, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    viewport: { width: 1100, height: 900 },
  });
});
after(async () => {
  await context?.close();
});

test("the Streamlit page renders through the gateway and a click shows FastAPI's answer", { timeout: 120_000 }, async () => {
  const page = context.pages()[0] ?? (await context.newPage());
  const sockets = [];
  page.on("websocket", (ws) => {
    const socket = { url: ws.url(), framesReceived: 0, closed: false };
    sockets.push(socket);
    ws.on("framereceived", () => (socket.framesReceived += 1));
    ws.on("close", () => (socket.closed = true));
  });

  const response = await page.goto(PUBLIC_URL, { waitUntil: "domcontentloaded" });
  assert.equal(response.status(), 200);
  assert.match(response.headers()["x-request-id"] ?? "", UUID, "the gateway echoes a request id");
  await page.locator('[data-testid="stApp"]').waitFor({ timeout: 30_000 });

  // The title is sent by the running script over /_stcore/stream: it only appears
  // when the WebSocket works end to end through the gateway.
  try {
    await page.getByRole("heading", { name: "Streamlit + FastAPI behind FluxLit" }).waitFor({ timeout: 30_000 });
  } catch (error) {
    await page.screenshot({ path: join(OUT, "streamlit-page-failed.png"), fullPage: true });
    const frames = sockets.reduce((sum, s) => sum + s.framesReceived, 0);
    const closed = sockets.filter((s) => s.closed).length;
    throw new Error(
      `the page did not render its content: the browser opened ${sockets.length} WebSocket(s) ` +
        `(${[...new Set(sockets.map((s) => s.url))].join(", ") || "none"}), ${closed} closed, ` +
        `${frames} frame(s) received. ` +
        "See ui.log and gateway.log, and streamlit-page-failed.png.",
      { cause: error },
    );
  }
  // The latest one: Streamlit reconnects after a dropped socket.
  const stream = sockets.findLast((s) => new URL(s.url).pathname === "/_stcore/stream");
  assert.ok(stream, `a /_stcore/stream WebSocket was opened (saw: ${sockets.map((s) => s.url).join(", ") || "none"})`);
  assert.equal(new URL(stream.url).host, `${PUBLIC_HOST}:${GATEWAY_PORT}`, "the WebSocket goes through the gateway");
  assert.ok(stream.framesReceived > 0, "the WebSocket received frames");
  assert.equal(stream.closed, false, "the WebSocket is still open");

  // Streamlit calls FastAPI server-side; the name makes the answer unguessable.
  const name = `e2e-${randomBytes(4).toString("hex")}`;
  await page.getByLabel("Your name").fill(name);
  await page.getByRole("button", { name: "Call the API" }).click();
  await page.getByText(`Hello, ${name}!`, { exact: true }).waitFor({ timeout: 30_000 });
  await page.getByText("Answered by FastAPI at /api/hello").waitFor({ timeout: 10_000 });

  const shot = join(OUT, "streamlit-page.png");
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`screenshot: ${shot}`);
});

test("non-API paths reach Streamlit", async () => {
  const res = await request("/_stcore/health");
  assert.equal(res.status, 200);
  assert.equal(res.body.trim(), "ok");
});

test("/api/... reaches FastAPI with its path intact and the forwarded headers", async () => {
  // Percent-encoding passes as sent (an encoded "/" or backslash would be refused with
  // 400: upstreams disagree on what it means).
  const path = "/api/echo/a%20b/c%2Bd/%C3%A9?x=1&y=two%20words";
  const { res, seen, headers, one } = await echo(path, {
    headers: { "x-not-forwarded": "1", accept: "application/json" },
  });
  assert.equal(seen.raw_path, "/api/echo/a%20b/c%2Bd/%C3%A9", "the path, prefix and encoding included");
  assert.equal(seen.query, "x=1&y=two%20words");
  assert.equal(one("host"), `127.0.0.1:${API_PORT}`, "Host is the upstream's");
  assert.equal(one("x-forwarded-for"), "127.0.0.1");
  assert.equal(one("x-forwarded-proto"), "http");
  assert.equal(one("x-forwarded-host"), GATEWAY_HOST, "X-Forwarded-Host is the client's Host");
  assert.equal(headers.has("x-forwarded-prefix"), false, "no prefix: public_base_url has path /");
  assert.match(one("x-request-id") ?? "", UUID);
  assert.equal(res.headers["x-request-id"], one("x-request-id"), "the response echoes the id FastAPI saw");
  assert.equal(one("accept"), "application/json", "standard headers pass");
  assert.equal(headers.has("x-not-forwarded"), false, "other client headers do not");
});

test("a trusted proxy (127.0.0.1) extends X-Forwarded-For and keeps its request id", async () => {
  const { one } = await echo("/api/echo/trusted", {
    headers: { "x-forwarded-for": "203.0.113.7", "x-request-id": "lb-1234" },
  });
  assert.equal(one("x-forwarded-for"), "203.0.113.7, 127.0.0.1");
  assert.equal(one("x-request-id"), "lb-1234");
});

test("a spoofed X-Forwarded-For from an untrusted address does not reach FastAPI", async () => {
  const spoofed = {
    "x-forwarded-for": "6.6.6.6",
    "x-forwarded-host": "evil.example",
    "x-forwarded-proto": "https",
    forwarded: "for=6.6.6.6;proto=https",
    "x-request-id": "spoofed-id",
    "x-remote-user": "admin",
  };
  const { res, seen, headers, one } = await echo("/api/echo/untrusted", { from: "127.0.0.2", headers: spoofed });
  assert.equal(one("x-forwarded-for"), "127.0.0.2", "the real peer, and only it");
  assert.equal(one("x-forwarded-host"), GATEWAY_HOST);
  assert.equal(one("x-forwarded-proto"), "http");
  assert.equal(headers.has("forwarded"), false);
  assert.equal(headers.has("x-remote-user"), false);
  assert.match(one("x-request-id") ?? "", UUID);
  assert.notEqual(res.headers["x-request-id"], "spoofed-id");
  const everything = JSON.stringify(seen.headers);
  for (const value of ["6.6.6.6", "evil.example", "spoofed-id", "admin"]) {
    assert.equal(everything.includes(value), false, `${value} reached FastAPI: ${everything}`);
  }
});
