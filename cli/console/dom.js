// Building DOM from data. Every string becomes a text node or an attribute value set through
// the DOM, never markup: the API's names, URLs, payloads and response heads are untrusted.

const SVG_NS = 'http://www.w3.org/2000/svg';

function build(element, props, children) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      element.addEventListener(key.slice(2), value);
    } else if (key === 'dataset') {
      Object.assign(element.dataset, value);
    } else if (key === 'value' || key === 'checked') {
      element[key] = value;
    } else {
      element.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** `h('a', {href}, 'text', child, ...)`: an HTML element. */
export function h(tag, props, ...children) {
  return build(document.createElement(tag), props, children);
}

/** The same for SVG elements. */
export function s(tag, props, ...children) {
  return build(document.createElementNS(SVG_NS, tag), props, children);
}

/** Replaces an element's children. */
export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
}

/** `2026-12-01T19:52:21.123Z` → a <time> showing `2026-12-01 19:52:21 UTC`. */
export function time(iso) {
  if (!iso) return '—';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  const text = date.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
  return h('time', { datetime: date.toISOString() }, text);
}

/** The first 8 characters of an id, the rest in a tooltip. */
export function shortId(id) {
  return h('code', { class: 'id', title: String(id) }, String(id).slice(0, 8));
}

/** Event types from what a person types: commas or whitespace between names, duplicates kept for the API to judge. */
export function parseEventTypes(text) {
  return text.split(/[\s,]+/).map((t) => t.trim()).filter(Boolean);
}
