import { useEffect, useState } from "react";
import { Link, useNavigate, useParams } from "react-router";
import { api } from "../api";
import { ErrorNote, Loading } from "../components/ui";
import { VideoForm, type VideoFields } from "../components/VideoForm";
import { clock } from "../format";
import { useAction, useApi, useTitle } from "../hooks";
import type { Video } from "../types";
import { StatusBadge } from "./Studio";

const SETTLED = new Set(["ready", "failed"]);

export function EditVideoPage() {
  const { id = "" } = useParams();
  const navigate = useNavigate();
  const video = useApi((signal) => api<Video>("GET", `/videos/${id}`, { signal }), [id]);
  useTitle(video.data ? `Edit: ${video.data.title}` : "Edit video");

  // Live transcode progress: poll until the video is ready (or failed).
  const status = video.data?.status;
  useEffect(() => {
    if (!status || SETTLED.has(status)) return;
    const timer = setInterval(() => {
      api<Video>("GET", `/videos/${id}`)
        .then(video.setData)
        .catch(() => undefined);
    }, 1500);
    return () => clearInterval(timer);
  }, [id, status, video.setData]);

  const [saved, setSaved] = useState(false);
  const save = useAction(async (fields: VideoFields) => {
    setSaved(false);
    video.setData(await api<Video>("PATCH", `/videos/${id}`, { json: fields }));
    setSaved(true);
  });
  const remove = useAction(async () => {
    if (!window.confirm("Delete this video? Viewers will no longer be able to watch it.")) return;
    await api("DELETE", `/videos/${id}`);
    navigate("/studio");
  });

  if (video.error) return <ErrorNote error={video.error} />;
  if (!video.data) return <Loading />;
  const data = video.data;
  return (
    <section className="narrow">
      <p>
        <Link to="/studio">← Studio</Link>
      </p>
      <h1>{data.title}</h1>
      <div className="panel stack">
        <p>
          Status: <StatusBadge video={data} />
          {data.duration_s !== null && <span className="muted"> · {clock(data.duration_s)}</span>}
        </p>
        {data.status === "processing" && (
          <>
            <label htmlFor="transcode-progress">Transcoding progress</label>
            <progress id="transcode-progress" max={100} value={data.progress ?? 0} />
          </>
        )}
        {(data.status === "awaiting_upload" || data.status === "uploading") && (
          <p className="muted">
            The file hasn't fully arrived. <Link to="/studio/upload">Resume the upload</Link>.
          </p>
        )}
        {data.status === "failed" && <p className="error">We couldn't process this video: {data.failure_reason ?? "unknown reason"}.</p>}
        {data.status === "ready" && (
          <p className="success" role="status">
            Ready: {data.renditions.map((r) => r.name).join(", ")}. <Link to={`/videos/${data.id}`}>Watch it</Link>
          </p>
        )}
      </div>
      <h2>Details</h2>
      <VideoForm key={data.id} initial={data} submitLabel={save.pending ? "Saving…" : "Save changes"} pending={save.pending} error={save.error} onSubmit={(fields) => void save.run(fields)} />
      {saved && (
        <p className="success" role="status">
          Saved.
        </p>
      )}
      <h2>Danger zone</h2>
      <ErrorNote error={remove.error} />
      <button type="button" className="danger" onClick={() => void remove.run()}>
        Delete this video
      </button>
    </section>
  );
}
