// The console (SPEC §12) in real Chromium against a real `webhooks serve`: navigation by
// clicks and deep links, create/edit/delete/ping/enable/redeliver/recover, the token prompt,
// untrusted strings shown as text, and nothing secret in the DOM or in any answer the page got.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  ROOT, apiClient, eventually, launchBrowser, screenshot, startReceiver, startServe, watchedPage,
} from './harness.js';

const SECRET = 'console-test-secret-6d1f0a';
const TASK_CREATED = JSON.parse(readFileSync(join(ROOT, 'tests', 'data', 'event-examples.json'), 'utf8')).task_created;
const XSS_NAME = '<img src=x onerror=alert(1)>';

describe('the console served by webhooks serve', () => {
  let serve;
  let receiver;
  let browser;
  let api;

  before(async () => {
    receiver = await startReceiver();
    // One retry after a second: a failing receiver gives a failed delivery within ~2 s.
    serve = await startServe({ RETRY_SCHEDULE: '1' });
    api = apiClient(serve.url);
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await serve?.stop();
    await receiver?.stop();
  });

  async function createWebhook(body) {
    const answer = await api('POST', '/webhooks', body);
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    return answer.body.webhook_id;
  }

  async function deliveries(id) {
    const answer = await api('GET', `/webhooks/${id}/logs?limit=100`);
    assert.equal(answer.status, 200);
    return answer.body.items;
  }

  async function settled(id, count) {
    return eventually(async () => {
      const items = await deliveries(id);
      return items.length >= count && items.every((e) => e.state === 'succeeded' || e.state === 'failed') && items;
    }, `${count} finished deliveries of ${id}`);
  }

  it('goes from the list to a webhook to a delivery by clicks, and opens the same pages by deep links', async () => {
    const id = await createWebhook({ name: 'orders-service', url: `${receiver.url}/orders`, event_types: ['ping', 'task_created'], secret_token: SECRET });
    await createWebhook({ name: 'billing', url: `${receiver.url}/ok`, event_types: ['job_created'], message_format: 'cloud_events' });
    const failing = await createWebhook({ name: 'chat-alerts', url: `${receiver.url}/fail`, event_types: ['crash_reported'] });
    // Three successes, two failures (two attempts each), two successes: a chart with both outcomes.
    const pings = async (n) => {
      for (let i = 0; i < n; i += 1) {
        assert.equal((await api('POST', `/webhooks/${id}/ping`)).status, 202);
        await new Promise((done) => setTimeout(done, 150));
      }
    };
    receiver.statusFor['/orders'] = 200;
    await pings(3);
    await settled(id, 3);
    receiver.statusFor['/orders'] = 503;
    for (let i = 0; i < 2; i += 1) {
      assert.equal((await api('POST', '/events', { event_type: 'task_created', event: TASK_CREATED })).status, 202);
    }
    await settled(id, 5);
    receiver.statusFor['/orders'] = 200;
    await pings(2);
    const all = await settled(id, 7);
    const failedTask = all.find((e) => e.state === 'failed' && e.event_type === 'task_created');
    assert.ok(failedTask, 'a failed task_created delivery');
    assert.equal((await api('POST', `/webhooks/${failing}/ping`)).status, 202);
    await settled(failing, 1);
    const { page, check } = await watchedPage(browser, { secrets: [SECRET] });

    await page.goto(`${serve.url}/`);
    await page.waitForURL(`${serve.url}/console/`);
    await page.getByRole('heading', { level: 1, name: 'Webhooks' }).waitFor();
    assert.equal(await page.title(), 'Webhooks · Webhooks console');
    await page.getByRole('link', { name: 'chat-alerts' }).waitFor();
    await screenshot(page, 'console-list.png');

    await page.getByRole('link', { name: 'orders-service' }).click();
    await page.waitForURL(`${serve.url}/console/webhooks/${id}`);
    await page.getByRole('heading', { level: 1, name: 'orders-service' }).waitFor();
    const details = page.locator('dl.details');
    assert.match(await details.innerText(), new RegExp(`${receiver.url}/orders`));
    assert.match(await details.innerText(), /ping, task_created/);
    assert.match(await details.innerText(), /Secret token\s+set/);
    const chart = page.getByRole('img', { name: /deliveries/ });
    assert.match(await chart.getAttribute('aria-label'), /7 deliveries, 5 succeeded, 2 failed/);
    assert.equal(await chart.evaluate((el) => el.tagName.toLowerCase()), 'svg');
    for (const name of ['Ping', 'Edit', 'Delete']) await page.getByRole('button', { name, exact: true }).waitFor();
    assert.equal(await page.getByRole('button', { name: 'Enable' }).count(), 0, 'no Enable on an enabled webhook');
    const rows = page.locator('section', { has: page.getByRole('heading', { name: 'Recent deliveries' }) }).locator('tbody tr');
    assert.equal(await rows.count(), 7);
    assert.equal(await page.getByRole('button', { name: 'Redeliver', exact: true }).count(), 7);
    await screenshot(page, 'console-webhook.png');

    await page.getByRole('link', { name: failedTask.event_id.slice(0, 8) }).click();
    await page.waitForURL(`${serve.url}/console/webhooks/${id}/deliveries/${failedTask.event_id}`);
    await page.getByRole('heading', { level: 1, name: 'Delivery of task_created' }).waitFor();
    const attempts = page.locator('section', { has: page.getByRole('heading', { name: 'Attempts' }) });
    assert.equal(await attempts.locator('tbody tr').count(), 2);
    assert.match(await attempts.innerText(), /\b503\b[\s\S]*\b503\b/);
    assert.match(await page.locator('pre.payload').innerText(), /"target_exe": "fuzz.exe"/);
    await screenshot(page, 'console-delivery.png');

    await page.goBack();
    await page.getByRole('heading', { level: 1, name: 'orders-service' }).waitFor();
    await page.getByRole('link', { name: 'Webhooks', exact: true }).first().click();
    await page.getByRole('heading', { level: 1, name: 'Webhooks' }).waitFor();

    // Deep links, in a fresh page load each.
    await page.goto(`${serve.url}/console/webhooks/${failing}`);
    await page.getByRole('heading', { level: 1, name: 'chat-alerts' }).waitFor();
    assert.match(await page.getByRole('img', { name: /deliveries/ }).getAttribute('aria-label'), /1 failed/);
    await page.goto(`${serve.url}/console/webhooks/${id}/deliveries/${failedTask.event_id}`);
    await page.getByRole('heading', { level: 1, name: 'Delivery of task_created' }).waitFor();
    assert.match(await page.locator('dl.details').innerText(), new RegExp(failedTask.event_id));
    await check();
  });

  it('shows the API detail for a bad URL, keeps what was typed, then creates the webhook', async () => {
    const { page, check, expectErrorAnswer } = await watchedPage(browser, { secrets: [SECRET] });
    const bad = { name: 'new-hook', url: 'not a url', event_types: ['ping', 'task_created'], secret_token: SECRET };
    const refusal = await api('POST', '/webhooks', bad);
    assert.equal(refusal.status, 400);
    expectErrorAnswer(400, '/webhooks');
    await page.goto(`${serve.url}/console/`);

    await page.getByLabel('Name').fill(bad.name);
    await page.getByLabel('URL').fill(bad.url);
    await page.getByLabel('Event types').fill('ping, task_created');
    await page.getByLabel('Secret token').fill(SECRET);
    await page.getByRole('button', { name: 'Create' }).click();

    const alert = page.getByRole('alert');
    await alert.waitFor();
    assert.equal((await alert.innerText()).trim(), refusal.body.detail);
    assert.equal(await page.getByLabel('Name').inputValue(), bad.name);
    assert.equal(await page.getByLabel('URL').inputValue(), bad.url);
    assert.equal(await page.getByLabel('Event types').inputValue(), 'ping, task_created');
    assert.equal(await page.getByLabel('Secret token').inputValue(), SECRET);

    await page.getByLabel('URL').fill(`${receiver.url}/ok`);
    await page.getByRole('button', { name: 'Create' }).click();
    await page.waitForURL(/\/console\/webhooks\/[0-9a-f-]{36}$/);
    await page.getByRole('heading', { level: 1, name: 'new-hook' }).waitFor();
    assert.equal(await page.getByRole('alert').count(), 0);
    await page.getByRole('status').filter({ hasText: /Created webhook new-hook/ }).waitFor();
    const id = page.url().split('/').pop();
    const stored = await api('GET', `/webhooks/${id}`);
    assert.deepEqual(stored.body.event_types, ['ping', 'task_created']);
    assert.equal(stored.body.has_secret_token, true);
    await check();
  });

  it('edits a webhook and deletes it only after the confirmation is accepted', async () => {
    const id = await createWebhook({ name: 'to-edit', url: `${receiver.url}/ok`, event_types: ['ping'], secret_token: SECRET });
    const { page, check } = await watchedPage(browser, { secrets: [SECRET] });
    await page.goto(`${serve.url}/console/webhooks/${id}`);

    await page.getByRole('button', { name: 'Edit' }).click();
    assert.equal(await page.getByLabel('Name').inputValue(), 'to-edit');
    await page.getByLabel('Name').fill('edited');
    await page.getByLabel('Event types').fill('ping task_failed');
    await page.getByLabel('Message format').selectOption('event_grid');
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByRole('heading', { level: 1, name: 'edited' }).waitFor();
    assert.match(await page.locator('dl.details').innerText(), /ping, task_failed/);
    const stored = (await api('GET', `/webhooks/${id}`)).body;
    assert.equal(stored.name, 'edited');
    assert.equal(stored.message_format, 'event_grid');
    assert.equal(stored.has_secret_token, true, 'an empty secret field keeps the secret');

    const messages = [];
    page.once('dialog', (dialog) => { messages.push(dialog.message()); dialog.dismiss(); });
    await page.getByRole('button', { name: 'Delete' }).click();
    await eventually(() => messages.length === 1, 'the confirmation');
    assert.match(messages[0], /Delete the webhook “edited”/);
    assert.equal((await api('GET', `/webhooks/${id}`)).status, 200, 'dismissed: still there');

    page.once('dialog', (dialog) => dialog.accept());
    await page.getByRole('button', { name: 'Delete' }).click();
    await page.waitForURL(`${serve.url}/console/`);
    await page.getByRole('status').filter({ hasText: /Deleted webhook edited/ }).waitFor();
    assert.equal(await page.getByRole('link', { name: 'edited', exact: true }).count(), 0);
    assert.equal((await api('GET', `/webhooks/${id}`)).status, 404);
    await check();
  });

  it('shows a ping in the deliveries list without a reload', async () => {
    const id = await createWebhook({ name: 'ping-me', url: `${receiver.url}/ok`, event_types: [] });
    const { page, check } = await watchedPage(browser);
    await page.goto(`${serve.url}/console/webhooks/${id}`);
    await page.getByText('No deliveries yet').first().waitFor();

    await page.getByRole('button', { name: 'Ping' }).click();

    await page.getByRole('status').filter({ hasText: /Ping queued/ }).waitFor();
    const row = page.locator('tbody tr', { hasText: 'ping' });
    await row.filter({ hasText: 'succeeded' }).waitFor({ timeout: 15000 });
    assert.match(await row.innerText(), /\b200\b/);
    assert.ok(receiver.requests.some((r) => r.url === '/ok' && r.body.includes('"event_type":"ping"')));
    await check();
  });

  it('redelivers a failed delivery, recovers failed ones since a time, and enables a disabled webhook', async () => {
    receiver.flaky.failing = true;
    const id = await createWebhook({ name: 'flaky', url: `${receiver.url}/flaky`, event_types: [] });
    assert.equal((await api('POST', `/webhooks/${id}/ping`)).status, 202);
    const [failed] = await settled(id, 1);
    assert.equal(failed.state, 'failed');
    const { page, check } = await watchedPage(browser);
    await page.goto(`${serve.url}/console/webhooks/${id}/deliveries/${failed.event_id}`);
    const attempts = page.locator('section', { has: page.getByRole('heading', { name: 'Attempts' }) });
    assert.match(await attempts.innerText(), /\b500\b[\s\S]*\b500\b/);
    assert.match(await attempts.innerText(), /flaky: down/);

    receiver.flaky.failing = false;
    await page.getByRole('button', { name: 'Redeliver' }).click();
    await page.locator('.badge.succeeded').waitFor({ timeout: 15000 });
    assert.match(await attempts.innerText(), /\b200\b/);

    // Recover: a new failure, then the form on the webhook page.
    receiver.flaky.failing = true;
    assert.equal((await api('POST', `/webhooks/${id}/ping`)).status, 202);
    await eventually(async () => (await deliveries(id)).some((e) => e.state === 'failed'), 'a second failure');
    receiver.flaky.failing = false;
    await page.goto(`${serve.url}/console/webhooks/${id}`);
    await page.getByRole('button', { name: 'Recover' }).click();
    await page.getByRole('status').filter({ hasText: /Queued 1 failed delivery again/ }).waitFor();
    await eventually(async () => (await deliveries(id)).every((e) => e.state === 'succeeded'), 'the recovered delivery');
    await page.locator('tbody .badge.failed').waitFor({ state: 'detached', timeout: 15000 });

    // Enable: a 410 Gone disables the webhook.
    const gone = await createWebhook({ name: 'gone', url: `${receiver.url}/gone`, event_types: [] });
    assert.equal((await api('POST', `/webhooks/${gone}/ping`)).status, 202);
    await eventually(async () => (await api('GET', `/webhooks/${gone}`)).body.state === 'disabled', 'the webhook disabled');
    await page.goto(`${serve.url}/console/webhooks/${gone}`);
    assert.match(await page.locator('dl.details').innerText(), /disabled/);
    await page.getByRole('button', { name: 'Enable' }).click();
    await page.locator('dl.details .badge.enabled').waitFor();
    assert.equal(await page.getByRole('button', { name: 'Enable' }).count(), 0);
    assert.equal((await api('GET', `/webhooks/${gone}`)).body.state, 'enabled');
    await check();
  });

  it('shows a webhook named like markup as text, never as HTML', async () => {
    const id = await createWebhook({ name: XSS_NAME, url: `${receiver.url}/ok`, event_types: ['ping'] });
    const { page, check } = await watchedPage(browser);
    await page.goto(`${serve.url}/console/`);

    await page.getByRole('link', { name: XSS_NAME }).click();
    await page.getByRole('heading', { level: 1, name: XSS_NAME }).waitFor();
    assert.equal(await page.locator('h1').innerText(), XSS_NAME);
    assert.equal(await page.locator('main img').count(), 0, 'no <img> element was made');
    assert.equal(await page.locator('main script').count(), 0);
    assert.equal(await page.title(), `${XSS_NAME} · Webhooks console`);
    assert.ok(id);
    await check();
  });

  it('shows custom header names and never their values', async () => {
    const HEADER_VALUE = 'Bearer header-value-secret-77aa';
    const answer = await api('POST', '/webhooks', {
      name: 'with-headers', url: `${receiver.url}/ok`, event_types: [], headers: { Authorization: HEADER_VALUE, 'X-Tenant': 'tenant-value-secret-42' },
    });
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    const id = answer.body.webhook_id;
    const { page, check } = await watchedPage(browser, { secrets: [HEADER_VALUE, 'tenant-value-secret-42'] });
    await page.goto(`${serve.url}/console/webhooks/${id}`);
    assert.match(await page.locator('dl.details').innerText(), /Custom headers\s+Authorization, X-Tenant/);
    await page.getByRole('button', { name: 'Ping' }).click();
    await page.locator('tbody .badge.succeeded').waitFor({ timeout: 15000 });
    await page.locator('tbody a').first().click();
    await page.getByRole('heading', { level: 1, name: 'Delivery of ping' }).waitFor();
    await check();
  });

  it('gives every page a title, one h1, labelled form controls and named buttons', async () => {
    const listing = (await api('GET', '/webhooks?limit=100')).body.items;
    const orders = listing.find((w) => w.name === 'orders-service');
    assert.ok(orders, 'the first test made orders-service');
    const [entry] = await deliveries(orders.webhook_id);
    const { page, check } = await watchedPage(browser);
    for (const path of ['/console/', `/console/webhooks/${orders.webhook_id}`, `/console/webhooks/${orders.webhook_id}/deliveries/${entry.event_id}`]) {
      await page.goto(serve.url + path);
      await page.locator('main h1').waitFor();
      if (path !== '/console/') await page.getByRole('button', { name: 'Redeliver' }).first().waitFor();
      const audit = await page.evaluate(() => ({
        lang: document.documentElement.lang,
        title: document.title,
        h1s: document.querySelectorAll('h1').length,
        unlabelled: [...document.querySelectorAll('input, select, textarea')].filter((el) => el.labels.length === 0).map((el) => el.outerHTML),
        unnamed: [...document.querySelectorAll('button, a')].filter((el) => !(el.textContent.trim() || el.getAttribute('aria-label'))).map((el) => el.outerHTML),
        images: [...document.querySelectorAll('[role="img"]')].map((el) => el.getAttribute('aria-label') || ''),
      }));
      assert.equal(audit.lang, 'en', path);
      assert.match(audit.title, /\S+ · Webhooks console$/, path);
      assert.equal(audit.h1s, 1, path);
      assert.deepEqual(audit.unlabelled, [], `${path}: every control has a label`);
      assert.deepEqual(audit.unnamed, [], `${path}: every button and link has a name`);
      assert.ok(audit.images.every((label) => label.length > 0), path);
    }
    await check();
  });

  it('works at phone width', async () => {
    const { page, check } = await watchedPage(browser, { viewport: { width: 390, height: 844 } });
    await page.goto(`${serve.url}/console/`);
    await page.getByRole('heading', { level: 1, name: 'Webhooks' }).waitFor();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.ok(overflow <= 0, `no sideways scrolling of the page (${overflow}px)`);
    await page.getByRole('button', { name: 'Create' }).waitFor();
    await page.getByRole('link', { name: 'orders-service' }).click();
    await page.getByRole('img', { name: /deliveries/ }).waitFor();
    // For a person to look at; not committed.
    await page.screenshot({ path: join(ROOT, 'target', 'console-phone.png'), fullPage: true });
    const wide = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.ok(wide <= 0, `the webhook page fits too (${wide}px)`);
    await check();
  });
});

