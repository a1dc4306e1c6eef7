import { api } from "../api";
import { Chart } from "../components/Chart";
import { ErrorNote, Loading, Stat } from "../components/ui";
import { minutes, money } from "../format";
import { useApi, useTitle } from "../hooks";
import type { PlatformStats } from "../types";

export function AdminPage() {
  useTitle("Platform");
  const stats = useApi((signal) => api<PlatformStats>("GET", "/analytics/platform", { signal }), []);
  if (stats.error) return <ErrorNote error={stats.error} />;
  if (!stats.data) return <Loading />;
  const { totals, daily, currency } = stats.data;
  const days = daily.map((row) => Date.parse(`${row.day}T00:00:00Z`) / 1000);
  return (
    <section>
      <h1>Platform, last 30 days</h1>
      <div className="stats">
        <Stat label="Active viewers" value={totals.active_viewers} />
        <Stat label="Sessions" value={<span data-testid="platform-sessions">{totals.sessions}</span>} />
        <Stat label="Minutes streamed" value={minutes(totals.watch_minutes)} />
        <Stat label="Gross revenue" value={money(totals.revenue_gross, currency)} />
        <Stat label="Platform fees" value={money(totals.platform_fee, currency)} />
        <Stat label="Uploads" value={totals.uploads} />
        <Stat label="Failed transcodes" value={totals.transcode_failures} />
      </div>
      <div className="charts">
        <Chart title="Active viewers per day" x={days} series={{ label: "Active viewers", values: daily.map((d) => d.active_viewers) }} />
        <Chart title="Minutes streamed per day" x={days} series={{ label: "Minutes", values: daily.map((d) => d.watch_minutes), format: minutes }} />
        <Chart
          title="Gross revenue per day"
          x={days}
          series={{ label: "Revenue", values: daily.map((d) => d.revenue_gross), format: (v) => money(v, currency) }}
        />
      </div>
    </section>
  );
}
