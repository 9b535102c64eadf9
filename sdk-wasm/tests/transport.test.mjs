// The transports' JS side (src/transport.js), in Node: the event stream parser under every
// chunking, the event stream's statuses and ends against a local HTTP server, and the socket's
// batches against a stand-in WebSocket. The browser suites (relay.rs) run both transports against
// a real relay. Run: node --test sdk-wasm/tests/transport.test.mjs
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { after, before, test } from 'node:test';

import { MAX_LINE, closeSocket, frameText, openEvents, openSocket, relayUrls, sendText, sseParser } from '../src/transport.js';

/// Feeds `bytes` to a parser in chunks of `size` bytes, decoded as a stream as openEvents does.
function parse(bytes, size = bytes.length) {
  const items = [];
  const feed = sseParser((event, data) => items.push(event === undefined ? 'comment' : [event, data]));
  const text = new TextDecoder();
  for (let i = 0; i < bytes.length; i += size) feed(text.decode(bytes.subarray(i, i + size), { stream: true }));
  return items;
}
const utf8 = (s) => new TextEncoder().encode(s);

test('parses messages and comments', () => {
  const items = parse(utf8('event: subscribed\ndata: {"a":1}\n\n: hb\n\nid: 3\nevent: log\ndata: x\ndata: y\n\ndata:z\n\n'));
  assert.deepEqual(items, [['subscribed', '{"a":1}'], 'comment', ['log', 'x\ny'], ['message', 'z']]);
});

test('survives any chunking: CRLF, CR and LF line ends, UTF-8 split anywhere', () => {
  const bytes = utf8('event: log\r\ndata: caf\u00e9 \u{1F600}\r\n\r\nevent: e2\rdata: two\r\r: c\n\ndata\n\n');
  const want = [['log', 'caf\u00e9 \u{1F600}'], ['e2', 'two'], 'comment', ['message', '']];
  for (let size = 1; size <= bytes.length; size++) assert.deepEqual(parse(bytes, size), want, `chunk size ${size}`);
});

test('a message without data is dropped, and a field without a colon has an empty value', () => {
  assert.deepEqual(parse(utf8('event: x\n\nretry: 10\n\nevent\ndata: d\n\n')), [['message', 'd']]);
});

test('bounds the line kept while waiting for its end', () => {
  const feed = sseParser(() => {});
  const chunk = 'a'.repeat(1024 * 1024);
  assert.throws(() => {
    for (let i = 0; i <= MAX_LINE / chunk.length; i++) feed(chunk);
  }, /line too long/);
});

test('client frames: their JSON text, absent fields left out', () => {
  assert.equal(frameText('auth', undefined, 't"1', undefined, undefined, true), '{"type":"auth","token":"t\\"1","batch":true}');
  assert.equal(frameText('subscribe', 'r:1', undefined, 7, 'e1', undefined), '{"type":"subscribe","run":"r:1","since":7,"epoch":"e1"}');
  assert.equal(frameText('ping'), '{"type":"ping"}');
});

test("the relay's addresses: the WebSocket URL and the event streams' base", () => {
  assert.deepEqual(relayUrls('wss://relay.example/v1/ws'), ['wss://relay.example/v1/ws', 'https://relay.example/v1']);
  assert.deepEqual(relayUrls('ws://127.0.0.1:9000/prefix/v1/ws'), ['ws://127.0.0.1:9000/prefix/v1/ws', 'http://127.0.0.1:9000/prefix/v1']);
  // http(s) turned into ws(s), the scheme in any case.
  assert.deepEqual(relayUrls('HTTP://h:1/v1/ws'), ['ws://h:1/v1/ws', 'http://h:1/v1']);
  assert.deepEqual(relayUrls('HttpS://h/v1/ws'), ['wss://h/v1/ws', 'https://h/v1']);
  // A query and a fragment dropped; trailing slashes dropped from the base, `/WS` kept.
  assert.deepEqual(relayUrls('wss://h/v1/ws?x=1#f'), ['wss://h/v1/ws', 'https://h/v1']);
  assert.deepEqual(relayUrls('ws://h/v1//'), ['ws://h/v1//', 'http://h/v1']);
  assert.deepEqual(relayUrls('ws://h/v1/WS'), ['ws://h/v1/WS', 'http://h/v1/WS']);
  assert.deepEqual(relayUrls('ws://h'), ['ws://h', 'http://h']);
});

