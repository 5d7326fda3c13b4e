// Shared pieces of the browser tests: the real `webhooks` binary on a free loopback port with a
// temp data dir, loopback receivers and upstreams, Debian's Chromium through playwright-core,
// and a watch on every page for errors, failed requests and leaked secrets.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const ROOT = resolve(here, '..', '..');
export const BIN = process.env.WEBHOOKS_BIN || join(ROOT, 'target', 'debug', 'webhooks');
export const SCREENSHOTS = join(ROOT, 'docs', 'screenshots');
const CHROMIUM = '/usr/bin/chromium';

/** Runs `webhooks ARGS`; resolves once it prints "listening on http://ADDR" with { url, stop, output }. */
export function startBinary(args, env = {}) {
  assert.ok(existsSync(BIN), `${BIN} is missing: run cargo build --workspace --bins first`);
  const childEnv = { ...process.env, RUST_LOG: 'warn', ...env };
  if (!('WEBHOOKS_API_TOKEN' in env)) delete childEnv.WEBHOOKS_API_TOKEN;
  for (const key of Object.keys(childEnv)) if (childEnv[key] === undefined) delete childEnv[key];
  const child = spawn(BIN, args, { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`webhooks ${args.join(' ')} did not start:\n${output}`)), 20000);
    const onData = (chunk) => {
      output += chunk;
      const match = /listening on (http:\/\/[^\s]+)/.exec(output);
      if (match) {
        clearTimeout(timer);
        resolvePromise({
          url: match[1],
          output: () => output,
          stop: () => new Promise((done) => {
            if (child.exitCode !== null) return done();
            child.once('exit', () => done());
            child.kill('SIGTERM');
            setTimeout(() => child.kill('SIGKILL'), 8000).unref();
          }),
        });
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', (chunk) => { output += chunk; });
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`webhooks ${args.join(' ')} exited with ${code}:\n${output}`)); });
  });
}

/** `webhooks serve` on a free port with a fresh data dir; `env` adds to its environment. */
export async function startServe(env = {}) {
  const dataDir = mkdtempSync(join(tmpdir(), 'webhooks-console-'));
  const server = await startBinary(['serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir], env);
  return {
    ...server,
    stop: async () => { await server.stop(); rmSync(dataDir, { recursive: true, force: true }); },
  };
}

/** Runs the binary to completion: { code, stdout, stderr }. */
export function runBinary(args, env = {}) {
  return new Promise((resolvePromise) => {
    const child = spawn(BIN, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => { stdout += c; });
    child.stderr.on('data', (c) => { stderr += c; });
    child.once('exit', (code) => resolvePromise({ code, stdout, stderr }));
  });
}

/** An HTTP server on a free loopback port; `handler(req, body)` returns { status, headers?, body? }. */
export async function startHttp(handler) {
  const requests = [];
  const server = createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const record = { method: req.method, url: req.url, headers: req.headers, body };
      requests.push(record);
      try {
        const answer = await handler(record);
        res.writeHead(answer.status, answer.headers || { 'content-type': 'application/json' });
        res.end(answer.body === undefined ? '' : typeof answer.body === 'string' ? answer.body : JSON.stringify(answer.body));
      } catch (err) {
        res.writeHead(599);
        res.end(String(err));
      }
    });
  });
  await new Promise((done) => server.listen(0, '127.0.0.1', done));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    stop: () => new Promise((done) => { server.closeAllConnections?.(); server.close(() => done()); }),
  };
}

/**
 * A receiver: POST /ok → 200, /fail → 500, /gone → 410, /flaky → 500 while `flaky.failing`,
 * and any path set in `statusFor` → that status.
 */
