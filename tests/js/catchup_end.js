// Catch-up subscription to $all from the end: node catchup_end.js PORT
// Writes 50 events, subscribes to $all from positions.end, and checks that
// no historical event is delivered, the subscription goes live, and events
// written afterwards arrive (issue 15: 3,605 historical events used to be
// replayed).
'use strict';

const { client, uuid, check, connect, admin, jsonEvent, sleep, waitFor, finish, fail, deadline } = require('./common');

deadline(60000);

async function main() {
  const conn = connect({ defaultUserCredentials: admin });
  await conn.connect();
  const s = 'fromend-' + uuid.v4();
  const batch = [];
  for (let j = 0; j < 50; j++) batch.push(jsonEvent({ n: j }));
  await conn.appendToStream(s, client.expectedVersion.any, batch);
  const seen = [];
  let live = false;
  let seenBeforeLive = 0;
  const sub = conn.subscribeToAllFrom(client.positions.end, false,
    (_s, e) => {
      if (!live) seenBeforeLive += 1;
      if (e.event && e.event.eventStreamId === s) seen.push(JSON.parse(e.event.data.toString()).n);
    },
    () => { live = true; }, null, admin, 100);
  await waitFor(() => live, 20000, '$all from the end live');
  check('$all from the end delivers no history', seenBeforeLive === 0, 'got ' + seenBeforeLive);
  for (let k = 50; k < 55; k++) {
    await conn.appendToStream(s, client.expectedVersion.any, jsonEvent({ n: k }));
  }
  await waitFor(() => seen.length >= 5, 10000, 'live events');
  await sleep(200);
  sub.stop();
  check('$all from the end gets only new events', seen.join() === '50,51,52,53,54', 'got ' + seen.join());
  conn.close();
  finish({ seen: seen.length, historical: seenBeforeLive });
}

main().catch(fail);