describe('the console against a server with WEBHOOKS_API_TOKEN', () => {
  const TOKEN = 'console-api-token-91c2';
  let serve;
  let browser;

  before(async () => {
    serve = await startServe({ WEBHOOKS_API_TOKEN: TOKEN });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await serve?.stop();
  });

  it('asks for the token, keeps it for the tab only, and then shows the webhooks', async () => {
    const api = apiClient(serve.url, TOKEN);
    assert.equal((await api('POST', '/webhooks', { name: 'behind-a-token', url: 'http://127.0.0.1:9/x', event_types: [] })).status, 201);
    const { page, check, expectErrorAnswer } = await watchedPage(browser, { secrets: [TOKEN] });
    expectErrorAnswer(401, '/webhooks');
    expectErrorAnswer(401, '/webhooks');
    await page.goto(`${serve.url}/console/`);

    await page.getByLabel('API token').waitFor();
    assert.match(await page.getByRole('alert').innerText(), /\S/);
    await page.getByLabel('API token').fill('wrong-token');
    await page.getByRole('button', { name: 'Use token' }).click();
    // Refused again: a fresh, empty prompt replaces the one that held the wrong token.
    await page.waitForFunction(() => document.getElementById('api-token')?.value === '');
    await page.getByLabel('API token').fill(TOKEN);
    await page.getByRole('button', { name: 'Use token' }).click();
    await page.getByRole('link', { name: 'behind-a-token' }).waitFor();

    assert.equal(await page.evaluate(() => sessionStorage.getItem('webhooks.api-token')), TOKEN);
    assert.equal(await page.evaluate(() => localStorage.length), 0);
    assert.equal(await page.evaluate(() => document.cookie), '');
    assert.ok(!page.url().includes(TOKEN));
    await page.getByRole('link', { name: 'behind-a-token' }).click();
    await page.getByRole('heading', { level: 1, name: 'behind-a-token' }).waitFor();
    assert.ok(!page.url().includes(TOKEN));
    // The input is gone with the form, so the DOM holds no copy of the token.
    await check();

    // Another tab of a new browsing session asks again.
    const other = await watchedPage(browser);
    other.expectErrorAnswer(401, '/webhooks');
    await other.page.goto(`${serve.url}/console/`);
    await other.page.getByLabel('API token').waitFor();
    await other.check();
  });
});
