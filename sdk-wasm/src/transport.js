// The transports' side in JS (see transport.rs): a WebSocket, and a run's event stream read with
// `fetch` and parsed here. The `.wasm` drives them and learns what they receive through one
// callback, `on(what, value)`:
//   on(0)           the connection is open (the socket opened; the relay answered 200 or 204);
//   on(1, frames)   an array of frames: the lines of a WebSocket message (the relay batches them
//                   one per line), the messages of a chunk of an event stream;
//   on(2)           a comment on an event stream (`: hb`): the stream is alive;
//   on(3)           the event stream ended after at least one message;
//   on(4)           the relay answered 204: the run is over and nothing newer is left;
//   on(5)           the relay answered 403;
//   on(code, why)   closed or failed, with a WebSocket close code (1000 to 4999) and its reason.
// After the last of these, or once the connection is dropped by the `.wasm`, nothing is called.

/// The relay's WebSocket URL and the HTTP base of its event streams, `[websocket, httpBase]`,
/// from the client's `url` option: `ws://` or `wss://` (`http(s)://` turned into `ws(s)://`, the
/// scheme in any case), a host, and a path that ends with the WebSocket endpoint (`/v1/ws`), whose
/// `/ws` and trailing slashes the base drops; a query or a fragment is dropped. Throws for
/// anything else.
export function relayUrls(url) {
  const m = typeof url == 'string' && /^(?:ws|http)(s?):\/\/([^?#]*)/i.exec(url);
  if (!m) throw new Error('`url` must start with ws:// or wss://');
  const s = m[1] ? 's' : '';
  const rest = m[2];
  if (!rest || rest[0] == '/') throw new Error('`url` has no host');
  return [`ws${s}://${rest}`, `http${s}://${rest.replace(/\/ws$/, '').replace(/\/+$/, '')}`];
}

/// Opens a WebSocket to `url` (throws on an invalid URL).
export function openSocket(url, on) {
  const ws = new WebSocket(url);
  ws.onopen = () => on(0);
  // Several frames, one per line (the `auth` frame asks for batches): one call for all of them.
  ws.onmessage = (e) => typeof e.data == 'string' && on(1, e.data.split('\n'));
  ws.onclose = (e) => on(e.code < 1000 ? 1006 : e.code, e.reason);
  return ws;
}

/// The JSON text of a client frame (`docs/protocol.md`); absent fields are left out.
export function frameText(type, run, token, since, epoch, batch) {
  return JSON.stringify({ type, run, token, since, epoch, batch });
}

/// Sends `text` on the socket; a socket that is closing throws, and its close event follows.
export function sendText(ws, text) {
  try {
    ws.send(text);
  } catch {}
}

/// Detaches the socket's handlers and closes it, unless it is closing or closed.
export function closeSocket(ws) {
  ws.onopen = ws.onmessage = ws.onclose = null;
  if (ws.readyState <= 1) ws.close(1000); // CONNECTING or OPEN
}

/// Longest line kept while waiting for its end, in UTF-16 units; a stream that exceeds it is
/// broken.
export const MAX_LINE = 4 * 1024 * 1024;

/// An incremental `text/event-stream` parser, fed the text of each chunk as it arrives (a
/// `TextDecoder` in streaming mode keeps a UTF-8 character split between chunks whole). Lines may
/// end in `\n`, `\r\n` or `\r`, and a chunk may end anywhere, even between `\r` and `\n`. Calls
/// `emit(event, data)` for each message (its `event:` name, `message` when absent, and its `data:`
/// lines joined by `\n`; a message without data is dropped) and `emit()` for each comment
/// (`: hb`). `id` and `retry` are ignored: the client resumes by seq and retries by itself. The
/// function returned throws when a line grows past `MAX_LINE`.
export function sseParser(emit) {
  let line = '';
  let skipLf = false;
  let event = '';
  let data = '';
  let hasData = false;
  const done = (l) => {
    if (!l) {
      if (hasData) emit(event || 'message', data);
      event = data = '';
      hasData = false;
    } else if (l[0] == ':') {
      emit();
    } else {
      const i = l.indexOf(':');
      const field = i < 0 ? l : l.slice(0, i);
      let value = i < 0 ? '' : l.slice(i + 1);
      if (value[0] == ' ') value = value.slice(1);
      if (field == 'event') event = value;
      else if (field == 'data') {
        data = hasData ? data + '\n' + value : value;
        hasData = true;
      }
    }
  };
  return (text) => {
    if (skipLf && text[0] == '\n') text = text.slice(1);
    if (!text) return;
    skipLf = text[text.length - 1] == '\r';
    const lines = text.split(/\r\n|\r|\n/);
    lines[0] = line + lines[0];
    line = lines.pop();
    if (line.length > MAX_LINE) throw new Error('event stream line too long');
    lines.forEach(done);
  };
}

/// Opens the event stream of `run` under `base` (`http(s)://host/…/v1`) with `fetch` (of windows
/// and workers alike), resuming after `since` in `epoch` when given, the token, if not empty, in
/// an `Authorization` header. A `close` message (the relay is going away) closes with
/// its code (1012 unless it carries one from 1000 to 4999); 401 closes with 4002, 429 with 4029,
/// and any other failure with 1006, a stream that ends before its first message among them
/// (reopening it at once could spin). Returns the function that aborts it.
export function openEvents(base, run, since, epoch, token, on) {
  let url = `${base}/runs/${encodeURIComponent(run)}/events`;
  if (since !== undefined) {
    url += `?since=${since}`;
    if (epoch !== undefined) url += `&epoch=${encodeURIComponent(epoch)}`;
  }
  const abort = new AbortController();
  let open = true;
  let any = false;
  const end = (what) => {
    if (open) {
      open = false;
      on(what);
    }
  };
  // The frames of a chunk go in one call, before a comment or a `close` that follows them.
  let frames = [];
  const flush = () => {
    const f = frames;
    frames = [];
    if (open && f.length) on(1, f);
  };
  const feed = sseParser((event, data) => {
    if (!open) return;
    if (event !== undefined && event != 'close') {
      any = true;
      return frames.push(data);
    }
    flush();
    if (!open) return;
    if (event == 'close') {
      let code = 1012;
      try {
        const c = JSON.parse(data).code;
        if (c >= 1000 && c < 5000) code = c | 0;
      } catch {}
      return end(code);
    }
    on(2);
  });
  const headers = { Accept: 'text/event-stream' };
  if (token) headers.Authorization = 'Bearer ' + token;
  (async () => {
    const response = await fetch(url, { headers, signal: abort.signal });
    const status = response.status;
    if (open && (status == 200 || status == 204)) on(0);
    if (status != 200) {
      return end(status == 204 ? 4 : status == 403 ? 5 : status == 401 ? 4002 : status == 429 ? 4029 : 1006);
    }
    const reader = response.body.getReader();
    const text = new TextDecoder();
    while (open) {
      const { done, value } = await reader.read();
      if (done) return end(any ? 3 : 1006);
      feed(text.decode(value, { stream: true }));
      flush();
    }
  })().catch(() => end(1006));
  return () => {
    open = false;
    abort.abort();
  };
}
