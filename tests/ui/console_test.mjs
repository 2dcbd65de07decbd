// The operator console (GET /ui) in a real browser: headless Debian Chromium driven by puppeteer-core,
// against real mqd processes started here (API.md "Operating it", issue 15).
//
//   node tests/ui/console_test.mjs --mqd <path to mqd> --out <directory for screenshots>
//       [--chromium /usr/bin/chromium] [--readme-screenshot docs/console.png]
//
// Two rounds: one mqd without a token, then two brokers with AUTH_TOKEN (the page asks for the token).
// Each round sets up state through the HTTP API (produce, ack, a nack that dead-letters), then in the
// page: sees the topics and a group's lag, the live rates, browses messages by offset and by time
// (untrusted text shown as text), seeks a group (its committed offset changes), redrives a dead
// letter and finds it back in its source topic, deletes a group. Screenshots go to --out.
// --readme-screenshot runs a minute of traffic first and saves the overview there (docs/console.png).
//
// puppeteer-core is installed here with `npm ci` when it is missing; the test fails (never skips)
// when that or anything else does not work.

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { freePort } from '../support/free_port.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

function parseArgs(argv) {
  const args = { chromium: '/usr/bin/chromium' };
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i].replace(/^--/, '').replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (!argv[i].startsWith('--') || i + 1 >= argv.length) throw new Error(`bad argument ${argv[i]}`);
    args[name] = argv[++i];
  }
  if (!args.mqd || !args.out) throw new Error('usage: console_test.mjs --mqd <mqd> --out <dir> [--chromium <path>] [--readme-screenshot <png>]');
  return args;
}

// ---------------------------------------------------------------------------------------------
// puppeteer-core, installed on demand from package-lock.json

async function loadPuppeteer() {
  const want = JSON.parse(fs.readFileSync(path.join(here, 'package.json'), 'utf8')).dependencies['puppeteer-core'];
  const installed = path.join(here, 'node_modules', 'puppeteer-core', 'package.json');
  const have = fs.existsSync(installed) ? JSON.parse(fs.readFileSync(installed, 'utf8')).version : null;
  if (have !== want) {
    console.log(`# installing puppeteer-core ${want} (npm ci in ${here})`);
    const r = spawnSync('npm', ['ci', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: here, stdio: 'inherit', env: { ...process.env, PUPPETEER_SKIP_DOWNLOAD: '1' } });
    if (r.status !== 0) throw new Error(`npm ci failed (status ${r.status}${r.error ? ', ' + r.error.message : ''}): cannot run the console test`);
  }
  return (await import('puppeteer-core')).default;
}

// ---------------------------------------------------------------------------------------------
// mqd processes


class Mqd {
  constructor(binary, port, env) {
    this.binary = binary;
    this.port = port;
    this.url = `http://127.0.0.1:${port}`;
    this.dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'mq-ui-test-'));
    this.env = env;
    this.stderr = '';
  }

  async start() {
    const env = { PATH: process.env.PATH, HOME: process.env.HOME ?? '/tmp', PORT: String(this.port), HOST: '127.0.0.1', DATA_DIR: this.dataDir, FSYNC: 'never', ...this.env };
    this.child = spawn(this.binary, [], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    this.exited = new Promise((resolve) => this.child.on('exit', (code, signal) => resolve({ code, signal })));
    this.child.stderr.on('data', (d) => {
      this.stderr += d;
      process.stderr.write(`# mqd :${this.port}: ${String(d).trimEnd().replace(/\n/g, `\n# mqd :${this.port}: `)}\n`);
    });
    const deadline = Date.now() + 20000;
    for (;;) {
      if (this.child.exitCode !== null) throw new Error(`mqd on port ${this.port} exited at start: ${this.stderr}`);
      try {
        const r = await fetch(this.url + '/healthz');
        if (r.status === 200) return this;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`mqd on port ${this.port} did not answer /healthz within 20 s: ${this.stderr}`);
      await delay(50);
    }
  }

  async stop() {
    if (this.child && this.child.exitCode === null) {
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 10000);
      await this.exited;
      clearTimeout(timer);
    }
    fs.rmSync(this.dataDir, { recursive: true, force: true });
  }
}

