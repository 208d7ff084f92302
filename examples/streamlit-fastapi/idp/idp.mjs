// A demo OpenID provider for the Streamlit + FastAPI example: npm oidc-provider (a
// certified OpenID Connect implementation) with one client and one user. Its login page
// is one "Sign in" button (no password); consent is granted without a page. It issues
// refresh tokens, so the gateway's sessions outlive the access token. It is a
// stand-in for a real identity provider, for run.sh's demo mode and the e2e test;
// listen on loopback only.
//
// Two demo endpoints let the e2e test act as the provider's admin would:
// GET /demo/refreshes counts the refresh-token grants so far, and POST /demo/revoke
// revokes every grant of the user (their refresh tokens stop working).
//
// Environment:
//   IDP_PORT                 port on 127.0.0.1 (default 9400); the issuer is http://127.0.0.1:PORT
//   IDP_CLIENT_ID            the gateway's client id (default fluxlit-example)
//   IDP_CLIENT_SECRET_FILE   a file holding the client secret (required; one trailing newline ignored)
//   IDP_PUBLIC_BASE          the gateway's server.public_base_url (default http://127.0.0.1:8080):
//                            the redirect URI registered is <it>/auth/callback, the
//                            post-logout redirect URI <it>/
//   IDP_USER_SUB, IDP_USER_EMAIL, IDP_USER_NAME
//                            the one user, logged in on every login (default ada,
//                            ada@example.com, Ada Lovelace)
//   IDP_ACCESS_TOKEN_TTL     seconds an access token and id_token are valid (default 600);
//                            the gateway refreshes a session's tokens when they expire
import { generateKeyPairSync, randomBytes, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import http from "node:http";

import Provider from "oidc-provider";

const env = (name, fallback) => process.env[name] || fallback;
const port = Number(env("IDP_PORT", "9400"));
const issuer = `http://127.0.0.1:${port}`;
const clientId = env("IDP_CLIENT_ID", "fluxlit-example");
const secretFile = process.env.IDP_CLIENT_SECRET_FILE;
if (!secretFile) {
  console.error("idp: set IDP_CLIENT_SECRET_FILE to a file holding the client secret");
  process.exit(2);
}
const clientSecret = readFileSync(secretFile, "utf8").replace(/\r?\n$/, "");
if (!clientSecret) {
  console.error(`idp: ${secretFile} is empty`);
  process.exit(2);
}
const publicBase = env("IDP_PUBLIC_BASE", "http://127.0.0.1:8080").replace(/\/+$/, "");
const accessTokenTtl = Number(env("IDP_ACCESS_TOKEN_TTL", "600"));
const user = {
  sub: env("IDP_USER_SUB", "ada"),
  email: env("IDP_USER_EMAIL", "ada@example.com"),
  name: env("IDP_USER_NAME", "Ada Lovelace"),
};

// A fresh RS256 signing key on every start: id_tokens are checked against the JWKS the
// provider publishes, which the gateway reads through discovery.
const signingKey = {
  ...generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({ format: "jwk" }),
  kid: `demo-${randomUUID()}`,
  alg: "RS256",
  use: "sig",
};

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: [`${publicBase}/auth/callback`],
      post_logout_redirect_uris: [`${publicBase}/`],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
      id_token_signed_response_alg: "RS256",
    },
  ],
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString("base64url")] },
  // Seconds. A login must be finished within 10 minutes; the code is good for 60 s.
  ttl: {
    Interaction: 600,
    Session: 3600,
    Grant: 86400,
    AuthorizationCode: 60,
    AccessToken: accessTokenTtl,
    IdToken: accessTokenTtl,
    RefreshToken: 86400,
  },
  // A refresh token on every login of a client allowed the grant, as Keycloak and
  // others do; the library's default asks for offline_access with prompt=consent.
  async issueRefreshToken(_ctx, client) {
    return client.grantTypeAllowed("refresh_token");
  },
  // The gateway always sends an S256 PKCE challenge: insist on it.
  pkce: { required: () => true },
  claims: {
    openid: ["sub"],
    email: ["email", "email_verified"],
    profile: ["name"],
  },
  // Put the scopes' claims (email, name) in the id_token, which is all the gateway
  // reads; by default they would be sent from the userinfo endpoint only.
  conformIdTokenClaims: false,
  async findAccount(_ctx, id) {
    if (id !== user.sub) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: user.sub, email: user.email, email_verified: true, name: user.name };
      },
    };
  },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: {
      enabled: true,
      // The logout confirmation page submits itself ("yes, sign me out").
      async logoutSource(ctx, form) {
        ctx.body = `<!DOCTYPE html><html><head><meta charset="utf-8"><title>Signing out</title></head>
<body><p>Signing out of the demo identity provider...</p>${form}
<button type="submit" form="op.logoutForm" name="logout" value="yes">Sign out</button>
<script>document.querySelector('button[name="logout"]').click();</script></body></html>`;
      },
    },
  },
});

