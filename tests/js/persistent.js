// Persistent subscription with two competing consumers, nak with park and
// retry, parked-message stream, replay of parked messages over HTTP:
// node persistent.js TCP_PORT HTTP_PORT
'use strict';

const http = require('http');
const { client, uuid, check, connect, admin, jsonEvent, sleep, waitFor, finish, fail, deadline } = require('./common');

deadline(60000);

function replayParked(httpPort, stream, group) {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1',
      port: httpPort,
      method: 'POST',
      path: '/subscriptions/' + encodeURIComponent(stream) + '/' + encodeURIComponent(group) + '/replayParked',
      headers: { Authorization: 'Basic ' + Buffer.from('admin:changeit').toString('base64'), 'Content-Length': 0 },
    }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode)); });
    req.on('error', reject);
    req.end();
  });
}

async function main() {
  const httpPort = parseInt(process.argv[3], 10);
  const conn = connect();
  await conn.connect();
  const s = 'competing-' + uuid.v4();
  const group = 'workers';
  const settings = new client.PersistentSubscriptionSettings(
    false, 0, false, 10000, 2, 500, 20, 500, 1000, 1, 10, 0, client.SystemConsumerStrategies.RoundRobin);
  const created = await conn.createPersistentSubscription(s, group, settings, admin);
  check('group created', created.status === 'success', created.status);
  const deliveries = {}; // n -> [{consumer, retryCount}]
  const acked = new Set();
  let replaying = false;
  function handler(name) {
    return (sub, e) => {
      const n = JSON.parse(e.event.data.toString()).n;
      (deliveries[n] = deliveries[n] || []).push({ consumer: name, retryCount: e.retryCount === undefined ? null : e.retryCount });
      if (!replaying && n === 5) {
        sub.fail(e, client.PersistentSubscriptionNakEventAction.Park, 'park it');
      } else if (!replaying && n === 7) {
        sub.fail(e, client.PersistentSubscriptionNakEventAction.Retry, 'try again');
      } else {
        if (acked.has(n) && !replaying) failures_.push(n);
        acked.add(n);
        sub.acknowledge(e);
      }
    };
  }
  const failures_ = [];
  // Events 0..9 are history when the consumers connect; 10..19 arrive live,
  // one by one, while the history is being delivered.
  const history = [];
  for (let n = 0; n < 10; n++) history.push(jsonEvent({ n }));
  await conn.appendToStream(s, client.expectedVersion.any, history);
  const a = await conn.connectToPersistentSubscription(s, group, handler('A'), null, null, 10, false);
  const conn2 = connect();
  await conn2.connect();
  const b = await conn2.connectToPersistentSubscription(s, group, handler('B'), null, null, 10, false);
  for (let n = 10; n < 20; n++) await conn.appendToStream(s, client.expectedVersion.any, jsonEvent({ n }));
  await waitFor(() => acked.size >= 18 && (deliveries[7] || []).length >= 3, 15000, 'deliveries');
  await sleep(500);
  const consumers = new Set();
  for (const n of Object.keys(deliveries)) for (const d of deliveries[n]) consumers.add(d.consumer);
  check('both consumers received messages', consumers.has('A') && consumers.has('B'), [...consumers].join());
  let once = true;
  for (let n = 0; n < 20; n++) if (n !== 5 && n !== 7 && (deliveries[n] || []).length !== 1) once = false;
  check('acked messages delivered exactly once', once && failures_.length === 0, JSON.stringify(deliveries));
  check('parked message delivered once', (deliveries[5] || []).length === 1, JSON.stringify(deliveries[5]));
  check('retried message delivered 1 + max retries', (deliveries[7] || []).length === 3, JSON.stringify(deliveries[7]));
  // node-eventstore-client 0.2.x does not decode retryCount (its schema lacks it); 21.x does.
  const counts = (deliveries[7] || []).map((d) => d.retryCount);
  if (counts.every((c) => c !== null)) check('retry counts increase', counts.join() === '0,1,2', counts.join());
  const parkedStream = '$persistentsubscription-' + s + '::' + group + '-parked';
  let parked = null;
  for (let i = 0; i < 50; i++) {
    parked = await conn.readStreamEventsForward(parkedStream, 0, 10, true, admin);
    if (parked.events.length >= 2) break;
    await sleep(100);
  }
  const parkedNs = parked.events.map((e) => (e.event ? JSON.parse(e.event.data.toString()).n : null)).sort();
  check('parked stream holds the two messages', parkedNs.join() === '5,7', parkedNs.join() + ' status ' + parked.status);
  if (httpPort) {
    replaying = true;
    const status = await replayParked(httpPort, s, group);
    check('replayParked accepted', status >= 200 && status < 300, status);
    await waitFor(() => (deliveries[5] || []).length >= 2 && (deliveries[7] || []).length >= 4, 10000, 'replayed messages');
    check('parked messages replayed', deliveries[5].length === 2 && deliveries[7].length === 4,
      JSON.stringify([deliveries[5], deliveries[7]]));
  }
  await sleep(300);
  let total = 0;
  for (const n of Object.keys(deliveries)) total += deliveries[n].length;
  a.stop();
  b.stop();
  const deleted = await conn.deletePersistentSubscription(s, group, admin);
  check('group deleted', deleted.status === 'success', deleted.status);
  conn.close();
  conn2.close();
  finish({ deliveries: total });
}

main().catch(fail);
