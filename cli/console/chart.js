// The deliveries chart, drawn as SVG from the log listing the page already fetched (the most
// recent entries): outcomes per time bucket, and p50/p99 attempt latency per bucket.

import { h, s } from './dom.js';

const WIDTH = 560;
const HEIGHT = 290;
const LEFT = 58;
const RIGHT = 10;
const BARS = { top: 30, bottom: 130 };
const LINES = { top: 176, bottom: 256 };
/** The shortest time axis, for a listing whose deliveries all started at once. */
const MIN_SPAN_MS = 1000;
const BUCKETS = 12;

const OUTCOMES = [
  { key: 'succeeded', label: 'Succeeded', className: 'ok' },
  { key: 'failed', label: 'Failed', className: 'bad' },
  { key: 'pending', label: 'Queued or retrying', className: 'wait' },
];

/** Nearest-rank percentile of numbers (0 for none). */
export function percentile(values, p) {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

function outcome(entry) {
  if (entry.state === 'succeeded') return 'succeeded';
  if (entry.state === 'failed') return 'failed';
  return 'pending';
}

function clock(ms, spanMs) {
  const iso = new Date(ms).toISOString();
  return spanMs > 36 * 3600 * 1000 ? iso.slice(5, 16).replace('T', ' ') : iso.slice(11, 19);
}

function duration(ms) {
  if (ms < 1000) return `${Math.max(1, Math.round(ms))} ms`;
  if (ms < 120 * 1000) return `${Math.round(ms / 100) / 10} s`;
  if (ms < 120 * 60 * 1000) return `${Math.round(ms / 60000)} min`;
  if (ms < 48 * 3600 * 1000) return `${Math.round(ms / 360000) / 10} h`;
  return `${Math.round(ms / 8640000) / 10} days`;
}

function summarize(entries) {
  const counts = { succeeded: 0, failed: 0, pending: 0 };
  for (const entry of entries) counts[outcome(entry)] += 1;
  const durations = entries.flatMap((e) => (e.attempts || []).map((a) => Number(a.duration_ms) || 0));
  return { counts, attempts: durations.length, p50: percentile(durations, 50), p99: percentile(durations, 99) };
}

/** The chart and its text summary, for `entries` from GET /webhooks/{id}/logs. */
export function deliveriesChart(entries) {
  const summary = summarize(entries);
  const { counts } = summary;
  const label = entries.length === 0
    ? 'Recent deliveries over time: none yet'
    : `Recent deliveries over time: ${entries.length} deliveries, ${counts.succeeded} succeeded, ${counts.failed} failed, `
      + `${counts.pending} queued or retrying; attempt latency p50 ${summary.p50} ms, p99 ${summary.p99} ms`;

  const times = entries.map((e) => Date.parse(e.created_at)).filter(Number.isFinite);
  // The axis runs from the oldest to the newest delivery shown, so the buckets spread over
  // whatever time the listing covers (seconds in a test, days in production).
  const end = times.length ? Math.max(...times) : Date.now();
  const start = times.length ? Math.min(...times) : end - 3600 * 1000;
  const span = Math.max(end - start, MIN_SPAN_MS) * 1.0001;
  const step = span / BUCKETS;
  const bucketOf = (ms) => Math.min(BUCKETS - 1, Math.max(0, Math.floor((ms - start) / step)));

  const buckets = Array.from({ length: BUCKETS }, () => ({ succeeded: 0, failed: 0, pending: 0, durations: [] }));
  for (const entry of entries) {
    const at = Date.parse(entry.created_at);
    if (Number.isFinite(at)) buckets[bucketOf(at)][outcome(entry)] += 1;
    for (const attempt of entry.attempts || []) {
      const attemptAt = Date.parse(attempt.at);
      if (Number.isFinite(attemptAt)) buckets[bucketOf(attemptAt)].durations.push(Number(attempt.duration_ms) || 0);
    }
  }

  const plotWidth = WIDTH - LEFT - RIGHT;
  const slot = plotWidth / BUCKETS;
  const maxCount = Math.max(1, ...buckets.map((b) => b.succeeded + b.failed + b.pending));
  const latencies = buckets.map((b) => ({ p50: percentile(b.durations, 50), p99: percentile(b.durations, 99), n: b.durations.length }));
  const maxLatency = Math.max(1, ...latencies.map((l) => l.p99));

  const svg = s('svg', {
    class: 'chart',
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    role: 'img',
    'aria-label': label,
    preserveAspectRatio: 'xMidYMid meet',
  });
  svg.append(s('title', {}, label));

  // Outcome bars.
  svg.append(s('text', { x: 0, y: 14, class: 'chart-title' }, `Deliveries per ${duration(step)} (by creation time)`));
  axis(svg, BARS, maxCount, String(maxCount));
  buckets.forEach((bucket, i) => {
    let y = BARS.bottom;
    const x = LEFT + i * slot + slot * 0.15;
    for (const { key, className } of OUTCOMES) {
      const height = (bucket[key] / maxCount) * (BARS.bottom - BARS.top);
      if (height <= 0) continue;
      y -= height;
      svg.append(s('rect', { x: x.toFixed(1), y: y.toFixed(1), width: (slot * 0.7).toFixed(1), height: height.toFixed(1), class: `bar ${className}` }));
    }
  });

  // Latency lines.
  svg.append(s('text', { x: 0, y: LINES.top - 14, class: 'chart-title' }, 'Attempt latency: p50 (solid) and p99 (dashed)'));
  axis(svg, LINES, maxLatency, `${maxLatency} ms`);
  for (const [key, className] of [['p99', 'p99'], ['p50', 'p50']]) {
    const points = latencies
      .map((l, i) => (l.n ? [LEFT + i * slot + slot / 2, LINES.bottom - (l[key] / maxLatency) * (LINES.bottom - LINES.top)] : null))
      .filter(Boolean);
    if (points.length > 1) {
      svg.append(s('polyline', { points: points.map((p) => p.map((v) => v.toFixed(1)).join(',')).join(' '), class: `line ${className}` }));
    }
    for (const [x, y] of points) svg.append(s('circle', { cx: x.toFixed(1), cy: y.toFixed(1), r: 3, class: `dot ${className}` }));
  }

  // Time axis: start, middle, end.
  for (const [fraction, anchor] of [[0, 'start'], [0.5, 'middle'], [1, 'end']]) {
    svg.append(s('text', { x: (LEFT + fraction * plotWidth).toFixed(1), y: HEIGHT - 6, class: 'tick', 'text-anchor': anchor }, clock(start + fraction * span, span)));
  }

  const legend = h('ul', { class: 'legend' },
    OUTCOMES.map(({ key, label: name, className }) => h('li', {}, h('span', { class: `swatch ${className}`, 'aria-hidden': 'true' }), `${name}: ${counts[key]}`)),
    h('li', {}, h('span', { class: 'swatch p50', 'aria-hidden': 'true' }), `p50: ${summary.p50} ms`),
    h('li', {}, h('span', { class: 'swatch p99', 'aria-hidden': 'true' }), `p99: ${summary.p99} ms`));
  const note = h('p', { class: 'hint' }, entries.length
    ? `From the ${entries.length} most recent deliveries (${summary.attempts} attempts), ${clock(start, span)} to ${clock(end, span)} UTC.`
    : 'No deliveries yet: ping the webhook to see one.');
  return h('figure', { class: 'chart-figure' }, svg, h('figcaption', {}, legend, note));
}

function axis(svg, band, max, topLabel) {
  svg.append(s('line', { x1: LEFT, x2: WIDTH - RIGHT, y1: band.bottom, y2: band.bottom, class: 'axis' }));
  svg.append(s('line', { x1: LEFT, x2: WIDTH - RIGHT, y1: band.top, y2: band.top, class: 'grid' }));
  svg.append(s('text', { x: LEFT - 6, y: band.top + 4, class: 'tick', 'text-anchor': 'end' }, topLabel));
  svg.append(s('text', { x: LEFT - 6, y: band.bottom + 4, class: 'tick', 'text-anchor': 'end' }, '0'));
}
