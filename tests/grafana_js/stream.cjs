// Feeds Grafana's own StreamingDataFrame (one @grafana/data version per run) the Live messages on
// stdin, as the browser gets them from a channel, and prints what it ends with.
//   stdin:  {"version": "11" | "12", "channels": {"<path>": [DataFrameJSON, ...]}}
//   stdout: {"<path>": {"error": null | "...", "after": N, "fields": [{"name", "labels"}], "length": N}}
const { grafana } = require('./grafana.cjs');

const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const { StreamingDataFrame } = grafana(input.version, 'dataframe/StreamingDataFrame');

const out = {};
for (const [path, messages] of Object.entries(input.channels)) {
  // as Grafana's LiveDataStream does: the first message makes the frame, the rest are pushed
  const frame = StreamingDataFrame.fromDataFrameJSON(messages[0], { maxLength: 100000, maxDelta: Infinity });
  let error = null;
  let after = messages.length;
  for (let i = 1; i < messages.length && error === null; i++) {
    try {
      frame.push(messages[i]);
    } catch (e) {
      error = String(e.message || e);
      after = i;
    }
  }
  out[path] = {
    error,
    after,
    length: frame.length,
    fields: frame.fields.map((f) => ({ name: f.name, labels: f.labels || {} })),
  };
}
process.stdout.write(JSON.stringify(out));
