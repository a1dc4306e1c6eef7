import { useMemo, useState } from "react";
import { Link, useParams } from "react-router";
import { api } from "../api";
import { isCreator, useAuth } from "../auth";
import { Chart } from "../components/Chart";
import { ErrorNote, Field, Loading, Stat } from "../components/ui";
import { clock, minutes, money } from "../format";
import { useApi, useTitle } from "../hooks";
import type { CreatorOverview, Daily, Earnings, Totals, VideoAnalytics } from "../types";

function isoDay(offsetDays: number): string {
  const day = new Date();
  day.setUTCDate(day.getUTCDate() + offsetDays);
  return day.toISOString().slice(0, 10);
}

function useRange() {
  const [from, setFrom] = useState(isoDay(-29));
  const [to, setTo] = useState(isoDay(0));
  const picker = (
    <div className="row" role="group" aria-label="Date range (UTC)">
      <Field label="From" type="date" value={from} max={to} onChange={(e) => setFrom(e.target.value)} />
      <Field label="To" type="date" value={to} min={from} onChange={(e) => setTo(e.target.value)} />
    </div>
  );
  return { from, to, picker };
}

function TotalsRow({ totals, currency }: { totals: Totals; currency: string }) {
  return (
    <div className="stats" data-testid="analytics-totals">
      <Stat label="Views" value={<span data-testid="total-views">{totals.views}</span>} />
      <Stat label="Unique viewers" value={totals.unique_viewers} />
      <Stat label="Watch minutes" value={minutes(totals.watch_minutes)} />
      <Stat label="Revenue" value={<span data-testid="total-revenue">{money(totals.revenue, currency)}</span>} />
      <Stat label="Average view" value={clock(totals.avg_view_duration_s)} />
    </div>
  );
}

function DailyCharts({ daily, currency }: { daily: Daily[]; currency: string }) {
  const x = useMemo(() => daily.map((row) => Date.parse(`${row.day}T00:00:00Z`) / 1000), [daily]);
  const views = useMemo(() => ({ label: "Views", values: daily.map((d) => d.views) }), [daily]);
  const watch = useMemo(() => ({ label: "Watch minutes", values: daily.map((d) => d.watch_minutes), format: minutes }), [daily]);
  const revenue = useMemo(
    () => ({ label: "Revenue", values: daily.map((d) => d.revenue), format: (v: number) => money(v, currency) }),
    [daily, currency],
  );
  return (
    <div className="charts">
      <Chart title="Views per day" x={x} series={views} />
      <Chart title="Watch minutes per day" x={x} series={watch} />
      <Chart title="Revenue per day (your share)" x={x} series={revenue} />
    </div>
  );
}

export function AnalyticsPage() {
  useTitle("Analytics");
  const { user } = useAuth();
  const { from, to, picker } = useRange();
  const overview = useApi((signal) => api<CreatorOverview>("GET", "/analytics/creator/overview", { query: { from, to }, signal }), [from, to]);
  const earnings = useApi((signal) => api<Earnings>("GET", "/creator/earnings", { signal }), []);
  if (!isCreator(user)) {
    return (
      <p>
        Analytics are for creators. <Link to="/studio">Start your channel</Link>.
      </p>
    );
  }
  const titles = new Map((overview.data?.videos ?? []).map((v) => [v.video_id, v.title]));
  return (
    <section>
      <p>
        <Link to="/studio">← Studio</Link>
      </p>
      <h1>Channel analytics</h1>
      {picker}
      <ErrorNote error={overview.error} />
      {overview.data ? (
        <>
          <TotalsRow totals={overview.data.totals} currency={overview.data.currency} />
          <DailyCharts daily={overview.data.daily} currency={overview.data.currency} />
          <h2>Top videos</h2>
          {overview.data.videos.length === 0 ? (
            <p className="muted">No views in this period yet.</p>
          ) : (
            <div className="table-wrap">
              <table>
                <thead>
                  <tr>
                    <th scope="col">Video</th>
                    <th scope="col" className="num">
                      Views
                    </th>
                    <th scope="col" className="num">
                      Watch minutes
                    </th>
                    <th scope="col" className="num">
                      Revenue
                    </th>
                  </tr>
                </thead>
                <tbody>
                  {overview.data.videos.map((row) => (
                    <tr key={row.video_id}>
                      <td>
                        <Link to={`/studio/analytics/${row.video_id}`}>{row.title ?? "Untitled"}</Link>
                      </td>
                      <td className="num">{row.views}</td>
                      <td className="num">{minutes(row.watch_minutes)}</td>
                      <td className="num">{money(row.revenue, overview.data!.currency)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
        </>
      ) : (
        !overview.error && <Loading />
      )}
      <h2>Earnings</h2>
      <ErrorNote error={earnings.error} />
      {earnings.data && (
        <>
          <div className="stats">
            <Stat label="Earned in total" value={<span data-testid="earnings-total">{money(earnings.data.total, earnings.data.currency)}</span>} />
          </div>
          {earnings.data.videos.length > 0 && (
            <ul className="list">
              {earnings.data.videos.map((row) => (
                <li key={row.video_id}>
                  <Link to={`/studio/analytics/${row.video_id}`}>{titles.get(row.video_id) ?? "A video"}</Link>:{" "}
                  {money(row.amount, earnings.data!.currency)} <span className="muted">from {row.charges} paid minutes</span>
                </li>
              ))}
            </ul>
          )}
        </>
      )}
    </section>
  );
}

export function VideoAnalyticsPage() {
  const { id = "" } = useParams();
  const { from, to, picker } = useRange();
  const stats = useApi((signal) => api<VideoAnalytics>("GET", `/analytics/videos/${id}`, { query: { from, to }, signal }), [id, from, to]);
  useTitle(stats.data?.title ? `Analytics: ${stats.data.title}` : "Video analytics");
  const retention = useMemo(
    () => ({
      x: (stats.data?.retention ?? []).map((p) => p.percent),
      series: { label: "Still watching", values: (stats.data?.retention ?? []).map((p) => p.share * 100), format: (v: number) => `${Math.round(v)}%` },
    }),
    [stats.data],
  );
  return (
    <section>
      <p>
        <Link to="/studio/analytics">← Channel analytics</Link>
      </p>
      <h1>{stats.data?.title ?? "Video analytics"}</h1>
      {picker}
      <ErrorNote error={stats.error} />
      {!stats.data ? (
        !stats.error && <Loading />
      ) : (
        <>
          <TotalsRow totals={stats.data.totals} currency={stats.data.currency} />
          <DailyCharts daily={stats.data.daily} currency={stats.data.currency} />
          <div className="charts">
            <Chart
              title="Audience retention: share of sessions that reached each point of the video"
              x={retention.x}
              xKind="number"
              xLabel="Point in the video"
              xFormat={(v) => `${v}%`}
              series={retention.series}
            />
          </div>
        </>
      )}
    </section>
  );
}
