// The three pages of SPEC §12: the webhook list (with the create form), a webhook (details,
// actions, chart, recent deliveries, recover) and a delivery (attempts and payload).

import { api } from './api.js';
import { BASE, deliveryPath, showStatus, webhookPath } from './app.js';
import { deliveriesChart } from './chart.js';
import { h, parseEventTypes, replace, shortId, time } from './dom.js';

const FORMATS = [
  ['', 'Default (onefuzz)'],
  ['onefuzz', 'onefuzz'],
  ['event_grid', 'event_grid'],
  ['cloud_events', 'cloud_events'],
];
const FINAL = new Set(['succeeded', 'failed']);
const POLL_MS = 1500;
const POLL_AFTER_ACTION_MS = 20000;

let fieldCounter = 0;
/** Event id → until when its delivery page reloads itself after a redelivery. */
const watching = new Map();

/** A labelled input; `hint` becomes its description. */
function field(label, input, hint) {
  fieldCounter += 1;
  const id = `f${fieldCounter}`;
  input.id = id;
  const hintId = hint ? `${id}-hint` : null;
  if (hintId) input.setAttribute('aria-describedby', hintId);
  return h('div', { class: 'field' }, h('label', { for: id }, label), input, hint ? h('p', { class: 'hint', id: hintId }, hint) : null);
}

function formatSelect(selected) {
  return h('select', { name: 'message_format' }, FORMATS.map(([value, text]) => h('option', { value, selected: value === (selected || '') }, text)));
}

/** Runs an action from a button: disables it while the call is in flight, shows the API's detail on failure. */
async function act(ctx, button, where, action) {
  button.disabled = true;
  try {
    await action();
  } catch (err) {
    if (ctx.current()) ctx.showError(err, where);
  } finally {
    button.disabled = false;
  }
}

const NUMERIC = new Set(['#', 'Tries', 'Status code', 'Duration']);

function header(text) {
  return h('th', { scope: 'col', class: NUMERIC.has(text) ? 'num' : null }, text);
}

function stateBadge(state) {
  return h('span', { class: `badge ${state}` }, state);
}

function lastResult(entry) {
  const last = (entry.attempts || [])[entry.attempts.length - 1];
  if (!last) return '—';
  if (last.status_code) return String(last.status_code);
  return last.error ? last.error : '—';
}

// ---- the list ---------------------------------------------------------------------------

export async function listPage(ctx) {
  ctx.setTitle('Webhooks');
  const first = await api.listWebhooks();
  if (!ctx.current()) return;

  const tbody = h('tbody');
  const table = h('table', {}, h('caption', { class: 'visually-hidden' }, 'Webhooks'),
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Name'), h('th', { scope: 'col' }, 'Event types'), h('th', { scope: 'col' }, 'Format'), h('th', { scope: 'col' }, 'ID'))),
    tbody);
  const more = h('div', { class: 'actions' });
  const addRows = (page) => {
    for (const webhook of page.items || []) {
      tbody.append(h('tr', {},
        h('td', {}, h('a', { href: webhookPath(webhook.webhook_id) }, webhook.name)),
        h('td', {}, eventTypes(webhook.event_types)),
        h('td', {}, webhook.message_format || 'onefuzz'),
        h('td', {}, shortId(webhook.webhook_id))));
    }
    replace(more);
    if (page.next) {
      const button = h('button', { type: 'button' }, 'Load more');
      button.addEventListener('click', () => act(ctx, button, more, async () => {
        const next = await api.listWebhooks(page.next);
        if (ctx.current()) addRows(next);
      }));
      more.append(button);
    }
  };
  addRows(first);
  const empty = (first.items || []).length === 0;

  replace(ctx.main,
    h('h1', { tabindex: '-1' }, 'Webhooks'),
    h('div', { class: 'columns' },
      h('section', { class: 'card wide', 'aria-labelledby': 'list-heading' },
        h('h2', { id: 'list-heading' }, 'All webhooks'),
        empty ? h('p', {}, 'No webhooks yet: create one with the form.') : h('div', { class: 'scroll' }, table),
        more),
      createForm(ctx)));
}

