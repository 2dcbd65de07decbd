// The mqd operator console (GET /ui): plain JavaScript, no framework, no build step, nothing from the
// internet. Everything it shows comes from mqd's JSON API on the same origin (docs/http-api.md):
// /topics and /stats every second (tables, tiles and the charts, drawn from the deltas of /stats'
// counters), /messages (the browser), /seek, /redrive and DELETE /group (the actions).
//
// Untrusted text (payloads, keys, header names and values, group names, error messages) reaches the
// page only as text nodes or attribute values set through the DOM, never as HTML.

const REFRESH_MS = 1000;
const WINDOW_MS = 5 * 60 * 1000; // what the charts show at most (less while the page is young)
const TOKEN_KEY = 'mqd.token';
const SERIES_COLORS = ['--c-produce', '--c-deliver', '--c-ack', '--c-dead', '--c-5', '--c-6'];

// ---------------------------------------------------------------------------------------------
// DOM: h() builds elements (text only through text nodes), patch() updates a live region in place
// so that a refresh every second keeps buttons, focus and hover where they are.

function h(tag, props, ...kids) {
  const el = document.createElement(tag);
  let value;
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v == null || v === false) continue;
      if (k.startsWith('on')) {
        (el._on ??= {})[k.slice(2)] = v;
        listen(el, k.slice(2));
      } else if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k === 'value') value = v;
      else if (k === 'checked') el.checked = true;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  add(el, kids);
  if (value !== undefined) el.value = value;
  return el;
}

function add(el, kids) {
  for (const k of kids) {
    if (k == null || k === false) continue;
    if (Array.isArray(k)) add(el, k);
    else el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
}

// Handlers go through el._on so that patch() can swap them on a node it keeps.
function listen(el, type) {
  el._types ??= new Set();
  if (el._types.has(type)) return;
  el._types.add(type);
  el.addEventListener(type, (ev) => el._on?.[type]?.(ev));
}

function morph(old, neu) {
  if (old.nodeType !== neu.nodeType || old.nodeName !== neu.nodeName ||
      (old.nodeType === 1 && old.getAttribute('data-key') !== neu.getAttribute('data-key'))) {
    old.replaceWith(neu);
    return;
  }
  if (old.nodeType !== 1) {
    if (old.nodeValue !== neu.nodeValue) old.nodeValue = neu.nodeValue;
    return;
  }
  for (const { name } of [...old.attributes]) if (!neu.hasAttribute(name)) old.removeAttribute(name);
  for (const { name, value } of neu.attributes) if (old.getAttribute(name) !== value) old.setAttribute(name, value);
  if (neu._on) for (const type of Object.keys(neu._on)) listen(old, type);
  old._on = neu._on;
  morphChildren(old, neu);
}

function morphChildren(old, neu) {
  const next = [...neu.childNodes];
  next.forEach((n, i) => {
    const o = old.childNodes[i];
    if (o) morph(o, n);
    else old.appendChild(n);
  });
  while (old.childNodes.length > next.length) old.lastChild.remove();
}

function patch(slot, ...kids) {
  const fresh = slot.cloneNode(false);
  add(fresh, kids);
  morphChildren(slot, fresh);
}

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------------------------
// Formatting

const nf = new Intl.NumberFormat();
const fmtInt = (n) => (n == null || Number.isNaN(n) ? '–' : nf.format(n));

function fmtRate(r) {
  if (r == null) return '–';
  if (r === 0) return '0';
  if (r < 10) return r.toFixed(1);
  return nf.format(Math.round(r));
}

function fmtCompact(v) {
  const a = Math.abs(v);
  const t = (x) => String(+x.toFixed(Math.abs(x) >= 100 || Number.isInteger(x) ? 0 : Math.abs(x) >= 10 ? 1 : 2));
  if (a >= 1e9) return t(v / 1e9) + 'G';
  if (a >= 1e6) return t(v / 1e6) + 'M';
  if (a >= 1e3) return t(v / 1e3) + 'k';
  return t(v);
}

function fmtBytes(b) {
  if (b == null) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (b >= 1024 && i < units.length - 1) {
    b /= 1024;
    i++;
  }
  return (i === 0 ? String(b) : b.toFixed(b < 10 ? 2 : b < 100 ? 1 : 0)) + ' ' + units[i];
}

const pad2 = (n) => String(n).padStart(2, '0');

function fmtTime(ms) {
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) return String(ms);
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ` +
    `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, '0')}`;
}

function fmtClock(ms) {
  const d = new Date(ms);
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

function relTime(ms) {
  const diff = Date.now() - ms;
  const a = Math.abs(diff);
  let text;
  if (a < 1500) return 'just now';
  if (a < 60e3) text = `${Math.round(a / 1e3)} s`;
  else if (a < 3600e3) text = `${Math.round(a / 60e3)} min`;
  else if (a < 86400e3) text = `${(a / 3600e3).toFixed(a < 36000e3 ? 1 : 0)} h`;
  else text = `${(a / 86400e3).toFixed(a < 864000e3 ? 1 : 0)} d`;
  return diff >= 0 ? `${text} ago` : `in ${text}`;
}

// A datetime-local input's value (local time, seconds) for a time in ms, and back.
function toLocalInput(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}T` +
    `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}
function fromLocalInput(value) {
  const ms = new Date(value).getTime();
  return Number.isFinite(ms) ? ms : null;
}

// A string shown as text: quoted and escaped when it holds control characters or edge spaces, so
// that what is shown is what is stored.
const showString = (s) => (/[\u0000-\u001f\u007f]|^\s|\s$|^$/.test(s) ? JSON.stringify(s) : s);

// ---------------------------------------------------------------------------------------------
// JSON without loss: mqd keeps payload numbers as sent (integers beyond 2^53, 1e400, 1.50), which
// JSON.parse would change. parseJson keeps every number's text and every object member in order.
// Nodes: {t:'o', e:[[key, node], ...]}, {t:'a', e:[node, ...]}, {t:'s', v}, {t:'n', v:'<text>'}, {t:'l', v}.

function parseJson(text) {
  let i = 0;
  const fail = (what) => {
    throw new SyntaxError(`invalid JSON at character ${i}: ${what}`);
  };
  const ws = () => {
    for (;;) {
      const c = text.charCodeAt(i);
      if (c === 32 || c === 10 || c === 13 || c === 9) i++;
      else return;
    }
  };
  const expect = (ch) => {
    ws();
    if (text[i] !== ch) fail(`expected '${ch}'`);
    i++;
  };
  const number = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
  function string() {
    expect('"');
    const start = i - 1;
    for (;;) {
      const c = text.charCodeAt(i);
      if (Number.isNaN(c)) fail('unterminated string');
      if (c === 92) i += 2;
      else if (c === 34) break;
      else i++;
    }
    i++;
    return JSON.parse(text.slice(start, i));
  }
  function value() {
    ws();
    const c = text[i];
    if (c === '{') {
      i++;
      const e = [];
      ws();
      if (text[i] === '}') {
        i++;
        return { t: 'o', e };
      }
      for (;;) {
        ws();
        const k = string();
        expect(':');
        e.push([k, value()]);
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        expect('}');
        return { t: 'o', e };
      }
    }
    if (c === '[') {
      i++;
      const e = [];
      ws();
      if (text[i] === ']') {
        i++;
        return { t: 'a', e };
      }
      for (;;) {
        e.push(value());
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        expect(']');
        return { t: 'a', e };
      }
    }
    if (c === '"') return { t: 's', v: string() };
    for (const lit of ['true', 'false', 'null']) {
      if (text.startsWith(lit, i)) {
        i += lit.length;
        return { t: 'l', v: lit };
      }
    }
    number.lastIndex = i;
    const m = number.exec(text);
    if (!m) fail('unexpected character');
    i = number.lastIndex;
    return { t: 'n', v: m[0] };
  }
  const v = value();
  ws();
  if (i !== text.length) fail('trailing characters');
  return v;
}

const field = (node, name) => (node && node.t === 'o' ? node.e.find(([k]) => k === name)?.[1] : undefined);
const numOf = (node) => (node && node.t === 'n' ? Number(node.v) : undefined);
const strOf = (node) => (node && node.t === 's' ? node.v : undefined);

// Tokens [class, text] of a node: on one line when short, else indented by two spaces.
function jsonTokens(node, out, indent, compact) {
  const nl = (n) => (compact ? '' : '\n' + '  '.repeat(n));
  switch (node.t) {
    case 's': out.push(['j-str', JSON.stringify(node.v)]); return;
    case 'n': out.push(['j-num', node.v]); return;
    case 'l': out.push(['j-lit', node.v]); return;
    case 'a':
    case 'o': {
      const [open, close] = node.t === 'a' ? ['[', ']'] : ['{', '}'];
      if (node.e.length === 0) {
        out.push([null, open + close]);
        return;
      }
      out.push([null, open]);
      node.e.forEach((item, k) => {
        out.push([null, (k ? ',' + (compact ? ' ' : '') : '') + nl(indent + 1)]);
        if (node.t === 'o') {
          out.push(['j-key', JSON.stringify(item[0])]);
          out.push([null, ': ']);
          jsonTokens(item[1], out, indent + 1, compact);
        } else {
          jsonTokens(item, out, indent + 1, compact);
        }
      });
      out.push([null, nl(indent) + close]);
    }
  }
}

const JSON_PREVIEW_LINES = 40;

function jsonView(node) {
  let tokens = [];
  jsonTokens(node, tokens, 0, true);
  if (tokens.reduce((n, [, t]) => n + t.length, 0) > 100) {
    tokens = [];
    jsonTokens(node, tokens, 0, false);
  }
  const pre = h('pre', { class: 'json' });
  const lines = tokens.reduce((n, [, t]) => n + (t.includes('\n') ? t.split('\n').length - 1 : 0), 1);
  const fill = (limit) => {
    const frag = document.createDocumentFragment();
    let line = 1;
    for (const [cls, text] of tokens) {
      let t = text;
      if (limit && t.includes('\n')) {
        const parts = t.split('\n');
        if (line + parts.length - 1 > limit) {
          t = parts.slice(0, limit - line + 1).join('\n');
          frag.append(cls ? h('span', { class: cls }, t) : t, '\n…');
          pre.replaceChildren(frag);
          return;
        }
        line += parts.length - 1;
      }
      frag.append(cls ? h('span', { class: cls }, t) : t);
    }
    pre.replaceChildren(frag);
  };
  if (lines <= JSON_PREVIEW_LINES + 10) {
    fill(0);
    return pre;
  }
  fill(JSON_PREVIEW_LINES);
  const more = h('button', {
    type: 'button', class: 'btn small more',
    onclick: () => {
      fill(0);
      more.remove();
    },
  }, `Show all ${fmtInt(lines)} lines`);
  return h('div', null, pre, more);
}

// ---------------------------------------------------------------------------------------------
// The API: every call sends the token when there is one; a 401 opens the token prompt.

let token = sessionStorage.getItem(TOKEN_KEY) || '';

class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

function qs(query) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(query || {})) if (v !== undefined && v !== null && v !== '') p.set(k, String(v));
  const s = p.toString();
  return s ? '?' + s : '';
}

async function api(method, path, { query, body, lossless = false } = {}) {
  const headers = {};
  if (token) headers.Authorization = 'Bearer ' + token;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path + qs(query), {
      method, headers, cache: 'no-store', body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, `cannot reach mqd (${e.message})`);
  }
  const text = await res.text();
  if (res.status === 401) {
    askForToken(token ? 'mqd refused this token (401). Enter the AUTH_TOKEN mqd was started with.' : '');
    throw new ApiError(401, 'mqd needs a token');
  }
  if (!res.ok) {
    let parsed = null;
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON: the text itself is the reason
    }
    const reason = parsed && typeof parsed.error === 'string' ? parsed.error : text.trim() || res.statusText || 'failed';
    throw new ApiError(res.status, reason, parsed);
  }
  try {
    return lossless ? parseJson(text) : JSON.parse(text);
  } catch (e) {
    throw new ApiError(res.status, `mqd answered something that is not JSON (${e.message})`);
  }
}

function describe(e) {
  if (e instanceof ApiError) return e.status ? `${e.status} · ${e.message}` : e.message;
  return String(e?.message ?? e);
}

// Where an error names another broker (421), a link to that broker's console at the same place.
function errorKids(what, e) {
  const kids = [h('strong', null, what), ' ', describe(e)];
  const ownerUrl = e?.body?.owner_url;
  if (e?.status === 421 && safeUrl(ownerUrl)) {
    kids.push(' ', h('a', { href: safeUrl(ownerUrl) + '/ui' + location.hash }, `Open broker ${e.body.owner}'s console ↗`));
  }
  return kids;
}

