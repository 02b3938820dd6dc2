// node-echo-client: an independent WebSocket client (Node `ws` package) used
// by wsecho's interop tests (tests/it/interop.rs) to check an echo server.
// Usage: node client.mjs URL [--ca FILE] [--cert FILE --key FILE]
// Sends text, unicode text, binary 0..255, a 1 MiB binary message and a ping,
// checks every echo (type and bytes) and the pong, then sends Close(1000,
// "bye") and expects the server's close frame with code 1000.
// Prints "ok" and exits 0, or prints what failed and exits 1. Deadline: 20 s.
// For a wss:// URL, --ca names the PEM CA certificates to trust (instead of
// Node's bundled roots) and --cert/--key a client certificate to present.
import WebSocket from 'ws';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const usage = 'usage: node client.mjs ws[s]://HOST:PORT/echo [--ca FILE] [--cert FILE --key FILE]';
let args;
try {
  args = parseArgs({
    allowPositionals: true,
    options: { ca: { type: 'string' }, cert: { type: 'string' }, key: { type: 'string' } },
  });
} catch (e) {
  fail(`${e.message}; ${usage}`);
}
const url = args.positionals[0];
if (!url || args.positionals.length > 1) fail(usage);
const opts = args.values;
if ((opts.cert === undefined) !== (opts.key === undefined)) fail('--cert and --key go together');
if (!url.startsWith('wss://') && (opts.ca || opts.cert)) fail('--ca, --cert and --key need a wss:// URL');
const read = (flag, path) => {
  try { return readFileSync(path); } catch (e) { fail(`read --${flag}: ${e.message}`); }
};
// ws passes these to tls.connect, which checks the chain and the host name (an IP address
// against the IP SANs).
const tls = {};
if (opts.ca) tls.ca = read('ca', opts.ca);
if (opts.cert) { tls.cert = read('cert', opts.cert); tls.key = read('key', opts.key); }

function fail(msg) {
  console.log(`FAIL: ${msg}`);
  process.exit(1);
}

setTimeout(() => fail('overall 20 s deadline exceeded'), 20_000).unref();

// Every event from the socket goes into one queue; next() takes them in order.
const events = [];
let waiter = null;
function push(ev) {
  if (waiter) { const w = waiter; waiter = null; w(ev); } else events.push(ev);
}
function next(what) {
  if (events.length) return Promise.resolve(events.shift());
  return new Promise((resolve) => {
    const t = setTimeout(() => fail(`${what}: nothing received within 10 s`), 10_000);
    waiter = (ev) => { clearTimeout(t); resolve(ev); };
  });
}

const ws = new WebSocket(url, { handshakeTimeout: 5000, ...tls });
ws.on('message', (data, isBinary) => push({ kind: 'message', data, isBinary }));
ws.on('pong', (data) => push({ kind: 'pong', data }));
ws.on('close', (code, reason) => push({ kind: 'close', code, reason: reason.toString() }));
ws.on('error', (err) => fail(`socket error: ${err.message}`));
ws.on('unexpected-response', (_req, res) => fail(`handshake: HTTP status ${res.statusCode}`));

await new Promise((resolve) => ws.once('open', resolve));

async function roundTrip(name, msg, binary) {
  ws.send(msg, { binary });
  const ev = await next(name);
  if (ev.kind !== 'message') fail(`${name}: got ${ev.kind} instead of the echo`);
  if (ev.isBinary !== binary) {
    fail(`${name}: echo is ${ev.isBinary ? 'binary' : 'text'}, want ${binary ? 'binary' : 'text'}`);
  }
  if (!Buffer.from(ev.data).equals(Buffer.from(msg))) {
    fail(`${name}: echo differs (${ev.data.length} vs ${Buffer.from(msg).length} bytes)`);
  }
}

await roundTrip('text', 'hello', false);
await roundTrip('unicode text', 'héllo wörld — 你好 🌍 Ωμέγα', false);
await roundTrip('binary 0..255', Buffer.from(Array.from({ length: 256 }, (_, i) => i)), true);
const big = Buffer.alloc(1 << 20);
for (let i = 0; i < big.length; i++) big[i] = (i * 7 + (i >> 8)) & 0xff;
await roundTrip('1 MiB binary', big, true);

ws.ping(Buffer.from('ping-payload'));
const pong = await next('ping');
if (pong.kind !== 'pong') fail(`ping: got ${pong.kind} instead of a pong`);
if (pong.data.toString() !== 'ping-payload') fail(`ping: pong payload ${JSON.stringify(pong.data.toString())}`);
await roundTrip('text after ping', 'after-ping', false);

ws.close(1000, 'bye');
const closed = await next('close');
if (closed.kind !== 'close') fail(`close: got ${closed.kind} instead of the close reply`);
if (closed.code !== 1000) fail(`close: server replied with code ${closed.code} (${JSON.stringify(closed.reason)}), want 1000`);
console.log('ok');
process.exit(0);
