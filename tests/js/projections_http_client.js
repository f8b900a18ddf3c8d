// geteventstore-promise 4.0.1's projection calls against the standard
// projections:  node projections_http_client.js TCPPORT HTTPPORT
'use strict';

const EventStore = require('geteventstore-promise');
const { check, finish, fail, deadline, sleep } = require('./common');

deadline(60000);

async function main() {
  const client = new EventStore.HTTPClient({
    hostname: '127.0.0.1',
    port: parseInt(process.argv[3], 10),
    credentials: { username: 'admin', password: 'changeit' },
    timeout: 10000,
  });
  const p = client.projections;
  const all = await p.getAllProjectionsInfo();
  const names = all.projections.map((x) => x.name).sort();
  check('all-non-transient lists the four',
    names.join() === '$by_category,$by_event_type,$stream_by_category,$streams', names.join());
  const info = await p.getInfo('$by_category', true);
  check('getInfo finds it', info && info.name === '$by_category', JSON.stringify(info));
  check('getInfo with config', info.config && info.config.emitEnabled === true,
    JSON.stringify(info.config));
  const config = await p.config('$by_category');
  check('config', config.emitEnabled === true && config.trackEmittedStreams === false);
  const state = await p.getState('$by_category');
  check('state', state !== undefined, JSON.stringify(state));
  await p.getResult('$by_category');
  check('result', true);
  await p.stop('$streams');
  check('stopped', (await p.getInfo('$streams')).status === 'Stopped');
  await p.start('$streams');
  await sleep(100);
  check('started', (await p.getInfo('$streams')).status === 'Running');
  await p.disableAll();
  const disabled = (await p.getAllProjectionsInfo()).projections.map((x) => x.status);
  check('disableAll', disabled.every((s) => s === 'Stopped'), disabled.join());
  await p.enableAll();
  await sleep(100);
  const enabled = (await p.getAllProjectionsInfo()).projections.map((x) => x.status);
  check('enableAll', enabled.every((s) => s === 'Running'), enabled.join());
  await p.reset('$by_category');
  check('reset', true);
  finish({ names });
}

main().catch(fail);
