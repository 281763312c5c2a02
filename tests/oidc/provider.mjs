// A real OpenID Connect provider (panva/oidc-provider) for the Rust tests. It listens on a free
// port of 127.0.0.1 and prints one JSON line: {"issuer": "...", "port": N}.
//
// - Client `conclave-spa`: public (no secret), authorization code + PKCE (S256 required),
//   redirect URI http://127.0.0.1/callback. Its ID token (aud = the client id) is what the
//   tests send to Conclave as the bearer.
// - Sign-in is non-interactive: the login prompt completes for the account named by the
//   authorization request's `login_hint`; consent is granted to this first-party client.
// - Test-only endpoints under /test/:
//     POST /test/users           {"id": "...", "claims": {...}}  registers an account (sub = id)
//     POST /test/rotate          a new signing key first in the JWKS, the old ones kept
//     POST /test/rotate?retire=1 a new signing key, the old ones removed from the JWKS
//     GET  /test/signing-key     the current signing key (kid, PKCS#1 DER of the private key
//                                base64, PEM of the public key): for forging attack tokens
//     GET  /test/foreign-key     the same for a key that is never in the JWKS
//     GET  /test/stats           {"jwks_requests": N}
// Rotation builds a new provider instance on the same port: sessions and codes start afresh.

import crypto from 'node:crypto';
import http from 'node:http';
import Provider from 'oidc-provider';

const CLIENT_ID = 'conclave-spa';
const REDIRECT_URI = 'http://127.0.0.1/callback';

const accounts = new Map();
let jwksRequests = 0;

function newKey() {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const kid = crypto.randomUUID();
  return {
    kid,
    jwk: { ...privateKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' },
    der: privateKey.export({ type: 'pkcs1', format: 'der' }).toString('base64'),
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }),
  };
}

function describe(key) {
  return { kid: key.kid, der: key.der, public_pem: key.publicPem };
}

let keys = [newKey()];
const foreign = newKey();

function makeProvider(issuer) {
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: CLIENT_ID,
        token_endpoint_auth_method: 'none',
        redirect_uris: [REDIRECT_URI],
        grant_types: ['authorization_code'],
        response_types: ['code'],
      },
    ],
    jwks: { keys: keys.map((k) => k.jwk) },
    cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
    pkce: { required: () => true, methods: ['S256'] },
    scopes: ['openid', 'email', 'profile', 'conclave'],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
      conclave: ['tid', 'roles', 'groups'],
    },
    // Every claim of the granted scopes goes into the ID token, which is the bearer here.
    conformIdTokenClaims: false,
    features: { devInteractions: { enabled: false } },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    ttl: { IdToken: 600, AccessToken: 600, AuthorizationCode: 60, Interaction: 600, Session: 3600, Grant: 3600 },
    async findAccount(ctx, id) {
      const claims = accounts.get(id);
      if (!claims) return undefined;
      return { accountId: id, claims: async () => ({ sub: id, ...claims }) };
    },
    // A first-party client: consent is implied.
    async loadExistingGrant(ctx) {
      const accountId = ctx.oidc.session.accountId;
      const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId });
      grant.addOIDCScope('openid email profile conclave');
      await grant.save();
      return grant;
    },
  });
  return provider;
}

let provider;

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  if (details.prompt.name === 'login') {
    const accountId = details.params.login_hint;
    if (!accountId || !accounts.has(accountId)) {
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.end('unknown login_hint');
      return;
    }
    await provider.interactionFinished(req, res, { login: { accountId } }, { mergeWithLastSubmission: false });
    return;
  }
  const grant = new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
  grant.addOIDCScope('openid email profile conclave');
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

function json(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

async function testRoute(req, res, url) {
  if (req.method === 'POST' && url.pathname === '/test/users') {
    const { id, claims } = JSON.parse(await readBody(req));
    accounts.set(id, claims);
    return json(res, 204, {});
  }
  if (req.method === 'POST' && url.pathname === '/test/rotate') {
    const key = newKey();
    keys = url.searchParams.get('retire') ? [key] : [key, ...keys];
    provider = makeProvider(issuer);
    return json(res, 200, describe(key));
  }
  if (req.method === 'GET' && url.pathname === '/test/signing-key') return json(res, 200, describe(keys[0]));
  if (req.method === 'GET' && url.pathname === '/test/foreign-key') return json(res, 200, describe(foreign));
  if (req.method === 'GET' && url.pathname === '/test/stats') return json(res, 200, { jwks_requests: jwksRequests });
  return json(res, 404, { error: 'no such test route' });
}

const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, issuer);
    if (url.pathname.startsWith('/test/')) return await testRoute(req, res, url);
    if (url.pathname.startsWith('/interaction/')) return await interaction(req, res);
    if (url.pathname === '/jwks') jwksRequests += 1;
    return provider.callback()(req, res);
  } catch (e) {
    console.error(e);
    if (!res.headersSent) json(res, 500, { error: String(e) });
  }
});

let issuer;
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  issuer = `http://127.0.0.1:${port}`;
  provider = makeProvider(issuer);
  process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
});

// The test harness closes stdin (or dies): stop with it.
process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
process.stdin.resume();
