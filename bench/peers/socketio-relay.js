'use strict';
// A socket.io relay: one room per run, token checked by a middleware on the handshake.
//
// Protocol (socket.io events): connect with auth {token}; emit "sub" {run, since?}; receive "ok"
// {run, seq: HEAD}, the events after `since`, then live "ev" {run, seq, event, ts, data}.

const http = require('node:http');
const { Server } = require('socket.io');
const { args, verify, allows, Runs, httpHandler, listening } = require('./common');

const opts = args(process.argv.slice(2));
const runs = new Runs();
let io;

async function publish(run, events) {
  const ts = new Date().toISOString();
  return events.map((e) => {
    const seq = runs.get(run).seq + 1;
    const ev = { run, seq, event: e.event, ts, data: e.data ?? {} };
    runs.keep(run, seq, ev);
    io.to(run).emit('ev', ev);
    return seq;
  });
}

const server = http.createServer(httpHandler(publish));
io = new Server(server, {
  transports: ['websocket'],
  perMessageDeflate: false,
  httpCompression: false,
  serveClient: false,
  maxHttpBufferSize: 64 * 1024,
});

io.use((socket, next) => {
  const claims = verify(socket.handshake.auth && socket.handshake.auth.token);
  if (!claims || (claims.scope || 'subscribe') !== 'subscribe') return next(new Error('invalid token'));
  socket.data.claims = claims;
  next();
});

io.on('connection', (socket) => {
  socket.on('sub', (frame) => {
    const run = frame && frame.run;
    if (typeof run !== 'string' || !allows(socket.data.claims, run)) {
      return socket.emit('err', { error: 'forbidden', run });
    }
    socket.join(run);
    socket.emit('ok', { run, seq: runs.get(run).seq });
    if (typeof frame.since === 'number') {
      const replay = runs.since(run, frame.since);
      if (replay) for (const ev of replay) socket.emit('ev', ev);
    }
  });
});

server.listen(opts.port, '127.0.0.1', () => listening(server));
