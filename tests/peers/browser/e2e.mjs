// Real-browser end-to-end test of the wsecho test page (GET /).
//
// usage: node e2e.mjs http[s]://127.0.0.1:PORT/ SCREENSHOT.png [SPKI_SHA256_BASE64]
//
// For an https:// URL, SPKI_SHA256_BASE64 names the server's public key (base64 of the
// SHA-256 of its SubjectPublicKeyInfo) that Chromium is to accept although no root it
// trusts issued the certificate: --ignore-certificate-errors-spki-list, honoured because
// the profile is a --user-data-dir of our own. Every other certificate error still fails.
//
// Drives Debian's /usr/bin/chromium (headless) through playwright-core and
// clicks the page as a person would. Prints `browser-e2e: ok` or
// `browser-e2e: FAILED: <what>` as the last line; exits 0 / 1.
// Install: tests/peers/browser/setup.sh (never downloads a browser).
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';

const [url, shotArg, spki] = process.argv.slice(2);
if (!url || !shotArg) {
  console.error('usage: node e2e.mjs http[s]://127.0.0.1:PORT/ SCREENSHOT.png [SPKI_SHA256_BASE64]');
  process.exit(2);
}
const trust = spki ? [`--ignore-certificate-errors-spki-list=${spki}`] : [];
const shot = resolve(shotArg);
const WAIT_MS = 30_000;        // every single wait is bounded by this
const TOTAL_MS = 120_000;      // whole run (the Rust test kills us at 150 s)
const XSS = 'héllo 世界 <b>bold</b><img src=x onerror=alert(1)>';

class Failure extends Error {}
const fail = (msg) => { throw new Failure(msg); };
const step = (msg) => console.log(`browser-e2e: ${msg}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let context, page, userDataDir;
const pageErrors = [];
const dialogs = [];
const sockets = []; // the URL of every WebSocket the page opened

// The lines of #output: one entry per child element.
async function lines() {
  return page.$$eval('#output > *', (els) => els.map((e) => ({ tag: e.tagName, text: e.textContent })));
}
const texts = async () => (await lines()).map((l) => l.text);
const tail = (arr, n = 8) => JSON.stringify(arr.slice(-n));

// Poll #output until pred(texts) is true, at most WAIT_MS.
async function waitLines(what, pred) {
  const end = Date.now() + WAIT_MS;
  let t = [];
  for (;;) {
    t = await texts();
    if (pred(t)) return t;
    if (pageErrors.length) fail(`page error while waiting for ${what}: ${pageErrors[0]}`);
    if (Date.now() > end) fail(`timed out after ${WAIT_MS / 1000}s waiting for ${what}; last #output lines: ${tail(t)}`);
    await sleep(25);
  }
}

// Lines appended after index `from` stay unchanged for `ms` (used for "does nothing").
async function expectNoNewLines(what, from, ms = 400) {
  await sleep(ms);
  const t = await texts();
  if (t.length !== from) fail(`${what}: expected no new #output line, got ${tail(t.slice(from))}`);
}

async function setInput(value) {
  await page.locator('#input').fill(value, { timeout: WAIT_MS });
}
const click = (id) => page.locator(`#${id}`).click({ timeout: WAIT_MS });

async function sendAndExpectEcho(msg) {
  const from = (await texts()).length;
  await setInput(msg);
  await click('send');
  const t = await waitLines(`"SEND: ${msg}" then "RESPONSE: ${msg}"`, (t) => t.length >= from + 2);
  const got = t.slice(from, from + 2);
  if (got[0] !== `SEND: ${msg}` || got[1] !== `RESPONSE: ${msg}`) {
    fail(`after Send of ${JSON.stringify(msg)} expected ["SEND: ${msg}","RESPONSE: ${msg}"], got ${JSON.stringify(got)}`);
  }
}

