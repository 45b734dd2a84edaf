// kelp dev's loader: one component, built once per toolchain, that runs whatever JavaScript
// the version it is published under carries. `kelp dev` bundles the author's source with
// esbuild into a CommonJS module (seconds faster than componentize-js, which snapshots the
// whole engine per build) and publishes it beside this component in the manifest's
// `dev_source`; the host hands it over as the config key `kelp.dev/source`. The first call of
// an instance evaluates it; its `handler` answers from then on.
//
// Only for development: production builds (`kelp build`, `kelp publish`) are componentized
// as written, snapshot and all.
import * as context from 'alga:extension/context';
import * as secrets from 'alga:extension/secrets';
import * as http from 'alga:extension/http';
import * as storage from 'alga:extension/storage';
import * as logging from 'alga:extension/logging';
import * as uiProxy from 'alga:extension/ui-proxy';
import * as user from 'alga:extension/user';
import * as userV2 from 'alga:extension/user-v2';
import * as scheduler from 'alga:extension/scheduler';
import * as invoicing from 'alga:extension/invoicing';
import * as clients from 'alga:extension/clients';
import * as services from 'alga:extension/services';
import * as config from 'kelp:extension/config';

const interfaces = {
  'alga:extension/context': context,
  'alga:extension/secrets': secrets,
  'alga:extension/http': http,
  'alga:extension/storage': storage,
  'alga:extension/logging': logging,
  'alga:extension/ui-proxy': uiProxy,
  'alga:extension/user': user,
  'alga:extension/user-v2': userV2,
  'alga:extension/scheduler': scheduler,
  'alga:extension/invoicing': invoicing,
  'alga:extension/clients': clients,
  'alga:extension/services': services,
  'kelp:extension/config': config,
};

function require(name) {
  const found = interfaces[name];
  if (!found) throw new Error(`"${name}" is not an interface Kelp provides`);
  return found;
}

let guest;

function load() {
  // The bundle ends with its source map (`//# kelpSourceMap=`): the host reads it to write
  // the stack frames of an exception at the author's file:line:column.
  const source = config.get('kelp.dev/source');
  if (source === undefined) {
    throw new Error('this version carries no source: publish it with kelp dev');
  }
  const module = { exports: {} };
  new Function('require', 'module', 'exports', source)(require, module, module.exports);
  if (typeof module.exports.handler !== 'function') {
    throw new Error('the extension exports no handler function');
  }
  return module.exports;
}

export function handler(request) {
  guest ??= load();
  return guest.handler(request);
}
