// What Grafana shows in a stat, gauge or bar gauge, computed with @grafana/data's own field
// display code (one version per run), for panels and query results on stdin.
//   stdin:  {"version": "11" | "12", "panels": [{"title", "fieldConfig", "options",
//            "frames": [{"fields": [{"name", "type", "values", "labels", "config"}]}]}]}
//   stdout: [{"title", "values": [{"title", "text", "color"}]}], color named when it is one of
//           the theme's (green, red, orange, blue, …), else as Grafana computed it
const { grafana } = require('./grafana.cjs');

const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const v = input.version;
const { createTheme } = grafana(v, 'themes/createTheme');
const { applyFieldOverrides } = grafana(v, 'field/fieldOverrides');
const { getFieldDisplayValues } = grafana(v, 'field/fieldDisplay');
const { FieldConfigOptionsRegistry } = grafana(v, 'field/FieldConfigOptionsRegistry');
const { toDataFrame } = grafana(v, 'dataframe/processDataFrame');
const { formattedValueToString } = grafana(v, 'valueFormats/valueFormats');
const p = grafana(v, 'field/overrides/processors');

// The standard field options every panel has, with the defaults Grafana gives a panel that sets
// none: colour by thresholds, thresholds green then red from 80.
const standard = [
  ['unit', p.stringOverrideProcessor],
  ['decimals', p.numberOverrideProcessor],
  ['min', p.numberOverrideProcessor],
  ['max', p.numberOverrideProcessor],
  ['displayName', p.displayNameOverrideProcessor],
  ['noValue', p.stringOverrideProcessor],
  ['mappings', p.valueMappingsOverrideProcessor],
  ['thresholds', p.thresholdsOverrideProcessor, { mode: 'absolute', steps: [{ value: -Infinity, color: 'green' }, { value: 80, color: 'red' }] }],
  ['color', (value) => value, { mode: 'thresholds' }],
];
const registry = new FieldConfigOptionsRegistry(() =>
  standard.map(([id, process, defaultValue]) => ({
    id,
    path: id,
    name: id,
    process,
    override: () => null,
    editor: () => null,
    shouldApply: () => true,
    defaultValue,
  }))
);

const theme = createTheme();
const names = ['green', 'red', 'orange', 'yellow', 'blue', 'purple', 'text', 'transparent'];
const named = new Map(names.map((n) => [theme.visualization.getColorByName(n), n]));
const replaceVariables = (s) => s;

const out = input.panels.map((panel) => {
  const fieldConfig = { defaults: {}, overrides: [], ...panel.fieldConfig };
  // the registry's defaults, under what the panel sets, as a panel plugin's defaults are
  for (const item of registry.list()) {
    if (item.defaultValue !== undefined && fieldConfig.defaults[item.id] === undefined) {
      fieldConfig.defaults = { ...fieldConfig.defaults, [item.id]: item.defaultValue };
    }
  }
  const data = applyFieldOverrides({
    data: panel.frames.map((f) => toDataFrame(f)),
    fieldConfig,
    fieldConfigRegistry: registry,
    replaceVariables,
    theme,
    timeZone: 'utc',
  });
  const values = getFieldDisplayValues({
    data,
    fieldConfig,
    reduceOptions: (panel.options || {}).reduceOptions || {},
    replaceVariables,
    theme,
    timeZone: 'utc',
  });
  return {
    title: panel.title,
    values: values.map((fd) => ({
      title: fd.display.title,
      text: formattedValueToString(fd.display),
      color: named.get(fd.display.color) || fd.display.color,
    })),
  };
});
process.stdout.write(JSON.stringify(out));
