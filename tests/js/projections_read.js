// Reads $ce-CATEGORY over TCP with resolveLinkTos, as applications do on
// top of the $by_category projection:  node projections_read.js PORT CATEGORY COUNT
// Waits (bounded) until COUNT links are there; each resolves to its original.
'use strict';

const { check, connect, admin, sleep, finish, fail, deadline } = require('./common');

deadline(60000);

async function readAll(conn, stream) {
  const got = [];
  let from = 0;
  for (let page = 0; page < 100; page++) {
    const slice = await conn.readStreamEventsForward(stream, from, 100, true, admin);
    if (slice.status !== 'success') return got;
    for (const e of slice.events) got.push(e);
    if (slice.isEndOfStream) break;
    from = slice.nextEventNumber;
  }
  return got;
}

async function main() {
  const category = process.argv[3];
  const count = parseInt(process.argv[4], 10);
  const conn = connect();
  await conn.connect();
  const stream = '$ce-' + category;
  let events = [];
  for (let i = 0; i < 150 && events.length < count; i++) {
    events = await readAll(conn, stream);
    if (events.length < count) await sleep(100);
  }
  check('every link there', events.length === count, events.length);
  check('links resolved to the originals',
    events.every((e) => e.event && e.event.eventStreamId.startsWith(category + '-')),
    JSON.stringify(events.map((e) => e.event && e.event.eventStreamId)));
  check('link records are in the category stream',
    events.every((e) => e.link && e.link.eventStreamId === stream && e.link.eventType === '$>'));
  const targets = events.map((e) => e.event.eventNumber + '@' + e.event.eventStreamId);
  check('no link twice', new Set(targets).size === targets.length, targets.join());
  const meta = events.length ? JSON.parse(events[0].link.metadata.toString()) : {};
  check('v5 link metadata', '$v' in meta && '$c' in meta && '$p' in meta && '$causedBy' in meta,
    JSON.stringify(meta));
  conn.close();
  finish({ links: events.length });
}

main().catch(fail);
