// End-position sentinels over gRPC (@eventstore/db-client) against a node run
// Insecure: node from_end_grpc.js HTTP_PORT.  Reads of $all and of a stream
// from END in both directions, subscriptions to $all and to a stream from END,
// a persistent subscription from END: none delivers history (issue 15).
// Prints one JSON line {"ok": bool, "checks": [...], "failures": [...]}.
'use strict';

const {
  EventStoreDBClient, jsonEvent, FORWARDS, BACKWARDS, END,
  persistentSubscriptionToStreamSettingsFromDefaults,
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

setTimeout(() => fail(new Error('script deadline of 60000 ms exceeded')), 60000).unref();

async function collect(iterable) {
  const out = [];
  for await (const item of iterable) out.push(item);
  return out;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function main() {
  const port = parseInt(process.argv[2], 10);
  const client = EventStoreDBClient.connectionString(`esdb://127.0.0.1:${port}?tls=false`);
  const s = 'grpcend-' + uuid.v4();
  await client.appendToStream(s, [0, 1, 2, 3, 4].map((n) => jsonEvent({ type: 'H', data: { n } })));

  const allBack = await collect(client.readAll({ fromPosition: END, direction: BACKWARDS, maxCount: 3 }));
  check('$all backwards from END starts at the newest',
    allBack.length === 3 && allBack[0].event.streamId === s && allBack[0].event.data.n === 4,
    allBack.map((e) => e.event && e.event.streamId).join());
  const allFwd = await collect(client.readAll({ fromPosition: END, direction: FORWARDS, maxCount: 3 }));
  check('$all forwards from END reads nothing', allFwd.length === 0, allFwd.length);
  const back = await collect(client.readStream(s, { fromRevision: END, direction: BACKWARDS, maxCount: 2 }));
  check('stream backwards from END', back.map((e) => e.event.data.n).join() === '4,3',
    back.map((e) => e.event.data.n).join());
  const fwd = await collect(client.readStream(s, { fromRevision: END, direction: FORWARDS, maxCount: 2 }));
  check('stream forwards from END reads nothing', fwd.length === 0, fwd.length);

  await client.createPersistentSubscriptionToStream(s, 'from-end',
    persistentSubscriptionToStreamSettingsFromDefaults({ startFrom: END }));
  const fromAll = [];
  const fromStream = [];
  const fromGroup = [];
  const allSub = client.subscribeToAll({ fromPosition: END });
  allSub.on('data', (e) => { if (e.event && e.event.streamId === s) fromAll.push(e.event.data.n); });
  const streamSub = client.subscribeToStream(s, { fromRevision: END });
  streamSub.on('data', (e) => fromStream.push(e.event.data.n));
  const group = client.subscribeToPersistentSubscriptionToStream(s, 'from-end');
  group.on('data', async (e) => { fromGroup.push(e.event.data.n); await group.ack(e); });
  await sleep(1000);
  for (const n of [5, 6, 7]) await client.appendToStream(s, jsonEvent({ type: 'L', data: { n } }));
  const until = Date.now() + 15000;
  while ((fromAll.length < 3 || fromStream.length < 3 || fromGroup.length < 3) && Date.now() < until) {
    await sleep(20);
  }
  await sleep(300);
  check('subscribeToAll from END: only new events', fromAll.join() === '5,6,7', fromAll.join());
  check('subscribeToStream from END: only new events', fromStream.join() === '5,6,7', fromStream.join());
  check('persistent from END: only new events', fromGroup.slice().sort().join() === '5,6,7', fromGroup.join());
  await allSub.unsubscribe();
  await streamSub.unsubscribe();
  await group.unsubscribe();
  await client.dispose();
  finish();
}

main().catch(fail);
