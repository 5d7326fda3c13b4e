// `webhooks console`: the console on loopback, its API calls forwarded to an endpoint signed
// with SigV4. Against a local upstream that verifies every signature, then end to end against
// `webhooks serve` with --aws forcing the signing.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import {
  eventually, launchBrowser, runBinary, startBinary, startHttp, startReceiver, startServe, watchedPage,
} from './harness.js';

const ACCESS_KEY = 'AKIDCONSOLETEST';
const SECRET_KEY = 'console-test-aws-secret-key-5b7e';
const AWS_ENV = {
  AWS_ACCESS_KEY_ID: ACCESS_KEY,
  AWS_SECRET_ACCESS_KEY: SECRET_KEY,
  AWS_REGION: 'us-east-1',
  AWS_EC2_METADATA_DISABLED: 'true',
  AWS_SESSION_TOKEN: undefined,
  AWS_PROFILE: undefined,
  AWS_ENDPOINT_URL: undefined,
  WEBHOOKS_ENDPOINT: undefined,
};
const WEBHOOK_ID = '0f4b9c1e-2d3a-4b5c-8d6e-7f8091a2b3c4';

const sha256 = (text) => createHash('sha256').update(text).digest('hex');
const hmac = (key, text) => createHmac('sha256', key).update(text).digest();

