// The public API, same origin. With WEBHOOKS_API_TOKEN on the server, the token the operator
// types is kept for this tab only (sessionStorage): never a cookie, never in a URL.

const TOKEN_KEY = 'webhooks.api-token';

export class ApiError extends Error {
  constructor(status, problem) {
    const detail = typeof problem?.detail === 'string' && problem.detail ? problem.detail : `HTTP ${status}`;
    super(detail);
    this.status = status;
    this.title = typeof problem?.title === 'string' ? problem.title : '';
    this.detail = detail;
  }
}

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY) || '',
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

/** Calls the API; resolves to the parsed JSON answer, rejects with an ApiError carrying the problem+json detail. */
export async function call(method, path, body) {
  const headers = { Accept: 'application/json' };
  const bearer = token.get();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  const init = { method, headers, cache: 'no-store', credentials: 'omit', redirect: 'error' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, { detail: `cannot reach the server (${err.message})` });
  }
  const text = await response.text();
  let value = null;
  try {
    value = text ? JSON.parse(text) : null;
  } catch {
    value = null;
  }
  if (!response.ok) {
    throw new ApiError(response.status, value && typeof value === 'object' ? value : { detail: text.slice(0, 300) });
  }
  return value;
}

const segment = (value) => encodeURIComponent(String(value));

export const api = {
  listWebhooks: (next) => call('GET', `/webhooks?limit=100${next ? `&next=${segment(next)}` : ''}`),
  getWebhook: (id) => call('GET', `/webhooks/${segment(id)}`),
  createWebhook: (body) => call('POST', '/webhooks', body),
  updateWebhook: (id, body) => call('PATCH', `/webhooks/${segment(id)}`, body),
  deleteWebhook: (id) => call('DELETE', `/webhooks/${segment(id)}`),
  ping: (id) => call('POST', `/webhooks/${segment(id)}/ping`),
  logs: (id, next) => call('GET', `/webhooks/${segment(id)}/logs?limit=100${next ? `&next=${segment(next)}` : ''}`),
  log: (id, eventId) => call('GET', `/webhooks/${segment(id)}/logs/${segment(eventId)}`),
  redeliver: (id, eventId) => call('POST', `/webhooks/${segment(id)}/logs/${segment(eventId)}/redeliver`),
  recover: (id, since) => call('POST', `/webhooks/${segment(id)}/recover`, { since }),
};
