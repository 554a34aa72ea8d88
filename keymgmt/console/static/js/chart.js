// A time-series chart (uPlot) sized to its container, redrawn on resize. Axis labels use the
// reader's locale and time zone.
import uPlot from "../vendor/uplot/uPlot.esm.js";
import { h } from "./dom.js";

const COLOURS = ["#2456c8", "#d2563b", "#2a9d6f"];
const HEIGHT = 180;
const DAY = 86400;
// Counts need no tick between whole steps of these sizes.
const WHOLE_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 1e6, 1e7];
const dayTick = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });
const hourTick = new Intl.DateTimeFormat(undefined, { hour: "numeric" });
const fullTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const charts = new Set();

window.addEventListener("resize", () => {
  for (const chart of charts) {
    if (!chart.root.isConnected) charts.delete(chart);
    else chart.setSize({ width: chart.root.parentElement.clientWidth, height: HEIGHT });
  }
});

// A day's first tick shows its date, the others their hour.
function timeTicks(_, ticks, __, ___, step) {
  return ticks.map((t) => {
    const at = new Date(t * 1000);
    return step >= DAY || at.getHours() === 0 ? dayTick.format(at) : hourTick.format(at);
  });
}

// Wide enough for the longest label, so money never gets clipped.
const labelSpace = (_, values) => 18 + 7 * Math.max(3, ...(values || []).map((v) => String(v ?? "").length));

// `series` is [{label, values}], all on the times `x` (unix seconds); `format` labels values.
// `sparse` series (latency) have gaps where nothing happened: their points are always drawn.
export function timeChart(container, title, x, series, format, { whole = false, sparse = false } = {}) {
  const figure = h("figure", { class: "chart" }, h("figcaption", {}, title));
  container.append(figure);
  const plot = h("div", { class: "plot" });
  figure.append(plot);
  const options = {
    width: Math.max(260, figure.clientWidth),
    height: HEIGHT,
    legend: { show: true, live: true },
    scales: { x: { time: true } },
    axes: [
      { values: timeTicks, space: 48 },
      { values: (_, ticks) => ticks.map(format), size: labelSpace, incrs: whole ? WHOLE_STEPS : undefined },
    ],
    series: [{ value: (_, t) => (t === null ? "–" : fullTime.format(new Date(t * 1000))) },
      ...series.map((s, i) => ({
        label: s.label, stroke: COLOURS[i % COLOURS.length], width: 2, spanGaps: sparse,
        points: sparse ? { show: true, size: 6 } : undefined,
        value: (_, v) => (v === null || v === undefined ? "–" : format(v)),
      }))],
  };
  const chart = new uPlot(options, [x, ...series.map((s) => s.values)], plot);
  charts.add(chart);
  return chart;
}
