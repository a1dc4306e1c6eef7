// Resumable uploads with tus-js-client. Which uploads are unfinished is kept in localStorage, so
// after a page reload (or a crash) the studio offers to resume them: the browser cannot keep a
// file handle across a reload, so the creator picks the same file again and tus carries on from
// the last byte the server has.

import * as tus from "tus-js-client";
import { currentToken, refreshSession } from "./api";

const STORE = "streamify.pending-uploads";

export interface PendingUpload {
  videoId: string;
  userId: string;
  title: string;
  uploadUrl: string;
  metadata: Record<string, string>;
  fileName: string;
  fileSize: number;
}

export function pendingUploads(userId: string): PendingUpload[] {
  try {
    const all = JSON.parse(localStorage.getItem(STORE) ?? "[]") as PendingUpload[];
    return all.filter((entry) => entry.userId === userId);
  } catch {
    return [];
  }
}

function save(entries: PendingUpload[]): void {
  localStorage.setItem(STORE, JSON.stringify(entries));
}

export function rememberUpload(entry: PendingUpload): void {
  const all = (JSON.parse(localStorage.getItem(STORE) ?? "[]") as PendingUpload[]).filter((e) => e.videoId !== entry.videoId);
  save([...all, entry]);
}

export function forgetUpload(videoId: string): void {
  const all = JSON.parse(localStorage.getItem(STORE) ?? "[]") as PendingUpload[];
  save(all.filter((entry) => entry.videoId !== videoId));
}

export interface UploadCallbacks {
  onProgress: (sent: number, total: number) => void;
  onSuccess: () => void;
  onError: (message: string) => void;
}

/** A tus upload of `file` for one video; resumes from the server's offset when one exists. */
export async function startUpload(pending: PendingUpload, file: File, callbacks: UploadCallbacks): Promise<tus.Upload> {
  const upload = new tus.Upload(file, {
    endpoint: pending.uploadUrl,
    metadata: { ...pending.metadata, filename: file.name, filetype: file.type || "application/octet-stream" },
    chunkSize: 8 * 1024 * 1024,
    retryDelays: [0, 1000, 3000, 5000, 10000],
    // One fingerprint per video, so the same file uploaded for two videos never mixes them up.
    fingerprint: async (f) => ["streamify", pending.videoId, (f as File).name, (f as File).size, (f as File).lastModified].join("-"),
    storeFingerprintForResuming: true,
    removeFingerprintOnSuccess: true,
    onBeforeRequest(request) {
      const token = currentToken();
      if (token) request.setHeader("Authorization", `Bearer ${token}`);
    },
    onShouldRetry(error, attempt, options) {
      const status = error.originalResponse?.getStatus() ?? 0;
      if (status === 401 && attempt < 2) {
        // The access token expired during a long upload: renew it, then retry this request.
        void refreshSession();
        return true;
      }
      if (status >= 400 && status < 500 && status !== 409 && status !== 423 && status !== 429) return false;
      return attempt < (options.retryDelays?.length ?? 0);
    },
    onProgress: callbacks.onProgress,
    onSuccess: () => {
      forgetUpload(pending.videoId);
      callbacks.onSuccess();
    },
    onError: (error) => {
      const status = (error as tus.DetailedError).originalResponse?.getStatus();
      callbacks.onError(
        status === 413
          ? "That file is too large to upload."
          : status === 415 || status === 422
            ? "That file doesn't look like a video we can use."
            : "The upload stopped. Check your connection and press Resume.",
      );
    },
  });
  const previous = await upload.findPreviousUploads();
  if (previous.length) upload.resumeFromPreviousUpload(previous[0]);
  upload.start();
  return upload;
}
