"""Safe media decoding: round trips through the encoders, and every refusal with its typed error."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
import soundfile as sf
from PIL import Image, ImageFile

from core.config import MediaLimits
from core.errors import InvalidMediaError, MediaError, MediaTooLargeError, MediaTooSmallError
from core.registry import UnknownKindError
from modalities import DECODERS, decode
from modalities.media import (
    SAMPLE_RATE,
    decode_audio,
    decode_image,
    decode_video,
    encode_gif,
    encode_mp4,
    encode_png,
    encode_wav,
    sniff_mime,
    uniform_indices,
)

LIMITS = MediaLimits()


# -- helpers ---------------------------------------------------------------------------------------------------------
def coloured_frames(count: int, size: tuple[int, int] = (32, 24)) -> list[Image.Image]:
    """Frame i is a flat colour whose red channel encodes i (20 * i), so sampled indices can be read back."""
    return [Image.new("RGB", size, (20 * i, 255 - 20 * i, 60)) for i in range(count)]


def frame_index(frame: Image.Image) -> int:
    """Recover the index from a decoded (lossy) coloured frame's red channel."""
    red = float(np.asarray(frame)[..., 0].mean())
    return int(round(red / 20))


def sine(seconds: float, rate: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(samples.size, 1 / rate)[spectrum.argmax()])


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR (valid CRC) declares ``width x height`` RGB, followed by a tiny IDAT and IEND."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + png_chunk(b"IEND", b"")
    )


def expect(error: type[MediaError], modality: str, *words: str):
    """Context manager: the call raises ``error`` for ``modality`` with every word in its message."""

    class _Check:
        def __enter__(self):
            self.ctx = pytest.raises(error)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self.ctx.__exit__(*exc)
            if not handled:  # another exception type: let it propagate as the failure
                return False
            assert self.info.value.modality == modality
            message = str(self.info.value).lower()
            for word in words:
                assert word.lower() in message, f"{word!r} not in {message!r}"
            return handled

    return _Check()


# -- images ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "I;16"])
def test_png_round_trip_any_mode_gives_rgb(mode):
    source = (
        Image.new("RGB", (40, 30), (10, 200, 30)).convert(mode)
        if mode != "I;16"
        else Image.new("I;16", (40, 30), 65535)
    )
    image = decode_image(encode_png(source), LIMITS)
    assert image.mode == "RGB" and image.size == (40, 30)
    if mode == "I;16":
        assert image.getpixel((0, 0)) == (255, 255, 255)  # 16-bit white stays white, not clipped garbage


def test_transparent_pixels_composite_on_white():
    source = Image.new("RGBA", (16, 16), (255, 0, 0, 0))  # fully transparent red
    assert decode_image(encode_png(source), LIMITS).getpixel((3, 3)) == (255, 255, 255)


def test_jpeg_and_gif_decode_as_images():
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), (0, 0, 255)).save(buffer, format="JPEG")
    assert decode_image(buffer.getvalue(), LIMITS).size == (20, 20)
    first = decode_image(encode_gif(coloured_frames(3)), LIMITS)  # animated: first frame
    assert first.size == (32, 24) and frame_index(first) == 0