const safeUrl = (u) => (typeof u === 'string' && /^https?:\/\/[^\s]+$/i.test(u) ? u.replace(/\/+$/, '') : null);

// ---------------------------------------------------------------------------------------------
// Live data: /topics and /stats every second, and the history the charts and trends are drawn from.

const live = { topics: null, stats: null, error: null, paused: false, history: [], okAt: 0 };
let gate = null; // {reason} while the token prompt is shown
let tickTimer = 0;
let ticking = false;
let tickAgain = false; // a refresh was asked for while one was under way

// One refresh, then the next in REFRESH_MS; a call while one runs makes the next one come at once.
async function tick() {
  if (ticking) {
    tickAgain = true;
    return;
  }
  clearTimeout(tickTimer);
  if (!live.paused && !gate) {
    ticking = true;
    try {
      const [topics, stats] = await Promise.all([api('GET', '/topics'), api('GET', '/stats')]);
      live.topics = topics;
      live.stats = stats;
      live.error = null;
      live.okAt = Date.now();
      record(stats, live.okAt);
    } catch (e) {
      if (e.status !== 401) live.error = e;
    } finally {
      ticking = false;
    }
    if (!gate) {
      renderChrome();
      try {
        current?.view.update?.();
      } catch (e) {
        console.error(e);
      }
    }
  }
  tickTimer = setTimeout(tick, tickAgain ? 0 : REFRESH_MS);
  tickAgain = false;
}

function record(stats, t) {
  const sample = { t, topics: new Map(), groups: new Map(), parts: new Map() };
  for (const topic of stats.topics) {
    const v = { produced: 0, delivered: 0, acked: 0, dead: 0, lag: 0, inflight: 0 };
    for (const p of topic.partitions) {
      v.produced += p.next_offset;
      for (const g of p.groups) {
        v.delivered += g.delivered ?? 0;
        v.acked += g.acked ?? 0;
        v.dead += g.dead_lettered ?? 0;
        v.lag += g.lag;
        v.inflight += g.inflight;
        const key = groupKey(topic.name, g.group);
        const gv = sample.groups.get(key) ?? { lag: 0, acked: 0, delivered: 0 };
        gv.lag += g.lag;
        gv.acked += g.acked ?? 0;
        gv.delivered += g.delivered ?? 0;
        sample.groups.set(key, gv);
        sample.parts.set(key + '\u0000' + p.partition, g.lag);
      }
    }
    sample.topics.set(topic.name, v);
  }
  const hist = live.history;
  hist.push(sample);
  while (hist.length > 2 && hist[0].t < t - WINDOW_MS - 10e3) hist.shift();
}

const groupKey = (topic, group) => topic + '\u0000' + group;

// The sum of counter `field` over the topics `filter` keeps, from sample a to sample b, per second;
// null over a gap or when a counter went back (mqd restarted).
function topicRate(a, b, field, filter) {
  const dt = (b.t - a.t) / 1000;
  if (dt <= 0 || dt > 10) return null;
  let d = 0;
  for (const [name, vb] of b.topics) {
    if (!filter(name)) continue;
    const va = a.topics.get(name);
    if (va) d += vb[field] - va[field];
  }
  return d < 0 ? null : d / dt;
}

// The sample about `ago` ms before the newest one (the oldest one when the history is shorter).
function sampleAgo(ago) {
  const hist = live.history;
  if (hist.length < 2) return null;
  const end = hist[hist.length - 1].t;
  for (let i = hist.length - 2; i >= 0; i--) if (end - hist[i].t >= ago) return hist[i];
  return hist[0];
}

const newest = () => live.history[live.history.length - 1];

function rateNow(field, filter) {
  const a = sampleAgo(5000);
  return a ? topicRate(a, newest(), field, filter) : null;
}

function groupAckRate(key) {
  const a = sampleAgo(5000);
  if (!a) return null;
  const b = newest();
  const va = a.groups.get(key);
  const vb = b.groups.get(key);
  const dt = (b.t - a.t) / 1000;
  if (!va || !vb || dt <= 0) return null;
  const d = vb.acked - va.acked;
  return d < 0 ? null : d / dt;
}

// How a lag reads: calm at zero; 'growing' when it grew clearly over the last 15 s or the last
// minute, 'high' when over both (a group that falls further behind); a lag that wobbles by a few
// messages is neither. `of(sample)` is the lag in a past sample.
function trendOf(of, lag) {
  const at = (ago) => {
    const s = sampleAgo(ago);
    return s && live.history[live.history.length - 1].t - s.t >= ago * 0.8 ? of(s) : undefined;
  };
  const before15 = at(15e3);
  const before60 = at(60e3);
  const delta = before15 === undefined ? 0 : lag - before15;
  const clearly = (before, min, share) => before !== undefined && lag - before >= Math.max(min, before * share);
  const up15 = clearly(before15, 3, 0.02);
  const up60 = clearly(before60, 10, 0.05);
  let cls = '';
  if (lag === 0) cls = 'zero';
  else if (up15 && up60) cls = 'high';
  else if (up15 || up60) cls = 'growing';
  const shown = up15 || (before15 !== undefined && before15 - lag >= Math.max(3, before15 * 0.02));
  return { delta: shown ? delta : 0, cls };
}

function lagTrend(key, lag, partition) {
  return trendOf((s) => (partition === undefined ? s.groups.get(key)?.lag : s.parts.get(key + '\u0000' + partition)), lag);
}

// ---------------------------------------------------------------------------------------------
// What /topics and /stats say, arranged for the views.

function topicNames() {
  return new Set((live.topics?.topics ?? []).map((t) => t.name));
}

function dlqSource(name, names = topicNames()) {
  return name.endsWith('-dlq') && names.has(name.slice(0, -4)) ? name.slice(0, -4) : null;
}

function summarize(topic, names) {
  const s = {
    name: topic.name, source: dlqSource(topic.name, names), partitions: topic.partitions.length,
    messages: 0, bytes: 0, segments: 0, lag: 0, inflight: 0, delayed: 0, groups: new Map(),
  };
  for (const p of topic.partitions) {
    const start = p.log_start_offset ?? 0;
    s.messages += p.next_offset - start;
    s.bytes += p.log_bytes ?? 0;
    s.segments += p.segments ?? 1;
    for (const g of p.groups) {
      s.lag += g.lag;
      s.inflight += g.inflight;
      s.delayed += g.delayed ?? 0;
      let e = s.groups.get(g.group);
      if (!e) {
        e = { group: g.group, topic: topic.name, lag: 0, inflight: 0, delayed: 0, orderings: new Set(), parts: [] };
        s.groups.set(g.group, e);
      }
      e.lag += g.lag;
      e.inflight += g.inflight;
      e.delayed += g.delayed ?? 0;
      e.orderings.add(g.ordering ?? 'none');
      e.parts.push({ ...g, partition: p.partition, next_offset: p.next_offset, log_start_offset: start });
    }
  }
  return s;
}

