// The gRPC client @eventstore/db-client (EventStoreDB 20+) against a node
// run Insecure: node grpc_client.js HTTP_PORT.  Prints one JSON line
// {"ok": bool, "checks": [...], "failures": [...]} and exits 0 only when ok.
'use strict';

const {
  EventStoreDBClient, jsonEvent, binaryEvent, FORWARDS, BACKWARDS, START, END, NO_STREAM, ANY,
  STREAM_EXISTS, PARK, RETRY, streamNameFilter, persistentSubscriptionToStreamSettingsFromDefaults,
  persistentSubscriptionToAllSettingsFromDefaults,
} = require('@eventstore/db-client');
const uuid = require('uuid');

const checks = [];
const failures = [];

function check(name, condition, detail) {
  checks.push(name);
  if (!condition) failures.push({ name, detail: detail === undefined ? null : String(detail) });
}

function finish() {
  const result = { ok: failures.length === 0, checks, failures };
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(result.ok ? 0 : 1);
}

function fail(error) {
  failures.push({ name: 'exception', detail: String(error && error.stack ? error.stack : error) });
  finish();
}

setTimeout(() => fail(new Error('script deadline of 90000 ms exceeded')), 90000).unref();

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function collect(iterable) {
  const out = [];
  for await (const item of iterable) out.push(item);
  return out;
}

async function rejects(promise, type) {
  try {
    await promise;
    return 'resolved';
  } catch (e) {
    return e.type || e.constructor.name;
  }
}