def test_truncated_png_is_invalid():
    data = encode_png(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    with expect(InvalidMediaError, "image", "truncated"):
        decode_image(data[: len(data) // 2], LIMITS)


def test_truncated_png_refused_even_if_someone_enabled_load_truncated(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    data = encode_png(Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    with pytest.raises(InvalidMediaError):
        decode_image(data[: len(data) // 2], LIMITS)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("data", [b"definitely not an image" * 10, b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20])
def test_corrupt_bytes_are_invalid_images(data):
    with expect(InvalidMediaError, "image"):
        decode_image(data, LIMITS)


def test_one_pixel_image_is_too_small():
    with expect(MediaTooSmallError, "image", "1x1", "at least 8"):
        decode_image(encode_png(Image.new("RGB", (1, 1))), LIMITS)


def test_png_declaring_50000x50000_refused_fast_without_decoding():
    data = png_header_only(50_000, 50_000)
    assert len(data) < 200
    start = time.perf_counter()
    with expect(MediaTooLargeError, "image", "pixels", str(LIMITS.max_pixels)):
        decode_image(data, LIMITS)
    assert time.perf_counter() - start < 1.0


def test_png_over_our_pixel_limit_but_under_pils_is_refused_from_header():
    # 5000x5000 = 25 MP: below PIL's bomb guard, above the default 4096x4096 limit; never decoded.
    with expect(MediaTooLargeError, "image", "5000x5000", str(LIMITS.max_pixels)):
        decode_image(png_header_only(5000, 5000), LIMITS)


def test_oversized_bytes_refused_before_parsing():
    small = MediaLimits(max_bytes=100)
    data = encode_png(Image.new("RGB", (64, 64), (1, 2, 3))) + b"\x00" * 200
    for kind in ("image", "audio", "video"):
        with expect(MediaTooLargeError, kind, "bytes", "100"):
            decode(kind, data, small)


# -- audio -----------------------------------------------------------------------------------------------------------
def test_wav_round_trip_at_16k():
    samples = sine(1.0, SAMPLE_RATE)
    decoded = decode_audio(encode_wav(samples, SAMPLE_RATE), LIMITS)
    assert decoded.dtype == np.float32 and decoded.shape == (SAMPLE_RATE,)
    np.testing.assert_allclose(decoded, samples, atol=1e-3)  # 16-bit quantisation only


def test_wav_is_resampled_to_16k_keeping_pitch():
    decoded = decode_audio(encode_wav(sine(0.5, 44100, freq=1000), 44100), LIMITS)
    assert decoded.shape == (8000,)
    assert abs(dominant_frequency(decoded, SAMPLE_RATE) - 1000) < 5
    assert np.abs(decoded).max() <= 1.0


def test_stereo_flac_is_mixed_to_mono():
    left, right = sine(0.25, 22050, 300), sine(0.25, 22050, 300)
    buffer = io.BytesIO()
    sf.write(buffer, np.stack([left, right], axis=1), 22050, format="FLAC")
    decoded = decode_audio(buffer.getvalue(), LIMITS)
    assert decoded.ndim == 1 and abs(decoded.size - 4000) <= 1


def test_mp3_decodes():
    buffer = io.BytesIO()
    sf.write(buffer, sine(1.0, 16000, 500), 16000, format="MP3")
    decoded = decode_audio(buffer.getvalue(), LIMITS)
    assert abs(decoded.size - SAMPLE_RATE) < 2000
    assert abs(dominant_frequency(decoded, SAMPLE_RATE) - 500) < 10


def _aac_in_mp4(seconds: float, rate: int = 22050) -> bytes:
    """An audio-only MP4 (AAC): a format libsndfile does not read, so PyAV decodes it."""
    import av

    samples = sine(seconds, rate, 300, 0.3)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate)
        for start in range(0, samples.size, 1024):
            frame = av.AudioFrame.from_ndarray(samples[None, start : start + 1024], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def test_aac_in_mp4_decodes_through_pyav():
    decoded = decode_audio(_aac_in_mp4(1.0), LIMITS)
    assert abs(decoded.size - SAMPLE_RATE) < 1200  # encoder priming/padding adds a little
    assert abs(dominant_frequency(decoded, SAMPLE_RATE) - 300) < 10
    with expect(MediaTooLargeError, "audio", "limit of 0.5 s"):
        decode_audio(_aac_in_mp4(1.0), MediaLimits(max_audio_seconds=0.5))


def test_non_audio_bytes_are_invalid_audio():
    with expect(InvalidMediaError, "audio", "not a recognised audio"):
        decode_audio(b"hello, this is text and not a sound" * 20, LIMITS)


def test_audio_over_duration_limit_refused():
    limits = MediaLimits(max_audio_seconds=1.0)
    with expect(MediaTooLargeError, "audio", "3.00 s", "limit of 1 s"):
        decode_audio(encode_wav(sine(3.0, 8000), 8000), limits)


def test_empty_audio_clip_is_too_small():
    with expect(MediaTooSmallError, "audio", "empty"):
        decode_audio(encode_wav(np.zeros(0, dtype=np.float32), SAMPLE_RATE), LIMITS)


def test_image_bytes_are_not_audio():
    with pytest.raises(InvalidMediaError):
        decode_audio(encode_png(Image.new("RGB", (16, 16))), LIMITS)


# -- video -----------------------------------------------------------------------------------------------------------
def test_uniform_indices():
    assert uniform_indices(10, 5) == [0, 2, 5, 7, 9]
    assert uniform_indices(3, 5) == [0, 1, 2]
    assert uniform_indices(100, 1) == [0]
    assert uniform_indices(0, 5) == []


def test_mp4_round_trip_samples_uniformly():
    frames = decode_video(encode_mp4(coloured_frames(10), fps=8), LIMITS, num_frames=5)
    assert len(frames) == 5 and all(f.mode == "RGB" and f.size == (32, 24) for f in frames)
    assert [frame_index(f) for f in frames] == [0, 2, 5, 7, 9]


def test_mp4_odd_size_padded_to_even_and_array_input():
    array = np.zeros((4, 21, 33, 3), dtype=np.uint8)  # (F, H, W, 3), odd sides
    frames = decode_video(encode_mp4(array, fps=4), LIMITS, num_frames=8)
    assert len(frames) == 4  # fewer frames than asked: all of them
    assert frames[0].size == (34, 22)


def test_gif_round_trip_as_video():
    frames = decode_video(encode_gif(coloured_frames(6)), LIMITS, num_frames=3)
    assert [frame_index(f) for f in frames] == uniform_indices(6, 3)


def test_single_frame_video():
    frames = decode_video(encode_mp4(coloured_frames(1)), LIMITS, num_frames=5)
    assert len(frames) == 1


def _encode_with(fmt: str, codec: str, count: int) -> bytes:
    """``count`` coloured frames written with any PyAV muxer/encoder (``count=0``: header only, no frames)."""
    import av

    buffer = io.BytesIO()
    container = av.open(buffer, mode="w", format=fmt)
    stream = container.add_stream(codec, rate=8)
    stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
    container.start_encoding()
    for frame in coloured_frames(count):
        for packet in stream.encode(av.VideoFrame.from_image(frame)):
            container.mux(packet)
    for packet in stream.encode(None) if count else []:
        container.mux(packet)
    container.close()
    return buffer.getvalue()


def test_matroska_without_declared_frame_count_samples_uniformly():
    data = _encode_with("matroska", "mpeg4", 10)  # MKV declares no frame count: packets are counted
    assert sniff_mime(data) == "video/x-matroska"
    assert [frame_index(f) for f in decode_video(data, LIMITS, num_frames=5)] == [0, 2, 5, 7, 9]


def test_matroska_with_a_stream_but_zero_frames_is_too_small():
    with expect(MediaTooSmallError, "video", "before any frame"):
        decode_video(_encode_with("matroska", "mpeg4", 0), LIMITS)


def _zero_frame_mp4() -> bytes:
    import av

    buffer = io.BytesIO()
    container = av.open(buffer, mode="w", format="mp4")
    stream = container.add_stream("libx264", rate=8)
    stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
    container.start_encoding()  # header written, no frame ever encoded
    container.close()
    return buffer.getvalue()


def test_video_without_frames_is_too_small():
    data = _zero_frame_mp4()
    assert sniff_mime(data) == "video/mp4"
    with expect(MediaTooSmallError, "video", "no video stream"):
        decode_video(data, LIMITS)


def test_audio_only_container_is_too_small_as_video():
    with expect(MediaTooSmallError, "video", "no video stream"):
        decode_video(encode_wav(sine(0.2, 16000), 16000), LIMITS)


def test_garbage_is_invalid_video():
    with expect(InvalidMediaError, "video", "not a recognised video"):
        decode_video(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)), LIMITS)


def test_video_limits():
    data = encode_mp4(coloured_frames(10), fps=8)  # 1.25 s, 10 frames of 32x24
    with expect(MediaTooLargeError, "video", "limit of 1 s"):
        decode_video(data, MediaLimits(max_video_seconds=1.0))
    with expect(MediaTooLargeError, "video", "10 frames", "limit of 4"):
        decode_video(data, MediaLimits(max_video_frames=4))
    with expect(MediaTooLargeError, "video", "32x24", "limit of 500"):
        decode_video(data, MediaLimits(max_pixels=500))


# -- registry and sniffing -------------------------------------------------------------------------------------------
def test_decoder_registry_dispatch_and_plugins():
    assert {"image", "audio", "video"} <= set(DECODERS)
    assert decode("image", encode_png(Image.new("RGB", (9, 9))), LIMITS).size == (9, 9)
    assert len(decode("video", encode_gif(coloured_frames(4)), LIMITS, num_frames=2)) == 2
    with pytest.raises(UnknownKindError, match="known kinds: audio, image, video"):
        decode("smell", b"x", LIMITS)
    DECODERS.register("text_test", lambda data, limits: data.decode(), replace=True)
    assert decode("text_test", b"hi", LIMITS) == "hi"


def test_sniff_mime():
    wav = encode_wav(sine(0.1, 16000), 16000)
    flac, ogg, mp3 = io.BytesIO(), io.BytesIO(), io.BytesIO()
    sf.write(flac, sine(0.1, 16000), 16000, format="FLAC")
    sf.write(ogg, sine(0.1, 16000), 16000, format="OGG")
    sf.write(mp3, sine(0.1, 16000), 16000, format="MP3")
    jpeg, webp = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (8, 8)).save(jpeg, format="JPEG")
    Image.new("RGB", (8, 8)).save(webp, format="WEBP")
    expected = {
        encode_png(Image.new("RGB", (8, 8))): "image/png",
        jpeg.getvalue(): "image/jpeg",
        encode_gif(coloured_frames(2)): "image/gif",
        webp.getvalue(): "image/webp",
        wav: "audio/wav",
        flac.getvalue(): "audio/flac",
        ogg.getvalue(): "audio/ogg",
        mp3.getvalue(): "audio/mpeg",
        encode_mp4(coloured_frames(2)): "video/mp4",
        b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm": "video/webm",
        b"plain text": None,
    }
    for data, mime in expected.items():
        assert sniff_mime(data) == mime
