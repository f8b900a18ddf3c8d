// Keeps appending while the test restarts the node; the client reconnects
// and nothing acknowledged is lost or duplicated:
// node restart.js PORT COUNT
// Prints {"progress": n} lines while writing, then the result line.
'use strict';

const { client, uuid, check, connect, jsonEvent, sleep, finish, fail, deadline } = require('./common');

deadline(90000);

async function main() {
  const count = parseInt(process.argv[3] || '300', 10);
  const conn = connect({ maxReconnections: 400, reconnectionDelay: 100, operationTimeout: 2000, maxRetries: 100 });
  let reconnects = 0;
  conn.on('reconnecting', () => { reconnects += 1; });
  await conn.connect();
  const s = 'restart-' + uuid.v4();
  for (let n = 0; n < count; n++) {
    // Exact expected versions make a retried, already-committed write an
    // idempotent success even after the node lost its in-memory caches.
    await conn.appendToStream(s, n - 1, jsonEvent({ n }));
    if (n % 10 === 0) process.stdout.write(JSON.stringify({ progress: n }) + '\n');
    await sleep(5);
  }
  const got = [];
  let from = 0;
  for (let page = 0; page < 100; page++) {
    const slice = await conn.readStreamEventsForward(s, from, 100);
    for (const e of slice.events) got.push(JSON.parse(e.event.data.toString()).n);
    if (slice.isEndOfStream) break;
    from = slice.nextEventNumber;
  }
  const expected = [];
  for (let n = 0; n < count; n++) expected.push(n);
  check('reconnected', reconnects > 0, reconnects);
  check('every event once, in order', got.join() === expected.join(), 'got ' + got.length);
  conn.close();
  finish({ reconnects, events: got.length });
}

main().catch(fail);
