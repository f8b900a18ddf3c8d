// geteventstore-promise 4.0.1 (HTTP client) against a real node, plus the
// plain HTTP requests of the Event Store documentation for what the client
// does not wrap (metadata, gossip, single events).  Run by
// tests/test_http_clients.py as: node http_client.js HTTP_PORT
// Prints one JSON line {"ok": bool, "checks": [...], "failures": [...]}.
'use strict';

const EventStore = require('geteventstore-promise');
const axios = require('axios');
const uuid = require('uuid');

const checks = [];
const failures = [];

function check(name, condition, detail) {
  checks.push(name);
  if (!condition) failures.push({ name, detail: detail === undefined ? null : String(detail) });
}

async function status(promise) {
  try {
    const response = await promise;
    return response && response.status !== undefined ? response.status : 'ok';
  } catch (err) {
    return err.response ? err.response.status : 'error: ' + err.message;
  }
}

const port = parseInt(process.argv[2], 10);
const base = 'http://127.0.0.1:' + port;
const auth = { username: 'admin', password: 'changeit' };
const client = new EventStore.HTTPClient({
  hostname: '127.0.0.1',
  port,
  credentials: auth,
  timeout: 10000,
});
const http = axios.create({ baseURL: base, auth, timeout: 10000, validateStatus: () => true });

