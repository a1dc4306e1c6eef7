"""Which renditions a source gets: no upscaling, orientation kept, even sizes, bandwidth rising."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from common.media import ProbeResult
from transcoder.ffmpeg import ladder_command, thumbnail_command
from transcoder.ladder import LADDER, Rendition, choose_ladder, h264_level, output_fps


def probe_of(
    width: int, height: int, *, fps: float | None = 30.0, rotation: int = 0, audio: bool = True
) -> ProbeResult:
    return ProbeResult(
        duration_s=10.0,
        width=width,
        height=height,
        fps=fps,
        rotation=rotation,
        has_audio=audio,
        has_video=True,
        format_name="mov,mp4,m4a,3gp,3g2,mj2",
    )


def sizes(ladder: list[Rendition]) -> list[tuple[str, int, int]]:
    return [(r.name, r.width, r.height) for r in ladder]


sides = st.integers(min_value=2, max_value=8192)
frame_rates = st.one_of(st.none(), st.floats(min_value=1, max_value=240, allow_nan=False))
rotations = st.sampled_from([0, 90, 180, 270])


class TestChooseLadderProperties:
    @given(width=sides, height=sides, fps=frame_rates, rotation=rotations, audio=st.booleans())
    def test_no_rendition_is_larger_than_the_source(self, width, height, fps, rotation, audio):
        probe = probe_of(width, height, fps=fps, rotation=rotation, audio=audio)
        assert probe.display_width is not None and probe.display_height is not None
        for rendition in choose_ladder(probe):
            assert rendition.width <= probe.display_width
            assert rendition.height <= probe.display_height

    @given(width=sides, height=sides, rotation=rotations)
    def test_orientation_is_kept(self, width, height, rotation):
        probe = probe_of(width, height, rotation=rotation)
        assert probe.display_width is not None and probe.display_height is not None
        # Never flipped; a near-square source (2x3, 360x361) may come out square after rounding
        # to even sizes.
        for rendition in choose_ladder(probe):
            if probe.display_height > probe.display_width:
                assert rendition.height >= rendition.width
            elif probe.display_width > probe.display_height:
                assert rendition.width >= rendition.height
            else:
                assert rendition.width == rendition.height

    @given(width=sides, height=sides, fps=frame_rates, rotation=rotations)
    def test_dimensions_are_even_and_positive(self, width, height, fps, rotation):
        for rendition in choose_ladder(probe_of(width, height, fps=fps, rotation=rotation)):
            assert rendition.width >= 2 and rendition.width % 2 == 0
            assert rendition.height >= 2 and rendition.height % 2 == 0

    @given(width=sides, height=sides, fps=frame_rates, audio=st.booleans())
    def test_there_is_at_least_one_rendition_and_bandwidth_increases(self, width, height, fps, audio):
        ladder = choose_ladder(probe_of(width, height, fps=fps, audio=audio))
        assert 1 <= len(ladder) <= len(LADDER)
        bandwidths = [r.bandwidth for r in ladder]
        assert bandwidths == sorted(bandwidths) and len(set(bandwidths)) == len(bandwidths)
        assert len({r.name for r in ladder}) == len(ladder)

    @given(width=sides, height=sides)
    def test_the_aspect_ratio_is_kept_to_within_rounding(self, width, height):
        for rendition in choose_ladder(probe_of(width, height)):
            # Each side is off by at most one even step (2 px) from the exact scaled size.
            scale = min(rendition.width, rendition.height) / min(width, height)
            assert abs(rendition.width - width * scale) <= 2 + scale
            assert abs(rendition.height - height * scale) <= 2 + scale

    @given(fps=frame_rates)
    def test_the_output_frame_rate_is_at_most_60(self, fps):
        out = output_fps(fps)
        assert 0 < out <= 60
        if fps is not None and fps <= 60:
            assert out == round(fps, 3)


class TestChooseLadderExamples:
    def test_a_1080p_source_gets_the_whole_ladder(self):
        assert sizes(choose_ladder(probe_of(1920, 1080))) == [
            ("360p", 640, 360),
            ("480p", 854, 480),
            ("720p", 1280, 720),
            ("1080p", 1920, 1080),
        ]

    def test_a_portrait_source_keeps_its_orientation(self):
        assert sizes(choose_ladder(probe_of(361, 641))) == [("360p", 360, 640)]
        assert sizes(choose_ladder(probe_of(1080, 1920))) == [
            ("360p", 360, 640),
            ("480p", 480, 854),
            ("720p", 720, 1280),
            ("1080p", 1080, 1920),
        ]

    def test_a_rotated_phone_video_is_laid_out_as_it_is_shown(self):
        assert sizes(choose_ladder(probe_of(1280, 720, rotation=90))) == [
            ("360p", 360, 640),
            ("480p", 480, 854),
            ("720p", 720, 1280),
        ]

    def test_a_source_is_never_upscaled(self):
        assert sizes(choose_ladder(probe_of(854, 480))) == [("360p", 640, 360), ("480p", 854, 480)]
        assert sizes(choose_ladder(probe_of(3840, 2160)))[-1] == ("1080p", 1920, 1080)

    def test_a_source_below_360p_gets_one_rendition_at_its_own_even_size(self):
        assert sizes(choose_ladder(probe_of(320, 240))) == [("240p", 320, 240)]
        assert sizes(choose_ladder(probe_of(177, 145))) == [("144p", 176, 144)]

    def test_a_source_without_audio_gets_video_only_renditions(self):
        ladder = choose_ladder(probe_of(1280, 720, audio=False))
        assert all(not r.has_audio and r.codecs.startswith("avc1.") and "," not in r.codecs for r in ladder)

    def test_codecs_name_high_profile_and_the_level(self):
        by_name = {r.name: r for r in choose_ladder(probe_of(1920, 1080))}
        assert by_name["360p"].codecs == "avc1.64001e,mp4a.40.2"  # High, level 3.0
        assert by_name["720p"].codecs == "avc1.64001f,mp4a.40.2"  # level 3.1
        assert by_name["1080p"].codecs == "avc1.640028,mp4a.40.2"  # level 4.0

    def test_h264_levels_follow_picture_size_and_rate(self):
        assert h264_level(1920, 1080, 60, 8_000_000) == "4.2"
        assert h264_level(3840, 2160, 30, 20_000_000) == "5.1"
        # A very wide picture needs a higher level for its width alone.
        assert h264_level(2048, 64, 30, 1_000_000) == "3.1"


class TestFfmpegCommands:
    def test_one_process_splits_the_source_into_every_rendition(self, tmp_path: Path):
        ladder = choose_ladder(probe_of(1280, 720))
        args = ladder_command(
            "ffmpeg",
            "/data/in.mp4",
            ladder,
            tmp_path,
            preset="veryfast",
            segment_seconds=6,
            keyframe_seconds=2,
            force_fps=False,
        )
        graph = args[args.index("-filter_complex") + 1]
        assert "split=3[s0][s1][s2]" in graph
        assert "scale=640:360" in graph and "scale=854:480" in graph and "scale=1280:720" in graph
        assert args.count("-map") == 6  # a video and an audio stream per rendition
        assert args[args.index("-var_stream_map") + 1] == (
            "v:0,a:0,name:360p v:1,a:1,name:480p v:2,a:2,name:720p"
        )
        assert args[args.index("-g") + 1] == "60" and args[args.index("-sc_threshold") + 1] == "0"
        assert args[args.index("-force_key_frames") + 1] == "expr:gte(t,n_forced*2)"
        assert args[args.index("-hls_time") + 1] == "6"
        assert args[args.index("-maxrate:v:2") + 1] == str(ladder[2].maxrate)
        assert args[args.index("-i") + 1] == "file:/data/in.mp4"
        assert args[args.index("-protocol_whitelist") + 1] == "file"

    def test_a_silent_source_maps_no_audio(self, tmp_path: Path):
        ladder = choose_ladder(probe_of(640, 360, audio=False))
        args = ladder_command(
            "ffmpeg",
            "https://s3.example/in?sig=1",
            ladder,
            tmp_path,
            preset="veryfast",
            segment_seconds=6,
            keyframe_seconds=2,
            force_fps=True,
        )
        assert "0:a:0" not in args and "-c:a" not in args
        assert args[args.index("-var_stream_map") + 1] == "v:0,name:360p"
        assert args[args.index("-filter_complex") + 1].startswith("[0:v:0]fps=30,scale=640:360")
        assert args[args.index("-protocol_whitelist") + 1] == "http,https,tcp,tls,crypto"

    def test_the_thumbnail_seeks_before_opening_the_input(self, tmp_path: Path):
        args = thumbnail_command("ffmpeg", "/data/in.mp4", tmp_path / "t.jpg", at_s=1.5, width=640)
        assert args.index("-ss") < args.index("-i")
        assert args[args.index("-vf") + 1] == "scale='min(640,iw)':-2"