// The JSON API, as a client of the test sees it.
async function call(base, method, route, { query, body, token } = {}) {
  const url = new URL(route, base);
  for (const [k, v] of Object.entries(query ?? {})) url.searchParams.set(k, String(v));
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    // the raw text is in the error below
  }
  return { status: res.status, json, text };
}

async function ok(base, method, route, opts) {
  const r = await call(base, method, route, opts);
  if (r.status !== 200) throw new Error(`${method} ${route} ${JSON.stringify(opts?.query ?? {})} answered ${r.status}: ${r.text}`);
  return r.json;
}

// An SSE stream of /consume; next() gives the next event's data.
function openStream(base, query, token) {
  const url = new URL('/consume', base);
  for (const [k, v] of Object.entries(query)) url.searchParams.set(k, String(v));
  const abort = new AbortController();
  const queue = [];
  const waiters = [];
  let failure = null;
  const push = (ev) => (waiters.length ? waiters.shift().resolve(ev) : queue.push(ev));
  const done = (async () => {
    const res = await fetch(url, { headers: token ? { Authorization: `Bearer ${token}` } : {}, signal: abort.signal });
    if (res.status !== 200) throw new Error(`/consume answered ${res.status}: ${await res.text()}`);
    const decoder = new TextDecoder();
    let buf = '';
    for await (const chunk of res.body) {
      buf += decoder.decode(chunk, { stream: true });
      let end;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const data = block.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
        if (data) push(JSON.parse(data));
      }
    }
  })().catch((e) => {
    if (e.name !== 'AbortError') {
      failure = e;
      while (waiters.length) waiters.shift().reject(e);
    }
  });
  return {
    next(timeoutMs = 10000) {
      if (failure) return Promise.reject(failure);
      if (queue.length) return Promise.resolve(queue.shift());
      return new Promise((resolve, reject) => {
        const w = { resolve, reject };
        waiters.push(w);
        setTimeout(() => {
          const i = waiters.indexOf(w);
          if (i >= 0) {
            waiters.splice(i, 1);
            reject(new Error(`no event on ${url} within ${timeoutMs} ms`));
          }
        }, timeoutMs).unref();
      });
    },
    async close() {
      abort.abort();
      await done;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The browser

const CHROMIUM_FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage', '--hide-scrollbars', '--lang=en-US'];

async function launch(puppeteer, executablePath) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'mq-ui-chromium-'));
  const browser = await puppeteer.launch({
    executablePath, headless: true, args: [...CHROMIUM_FLAGS, `--user-data-dir=${profile}`], protocolTimeout: 60000,
  });
  return { browser, async close() {
    await browser.close();
    fs.rmSync(profile, { recursive: true, force: true });
  } };
}

// Every page records its script errors: a console that throws fails the test.
async function openPage(browser, viewport) {
  const page = await browser.newPage();
  await page.setViewport(viewport);
  page.setDefaultTimeout(15000);
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    // The browser's own lines for answers it was given (401 before the token, 4xx a test asks for).
    if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) page.problems.push(`console error: ${m.text()}`);
  });
  return page;
}

async function waitText(page, selector, pattern, what) {
  try {
    await page.waitForFunction((sel, src, flags) => {
      const el = document.querySelector(sel);
      return !!el && new RegExp(src, flags).test(el.textContent);
    }, { polling: 100 }, selector, pattern.source, pattern.flags);
  } catch (e) {
    const text = await page.$eval(selector, (el) => el.textContent).catch(() => '<no such element>');
    throw new Error(`${what}: ${selector} never matched ${pattern}; it holds: ${JSON.stringify(text.slice(0, 600))} (${e.message})`);
  }
}

async function waitGone(page, selector, what) {
  try {
    await page.waitForFunction((sel) => !document.querySelector(sel), { polling: 100 }, selector);
  } catch (e) {
    throw new Error(`${what}: ${selector} is still there (${e.message})`);
  }
}

// Toasts stay a few seconds at the bottom right, over whatever is there: a user closes them or waits.
const closeToasts = (page) => page.$$eval('.toast button', (buttons) => buttons.forEach((b) => b.click()));

