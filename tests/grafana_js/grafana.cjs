// Loads a module of one pinned @grafana/data version ("11" or "12", see package.json).
//
// 12.x ships a CommonJS file per module: the module itself is loaded, since the package's index
// also loads react-use, which needs a browser. 11.x ships one bundle, which reads a single
// browser global when it loads (window.grafanaBootData, absent here: Grafana's defaults).
// Formatting a value reads navigator.language, given below.
const path = require('path');

// stdout is the caller's: what the libraries print when they load goes to stderr
console.log = console.info = console.error;
// what a browser says of its language, which Grafana's date formats read (Node 20 has none)
globalThis.navigator = globalThis.navigator || { language: 'en-US', languages: ['en-US'] };

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
