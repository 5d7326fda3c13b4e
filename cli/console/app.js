// The console's shell: client-side routing over /console/ deep links, the API token prompt,
// and the one alert/status region each page shows.

import { ApiError, token } from './api.js';
import { h, replace } from './dom.js';
import { deliveryPage, listPage, webhookPage } from './pages.js';

export const BASE = '/console/';

const main = document.getElementById('main');
const session = document.getElementById('session');
let generation = 0;
let cleanups = [];
let flash = null;

/** The page routes; anything else under /console/ never reaches here (the server answers 404). */
function match(pathname) {
  const rest = pathname.startsWith(BASE) ? pathname.slice(BASE.length) : '';
  let parts;
  try {
    parts = rest.split('/').map((p) => decodeURIComponent(p));
  } catch {
    return null;
  }
  if (rest === '') return { page: listPage, params: {} };
  if (parts.length === 2 && parts[0] === 'webhooks' && parts[1]) return { page: webhookPage, params: { id: parts[1] } };
  if (parts.length === 4 && parts[0] === 'webhooks' && parts[2] === 'deliveries' && parts[1] && parts[3]) {
    return { page: deliveryPage, params: { id: parts[1], eventId: parts[3] } };
  }
  return null;
}

export function webhookPath(id) {
  return `${BASE}webhooks/${encodeURIComponent(id)}`;
}

export function deliveryPath(id, eventId) {
  return `${webhookPath(id)}/deliveries/${encodeURIComponent(eventId)}`;
}

/** Goes to a console page without reloading; `message` is shown there as a status. */
export function navigate(path, message) {
  flash = message || null;
  history.pushState(null, '', path);
  window.scrollTo(0, 0);
  render();
}

/** The context a page renders with. */
function context(myGeneration) {
  return {
    main,
    /** Whether the page is still the one shown (stop polling and ignore late answers if not). */
    current: () => myGeneration === generation,
    onLeave: (cleanup) => cleanups.push(cleanup),
    setTitle: (title) => { document.title = title ? `${title} · Webhooks console` : 'Webhooks console'; },
    navigate,
    showError,
    reload: (message) => { flash = message || null; render(); },
  };
}

/**
 * Shows an API error: a 401 asks for the token; anything else puts the problem+json detail in
 * the page's one role="alert" element, inside `where` (a form, so the typed values stay).
 */
export function showError(err, where) {
  if (err instanceof ApiError && err.status === 401) {
    tokenPrompt(err.detail);
    return;
  }
  for (const old of document.querySelectorAll('[role="alert"]')) old.remove();
  const detail = err instanceof ApiError ? err.detail : `Something went wrong in the console: ${err?.message || err}`;
  const alert = h('div', { role: 'alert', class: 'alert' }, detail);
  (where || main).prepend(alert);
}

/** Shows a short status line (role="status") at the top of the page. */
export function showStatus(message) {
  for (const old of document.querySelectorAll('.status')) old.remove();
  if (message) main.prepend(h('p', { role: 'status', class: 'status' }, message));
}

function tokenPrompt(detail) {
  leave();
  document.title = 'API token required · Webhooks console';
  const input = h('input', { id: 'api-token', name: 'api-token', type: 'password', autocomplete: 'off', required: true, spellcheck: 'false' });
  const form = h('form', {
    class: 'card narrow',
    onsubmit: (event) => {
      event.preventDefault();
      token.set(input.value);
      render();
    },
  },
  h('h1', { tabindex: '-1' }, 'API token required'),
  h('div', { role: 'alert', class: 'alert' }, detail),
  h('p', {}, 'This server requires the token it was started with (WEBHOOKS_API_TOKEN). The console keeps it for this tab only, in session storage.'),
  h('div', { class: 'field' }, h('label', { for: 'api-token' }, 'API token'), input),
  h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Use token')));
  replace(main, form);
  renderSession();
  input.focus();
}

function renderSession() {
  if (token.get()) {
    replace(session, h('button', {
      type: 'button',
      class: 'link',
      onclick: () => { token.clear(); render(); },
    }, 'Forget API token'));
  } else {
    replace(session);
  }
}

function leave() {
  generation += 1;
  for (const cleanup of cleanups) cleanup();
  cleanups = [];
}

async function render() {
  leave();
  renderSession();
  const route = match(location.pathname);
  const ctx = context(generation);
  if (!route) {
    ctx.setTitle('Not found');
    replace(main, h('h1', { tabindex: '-1' }, 'Not found'), h('p', {}, h('a', { href: BASE }, 'Back to the webhooks')));
    return;
  }
  const message = flash;
  flash = null;
  try {
    await route.page(ctx, route.params);
    if (!ctx.current()) return;
    if (message) showStatus(message);
    const heading = main.querySelector('h1');
    if (heading && document.activeElement === document.body) heading.focus({ preventScroll: true });
  } catch (err) {
    if (!ctx.current()) return;
    if (!(err instanceof ApiError && err.status === 401)) {
      ctx.setTitle('Error');
      replace(main, h('h1', { tabindex: '-1' }, 'Cannot show this page'), h('p', {}, h('a', { href: BASE }, 'Back to the webhooks')));
    }
    showError(err);
  }
}

document.addEventListener('click', (event) => {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const link = event.target instanceof Element ? event.target.closest('a[href]') : null;
  if (!link || link.origin !== location.origin || !link.pathname.startsWith(BASE) || link.target) return;
  event.preventDefault();
  navigate(link.pathname);
});
window.addEventListener('popstate', () => render());

render();
