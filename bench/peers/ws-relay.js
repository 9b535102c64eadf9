'use strict';
// A relay the way such services are usually built in Node: `ws` for WebSockets and an
// in-process pub/sub (a Map of run -> Set of sockets); with --redis, ioredis pub/sub carries
// events between several instances.
//
// Protocol: connect to /ws?token=T (subscribe-scope HS256 token); send {"sub":RUN,"since":N?};
// receive {"ok":RUN,"seq":HEAD}, the events after N (when given), then live events
// {"run":RUN,"seq":S,"event":NAME,"ts":ISO,"data":{...}}. Refusals: {"err":...}.

const http = require('node:http');
const { WebSocketServer } = require('ws');
const { args, verify, allows, Runs, httpHandler, listening } = require('./common');

const opts = args(process.argv.slice(2));
const runs = new Runs();
const subscribers = new Map(); // run -> Set<WebSocket>

function fanOut(run, seq, msg) {
  runs.keep(run, seq, msg);
  const subs = subscribers.get(run);
  if (subs) for (const ws of subs) ws.send(msg);
}

let publish;
if (opts.redis) {
  const Redis = require('ioredis');
  const pub = new Redis(opts.redis);
  const sub = new Redis(opts.redis);
  sub.psubscribe('run:*');
  sub.on('pmessage', (_pattern, channel, msg) => {
    const run = channel.slice(4);
    fanOut(run, JSON.parse(msg).seq, msg);
  });
  publish = async (run, events) => {
    const head = await pub.incrby(`seq:${run}`, events.length);
    const first = head - events.length + 1;
    const ts = new Date().toISOString();
    const p = pub.pipeline();
    const seqs = events.map((e, i) => {
      const seq = first + i;
      p.publish(`run:${run}`, JSON.stringify({ run, seq, event: e.event, ts, data: e.data ?? {} }));
      return seq;
    });
    await p.exec();
    return seqs;
  };
} else {
  publish = async (run, events) => {
    const ts = new Date().toISOString();
    return events.map((e) => {
      const seq = runs.get(run).seq + 1;
      fanOut(run, seq, JSON.stringify({ run, seq, event: e.event, ts, data: e.data ?? {} }));
      return seq;
    });
  };
}

const server = http.createServer(httpHandler(publish));
const wss = new WebSocketServer({ server, path: '/ws', perMessageDeflate: false, maxPayload: 64 * 1024 });

wss.on('connection', (ws, req) => {
  const token = new URL(req.url, 'http://x').searchParams.get('token');
  const claims = verify(token);
  if (!claims || (claims.scope || 'subscribe') !== 'subscribe') return ws.close(4002, 'invalid token');
  ws.isAlive = true;
  ws.runs = new Set();
  ws.on('pong', () => { ws.isAlive = true; });
  ws.on('message', (data, isBinary) => {
    let frame;
    try { frame = JSON.parse(data); } catch { return ws.send('{"err":"bad frame"}'); }
    if (isBinary || !frame || typeof frame.sub !== 'string') return ws.send('{"err":"bad frame"}');
    const run = frame.sub;
    if (!allows(claims, run)) return ws.send(JSON.stringify({ err: 'forbidden', run }));
    if (ws.runs.size >= 100) return ws.send(JSON.stringify({ err: 'too many subscriptions', run }));
    let set = subscribers.get(run);
    if (!set) { set = new Set(); subscribers.set(run, set); }
    set.add(ws);
    ws.runs.add(run);
    const head = runs.get(run).seq;
    ws.send(JSON.stringify({ ok: run, seq: head }));
    if (typeof frame.since === 'number') {
      const replay = runs.since(run, frame.since);
      if (replay) for (const msg of replay) ws.send(msg);
    }
  });
  ws.on('close', () => {
    for (const run of ws.runs) {
      const set = subscribers.get(run);
      if (set) { set.delete(ws); if (set.size === 0) subscribers.delete(run); }
    }
  });
});

// The heartbeat from ws's README: ping every 25 s, drop sockets that did not answer the last one.
const heartbeat = setInterval(() => {
  for (const ws of wss.clients) {
    if (!ws.isAlive) { ws.terminate(); continue; }
    ws.isAlive = false;
    ws.ping();
  }
}, 25000);
wss.on('close', () => clearInterval(heartbeat));

server.listen(opts.port, '127.0.0.1', () => listening(server));
