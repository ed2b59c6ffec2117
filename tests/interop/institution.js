'use strict';
// An institution for finsync's interop test (tests/it/interop.rs): a third-party
// OAuth2 authorization server, the npm package oauth2-mock-server, in front of a
// small account API served with node's http module.
//
// oauth2-mock-server issues real signed tokens, a new refresh token on every
// refresh, and redirects /authorize straight back with a code, but on its own it
// checks almost nothing. Through its event hooks this script makes it hold a
// client to what a real institution would:
//   - the client authenticates with HTTP Basic (RFC 6749 §2.3.1) as configured;
//   - an authorization code is used once, with the redirect_uri it was issued
//     for, and with a PKCE verifier when the authorization sent a challenge;
//   - a refresh token is used once (rotation) and only while its grant lives;
//   - revoking a refresh token (RFC 7009) ends its grant.
// The API accepts only access tokens this server issued, unexpired, of a live
// grant. GET /stats reports what happened, for the test to assert on.
//
//   node institution.js --client-id ID --client-secret SECRET \
//       [--code-token-lifetime SECS] [--refresh-token-lifetime SECS]
//
// Prints one JSON line {"issuer": URL, "api": URL} once both servers listen on
// 127.0.0.1, and exits when its standard input closes.

const http = require('node:http');
const { randomUUID } = require('node:crypto');
const { parseArgs } = require('node:util');
const { OAuth2Server } = require('oauth2-mock-server');

const { values: args } = parseArgs({
  options: {
    'client-id': { type: 'string' },
    'client-secret': { type: 'string' },
    'code-token-lifetime': { type: 'string', default: '3600' },
    'refresh-token-lifetime': { type: 'string', default: '3600' },
  },
});
if (!args['client-id'] || !args['client-secret']) {
  console.error('--client-id and --client-secret are required');
  process.exit(2);
}

/** Access-token lifetime in seconds, by the grant that issues it. */
const lifetimes = {
  authorization_code: Number(args['code-token-lifetime']),
  refresh_token: Number(args['refresh-token-lifetime']),
};

/** code -> { redirectUri, pkce }, until the code is exchanged. */
const codes = new Map();
/** live refresh token -> grant id */
const refreshTokens = new Map();
/** access token -> { grantId, grantType, expiresAt (ms) } */
const accessTokens = new Map();
const revokedGrants = new Set();

const stats = {
  /** Token requests answered with tokens, by grant type. */
  grants: { authorization_code: 0, refresh_token: 0 },
  /** Token requests refused, by OAuth error code. */
  refused: [],
  api: {
    /** API requests served, by the grant type that issued their access token. */
    accepted: { authorization_code: 0, refresh_token: 0 },
    rejected: 0,
  },
  /** Revocation requests: what the token was and whether the client authenticated. */
  revocations: [],
};