async function main() {
  const run = uuid.v4().slice(0, 8);
  const stream = 'http-' + run;

  // ping
  await client.ping();
  check('ping', true);

  // write and read
  await client.writeEvent(stream, 'Created', { n: 0 }, { who: 'test' });
  const factory = new EventStore.EventFactory();
  const batch = [];
  for (let i = 1; i < 25; i++) batch.push(factory.newEvent('Step', { n: i }));
  await client.writeEvents(stream, batch);
  check('stream exists', await client.checkStreamExists(stream));
  check('missing stream does not exist', !(await client.checkStreamExists('nope-' + run)));

  const forward = await client.getEvents(stream, 0, 10, 'forward');
  check('forward read count', forward.length === 10, forward.length);
  check('forward read order', forward.map((e) => e.data.n).join() === '0,1,2,3,4,5,6,7,8,9',
    JSON.stringify(forward.map((e) => e.data)));
  check('event fields', forward[0].eventType === 'Created' && forward[0].eventNumber === 0 &&
    typeof forward[0].eventId === 'string' && typeof forward[0].updated === 'string',
    JSON.stringify(forward[0]));
  check('metadata in body', forward[0].metaData && JSON.parse(forward[0].metaData).who === 'test',
    forward[0].metaData);

  const backward = await client.getEvents(stream, 'head', 5, 'backward');
  check('backward read', backward.map((e) => e.data.n).join() === '24,23,22,21,20',
    JSON.stringify(backward.map((e) => e.data)));

  const page = await client.readEventsForward(stream, 20, 10);
  check('readEventsForward end of stream', page.isEndOfStream === true && page.events.length === 5,
    JSON.stringify({ end: page.isEndOfStream, n: page.events.length }));
  const mid = await client.readEventsForward(stream, 0, 10);
  check('readEventsForward not at end', mid.isEndOfStream === false, mid.isEndOfStream);

  // paging through the whole stream with headOfStream
  const all = await client.getAllStreamEvents(stream, 7);
  check('paged read of the whole stream', all.length === 25 &&
    all.every((e, i) => e.data.n === i), all.length);

  // wrong expected version
  const wev = await status(client.writeEvent(stream, 'Late', { n: -1 }, null, { expectedVersion: 3 }));
  check('wrong expected version is 400', wev === 400, wev);
  await client.writeEvent(stream, 'Next', { n: 25 }, null, { expectedVersion: 24 });
  check('right expected version', true);

  // single events and the redirect to an idempotent URI
  const single = await http.get('/streams/' + stream + '/0', { headers: { Accept: 'application/json' } });
  check('single event data', single.status === 200 && single.data.n === 0, JSON.stringify(single.data));
  const redirect = await http.post('/streams/' + stream, { raw: true }, {
    headers: { 'Content-Type': 'application/json', 'ES-EventType': 'Raw' },
    maxRedirects: 0,
  });
  check('no event id redirects', redirect.status === 307 &&
    /\/incoming\/[0-9a-f-]{36}$/.test(redirect.headers.location || ''), redirect.status);

  // metadata over plain HTTP
  const meta = { $maxCount: 1000, custom: run };
  const mw = await http.post('/streams/' + stream + '/metadata', meta, {
    headers: { 'Content-Type': 'application/json', 'ES-EventId': uuid.v4() },
  });
  check('metadata write 201', mw.status === 201, mw.status);
  const mr = await http.get('/streams/' + stream + '/metadata', { headers: { Accept: 'application/json' } });
  check('metadata read', mr.status === 200 && mr.data.custom === run, JSON.stringify(mr.data));
  const metaEvents = await http.post('/streams/' + stream + '/metadata',
    [{ eventId: uuid.v4(), eventType: '$user-updated', data: { custom: run + '-2' } }],
    { headers: { 'Content-Type': 'application/vnd.eventstore.events+json' } });
  check('metadata write as events', metaEvents.status === 201, metaEvents.status);
  const mr2 = await http.get('/streams/' + stream + '/metadata', { headers: { Accept: 'application/json' } });
  check('metadata replaced', mr2.data.custom === run + '-2', JSON.stringify(mr2.data));

  // persistent subscriptions
  const group = 'group-' + run;
  await client.persistentSubscriptions.assert(group, stream, { startFrom: 0 });
  await client.persistentSubscriptions.assert(group, stream, { startFrom: 0, maxRetryCount: 5 });
  check('subscription created and updated', true);
  const first = await client.persistentSubscriptions.getEvents(group, stream, 10, 'body');
  check('subscription messages', first.entries.length === 10 && first.entries[0].event.data &&
    typeof first.entries[0].event.data.n === 'number', first.entries.length);
  await first.entries[0].ack();
  await first.entries[1].nack();
  await first.ackAll();
  check('ack and nack via links', true);
  const info = await client.persistentSubscriptions.getSubscriptionInfo(group, stream);
  check('subscription info', info.groupName === group && info.eventStreamId === stream,
    JSON.stringify(info).slice(0, 300));
  const allInfo = await client.persistentSubscriptions.getAllSubscriptionsInfo();
  check('all subscriptions listed', allInfo.some((s) => s.groupName === group), allInfo.length);
  const streamInfo = await client.persistentSubscriptions.getStreamSubscriptionsInfo(stream);
  check('stream subscriptions listed', streamInfo.length === 1, streamInfo.length);
  const next = await client.persistentSubscriptions.getEvents(group, stream, 5, 'body');
  check('next messages continue', next.entries.length > 0, next.entries.length);
  await client.persistentSubscriptions.remove(group, stream);
  const gone = await status(client.persistentSubscriptions.getSubscriptionInfo(group, stream));
  check('subscription removed', gone === 404, gone);

  // soft delete, re-create, hard delete
  await client.deleteStream(stream);
  check('soft deleted stream does not exist', !(await client.checkStreamExists(stream)));
  await client.writeEvent(stream, 'Again', { n: 100 });
  const again = await client.getEvents(stream, 'head', 1, 'backward');
  check('soft deleted stream re-created', again.length === 1 && again[0].data.n === 100,
    JSON.stringify(again));
  await client.deleteStream(stream, true);
  const afterHard = await status(client.getEvents(stream, 0, 10, 'forward'));
  check('hard deleted read is 410', afterHard === 410, afterHard);
  const writeHard = await status(client.writeEvent(stream, 'Zombie', { n: 1 }));
  check('hard deleted write is 410', writeHard === 410, writeHard);

  // operational endpoints
  const gossip = await http.get('/gossip?format=json');
  check('gossip shape', gossip.status === 200 && gossip.data.members.length === 1 &&
    gossip.data.members[0].state === 'Master' && gossip.data.members[0].isAlive === true,
    JSON.stringify(gossip.data).slice(0, 300));
  const scavenge = await client.admin.scavenge();
  check('scavenge', scavenge === undefined || typeof scavenge === 'object', JSON.stringify(scavenge));

  // bad input is a 4xx, never a 500
  const bad = await http.post('/streams/' + stream + '-x', '{broken', {
    headers: { 'Content-Type': 'application/vnd.eventstore.events+json' },
  });
  check('malformed body is 400', bad.status === 400, bad.status);
  const anon = await axios.get(base + '/streams/' + stream, { validateStatus: () => true,
    headers: { Accept: 'application/json' } });
  check('anonymous read is 401', anon.status === 401, anon.status);
}

main()
  .catch((err) => failures.push({ name: 'exception', detail: String(err && err.stack || err) +
    (err && err.response ? ' status ' + err.response.status + ' ' + err.config.url : '') }))
  .then(() => {
    process.stdout.write(JSON.stringify({ ok: failures.length === 0, checks, failures }) + '\n');
    process.exit(failures.length === 0 ? 0 : 1);
  });