/** Recomputes the SigV4 signature of a received request; returns why it is wrong, or null. */
function sigv4Problem({ method, url, headers, body }) {
  const auth = headers.authorization || '';
  const match = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$/.exec(auth);
  if (!match) return `not a SigV4 Authorization header: ${JSON.stringify(auth)}`;
  const [, key, date, region, service, signedHeaders, signature] = match;
  if (key !== ACCESS_KEY || region !== 'us-east-1' || service !== 'execute-api') return `wrong scope: ${auth}`;
  const amzDate = headers['x-amz-date'];
  if (!amzDate || !amzDate.startsWith(date)) return 'no matching x-amz-date';
  const [path, query = ''] = url.split('?');
  const canonicalQuery = query.split('&').filter(Boolean).map((pair) => pair.split('=')).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v = '']) => `${k}=${v}`).join('&');
  const names = signedHeaders.split(';');
  if (!names.includes('host') || !names.includes('x-amz-date')) return `signed headers lack host or x-amz-date: ${signedHeaders}`;
  const canonicalHeaders = names.map((name) => `${name}:${String(headers[name] ?? '').trim()}\n`).join('');
  const canonicalRequest = [method, path, canonicalQuery, canonicalHeaders, signedHeaders, sha256(body)].join('\n');
  const scope = `${date}/${region}/${service}/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256(canonicalRequest)].join('\n');
  let signingKey = hmac(`AWS4${SECRET_KEY}`, date);
  for (const part of [region, service, 'aws4_request']) signingKey = hmac(signingKey, part);
  const expected = createHmac('sha256', signingKey).update(toSign).digest('hex');
  return expected === signature ? null : `signature mismatch for ${method} ${url}`;
}

/** A raw request to the proxy with headers a browser on another site would send. */
function rawRequest(base, { method = 'GET', path, headers }) {
  const target = new URL(base);
  return new Promise((resolvePromise, reject) => {
    const req = httpRequest({ host: target.hostname, port: target.port, method, path, headers }, (res) => {
      let text = '';
      res.on('data', (c) => { text += c; });
      res.on('end', () => resolvePromise({ status: res.statusCode, text }));
    });
    req.on('error', reject);
    req.end(method === 'POST' ? '{"name":"x","url":"http://127.0.0.1:9/","event_types":[]}' : undefined);
  });
}

describe('webhooks console against an upstream that checks SigV4', () => {
  let upstream;
  let proxy;
  let browser;
  const problems = [];

  before(async () => {
    upstream = await startHttp((req) => {
      const problem = sigv4Problem(req);
      if (problem) {
        problems.push(problem);
        return { status: 403, headers: { 'content-type': 'application/json' }, body: { message: problem } };
      }
      const upstreamHeaders = {
        'content-type': 'application/json',
        'x-amzn-requestid': 'upstream-request-id-ffee',
        'set-cookie': 'upstream-session=do-not-forward',
      };
      const path = req.url.split('?')[0];
      if (req.method === 'GET' && path === '/webhooks') {
        return { status: 200, headers: upstreamHeaders, body: { items: [{ webhook_id: WEBHOOK_ID, name: 'deployed-hook', event_types: ['ping'] }], next: null } };
      }
      if (req.method === 'GET' && path === `/webhooks/${WEBHOOK_ID}`) {
        return {
          status: 200,
          headers: upstreamHeaders,
          body: { webhook_id: WEBHOOK_ID, name: 'deployed-hook', url: 'https://hooks.example.com/in', event_types: ['ping'], has_secret_token: true, state: 'enabled', created_at: '2026-12-01T10:00:00Z', updated_at: '2026-12-01T10:00:00Z' },
        };
      }
      if (req.method === 'GET' && path === `/webhooks/${WEBHOOK_ID}/logs`) return { status: 200, headers: upstreamHeaders, body: { items: [], next: null } };
      if (req.method === 'POST' && path === `/webhooks/${WEBHOOK_ID}/ping`) {
        return { status: 202, headers: upstreamHeaders, body: { ping_id: '11111111-2222-4333-8444-555555555555' } };
      }
      return { status: 404, headers: { 'content-type': 'application/problem+json' }, body: { title: 'UNABLE_TO_FIND', status: 404, detail: 'no route', code: 467 } };
    });
    proxy = await startBinary(['console', '--endpoint', upstream.url, '--aws', '--region', 'us-east-1', '--listen', '127.0.0.1:0'], AWS_ENV);
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await proxy?.stop();
    await upstream?.stop();
  });

  it('forwards every API call signed with SigV4 and hands the browser only status, type and body', async () => {
    assert.match(proxy.output(), /signed with AWS SigV4/);
    const { page, check } = await watchedPage(browser, { secrets: [SECRET_KEY, ACCESS_KEY, 'upstream-request-id-ffee', 'do-not-forward'] });
    const apiHeaders = [];
    page.on('response', (response) => {
      if (!new URL(response.url()).pathname.startsWith('/console/')) apiHeaders.push(response.headers());
    });

    await page.goto(`${proxy.url}/console/`);
    await page.getByRole('link', { name: 'deployed-hook' }).click();
    await page.getByRole('heading', { level: 1, name: 'deployed-hook' }).waitFor();
    await page.getByRole('button', { name: 'Ping' }).click();
    await page.getByRole('status').filter({ hasText: /Ping queued/ }).waitFor();

    const forwarded = upstream.requests.map((r) => `${r.method} ${r.url.split('?')[0]}`);
    for (const call of ['GET /webhooks', `GET /webhooks/${WEBHOOK_ID}`, `GET /webhooks/${WEBHOOK_ID}/logs`, `POST /webhooks/${WEBHOOK_ID}/ping`]) {
      assert.ok(forwarded.includes(call), `${call} was forwarded (${forwarded.join(', ')})`);
    }
    assert.deepEqual(problems, [], 'every forwarded request carries a valid SigV4 signature');
    assert.ok(upstream.requests.every((r) => r.headers.authorization.startsWith('AWS4-HMAC-SHA256 ')));
    assert.ok(apiHeaders.length >= 4);
    for (const headers of apiHeaders) {
      for (const name of Object.keys(headers)) {
        assert.ok(!/^(authorization|x-amz|x-amzn|set-cookie)/.test(name), `the browser never gets ${name}`);
      }
    }
    await check();
  });

  it('refuses calls from other sites and other host names before signing anything', async () => {
    const before = upstream.requests.length;
    const host = new URL(proxy.url).host;
    const crossSite = await rawRequest(proxy.url, { method: 'POST', path: '/webhooks', headers: { host, origin: 'http://evil.example', 'content-type': 'text/plain' } });
    assert.equal(crossSite.status, 403, crossSite.text);
    assert.equal(JSON.parse(crossSite.text).title, 'UNAUTHORIZED');
    const fetchMeta = await rawRequest(proxy.url, { path: '/webhooks', headers: { host, 'sec-fetch-site': 'cross-site' } });
    assert.equal(fetchMeta.status, 403, fetchMeta.text);
    const rebound = await rawRequest(proxy.url, { path: '/webhooks', headers: { host: `attacker.example:${new URL(proxy.url).port}` } });
    assert.equal(rebound.status, 403, rebound.text);
    const unknown = await rawRequest(proxy.url, { path: '/internal/thing', headers: { host } });
    assert.equal(unknown.status, 404, unknown.text);
    const climbing = await rawRequest(proxy.url, { path: '/webhooks/%2e%2e/internal', headers: { host } });
    assert.equal(climbing.status, 404, climbing.text);
    assert.equal(upstream.requests.length, before, 'nothing reached the upstream');
    const own = await rawRequest(proxy.url, { path: '/webhooks', headers: { host, 'sec-fetch-site': 'same-origin', origin: proxy.url } });
    assert.equal(own.status, 200, own.text);
  });

  it('refuses to listen on a non-loopback address', async () => {
    const result = await runBinary(['console', '--endpoint', upstream.url, '--listen', '0.0.0.0:0'], AWS_ENV);
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /refusing to serve the console on 0\.0\.0\.0:0.*loopback/);
  });
});

describe('webhooks console end to end against webhooks serve, signing with --aws', () => {
  let serve;
  let proxy;
  let receiver;
  let browser;

  before(async () => {
    receiver = await startReceiver();
    serve = await startServe();
    proxy = await startBinary(['console', '--endpoint', serve.url, '--aws', '--listen', '127.0.0.1:0'], AWS_ENV);
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await proxy?.stop();
    await serve?.stop();
    await receiver?.stop();
  });

  it('creates a webhook, pings it and shows the delivery, all through the proxy', async () => {
    assert.match(proxy.output(), /signed with AWS SigV4/);
    const { page, check } = await watchedPage(browser, { secrets: [SECRET_KEY, 'proxy-e2e-secret'] });
    await page.goto(`${proxy.url}/console/`);
    await page.getByLabel('Name').fill('via-proxy');
    await page.getByLabel('URL').fill(`${receiver.url}/ok`);
    await page.getByLabel('Event types').fill('ping');
    await page.getByLabel('Secret token').fill('proxy-e2e-secret');
    await page.getByRole('button', { name: 'Create' }).click();
    await page.getByRole('heading', { level: 1, name: 'via-proxy' }).waitFor();

    await page.getByRole('button', { name: 'Ping' }).click();
    await page.locator('tbody tr', { hasText: 'ping' }).filter({ hasText: 'succeeded' }).waitFor({ timeout: 15000 });
    await page.locator('tbody a').first().click();
    await page.getByRole('heading', { level: 1, name: 'Delivery of ping' }).waitFor();
    await eventually(() => receiver.requests.some((r) => r.headers['x-onefuzz-digest']), 'a signed delivery at the receiver');
    await check();
  });
});
