// geteventstore-promise 4.0.1's projection calls against a user (JavaScript)
// projection:  node projections_user_promise.js TCPPORT HTTPPORT
'use strict';

const EventStore = require('geteventstore-promise');
const { check, finish, fail, deadline, sleep } = require('./common');

deadline(90000);

const COUNT = `fromCategory('shop').foreachStream().when({
  $init: function () { return { count: 0, total: 0 }; },
  Sold: function (s, e) { s.count += 1; s.total += e.body.amount; }
}).outputState();`;

const SUM = `fromCategory('shop').when({
  $init: function () { return { sold: 0 }; },
  Sold: function (s, e) { s.sold += e.body.amount; return s; }
}).transformBy(function (s) { return { sold: s.sold, doubled: s.sold * 2 }; });`;

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
  throw new Error('timed out waiting for ' + what + ': ' + JSON.stringify(last));
}

async function main() {
  const client = new EventStore.HTTPClient({
    hostname: '127.0.0.1',
    port: parseInt(process.argv[3], 10),
    credentials: { username: 'admin', password: 'changeit' },
    timeout: 10000,
  });
  const p = client.projections;
  for (let i = 0; i < 6; i++) {
    await client.writeEvent('shop-' + (i % 2), 'Sold', { amount: i + 1 });
  }
  await p.assert('sales', COUNT);
  const info = await until('sales listed', async () => p.getInfo('sales', true));
  check('getInfo finds the new projection', info.name === 'sales', JSON.stringify(info));
  check('it is continuous', info.mode === 'Continuous', info.mode);
  check('getInfo with config', info.config && info.config.emitEnabled === false,
    JSON.stringify(info.config));
  const s0 = await until('partition state', async () => {
    const st = await p.getState('sales', { partition: 'shop-0' });
    return st && st.count === 3 ? st : null;
  });
  check('partition state of shop-0', s0.total === 1 + 3 + 5, JSON.stringify(s0));
  const r1 = await until('partition result', async () => {
    const r = await p.getResult('sales', { partition: 'shop-1' });
    return r && r.count === 3 ? r : null;
  });
  check('partition result of shop-1', r1.total === 2 + 4 + 6, JSON.stringify(r1));
  const config = await p.config('sales');
  check('config', config.emitEnabled === false && config.trackEmittedStreams === false,
    JSON.stringify(config));
  await p.stop('sales');
  check('disabled', (await p.getInfo('sales')).status === 'Stopped');
  await p.start('sales');
  await sleep(200);
  check('enabled', (await p.getInfo('sales')).status === 'Running',
    (await p.getInfo('sales')).status);
  // assert on an existing name updates its query (PUT /projection/{name}/query)
  await p.assert('sales', SUM);
  await p.reset('sales');
  const sum = await until('the new query state', async () => {
    const st = await p.getState('sales');
    return st && st.sold === 21 ? st : null;
  });
  check('updated query counts everything', sum.sold === 21, JSON.stringify(sum));
  const result = await until('the transformed result', async () => {
    const r = await p.getResult('sales');
    return r && r.doubled === 42 ? r : null;
  });
  check('transformBy result', result.doubled === 42, JSON.stringify(result));
  await client.writeEvent('shop-2', 'Sold', { amount: 100 });
  const live = await until('live update', async () => {
    const st = await p.getState('sales');
    return st && st.sold === 121 ? st : null;
  });
  check('live events reach the state', live.sold === 121, JSON.stringify(live));
  let refused = false;
  try {
    await p.remove('sales');
  } catch (e) {
    refused = true;
  }
  check('a running projection cannot be removed', refused);
  await p.stop('sales');
  await p.remove('sales', true, true);
  const names = (await p.getAllProjectionsInfo()).projections.map((x) => x.name);
  check('removed', names.indexOf('sales') === -1, names.join());
  finish({ names });
}

main().catch(fail);
