// Catch-up subscription from a position with the live switchover:
// node catchup.js PORT
// Writes 200 events, subscribes from event 49 (so 50.. are expected), keeps
// writing while the subscription catches up and after it went live, and
// checks every event arrives exactly once and in order.  Then the same for
// $all from a position.
'use strict';

const { client, uuid, check, connect, admin, jsonEvent, sleep, waitFor, finish, fail, deadline } = require('./common');

deadline(60000);

async function main() {
  const conn = connect({ defaultUserCredentials: admin });
  await conn.connect();
  const s = 'catchup-' + uuid.v4();
  for (let i = 0; i < 200; i += 20) {
    const batch = [];
    for (let j = i; j < i + 20; j++) batch.push(jsonEvent({ n: j }));
    await conn.appendToStream(s, client.expectedVersion.any, batch);
  }
  const seen = [];
  let liveAt = -1;
  let writing = true;
  let written = 200;
  const writer = (async () => {
    while (writing && written < 600) {
      await conn.appendToStream(s, client.expectedVersion.any, jsonEvent({ n: written }));
      written += 1;
    }
  })();
  const sub = conn.subscribeToStreamFrom(s, 49, false,
    (_s, e) => { seen.push(JSON.parse(e.event.data.toString()).n); },
    () => { liveAt = seen.length; },
    (_s, reason, error) => { if (reason !== 'userInitiated') fail(new Error('dropped: ' + reason + ' ' + error)); },
    null, 50);
  await waitFor(() => liveAt >= 0, 20000, 'live processing');
  await sleep(300);
  writing = false;
  await writer;
  // A few more after the writer stopped, fully live.
  for (let k = 0; k < 10; k++) {
    await conn.appendToStream(s, client.expectedVersion.any, jsonEvent({ n: written }));
    written += 1;
  }
  await waitFor(() => seen.length >= written - 50, 10000, 'all events (' + seen.length + '/' + (written - 50) + ')');
  await sleep(200);
  sub.stop();
  const expected = [];
  for (let n = 50; n < written; n++) expected.push(n);
  check('went live', liveAt > 0, liveAt);
  check('events written during catch-up', written > 210, written);
  check('stream events exactly once in order', seen.join() === expected.join(),
    'got ' + seen.length + ' expected ' + expected.length);

  // $all from a position: the position of event 100 of the stream.
  let from = null;
  let cursor = client.positions.end;
  for (let page = 0; page < 20 && from === null; page++) {
    const slice = await conn.readAllEventsBackward(cursor, 100, false, admin);
    for (const e of slice.events) {
      if (e.event && e.event.eventStreamId === s && e.event.eventNumber.toNumber() === 100) from = e.originalPosition;
    }
    cursor = slice.nextPosition;
  }
  check('found the position of event 100 in $all', from !== null);
  const allSeen = [];
  let allLive = false;
  const allSub = conn.subscribeToAllFrom(from, false,
    (_s, e) => { if (e.event && e.event.eventStreamId === s) allSeen.push(JSON.parse(e.event.data.toString()).n); },
    () => { allLive = true; }, null, admin, 100);
  await waitFor(() => allLive, 20000, '$all live');
  for (let k = 0; k < 5; k++) {
    await conn.appendToStream(s, client.expectedVersion.any, jsonEvent({ n: written }));
    written += 1;
  }
  await waitFor(() => allSeen.length >= written - 101, 10000, '$all events');
  await sleep(200);
  allSub.stop();
  const allExpected = [];
  for (let n = 101; n < written; n++) allExpected.push(n);
  check('$all catch-up from a position exactly once', allSeen.join() === allExpected.join(),
    'got ' + allSeen.length + ' expected ' + allExpected.length);
  conn.close();
  finish({ written });
}

main().catch(fail);