const cellText = (page, selector) => page.$eval(selector, (el) => el.textContent.trim());

let screenshots = [];
async function shot(page, out, name) {
  const file = path.join(out, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  screenshots.push(file);
  return file;
}

function step(text) {
  console.log(`ok - ${text}`);
}

// ---------------------------------------------------------------------------------------------
// One round: state through the API, then everything through the page.

const XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>';
const BIG = '123456789012345678901234567890';

async function setUp(base, token) {
  const produce = (query, body) => ok(base, 'POST', '/produce', { query, body, token });
  // events/0: 9 messages, one at a time (so that their timestamps grow), with keys, headers, odd payloads.
  const sent = [];  // the answers
  for (let i = 0; i < 9; i++) {
    if (i === 5) {
      // Numbers beyond 2^53 and with trailing zeros, sent as text so that they keep their digits.
      const res = await fetch(new URL('/produce?topic=events&partition=0', base), {
        method: 'POST', headers: token ? { Authorization: `Bearer ${token}` } : {},
        body: `{"payload": {"big": ${BIG}, "exact": 1.50}, "key": "customer-2"}`,
      });
      if (res.status !== 200) throw new Error(`produce of the big number answered ${res.status}: ${await res.text()}`);
      sent.push(await res.json());
      continue;
    }
    const body = { payload: { order: i, note: i === 4 ? XSS : `order ${i}` }, key: `customer-${i % 3}` };
    if (i === 2) body.headers = { 'trace-id': 'abc-123', 'x-html': '<b>bold?</b>' };
    sent.push(await produce({ topic: 'events', partition: 0 }, body));
  }
  return sent;
}

async function setUpGroups(base, token) {
  const q = { topic: 'events', partition: 0 };
  // billing acknowledged 0..2 (committed 3, lag 6); worker acknowledged 0..7 and gets 8, the last,
  // and nacks it: with MAX_DELIVERIES=1 it goes to events-dlq/0.
  await ok(base, 'POST', '/ack', { query: { ...q, group: 'billing' }, body: { ids: ['0-0', '0-1', '0-2'] }, token });
  await ok(base, 'POST', '/ack', { query: { ...q, group: 'worker' }, body: { ids: ['0-0', '0-1', '0-2', '0-3', '0-4', '0-5', '0-6', '0-7'] }, token });
  const stream = openStream(base, { ...q, group: 'worker', max_inflight: 1 }, token);
  const ev = await stream.next();
  if (ev.offset !== 8) throw new Error(`worker was delivered offset ${ev.offset}, expected 8`);
  await ok(base, 'POST', '/nack', { query: { ...q, group: 'worker' }, body: { id: ev.id }, token });
  await stream.close();
  const letters = await ok(base, 'GET', '/messages', { query: { topic: 'events-dlq', partition: 0 }, token });
  if (letters.messages.length !== 1 || letters.messages[0].source?.offset !== 8) {
    throw new Error(`expected one dead letter of events/0 offset 8, got ${JSON.stringify(letters)}`);
  }
}

async function stats(base, token, topic) {
  return ok(base, 'GET', '/stats', { query: { topic }, token });
}

function groupOf(st, partition, group) {
  return st.topics[0].partitions.find((p) => p.partition === partition)?.groups.find((g) => g.group === group);
}

async function round(puppeteer, args, { name, brokers: brokerCount, token }) {
  console.log(`# round ${name}: ${brokerCount} broker(s), ${token ? 'AUTH_TOKEN set' : 'no token'}`);
  const ports = [];
  for (let i = 0; i < brokerCount; i++) ports.push(await freePort());
  const addrs = ports.map((p) => `http://127.0.0.1:${p}`).join(',');
  const brokers = ports.map((port, i) => new Mqd(args.mqd, port, {
    TOPICS: 'events:2,audit:1', MAX_DELIVERIES: '1', BROKER_COUNT: String(brokerCount), BROKER_INDEX: String(i),
    ...(brokerCount > 1 ? { BROKER_ADDRS: addrs } : {}), ...(token ? { AUTH_TOKEN: token } : {}),
  }));
  const { browser, close } = await launch(puppeteer, args.chromium);
  let page;
  try {
    await Promise.all(brokers.map((b) => b.start()));
    const base = brokers[0].url;
    if (token) {
      const r = await call(base, 'GET', '/stats');
      if (r.status !== 401) throw new Error(`without the token /stats answered ${r.status}`);
      const ui = await call(base, 'GET', '/ui');
      if (ui.status !== 200) throw new Error(`without the token /ui answered ${ui.status}`);
    }
    await setUp(base, token);
    await setUpGroups(base, token);
    step(`${name}: state set up through the API (9 messages, groups billing and worker, a dead letter)`);

    page = await openPage(browser, { width: 1366, height: 900 });
    await page.goto(base + '/ui', { waitUntil: 'domcontentloaded' });
    if (token) {
      await page.waitForSelector('#token');
      await page.type('#token', 'not-the-token');
      await page.click('.gate button[type=submit]');
      await waitText(page, '.gate [role=alert]', /refused/, 'a wrong token is refused');
      await shot(page, args.out, `${name}-token-prompt`);
      await page.$eval('#token', (el) => (el.value = ''));
      await page.type('#token', token);
      await page.click('.gate button[type=submit]');
      await waitGone(page, '.gate', 'the prompt goes once the token is right');
      step(`${name}: the page asked for the token, refused a wrong one, took the right one`);
    }

    // Overview: the topics, the groups and billing's lag.
    await waitText(page, 'tr[data-key="topic:events"]', /events/, 'the events topic is listed');
    await waitText(page, 'tr[data-key="topic:events-dlq"]', /dead letters/, 'the dead-letter topic is listed');
    await waitText(page, 'tr[data-key="group:events/billing"] .lag', /^6$/, "billing's lag is 6");
    await waitText(page, 'tr[data-key="group:events/worker"] .lag', /^0$/, "worker's lag is 0");
    await waitText(page, '#dlq-badge', /^1$/, 'the dead-letters tab counts 1');
    step(`${name}: overview shows topics events, audit, events-dlq; billing lag 6, worker lag 0`);

    // Live rates: produce to audit while the page watches.
    const producing = (async () => {
      for (let i = 0; i < 30; i++) {
        await ok(base, 'POST', '/produce', { query: { topic: 'audit', partition: 0 }, body: { payload: { tick: i } }, token });
        await delay(100);
      }
    })();
    await waitText(page, '[data-key="Produced"] .value', /^[1-9]|^0\.[1-9]/, 'the produce rate shows the traffic');
    await producing;
    const legend = await cellText(page, '.chart .chart-legend');
    if (!/produced/.test(legend)) throw new Error(`the throughput chart's legend: ${legend}`);
    step(`${name}: the produce rate and the throughput chart follow the traffic (${legend})`);

    if (brokerCount > 1) {
      const other = await page.$eval('a.broker', (a) => a.href);
      if (!other.startsWith(brokers[1].url + '/ui')) throw new Error(`the other broker's link is ${other}`);
      step(`${name}: the other broker is linked: ${other}`);
    }
    await shot(page, args.out, `${name}-overview`);

    // The topic: partitions, and billing per partition.
    await page.click('tr[data-key="topic:events"] a');
    await waitText(page, 'tr[data-key="gp:billing/0"]', /partition 0/, "billing's partition row");
    if (await cellText(page, 'tr[data-key="gp:billing/0"] td.committed') !== '3') throw new Error("billing's committed offset is not 3");
    await waitText(page, 'tr[data-key="p:0"]', /^0\s*0\s*9/, 'partition 0: log start 0, next offset 9');
    step(`${name}: topic page: partition 0 (next offset 9), billing committed 3`);

    // Seek billing on partition 0 to offset 5, then to the earliest.
    await page.click('tr[data-key="gp:billing/0"] button');
    await page.waitForSelector('dialog[open]');
    await page.click('#seek-offset');
    await page.type('#seek-offset-value', '5');
    await page.click('dialog[open] button[type=submit]');
    await waitGone(page, 'dialog[open]', 'the seek dialog closes');
    await waitText(page, '.toast', /committed offset 5/, 'the seek is confirmed');
    await waitText(page, 'tr[data-key="gp:billing/0"] td.committed', /^5$/, "billing's committed offset after the seek");
    await waitText(page, 'tr[data-key="gp:billing/0"] .lag', /^4$/, "billing's lag after the seek");
    if (groupOf(await stats(base, token, 'events'), 0, 'billing').committed_offset !== 5) throw new Error('/stats disagrees after the seek');
    await page.click('tr[data-key="g:billing"] button');
    await page.waitForSelector('dialog[open]');
    await page.click('#seek-earliest');
    await page.click('dialog[open] button[type=submit]');
    await waitText(page, 'tr[data-key="gp:billing/0"] td.committed', /^0$/, "billing's committed offset after seeking to the earliest");
    await waitText(page, 'tr[data-key="gp:billing/0"] .lag', /^9$/, "billing's lag after seeking to the earliest");
    step(`${name}: seek billing/0 to offset 5 (lag 4), then to the earliest (committed 0, lag 9)`);
    await closeToasts(page);
    await shot(page, args.out, `${name}-topic`);

    // Messages: by offset, paged, untrusted text as text, big numbers exact.
    await page.click('a[data-tab=messages]');
    await page.waitForSelector('#m-topic');
    await page.select('#m-topic', 'events');
    await page.select('#m-partition', '0');
    await page.click('[data-mode=offset]');
    await page.$eval('#m-offset', (el) => (el.value = ''));
    await page.type('#m-offset', '0');
    await page.select('#m-limit', '10');
    await page.click('form button[type=submit]');
    await page.waitForSelector('article[data-offset="0"]');
    await waitText(page, '#messages .range', /offsets 0–8/, 'the page of offsets 0 to 8');
    const html = await page.$eval('#messages', (el) => ({ text: el.textContent, imgs: el.querySelectorAll('img, script, b').length }));
    const xss = await page.evaluate(() => window.__xss);
    if (xss !== undefined || html.imgs !== 0) throw new Error(`untrusted text became HTML (window.__xss=${xss}, ${html.imgs} elements)`);
    if (!html.text.includes('<img src=x onerror=')) throw new Error('the payload with markup is not shown as text');
    if (!html.text.includes(BIG) || !html.text.includes('1.50')) throw new Error(`the numbers are not shown as stored: ${html.text}`);
    if (!html.text.includes('trace-id') || !html.text.includes('<b>bold?</b>') || !html.text.includes('customer-2')) throw new Error('headers or keys missing');
    step(`${name}: messages of events/0 by offset: markup shown as text, ${BIG} exact, headers and keys shown`);
    await page.evaluate(() => (location.hash = '#/messages?topic=events&partition=0&offset=0&limit=5'));
    await waitText(page, '#messages .range', /offsets 0–4/, 'a page of 5');
    await page.click('#messages [data-go=newer]');
    await waitText(page, '#messages .range', /offsets 5–8/, 'the next page');
    if (!page.url().includes('offset=5')) throw new Error(`the address does not follow the page: ${page.url()}`);
    // By time: from the timestamp of a message later than its predecessor, the page starts at it.
    const listed = await ok(base, 'GET', '/messages', { query: { topic: 'events', partition: 0, offset: 0 }, token });
    const stamps = listed.messages.map((m) => m.timestamp);
    const t = stamps.findIndex((s, i) => i > 0 && s > stamps[i - 1]);
    if (t > 0) {
      await page.evaluate((ts) => (location.hash = `#/messages?topic=events&partition=0&timestamp=${ts}&limit=5`), stamps[t]);
      await waitText(page, '#messages .range', new RegExp(`^offsets ${t}–`), `by time: from offset ${t}`);
      if (await page.$eval('[data-mode=time]', (b) => b.getAttribute('aria-pressed')) !== 'true') throw new Error('the time mode is not shown');
      step(`${name}: by time: from ${stamps[t]} ms the page starts at offset ${t}`);
    }
    await shot(page, args.out, `${name}-messages`);

    // Dead letters: the letter with its source, redrive, and the message back in events/0.
    await page.click('a[data-tab=dlq]');
    await waitText(page, 'tr[data-key="dlq:events-dlq/0"]', /^0\s*1/, 'events-dlq/0 holds 1 dead letter');
    await waitText(page, '#messages .source', /events \/ partition 0 \/ offset 8.*worker.*1 delivery/, 'the dead letter names its source');
    await shot(page, args.out, `${name}-dead-letters`);
    await page.click('tr[data-key="dlq:events-dlq/0"] button');
    await page.waitForSelector('dialog[open]');
    await page.click('dialog[open] button[type=submit]');
    await waitText(page, '.toast:last-child', /Redriven 1 dead letter/, 'the redrive is confirmed');
    const back = await ok(base, 'GET', '/messages', { query: { topic: 'events', partition: 0, offset: 9 }, token });
    const original = listed.messages[8];
    if (back.messages.length !== 1 || JSON.stringify(back.messages[0].payload) !== JSON.stringify(original.payload) || back.messages[0].key !== original.key) {
      throw new Error(`events/0 after the redrive: ${JSON.stringify(back)}`);
    }
    await page.click('.toast:last-child a');
    await page.waitForSelector('article[data-topic="events"][data-offset="9"]');
    const shown = await cellText(page, 'article[data-offset="9"] pre');
    if (!shown.includes('"order": 8')) throw new Error(`the redriven message shows ${shown}`);
    step(`${name}: redrive of events-dlq/0: the dead letter is back in events/0 at offset 9, shown in the browser`);
    await page.click('a[data-tab=dlq]');
    await page.waitForSelector('tr[data-key="dlq:events-dlq/0"] button:not([disabled])');
    await page.click('tr[data-key="dlq:events-dlq/0"] button');
    await page.waitForSelector('dialog[open]');
    await page.click('dialog[open] button[type=submit]');
    await waitText(page, '.toast:last-child', /Nothing to redrive/, 'a second redrive finds nothing');
    await closeToasts(page);
    step(`${name}: a second redrive redrives nothing`);

    // Delete worker (with its name typed to confirm).
    await page.evaluate(() => (location.hash = '#/topic/events'));
    await page.waitForSelector('tr[data-key="g:worker"]');
    await page.click('tr[data-key="g:worker"] button.danger');
    await page.waitForSelector('dialog[open] #delete-confirm');
    if (!(await page.$eval('dialog[open] button[type=submit]', (b) => b.disabled))) throw new Error('delete is possible before the name is typed');
    await page.type('#delete-confirm', 'worker');
    await page.click('dialog[open] button[type=submit]');
    await waitText(page, '.toast:last-child', /Deleted worker/, 'the deletion is confirmed');
    await waitGone(page, 'tr[data-key="g:worker"]', 'worker leaves the table');
    if (groupOf(await stats(base, token, 'events'), 0, 'worker')) throw new Error('/stats still lists worker');
    step(`${name}: group worker deleted after typing its name`);

    // An error answer shown readably: a partition that does not exist.
    await page.evaluate(() => (location.hash = '#/messages?topic=events&partition=7'));
    await waitText(page, '#messages [role=alert]', /404 · .*partition/, 'a 404 is shown with its reason');
    step(`${name}: an API error is shown with its status and reason`);

    // A phone. The overview is opened first: emulating a phone makes puppeteer reload the page, and a hash
    // changed while that reload is under way can be lost (the reloaded page showed Messages again).
    await page.evaluate(() => (location.hash = '#/'));
    await page.waitForSelector('tr[data-key="group:events/billing"]');
    await page.setViewport({ width: 390, height: 844, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
    await waitText(page, 'tr[data-key="group:events/billing"] .lag', /^10$/, 'the overview on a phone (the redriven message counts)');
    // (clientWidth: the layout viewport; a mobile browser zooms out to fit a page that is too wide.)
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    if (overflow > 0) throw new Error(`on a phone the page is ${overflow} px wider than the screen`);
    await shot(page, args.out, `${name}-phone-overview`);
    step(`${name}: on a 390 px wide screen the page fits its width`);

    if (token) {
      // The token stays for this tab: a reload asks nothing. The other broker's console asks again.
      await page.setViewport({ width: 1366, height: 900 });
      await page.reload({ waitUntil: 'domcontentloaded' });
      await waitText(page, 'tr[data-key="topic:events"]', /events/, 'after a reload, no prompt');
      if (await page.$('#token')) throw new Error('the token was asked again after a reload');
      if (brokerCount > 1) {
        await page.goto(brokers[1].url + '/ui', { waitUntil: 'domcontentloaded' });
        await page.waitForSelector('#token');
        await page.type('#token', token);
        await page.click('.gate button[type=submit]');
        await waitText(page, '.broker.self', /broker 1 of 2/, "broker 1's console");
        step(`${name}: broker 1's console asks for the token again and shows broker 1 of 2`);
      }
    }
    if (page.problems.length) throw new Error(`the page reported errors:\n${page.problems.join('\n')}`);
  } catch (e) {
    if (page) {
      const file = await shot(page, args.out, `${name}-failure`).catch(() => null);
      if (file) console.log(`# screenshot at the failure: ${file}`);
      if (page.problems?.length) console.log(`# page problems:\n# ${page.problems.join('\n# ')}`);
    }
    throw e;
  } finally {
    await close();
    await Promise.all(brokers.map((b) => b.stop()));
  }
}

// ---------------------------------------------------------------------------------------------
// The README's screenshot: a minute of traffic (producers, consumers at their own pace, some dead
// letters), then the overview.

// Waits until the page has sent `n` more /stats requests: it sends the next one only once the
// refresh of the one before has drawn.
async function statsRefreshes(page, n) {
  for (let i = 0; i < n; i++) {
    await page.waitForRequest((r) => new URL(r.url()).pathname === '/stats', { timeout: 10000 });
  }
}

async function readmeScreenshot(puppeteer, args) {
  const port = await freePort();
  const mqd = new Mqd(args.mqd, port, { TOPICS: 'orders:4,payments:2,emails:2', MAX_DELIVERIES: '3' });
  const { browser, close } = await launch(puppeteer, args.chromium);
  const stop = { now: false };
  const tasks = [];
  try {
    await mqd.start();
    const base = mqd.url;
    // Producers: batches 5 times a second, the partitions in turn, a rate that may swell and ebb;
    // one message in `poisonEvery` is one its consumers always give back (it ends as a dead letter).
    const produceLoop = async (topic, partitions, perSecond, { wave = false, poisonEvery = 0 } = {}) => {
      let i = 0;
      let turn = 0;
      const t0 = Date.now();
      while (!stop.now) {
        const elapsed = (Date.now() - t0) / 1000;
        const rate = perSecond * (wave ? 1 + 0.45 * Math.sin(elapsed / 8) : 1);
        const messages = [];
        for (let k = 0; k < Math.max(1, Math.round(rate / 5)); k++, i++) {
          const payload = { id: `${topic}-${i}`, customer: `c-${(i * 7919) % 1000}`, amount: Math.round((i * 37) % 10000) / 100, currency: 'EUR' };
          if (poisonEvery && i % poisonEvery === poisonEvery - 1) payload.poison = true;
          messages.push({ payload, key: `customer-${i % 97}`, headers: { source: 'checkout', 'trace-id': `t-${i}` } });
        }
        await ok(base, 'POST', '/produce', { query: { topic, partition: turn++ % partitions }, body: { messages } });
        await delay(200);
      }
    };
    // Consumers: at most `perSecond` messages a second per partition; poison is nacked.
    const consumeLoop = async (topic, partition, group, perSecond, ordering = 'none') => {
      const s = openStream(base, { topic, partition, group, max_inflight: 20, ordering });
      let nextAt = Date.now();
      while (!stop.now) {
        let ev;
        try {
          ev = await s.next(1000);
        } catch {
          continue;
        }
        nextAt = Math.max(nextAt + 1000 / perSecond, Date.now() - 1000);
        await delay(Math.max(0, nextAt - Date.now()));
        const verb = ev.payload?.poison ? '/nack' : '/ack';
        await call(base, 'POST', verb, { query: { topic, partition, group }, body: { id: ev.id } });
      }
      await s.close();
    };
    tasks.push(produceLoop('orders', 4, 48, { wave: true, poisonEvery: 400 }), produceLoop('payments', 2, 20, { poisonEvery: 300 }),
      produceLoop('emails', 2, 10, { wave: true, poisonEvery: 60 }));
    for (let p = 0; p < 4; p++) tasks.push(consumeLoop('orders', p, 'fulfilment', 18), consumeLoop('orders', p, 'analytics', 10));
    for (let p = 0; p < 2; p++) tasks.push(consumeLoop('payments', p, 'ledger', 14, 'key'), consumeLoop('emails', p, 'mailer', 6));
    const page = await openPage(browser, { width: 1440, height: 900 });
    await page.goto(base + '/ui', { waitUntil: 'domcontentloaded' });
    const seconds = Number(args.demoSeconds ?? 100);
    console.log(`# running traffic for ${seconds} s before the screenshot`);
    await delay(seconds * 1000);
    await page.waitForSelector('tr[data-key="group:orders/analytics"]');
    const file = path.resolve(args.readmeScreenshot);
    await page.screenshot({ path: file, fullPage: true });
    screenshots.push(file);
    await page.setViewport({ width: 1440, height: 900 });
    await shot(page, args.out, 'demo-overview');
    await page.emulateMediaFeatures([{ name: 'prefers-color-scheme', value: 'dark' }]);
    // The charts (canvas) take their colours from the CSS when they draw, which the page does at its
    // refresh (every second): a /stats request sent after the switch starts a refresh, and the next
    // one is sent only once that refresh has drawn.
    await statsRefreshes(page, 2);
    await shot(page, args.out, 'demo-dark-overview');
    await page.emulateMediaFeatures([{ name: 'prefers-color-scheme', value: 'light' }]);
    await page.evaluate(() => (location.hash = '#/topic/orders'));
    await page.waitForSelector('tr[data-key="g:analytics"]');
    await shot(page, args.out, 'demo-topic');
    await page.evaluate(() => (location.hash = '#/messages?topic=orders&partition=1'));
    await page.waitForSelector('article.msg');
    await shot(page, args.out, 'demo-messages');
    await page.evaluate(() => (location.hash = '#/dlq'));
    await page.waitForSelector('.source');
    await shot(page, args.out, 'demo-dead-letters');
    await page.setViewport({ width: 390, height: 844, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
    await page.evaluate(() => (location.hash = '#/'));
    // A view's rates need two samples: the third /stats request after the change is sent once the
    // second refresh drew them (and the charts at the new size).
    await statsRefreshes(page, 3);
    await page.waitForSelector('tr[data-key="group:orders/analytics"]');
    await shot(page, args.out, 'demo-phone-overview');
    await page.evaluate(() => (location.hash = '#/topic/orders'));
    await statsRefreshes(page, 3);
    await page.waitForSelector('tr[data-key="g:analytics"]');
    await shot(page, args.out, 'demo-phone-topic');
    if (page.problems.length) throw new Error(`the page reported errors:\n${page.problems.join('\n')}`);
  } finally {
    stop.now = true;
    await Promise.allSettled(tasks);
    await close();
    await mqd.stop();
  }
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const args = parseArgs(process.argv.slice(2));
  fs.mkdirSync(args.out, { recursive: true });
  if (!fs.existsSync(args.mqd)) throw new Error(`no mqd at ${args.mqd}`);
  if (!fs.existsSync(args.chromium)) throw new Error(`no Chromium at ${args.chromium} (bash cmake/install-deps.sh chromium)`);
  const puppeteer = await loadPuppeteer();
  if (args.readmeScreenshot) {
    await readmeScreenshot(puppeteer, args);
  } else {
    await round(puppeteer, args, { name: 'open', brokers: 1 });
    await round(puppeteer, args, { name: 'token', brokers: 2, token: 'secret-token-17' });
  }
  for (const f of screenshots) console.log(`# screenshot: ${f}`);
  console.log('# the console test passed');
}

main().then(() => process.exit(0), (e) => {
  for (const f of screenshots) console.log(`# screenshot: ${f}`);
  console.error(`not ok - ${e.stack ?? e}`);
  process.exit(1);
});