function eventTypes(types) {
  if (!types || types.length === 0) return h('span', { class: 'muted' }, 'pings only');
  return types.join(', ');
}

function createForm(ctx) {
  const name = h('input', { name: 'name', type: 'text', required: true, maxlength: '256', autocomplete: 'off' });
  const url = h('input', { name: 'url', type: 'url', required: true, placeholder: 'https://example.com/hook', autocomplete: 'off', spellcheck: 'false' });
  const types = h('input', { name: 'event_types', type: 'text', placeholder: 'ping, task_created', autocomplete: 'off', spellcheck: 'false' });
  const secret = h('input', { name: 'secret_token', type: 'password', autocomplete: 'new-password' });
  const format = formatSelect('');
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Create');
  const form = h('form', { class: 'card', 'aria-labelledby': 'create-heading', novalidate: true },
    h('h2', { id: 'create-heading' }, 'Create a webhook'),
    field('Name', name),
    field('URL', url, 'Where deliveries are POSTed (http or https).'),
    field('Event types', types, 'Comma- or space-separated names; * subscribes to every OneFuzz event type; empty means pings only.'),
    field('Secret token', secret, 'Optional. Signs each delivery; it is never shown again.'),
    field('Message format', format),
    h('div', { class: 'actions' }, submit));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    act(ctx, submit, form, async () => {
      const body = { name: name.value, url: url.value, event_types: parseEventTypes(types.value) };
      if (secret.value) body.secret_token = secret.value;
      if (format.value) body.message_format = format.value;
      const created = await api.createWebhook(body);
      if (ctx.current()) ctx.navigate(webhookPath(created.webhook_id), `Created webhook ${created.name}.`);
    });
  });
  return form;
}

// ---- a webhook --------------------------------------------------------------------------

export async function webhookPage(ctx, { id }) {
  const [webhook, logs] = await Promise.all([api.getWebhook(id), api.logs(id)]);
  if (!ctx.current()) return;
  ctx.setTitle(webhook.name);

  const deliveries = h('section', { class: 'card', 'aria-labelledby': 'deliveries-heading' });
  const chart = h('section', { class: 'card', 'aria-labelledby': 'chart-heading' });
  const editArea = h('div');
  let pollUntil = 0;
  let timer = null;
  let entries = logs.items || [];
  let next = logs.next;

  const drawDeliveries = () => {
    replace(chart, h('h2', { id: 'chart-heading' }, 'Deliveries over time'), deliveriesChart(entries));
    replace(deliveries, h('h2', { id: 'deliveries-heading' }, 'Recent deliveries'), deliveryTable(ctx, webhook, entries, startPolling),
      h('div', { class: 'actions' },
        refreshButton(),
        next ? loadOlderButton() : null));
  };
  const refresh = async () => {
    const page = await api.logs(id);
    if (!ctx.current()) return;
    entries = page.items || [];
    next = page.next;
    drawDeliveries();
  };
  const refreshButton = () => {
    const button = h('button', { type: 'button' }, 'Refresh');
    button.addEventListener('click', () => act(ctx, button, deliveries, refresh));
    return button;
  };
  const loadOlderButton = () => {
    const button = h('button', { type: 'button' }, 'Load older');
    button.addEventListener('click', () => act(ctx, button, deliveries, async () => {
      const page = await api.logs(id, next);
      if (!ctx.current()) return;
      entries = entries.concat(page.items || []);
      next = page.next;
      drawDeliveries();
    }));
    return button;
  };
  // New and unfinished deliveries show up without a reload: poll while any is pending and for
  // a while after an action.
  const tick = async () => {
    timer = null;
    if (!ctx.current()) return;
    try {
      await refresh();
    } catch (err) {
      if (ctx.current()) ctx.showError(err, deliveries);
      return;
    }
    schedule();
  };
  const schedule = () => {
    if (timer || !ctx.current()) return;
    const pending = entries.some((e) => !FINAL.has(e.state));
    if (pending || Date.now() < pollUntil) timer = setTimeout(tick, POLL_MS);
  };
  function startPolling() {
    pollUntil = Date.now() + POLL_AFTER_ACTION_MS;
    schedule();
  }
  ctx.onLeave(() => { if (timer) clearTimeout(timer); });

  const actions = webhookActions(ctx, webhook, editArea, startPolling);
  replace(ctx.main,
    h('nav', { 'aria-label': 'Breadcrumb', class: 'crumbs' }, h('a', { href: BASE }, 'Webhooks'), ' › ', h('span', { 'aria-current': 'page' }, webhook.name)),
    h('h1', { tabindex: '-1' }, webhook.name),
    h('div', { class: 'columns' },
      h('section', { class: 'card', 'aria-labelledby': 'details-heading' },
        h('h2', { id: 'details-heading' }, 'Details'),
        details(webhook),
        actions,
        editArea),
      chart),
    deliveries,
    recoverForm(ctx, webhook, startPolling));
  drawDeliveries();
  schedule();
}

