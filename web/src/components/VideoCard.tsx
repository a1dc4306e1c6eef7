import { Link } from "react-router";
import { clock, count, pricePerMinute } from "../format";
import type { Video } from "../types";

export function VideoCard({ video }: { video: Video }) {
  return (
    <li className="card">
      <Link to={`/videos/${video.id}`} className="card-link">
        <div className="thumb">
          {video.thumbnail_url ? (
            <img src={video.thumbnail_url} alt="" loading="lazy" />
          ) : (
            <div className="thumb-empty" aria-hidden="true">
              ▶
            </div>
          )}
          {video.duration_s !== null && <span className="duration">{clock(video.duration_s)}</span>}
        </div>
        <span className="card-title">{video.title}</span>
      </Link>
      <span className="card-meta">
        <span className={video.price_per_minute ? "price" : "price free"}>
          {pricePerMinute(video.price_per_minute, video.currency)}
        </span>{" "}
        · {count(video.counters.views, "view")}
      </span>
    </li>
  );
}

export function VideoGrid({ videos, empty }: { videos: Video[]; empty: string }) {
  if (!videos.length) return <p className="muted">{empty}</p>;
  return (
    <ul className="grid">
      {videos.map((video) => (
        <VideoCard key={video.id} video={video} />
      ))}
    </ul>
  );
}