/** The client credentials of a request's HTTP Basic header (form-decoded), or null. */
function basicCredentials(req) {
  const match = /^Basic\s+(\S+)$/i.exec(req.headers.authorization ?? '');
  if (!match) return null;
  const decoded = Buffer.from(match[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return null;
  const formDecode = (s) => decodeURIComponent(s.replace(/\+/g, ' '));
  try {
    return { id: formDecode(decoded.slice(0, colon)), secret: formDecode(decoded.slice(colon + 1)) };
  } catch {
    return null;
  }
}

function clientAuthenticated(req) {
  const credentials = basicCredentials(req);
  return (
    credentials !== null &&
    credentials.id === args['client-id'] &&
    credentials.secret === args['client-secret']
  );
}

/** Why a token request must be refused, as [status, OAuth error], or null. */
function refusal(req) {
  const body = req.body;
  if (!clientAuthenticated(req)) return [401, 'invalid_client'];
  switch (body.grant_type) {
    case 'authorization_code': {
      const issued = codes.get(body.code);
      codes.delete(body.code);
      if (!issued || issued.redirectUri !== body.redirect_uri) return [400, 'invalid_grant'];
      // The library checks a verifier that is sent; a missing one is refused here.
      if (issued.pkce && !body.code_verifier) return [400, 'invalid_grant'];
      return null;
    }
    case 'refresh_token': {
      const grantId = refreshTokens.get(body.refresh_token);
      refreshTokens.delete(body.refresh_token);
      if (grantId === undefined || revokedGrants.has(grantId)) return [400, 'invalid_grant'];
      req.grantId = grantId;
      return null;
    }
    default:
      return [400, 'unsupported_grant_type'];
  }
}

async function main() {
  const server = new OAuth2Server();
  await server.issuer.keys.generate('RS256');
  const service = server.service;

  service.on('beforeAuthorizeRedirect', ({ url }, req) => {
    const code = url.searchParams.get('code');
    if (code) {
      codes.set(code, {
        redirectUri: req.query.redirect_uri,
        pkce: typeof req.query.code_challenge === 'string',
      });
    }
  });

  // Both the access token and the ID token of a response expire with the lifetime
  // of their grant type.
  service.on('beforeTokenSigning', (token, req) => {
    const lifetime = lifetimes[req.body.grant_type];
    if (lifetime !== undefined) token.payload.exp = token.payload.iat + lifetime;
  });

  service.on('beforeResponse', (response, req) => {
    const refused = refusal(req);
    if (refused) {
      const [status, error] = refused;
      response.statusCode = status;
      response.body = { error };
      stats.refused.push(error);
      return;
    }
    const grantType = req.body.grant_type;
    const grantId = req.grantId ?? randomUUID();
    const lifetime = lifetimes[grantType];
    response.body.expires_in = lifetime;
    accessTokens.set(response.body.access_token, {
      grantId,
      grantType,
      expiresAt: Date.now() + lifetime * 1000,
    });
    refreshTokens.set(response.body.refresh_token, grantId);
    stats.grants[grantType] += 1;
  });

  // The library answers /revoke without reading its form body (it parses only
  // JSON there). Listening for the body here, before the answer is sent, keeps
  // node from discarding it; the revocation is recorded once it has arrived.
  service.on('beforeRevoke', (_response, req) => {
    const authenticated = clientAuthenticated(req);
    let raw = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => {
      raw += chunk;
    });
    req.on('end', () => {
      const form = new URLSearchParams(raw);
      const token = form.get('token') ?? '';
      let kind = 'unknown';
      if (refreshTokens.has(token)) {
        kind = 'refresh_token';
        if (authenticated) {
          revokedGrants.add(refreshTokens.get(token));
          refreshTokens.delete(token);
        }
      } else if (accessTokens.has(token)) {
        kind = 'access_token';
      }
      stats.revocations.push({ kind, token_type_hint: form.get('token_type_hint'), authenticated });
    });
  });

  await server.start(0, '127.0.0.1');
  const issuer = `http://127.0.0.1:${server.address().port}`;

  const api = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://institution');
    if (req.method === 'GET' && url.pathname === '/stats') return send(res, 200, stats);
    const records = req.method === 'GET' ? DATA[url.pathname] : undefined;
    if (records === undefined) return send(res, 404, { error: 'not_found' });
    const bearer = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
    const token = bearer ? accessTokens.get(bearer[1]) : undefined;
    if (!token || token.expiresAt <= Date.now() || revokedGrants.has(token.grantId)) {
      stats.api.rejected += 1;
      res.setHeader('WWW-Authenticate', 'Bearer error="invalid_token"');
      return send(res, 401, { error: 'invalid_token' });
    }
    stats.api.accepted[token.grantType] += 1;
    return send(res, 200, { data: records });
  });
  await new Promise((resolve, reject) => {
    api.once('error', reject);
    api.listen(0, '127.0.0.1', resolve);
  });

  process.stdout.write(
    `${JSON.stringify({ issuer, api: `http://127.0.0.1:${api.address().port}` })}\n`,
  );
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}

function send(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify(body));
}

/** The institution's records, in its own shape: amounts are decimal strings. */
const DATA = {
  '/v1/accounts': [
    {
      id: 'chk-4821',
      kind: 'current',
      label: 'Everyday Account',
      product: 'Harbor Current Account',
      iban_last4: '4821',
      currency: 'EUR',
      balance: { booked: '2500.10', available: '2450.00' },
    },
    {
      id: 'sav-0917',
      kind: 'savings',
      label: 'Rainy Day Savings',
      product: 'Harbor Instant Saver',
      iban_last4: '0917',
      currency: 'EUR',
      balance: { booked: '10000.005', available: null },
    },
  ],
  '/v1/transactions': [
    {
      id: 'tx-1001',
      account: 'chk-4821',
      amount: '-42.50',
      currency: 'EUR',
      booking_date: '2026-10-30',
      text: 'Groceries',
    },
    {
      id: 'tx-1002',
      account: 'chk-4821',
      amount: '1850.00',
      currency: 'EUR',
      booking_date: '2026-10-31',
      text: 'Salary',
    },
    {
      id: 'tx-1003',
      account: 'sav-0917',
      amount: '0.005',
      currency: 'EUR',
      booking_date: '2026-10-31',
      text: 'Interest',
    },
  ],
};

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
