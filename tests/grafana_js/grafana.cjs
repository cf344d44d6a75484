// Loads a module of one pinned @grafana/data version ("11" or "12", see package.json).
//
// 12.x ships a CommonJS file per module: the module itself is loaded, since the package's index
// also loads react-use, which needs a browser. 11.x ships one bundle, which reads a single
// browser global when it loads (window.grafanaBootData, absent here: Grafana's defaults).
const path = require('path');

function grafana(version, module) {
  const root = path.join(__dirname, 'node_modules', `grafana-data-${version}`, 'dist', 'cjs');
  try {
    return require(path.join(root, `${module}.cjs`));
  } catch (e) {
    if (e.code !== 'MODULE_NOT_FOUND') throw e;
  }
  globalThis.window = globalThis.window || {};
  return require(path.join(root, 'index.cjs'));
}

module.exports = { grafana };
