"""Catalog's expected failures, each with a stable problem code."""

from __future__ import annotations

from common.errors import (
    AppError,
    Conflict,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
    Unprocessable,
)


class VideoNotFound(NotFound):
    # Also what a stranger gets for a private video: its existence is not revealed.
    code = "video_not_found"
    title = "There is no video with this id."


class CommentNotFound(NotFound):
    code = "comment_not_found"
    title = "There is no comment with this id on this video."


class ThumbnailNotFound(NotFound):
    code = "thumbnail_not_found"
    title = "This video has no thumbnail (yet)."


class CreatorRequired(Forbidden):
    code = "creator_required"
    title = "Only creators can publish videos; create a channel first."


class NotOwner(Forbidden):
    code = "not_owner"
    title = "Only the video's creator (or an admin) may change it."


class NotAuthor(Forbidden):
    code = "not_author"
    title = "Only the comment's author may change it."


class InvalidIdentity(Unauthorized):
    code = "invalid_token"
    title = "The access token does not name a valid user."


class InvalidTransition(Conflict):
    code = "invalid_transition"


class VideoNotReady(Conflict):
    code = "video_not_ready"
    title = "The video is not ready yet; try again once it has been processed."


class NotProcessing(Conflict):
    code = "not_processing"
    title = "The video is not being processed."


class ResultConflict(Conflict):
    code = "result_conflict"
    title = "A different transcode result was already recorded for this video."


class ReplyDepth(Unprocessable):
    code = "reply_depth"
    title = "Replies cannot be replied to; reply to the top-level comment instead."


class ParentNotFound(Unprocessable):
    code = "parent_not_found"
    title = "The comment being replied to does not exist on this video."


class InvalidCursor(Unprocessable):
    code = "invalid_cursor"
    title = "The cursor is not valid; start again from the first page."


class InvalidStorageKey(Unprocessable):
    code = "invalid_storage_key"


# --- uploads -----------------------------------------------------------------------------------


class UploadNotFound(NotFound):
    code = "upload_not_found"
    title = "There is no upload with this id."


class UploadExpired(AppError):
    status, code = 410, "upload_expired"
    title = "This upload expired; create a new one."


class UploadOffsetMismatch(Conflict):
    code = "upload_offset_mismatch"
    title = "Upload-Offset does not match the server's offset; ask with HEAD and resume from there."


class UploadCompleted(Conflict):
    code = "upload_completed"
    title = "This upload is already complete."


class UploadInProgress(Conflict):
    code = "upload_in_progress"
    title = "A resumable upload for this video is in progress; finish or terminate it first."


class UploadLocked(AppError):
    # 423: tus clients (tus-js-client) retry on it, after asking for the offset again.
    status, code = 423, "upload_locked"
    title = "Another request is writing to this upload right now; retry shortly."


class UploadTooLarge(AppError):
    status, code = 413, "upload_too_large"


class LengthRequired(AppError):
    status, code = 411, "length_required"
    title = "Send the file's size in Content-Length."


class IncompleteUpload(AppError):
    status, code = 400, "incomplete_upload"
    title = "The request ended before the whole file arrived; upload it again."


class InvalidUploadRequest(AppError):
    status, code = 400, "invalid_upload_request"


class UnsupportedUploadType(AppError):
    status, code = 415, "unsupported_media_type"
    title = "PATCH bodies must be sent as application/offset+octet-stream."


class TusVersionUnsupported(AppError):
    status, code = 412, "tus_version_unsupported"
    title = "This server speaks tus 1.0.0 only."


class NotAVideo(Unprocessable):
    code = "not_a_video"


class ProbeFailed(AppError):
    # The file is stored; sniffing it failed on our side (ffprobe missing or too slow).
    status, code = 503, "probe_unavailable"
    title = "We could not check the file right now; it is kept and will be checked again."


class StorageDown(ServiceUnavailable):
    code = "storage_unavailable"
    title = "Object storage is not answering right now; retry shortly (stored bytes are kept)."