const escape = (text) =>
  String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

// The login page: who you will be, and one button. It posts back to the same URL.
function loginPage(res, uid) {
  res.statusCode = 200;
  res.setHeader("content-type", "text/html; charset=utf-8");
  res.setHeader("cache-control", "no-store");
  res.end(`<!DOCTYPE html><html><head><meta charset="utf-8"><title>Sign in - demo identity provider</title></head>
<body><h1>Demo identity provider</h1><p>Sign in as ${escape(user.name)} (${escape(user.email)}).</p>
<form method="post" action="/interaction/${escape(uid)}"><button type="submit">Sign in</button></form></body></html>`);
}

const grants = new Set();
let refreshes = 0;
provider.on("grant.success", (ctx) => {
  if (ctx.oidc.params.grant_type === "refresh_token") refreshes += 1;
});

// GET shows the login page, or grants consent at once (the client gets the scopes and
// claims it asked for); POST is the login page's button: the user is `user`.
async function finishInteraction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  let result;
  if (prompt.name === "login" && req.method === "GET") {
    loginPage(res, details.uid);
    return;
  }
  if (prompt.name === "login") {
    result = { login: { accountId: user.sub } };
  } else if (prompt.name === "consent") {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const missing = prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(" "));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(" "));
    }
    const grantId = await grant.save();
    grants.add(grantId);
    result = { consent: { grantId } };
  } else {
    result = { error: "access_denied", error_description: `unexpected prompt ${prompt.name}` };
  }
  console.log(`idp: ${prompt.name} finished for ${user.sub} (client ${params.client_id})`);
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
}

// The demo endpoints (see the top of this file).
async function demo(req, res) {
  const path = req.url.split("?")[0];
  res.setHeader("content-type", "application/json");
  if (req.method === "GET" && path === "/demo/refreshes") {
    res.end(JSON.stringify({ refreshes }));
    return true;
  }
  if (req.method === "POST" && path === "/demo/revoke") {
    for (const grantId of grants) {
      const grant = await provider.Grant.find(grantId);
      if (grant) await grant.destroy();
    }
    const revoked = grants.size;
    grants.clear();
    console.log(`idp: revoked ${revoked} grant(s) of ${user.sub}`);
    res.end(JSON.stringify({ revoked }));
    return true;
  }
  return false;
}

const handle = provider.callback();
const server = http.createServer(async (req, res) => {
  if (req.url.startsWith("/demo/") && (await demo(req, res))) return;
  if (["GET", "POST"].includes(req.method) && /^\/interaction\/[^/?]+$/.test(req.url.split("?")[0])) {
    finishInteraction(req, res).catch((error) => {
      console.error(`idp: interaction failed: ${error.message}`);
      if (!res.headersSent) {
        res.statusCode = 400;
        res.setHeader("content-type", "text/plain; charset=utf-8");
      }
      res.end("the login could not be finished; start it again\n");
    });
    return;
  }
  handle(req, res);
});
server.listen(port, "127.0.0.1", () => {
  console.log(`idp: issuer ${issuer}, client ${clientId}, redirect URI ${publicBase}/auth/callback, user ${user.sub}`);
});

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}