export async function startReceiver() {
  const state = { failing: true };
  const statusFor = {};
  const receiver = await startHttp(({ url }) => {
    const path = url.split('?')[0];
    if (statusFor[path]) return { status: statusFor[path], headers: { 'content-type': 'text/plain' }, body: `answered ${statusFor[path]}` };
    if (path === '/fail') return { status: 500, headers: { 'content-type': 'text/plain' }, body: 'receiver says no' };
    if (path === '/gone') return { status: 410, headers: { 'content-type': 'text/plain' }, body: 'gone for good' };
    if (path === '/flaky') {
      return state.failing
        ? { status: 500, headers: { 'content-type': 'text/plain' }, body: 'flaky: down' }
        : { status: 200, headers: { 'content-type': 'text/plain' }, body: 'flaky: back up' };
    }
    return { status: 200, headers: { 'content-type': 'text/plain' }, body: 'thanks' };
  });
  return { ...receiver, flaky: state, statusFor };
}

/** A JSON API client for setting up state, as a script would (not through the page). */
export function apiClient(base, token) {
  return async function call(method, path, body) {
    const headers = { accept: 'application/json' };
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const response = await fetch(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await response.text();
    return { status: response.status, body: text ? JSON.parse(text) : null };
  };
}

/** Polls `check` until it returns a truthy value. */
export async function eventually(check, what, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await check();
    if (last) return last;
    await new Promise((done) => setTimeout(done, 150));
  }
  throw new Error(`timed out waiting for ${what}`);
}

export async function launchBrowser() {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install -y chromium (the tests never skip)`);
  // launch() gives every browser a fresh temporary profile (its own --user-data-dir).
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox', '--headless=new', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
}

/**
 * A page that records what must never happen: page errors, console errors, failed requests,
 * error answers the test did not expect, and (for `secrets`) any secret in a response body.
 * `expectErrorAnswer(status, pathPart)` allows one error answer; `check()` asserts it all,
 * including that no secret is in the DOM.
 */
export async function watchedPage(browser, { secrets = [], viewport = { width: 1280, height: 800 } } = {}) {
  const context = await browser.newContext({ viewport, colorScheme: 'light', locale: 'en-US', timezoneId: 'UTC' });
  const page = await context.newPage();
  const problems = [];
  const errorAnswers = [];
  const expected = [];
  const bodies = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (message) => {
    if (message.type() !== 'error') return;
    // Chromium logs every 4xx/5xx fetch as "Failed to load resource"; those answers are
    // checked one by one below instead.
    if (/^Failed to load resource: the server responded with a status of \d+/.test(message.text())) return;
    problems.push(`console error: ${message.text()}`);
  });
  page.on('requestfailed', (request) => problems.push(`request failed: ${request.method()} ${request.url()} ${request.failure()?.errorText}`));
  page.on('dialog', (dialog) => {
    if (dialog.type() !== 'confirm') {
      problems.push(`unexpected ${dialog.type()} dialog: ${dialog.message()}`);
      dialog.dismiss().catch(() => {});
    }
  });
  page.on('response', (response) => {
    const url = new URL(response.url());
    const entry = { status: response.status(), path: url.pathname + url.search, method: response.request().method() };
    if (entry.status >= 400) errorAnswers.push(entry);
    bodies.push(response.body().then((b) => ({ ...entry, text: b.toString('utf8') }), () => ({ ...entry, text: '' })));
  });
  return {
    page,
    context,
    expectErrorAnswer(status, pathPart) { expected.push({ status, pathPart }); },
    async check() {
      const unexpected = errorAnswers.filter((answer) => {
        const i = expected.findIndex((e) => e.status === answer.status && answer.path.includes(e.pathPart));
        if (i === -1) return true;
        expected.splice(i, 1);
        return false;
      });
      assert.deepEqual(unexpected, [], 'no error answer the test did not expect');
      assert.deepEqual(expected, [], 'every expected error answer happened');
      assert.deepEqual(problems, [], 'no page error, console error, failed request or alert');
      const html = await page.content();
      const received = await Promise.all(bodies);
      for (const secret of secrets) {
        assert.ok(!html.includes(secret), `the DOM never shows the secret ${secret}`);
        for (const body of received) assert.ok(!body.text.includes(secret), `${body.method} ${body.path} never answers the secret`);
      }
      for (const body of received) {
        if (body.path.startsWith('/console/')) assert.ok(body.status < 400, `${body.path} is served`);
      }
      return received;
    },
  };
}

export async function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, name), fullPage: false });
}
