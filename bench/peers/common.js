'use strict';
// What both Node peers share: HS256 tokens (node:crypto), the publish endpoint, per-run seqs and
// a bounded history, and the startup line runwire-bench waits for. This is how a small team
// would write such a relay in Node; it is not tuned beyond the usual (one JSON.stringify per
// event, shared by every subscriber).

const crypto = require('node:crypto');

const HISTORY = 1000; // events kept per run for resume
const MAX_BODY = 1 << 20;

function args(argv) {
  const out = { port: 0, redis: null };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--port') out.port = Number(argv[++i]);
    else if (argv[i] === '--redis') out.redis = argv[++i];
  }
  return out;
}

const secret = process.env.BENCH_SECRET;
if (!secret || secret.length < 32) {
  console.error('BENCH_SECRET (at least 32 bytes) is required');
  process.exit(2);
}

/** The claims of a valid HS256 token, or null. */
function verify(token) {
  if (typeof token !== 'string') return null;
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  try {
    const header = JSON.parse(Buffer.from(parts[0], 'base64url'));
    if (header.alg !== 'HS256') return null;
    const want = crypto.createHmac('sha256', secret).update(parts[0] + '.' + parts[1]).digest();
    const got = Buffer.from(parts[2], 'base64url');
    if (got.length !== want.length || !crypto.timingSafeEqual(got, want)) return null;
    const claims = JSON.parse(Buffer.from(parts[1], 'base64url'));
    if (typeof claims.exp !== 'number' || claims.exp + 5 <= Date.now() / 1000) return null;
    return claims;
  } catch {
    return null;
  }
}

function allows(claims, run) {
  const runs = (claims.runs || []).concat(claims.run ? [claims.run] : []);
  return runs.includes(run) || runs.includes('*');
}

/** Per-run seq and history. */
class Runs {
  constructor() { this.runs = new Map(); }
  get(run) {
    let r = this.runs.get(run);
    if (!r) { r = { seq: 0, history: [] }; this.runs.set(run, r); }
    return r;
  }
  /** Records an event that got `seq` and its encoded message. */
  keep(run, seq, msg) {
    const r = this.get(run);
    if (seq > r.seq) r.seq = seq;
    r.history.push([seq, msg]);
    if (r.history.length > HISTORY) r.history.shift();
  }
  /** Messages after `since`, or null when the history does not reach back that far. */
  since(run, since) {
    const r = this.get(run);
    if (since >= r.seq) return [];
    if (r.history.length === 0 || r.history[0][0] > since + 1) return null;
    return r.history.filter(([s]) => s > since).map(([, m]) => m);
  }
}

function send(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

/**
 * The HTTP handler: GET /health, POST /v1/runs/:run/events (publish token, one event or an array).
 * `publish(run, events)` sequences and delivers them and resolves to their seqs.
 */
function httpHandler(publish) {
  return (req, res) => {
    const url = new URL(req.url, 'http://x');
    if (req.method === 'GET' && url.pathname === '/health') return send(res, 200, { status: 'ok' });
    const m = /^\/v1\/runs\/([A-Za-z0-9_.:-]{1,128})\/events$/.exec(url.pathname);
    if (req.method !== 'POST' || !m) return send(res, 404, { error: 'not found' });
    const run = m[1];
    const auth = req.headers.authorization || '';
    const claims = verify(auth.startsWith('Bearer ') ? auth.slice(7) : null);
    if (!claims) return send(res, 401, { error: 'invalid token' });
    if (claims.scope !== 'publish' || !allows(claims, run)) return send(res, 403, { error: 'forbidden' });
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY) { send(res, 413, { error: 'too large' }); req.destroy(); return; }
      chunks.push(c);
    });
    req.on('end', async () => {
      if (size > MAX_BODY) return;
      let events;
      try {
        events = JSON.parse(Buffer.concat(chunks));
      } catch {
        return send(res, 400, { error: 'invalid JSON' });
      }
      if (!Array.isArray(events)) events = [events];
      if (events.length === 0 || events.length > 1000 ||
          !events.every((e) => e && typeof e.event === 'string')) {
        return send(res, 400, { error: 'invalid events' });
      }
      try {
        const seqs = await publish(run, events);
        send(res, 200, { run, seqs });
      } catch (e) {
        send(res, 503, { error: String(e) });
      }
    });
  };
}

function listening(server) {
  const { address, port } = server.address();
  console.log(`listening on http://${address}:${port}`);
}

module.exports = { args, verify, allows, Runs, httpHandler, listening };
