import { Link } from "react-router";
import { api, ApiError } from "../api";
import { ErrorNote, Loading } from "../components/ui";
import { clock, dateTime } from "../format";
import { useApi, useTitle } from "../hooks";
import type { HistoryItem, Page, Video } from "../types";

interface Row extends HistoryItem {
  video: Video | null;
}

export function HistoryPage() {
  useTitle("History");
  const history = useApi(async (signal) => {
    const page = await api<Page<HistoryItem>>("GET", "/users/me/history", { query: { limit: 50 }, signal });
    // The titles: one lookup per video, in parallel; a removed video stays listed without one.
    return Promise.all(
      page.items.map(async (item): Promise<Row> => {
        try {
          return { ...item, video: await api<Video>("GET", `/videos/${item.video_id}`, { signal }) };
        } catch (error) {
          if (error instanceof ApiError && (error.status === 404 || error.status === 403)) return { ...item, video: null };
          throw error;
        }
      }),
    );
  }, []);

  return (
    <section>
      <h1>Watch history</h1>
      <ErrorNote error={history.error} />
      {!history.data ? (
        <Loading />
      ) : history.data.length === 0 ? (
        <p className="muted">Nothing watched yet.</p>
      ) : (
        <ul className="list history">
          {history.data.map((row) => {
            const duration = row.video?.duration_s ?? 0;
            const share = duration ? Math.min(100, (row.position_s / duration) * 100) : 0;
            return (
              <li key={row.video_id}>
                {row.video ? (
                  <Link to={`/videos/${row.video_id}`}>{row.video.title}</Link>
                ) : (
                  <span className="muted">A video that is no longer available</span>
                )}
                <span className="muted">
                  {" "}
                  · {row.completed ? "Finished" : `Stopped at ${clock(row.position_s)}`} · {dateTime(row.last_watched_at)}
                </span>
                {duration > 0 && (
                  <progress max={100} value={share} aria-label={`Watched ${Math.round(share)}% of ${row.video?.title ?? "the video"}`} />
                )}
              </li>
            );
          })}
        </ul>
      )}
    </section>
  );
}