function details(webhook) {
  const rows = [
    ['ID', h('code', {}, webhook.webhook_id)],
    ['URL', h('code', { class: 'wrap' }, webhook.url)],
    ['Event types', eventTypes(webhook.event_types)],
    ['Message format', webhook.message_format || 'onefuzz (default)'],
    ['State', [stateBadge(webhook.state), webhook.disabled_reason ? ` ${webhook.disabled_reason}` : null]],
    ['Secret token', webhook.has_secret_token ? 'set (write-only, never shown)' : 'none'],
  ];
  if (Array.isArray(webhook.header_names)) {
    rows.push(['Custom headers', webhook.header_names.length ? `${webhook.header_names.join(', ')} (values are write-only)` : 'none']);
  }
  if (webhook.rate_limit_per_second) rows.push(['Rate limit', `${webhook.rate_limit_per_second} attempts per second`]);
  rows.push(['Created', time(webhook.created_at)], ['Updated', time(webhook.updated_at)]);
  return h('dl', { class: 'details' }, rows.map(([term, value]) => [h('dt', {}, term), h('dd', {}, value)]));
}

function webhookActions(ctx, webhook, editArea, startPolling) {
  const bar = h('div', { class: 'actions' });
  const ping = h('button', { type: 'button', class: 'primary' }, 'Ping');
  ping.addEventListener('click', () => act(ctx, ping, bar, async () => {
    const answer = await api.ping(webhook.webhook_id);
    if (!ctx.current()) return;
    showStatus(`Ping queued (ping id ${String(answer.ping_id).slice(0, 8)}); it appears in the deliveries below.`);
    startPolling();
  }));
  const edit = h('button', { type: 'button' }, 'Edit');
  edit.addEventListener('click', () => {
    replace(editArea, editForm(ctx, webhook, () => replace(editArea)));
    editArea.querySelector('input')?.focus();
  });
  const remove = h('button', { type: 'button', class: 'danger' }, 'Delete');
  remove.addEventListener('click', () => {
    // The browser's own confirmation: modal, keyboard-accessible, and it cannot be styled away.
    if (!window.confirm(`Delete the webhook “${webhook.name}”? Its deliveries stop; this cannot be undone.`)) return;
    act(ctx, remove, bar, async () => {
      await api.deleteWebhook(webhook.webhook_id);
      if (ctx.current()) ctx.navigate(BASE, `Deleted webhook ${webhook.name}.`);
    });
  });
  bar.append(ping, edit);
  if (webhook.state === 'disabled') {
    const enable = h('button', { type: 'button' }, 'Enable');
    enable.addEventListener('click', () => act(ctx, enable, bar, async () => {
      await api.updateWebhook(webhook.webhook_id, { state: 'enabled' });
      if (ctx.current()) ctx.reload(`Enabled webhook ${webhook.name}.`);
    }));
    bar.append(enable);
  }
  bar.append(remove);
  return bar;
}