test('an address that is not a relay\'s is refused, saying why', () => {
  for (const bad of ['', 'ftp://h/v1/ws', 'relay/v1/ws', 'wsss://h/v1/ws', ' ws://h/v1/ws', undefined, 7, { toString: () => 'ws://h/v1/ws' }]) {
    assert.throws(() => relayUrls(bad), { message: '`url` must start with ws:// or wss://' }, String(bad));
  }
  for (const bad of ['wss://', 'wss:///v1/ws', 'ws://?x', 'http://#f']) {
    assert.throws(() => relayUrls(bad), { message: '`url` has no host' }, bad);
  }
});

// A relay stand-in under `${base}/v1`: each run's stream answers as the run's name says.
let server;
let base;
const seen = [];
before(async () => {
  server = createServer((req, res) => {
    seen.push({ url: req.url, auth: req.headers.authorization, accept: req.headers.accept });
    const run = decodeURIComponent(req.url.match(/^\/v1\/runs\/([^/]*)\/events/)?.[1] ?? '');
    const stream = (...chunks) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const next = () => (chunks.length ? res.write(chunks.shift(), () => setTimeout(next, 5)) : res.end());
      next();
    };
    switch (run) {
      case 'messages':
        return stream(': hb\n\n', 'data: {"type":"event","seq":1}\n\n', 'event: log\ndata: two\n\n', 'data: 3\n\n: hb\n\n');
      case 'batch':
        return stream('data: a\n\n: hb\n\ndata: b\n\ndata: c\n\n');
      case 'close':
        return stream('data: one\n\n', 'event: close\ndata: {"type":"close","code":1001}\n\n', 'data: after\n\n');
      case 'close-without-code':
        return stream('event: close\ndata: nope\n\n');
      case 'silent':
        return stream(': hb\n\n');
      case 'open':
        return stream('data: one\n\n'); // then never ends: the client aborts
      default: {
        res.writeHead(Number(run) || 404);
        return res.end();
      }
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${server.address().port}/v1`;
});
after(() => server.close());

/// Opens the stream of `run` and collects what `on` is told until its last call (3 or more).
function follow(run, token = '', since, epoch) {
  return new Promise((resolve) => {
    const calls = [];
    openEvents(base, run, since, epoch, token, (what, value) => {
      calls.push(value === undefined ? [what] : [what, value]);
      if (what >= 3) setTimeout(() => resolve(calls), 20); // anything after the end would show
    });
  });
}

test('an event stream: open, messages and comments in order, then its end', async () => {
  const calls = await follow('messages', 'tok');
  // The chunks may reach the client split or joined: frames come in arrays, in order.
  assert.deepEqual(calls.filter(([what]) => what != 1), [[0], [2], [2], [3]]);
  assert.deepEqual(calls.filter(([what]) => what == 1).flatMap(([, frames]) => frames), ['{"type":"event","seq":1}', 'two', '3']);
  assert.equal(calls.findIndex(([what]) => what == 1) > 1, true, 'after the first comment');
  assert.deepEqual(calls.at(-3)[0], 1, 'the last frame before the last comment');
  const req = seen.find((r) => r.url == '/v1/runs/messages/events');
  assert.equal(req.auth, 'Bearer tok');
  assert.equal(req.accept, 'text/event-stream');
});

test("a chunk's frames in one call, before the comment that follows them", async () => {
  assert.deepEqual(await follow('batch'), [[0], [1, ['a']], [2], [1, ['b', 'c']], [3]]);
});

test('no Authorization header without a token', async () => {
  await follow('204');
  assert.equal(seen.find((r) => r.url == '/v1/runs/204/events').auth, undefined);
});

test('the stream URL: the run and the epoch percent-encoded, `since` and `epoch` only to resume', async () => {
  await follow('204', '', 7, 'e 1/x');
  await follow('204', '', undefined, 'e2');
  const urls = seen.map((r) => r.url).filter((u) => u.startsWith('/v1/runs/204/'));
  assert.deepEqual(urls.slice(-2), ['/v1/runs/204/events?since=7&epoch=e%201%2Fx', '/v1/runs/204/events']);
  seen.length = 0;
  await follow('r:1.2_-x');
  assert.equal(seen[0].url, '/v1/runs/r%3A1.2_-x/events');
});

test('the statuses: 204 is the run over, 403 refused, 401 and 429 as close codes, others failed', async () => {
  assert.deepEqual(await follow('204'), [[0], [4]]);
  assert.deepEqual(await follow('403'), [[5]]);
  assert.deepEqual(await follow('401'), [[4002]]);
  assert.deepEqual(await follow('429'), [[4029]]);
  assert.deepEqual(await follow('500'), [[1006]]);
});

test('a close message closes with its code, or 1012, and nothing after it is delivered', async () => {
  assert.deepEqual(await follow('close'), [[0], [1, ['one']], [1001]]);
  assert.deepEqual(await follow('close-without-code'), [[0], [1012]]);
});

test('a stream that ends before its first message failed (reopening it at once could spin)', async () => {
  assert.deepEqual(await follow('silent'), [[0], [2], [1006]]);
});

test('an unreachable relay fails the stream', async () => {
  const calls = await new Promise((resolve) => {
    const calls = [];
    openEvents('http://127.0.0.1:1/v1', 'x', undefined, undefined, '', (what) => {
      calls.push(what);
      resolve(calls);
    });
  });
  assert.deepEqual(calls, [1006]);
});

test('nothing is called once the stream is aborted, even from the callback itself', async () => {
  const calls = [];
  let abort;
  await new Promise((resolve) => {
    abort = openEvents(base, 'open', undefined, undefined, '', (what, value) => {
      calls.push(what);
      if (what == 1) {
        abort();
        setTimeout(resolve, 50);
      }
    });
  });
  assert.deepEqual(calls, [0, 1]);
});

class FakeSocket {
  static last;
  readyState = 0;
  closed = [];
  sent = [];
  constructor(url) {
    this.url = url;
    FakeSocket.last = this;
  }
  send(text) {
    this.sent.push(text);
  }
  close(code) {
    this.closed.push(code);
    this.readyState = 3;
  }
}

test('a socket: a batch as its lines in one call, its close code and reason, and nothing after closeSocket', () => {
  globalThis.WebSocket = FakeSocket;
  try {
    const calls = [];
    let ws;
    ws = openSocket('ws://relay/v1/ws', (what, value) => {
      calls.push(value === undefined ? [what] : [what, value]);
    });
    const fake = FakeSocket.last;
    assert.equal(ws, fake);
    assert.equal(fake.url, 'ws://relay/v1/ws');
    fake.readyState = 1;
    fake.onopen();
    fake.onmessage({ data: 'a\nb' });
    fake.onmessage({ data: new ArrayBuffer(2) }); // not text: ignored
    fake.onclose({ code: 4001, reason: 'token expired' });
    fake.onclose({ code: 0, reason: '' }); // no code: dropped
    assert.deepEqual(calls, [[0], [1, ['a', 'b']], [4001, 'token expired'], [1006, '']]);
    calls.length = 0;
    sendText(ws, 'hello');
    fake.send = () => {
      throw new Error('closing');
    };
    sendText(ws, 'lost'); // a closing socket throws; its close event follows
    assert.deepEqual(fake.sent, ['hello']);
    closeSocket(ws);
    assert.deepEqual(fake.closed, [1000]);
    assert.equal(fake.onmessage, null);
    assert.equal(fake.onclose, null);
  } finally {
    delete globalThis.WebSocket;
  }
});
