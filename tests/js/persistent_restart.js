// Connecting to a persistent subscription right after a node restart:
// node persistent_restart.js PORT before|after STREAM
// before: creates the group, writes 20 events, acks the first 10 only.
// after:  connects at once and expects exactly events 10..19 (acked ones
//         never come back; un-acked ones are redelivered).
'use strict';

const { client, check, connect, admin, jsonEvent, sleep, waitFor, finish, fail, deadline } = require('./common');

deadline(60000);

async function main() {
  const phase = process.argv[3];
  const s = process.argv[4];
  const group = 'restart-group';
  const conn = connect({ maxReconnections: 50, reconnectionDelay: 200 });
  await conn.connect();
  const got = [];
  if (phase === 'before') {
    const settings = new client.PersistentSubscriptionSettings(
      false, 0, false, 30000, 10, 500, 20, 500, 100, 1, 10, 0, client.SystemConsumerStrategies.RoundRobin);
    const created = await conn.createPersistentSubscription(s, group, settings, admin);
    check('group created', created.status === 'success', created.status);
    const batch = [];
    for (let n = 0; n < 20; n++) batch.push(jsonEvent({ n }));
    await conn.appendToStream(s, client.expectedVersion.any, batch);
    const sub = await conn.connectToPersistentSubscription(s, group, (sub_, e) => {
      const n = JSON.parse(e.event.data.toString()).n;
      got.push(n);
      if (n < 10) sub_.acknowledge(e);
    }, null, null, 20, false);
    await waitFor(() => got.length >= 20, 10000, 'first deliveries');
    await sleep(1000); // let the checkpoint (100 ms) be written
    sub.stop();
    check('all 20 delivered before the restart', got.length === 20, got.join());
  } else {
    let dropped = null;
    const sub = await conn.connectToPersistentSubscription(s, group, (sub_, e) => {
      got.push(JSON.parse(e.event.data.toString()).n);
      sub_.acknowledge(e);
    }, (_s, reason, error) => { dropped = reason + ' ' + error; }, null, 20, false);
    await waitFor(() => got.length >= 10 || dropped !== null, 15000, 'deliveries after the restart');
    await sleep(1000);
    sub.stop();
    check('not dropped', dropped === null, dropped);
    const sorted = got.slice().sort((a, b) => a - b);
    check('exactly the un-acked events after the restart', sorted.join() === '10,11,12,13,14,15,16,17,18,19', got.join());
  }
  conn.close();
  finish({ received: got.length });
}

main().catch(fail);