async function main() {
  const port = parseInt(process.argv[2], 10);
  const client = EventStoreDBClient.connectionString(`esdb://127.0.0.1:${port}?tls=false`);
  const s = 'js-' + uuid.v4();

  // appends with expected revisions
  const first = await client.appendToStream(s, jsonEvent({ type: 'Created', data: { n: 0 } }),
    { expectedRevision: NO_STREAM });
  check('append no_stream', first.success && first.nextExpectedRevision === 0n,
    JSON.stringify(first, (k, v) => (typeof v === 'bigint' ? v.toString() : v)));
  check('append no_stream again is wrong expected version',
    (await rejects(client.appendToStream(s, jsonEvent({ type: 'X', data: {} }),
      { expectedRevision: NO_STREAM }))) === 'wrong-expected-version');
  const batch = [1, 2, 3].map((n) => jsonEvent({ type: 'Step', data: { n } }));
  const second = await client.appendToStream(s, batch, { expectedRevision: 0n });
  check('append exact revision (batch)', second.nextExpectedRevision === 3n,
    second.nextExpectedRevision);
  check('append exact wrong', (await rejects(client.appendToStream(s,
    jsonEvent({ type: 'X', data: {} }), { expectedRevision: 1n }))) === 'wrong-expected-version');
  await client.appendToStream(s, binaryEvent({ type: 'Bin', data: Buffer.from([1, 2, 3]) }),
    { expectedRevision: STREAM_EXISTS });
  const repeat = jsonEvent({ id: uuid.v4(), type: 'Once', data: {} });
  await client.appendToStream(s, repeat, { expectedRevision: ANY });
  await client.appendToStream(s, repeat, { expectedRevision: ANY });

  // reads
  const events = await collect(client.readStream(s, { fromRevision: START, direction: FORWARDS }));
  check('read forwards', events.map((e) => e.event.type).join(',') === 'Created,Step,Step,Step,Bin,Once',
    events.map((e) => e.event.type));
  check('json data', events[1].event.data.n === 1, JSON.stringify(events[1].event.data));
  check('binary data', Buffer.from(events[4].event.data).equals(Buffer.from([1, 2, 3])));
  const back = await collect(client.readStream(s, { fromRevision: END, direction: BACKWARDS, maxCount: 2 }));
  check('read backwards', back.map((e) => Number(e.event.revision)).join(',') === '5,4');
  const all = await collect(client.readAll({ fromPosition: START, direction: FORWARDS, maxCount: 10000 }));
  const ours = all.filter((e) => e.event && e.event.streamId === s);
  check('read $all', ours.length === 6, ours.length);
  check('$all positions ascending', ours.every((e, i) => i === 0 ||
    e.event.position.commit > ours[i - 1].event.position.commit));
  check('missing stream', (await rejects(collect(client.readStream('nothing-' + uuid.v4())))) ===
    'stream-not-found');

  // catch-up subscription to $all with a stream-name prefix filter
  const prefix = 'jsf' + uuid.v4().slice(0, 8);
  await client.appendToStream(prefix + '-a', jsonEvent({ type: 'Old', data: {} }));
  const sub = client.subscribeToAll({ fromPosition: START, filter: streamNameFilter({ prefixes: [prefix] }) });
  const seen = [];
  let checkpoints = 0;
  sub.on('checkpoint', () => { checkpoints += 1; });
  const live = new Promise((resolve) => {
    sub.on('data', (e) => {
      seen.push(e.event.streamId + ':' + e.event.type);
      if (seen.length === 1) {
        client.appendToStream('other-' + uuid.v4(), jsonEvent({ type: 'Noise', data: {} }))
          .then(() => client.appendToStream(prefix + '-b', jsonEvent({ type: 'New', data: {} })));
      }
      if (seen.length === 2) resolve();
    });
  });
  await live;
  await sub.unsubscribe();
  check('filtered subscription', seen.join(',') === `${prefix}-a:Old,${prefix}-b:New`, seen);

  // stream subscription from the start
  const streamSub = client.subscribeToStream(s, { fromRevision: START });
  const got = [];
  await new Promise((resolve) => {
    streamSub.on('data', (e) => {
      got.push(e.event.type);
      if (got.length === 6) {
        client.appendToStream(s, jsonEvent({ type: 'Live', data: {} }));
      }
      if (got.length === 7) resolve();
    });
  });
  await streamSub.unsubscribe();
  check('stream subscription catch-up then live', got[6] === 'Live', got);

  // persistent subscription with ack, nack retry and park
  const ps = 'jsp-' + uuid.v4();
  await client.appendToStream(ps, [0, 1, 2].map((n) => jsonEvent({ type: 'P' + n, data: { n } })));
  await client.createPersistentSubscriptionToStream(ps, 'grp',
    persistentSubscriptionToStreamSettingsFromDefaults({ startFrom: START }));
  const persistent = client.subscribeToPersistentSubscriptionToStream(ps, 'grp');
  const deliveries = [];
  await new Promise((resolve, reject) => {
    persistent.on('error', reject);
    persistent.on('data', async (e) => {
      deliveries.push(e.event.type + '/' + e.retryCount);
      if (e.event.type === 'P1' && e.retryCount === 0) await persistent.nack(RETRY, 'again', e);
      else if (e.event.type === 'P2') await persistent.nack(PARK, 'bad', e);
      else await persistent.ack(e);
      if (deliveries.includes('P1/1') && deliveries.includes('P2/0') && deliveries.includes('P0/0')) {
        resolve();
      }
    });
  });
  await persistent.unsubscribe();
  check('persistent deliveries', deliveries.includes('P1/1'), deliveries);
  const info = await client.getPersistentSubscriptionToStreamInfo(ps, 'grp');
  check('persistent info', info.groupName === 'grp' && info.eventSource === ps, info.groupName);

  // restart the persistent subscription subsystem (over gRPC: the node lists
  // PersistentSubscriptions.RestartSubsystem): the consumer is dropped, the
  // group survives and delivers what comes next to a new consumer
  const before = client.subscribeToPersistentSubscriptionToStream(ps, 'grp');
  const dropped = new Promise((resolve) => {
    before.on('error', (e) => resolve('error:' + (e.type || e.constructor.name)));
    before.on('end', () => resolve('end'));
    before.on('close', () => resolve('close'));
  });
  before.on('data', (e) => before.ack(e));
  await new Promise((resolve, reject) => {
    before.once('confirmation', resolve);
    before.once('error', reject);
  });
  await client.restartPersistentSubscriptionSubsystem();
  const how = await Promise.race([dropped, sleep(10000).then(() => 'still open')]);
  check('restart drops the consumer', how !== 'still open', how);
  check('group survives the restart',
    (await client.getPersistentSubscriptionToStreamInfo(ps, 'grp')).groupName === 'grp');
  const after = client.subscribeToPersistentSubscriptionToStream(ps, 'grp');
  await client.appendToStream(ps, jsonEvent({ type: 'AfterRestart', data: {} }));
  const next = await new Promise((resolve, reject) => {
    after.on('error', reject);
    after.on('data', async (e) => {
      await after.ack(e);
      if (e.event.type === 'AfterRestart') resolve(e.event.type);
    });
  });
  check('delivered after the restart', next === 'AfterRestart', next);
  await after.unsubscribe();
  await client.deletePersistentSubscriptionToStream(ps, 'grp');

  // persistent subscription to $all with a stream-name prefix filter
  // (EventStoreDB 21.10+: the node lists the feature "all")
  const pa = 'jspa-' + uuid.v4().slice(0, 8);
  await client.appendToStream(pa + '-1', jsonEvent({ type: 'A1', data: {} }));
  await client.appendToStream('jsother-' + uuid.v4(), jsonEvent({ type: 'X', data: {} }));
  await client.appendToStream(pa + '-2', jsonEvent({ type: 'A2', data: {} }));
  await client.createPersistentSubscriptionToAll('grpall',
    persistentSubscriptionToAllSettingsFromDefaults({ startFrom: START }),
    { filter: streamNameFilter({ prefixes: [pa] }) });
  const toAll = client.subscribeToPersistentSubscriptionToAll('grpall');
  const allDeliveries = [];
  await new Promise((resolve, reject) => {
    toAll.on('error', reject);
    toAll.on('data', async (e) => {
      allDeliveries.push(e.event.type + '/' + e.retryCount);
      if (e.event.type === 'A2' && e.retryCount === 0) await toAll.nack(RETRY, 'again', e);
      else await toAll.ack(e);
      if (allDeliveries.includes('A1/0') && allDeliveries.includes('A2/1')) resolve();
    });
  });
  await toAll.unsubscribe();
  check('persistent $all filtered deliveries',
    allDeliveries.every((d) => d.startsWith('A')) && allDeliveries.includes('A2/1'),
    allDeliveries);
  const allInfo = await client.getPersistentSubscriptionToAllInfo('grpall');
  check('persistent $all info', allInfo.eventSource === '$all'
    && allInfo.settings.startFrom === START, JSON.stringify(allInfo.eventSource));
  const allGroups = await client.listPersistentSubscriptionsToAll();
  check('persistent $all list', allGroups.some((g) => g.groupName === 'grpall'),
    allGroups.map((g) => g.groupName));
  await client.deletePersistentSubscriptionToAll('grpall');

  const d = 'jsd-' + uuid.v4();
  await client.appendToStream(d, jsonEvent({ type: 'A', data: {} }));
  await client.deleteStream(d);
  check('deleted reads as not found',
    (await rejects(collect(client.readStream(d)))) === 'stream-not-found');
  const t = 'jst-' + uuid.v4();
  await client.appendToStream(t, jsonEvent({ type: 'A', data: {} }));
  await client.tombstoneStream(t);
  check('tombstoned read', (await rejects(collect(client.readStream(t)))) === 'stream-deleted');
  check('tombstoned append', (await rejects(client.appendToStream(t,
    jsonEvent({ type: 'B', data: {} })))) === 'stream-deleted');

  await client.dispose();
  finish();
}

main().catch(fail);
