// End-to-end checks of the Streamlit + FastAPI example through the gateway.
// run.sh starts the servers (the demo OpenID provider, FastAPI, Streamlit, fluxlit) and
// passes their ports in E2E_*; run it, not this file, unless those servers are up.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { appendFileSync, readFileSync } from "node:fs";
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
const IDP_PORT = Number(env("E2E_IDP_PORT"));
const ADMIN_PORT = Number(env("E2E_ADMIN_PORT"));
// The one user of the demo identity provider, fresh for this run.
const IDP_SUB = env("E2E_IDP_SUB");
const IDP_NAME = "E2E User";
const PUBLIC_HOST = env("E2E_PUBLIC_HOST");
const PROFILE = env("E2E_PROFILE");
const OUT = env("E2E_OUT");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
// The gateway's exchange_secret, which the app's server sends (one trailing newline
// ignored, as the gateway does).
const EXCHANGE_SECRET = readFileSync(env("E2E_EXCHANGE_SECRET_FILE"), "utf8").replace(/\r?\n$/, "");

const PUBLIC_BASE = `http://${PUBLIC_HOST}:${GATEWAY_PORT}`;
const PUBLIC_URL = `${PUBLIC_BASE}/`;
const IDP_ORIGIN = `http://127.0.0.1:${IDP_PORT}`;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
// A JWT (header.payload.signature, each base64url JSON starting with "{").
const JWT = /eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+/;

// One HTTP/1.1 request to the gateway (or, with `port`, another loopback server) from
// a chosen loopback address (127.0.0.2 is not in the test config's trust.proxies;
// 127.0.0.1 is). Redirects are not followed.
function request(path, { from = "127.0.0.1", headers = {}, method = "GET", body, port = GATEWAY_PORT } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: "127.0.0.1", port, path, method, headers, localAddress: from, agent: false },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (chunk) => (text += chunk));
        res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: text }));
      },
    );
    req.setTimeout(10_000, () => req.destroy(new Error(`no answer to ${method} ${path} in 10 s`)));
    req.on("error", reject);
    req.end(body);
  });
}

// POST /auth/exchange as the app's server does: the code, the browser binding (the
// value of the code cookie the callback set), and the exchange secret.
function exchange(authCode, binding, { from = "127.0.0.1", secret = EXCHANGE_SECRET } = {}) {
  const body = JSON.stringify(binding === undefined ? { auth_code: authCode } : { auth_code: authCode, browser_binding: binding });
  const headers = { "content-type": "application/json", "content-length": Buffer.byteLength(body) };
  if (secret) headers.authorization = `Bearer ${secret}`;
  return request("/auth/exchange", { from, method: "POST", body, headers });
}

// The name of the code cookie of `authCode`, as the app's server works it out.
function codeCookieName(authCode) {
  return `fluxlit-code-${createHash("sha256").update(authCode).digest("hex").slice(0, 16)}`;
}

