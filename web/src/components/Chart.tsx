import { useEffect, useId, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

export interface Series {
  label: string;
  values: number[];
  format?: (value: number) => string;
}

interface ChartProps {
  title: string;
  /** x values: unix seconds for dates, or plain numbers (percent) with `xLabel`. */
  x: number[];
  series: Series;
  xKind?: "date" | "number";
  xLabel?: string;
  xFormat?: (value: number) => string;
  height?: number;
}

/** A line chart (uPlot) with the same figures as a table for screen readers and keyboards. */
export function Chart({ title, x, series, xKind = "date", xLabel = "Day", xFormat, height = 200 }: ChartProps) {
  const box = useRef<HTMLDivElement>(null);
  const headingId = useId();
  const formatY = series.format ?? ((value: number) => String(value));
  const formatX =
    xFormat ?? ((value: number) => (xKind === "date" ? new Date(value * 1000).toLocaleDateString() : String(value)));

  useEffect(() => {
    const element = box.current;
    if (!element) return;
    const plot = new uPlot(
      {
        width: Math.max(element.clientWidth, 240),
        height,
        scales: { x: { time: xKind === "date" } },
        legend: { show: false },
        cursor: { drag: { x: false, y: false } },
        axes: [
          { stroke: "#6b6b80", grid: { stroke: "#eceaf5" } },
          { stroke: "#6b6b80", grid: { stroke: "#eceaf5" }, values: (_u, ticks) => ticks.map(formatY), size: 64 },
        ],
        series: [
          {},
          { label: series.label, stroke: "#5b3df5", width: 2, fill: "rgba(91, 61, 245, 0.12)", points: { show: x.length < 40 } },
        ],
      },
      [x, series.values],
      element,
    );
    const resize = new ResizeObserver(() => plot.setSize({ width: Math.max(element.clientWidth, 240), height }));
    resize.observe(element);
    return () => {
      resize.disconnect();
      plot.destroy();
    };
    // formatY only changes with the series.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [x, series, height, xKind]);

  return (
    <figure className="chart" aria-labelledby={headingId}>
      <figcaption id={headingId}>{title}</figcaption>
      <div ref={box} className="chart-canvas" aria-hidden="true" />
      <details>
        <summary>Show as a table</summary>
        <table>
          <thead>
            <tr>
              <th scope="col">{xLabel}</th>
              <th scope="col">{series.label}</th>
            </tr>
          </thead>
          <tbody>
            {x.map((value, index) => (
              <tr key={value}>
                <td>{formatX(value)}</td>
                <td>{formatY(series.values[index])}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </details>
    </figure>
  );
}
