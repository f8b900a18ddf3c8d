// node-eventstore-client's ProjectionsManager against a user (JavaScript)
// projection that emits, a transient and a one-time one:  node projections_user_manager.js TCPPORT HTTPPORT
'use strict';

const { client, connect, check, admin, jsonEvent, finish, fail, deadline, sleep } =
  require('./common');

deadline(90000);

const QUERY = `fromAll().when({
  $init: function () { return { n: 0 }; },
  Ordered: function (s, e) {
    s.n += 1;
    emit('audit-orders', 'Seen', { stream: e.streamId, number: e.sequenceNumber });
    linkTo('links-orders', e);
  }
});`;

const QUERY2 = QUERY.replace('s.n += 1;', 's.n += 10;');

async function until(what, f) {
  const end = Date.now() + 20000;
  let last;
  while (Date.now() < end) {
    try {
      last = await f();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await sleep(100);
  }
  throw new Error('timed out waiting for ' + what + ': ' + String(last));
}

async function main() {
  const log = { debug() {}, info() {}, error() {} };
  const pm = new client.ProjectionsManager(log, 'http://127.0.0.1:' + process.argv[3], 5000);
  const conn = connect();
  await conn.connect();
  for (let i = 0; i < 4; i++) {
    await conn.appendToStream('order-' + i, client.expectedVersion.any,
      [jsonEvent({ i }, 'Ordered')], admin);
  }
  await pm.createContinuous('orders', QUERY, false, admin);
  const status = JSON.parse(await pm.getStatus('orders', admin));
  check('created continuous', status.mode === 'Continuous', status.mode);
  const state = await until('state n=4', async () => {
    const s = JSON.parse(await pm.getState('orders', admin));
    return s.n === 4 ? s : null;
  });
  check('getState', state.n === 4, JSON.stringify(state));
  const result = JSON.parse(await pm.getResult('orders', admin));
  check('getResult is the state (no transform)', result.n === 4, JSON.stringify(result));
  check('getQuery', (await pm.getQuery('orders', admin)) === QUERY);
  await pm.updateQuery('orders', QUERY2, admin);
  check('updateQuery', (await pm.getQuery('orders', admin)) === QUERY2);
  await conn.appendToStream('order-9', client.expectedVersion.any,
    [jsonEvent({ i: 9 }, 'Ordered')], admin);
  const after = await until('state n=14', async () => {
    const s = JSON.parse(await pm.getState('orders', admin));
    return s.n === 14 ? s : null;
  });
  check('the updated query goes on from the checkpoint', after.n === 14, JSON.stringify(after));
  const audit = await until('5 emitted', async () => {
    const slice = await conn.readStreamEventsForward('audit-orders', 0, 100, false, admin);
    return slice.events.length >= 5 ? slice : null;
  });
  check('emitted once per event', audit.events.length === 5, audit.events.length);
  const links = await conn.readStreamEventsForward('links-orders', 0, 100, true, admin);
  check('linkTo resolves to the source events',
    links.events.map((e) => e.event.eventStreamId).join() ===
      'order-0,order-1,order-2,order-3,order-9',
    links.events.map((e) => e.event.eventStreamId).join());
  const COUNT = 'fromCategory("order").when({$init: function () { return {c: 0}; },' +
    ' Ordered: function (s) { s.c += 1; }})';
  // ProjectionsManager.createTransient drops its name argument (a bug of
  // 0.2.19): call the ProjectionsClient it wraps, as the manager means to.
  await pm._client.createTransient(pm._httpEndPoint, 'peek', COUNT, admin);
  const peek = await until('the transient query to complete', async () => {
    const st = JSON.parse(await pm.getStatus('peek', admin));
    return st.status.indexOf('Completed') === 0 ? st : null;
  });
  check('transient mode', peek.mode === 'Transient', peek.mode);
  const peekState = JSON.parse(await pm.getState('peek', admin));
  check('transient state', peekState.c === 5, JSON.stringify(peekState));
  await pm.createOneTime(COUNT, admin);
  const once = await until('a one-time projection listed and completed', async () => {
    const list = await pm.listOneTime(admin);
    return list.length === 1 && list[0].status.indexOf('Completed') === 0 ? list[0] : null;
  });
  const onceState = JSON.parse(await pm.getState(once.name, admin));
  check('one-time state', onceState.c === 5, JSON.stringify(onceState));
  let refused = false;
  try {
    await pm.createContinuous('orders2', QUERY, false, new client.UserCredentials('nobody', 'x'));
  } catch (e) {
    refused = true;
  }
  check('creating needs credentials', refused);
  conn.close();
  finish({ audit: audit.events.length });
}

main().catch(fail);