function allSummaries() {
  const names = topicNames();
  return (live.stats?.topics ?? []).map((t) => summarize(t, names));
}

const brokerInfo = () => live.topics?.broker ?? { index: 0, count: 1 };
const brokerUrl = (i) => safeUrl(live.topics?.brokers?.[i]);

// ---------------------------------------------------------------------------------------------
// Pieces

function tile(label, value, { unit, note, cls, color, key } = {}) {
  return h('div', { class: `card tile ${cls ?? ''}`, 'data-key': key ?? label },
    h('div', { class: 'label' }, color && h('span', { class: 'swatch', style: `background:var(${color})` }), label),
    h('div', { class: 'value' }, value, unit && h('span', { class: 'unit' }, unit)),
    note && h('div', { class: 'note' }, note));
}

function card(title, { hint, actions, key } = {}, ...body) {
  return h('section', { class: 'card', 'data-key': key ?? title },
    h('div', { class: 'card-head' }, h('h2', null, title), hint && h('span', { class: 'hint' }, hint),
      actions && h('div', { class: 'actions' }, actions)),
    body);
}

function table(headers, rows, cls) {
  return h('div', { class: 'table-wrap' },
    h('table', { class: cls },
      h('thead', null, h('tr', null, headers.map((c) => {
        const [text, cls] = Array.isArray(c) ? c : [c, ''];
        return h('th', { class: cls || null, scope: 'col' }, text);
      }))),
      h('tbody', null, rows)));
}

function lagCell(lag, trend, { max, meter = false } = {}) {
  const cell = h('td', { class: 'num' },
    h('span', { class: `lag ${trend.cls}`, title: 'messages not yet acknowledged (next offset − committed offset)' }, fmtInt(lag)),
    trend.delta > 0 && h('span', { class: 'trend up', title: `grew by ${fmtInt(trend.delta)} in the last 15 s` }, `▲ ${fmtCompact(trend.delta)}`),
    trend.delta < 0 && h('span', { class: 'trend down', title: `shrank by ${fmtInt(-trend.delta)} in the last 15 s` }, `▼ ${fmtCompact(-trend.delta)}`));
  if (!meter) return cell;
  const share = max > 0 ? Math.max(lag > 0 ? 3 : 0, Math.round((lag / max) * 100)) : 0;
  return [cell, h('td', { class: 'bar-cell hide-narrow' },
    h('div', { class: `meter ${trend.cls === 'high' ? 'bad' : trend.cls === 'growing' ? 'warn' : ''}` },
      h('span', { style: `width:${share}%` })))];
}

const topicHref = (name) => '#/topic/' + encodeURIComponent(name);
const messagesHref = (q) => '#/messages' + qs(q);
const dlqHref = (q) => '#/dlq' + qs(q);

function emptyState(title, text) {
  return h('div', { class: 'empty' }, h('strong', null, title), text);
}

// ---------------------------------------------------------------------------------------------
// Charts: canvas, drawn here; hover shows the values at a moment in the legend.

class LineChart {
  constructor(title, { integer = false, unit = '' } = {}) {
    this.integer = integer;
    this.unit = unit;
    this.times = [];
    this.series = [];
    this.hover = null;
    this.legend = h('div', { class: 'chart-legend' });
    this.canvas = h('canvas', { role: 'img', 'aria-label': title });
    this.el = h('section', { class: 'card chart' },
      h('div', { class: 'card-head' }, h('h2', null, title), this.legend),
      h('div', { class: 'chart-wrap' }, this.canvas));
    this.canvas.addEventListener('pointermove', (ev) => {
      this.hover = ev.offsetX;
      this.draw();
    });
    this.canvas.addEventListener('pointerleave', () => {
      this.hover = null;
      this.draw();
    });
    new ResizeObserver(() => this.draw()).observe(this.canvas);
  }

  // times: ms of each point; series: [{name, color (a CSS variable), values: [number|null per time]}]
  set(times, series, more) {
    this.times = times;
    this.series = series;
    this.more = more;
    // The window: the history there is, in whole minutes, from one minute to WINDOW_MS.
    const span = times.length ? times[times.length - 1] - times[0] : 0;
    this.window = Math.min(WINDOW_MS, Math.max(60e3, Math.ceil(span / 60e3) * 60e3));
    this.draw();
  }

  draw() {
    const c = this.canvas;
    const w = c.clientWidth;
    const ht = c.clientHeight;
    if (!w || !ht) return;
    const dpr = window.devicePixelRatio || 1;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(ht * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(ht * dpr);
    }
    const ctx = c.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, ht);
    const css = getComputedStyle(document.documentElement);
    const color = (v) => css.getPropertyValue(v).trim() || '#888';
    const font = css.getPropertyValue('--font');
    const end = this.times.length ? this.times[this.times.length - 1] : Date.now();
    const span = this.window ?? WINDOW_MS;
    const start = end - span;
    let max = 0;
    for (const s of this.series) s.values.forEach((v, i) => {
      if (v != null && v > max && this.times[i] >= start) max = v;
    });
    let step = max > 0 ? niceStep(max / 4) : this.integer ? 1 : 0.25;
    if (this.integer) step = Math.max(1, step);
    const top = max > 0 ? Math.max(step, Math.ceil(max / step) * step) : step * 4;
    ctx.font = `11px ${font}`;
    const labelW = Math.max(...[0, 1, 2, 3, 4].map((k) => ctx.measureText(fmtCompact((top * k) / 4)).width));
    const L = Math.ceil(labelW) + 10;
    const R = 6;
    const T = 8;
    const B = 20;
    const x = (t) => L + ((t - start) / span) * (w - L - R);
    const y = (v) => T + (1 - v / top) * (ht - T - B);
    // grid and axes
    ctx.lineWidth = 1;
    ctx.strokeStyle = color('--grid');
    ctx.fillStyle = color('--faint');
    ctx.textBaseline = 'middle';
    ctx.textAlign = 'right';
    const lines = Math.round(top / step) >= 2 && Math.round(top / step) <= 6 ? Math.round(top / step) : 4;
    for (let k = 0; k <= lines; k++) {
      const v = (top * k) / lines;
      const yy = Math.round(y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(L, yy);
      ctx.lineTo(w - R, yy);
      ctx.stroke();
      ctx.fillText(fmtCompact(v), L - 6, yy);
    }
    ctx.textAlign = 'center';
    ctx.textBaseline = 'alphabetic';
    // Time labels: at most one per 70 px, on whole minutes, half minutes or 15 s.
    const ticks = span >= 180e3 ? [60e3, 120e3, 300e3] : [15e3, 30e3, 60e3, 120e3, 300e3];
    const tick = ticks.find((t) => (t / span) * (w - L - R) >= 70) ?? 300e3;
    for (let ago = 0; ago <= span + 1; ago += tick) {
      const label = ago === 0 ? 'now' : ago % 60e3 === 0 ? `−${ago / 60e3} min` : `−${ago / 1e3} s`;
      const xx = x(end - ago);
      ctx.textAlign = ago === 0 ? 'right' : xx - L < 30 ? 'left' : 'center';
      ctx.fillText(label, ago === 0 ? w - R : Math.max(L, xx), ht - 5);
    }
    // lines, broken where a value is missing
    ctx.lineJoin = 'round';
    ctx.lineCap = 'round';
    this.series.forEach((s) => {
      ctx.strokeStyle = color(s.color);
      ctx.lineWidth = 2;
      ctx.beginPath();
      let pen = false;
      s.values.forEach((v, i) => {
        const t = this.times[i];
        if (v == null || t < start) {
          pen = false;
          return;
        }
        if (pen) ctx.lineTo(x(t), y(v));
        else ctx.moveTo(x(t), y(v));
        pen = true;
      });
      ctx.stroke();
    });
    // the hovered moment
    let at = this.times.length - 1;
    if (this.hover != null && this.times.length) {
      const t = start + ((this.hover - L) / (w - L - R)) * span;
      let best = 0;
      this.times.forEach((ti, i) => {
        if (Math.abs(ti - t) < Math.abs(this.times[best] - t)) best = i;
      });
      at = best;
      const xx = Math.round(x(this.times[at])) + 0.5;
      ctx.strokeStyle = color('--border-strong');
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(xx, T);
      ctx.lineTo(xx, ht - B);
      ctx.stroke();
      for (const s of this.series) {
        const v = s.values[at];
        if (v == null) continue;
        ctx.fillStyle = color(s.color);
        ctx.beginPath();
        ctx.arc(xx, y(v), 3.5, 0, Math.PI * 2);
        ctx.fill();
      }
      ctx.fillStyle = color('--muted');
      ctx.textAlign = xx > w / 2 ? 'right' : 'left';
      ctx.fillText(fmtClock(this.times[at]), xx + (xx > w / 2 ? -6 : 6), T + 10);
    }
    patch(this.legend,
      this.series.map((s) => {
        const v = at >= 0 ? s.values[at] : null;
        return h('span', { class: 'item', 'data-key': s.name },
          h('span', { class: 'swatch', style: `background:var(${s.color})` }), s.name,
          h('b', null, v == null ? '–' : this.integer ? fmtInt(v) : fmtRate(v), this.unit));
      }),
      this.more ? h('span', { class: 'item' }, this.more) : null,
      !this.series.length ? h('span', { class: 'item' }, 'no consumer groups yet') : null);
  }
}

function niceStep(v) {
  if (!(v > 0)) return 0.25;
  const e = 10 ** Math.floor(Math.log10(v));
  const f = v / e;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * e;
}

