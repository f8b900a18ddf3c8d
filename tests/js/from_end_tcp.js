// End-position sentinels over v5 TCP: node from_end_tcp.js PORT
// Reads of $all forwards and backwards from positions.end, a stream read
// backwards from streamPosition.end, a volatile subscription, a catch-up
// subscription to a stream from its last event, and a persistent
// subscription with startFrom -1 (the end): none of them delivers history
// (issue 15).
'use strict';

const { client, uuid, check, connect, admin, jsonEvent, sleep, waitFor, finish, fail, deadline } = require('./common');

deadline(60000);

function numbers(events) {
  return events.map((e) => JSON.parse(e.event.data.toString()).n);
}

async function main() {
  const conn = connect({ defaultUserCredentials: admin });
  await conn.connect();
  const s = 'tcpend-' + uuid.v4();
  const history = [];
  for (let n = 0; n < 10; n++) history.push(jsonEvent({ n }));
  await conn.appendToStream(s, client.expectedVersion.any, history);

  const allF = await conn.readAllEventsForward(client.positions.end, 10, false, admin);
  check('$all forward from end reads nothing', allF.events.length === 0, allF.events.length);
  check('$all forward from end is the end', allF.isEndOfStream === true, allF.isEndOfStream);
  const allB = await conn.readAllEventsBackward(client.positions.end, 3, false, admin);
  const lastOfAll = allB.events.filter((e) => e.event && e.event.eventStreamId === s);
  check('$all backward from end starts at the newest', lastOfAll.length > 0 &&
    JSON.parse(lastOfAll[0].event.data.toString()).n === 9, allB.events.length);
  const bwd = await conn.readStreamEventsBackward(s, client.streamPosition.end, 3);
  check('stream backward from end', numbers(bwd.events).join() === '9,8,7', numbers(bwd.events).join());
  check('stream backward from end: last event number', bwd.lastEventNumber.toNumber() === 9,
    bwd.lastEventNumber);
  const last = await conn.readEvent(s, -1);
  check('readEvent -1 is the last', last.event && JSON.parse(last.event.event.data.toString()).n === 9);

  // A group from the end (startFrom -1), created before the live events.
  const settings = new client.PersistentSubscriptionSettings(
    false, -1, false, 10000, 2, 500, 20, 500, 1000, 1, 10, 0, client.SystemConsumerStrategies.RoundRobin);
  const created = await conn.createPersistentSubscription(s, 'from-end', settings, admin);
  check('group from the end created', created.status === 'success', created.status);

  const volatile = [];
  const vsub = await conn.subscribeToStream(s, false, (_sub, e) => volatile.push(JSON.parse(e.event.data.toString()).n));
  const catchup = [];
  let live = false;
  const csub = conn.subscribeToStreamFrom(s, 9, false,
    (_sub, e) => catchup.push(JSON.parse(e.event.data.toString()).n), () => { live = true; }, null, admin, 100);
  const persistent = [];
  const psub = await conn.connectToPersistentSubscription(s, 'from-end',
    (sub, e) => { persistent.push(JSON.parse(e.event.data.toString()).n); sub.acknowledge(e); }, null, admin, 10, false);
  await waitFor(() => live, 20000, 'catch-up live');
  await sleep(300);
  for (let n = 10; n < 13; n++) await conn.appendToStream(s, client.expectedVersion.any, jsonEvent({ n }));
  await waitFor(() => volatile.length >= 3 && catchup.length >= 3 && persistent.length >= 3, 15000, 'live events');
  await sleep(300);
  check('volatile subscription: only new events', volatile.join() === '10,11,12', volatile.join());
  check('catch-up from the last event: only new events', catchup.join() === '10,11,12', catchup.join());
  check('persistent from the end: only new events', persistent.slice().sort((a, b) => a - b).join() === '10,11,12',
    persistent.join());
  vsub.close();
  csub.stop();
  psub.stop();
  conn.close();
  finish();
}

main().catch(fail);
