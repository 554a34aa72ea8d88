// A time-series chart (uPlot) sized to its container, redrawn on resize.
import uPlot from "../vendor/uplot/uPlot.esm.js";
import { h } from "./dom.js";

const COLOURS = ["#2456c8", "#d2563b", "#2a9d6f"];
const HEIGHT = 180;
const charts = new Set();

window.addEventListener("resize", () => {
  for (const chart of charts) {
    if (!chart.root.isConnected) charts.delete(chart);
    else chart.setSize({ width: chart.root.parentElement.clientWidth, height: HEIGHT });
  }
});

// Counts and money need no tick between whole steps of these sizes.
const WHOLE_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 1e6, 1e7];

// `series` is [{label, values}], all on the times `x` (unix seconds); `format` labels the axis.
export function timeChart(container, title, x, series, format, { whole = false } = {}) {
  const figure = h("figure", { class: "chart" }, h("figcaption", {}, title));
  container.append(figure);
  const plot = h("div", { class: "plot" });
  figure.append(plot);
  const options = {
    width: Math.max(260, figure.clientWidth),
    height: HEIGHT,
    legend: { show: true, live: true },
    cursor: { focus: { prox: 16 } },
    scales: { x: { time: true } },
    axes: [{}, { values: (_, ticks) => ticks.map(format), size: 70, incrs: whole ? WHOLE_STEPS : undefined }],
    series: [{}, ...series.map((s, i) => ({
      label: s.label, stroke: COLOURS[i % COLOURS.length], width: 2,
      value: (_, v) => (v === null ? "–" : format(v)),
    }))],
  };
  const chart = new uPlot(options, [x, ...series.map((s) => s.values)], plot);
  charts.add(chart);
  return chart;
}
