"""Why a transcode stops, sorted by what the job does about it.

- :class:`BadInput`: the source itself is the problem; the video is reported ``failed`` with
  ``reason`` and the job ends normally (arq does not retry it).
- :class:`TransientError`: this machine, the store or the catalog had a bad moment; the job
  raises ``arq.Retry`` with back-off.
- :class:`VideoGone`: the video was deleted meanwhile; the job stops and removes its outputs.
- :class:`NoLongerProcessing`: someone else already finished the video; the job stops.
"""

from __future__ import annotations


class TranscodeError(Exception):
    pass


class BadInput(TranscodeError):
    """``reason`` is a sentence for the creator; ``detail`` (ffmpeg's words) is for the logs."""

    def __init__(self, reason: str, *, detail: str = "") -> None:
        super().__init__(reason if not detail else f"{reason} ({detail})")
        self.reason = reason
        self.detail = detail


class TransientError(TranscodeError):
    pass


class VideoGone(TranscodeError):
    pass


class NoLongerProcessing(TranscodeError):
    def __init__(self, status: str) -> None:
        super().__init__(f"the video is {status}, not processing")
        self.status = status


class CatalogRejected(TranscodeError):
    """The catalog refused a report as invalid (a bug on one side, not worth retrying)."""
