import { useState, type FormEvent } from "react";
import { Link, useNavigate } from "react-router";
import { api } from "../api";
import { isCreator, useAuth } from "../auth";
import { ErrorNote, Field, Loading, TextArea } from "../components/ui";
import { count, date, pricePerMinute } from "../format";
import { useAction, useApi, useTitle } from "../hooks";
import type { Page, Video, VideoStatus } from "../types";

export const STATUS_WORDS: Record<VideoStatus, string> = {
  awaiting_upload: "Waiting for upload",
  uploading: "Uploading",
  processing: "Processing",
  ready: "Ready",
  failed: "Failed",
};

export function StatusBadge({ video }: { video: Video }) {
  const words = STATUS_WORDS[video.status];
  return (
    <span className={`badge ${video.status}`} data-testid="video-status">
      {video.status === "processing" && video.progress !== null ? `${words} ${video.progress}%` : words}
    </span>
  );
}

function BecomeCreator() {
  const { reload } = useAuth();
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const { run, pending, error } = useAction(async () => {
    await api("POST", "/users/me/channel", { json: { channel_name: name, description } });
    // The creator role arrives with the next access token.
    await reload();
  });
  function submit(event: FormEvent) {
    event.preventDefault();
    void run();
  }
  return (
    <section className="narrow">
      <h1>Become a creator</h1>
      <p>Start a channel, upload videos, set a price per minute, and earn 80% of what viewers pay.</p>
      <form onSubmit={submit} className="stack">
        <Field label="Channel name" value={name} onChange={(e) => setName(e.target.value)} required maxLength={80} />
        <TextArea label="What is your channel about?" value={description} onChange={(e) => setDescription(e.target.value)} maxLength={2000} rows={3} />
        <ErrorNote error={error} />
        <button type="submit" className="primary" disabled={pending}>
          {pending ? "Creating your channel…" : "Create channel"}
        </button>
      </form>
    </section>
  );
}

export function StudioPage() {
  const { user } = useAuth();
  useTitle("Studio");
  if (!isCreator(user)) return <BecomeCreator />;
  return <StudioVideos />;
}

function StudioVideos() {
  const navigate = useNavigate();
  const videos = useApi((signal) => api<Page<Video>>("GET", "/videos", { query: { creator: "me", limit: 100 }, signal }), []);
  const remove = useAction(async (video: Video) => {
    if (!window.confirm(`Delete “${video.title}”? Viewers will no longer be able to watch it.`)) return;
    await api("DELETE", `/videos/${video.id}`);
    videos.reload();
  });
  return (
    <section>
      <div className="row spread">
        <h1>Studio</h1>
        <div className="row">
          <Link to="/studio/analytics" className="button">
            Analytics and earnings
          </Link>
          <Link to="/studio/upload" className="button primary">
            Upload a video
          </Link>
        </div>
      </div>
      <ErrorNote error={videos.error ?? remove.error} />
      {!videos.data ? (
        <Loading />
      ) : videos.data.items.length === 0 ? (
        <p>
          No videos yet. <Link to="/studio/upload">Upload your first one</Link>.
        </p>
      ) : (
        <div className="table-wrap">
          <table className="studio">
            <thead>
              <tr>
                <th scope="col">Video</th>
                <th scope="col">Status</th>
                <th scope="col">Visibility</th>
                <th scope="col">Price</th>
                <th scope="col" className="num">
                  Views
                </th>
                <th scope="col">Uploaded</th>
                <th scope="col">
                  <span className="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {videos.data.items.map((video) => (
                <tr key={video.id}>
                  <td>
                    <Link to={`/studio/videos/${video.id}`}>{video.title}</Link>
                  </td>
                  <td>
                    <StatusBadge video={video} />
                  </td>
                  <td>{video.visibility}</td>
                  <td>{pricePerMinute(video.price_per_minute, video.currency)}</td>
                  <td className="num">{count(video.counters.views, "view")}</td>
                  <td>{date(video.created_at)}</td>
                  <td className="actions">
                    {video.status === "ready" && (
                      <button type="button" onClick={() => navigate(`/videos/${video.id}`)} aria-label={`Watch ${video.title}`}>
                        Watch
                      </button>
                    )}
                    <button type="button" onClick={() => navigate(`/studio/analytics/${video.id}`)} aria-label={`Analytics for ${video.title}`}>
                      Analytics
                    </button>
                    <button type="button" className="danger" onClick={() => void remove.run(video)} aria-label={`Delete ${video.title}`}>
                      Delete
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