function editForm(ctx, webhook, close) {
  const name = h('input', { name: 'name', type: 'text', required: true, value: webhook.name, autocomplete: 'off' });
  const url = h('input', { name: 'url', type: 'url', required: true, value: webhook.url || '', autocomplete: 'off', spellcheck: 'false' });
  const types = h('input', { name: 'event_types', type: 'text', value: (webhook.event_types || []).join(', '), autocomplete: 'off', spellcheck: 'false' });
  const secret = h('input', { name: 'secret_token', type: 'password', autocomplete: 'new-password' });
  const removeSecret = h('input', { name: 'remove_secret', type: 'checkbox' });
  const format = formatSelect(webhook.message_format);
  const save = h('button', { type: 'submit', class: 'primary' }, 'Save');
  const cancel = h('button', { type: 'button', onclick: close }, 'Cancel');
  const form = h('form', { class: 'edit', 'aria-labelledby': 'edit-heading', novalidate: true },
    h('h3', { id: 'edit-heading' }, 'Edit webhook'),
    field('Name', name),
    field('URL', url),
    field('Event types', types, 'Replaces the whole list. Comma- or space-separated; * for every OneFuzz event type.'),
    field('Secret token', secret, webhook.has_secret_token ? 'Leave empty to keep the current secret.' : 'Leave empty for none.'),
    webhook.has_secret_token ? h('div', { class: 'field check' }, removeSecret, h('label', { for: (removeSecret.id = `rm${++fieldCounter}`) }, 'Remove the secret')) : null,
    field('Message format', format),
    h('div', { class: 'actions' }, save, cancel));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    act(ctx, save, form, async () => {
      const body = { name: name.value, url: url.value, event_types: parseEventTypes(types.value) };
      if (removeSecret.checked) body.secret_token = null;
      else if (secret.value) body.secret_token = secret.value;
      if (format.value) body.message_format = format.value;
      await api.updateWebhook(webhook.webhook_id, body);
      if (ctx.current()) ctx.reload('Saved.');
    });
  });
  return form;
}

function deliveryTable(ctx, webhook, entries, startPolling) {
  if (entries.length === 0) return h('p', {}, 'No deliveries yet. Ping the webhook, or publish an event it subscribes to.');
  const rows = entries.map((entry) => {
    let action = null;
    if (FINAL.has(entry.state)) {
      const cell = h('td');
      const button = h('button', { type: 'button', class: 'small' }, 'Redeliver');
      button.addEventListener('click', () => act(ctx, button, cell, async () => {
        await api.redeliver(webhook.webhook_id, entry.event_id);
        if (!ctx.current()) return;
        showStatus(`Redelivery of event ${String(entry.event_id).slice(0, 8)} queued.`);
        startPolling();
      }));
      cell.append(button);
      action = cell;
    }
    return h('tr', {},
      h('td', {}, h('a', { href: deliveryPath(webhook.webhook_id, entry.event_id), title: String(entry.event_id) }, h('code', {}, String(entry.event_id).slice(0, 8)))),
      h('td', {}, entry.event_type),
      h('td', {}, stateBadge(entry.state)),
      h('td', { class: 'num' }, String(entry.try_count)),
      h('td', { class: 'clip' }, lastResult(entry)),
      h('td', {}, time(entry.created_at)),
      action || h('td'));
  });
  return h('div', { class: 'scroll' }, h('table', {},
    h('caption', { class: 'visually-hidden' }, 'Recent deliveries, newest first'),
    h('thead', {}, h('tr', {}, ['Event', 'Type', 'State', 'Tries', 'Last result', 'Created', 'Action'].map(header))),
    h('tbody', {}, rows)));
}

function recoverForm(ctx, webhook, startPolling) {
  const dayAgo = new Date(Date.now() - 24 * 3600 * 1000);
  const local = new Date(dayAgo.getTime() - dayAgo.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
  const since = h('input', { name: 'since', type: 'datetime-local', value: local, required: true, step: '60' });
  const submit = h('button', { type: 'submit' }, 'Recover');
  const form = h('form', { class: 'card', 'aria-labelledby': 'recover-heading', novalidate: true },
    h('h2', { id: 'recover-heading' }, 'Recover failed deliveries'),
    h('p', {}, 'Sends every delivery that failed since the given time (your local time) again.'),
    h('div', { class: 'inline' }, field('Failed since', since), submit));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    act(ctx, submit, form, async () => {
      const when = new Date(since.value);
      const iso = Number.isNaN(when.getTime()) ? since.value : when.toISOString();
      const answer = await api.recover(webhook.webhook_id, iso);
      if (!ctx.current()) return;
      const n = Number(answer.queued) || 0;
      showStatus(`Queued ${n} failed ${n === 1 ? 'delivery' : 'deliveries'} again.`);
      startPolling();
    });
  });
  return form;
}

