// node-eventstore-client's ProjectionsManager against the standard
// projections:  node projections_manager.js TCPPORT HTTPPORT
'use strict';

const { client, check, admin, finish, fail, deadline, sleep } = require('./common');

deadline(60000);

async function main() {
  const log = { debug() {}, info() {}, error() {} };
  const pm = new client.ProjectionsManager(log, 'http://127.0.0.1:' + process.argv[3], 5000);
  const names = (await pm.listContinuous(admin)).map((p) => p.name).sort();
  check('the four standard projections are listed',
    names.join() === '$by_category,$by_event_type,$stream_by_category,$streams', names.join());
  const all = await pm.listAll(admin);
  check('listAll has them too', all.length === 4, all.length);
  const status = JSON.parse(await pm.getStatus('$by_category', admin));
  check('status is Running', status.status === 'Running', status.status);
  check('mode is Continuous', status.mode === 'Continuous', status.mode);
  const stats = JSON.parse(await pm.getStatistics('$by_category', admin));
  check('statistics wrap the projection', stats.projections[0].name === '$by_category');
  check('query of $by_category', (await pm.getQuery('$by_category', admin)) === 'first\r\n-');
  await pm.getState('$by_category', admin);
  await pm.disable('$streams', admin);
  const stopped = JSON.parse(await pm.getStatus('$streams', admin));
  check('disabled is Stopped', stopped.status === 'Stopped', stopped.status);
  await pm.enable('$streams', admin);
  await sleep(100);
  const again = JSON.parse(await pm.getStatus('$streams', admin));
  check('enabled is Running again', again.status === 'Running', again.status);
  let refused = false;
  try {
    await pm.disable('$streams', new client.UserCredentials('nobody', 'wrong'));
  } catch (e) {
    refused = true;
  }
  check('commands need credentials', refused);
  finish({ names });
}

main().catch(fail);
