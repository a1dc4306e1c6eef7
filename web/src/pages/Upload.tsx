import { useRef, useState } from "react";
import { Link, useNavigate } from "react-router";
import type * as tus from "tus-js-client";
import { api } from "../api";
import { isCreator, useAuth } from "../auth";
import { ErrorNote, Field } from "../components/ui";
import { NEW_VIDEO, VideoForm, type VideoFields } from "../components/VideoForm";
import { useAction, useTitle } from "../hooks";
import type { VideoCreated } from "../types";
import { forgetUpload, pendingUploads, rememberUpload, startUpload, type PendingUpload } from "../uploads";

function bytes(n: number): string {
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
  if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MB`;
  return `${(n / 1024 / 1024 / 1024).toFixed(2)} GB`;
}

interface Active {
  pending: PendingUpload;
  upload: tus.Upload | null;
  sent: number;
  total: number;
  paused: boolean;
  error: string | null;
}

export function UploadPage() {
  useTitle("Upload a video");
  const { user } = useAuth();
  const navigate = useNavigate();
  const fileRef = useRef<File | null>(null);
  const [unfinished, setUnfinished] = useState(() => (user ? pendingUploads(user.id) : []));
  const [active, setActive] = useState<Active | null>(null);
  const [fileError, setFileError] = useState<string | null>(null);

  async function begin(pending: PendingUpload, file: File) {
    setActive({ pending, upload: null, sent: 0, total: file.size, paused: false, error: null });
    const upload = await startUpload(pending, file, {
      onProgress: (sent, total) => setActive((a) => (a ? { ...a, sent, total } : a)),
      onSuccess: () => navigate(`/studio/videos/${pending.videoId}`),
      onError: (message) => setActive((a) => (a ? { ...a, paused: true, error: message } : a)),
    });
    setActive((a) => (a ? { ...a, upload } : a));
  }

  const create = useAction(async (fields: VideoFields) => {
    const file = fileRef.current;
    if (!file || !user) {
      setFileError("Choose the video file to upload.");
      return;
    }
    const video = await api<VideoCreated>("POST", "/videos", { json: fields });
    const pending: PendingUpload = {
      videoId: video.id,
      userId: user.id,
      title: video.title,
      uploadUrl: video.upload_url,
      metadata: video.upload_metadata,
      fileName: file.name,
      fileSize: file.size,
    };
    rememberUpload(pending);
    await begin(pending, file);
  });

  const discard = useAction(async (pending: PendingUpload) => {
    await api("DELETE", `/videos/${pending.videoId}`).catch(() => undefined);
    forgetUpload(pending.videoId);
    setUnfinished((list) => list.filter((entry) => entry.videoId !== pending.videoId));
  });

  if (!isCreator(user)) {
    return (
      <p>
        Only creators can upload. <Link to="/studio">Start your channel</Link> first.
      </p>
    );
  }

  if (active) {
    const percent = active.total ? Math.floor((active.sent / active.total) * 100) : 0;
    return (
      <section className="narrow">
        <h1>Uploading “{active.pending.title}”</h1>
        <label htmlFor="upload-progress">Upload progress</label>
        <progress id="upload-progress" max={100} value={percent} />
        <p role="status" aria-live="polite">
          {percent}% · {bytes(active.sent)} of {bytes(active.total)}
          {active.paused && !active.error ? " · paused" : ""}
        </p>
        <ErrorNote error={active.error} />
        <div className="row">
          {active.paused ? (
            <button
              type="button"
              className="primary"
              onClick={() => {
                active.upload?.start();
                setActive({ ...active, paused: false, error: null });
              }}
            >
              Resume
            </button>
          ) : (
            <button
              type="button"
              disabled={!active.upload}
              onClick={() => {
                void active.upload?.abort();
                setActive({ ...active, paused: true });
              }}
            >
              Pause
            </button>
          )}
        </div>
        <p className="muted small">You can leave this page: come back to the upload page and choose the same file to carry on.</p>
      </section>
    );
  }

  return (
    <section className="narrow">
      <h1>Upload a video</h1>
      {unfinished.length > 0 && (
        <section aria-labelledby="unfinished-heading" className="panel">
          <h2 id="unfinished-heading">Unfinished uploads</h2>
          <ul className="list">
            {unfinished.map((pending) => (
              <li key={pending.videoId} className="stack">
                <p>
                  “{pending.title}” ({pending.fileName}, {bytes(pending.fileSize)}) didn't finish. Choose the same file to carry on where it
                  stopped.
                </p>
                <Field
                  label={`File for “${pending.title}”`}
                  type="file"
                  accept="video/*"
                  onChange={(event) => {
                    const file = event.target.files?.[0];
                    if (!file) return;
                    if (file.name !== pending.fileName || file.size !== pending.fileSize) {
                      setFileError(`That isn't ${pending.fileName}. Choose the same file you started with.`);
                      return;
                    }
                    setFileError(null);
                    void begin(pending, file);
                  }}
                />
                <button type="button" className="danger" onClick={() => void discard.run(pending)}>
                  Discard “{pending.title}”
                </button>
              </li>
            ))}
          </ul>
          <ErrorNote error={fileError ?? discard.error} />
        </section>
      )}
      <VideoForm initial={NEW_VIDEO} submitLabel={create.pending ? "Starting upload…" : "Upload"} pending={create.pending} error={create.error ?? (unfinished.length ? null : fileError)} onSubmit={(fields) => void create.run(fields)}>
        <Field
          label="Video file"
          type="file"
          accept="video/*"
          required
          onChange={(event) => {
            fileRef.current = event.target.files?.[0] ?? null;
            setFileError(null);
          }}
          hint="MP4, MOV, WebM, MKV… We make every quality up to 1080p from it."
        />
      </VideoForm>
    </section>
  );
}
