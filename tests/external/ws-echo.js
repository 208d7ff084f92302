// A WebSocket echo server for the Autobahn fuzzing client: `node ws-echo.js PORT`.
// Echoes every message with its type; permessage-deflate on, as Autobahn cases 12 and
// 13 negotiate it. Needs the npm package `ws` (autobahn.sh installs it).
'use strict';
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 9001);
const server = new WebSocketServer({
  host: '127.0.0.1',
  port,
  perMessageDeflate: true,
  maxPayload: 64 * 1024 * 1024,
});
server.on('connection', (ws) => {
  // Protocol errors the fuzzer provokes on purpose must not end the process.
  ws.on('error', () => {});
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});
server.on('listening', () => console.log(`ws echo on 127.0.0.1:${port}`));