async function run() {
  userDataDir = mkdtempSync(join(tmpdir(), 'wsecho-e2e-profile-'));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--no-first-run', '--disable-component-update', '--disable-sync', '--disable-quic', ...trust],
    viewport: { width: 1100, height: 800 },
    timeout: 30_000,
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(WAIT_MS);
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('websocket', (ws) => sockets.push(ws.url()));
  page.on('dialog', (d) => { dialogs.push(`${d.type()}: ${d.message()}`); d.dismiss().catch(() => {}); });
  page.on('console', (m) => {
    if (m.type() === 'error' && !/\/favicon\.ico$/.test(m.location().url || '')) console.log(`browser-e2e: console error: ${m.text()}`);
  });

  // 1. Load the page.
  let resp;
  try {
    resp = await page.goto(url, { waitUntil: 'load', timeout: WAIT_MS });
  } catch (e) {
    fail(`GET ${url}: ${e.message.split('\n')[0]}`);
  }
  if (!resp || !resp.ok()) fail(`GET ${url} -> ${resp ? resp.status() : 'no response'}`);
  const title = await page.title();
  step(`loaded ${url} (HTTP ${resp.status()}, title ${JSON.stringify(title)})`);
  if (!title.trim()) step('warning: page has no <title>');
  for (const [id, tag] of [['open', 'BUTTON'], ['close', 'BUTTON'], ['send', 'BUTTON'], ['input', 'INPUT'], ['output', 'DIV']]) {
    const n = await page.locator(`#${id}`).count();
    if (n !== 1) fail(`expected exactly one element #${id}, found ${n}`);
    const t = await page.locator(`#${id}`).evaluate((e) => e.tagName);
    if (t !== tag) fail(`#${id} is <${t.toLowerCase()}>, expected <${tag.toLowerCase()}>`);
    // (#output is empty, so zero-height, until the first line.)
    if (id !== 'output' && !(await page.locator(`#${id}`).isVisible())) fail(`#${id} is not visible`);
  }
  const initial = await page.locator('#input').inputValue();
  if (initial !== 'Hello world!') fail(`#input prefilled with ${JSON.stringify(initial)}, expected "Hello world!"`);
  if ((await texts()).length !== 0) fail(`#output not empty on load: ${tail(await texts())}`);

  // Send before Open does nothing.
  await click('send');
  await expectNoNewLines('Send before Open', 0);
  step('Send before Open: no-op');

  // 2. Open -> OPEN.
  await click('open');
  await waitLines('"OPEN" after clicking Open', (t) => t.length >= 1);
  if ((await texts())[0] !== 'OPEN') fail(`first line after Open is ${JSON.stringify((await texts())[0])}, expected "OPEN"`);
  step('Open -> OPEN');
  // Open while open does nothing (no second connection / line).
  await click('open');
  await expectNoNewLines('Open while already open', 1);
  step('Open while open: no-op');

  // 3. Send the prefilled message.
  await setInput('Hello world!');
  await sendAndExpectEcho('Hello world!');
  step('Send -> SEND: Hello world! / RESPONSE: Hello world!');

  // 4. Non-ASCII + markup: echoed as text, never as HTML.
  await sendAndExpectEcho(XSS);
  const injected = await page.$$eval('#output b, #output img', (els) => els.map((e) => e.outerHTML));
  if (injected.length) fail(`markup was interpreted inside #output: ${JSON.stringify(injected)}`);
  const last = await page.$eval('#output', (o) => ({
    text: o.lastElementChild.textContent, elems: o.lastElementChild.querySelectorAll('*').length }));
  if (last.text !== `RESPONSE: ${XSS}`) fail(`RESPONSE textContent ${JSON.stringify(last.text)} != ${JSON.stringify('RESPONSE: ' + XSS)}`);
  if (last.elems) fail(`the RESPONSE line for the markup message contains ${last.elems} element(s); expected text only`);
  await sleep(200);
  if (dialogs.length) fail(`a dialog opened (script injection?): ${dialogs[0]}`);
  step('non-ASCII + HTML echoed as plain text');

  // 5. 50 quick sends: all 50 responses arrive, in order.
  const from = (await texts()).length;
  const N = 50;
  const t0 = Date.now();
  for (let i = 0; i < N; i++) {
    await setInput(`m${i}`);
    await click('send');
  }
  const clicked = Date.now() - t0;
  const t = await waitLines(`${N} RESPONSE lines m0..m${N - 1}`,
    (t) => t.slice(from).filter((s) => s.startsWith('RESPONSE: ')).length >= N);
  const added = t.slice(from);
  const sends = added.filter((s) => s.startsWith('SEND: ')).map((s) => s.slice(6));
  const resps = added.filter((s) => s.startsWith('RESPONSE: ')).map((s) => s.slice(10));
  const want = Array.from({ length: N }, (_, i) => `m${i}`);
  const others = added.filter((s) => !s.startsWith('SEND: ') && !s.startsWith('RESPONSE: '));
  if (others.length) fail(`unexpected lines during ${N} sends: ${tail(others)}`);
  if (JSON.stringify(sends) !== JSON.stringify(want)) fail(`SEND lines not m0..m${N - 1} in order: ${JSON.stringify(sends)}`);
  if (JSON.stringify(resps) !== JSON.stringify(want)) fail(`RESPONSE lines not m0..m${N - 1} in order: ${JSON.stringify(resps)}`);
  step(`${N} quick sends (clicked in ${clicked} ms, all echoed in ${Date.now() - t0} ms, in order)`);

  // 5b. The same as a burst: 50 clicks in one browser task, so all 50 frames
  // are sent before the first echo can be processed (pipelined, in order).
  const from2 = (await texts()).length;
  const t1 = Date.now();
  await page.evaluate((n) => {
    const input = document.getElementById('input');
    const send = document.getElementById('send');
    for (let i = 0; i < n; i++) { input.value = `b${i}`; send.click(); }
  }, N);
  const t2 = await waitLines(`${N} burst RESPONSE lines b0..b${N - 1}`,
    (t) => t.slice(from2).filter((s) => s.startsWith('RESPONSE: ')).length >= N);
  const added2 = t2.slice(from2);
  const want2 = Array.from({ length: N }, (_, i) => `b${i}`);
  const sends2 = added2.filter((s) => s.startsWith('SEND: ')).map((s) => s.slice(6));
  const resps2 = added2.filter((s) => s.startsWith('RESPONSE: ')).map((s) => s.slice(10));
  if (added2.length !== 2 * N) fail(`burst: expected ${2 * N} lines, got ${added2.length}: ${tail(added2)}`);
  if (JSON.stringify(sends2) !== JSON.stringify(want2)) fail(`burst SEND lines not b0..b${N - 1} in order: ${JSON.stringify(sends2)}`);
  if (JSON.stringify(resps2) !== JSON.stringify(want2)) fail(`burst RESPONSE lines not b0..b${N - 1} in order: ${JSON.stringify(resps2)}`);
  step(`${N} burst sends echoed in order in ${Date.now() - t1} ms`);

  // 6. Close -> CLOSE; Send after Close does nothing.
  let n = (await texts()).length;
  await click('close');
  await waitLines('"CLOSE" after clicking Close', (t) => t.length > n);
  if ((await texts())[n] !== 'CLOSE') fail(`line after Close is ${JSON.stringify((await texts())[n])}, expected "CLOSE"`);
  await expectNoNewLines('after CLOSE', n + 1, 200);
  await click('send');
  await expectNoNewLines('Send after Close', n + 1);
  step('Close -> CLOSE; Send after Close: no-op');

  // 7. Open again -> OPEN; Send works again.
  n = (await texts()).length;
  await click('open');
  await waitLines('a new "OPEN" after re-opening', (t) => t.length > n);
  if ((await texts())[n] !== 'OPEN') fail(`line after re-Open is ${JSON.stringify((await texts())[n])}, expected "OPEN"`);
  await sendAndExpectEcho('again');
  step('re-Open -> OPEN; Send works again');

  const all = await lines();
  const nonDiv = all.filter((l) => l.tag !== 'DIV');
  if (nonDiv.length) fail(`#output children must be <div>, found <${nonDiv[0].tag.toLowerCase()}>`);
  if (all.some((l) => l.text.startsWith('ERROR'))) fail(`ERROR line in #output: ${tail(all.map((l) => l.text))}`);
  if (pageErrors.length) fail(`page error: ${pageErrors[0]}`);
  if (dialogs.length) fail(`unexpected dialog: ${dialogs[0]}`);
  step(`#output has ${all.length} lines`);

  // The page follows the scheme it was loaded with: wss:// from an https:// page.
  const scheme = new URL(url).protocol === 'https:' ? 'wss:' : 'ws:';
  if (!sockets.length) fail('the page opened no WebSocket');
  const other = sockets.filter((u) => new URL(u).protocol !== scheme);
  if (other.length) fail(`a page loaded over ${new URL(url).protocol} opened ${other[0]}, want ${scheme}//`);
  step(`the page's ${sockets.length} WebSockets were all ${scheme}// (${sockets[0]})`);
}

async function screenshot() {
  if (!page) return;
  try {
    mkdirSync(dirname(shot), { recursive: true });
    await page.screenshot({ path: shot, fullPage: true, timeout: WAIT_MS });
    console.log(`browser-e2e: screenshot ${shot}`);
  } catch (e) {
    console.log(`browser-e2e: screenshot failed: ${e.message.split('\n')[0]}`);
  }
}

let failure = null;
const watchdog = setTimeout(async () => {
  await Promise.race([screenshot(), sleep(5000)]);
  console.log(`browser-e2e: FAILED: whole run exceeded ${TOTAL_MS / 1000}s`);
  process.exit(1);
}, TOTAL_MS);

try {
  await run();
} catch (e) {
  failure = e instanceof Failure ? e.message : `${e.name}: ${e.message.split('\n')[0]}`;
}
await screenshot();
clearTimeout(watchdog);
try { if (context) await Promise.race([context.close(), sleep(5000)]); } catch {}
try { if (userDataDir) rmSync(userDataDir, { recursive: true, force: true }); } catch {}
if (failure) {
  console.log(`browser-e2e: FAILED: ${failure}`);
  process.exit(1);
}
console.log('browser-e2e: ok');
process.exit(0);