// The throughput and lag charts of the topics `filter` keeps.
function chartPair(filter) {
  const rates = new LineChart('Throughput', { unit: '/s' });
  const lags = new LineChart('Lag by consumer group', { integer: true });
  return {
    el: h('div', { class: 'charts' }, rates.el, lags.el),
    update() {
      const hist = live.history;
      const times = hist.slice(1).map((s) => s.t);
      const series = [
        ['produced', 'produced', '--c-produce'],
        ['delivered', 'delivered', '--c-deliver'],
        ['acked', 'acked', '--c-ack'],
        ['dead-lettered', 'dead', '--c-dead'],
      ].map(([name, f, color]) => ({
        name, color, values: hist.slice(1).map((b, i) => topicRate(hist[i], b, f, filter)),
      }));
      rates.set(times, series);
      const last = hist[hist.length - 1];
      const keys = last ? [...last.groups.entries()].filter(([k]) => filter(k.split('\u0000')[0])) : [];
      keys.sort((a, b) => b[1].lag - a[1].lag || a[0].localeCompare(b[0]));
      const shown = keys.slice(0, SERIES_COLORS.length);
      const oneTopic = new Set(keys.map(([k]) => k.split('\u0000')[0])).size <= 1;
      lags.set(hist.map((s) => s.t), shown.map(([k], i) => {
        const [topic, group] = k.split('\u0000');
        return {
          name: oneTopic ? group : `${group} · ${topic}`, color: SERIES_COLORS[i],
          values: hist.map((s) => s.groups.get(k)?.lag ?? null),
        };
      }), keys.length > shown.length ? `+${keys.length - shown.length} more` : null);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The top bar: brokers, live state, the dead-letter badge.

function renderChrome() {
  const info = brokerInfo();
  const urls = live.topics?.brokers ?? [];
  const brokers = [];
  for (let i = 0; i < Math.max(info.count, urls.length); i++) {
    if (i === info.index) {
      brokers.push(h('span', { class: 'broker self', title: 'the broker serving this page', 'data-key': 'b' + i },
        info.count > 1 ? `broker ${i} of ${info.count}` : 'single broker'));
    } else if (brokerUrl(i)) {
      brokers.push(h('a', {
        class: 'broker', href: brokerUrl(i) + '/ui' + location.hash, title: `${brokerUrl(i)}: its own console`,
        'data-key': 'b' + i,
      }, `broker ${i} ↗`));
    }
  }
  patch($('brokers'), brokers);
  const liveBtn = $('live');
  const stale = live.error || (live.okAt && Date.now() - live.okAt > 5000);
  liveBtn.className = 'live' + (live.paused ? ' paused' : stale ? ' error' : '');
  liveBtn.querySelector('.live-text').textContent = live.paused ? 'Paused' : stale ? 'Offline' : 'Live';
  const banner = $('banner');
  if (live.error && !live.paused) {
    banner.hidden = false;
    patch(banner, errorKids('Cannot refresh:', live.error), h('span', { class: 'faint' }, ' · retrying every second'));
  } else {
    banner.hidden = true;
  }
  const names = topicNames();
  let letters = 0;
  for (const t of live.stats?.topics ?? []) {
    if (!dlqSource(t.name, names)) continue;
    for (const p of t.partitions) letters += p.next_offset - (p.log_start_offset ?? 0);
  }
  const badge = $('dlq-badge');
  badge.hidden = letters === 0;
  badge.textContent = fmtCompact(letters);
  $('sign-out').hidden = !token;
}

// ---------------------------------------------------------------------------------------------
// Overview: tiles, charts, every topic, every group.

function overviewView() {
  const tiles = h('div', { class: 'tiles' });
  const charts = chartPair((name) => !dlqSource(name));
  const topicsSlot = h('div');
  const groupsSlot = h('div');
  const sub = h('span', { class: 'sub' });
  return {
    el: h('div', { class: 'stack' },
      h('div', { class: 'page-head' }, h('h1', null, 'Overview'), sub),
      tiles, charts.el, topicsSlot, groupsSlot),
    update() {
      if (!live.stats) return;
      const info = brokerInfo();
      sub.textContent = info.count > 1
        ? `Broker ${info.index} of ${info.count}: the partitions it owns. The others are linked above.`
        : 'Every topic and consumer group of this mqd, refreshed every second.';
      const all = allSummaries();
      const user = all.filter((t) => !t.source);
      const dlqs = all.filter((t) => t.source);
      const sum = (list, f) => list.reduce((n, t) => n + t[f], 0);
      const isUser = (name) => !dlqSource(name);
      const lagNow = sum(user, 'lag') + sum(dlqs, 'lag');
      const before = sampleAgo(15e3);
      let lagBefore = 0;
      if (before) for (const v of before.topics.values()) lagBefore += v.lag;
      const letters = sum(dlqs, 'messages');
      patch(tiles,
        tile('Topics', fmtInt(user.length), { note: dlqs.length ? `+ ${dlqs.length} dead-letter` : 'configured by TOPICS' }),
        tile('Messages', fmtInt(sum(user, 'messages')), { note: fmtBytes(sum(all, 'bytes')) + ' on disk' }),
        tile('Produced', fmtRate(rateNow('produced', isUser)), { unit: '/s', color: '--c-produce' }),
        tile('Delivered', fmtRate(rateNow('delivered', isUser)), { unit: '/s', color: '--c-deliver' }),
        tile('Acked', fmtRate(rateNow('acked', isUser)), { unit: '/s', color: '--c-ack' }),
        tile('In flight', fmtInt(sum(all, 'inflight')), { note: sum(all, 'delayed') ? `${fmtInt(sum(all, 'delayed'))} delayed` : 'delivered, not acked' }),
        tile('Lag', fmtInt(lagNow), {
          cls: before && lagNow > lagBefore ? 'warn' : '',
          note: before && lagNow !== lagBefore ? `${lagNow > lagBefore ? '▲' : '▼'} ${fmtInt(Math.abs(lagNow - lagBefore))} in 15 s` : 'all groups',
        }),
        tile('Dead letters', fmtInt(letters), { cls: letters ? 'bad' : '', note: letters ? h('a', { href: '#/dlq' }, 'Review and redrive') : 'none' }));
      charts.update();
      patch(topicsSlot, topicsCard(all));
      patch(groupsSlot, groupsCard(all));
    },
  };
}

function topicsCard(all) {
  if (!all.length) return card('Topics', {}, emptyState('No topics', 'mqd serves the topics of its TOPICS variable.'));
  const info = brokerInfo();
  const byName = new Map((live.topics?.topics ?? []).map((t) => [t.name, t]));
  const rows = all.map((t) => {
    const isTopic = (n) => n === t.name;
    const total = byName.get(t.name)?.partitions ?? t.partitions;
    return h('tr', { 'data-key': 'topic:' + t.name },
      h('td', { class: 'name' }, h('a', { href: topicHref(t.name) }, t.name), ' ',
        t.source && h('a', { class: 'tag dlq', href: dlqHref({ topic: t.name }), title: `dead letters of ${t.source}` }, 'dead letters')),
      h('td', { class: 'num hide-narrow' }, info.count > 1 ? `${t.partitions} of ${total}` : fmtInt(total)),
      h('td', { class: 'num' }, fmtInt(t.messages)),
      h('td', { class: 'num hide-narrow' }, fmtBytes(t.bytes)),
      h('td', { class: 'num hide-narrow' }, fmtInt(t.segments)),
      h('td', { class: 'num' }, fmtInt(t.groups.size)),
      lagCell(t.lag, trendOf((s) => s.topics.get(t.name)?.lag, t.lag)),
      h('td', { class: 'num' }, fmtRate(rateNow('produced', isTopic))),
      h('td', { class: 'num hide-narrow' }, fmtRate(rateNow('acked', isTopic))));
  });
  return card('Topics', { hint: 'partitions → groups: open a topic' },
    table(['Topic', ['Partitions', 'num hide-narrow'], ['Messages', 'num'], ['Size', 'num hide-narrow'], ['Segments', 'num hide-narrow'],
      ['Groups', 'num'], ['Lag', 'num'], ['Produced/s', 'num'], ['Acked/s', 'num hide-narrow']], rows));
}

function groupsCard(all) {
  const groups = all.flatMap((t) => [...t.groups.values()]);
  if (!groups.length) {
    return card('Consumer groups', {},
      emptyState('No consumer groups yet', 'A group appears once it consumes, acknowledges or seeks on a partition.'));
  }
  groups.sort((a, b) => b.lag - a.lag || a.topic.localeCompare(b.topic) || a.group.localeCompare(b.group));
  const max = Math.max(...groups.map((g) => g.lag));
  const rows = groups.map((g) => {
    const key = groupKey(g.topic, g.group);
    return h('tr', { 'data-key': 'group:' + g.topic + '/' + g.group },
      h('td', { class: 'name' }, h('a', { href: topicHref(g.topic) + '/group/' + encodeURIComponent(g.group) }, g.group)),
      h('td', null, h('a', { href: topicHref(g.topic) }, g.topic)),
      lagCell(g.lag, lagTrend(key, g.lag), { max, meter: true }),
      h('td', { class: 'num' }, fmtInt(g.inflight)),
      h('td', { class: 'num hide-narrow' }, fmtInt(g.delayed)),
      h('td', { class: 'num hide-narrow' }, fmtInt(g.parts.length)),
      h('td', { class: 'num hide-narrow' }, fmtRate(groupAckRate(key))),
      h('td', { class: 'hide-narrow' }, orderingTag([...g.orderings].join(', '))));
  });
  return card('Consumer groups', { hint: 'most behind first' },
    table(['Group', 'Topic', ['Lag', 'num'], ['', 'hide-narrow'], ['In flight', 'num'], ['Delayed', 'num hide-narrow'],
      ['Partitions', 'num hide-narrow'], ['Acked/s', 'num hide-narrow'], ['Ordering', 'hide-narrow']], rows));
}

const orderingTag = (o) => h('span', { class: `tag ${o === 'key' ? 'key' : ''}`, title: o === 'key' ? 'one message per key at a time' : 'no ordering constraint' }, o);

// ---------------------------------------------------------------------------------------------
// A topic: its partitions and its groups, with seek and delete.

function topicView(name, focusGroup) {
  const charts = chartPair((n) => n === name);
  const head = h('div');
  const tiles = h('div', { class: 'tiles' });
  const groupsSlot = h('div');
  const partsSlot = h('div');
  let scrolled = false;
  return {
    el: h('div', { class: 'stack' }, head, tiles, charts.el, groupsSlot, partsSlot),
    update() {
      if (!live.topics || !live.stats) return;
      const names = topicNames();
      const t = live.topics.topics.find((x) => x.name === name);
      if (!t) {
        patch(head, crumbs(name), h('div', { class: 'page-head' }, h('h1', null, name)));
        patch(groupsSlot, card('Unknown topic', {}, emptyState(`mqd serves no topic '${name}'`,
          'Topics come from TOPICS; dead-letter topics appear once a first message is dead-lettered.')));
        return;
      }
      const st = live.stats.topics.find((x) => x.name === name) ?? { name, partitions: [] };
      const s = summarize(st, names);
      const dlqName = names.has(name + '-dlq') ? name + '-dlq' : null;
      const firstOwned = t.owned[0];
      patch(head, crumbs(name),
        h('div', { class: 'page-head' }, h('h1', null, name),
          h('span', { class: 'sub' }, `${fmtInt(t.partitions)} partition${t.partitions === 1 ? '' : 's'}`),
          s.source && h('a', { class: 'tag dlq', href: dlqHref({ topic: name }) }, `dead letters of ${s.source}`),
          dlqName && h('a', { class: 'tag', href: topicHref(dlqName) }, `dead letters: ${dlqName}`),
          firstOwned !== undefined && h('a', { class: 'btn small', href: messagesHref({ topic: name, partition: firstOwned, from: 'latest' }) }, 'Browse messages')));
      const isTopic = (n) => n === name;
      patch(tiles,
        tile('Messages', fmtInt(s.messages), { note: `${fmtBytes(s.bytes)} in ${fmtInt(s.segments)} segment${s.segments === 1 ? '' : 's'}` }),
        tile('Produced', fmtRate(rateNow('produced', isTopic)), { unit: '/s', color: '--c-produce' }),
        tile('Delivered', fmtRate(rateNow('delivered', isTopic)), { unit: '/s', color: '--c-deliver' }),
        tile('Acked', fmtRate(rateNow('acked', isTopic)), { unit: '/s', color: '--c-ack' }),
        tile('In flight', fmtInt(s.inflight), { note: s.delayed ? `${fmtInt(s.delayed)} delayed` : 'delivered, not acked' }),
        tile('Lag', fmtInt(s.lag), { note: `${fmtInt(s.groups.size)} group${s.groups.size === 1 ? '' : 's'}` }));
      charts.update();
      patch(groupsSlot, topicGroupsCard(t, s, focusGroup));
      patch(partsSlot, partitionsCard(t, st, s));
      if (focusGroup && !scrolled) {
        scrolled = true;
        document.querySelector(`[data-key="g:${CSS.escape(focusGroup)}"]`)?.scrollIntoView({ block: 'center' });
      }
    },
  };
}

function crumbs(name) {
  return h('div', { class: 'crumbs' }, h('a', { href: '#/' }, 'Overview'), ' / ', name);
}

function topicGroupsCard(t, s, focusGroup) {
  const groups = [...s.groups.values()].sort((a, b) => a.group.localeCompare(b.group));
  if (!groups.length) {
    return card('Consumer groups', {},
      emptyState('No consumer group has read this topic yet', 'A group appears once it consumes, acknowledges or seeks on a partition.'));
  }
  const max = Math.max(...groups.flatMap((g) => g.parts.map((p) => p.lag)));
  const rows = [];
  for (const g of groups) {
    const key = groupKey(t.name, g.group);
    rows.push(h('tr', { class: 'part', 'data-key': 'g:' + g.group, id: g.group === focusGroup ? 'focus' : null },
      h('td', { class: 'name' }, g.group, g.parts.length > 1 && h('span', { class: 'faint small' }, ` · ${g.parts.length} partitions`)),
      lagCell(g.lag, lagTrend(key, g.lag)),
      h('td', { class: 'hide-narrow' }),
      h('td', { class: 'num committed' }),
      h('td', { class: 'num hide-narrow' }),
      h('td', { class: 'num' }, fmtInt(g.inflight)),
      h('td', { class: 'num hide-narrow' }, fmtInt(g.delayed)),
      h('td', { class: 'hide-narrow' }, orderingTag([...g.orderings].join(', '))),
      h('td', { class: 'actions' },
        h('button', { type: 'button', class: 'btn small', onclick: () => seekDialog(t.name, g.group, g.parts.map((p) => p.partition)) }, 'Seek…'),
        h('button', { type: 'button', class: 'btn small danger', onclick: () => deleteGroupDialog(t.name, g.group) }, 'Delete…'))));
    for (const p of [...g.parts].sort((a, b) => a.partition - b.partition)) {
      rows.push(h('tr', { class: 'sub', 'data-key': `gp:${g.group}/${p.partition}` },
        h('td', null, `partition ${p.partition}`),
        lagCell(p.lag, lagTrend(key, p.lag, p.partition), { max, meter: true }),
        h('td', { class: 'num committed' }, fmtInt(p.committed_offset)),
        h('td', { class: 'num hide-narrow faint' }, fmtInt(p.next_offset)),
        h('td', { class: 'num' }, fmtInt(p.inflight)),
        h('td', { class: 'num hide-narrow' }, fmtInt(p.delayed ?? 0)),
        h('td', { class: 'hide-narrow' }, orderingTag(p.ordering ?? 'none')),
        h('td', { class: 'actions' },
          h('a', {
            class: 'btn small', href: messagesHref({ topic: t.name, partition: p.partition, offset: p.committed_offset }),
            title: 'the messages from the committed offset on: what the group works on next',
          }, 'Browse'),
          h('button', { type: 'button', class: 'btn small', onclick: () => seekDialog(t.name, g.group, [p.partition], p.partition) }, 'Seek…'))));
    }
  }
  return card('Consumer groups', { hint: 'lag = next offset − committed offset; everything below the committed offset is acknowledged' },
    table(['Group / partition', ['Lag', 'num'], ['', 'hide-narrow'], ['Committed', 'num'], ['Next offset', 'num hide-narrow'], ['In flight', 'num'],
      ['Delayed', 'num hide-narrow'], ['Ordering', 'hide-narrow'], ['', 'actions']], rows));
}

function partitionsCard(t, st, s) {
  const info = brokerInfo();
  const rows = st.partitions.map((p) => {
    const start = p.log_start_offset ?? 0;
    const groups = p.groups.length;
    return h('tr', { 'data-key': 'p:' + p.partition },
      h('td', { class: 'name' }, String(p.partition)),
      h('td', { class: 'num' }, fmtInt(start)),
      h('td', { class: 'num' }, fmtInt(p.next_offset)),
      h('td', { class: 'num hide-narrow' }, fmtInt(p.next_offset - start)),
      h('td', { class: 'num hide-narrow' }, fmtBytes(p.log_bytes)),
      h('td', { class: 'num hide-narrow' }, fmtInt(p.segments ?? 1)),
      h('td', { class: 'num' }, fmtInt(groups)),
      h('td', { class: 'actions' },
        h('a', { class: 'btn small', href: messagesHref({ topic: t.name, partition: p.partition, from: 'latest' }) }, 'Browse'),
        s.source && h('button', { type: 'button', class: 'btn small', onclick: () => redriveDialog(t.name, p.partition, s.source) }, 'Redrive…')));
  });
  // Partitions of other brokers: where they are.
  const elsewhere = new Map();
  const owned = new Set(t.owned);
  for (let p = 0; p < t.partitions && info.count > 1; p++) {
    if (owned.has(p)) continue;
    const b = p % info.count;
    if (!elsewhere.has(b)) elsewhere.set(b, []);
    elsewhere.get(b).push(p);
  }
  const notes = [...elsewhere.entries()].map(([b, ps]) => h('div', { class: 'card-body muted small', 'data-key': 'elsewhere' + b },
    `Partition${ps.length === 1 ? '' : 's'} ${listShort(ps)} ${ps.length === 1 ? 'is' : 'are'} on broker ${b}`,
    brokerUrl(b) ? [': ', h('a', { href: `${brokerUrl(b)}/ui${topicHref(t.name)}` }, 'open its console ↗')] : '.'));
  return card('Partitions', { hint: info.count > 1 ? 'the ones this broker owns' : null },
    rows.length ? table([['Partition', ''], ['Log start', 'num'], ['Next offset', 'num'], ['Messages', 'num hide-narrow'], ['Size', 'num hide-narrow'],
      ['Segments', 'num hide-narrow'], ['Groups', 'num'], ['', 'actions']], rows)
      : emptyState('No partition of this topic is on this broker', ''),
    notes);
}

function listShort(ps) {
  return ps.length > 8 ? `${ps.slice(0, 8).join(', ')} … (${ps.length})` : ps.join(', ');
}

// ---------------------------------------------------------------------------------------------
// Messages: a page of /messages, by offset, by time or the latest; payloads pretty-printed.

function renderMessage(m, topic) {
  const offset = numOf(field(m, 'offset'));
  const ts = numOf(field(m, 'timestamp'));
  const id = strOf(field(m, 'id'));
  const key = field(m, 'key');
  const headers = field(m, 'headers');
  const deliverAt = numOf(field(m, 'deliver_at'));
  const dedup = strOf(field(m, 'dedup_id'));
  const source = field(m, 'source');
  const payload = field(m, 'payload');
  const head = h('div', { class: 'msg-head' },
    h('span', { class: 'msg-off', title: 'offset' }, `#${fmtInt(offset)}`),
    id !== undefined && h('span', null, h('span', { class: 'k' }, 'id '), h('span', { class: 'v' }, id)),
    ts !== undefined && h('span', { title: `${ts} ms since the epoch` }, fmtTime(ts), h('span', { class: 'faint' }, ` · ${relTime(ts)}`)),
    key && key.t === 's' && h('span', null, h('span', { class: 'k' }, 'key '), h('span', { class: 'v' }, showString(key.v))),
    deliverAt !== undefined && h('span', { class: 'tag warn', title: fmtTime(deliverAt) }, deliverAt > Date.now() ? `delivers ${relTime(deliverAt)}` : 'delayed'),
    dedup !== undefined && h('span', null, h('span', { class: 'k' }, 'dedup_id '), h('span', { class: 'v' }, showString(dedup))));
  const parts = [head];
  if (headers && headers.t === 'o' && headers.e.length) {
    parts.push(h('div', { class: 'kv', 'aria-label': 'headers' },
      headers.e.map(([k, v]) => h('span', { class: 'pair' }, h('span', { class: 'hk' }, showString(k)),
        h('span', { class: 'hv' }, v.t === 's' ? showString(v.v) : JSON.stringify(v.v))))));
  }
  if (source && source.t === 'o') {
    const sTopic = strOf(field(source, 'topic'));
    const sPart = numOf(field(source, 'partition'));
    const sOff = numOf(field(source, 'offset'));
    const group = strOf(field(source, 'group'));
    const deliveries = numOf(field(source, 'deliveries'));
    parts.push(h('div', { class: 'source' },
      h('span', { class: 'k' }, 'dead letter of'),
      sTopic !== undefined && h('a', { href: messagesHref({ topic: sTopic, partition: sPart, offset: sOff, limit: 1 }) },
        `${sTopic} / partition ${sPart} / offset ${fmtInt(sOff)}`),
      group !== undefined && h('span', null, h('span', { class: 'k' }, 'group '), h('b', null, group)),
      deliveries !== undefined && h('span', null, h('b', null, fmtInt(deliveries)), h('span', { class: 'k' }, deliveries === 1 ? ' delivery' : ' deliveries'))));
  }
  if (payload) parts.push(jsonView(payload));
  return h('article', { class: 'msg', 'data-offset': offset, 'data-topic': topic }, parts);
}

// The result card of /messages for query q ({topic, partition, offset|timestamp|from:'latest', limit}).
// nav(q) moves to another page (through the address, so that Back works).
class MessagePage {
  constructor(nav) {
    this.nav = nav;
    this.seq = 0;
    this.el = h('section', { class: 'card', id: 'messages' });
  }

  async load(q) {
    const seq = ++this.seq;
    const limit = q.limit || 25;
    patch(this.el, h('div', { class: 'card-head' }, h('h2', null, `${q.topic} · partition ${q.partition}`), h('span', { class: 'hint' }, 'loading…')));
    let res;
    try {
      const base = { topic: q.topic, partition: q.partition, limit };
      if (q.from === 'latest') {
        const probe = await api('GET', '/messages', { query: { ...base, offset: Number.MAX_SAFE_INTEGER, limit: 1 } });
        const offset = Math.max(probe.log_start_offset ?? 0, probe.next_offset - limit);
        res = await api('GET', '/messages', { query: { ...base, offset }, lossless: true });
      } else {
        res = await api('GET', '/messages', { query: { ...base, offset: q.offset, timestamp: q.timestamp }, lossless: true });
      }
    } catch (e) {
      if (seq !== this.seq) return;
      patch(this.el, h('div', { class: 'card-head' }, h('h2', null, `${q.topic} · partition ${q.partition}`)),
        h('div', { class: 'card-body error-text', role: 'alert' }, errorKids('Cannot read messages:', e)));
      return;
    }
    if (seq !== this.seq) return;
    const start = numOf(field(res, 'log_start_offset')) ?? 0;
    const next = numOf(field(res, 'next_offset')) ?? 0;
    const msgs = field(res, 'messages')?.e ?? [];
    const first = msgs.length ? numOf(field(msgs[0], 'offset')) : null;
    const last = msgs.length ? numOf(field(msgs[msgs.length - 1], 'offset')) : null;
    const go = (offset) => this.nav({ topic: q.topic, partition: q.partition, offset, limit });
    const atStart = first === null ? next <= start : first <= start;
    const atEnd = last === null ? true : last + 1 >= next;
    const from = first ?? q.offset ?? next;
    const range = msgs.length
      ? `${first === last ? `offset ${fmtInt(first)}` : `offsets ${fmtInt(first)}–${fmtInt(last)}`} of ${fmtInt(start)}–${fmtInt(Math.max(start, next - 1))}`
      : next > start ? `no message at or after ${q.timestamp ? fmtTime(q.timestamp) : `offset ${fmtInt(q.offset ?? start)}`}; the log holds ${fmtInt(start)}–${fmtInt(next - 1)}` : 'the partition is empty';
    const pager = h('div', { class: 'pager' },
      h('span', { class: 'range' }, range),
      h('button', { type: 'button', class: 'btn small', 'data-go': 'first', disabled: atStart, onclick: () => go(start), title: 'the log start' }, '⇤ First'),
      h('button', { type: 'button', class: 'btn small', 'data-go': 'older', disabled: atStart, onclick: () => go(Math.max(start, from - limit)) }, '← Older'),
      h('button', { type: 'button', class: 'btn small', 'data-go': 'newer', disabled: atEnd, onclick: () => go(last + 1) }, 'Newer →'),
      h('button', { type: 'button', class: 'btn small', 'data-go': 'latest', onclick: () => this.nav({ topic: q.topic, partition: q.partition, from: 'latest', limit }) }, 'Latest ⇥'),
      h('button', { type: 'button', class: 'btn small', 'data-go': 'reload', onclick: () => this.load(q), title: 'read again' }, '⟳'));
    patch(this.el,
      h('div', { class: 'card-head' }, h('h2', null, `${q.topic} · partition ${q.partition}`), pager),
      msgs.length ? h('div', { class: 'msgs' }, msgs.map((m) => renderMessage(m, q.topic)))
        : emptyState('No messages here', next > start ? 'Go to the first or the latest page.' : 'Nothing was produced to this partition yet.'));
  }
}

// The address holds the query: #/messages?topic=T&partition=P&offset=N|timestamp=MS|from=latest&limit=K
function messageQuery(params) {
  const q = { topic: params.get('topic') ?? undefined, limit: clampLimit(params.get('limit')) };
  const p = params.get('partition');
  q.partition = p !== null && /^\d+$/.test(p) ? Number(p) : undefined;
  if (params.get('offset') !== null && /^\d+$/.test(params.get('offset'))) q.offset = Number(params.get('offset'));
  else if (params.get('timestamp') !== null && /^\d+$/.test(params.get('timestamp'))) q.timestamp = Number(params.get('timestamp'));
  else q.from = 'latest';
  return q;
}

function clampLimit(v) {
  const n = Number(v);
  return Number.isInteger(n) && n >= 1 && n <= 1000 ? n : 25;
}

const queryOf = (q) => ({ topic: q.topic, partition: q.partition, offset: q.offset, timestamp: q.timestamp, from: q.from, limit: q.limit === 25 ? undefined : q.limit });

function defaultPartition(topic) {
  const t = live.topics?.topics.find((x) => x.name === topic);
  return t?.owned?.[0] ?? 0;
}

function messagesView(params) {
  const topicSel = h('select', { id: 'm-topic', name: 'topic' });
  const partSel = h('select', { id: 'm-partition', name: 'partition' });
  let mode = 'latest';
  const offsetIn = h('input', { id: 'm-offset', type: 'number', min: 0, step: 1, inputmode: 'numeric', placeholder: '0' });
  const timeIn = h('input', { id: 'm-time', type: 'datetime-local', step: 1 });
  const limitSel = h('select', { id: 'm-limit', name: 'limit' }, [10, 25, 50, 100, 250, 1000].map((n) => h('option', { value: n }, String(n))));
  const offsetField = h('div', { class: 'field' }, h('label', { for: 'm-offset' }, 'Offset'), offsetIn);
  const timeField = h('div', { class: 'field' }, h('label', { for: 'm-time' }, 'At or after (local time)'), timeIn);
  const modeBtns = ['offset', 'time', 'latest'].map((m) => h('button', {
    type: 'button', 'data-mode': m,
    onclick: () => {
      setMode(m);
      (m === 'offset' ? offsetIn : m === 'time' ? timeIn : null)?.focus();
    },
  }, m === 'offset' ? 'Offset' : m === 'time' ? 'Time' : 'Latest'));
  function setMode(m) {
    mode = m;
    for (const b of modeBtns) b.setAttribute('aria-pressed', String(b.dataset.mode === m));
    offsetField.hidden = m !== 'offset';
    timeField.hidden = m !== 'time';
  }
  function fillTopics(selected) {
    const names = topicNames();
    const topics = live.topics?.topics ?? [];
    topicSel.replaceChildren(...topics.map((t) => h('option', { value: t.name }, dlqSource(t.name, names) ? `${t.name} (dead letters)` : t.name)));
    if (selected !== undefined) topicSel.value = selected;
  }
  function fillPartitions(selected) {
    const t = live.topics?.topics.find((x) => x.name === topicSel.value);
    const info = brokerInfo();
    const owned = new Set(t?.owned ?? []);
    const n = Math.min(t?.partitions ?? 0, 4096);
    const opts = [];
    for (let p = 0; p < n; p++) opts.push(h('option', { value: p }, owned.has(p) ? `${p}` : `${p} (broker ${p % info.count})`));
    partSel.replaceChildren(...opts);
    partSel.value = String(selected ?? defaultPartition(topicSel.value));
  }
  topicSel.addEventListener('change', () => fillPartitions());
  const page = new MessagePage((q) => go(q));
  function go(q) {
    const hash = messagesHref(queryOf(q));
    if (location.hash === hash) page.load(q);
    else location.hash = hash;
  }
  const form = h('form', {
    class: 'card-body form-row',
    onsubmit: (ev) => {
      ev.preventDefault();
      const q = { topic: topicSel.value, partition: Number(partSel.value), limit: Number(limitSel.value) };
      if (mode === 'offset') q.offset = Math.max(0, Math.floor(Number(offsetIn.value) || 0));
      else if (mode === 'time') {
        const ms = fromLocalInput(timeIn.value);
        if (ms === null) {
          toast(['Pick a date and time to start from.'], { error: true });
          return;
        }
        q.timestamp = ms;
      } else q.from = 'latest';
      go(q);
    },
  },
  h('div', { class: 'field' }, h('label', { for: 'm-topic' }, 'Topic'), topicSel),
  h('div', { class: 'field' }, h('label', { for: 'm-partition' }, 'Partition'), partSel),
  h('div', { class: 'field' }, h('label', null, 'From'), h('div', { class: 'seg', role: 'group', 'aria-label': 'read from' }, modeBtns)),
  offsetField, timeField,
  h('div', { class: 'field' }, h('label', { for: 'm-limit' }, 'Per page'), limitSel),
  h('button', { type: 'submit', class: 'btn primary' }, 'Show'));
  function route(p) {
    const q = messageQuery(p);
    if (!q.topic) {
      const names = topicNames();
      q.topic = (live.topics?.topics ?? []).find((t) => !dlqSource(t.name, names))?.name ?? live.topics?.topics?.[0]?.name;
      if (!q.topic) return;
    }
    if (q.partition === undefined) q.partition = defaultPartition(q.topic);
    fillTopics(q.topic);
    fillPartitions(q.partition);
    if (![...limitSel.options].some((o) => o.value === String(q.limit))) {
      limitSel.append(h('option', { value: q.limit }, String(q.limit)));
    }
    limitSel.value = String(q.limit);
    if (q.offset !== undefined) {
      setMode('offset');
      offsetIn.value = String(q.offset);
    } else if (q.timestamp !== undefined) {
      setMode('time');
      timeIn.value = toLocalInput(q.timestamp);
    } else setMode('latest');
    if (!timeIn.value) timeIn.value = toLocalInput(Date.now() - 3600e3);
    history.replaceState(null, '', messagesHref(queryOf(q)));
    page.load(q);
  }
  setMode('latest');
  return {
    el: h('div', { class: 'stack' },
      h('div', { class: 'page-head' }, h('h1', null, 'Messages'),
        h('span', { class: 'sub' }, 'Reading changes nothing: no group, no delivery, no acknowledgement.')),
      h('section', { class: 'card' }, form), page.el),
    route,
    start() {
      route(params);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Dead letters: the -dlq topics, a redrive button per partition, and their messages with source.

function dlqView(params) {
  const slot = h('div', { class: 'stack' });
  let sel = null; // the query shown
  const page = new MessagePage((q) => {
    const hash = dlqHref(queryOf(q));
    if (location.hash === hash) page.load(q);
    else location.hash = hash;
  });
  const pageSlot = h('div');
  function render() {
    if (!live.stats) return;
    const all = allSummaries().filter((t) => t.source);
    if (!all.length) {
      patch(slot, card('Dead letters', {}, emptyState('No dead letters',
        'With MAX_DELIVERIES set, a message whose last allowed delivery ends without an ack goes to <topic>-dlq, with where it came from, and shows up here.')));
      return;
    }
    patch(slot, all.map((t) => {
      const st = live.stats.topics.find((x) => x.name === t.name);
      const rows = st.partitions.map((p) => {
        const start = p.log_start_offset ?? 0;
        const letters = p.next_offset - start;
        const redriveAt = p.redrive_position ?? p.redrive_offset;
        const pending = redriveAt !== undefined ? Math.max(0, p.next_offset - Math.max(start, redriveAt)) : null;
        const shown = sel && sel.topic === t.name && sel.partition === p.partition;
        return h('tr', { 'data-key': `dlq:${t.name}/${p.partition}`, class: shown ? 'selected' : null },
          h('td', { class: 'name' }, String(p.partition)),
          h('td', { class: 'num' }, h('span', { class: letters ? 'lag high' : 'lag zero' }, fmtInt(letters))),
          pending !== null ? h('td', { class: 'num' }, fmtInt(pending)) : null,
          h('td', { class: 'num hide-narrow' }, fmtInt(p.next_offset)),
          h('td', { class: 'hide-narrow' }, h('a', { href: topicHref(t.source) }, `${t.source} / ${p.partition}`)),
          h('td', { class: 'actions' },
            h('a', { class: 'btn small', href: dlqHref({ topic: t.name, partition: p.partition }), 'aria-current': shown ? 'true' : null }, shown ? 'Shown below' : 'View'),
            h('button', { type: 'button', class: 'btn small primary', disabled: letters === 0 || pending === 0, onclick: () => redriveDialog(t.name, p.partition, t.source) }, 'Redrive…')));
      });
      const hasPending = st.partitions.some((p) => (p.redrive_position ?? p.redrive_offset) !== undefined);
      return card(t.name, { key: 'dlq:' + t.name, hint: `dead letters of ${t.source}` },
        table([['Partition', ''], ['Dead letters', 'num'], hasPending ? ['Not redriven', 'num'] : null, ['Next offset', 'num hide-narrow'],
          ['Redrives to', 'hide-narrow'], ['', 'actions']].filter(Boolean), rows, 'fixed'));
    }));
  }
  function route(p) {
    const q = messageQuery(p);
    const all = allSummaries().filter((t) => t.source);
    if (!q.topic) {
      const withLetters = all.find((t) => t.messages > 0) ?? all[0];
      if (!withLetters) {
        sel = null;
        patch(pageSlot);
        render();
        return;
      }
      q.topic = withLetters.name;
    }
    if (q.partition === undefined) {
      const st = live.stats?.topics.find((x) => x.name === q.topic);
      const best = st?.partitions.reduce((a, b) => (b.next_offset - (b.log_start_offset ?? 0) > a.next_offset - (a.log_start_offset ?? 0) ? b : a), st.partitions[0]);
      q.partition = best?.partition ?? defaultPartition(q.topic);
    }
    sel = q;
    history.replaceState(null, '', dlqHref(queryOf(q)));
    patch(pageSlot, page.el);
    page.load(q);
    render();
  }
  return {
    el: h('div', { class: 'stack' },
      h('div', { class: 'page-head' }, h('h1', null, 'Dead letters'),
        h('span', { class: 'sub' }, 'Redrive appends a partition’s dead letters to their source topic again, each at most once.')),
      slot, pageSlot),
    update: render,
    route,
    start() {
      route(params);
    },
    reload() {
      if (sel) page.load(sel);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Dialogs: seek, delete a group, redrive.

function dialog(title, body, { submit, danger = false, onSubmit, canSubmit }) {
  const error = h('div', { class: 'error-text', role: 'alert' });
  const submitBtn = h('button', { type: 'submit', class: `btn ${danger ? 'danger solid' : 'primary'}`, value: 'ok' }, submit);
  const form = h('form', { method: 'dialog' },
    h('h2', null, title), body, error,
    h('div', { class: 'buttons' }, h('button', { type: 'button', class: 'btn', onclick: () => dlg.close() }, 'Cancel'), submitBtn));
  const dlg = h('dialog', null, form);
  const refresh = () => {
    submitBtn.disabled = canSubmit ? !canSubmit() : false;
  };
  form.addEventListener('input', refresh);
  form.addEventListener('change', refresh);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (canSubmit && !canSubmit()) return;
    submitBtn.disabled = true;
    error.replaceChildren();
    try {
      await onSubmit();
      dlg.close();
    } catch (e) {
      error.replaceChildren(...errorKids('', e));
      refresh();
    }
  });
  dlg.addEventListener('close', () => dlg.remove());
  document.body.append(dlg);
  refresh();
  dlg.showModal();
  return dlg;
}

function seekDialog(topic, group, partitions, only) {
  const parts = [...partitions].sort((a, b) => a - b);
  const partSel = h('select', { id: 'seek-partition' },
    parts.length > 1 && h('option', { value: 'all' }, `All ${parts.length} partitions of this group`),
    parts.map((p) => h('option', { value: p }, `partition ${p}`)));
  partSel.value = only !== undefined ? String(only) : parts.length > 1 ? 'all' : String(parts[0]);
  const radio = (value, checked) => h('input', { type: 'radio', name: 'seek-to', value, checked, id: 'seek-' + value });
  const rEarliest = radio('earliest', true);
  const rLatest = radio('latest');
  const rOffset = radio('offset');
  const rTime = radio('timestamp');
  const offsetIn = h('input', { type: 'number', min: 0, step: 1, placeholder: 'offset', id: 'seek-offset-value', inputmode: 'numeric' });
  const timeIn = h('input', { type: 'datetime-local', step: 1, id: 'seek-time-value', value: toLocalInput(Date.now() - 3600e3) });
  offsetIn.addEventListener('focus', () => (rOffset.checked = true));
  timeIn.addEventListener('focus', () => (rTime.checked = true));
  const choice = (r, label, extra) => h('label', { class: 'choice', for: r.id }, r, h('span', null, label), extra);
  const chosen = () => [rEarliest, rLatest, rOffset, rTime].find((r) => r.checked)?.value;
  dialog(`Seek ${group} on ${topic}`, [
    h('p', null, 'Messages before the new position count as acknowledged; from it on the group receives them again, in offset order. Nothing stays in flight.'),
    h('div', { class: 'field' }, h('label', { for: 'seek-partition' }, 'Partition'), partSel),
    h('div', { class: 'choices', role: 'radiogroup', 'aria-label': 'new position' },
      choice(rEarliest, 'Earliest (the log start: replay everything)'),
      choice(rLatest, 'Latest (the next offset: skip the backlog)'),
      choice(rOffset, 'Offset', offsetIn),
      choice(rTime, 'Time', timeIn)),
  ], {
    submit: 'Seek',
    canSubmit: () => {
      const c = chosen();
      if (c === 'offset') return /^\d+$/.test(offsetIn.value);
      if (c === 'timestamp') return fromLocalInput(timeIn.value) !== null;
      return !!c;
    },
    onSubmit: async () => {
      const c = chosen();
      const body = c === 'offset' ? { offset: Number(offsetIn.value) }
        : c === 'timestamp' ? { timestamp: fromLocalInput(timeIn.value) } : { position: c };
      const targets = partSel.value === 'all' ? parts : [Number(partSel.value)];
      const results = [];
      for (const p of targets) {
        const r = await api('POST', '/seek', { query: { topic, partition: p, group }, body });
        results.push(`${targets.length > 1 ? `partition ${p}: ` : ''}committed offset ${fmtInt(r.committed_offset)}`);
      }
      toast([h('strong', null, `${group} on ${topic}${targets.length === 1 ? ` / partition ${targets[0]}` : ''}`), ' moved: ', results.join(', ')]);
      tick();
    },
  });
}

function deleteGroupDialog(topic, group) {
  const input = h('input', { type: 'text', id: 'delete-confirm', autocomplete: 'off', spellcheck: 'false', placeholder: group });
  const info = brokerInfo();
  const dlg = dialog(`Delete group ${group}?`, [
    h('p', null, `Removes ${group} from every partition of ${topic}${info.count > 1 ? ' that this broker owns' : ''}: its position, acknowledgements, in-flight and delayed messages. Its open streams end. A later consume starts a new group.`),
    h('div', { class: 'field' }, h('label', { for: 'delete-confirm' }, 'Type the group’s name to confirm'), input),
  ], {
    submit: 'Delete group',
    danger: true,
    canSubmit: () => input.value === group,
    onSubmit: async () => {
      await api('DELETE', '/group', { query: { topic, group } });
      toast([h('strong', null, `Deleted ${group}`), ` from ${topic}.`]);
      tick();
    },
  });
  input.focus();
  return dlg;
}

function redriveDialog(topic, partition, source) {
  const rAll = h('input', { type: 'radio', name: 'redrive-n', value: 'all', checked: true, id: 'redrive-all' });
  const rSome = h('input', { type: 'radio', name: 'redrive-n', value: 'some', id: 'redrive-some' });
  const limitIn = h('input', { type: 'number', min: 1, step: 1, id: 'redrive-limit', placeholder: 'how many', inputmode: 'numeric' });
  limitIn.addEventListener('focus', () => (rSome.checked = true));
  dialog(`Redrive ${topic} / partition ${partition}`, [
    h('p', null, `Appends this partition’s dead letters, from its redrive position on, to ${source} / partition ${partition} with their payload, key and headers. Each dead letter is redriven at most once.`),
    h('div', { class: 'choices' },
      h('label', { class: 'choice', for: 'redrive-all' }, rAll, h('span', null, 'All that are not redriven yet')),
      h('label', { class: 'choice', for: 'redrive-some' }, rSome, h('span', null, 'At most'), limitIn)),
  ], {
    submit: 'Redrive',
    canSubmit: () => rAll.checked || /^[1-9]\d*$/.test(limitIn.value),
    onSubmit: async () => {
      const body = rAll.checked ? {} : { limit: Number(limitIn.value) };
      const r = await api('POST', '/redrive', { query: { topic, partition }, body });
      const n = r.redriven ?? 0;
      toast(n > 0
        ? [h('strong', null, `Redriven ${fmtInt(n)} dead letter${n === 1 ? '' : 's'}`), ` to ${source} / partition ${partition}. `,
          h('a', { href: messagesHref({ topic: source, partition, from: 'latest' }) }, 'See them there')]
        : [h('strong', null, 'Nothing to redrive:'), ' every dead letter of this partition was redriven already.']);
      tick();
      current?.view.reload?.();
    },
  });
}

// ---------------------------------------------------------------------------------------------
// Toasts

function toast(kids, { error = false } = {}) {
  const el = h('div', { class: `toast ${error ? 'error' : ''}`, role: error ? 'alert' : 'status' },
    h('div', { class: 'toast-text' }, kids),
    h('button', { type: 'button', class: 'ghost', 'aria-label': 'dismiss', onclick: () => el.remove() }, '×'));
  $('toasts').append(el);
  setTimeout(() => el.remove(), error ? 15000 : 8000);
}

// ---------------------------------------------------------------------------------------------
// The token prompt: shown in the page when mqd answers 401; the token stays in this tab only.

function askForToken(reason) {
  if (gate) {
    if (reason) gate.setReason(reason);
    return;
  }
  const input = h('input', { type: 'password', id: 'token', autocomplete: 'off', spellcheck: 'false', required: true, placeholder: 'AUTH_TOKEN' });
  const why = h('div', { class: 'error-text', role: 'alert' }, reason);
  const button = h('button', { type: 'submit', class: 'btn primary' }, 'Unlock');
  const form = h('form', {
    onsubmit: async (ev) => {
      ev.preventDefault();
      const value = input.value.trim();
      if (!/^[\x21-\x7e]+$/.test(value)) {
        why.textContent = 'A token is printable ASCII without spaces (it is sent in an HTTP header).';
        return;
      }
      button.disabled = true;
      token = value;
      const saved = gate;
      gate = null; // let the check through
      try {
        await api('GET', '/topics');
        sessionStorage.setItem(TOKEN_KEY, token);
        document.body.classList.remove('gated');
        route(true);
        tick();
      } catch (e) {
        if (!gate) {
          gate = saved;
          why.replaceChildren(...errorKids('Cannot check the token:', e));
        }
        button.disabled = false;
      }
    },
  },
  h('h1', null, 'This mqd needs a token'),
  h('p', null, 'It was started with AUTH_TOKEN. Enter the token to use the console: it is kept in this browser tab only (sessionStorage) and sent as “Authorization: Bearer …” with every call.'),
  h('div', { class: 'field' }, h('label', { for: 'token' }, 'Token'), input),
  why, button);
  gate = {
    setReason(text) {
      why.textContent = text;
      input.select();
    },
  };
  token = '';
  sessionStorage.removeItem(TOKEN_KEY);
  document.body.classList.add('gated');
  $('app').replaceChildren(h('div', { class: 'gate' }, h('section', { class: 'card' }, form)));
  document.querySelectorAll('dialog').forEach((d) => d.close());
  input.focus();
}

// ---------------------------------------------------------------------------------------------
// Routes: #/ (overview), #/topic/<name>[/group/<group>], #/messages?..., #/dlq?...

let current = null; // {name, key, view}

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const [path, query = ''] = raw.split('?');
  const params = new URLSearchParams(query);
  const parts = path.split('/').filter(Boolean).map((s) => {
    try {
      return decodeURIComponent(s);
    } catch {
      return s;
    }
  });
  if (parts[0] === 'topic' && parts[1]) return { name: 'topic', key: path, topic: parts[1], group: parts[2] === 'group' ? parts[3] : undefined, params };
  if (parts[0] === 'messages') return { name: 'messages', key: 'messages', params };
  if (parts[0] === 'dlq') return { name: 'dlq', key: 'dlq', params };
  return { name: 'overview', key: 'overview', params };
}

async function route(force = false) {
  if (gate) return;
  const r = parseHash();
  for (const a of document.querySelectorAll('.tabs a')) {
    const on = a.dataset.tab === (r.name === 'topic' ? 'overview' : r.name);
    if (on) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  renderChrome();
  if (!force && current && current.key === r.key && current.view.route) {
    current.view.route(r.params);
    return;
  }
  let view;
  if (r.name === 'topic') view = topicView(r.topic, r.group);
  else if (r.name === 'messages') view = messagesView(r.params);
  else if (r.name === 'dlq') view = dlqView(r.params);
  else view = overviewView();
  current = { key: r.key, view };
  document.title = r.name === 'topic' ? `${r.topic} · mqd` : `${r.name === 'overview' ? 'Overview' : r.name === 'dlq' ? 'Dead letters' : 'Messages'} · mqd`;
  $('app').replaceChildren(view.el);
  window.scrollTo(0, 0);
  if (view.start) {
    if (!live.topics || !live.stats) {
      try {
        const [topics, stats] = await Promise.all([api('GET', '/topics'), api('GET', '/stats')]);
        live.topics = topics;
        live.stats = stats;
      } catch (e) {
        if (current?.view === view && !gate) $('app').replaceChildren(h('div', { class: 'card card-body error-text' }, errorKids('Cannot load:', e)));
        return;
      }
    }
    if (current?.view !== view) return;
    view.start();
  }
  view.update?.();
}

function init() {
  $('live').addEventListener('click', () => {
    live.paused = !live.paused;
    renderChrome();
    if (!live.paused) tick();
  });
  $('sign-out').addEventListener('click', () => {
    token = '';
    sessionStorage.removeItem(TOKEN_KEY);
    live.topics = null;
    live.stats = null;
    tick();
  });
  $('brokers').addEventListener('click', (ev) => {
    if (ev.target.closest('.broker.self')) $('brokers').classList.toggle('open');
  });
  window.addEventListener('hashchange', () => route());
  route();
  tick();
}

init();
