// An idle client connection stays up: the server's heartbeat requests are
// answered by the client, the client's by the server.
// node idle.js PORT SECONDS
'use strict';

const { client, check, connect, jsonEvent, sleep, finish, fail, deadline } = require('./common');

async function main() {
  const seconds = parseFloat(process.argv[3] || '6');
  deadline((seconds + 30) * 1000);
  const conn = connect();
  let disconnects = 0;
  let heartbeats = 0;
  conn.on('disconnected', () => { disconnects += 1; });
  conn.on('reconnecting', () => { disconnects += 1; });
  conn.on('heartbeatInfo', () => { heartbeats += 1; });
  await conn.connect();
  await conn.appendToStream('idle-check', client.expectedVersion.any, jsonEvent({}));
  await sleep(seconds * 1000);
  check('no disconnect while idle', disconnects === 0, disconnects);
  check('client heartbeats answered', heartbeats > 0, heartbeats);
  const w = await conn.appendToStream('idle-check', client.expectedVersion.any, jsonEvent({}));
  check('still usable', w.nextExpectedVersion.toNumber() === 1, w.nextExpectedVersion);
  conn.close();
  finish({ heartbeats });
}

main().catch(fail);