// The gateway reads the provider's settings in the background; until then /auth/login
// answers 503.
async function waitForLogin() {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const res = await request("/auth/login?next=/");
    if (res.status === 302) return;
    if (res.status !== 503 || Date.now() > deadline) {
      throw new Error(`/auth/login answered ${res.status} ${res.body}; see gateway.log and idp.log`);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
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

// The WebSockets a page opens: URL, frames received, and whether it closed.
function watchSockets(page) {
  const sockets = [];
  page.on("websocket", (ws) => {
    const socket = { url: ws.url(), framesReceived: 0, frames: [], closed: false };
    sockets.push(socket);
    ws.on("framereceived", ({ payload }) => {
      socket.framesReceived += 1;
      socket.frames.push(String(payload));
    });
    ws.on("close", () => (socket.closed = true));
  });
  // The latest /_stcore/stream: Streamlit reconnects after a dropped socket.
  sockets.stream = () => sockets.findLast((s) => new URL(s.url).pathname === "/_stcore/stream");
  return sockets;
}

// Every top-level navigation of a page, redirects included.
function watchNavigations(page) {
  const navigations = [];
  page.on("request", (req) => {
    if (req.isNavigationRequest() && req.frame() === page.mainFrame()) navigations.push(req.url());
  });
  return navigations;
}

// Whether `prefixes` were visited in this order.
function visitedInOrder(navigations, prefixes) {
  let from = 0;
  for (const prefix of prefixes) {
    const at = navigations.findIndex((url, i) => i >= from && url.startsWith(prefix));
    if (at < 0) return false;
    from = at + 1;
  }
  return true;
}

async function until(what, check, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs / 1000} s`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

// The first tab of the browser, logged in by the first test, and its WebSockets.
let firstTab;

test("the Streamlit page is behind the login: the provider's sign-in, then the page as that user", { timeout: 120_000 }, async () => {
  await waitForLogin();
  const page = context.pages()[0] ?? (await context.newPage());
  const navigations = watchNavigations(page);
  const sockets = watchSockets(page);
  firstTab = { page, sockets };

  // No session: the page load goes to the gateway's login, and on to the provider.
  await page.goto(PUBLIC_URL, { waitUntil: "domcontentloaded" });
  const signIn = page.getByRole("button", { name: "Sign in", exact: true });
  await signIn.waitFor({ timeout: 30_000 });
  assert.ok(
    visitedInOrder(navigations, [PUBLIC_URL, `${PUBLIC_BASE}/auth/login?next=%2F`, `${IDP_ORIGIN}/auth?`, `${IDP_ORIGIN}/interaction/`]),
    `navigations: ${navigations.join(" -> ")}`,
  );
  assert.equal(sockets.length, 0, "no Streamlit WebSocket before the login");
  await signIn.click();

  try {
    await page.getByText(`Signed in as ${IDP_NAME}`, { exact: true }).waitFor({ timeout: 30_000 });
  } catch (error) {
    await page.screenshot({ path: join(OUT, "streamlit-login-failed.png"), fullPage: true });
    const stream = sockets.stream();
    throw new Error(
      `the page did not show the user; it is at ${page.url()} after ${navigations.join(" -> ")}; ` +
        `${sockets.length} WebSocket(s), the last stream ${stream ? `received ${stream.framesReceived} frame(s)` : "never opened"}. ` +
        "See idp.log, gateway.log, ui.log and streamlit-login-failed.png.",
      { cause: error },
    );
  }
  // Back at the page it asked for, through the callback, with the code for its server.
  assert.ok(
    visitedInOrder(navigations, [`${IDP_ORIGIN}/interaction/`, `${PUBLIC_BASE}/auth/callback?`, `${PUBLIC_BASE}/?auth_code=`]),
    `navigations: ${navigations.join(" -> ")}`,
  );
  await page.getByText(`Subject ${IDP_SUB}, email ${IDP_SUB}@example.com, verified by the gateway.`).waitFor({ timeout: 10_000 });

  // The page's content came over /_stcore/stream, through the gateway.
  const stream = sockets.stream();
  assert.ok(stream, `a /_stcore/stream WebSocket was opened (saw: ${sockets.map((s) => s.url).join(", ") || "none"})`);
  assert.equal(new URL(stream.url).host, `${PUBLIC_HOST}:${GATEWAY_PORT}`, "the WebSocket goes through the gateway");
  assert.ok(stream.framesReceived > 0, "the WebSocket received frames");
  assert.equal(stream.closed, false, "the WebSocket is still open");

  // The server traded the login's code for a token and called /api/me with it; FastAPI
  // verified the gateway's assertion. The code left the address bar; no token reached
  // the browser.
  const json = await page.locator('[data-testid="stJson"]').last().textContent({ timeout: 30_000 });
  assert.match(json, new RegExp(`${IDP_SUB}@example\\.com`));
  assert.match(json, /E2E User/);
  await page.waitForURL((u) => !u.searchParams.has("auth_code"), { timeout: 10_000 });
  assert.equal(new URL(page.url()).href, PUBLIC_URL);
  assert.doesNotMatch(await page.content(), JWT, "no token in the page");
  assert.equal(sockets.some((s) => s.frames.some((f) => JWT.test(f))), false, "no token over the WebSocket");

  // Streamlit calls FastAPI server-side; the name makes the answer unguessable.
  const name = `e2e-${randomBytes(4).toString("hex")}`;
  await page.getByLabel("Your name").fill(name);
  await page.getByRole("button", { name: "Call the API" }).click();
  await page.getByText(`Hello, ${name}!`, { exact: true }).waitFor({ timeout: 30_000 });
  await page.getByText("Answered by FastAPI at /api/hello").waitFor({ timeout: 10_000 });

  const shot = join(OUT, "streamlit-logged-in.png");
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`screenshot: ${shot}`);
});

test("a logged-in page load gets the page with the security headers", { timeout: 60_000 }, async () => {
  const page = await context.newPage();
  const response = await page.goto(PUBLIC_URL, { waitUntil: "domcontentloaded" });
  assert.equal(response.status(), 200);
  assert.equal(response.url(), PUBLIC_URL, "no detour through the login: the session holds");
  const headers = response.headers();
  assert.match(headers["x-request-id"] ?? "", UUID, "the gateway echoes a request id");
  assert.equal(headers["x-content-type-options"], "nosniff");
  assert.equal(headers["content-security-policy"], "frame-ancestors 'self'");
  assert.equal(headers["permissions-policy"], "camera=(), microphone=(), geolocation=()");
  await page.getByText(`Signed in as ${IDP_NAME}`, { exact: true }).waitFor({ timeout: 30_000 });
  await page.close();
});

test("logging out in another tab closes the first tab's WebSocket and ends at the provider's sign-in", { timeout: 90_000 }, async () => {
  assert.ok(firstTab, "the first test logged in");
  const stream = firstTab.sockets.stream();
  assert.equal(stream.closed, false, "the first tab's WebSocket is open before the logout");

  const page = await context.newPage();
  const navigations = watchNavigations(page);
  await page.goto(PUBLIC_URL, { waitUntil: "domcontentloaded" });
  await page.getByRole("link", { name: "Log out", exact: true }).click();
  // The gateway ends the session, then the provider's (end_session_endpoint), which
  // sends the browser back to /: no session there now, so on to the login, and the
  // provider, whose session ended too, asks to sign in again.
  await page.getByRole("button", { name: "Sign in", exact: true }).waitFor({ timeout: 30_000 });
  assert.ok(
    visitedInOrder(navigations, [`${PUBLIC_BASE}/auth/logout?next=`, `${IDP_ORIGIN}/session/end`, PUBLIC_URL, `${PUBLIC_BASE}/auth/login?next=%2F`, `${IDP_ORIGIN}/interaction/`]),
    `navigations: ${navigations.join(" -> ")}`,
  );

  // The first tab did nothing; the gateway closed its WebSocket (1008, "session ended").
  await until("the first tab's WebSocket is closed", () => stream.closed, 15_000);
  await page.close();
});

test("without a session, a page load goes to the login and anything else gets 401", async () => {
  const pageLoad = await request("/reports?id=7", { headers: { accept: "text/html,application/xhtml+xml" } });
  assert.equal(pageLoad.status, 302);
  assert.equal(pageLoad.headers.location, "/auth/login?next=%2Freports%3Fid%3D7");
  const script = await request("/_stcore/health", { headers: { accept: "application/json" } });
  assert.equal(script.status, 401, "no redirect for a script");
  const handshake = await request("/_stcore/stream", {
    headers: {
      connection: "Upgrade",
      upgrade: "websocket",
      "sec-websocket-version": "13",
      "sec-websocket-key": randomBytes(16).toString("base64"),
      origin: PUBLIC_BASE,
    },
  });
  assert.equal(handshake.status, 401, "no WebSocket without a session");
  const browserApi = await request("/api/browser/me");
  assert.equal(browserApi.status, 401);
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
  assert.equal(one("x-forwarded-host"), `${PUBLIC_HOST}:${GATEWAY_PORT}`, "X-Forwarded-Host is public_base_url's host, not the client's Host");
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
  assert.equal(one("x-forwarded-host"), `${PUBLIC_HOST}:${GATEWAY_PORT}`, "never the client's evil.example");
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


// The provider's side of a login, as a browser does it: follow its redirects with its
// cookies, press "Sign in" on its login page (a form posting back to the same URL);
// consent is granted without a page. Returns the URL it sends the browser back to.
async function signInAtProvider(authorize) {
  const jar = new Map();
  const remember = (res) => {
    for (const line of res.headers["set-cookie"] ?? []) {
      const [pair, ...attributes] = line.split(";");
      const name = pair.slice(0, pair.indexOf("=")).trim();
      const value = pair.slice(pair.indexOf("=") + 1).trim();
      const gone = !value || attributes.some((a) => /^\s*(max-age=0|expires=thu, 01 jan 1970)/i.test(a));
      if (gone) jar.delete(name);
      else jar.set(name, value);
    }
  };
  let url = authorize;
  for (let hop = 0; url.origin === IDP_ORIGIN; hop += 1) {
    assert.ok(hop < 12, "the provider sends the browser back within 12 steps");
    const cookie = [...jar].map(([name, value]) => `${name}=${value}`).join("; ");
    let res = await request(url.pathname + url.search, { port: IDP_PORT, headers: cookie ? { cookie } : {} });
    remember(res);
    if (res.status === 200 && /<form method="post" action="\/interaction\//.test(res.body)) {
      assert.match(res.body, /Sign in as E2E User/);
      const action = res.body.match(/action="([^"]+)"/)[1];
      const jarNow = [...jar].map(([name, value]) => `${name}=${value}`).join("; ");
      res = await request(action, { port: IDP_PORT, method: "POST", headers: { cookie: jarNow, "content-length": 0 } });
      remember(res);
    }
    assert.ok([302, 303].includes(res.status), `${url.pathname}: ${res.status} ${res.body}`);
    url = new URL(res.headers.location, url);
  }
  return url;
}

test("a login at the real OpenID provider, over plain HTTP: a session, its refresh and revocation, and one exchange", { timeout: 90_000 }, async () => {
  await waitForLogin();
  const publicHost = { host: `${PUBLIC_HOST}:${GATEWAY_PORT}` };

  // The gateway sends the browser to the provider with a code + PKCE request.
  const login = await request("/auth/login?next=/", { headers: publicHost });
  assert.equal(login.status, 302, login.body);
  const authorize = new URL(login.headers.location);
  assert.equal(authorize.origin, IDP_ORIGIN, "to the provider's authorization endpoint");
  assert.equal(authorize.searchParams.get("response_type"), "code");
  assert.equal(authorize.searchParams.get("code_challenge_method"), "S256");
  assert.equal(authorize.searchParams.get("redirect_uri"), `${PUBLIC_BASE}/auth/callback`);
  // It binds the login to this browser with a cookie only the callback sees; the
  // callback refuses to finish a login without it (login CSRF).
  const loginCookies = login.headers["set-cookie"] ?? [];
  assert.equal(loginCookies.length, 1, `one login cookie: ${loginCookies}`);
  assert.match(loginCookies[0], /^fluxlit-login-[0-9a-f]+=[\w-]{43,}; /);
  assert.match(loginCookies[0], /; Path=\/auth\/callback;/);
  assert.match(loginCookies[0], /; HttpOnly/);
  assert.match(loginCookies[0], /; SameSite=Lax/);
  const gatewayCookie = loginCookies[0].split(";")[0];

  const url = await signInAtProvider(authorize);
  assert.equal(`${url.origin}${url.pathname}`, `${PUBLIC_BASE}/auth/callback`, "back at the gateway's callback");
  assert.ok(url.searchParams.get("code") && url.searchParams.get("state"));

  // The callback checks the id_token, starts the session, mints, and hands a one-time
  // code to `next`.
  const callback = await request(url.pathname + url.search, { headers: { ...publicHost, cookie: gatewayCookie } });
  assert.equal(callback.status, 302, `callback: ${callback.body}`);
  const setCookies = callback.headers["set-cookie"] ?? [];
  assert.equal(setCookies.length, 3, `the login cookie cleared, the session and code cookies set: ${setCookies}`);
  const cleared = setCookies.filter((c) => c.startsWith(`${gatewayCookie.split("=")[0]}=;`));
  assert.equal(cleared.length, 1, `the login cookie is cleared: ${setCookies}`);
  assert.match(cleared[0], /; Max-Age=0;/);
  assert.equal(callback.headers["referrer-policy"], "no-referrer");
  assert.equal(callback.headers["cache-control"], "no-store");
  const sessionCookie = setCookies.find((c) => c.startsWith("fluxlit-session="));
  assert.ok(sessionCookie, `a session cookie: ${setCookies}`);
  assert.match(sessionCookie, /^fluxlit-session=[\w-]{43,}; /, "a 256-bit random id");
  assert.match(sessionCookie, /; Path=\/;/);
  assert.match(sessionCookie, /; HttpOnly/);
  assert.match(sessionCookie, /; SameSite=Lax/);
  const session = sessionCookie.split(";")[0];
  const landing = new URL(callback.headers.location, PUBLIC_BASE);
  assert.equal(landing.pathname, "/");
  const authCode = landing.searchParams.get("auth_code");
  assert.ok(authCode, `the code is in the query: ${callback.headers.location}`);
  // Beside it, the cookie that binds the code to this browser: HttpOnly, for the app's
  // server to read from the browser's request.
  const codeCookie = setCookies.find((c) => c.startsWith(`${codeCookieName(authCode)}=`));
  assert.ok(codeCookie, `a code cookie named after the code: ${setCookies}`);
  assert.match(codeCookie, /; HttpOnly/);
  assert.match(codeCookie, /; SameSite=Lax/);
  assert.match(codeCookie, /; Path=\/;/);
  const binding = codeCookie.split(";")[0].split("=")[1];
  assert.match(binding, /^[\w-]{43,}$/);

  // The session: FastAPI gets the verified user (it checks the gateway's assertion),
  // and every cookie but the session's.
  const browserMe = async (extra = {}) =>
    request("/api/browser/me", { headers: { cookie: `${session}; theme=dark`, "x-fluxlit-sub": "admin", ...extra } });
  const me = await browserMe();
  assert.equal(me.status, 200, me.body);
  assert.deepEqual(JSON.parse(me.body), {
    sub: IDP_SUB,
    email: `${IDP_SUB}@example.com`,
    name: IDP_NAME,
    cookies: ["theme"],
    served_by: "FastAPI",
  });
  // A cross-site POST with the cookie is refused before FastAPI (CSRF), and so is a
  // cross-site WebSocket handshake.
  const crossSite = await request("/api/browser/me", {
    method: "POST",
    headers: { cookie: session, origin: "http://evil.example", "content-length": 0 },
  });
  assert.equal(crossSite.status, 403, crossSite.body);
  const crossSiteSocket = await request("/_stcore/stream", {
    headers: {
      cookie: session,
      connection: "Upgrade",
      upgrade: "websocket",
      "sec-websocket-version": "13",
      "sec-websocket-key": randomBytes(16).toString("base64"),
      origin: "http://evil.example",
    },
  });
  assert.equal(crossSiteSocket.status, 403, crossSiteSocket.body);

  // The provider's tokens live IDP_ACCESS_TOKEN_TTL seconds (a few, in this test); the
  // session outlives them: the gateway refreshes them with the refresh token.
  const refreshes = async () => JSON.parse((await request("/demo/refreshes", { port: IDP_PORT })).body).refreshes;
  const before = await refreshes();
  await until("the gateway refreshed the session's tokens at the provider", async () => {
    const res = await browserMe();
    assert.equal(res.status, 200, `the session holds while it refreshes: ${res.body}`);
    return (await refreshes()) > before;
  }, 30_000);
  assert.equal((await browserMe()).status, 200, "the session holds after the refresh");

  // Revoked at the provider: the next refresh fails, and that ends the session.
  const revoked = await request("/demo/revoke", { port: IDP_PORT, method: "POST", headers: { "content-length": 0 } });
  assert.equal(revoked.status, 200, revoked.body);
  await until("the session ended after its refresh was refused", async () => (await browserMe()).status === 401, 30_000);

  // The code is exchanged from loopback only, by the server with the secret and the
  // browser's binding, and once; a refused attempt does not use the code up.
  const elsewhere = await exchange(authCode, binding, { from: "127.0.0.2" });
  assert.equal(elsewhere.status, 403, "not from an address outside exchange_from");
  const secretless = await exchange(authCode, binding, { secret: "" });
  assert.equal(secretless.status, 401, "not without the exchange secret");
  assert.equal(JSON.parse(secretless.body).error, "invalid_client");
  const unbound = await exchange(authCode);
  assert.equal(unbound.status, 400, "not without the browser binding");
  assert.equal(JSON.parse(unbound.body).error, "invalid_grant");
  const exchanged = await exchange(authCode, binding);
  assert.equal(exchanged.status, 200, exchanged.body);
  const token = JSON.parse(exchanged.body);
  assert.equal(token.token_type, "Bearer");
  assert.match(token.access_token, JWT);
  assert.ok(token.expires_in > 0 && token.expires_in <= 900, `expires_in ${token.expires_in}`);
  const replay = await exchange(authCode, binding);
  assert.equal(replay.status, 400);
  assert.equal(JSON.parse(replay.body).error, "invalid_grant");

  // /api/me: the gateway checks the token and signs who it is for FastAPI.
  const anonymous = await request("/api/me", { headers: { "x-fluxlit-sub": "admin" } });
  assert.equal(anonymous.status, 401, "no token, no FastAPI, whatever identity header is sent");
  assert.match(anonymous.headers["www-authenticate"] ?? "", /^Bearer /);
  const forged = await request("/api/me", { headers: { authorization: `Bearer ${token.access_token.slice(0, -4)}AAAA` } });
  assert.equal(forged.status, 401, "a token with a broken signature is refused");
  const apiMe = await request("/api/me", {
    headers: { authorization: `Bearer ${token.access_token}`, "x-fluxlit-sub": "admin", "x-fluxlit-email": "admin@example.com" },
  });
  assert.equal(apiMe.status, 200, apiMe.body);
  assert.deepEqual(JSON.parse(apiMe.body), {
    sub: IDP_SUB,
    email: `${IDP_SUB}@example.com`,
    name: IDP_NAME,
    verified_by: "fluxlit",
    served_by: "FastAPI",
  });
  // FastAPI itself, reached around the gateway, believes no plain header.
  const around = await request("/api/me", { port: API_PORT, headers: { "x-fluxlit-sub": "admin" } });
  assert.equal(around.status, 401, `FastAPI refuses an unsigned identity: ${around.body}`);

  // The open part of /api: a client's identity headers never reach FastAPI.
  const { headers } = await echo("/api/echo/identity", { headers: { "x-fluxlit-sub": "admin", "x-fluxlit-name": "Admin" } });
  assert.equal(headers.has("x-fluxlit-sub"), false);
  assert.equal(headers.has("x-fluxlit-name"), false);
});

// Last: it stops FastAPI and breaks the config file.
test("the admin status page shows the routes, an upstream going down, and a refused reload", { timeout: 90_000 }, async () => {
  const page = await context.newPage();
  const admin = `http://127.0.0.1:${ADMIN_PORT}/`;
  const response = await page.goto(admin, { waitUntil: "domcontentloaded" });
  assert.equal(response.status(), 200);
  // The routes and upstreams of the example, by name.
  for (const route of ["me", "api", "browser-api", "ui"]) {
    await page.locator("td", { hasText: new RegExp(`^${route}$`) }).first().waitFor({ timeout: 10_000 });
  }
  const upstreamRow = (name) => page.locator("tr", { has: page.locator("td", { hasText: new RegExp(`^${name}$`) }) }).last();
  await upstreamRow("api").locator(".up").waitFor({ timeout: 30_000 });
  await upstreamRow("ui").locator(".up").waitFor({ timeout: 30_000 });
  await page.screenshot({ path: join(OUT, "status-page.png"), fullPage: true });

  // FastAPI stops: the page, refreshing itself, shows it down with the reason.
  process.kill(Number(env("E2E_API_PID")), "SIGKILL");
  await upstreamRow("api").locator(".down").waitFor({ timeout: 45_000 });
  assert.match(await upstreamRow("api").textContent(), /cannot connect/);

  // A config that does not load: the page shows the errors with their file:line:col,
  // and the running config keeps serving.
  appendFileSync(env("E2E_CONFIG"), "\n[upstreams.api]\nurl = \"http://127.0.0.1:1\"\n");
  const refused = page.getByText("refused reload");
  await refused.waitFor({ timeout: 30_000 });
  const text = await page.locator("dd.error").textContent();
  assert.match(text, /fluxlit\.toml:\d+:\d+/, text);
  await page.screenshot({ path: join(OUT, "status-page-down.png"), fullPage: true });
  await page.close();
});
