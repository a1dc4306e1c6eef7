"""Catalog's expected failures, each with a stable problem code."""

from __future__ import annotations

from common.errors import Conflict, Forbidden, NotFound, Unauthorized, Unprocessable


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
