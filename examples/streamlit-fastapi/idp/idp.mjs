// A demo OpenID provider for the Streamlit + FastAPI example: npm oidc-provider (a
// certified OpenID Connect implementation) with one client, one user, and login and
// consent that finish without a UI, so the example's login works headless (its e2e
// test, and run.sh's demo mode). It is a stand-in for a real identity provider: it
// never asks for a password. Listen on loopback only.
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
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
      id_token_signed_response_alg: "RS256",
    },
  ],
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString("base64url")] },
  // Seconds. A login must be finished within 10 minutes; the code is good for 60 s.
  ttl: { Interaction: 600, Session: 3600, Grant: 3600, AuthorizationCode: 60, AccessToken: 600, IdToken: 600 },
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

// What a login page and a consent page would do, done at once: the user is `user`,
// and the client gets the scopes and claims it asked for.
async function finishInteraction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  let result;
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
    result = { consent: { grantId: await grant.save() } };
  } else {
    result = { error: "access_denied", error_description: `unexpected prompt ${prompt.name}` };
  }
  console.log(`idp: ${prompt.name} finished for ${user.sub} (client ${params.client_id})`);
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
}

const handle = provider.callback();
const server = http.createServer((req, res) => {
  if (req.method === "GET" && /^\/interaction\/[^/?]+$/.test(req.url.split("?")[0])) {
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