// ---- a delivery -------------------------------------------------------------------------

export async function deliveryPage(ctx, { id, eventId }) {
  const [webhook, entry] = await Promise.all([api.getWebhook(id), api.log(id, eventId)]);
  if (!ctx.current()) return;
  ctx.setTitle(`Delivery ${String(entry.event_id).slice(0, 8)} · ${webhook.name}`);
  let timer = null;
  ctx.onLeave(() => { if (timer) clearTimeout(timer); });
  const poll = () => {
    timer = setTimeout(() => { timer = null; if (ctx.current()) ctx.reload(); }, POLL_MS);
  };

  const actions = h('div', { class: 'actions' });
  if (FINAL.has(entry.state)) {
    const button = h('button', { type: 'button', class: 'primary' }, 'Redeliver');
    button.addEventListener('click', () => act(ctx, button, actions, async () => {
      await api.redeliver(webhook.webhook_id, entry.event_id);
      if (!ctx.current()) return;
      watching.set(entry.event_id, Date.now() + POLL_AFTER_ACTION_MS);
      showStatus('Redelivery queued.');
      if (!timer) poll();
    }));
    actions.append(button);
  }
  // The redelivery may not have started yet when the page reloads: keep watching a while.
  if (!FINAL.has(entry.state) || Date.now() < (watching.get(entry.event_id) || 0)) poll();

  const summary = h('dl', { class: 'details' },
    [
      ['Event ID', h('code', {}, entry.event_id)],
      ['Event type', entry.event_type],
      ['State', stateBadge(entry.state)],
      ['Tries', String(entry.try_count)],
      ['Created', time(entry.created_at)],
      ['Updated', time(entry.updated_at)],
      entry.next_attempt_at ? ['Next attempt', time(entry.next_attempt_at)] : null,
    ].filter(Boolean).map(([term, value]) => [h('dt', {}, term), h('dd', {}, value)]));

  const attempts = (entry.attempts || []).length === 0
    ? h('p', {}, 'No attempt yet.')
    : h('div', { class: 'scroll' }, h('table', {},
      h('caption', { class: 'visually-hidden' }, 'Attempts, oldest first'),
      h('thead', {}, h('tr', {}, ['#', 'At', 'Status code', 'Error', 'Duration', 'Response head'].map(header))),
      h('tbody', {}, entry.attempts.map((a) => h('tr', {},
        h('td', { class: 'num' }, String(a.attempt)),
        h('td', {}, time(a.at)),
        h('td', { class: 'num' }, a.status_code ? String(a.status_code) : '—'),
        h('td', {}, a.error || '—'),
        h('td', { class: 'num' }, `${a.duration_ms} ms`),
        h('td', {}, a.response_head ? h('pre', { class: 'head' }, a.response_head) : '—'))))));

  const payload = entry.event === undefined ? h('p', {}, 'The payload is not available.') : h('pre', { class: 'payload', tabindex: '0' }, h('code', {}, JSON.stringify(entry.event, null, 2)));

  replace(ctx.main,
    h('nav', { 'aria-label': 'Breadcrumb', class: 'crumbs' },
      h('a', { href: BASE }, 'Webhooks'), ' › ', h('a', { href: webhookPath(webhook.webhook_id) }, webhook.name), ' › ',
      h('span', { 'aria-current': 'page' }, `Delivery ${String(entry.event_id).slice(0, 8)}`)),
    h('h1', { tabindex: '-1' }, `Delivery of ${entry.event_type}`),
    h('div', { class: 'columns side' },
      h('section', { class: 'card', 'aria-labelledby': 'summary-heading' }, h('h2', { id: 'summary-heading' }, 'Summary'), summary, actions),
      h('section', { class: 'card', 'aria-labelledby': 'attempts-heading' }, h('h2', { id: 'attempts-heading' }, 'Attempts'), attempts)),
    h('section', { class: 'card', 'aria-labelledby': 'payload-heading' }, h('h2', { id: 'payload-heading' }, 'Event payload'), payload));
}
