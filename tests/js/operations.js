// Every operation of node-eventstore-client 0.2.x against a node:
// node operations.js PORT
'use strict';

const { client, uuid, check, connect, admin, jsonEvent, sleep, waitFor, finish, fail, deadline } = require('./common');

deadline(60000);

async function main() {
  const conn = connect();
  let connected = false;
  conn.on('connected', () => { connected = true; });
  await conn.connect();
  await waitFor(() => connected, 5000, 'connected');
  check('connected', connected);
  const s = 'ops-' + uuid.v4();

  // Writes and reads.
  const w1 = await conn.appendToStream(s, client.expectedVersion.noStream, [jsonEvent({ a: 1 }), jsonEvent({ a: 2 })]);
  check('append next version', w1.nextExpectedVersion.toNumber() === 1, w1.nextExpectedVersion);
  check('append position', w1.logPosition.commitPosition.toNumber() > 0, w1.logPosition.commitPosition);
  const w2 = await conn.appendToStream(s, 1, jsonEvent({ a: 3 }));
  check('append expected 1', w2.nextExpectedVersion.toNumber() === 2);
  try {
    await conn.appendToStream(s, 7, jsonEvent({ a: 4 }));
    check('wrong expected version raises', false);
  } catch (e) {
    check('wrong expected version raises', e.name === 'WrongExpectedVersionError' || /WrongExpectedVersion|Wrong expected/i.test(String(e)), e);
  }
  // Idempotent repeat of the same event id.
  const same = jsonEvent({ idem: true });
  const i1 = await conn.appendToStream(s, client.expectedVersion.any, same);
  const i2 = await conn.appendToStream(s, client.expectedVersion.any, same);
  check('idempotent append', i1.nextExpectedVersion.toNumber() === i2.nextExpectedVersion.toNumber(), [i1.nextExpectedVersion, i2.nextExpectedVersion]);

  const r = await conn.readEvent(s, 0);
  check('readEvent success', r.status === 'success', r.status);
  check('readEvent data', JSON.parse(r.event.event.data.toString()).a === 1);
  check('readEvent created', r.event.event.created instanceof Date && r.event.event.created.getFullYear() >= 2020, r.event.event.created);
  const last = await conn.readEvent(s, -1);
  check('readEvent last', last.event.event.eventNumber.toNumber() === 3, last.event && last.event.event.eventNumber);
  const nf = await conn.readEvent(s, 99);
  check('readEvent notFound', nf.status === 'notFound', nf.status);
  const ns = await conn.readEvent('missing-' + uuid.v4(), 0);
  check('readEvent noStream', ns.status === 'noStream', ns.status);

  const fwd = await conn.readStreamEventsForward(s, 0, 10);
  check('read forward count', fwd.events.length === 4, fwd.events.length);
  check('read forward order', fwd.events.map((e) => e.event.eventNumber.toNumber()).join() === '0,1,2,3');
  check('read forward end', fwd.isEndOfStream === true);
  const bwd = await conn.readStreamEventsBackward(s, client.streamPosition.end, 2);
  check('read backward', bwd.events.map((e) => e.event.eventNumber.toNumber()).join() === '3,2', bwd.events.length);
  check('read backward not end', bwd.isEndOfStream === false);

  // $all needs admin.
  try {
    await conn.readAllEventsForward(client.positions.start, 10);
    check('anonymous $all denied', false);
  } catch (e) {
    check('anonymous $all denied', /AccessDenied|access/i.test(String(e)), e);
  }
  const allF = await conn.readAllEventsForward(client.positions.start, 4096, false, admin);
  check('read $all forward', allF.events.some((e) => e.event && e.event.eventStreamId === s), allF.events.length);
  check('read $all first position > 0', allF.events[0].originalPosition.commitPosition.toNumber() > 0);
  check('read $all next > from', allF.nextPosition.commitPosition.toNumber() > 0);
  const allB = await conn.readAllEventsBackward(client.positions.end, 5, false, admin);
  check('read $all backward', allB.events.length === 5 && allB.events[0].event.eventStreamId === s, allB.events.length);
  check('read $all backward position resolved', allB.fromPosition.commitPosition.toNumber() > 0);

  // Metadata.
  await conn.setStreamMetadataRaw(s, client.expectedVersion.any, { $maxCount: 100, custom: 'x' });
  const meta = await conn.getStreamMetadataRaw(s);
  check('metadata round trip', meta.streamMetadata && meta.streamMetadata.custom === 'x', JSON.stringify(meta.streamMetadata));
  const noMeta = await conn.getStreamMetadataRaw('nometa-' + uuid.v4());
  check('metadata none', noMeta.metastreamVersion.toNumber() === -1, noMeta.metastreamVersion);

  // Transactions.
  const t = 'tx-' + uuid.v4();
  const tx = await conn.startTransaction(t, client.expectedVersion.any);
  await tx.write([jsonEvent({ t: 1 }), jsonEvent({ t: 2 })]);
  await tx.write(jsonEvent({ t: 3 }));
  const txr = await tx.commit();
  check('transaction commit', txr.nextExpectedVersion.toNumber() === 2, txr.nextExpectedVersion);
  const txRead = await conn.readStreamEventsForward(t, 0, 10);
  check('transaction events visible', txRead.events.length === 3, txRead.events.length);

  // Deletes.
  const d = 'del-' + uuid.v4();
  await conn.appendToStream(d, client.expectedVersion.any, jsonEvent({}));
  const delResult = await conn.deleteStream(d, client.expectedVersion.any, false);
  check('soft delete position', delResult.logPosition.commitPosition.toNumber() > 0);
  const afterSoft = await conn.readStreamEventsForward(d, 0, 10);
  check('soft deleted reads noStream', afterSoft.status === 'streamNotFound', afterSoft.status);
  const re = await conn.appendToStream(d, client.expectedVersion.any, jsonEvent({ again: true }));
  check('soft deleted stream recreated', re.nextExpectedVersion.toNumber() === 1, re.nextExpectedVersion);
  const h = 'hard-' + uuid.v4();
  await conn.appendToStream(h, client.expectedVersion.any, jsonEvent({}));
  await conn.deleteStream(h, client.expectedVersion.any, true);
  const afterHard = await conn.readStreamEventsForward(h, 0, 10);
  check('hard deleted reads streamDeleted', afterHard.status === 'streamDeleted', afterHard.status);
  try {
    await conn.appendToStream(h, client.expectedVersion.any, jsonEvent({}));
    check('write to hard deleted fails', false);
  } catch (e) {
    check('write to hard deleted fails', /StreamDeleted|deleted/i.test(String(e)), e);
  }

  // Volatile subscriptions: a stream and $all.
  const sub = 'sub-' + uuid.v4();
  const got = [];
  const allGot = [];
  let dropped = null;
  const subscription = await conn.subscribeToStream(sub, false, (_s, e) => { got.push(e.event.eventNumber.toNumber()); },
    (_s, reason) => { dropped = reason; });
  check('subscription confirmed', subscription.lastEventNumber.toNumber() === -1, subscription.lastEventNumber);
  const allSubscription = await conn.subscribeToAll(false, (_s, e) => {
    if (e.event && e.event.eventStreamId === sub) allGot.push(e.originalPosition.commitPosition.toNumber());
  }, null, admin);
  await conn.appendToStream(sub, client.expectedVersion.any, [jsonEvent({ n: 0 }), jsonEvent({ n: 1 })]);
  await conn.appendToStream(sub, client.expectedVersion.any, jsonEvent({ n: 2 }));
  await waitFor(() => got.length >= 3 && allGot.length >= 3, 5000, 'subscription events');
  check('volatile stream events', got.join() === '0,1,2', got.join());
  check('volatile $all events', allGot.length === 3);
  subscription.unsubscribe();
  allSubscription.unsubscribe();
  await waitFor(() => dropped !== null, 5000, 'subscription dropped');
  check('unsubscribe drop reason', dropped === 'userInitiated', dropped);

  // Persistent subscription (acceptance-test shape).
  const ps = 'ps-' + uuid.v4();
  const settings = client.PersistentSubscriptionSettings.create();
  const created = await conn.createPersistentSubscription(ps, 'agroup', settings, admin);
  check('persistent create', created.status === 'success', created.status);
  try {
    await conn.createPersistentSubscription(ps, 'agroup', settings, admin);
    check('persistent create twice fails', false);
  } catch (e) {
    check('persistent create twice fails', /exist/i.test(String(e)), e);
  }
  const pgot = [];
  const psub = await conn.connectToPersistentSubscription(ps, 'agroup', (_s, e) => { pgot.push(JSON.parse(e.event.data.toString()).p); });
  await conn.appendToStream(ps, client.expectedVersion.any, [jsonEvent({ p: 1 }), jsonEvent({ p: 2 })]);
  await waitFor(() => pgot.length >= 2, 5000, 'persistent events');
  check('persistent events in order', pgot.join() === '1,2', pgot.join());
  psub.stop();
  const upd = await conn.updatePersistentSubscription(ps, 'agroup', settings, admin);
  check('persistent update', upd.status === 'success', upd.status);
  const del = await conn.deletePersistentSubscription(ps, 'agroup', admin);
  check('persistent delete', del.status === 'success', del.status);
  try {
    await conn.deletePersistentSubscription(ps, 'agroup', admin);
    check('persistent delete missing fails', false);
  } catch (e) {
    check('persistent delete missing fails', /not exist|DoesNotExist/i.test(String(e)), e);
  }

  // Wrong password on one operation.
  try {
    await conn.appendToStream(s, client.expectedVersion.any, jsonEvent({}), new client.UserCredentials('admin', 'wrong'));
    check('wrong password rejected', false);
  } catch (e) {
    check('wrong password rejected', /Authenticat/i.test(String(e)), e);
  }
  const stillThere = await conn.readStreamEventsForward(s, 0, 100);
  check('wrong password wrote nothing', stillThere.events.length === 4, stillThere.events.length);

  // Large event (3 MiB JSON, like the node client's own tests).
  const big = { blob: 'x'.repeat(3 * 1024 * 1024) };
  await conn.appendToStream('big-' + s, client.expectedVersion.any, jsonEvent(big));
  const bigRead = await conn.readEvent('big-' + s, 0);
  check('3 MiB event round trip', bigRead.event.event.data.length > 3 * 1024 * 1024);

  conn.close();
  finish();
}

main().catch(fail);
