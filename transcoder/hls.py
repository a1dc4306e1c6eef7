"""HLS playlists: measuring what ffmpeg wrote, writing the master, validating rendition playlists.

The master is written here with the ``m3u8`` library rather than taken from ffmpeg: ffmpeg 5.1's
master has BANDWIDTH, RESOLUTION and CODECS but neither AVERAGE-BANDWIDTH nor FRAME-RATE, and its
BANDWIDTH is derived from the configured rates, not from the segments. Using the library (instead
of string building) keeps attribute formatting and quoting right, and the same library parses the
rendition playlists for validation.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import m3u8

from transcoder.ladder import Rendition

CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".ts": "video/mp2t",
    ".m4s": "video/mp4",
    ".mp4": "video/mp4",
    ".jpg": "image/jpeg",
}
# Segments shorter than this do not set a variant's peak: a tail of a frame or two holding one
# keyframe would otherwise claim a peak several times the real one and steer players down.
MIN_PEAK_SEGMENT_S = 1.0


class InvalidPlaylist(Exception):
    pass


def content_type(path: str) -> str:
    return CONTENT_TYPES.get(Path(path).suffix.lower(), "application/octet-stream")


@dataclass(frozen=True, slots=True)
class VariantStats:
    """What a rendition's segments actually hold."""

    duration_s: float
    # Peak and average bits per second over its segments (HLS BANDWIDTH / AVERAGE-BANDWIDTH).
    peak_bps: int
    average_bps: int
    segments: tuple[str, ...]


def parse_media_playlist(text: str) -> m3u8.M3U8:
    """A rendition (media) playlist, or :class:`InvalidPlaylist` saying what is wrong with it."""
    try:
        playlist = m3u8.loads(text)
    except Exception as exc:  # the parser raises assorted errors on malformed input
        raise InvalidPlaylist(f"the playlist does not parse: {exc}") from exc
    if playlist.is_variant:
        raise InvalidPlaylist("a master playlist where a media playlist was expected")
    if not playlist.is_endlist:
        raise InvalidPlaylist("the playlist is not complete (no EXT-X-ENDLIST)")
    if not playlist.segments:
        raise InvalidPlaylist("the playlist has no segments")
    for segment in playlist.segments:
        if not segment.uri or "/" in segment.uri or segment.duration is None or segment.duration <= 0:
            raise InvalidPlaylist(f"the playlist has an invalid segment entry {segment.uri!r}")
    return playlist


def measure_variant(playlist_path: Path) -> VariantStats:
    """Duration and bit rates of a rendition ffmpeg wrote (its playlist and segment files)."""
    playlist = parse_media_playlist(playlist_path.read_text())
    total_bits = 0
    total_s = 0.0
    peak = 0.0
    short_peak = 0.0
    for segment in playlist.segments:
        duration = float(segment.duration)
        bits = (playlist_path.parent / segment.uri).stat().st_size * 8
        total_bits += bits
        total_s += duration
        rate = bits / duration
        if duration >= MIN_PEAK_SEGMENT_S:
            peak = max(peak, rate)
        else:
            short_peak = max(short_peak, rate)
    average = total_bits / total_s
    # Only short segments (a clip under a second): they are all there is to go by.
    peak = peak or short_peak
    return VariantStats(
        duration_s=total_s,
        peak_bps=math.ceil(max(peak, average)),
        average_bps=math.ceil(average),
        segments=tuple(segment.uri for segment in playlist.segments),
    )


def master_playlist(variants: Sequence[tuple[Rendition, VariantStats]], *, playlist_name: str) -> str:
    """The master playlist, one EXT-X-STREAM-INF per rendition, smallest first."""
    master = m3u8.M3U8()
    master.version = 6
    master.is_independent_segments = True
    for rendition, stats in variants:
        master.add_playlist(
            m3u8.Playlist(
                f"{rendition.name}/{playlist_name}",
                stream_info={
                    "bandwidth": stats.peak_bps,
                    "average_bandwidth": stats.average_bps,
                    "resolution": f"{rendition.width}x{rendition.height}",
                    "codecs": rendition.codecs,
                    "frame_rate": rendition.fps,
                },
                media=[],
                base_uri=None,
            )
        )
    text: str = master.dumps()
    return text


def validate_media_playlist(
    text: str, *, stored: Collection[str], expected_duration_s: float, tolerance_s: float = 1.0
) -> float:
    """Check a stored rendition playlist: it parses, every segment it names is in ``stored`` (file
    names next to it), and its total duration is within ``tolerance_s`` of the source's.
    Returns the total duration; raises :class:`InvalidPlaylist`."""
    playlist = parse_media_playlist(text)
    missing = [segment.uri for segment in playlist.segments if segment.uri not in stored]
    if missing:
        raise InvalidPlaylist(f"{len(missing)} segment(s) missing from storage, first {missing[0]!r}")
    total = sum(float(segment.duration) for segment in playlist.segments)
    if abs(total - expected_duration_s) > tolerance_s:
        raise InvalidPlaylist(f"the playlist plays {total:.2f} s of a {expected_duration_s:.2f} s source")
    return total
