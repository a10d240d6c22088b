"""Safe decoding and encoding of media (images, audio, video).

Every decoder takes the raw bytes of one medium plus a :class:`~core.config.MediaLimits` and either
returns a decoded object ready for an encoder's ``preprocess`` or raises one of the typed errors of
:mod:`core.errors` -- *before* any model runs and, wherever the container allows it, before the
payload itself is decoded:

* :class:`~core.errors.InvalidMediaError` -- not a decodable medium of that kind (garbage, truncated,
  corrupt);
* :class:`~core.errors.MediaTooLargeError` -- over a limit (bytes, pixels, seconds, frames);
* :class:`~core.errors.MediaTooSmallError` -- under a minimum (a 1x1 image, an empty clip, a video
  without frames).

Decoded forms:

* image -> ``PIL.Image.Image`` in RGB;
* audio -> ``np.ndarray`` float32, mono, in [-1, 1], at :data:`SAMPLE_RATE` (16 kHz);
* video -> ``list[PIL.Image.Image]`` (RGB), ``num_frames`` frames sampled uniformly over the whole video.

The encoders (:func:`encode_png`, :func:`encode_wav`, :func:`encode_mp4`, :func:`encode_gif`) write generated
outputs and test fixtures. :data:`DECODERS` maps a kind to its decoder; :func:`decode` dispatches through it so
plugins can add media kinds. SciPy's resampler, slow to import, is loaded only when a clip needs resampling.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import av
import numpy as np
import soundfile as sf
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from core.config import MediaLimits
from core.errors import InvalidMediaError, MediaTooLargeError, MediaTooSmallError
from core.registry import Registry

SAMPLE_RATE = 16000
"""Sample rate (Hz) of every decoded audio clip: what Whisper-style encoders expect."""

Decoder = Callable[..., Any]


# ------------------------------------------------------------------------------------------------------------------
# shared checks
# ------------------------------------------------------------------------------------------------------------------
def _check_bytes(data: bytes, limits: MediaLimits, modality: str) -> None:
    """Refuse non-bytes, empty and oversized payloads (the cheapest checks, done first)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidMediaError(f"{modality} data must be bytes, got {type(data).__name__}", modality=modality)
    if len(data) == 0:
        raise InvalidMediaError(f"{modality} data is empty (0 bytes)", modality=modality)
    if len(data) > limits.max_bytes:
        raise MediaTooLargeError(
            f"{modality} is {len(data)} bytes, over the limit of {limits.max_bytes} bytes", modality=modality
        )


def _check_area(width: int, height: int, limits: MediaLimits, modality: str, what: str = "image") -> None:
    if width * height > limits.max_pixels:
        raise MediaTooLargeError(
            f"{what} is {width}x{height} = {width * height} pixels, over the limit of {limits.max_pixels} pixels",
            modality=modality,
        )


# ------------------------------------------------------------------------------------------------------------------
# images
# ------------------------------------------------------------------------------------------------------------------
_HIGH_BIT_DEPTH_SCALE = {"I;16": 1 / 257, "I;16L": 1 / 257, "I;16B": 1 / 257, "I;16N": 1 / 257}


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB: alpha is composited over white, 16-bit grey is scaled to 8 bits."""
    if image.mode == "RGB":
        return image
    if image.mode in _HIGH_BIT_DEPTH_SCALE:  # 16-bit greyscale: PIL's own conversion would clip at 255
        grey = np.asarray(image, dtype=np.float32) * _HIGH_BIT_DEPTH_SCALE[image.mode]
        image = Image.fromarray(np.clip(grey + 0.5, 0, 255).astype(np.uint8), mode="L")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def decode_image(data: bytes, limits: MediaLimits) -> Image.Image:
    """Decode one image (PNG, JPEG, GIF, WebP, BMP, ... -- whatever Pillow reads) to an RGB ``PIL.Image``.

    Order of checks: byte size; header (format and declared size, read lazily without touching pixels) against
    ``max_pixels`` and ``min_side``; then a full load, so truncated or corrupt files fail here and not inside a
    model. Animated images yield their first frame; EXIF orientation is applied.
    """
    modality = "image"
    _check_bytes(data, limits, modality)
    # A truncated image must be refused, never padded with grey: this global is PIL's only switch for it.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        image = Image.open(io.BytesIO(bytes(data)))  # lazy: parses the header only
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # PIL's own bomb guard (a warning only when the warnings filter turns it into an error).
        raise MediaTooLargeError(
            f"image has more pixels than allowed (limit {limits.max_pixels} pixels): {exc}", modality=modality
        ) from exc
    except UnidentifiedImageError as exc:
        raise InvalidMediaError("data is not a recognised image format", modality=modality) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidMediaError(f"image header is corrupt: {exc}", modality=modality) from exc

    with image:
        width, height = image.size
        _check_area(width, height, limits, modality)  # before a single pixel is decoded
        if min(width, height) < limits.min_side:
            raise MediaTooSmallError(
                f"image is {width}x{height}; each side must be at least {limits.min_side} pixels",
                modality=modality,
            )
        try:
            image.load()  # decodes the pixels; raises on truncation / corruption
            upright = ImageOps.exif_transpose(image)
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise InvalidMediaError(
                f"{image.format or 'image'} data is truncated or corrupt: {exc}", modality=modality
            ) from exc
        return _to_rgb(upright)


# ------------------------------------------------------------------------------------------------------------------
# audio
# ------------------------------------------------------------------------------------------------------------------
def _resample(samples: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling (anti-aliased) from ``rate`` to ``target`` Hz."""
    if rate == target:
        return samples
    from scipy.signal import resample_poly  # noqa: PLC0415 - scipy.signal is slow to import; only resampling uses it

    ratio = Fraction(target, rate)  # reduced up/down factors, e.g. 44100 -> 16000 is 160/441
    return resample_poly(samples, ratio.numerator, ratio.denominator).astype(np.float32)


def _too_long(seconds: float, limits: MediaLimits) -> MediaTooLargeError:
    return MediaTooLargeError(
        f"audio is {seconds:.2f} s long, over the limit of {limits.max_audio_seconds:g} s", modality="audio"
    )


_UNKNOWN_FRAMES = 2**62


def _read_with_soundfile(data: bytes, limits: MediaLimits) -> tuple[np.ndarray, int] | None:
    """Decode with libsndfile (WAV, FLAC, OGG, MP3, AIFF, ...); ``None`` if it does not know the format."""
    try:
        handle = sf.SoundFile(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        return None
    with handle:
        rate = int(handle.samplerate)
        if rate <= 0:
            raise InvalidMediaError(f"audio declares an invalid sample rate {rate}", modality="audio")
        declared = int(handle.frames)  # libsndfile reports an unknown length as a huge sentinel
        if 0 < declared < _UNKNOWN_FRAMES and declared / rate > limits.max_audio_seconds:  # refuse from the header
            raise _too_long(declared / rate, limits)
        bound = int(math.floor(limits.max_audio_seconds * rate)) + 1  # never read past the limit
        try:
            samples = handle.read(frames=bound, dtype="float32", always_2d=True)  # (N, C)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise InvalidMediaError(f"audio data is corrupt: {exc}", modality="audio") from exc
    return samples.mean(axis=1), rate  # (N, C) -> (N,)


def _read_with_pyav(data: bytes, limits: MediaLimits) -> np.ndarray:
    """Decode with FFmpeg (MP3, AAC, Opus, audio tracks of videos, ...) straight to 16 kHz mono float32."""
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise InvalidMediaError("data is not a recognised audio format", modality="audio") from exc
    with container:
        if not container.streams.audio:
            raise InvalidMediaError("data contains no audio stream", modality="audio")
        stream = container.streams.audio[0]
        declared = _stream_seconds(stream, container)
        if declared is not None and declared > limits.max_audio_seconds:
            raise _too_long(declared, limits)
        # libswresample does the down-mix and the (filtered) rate conversion.
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        bound = int(limits.max_audio_seconds * SAMPLE_RATE) + 1
        chunks: list[np.ndarray] = []
        total = 0
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1)  # packed mono: (1, N) -> (N,)
                    chunks.append(chunk)
                    total += chunk.size
                if total > bound:
                    raise _too_long(total / SAMPLE_RATE, limits)
            for out in resampler.resample(None):  # flush
                chunks.append(out.to_ndarray().reshape(-1))
        except av.FFmpegError as exc:
            raise InvalidMediaError(f"audio data is corrupt: {exc}", modality="audio") from exc
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, dtype=np.float32)


def decode_audio(data: bytes, limits: MediaLimits) -> np.ndarray:
    """Decode one audio clip to float32 mono samples in [-1, 1] at 16 kHz.

    libsndfile is tried first (WAV, FLAC, OGG/Vorbis/Opus, MP3 with libsndfile >= 1.1); anything it does not
    recognise goes to FFmpeg through PyAV. The duration is checked from the header when the format declares
    it, and reading never goes past ``max_audio_seconds`` whatever the header says.
    """
    modality = "audio"
    _check_bytes(data, limits, modality)
    data = bytes(data)
    read = _read_with_soundfile(data, limits)
    if read is not None:
        samples, rate = read
        if samples.size / rate > limits.max_audio_seconds:
            raise _too_long(samples.size / rate, limits)
        samples = _resample(samples, rate)
    else:
        samples = _read_with_pyav(data, limits)
    if samples.size == 0:
        raise MediaTooSmallError("audio clip is empty (0 samples)", modality=modality)
    if samples.size / SAMPLE_RATE > limits.max_audio_seconds:
        raise _too_long(samples.size / SAMPLE_RATE, limits)
    if not np.all(np.isfinite(samples)):
        raise InvalidMediaError("audio contains NaN or infinite samples", modality=modality)
    return np.clip(samples, -1.0, 1.0).astype(np.float32, copy=False)


# ------------------------------------------------------------------------------------------------------------------
# video
# ------------------------------------------------------------------------------------------------------------------
def _stream_seconds(stream: Any, container: Any) -> float | None:
    """Declared duration of a stream (or, failing that, of the container) in seconds, if known."""
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def uniform_indices(total: int, count: int) -> list[int]:
    """``count`` frame indices spread uniformly over ``range(total)``, first and last frame included.

    ``uniform_indices(10, 5) == [0, 2, 5, 7, 9]``; with ``total <= count`` every frame is returned once.
    """
    if total <= 0:
        return []
    if total <= count:
        return list(range(total))
    positions = np.linspace(0, total - 1, count)
    return sorted({int(math.floor(p + 0.5)) for p in positions})  # round half up, unique


def _open_video(data: bytes, limits: MediaLimits) -> tuple[Any, Any]:
    """Open a container and its first video stream, checking the declared geometry, duration and frames."""
    modality = "video"
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except av.error.EOFError as exc:
        raise MediaTooSmallError("video ends before any frame could be read", modality=modality) from exc
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise InvalidMediaError("data is not a recognised video format", modality=modality) from exc
    try:
        if not container.streams.video:
            raise MediaTooSmallError("container has no video stream (no frames)", modality=modality)
        stream = container.streams.video[0]
        _check_area(stream.width or 0, stream.height or 0, limits, modality, what="video frame")
        seconds = _stream_seconds(stream, container)
        if seconds is not None and seconds > limits.max_video_seconds:
            raise MediaTooLargeError(
                f"video is {seconds:.2f} s long, over the limit of {limits.max_video_seconds:g} s",
                modality=modality,
            )
        if stream.frames and stream.frames > limits.max_video_frames:
            raise MediaTooLargeError(
                f"video declares {stream.frames} frames, over the limit of {limits.max_video_frames} frames",
                modality=modality,
            )
    except BaseException:
        container.close()
        raise
    return container, stream


def _count_frames(data: bytes, limits: MediaLimits) -> int:
    """Count video packets without decoding them (for containers that do not declare a frame count)."""
    container, stream = _open_video(data, limits)
    count = 0
    with container:
        for packet in container.demux(stream):
            if packet.size:
                count += 1
                if count > limits.max_video_frames:
                    raise MediaTooLargeError(
                        f"video has more than {limits.max_video_frames} frames (the limit)", modality="video"
                    )
    return count


def _decode_selected(data: bytes, limits: MediaLimits, wanted: set[int]) -> tuple[dict[int, Image.Image], int]:
    """Decode frames in order, keeping those whose index is in ``wanted``; stop after the last wanted one.

    Returns the kept frames by index and how many frames were decoded.
    """
    container, stream = _open_video(data, limits)
    stream.thread_type = "AUTO"
    last = max(wanted) if wanted else limits.max_video_frames - 1
    kept: dict[int, Image.Image] = {}
    decoded = 0
    with container:
        try:
            for index, frame in enumerate(container.decode(stream)):
                decoded = index + 1
                if decoded > limits.max_video_frames:
                    raise MediaTooLargeError(
                        f"video has more than {limits.max_video_frames} frames (the limit)", modality="video"
                    )
                _check_area(frame.width, frame.height, limits, "video", what="video frame")
                if index in wanted:
                    kept[index] = frame.to_image().convert("RGB")
                if index >= last:
                    break
        except av.FFmpegError as exc:
            if not kept:
                raise InvalidMediaError(f"video data is corrupt: {exc}", modality="video") from exc
    return kept, decoded


def decode_video(data: bytes, limits: MediaLimits, num_frames: int = 5) -> list[Image.Image]:
    """Decode ``num_frames`` RGB frames sampled uniformly over a video (MP4, WebM, MKV, GIF, ... via PyAV).

    The frame count comes from the container's declaration or, when it has none, from counting packets
    (no decoding); frames are then decoded in order only up to the last sampled index. If the declared count
    was wrong (fewer frames than claimed), the sampling is redone over the true count. A video with fewer
    frames than ``num_frames`` yields all of its frames; one with none raises ``MediaTooSmallError``.
    """
    modality = "video"
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    _check_bytes(data, limits, modality)
    data = bytes(data)

    container, stream = _open_video(data, limits)
    declared = int(stream.frames or 0)
    container.close()
    total = declared if declared > 0 else _count_frames(data, limits)
    if total == 0:
        raise MediaTooSmallError("video contains no frames", modality=modality)

    indices = uniform_indices(total, num_frames)
    kept, decoded = _decode_selected(data, limits, set(indices))
    if len(kept) < len(indices) and 0 < decoded < total:
        # The container over-declared its frames: resample over the frames that really exist.
        indices = uniform_indices(decoded, num_frames)
        kept, decoded = _decode_selected(data, limits, set(indices))
    if not kept:
        raise MediaTooSmallError("video has no decodable frames", modality=modality)
    return [kept[i] for i in sorted(kept)]


# ------------------------------------------------------------------------------------------------------------------
# encoders (outputs and fixtures)
# ------------------------------------------------------------------------------------------------------------------
def encode_png(image: Image.Image) -> bytes:
    """Encode a PIL image as PNG bytes (mode kept; RGB, RGBA, L and P all round-trip)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def encode_wav(samples: np.ndarray, sample_rate: int) -> bytes:
    """Encode float samples in [-1, 1] (mono, shape ``(N,)`` or ``(N, 1)``) as a 16-bit PCM WAV file."""
    mono = np.asarray(samples, dtype=np.float32)
    if mono.ndim == 2 and mono.shape[1] == 1:
        mono = mono[:, 0]  # (N, 1) -> (N,)
    if mono.ndim != 1:
        raise ValueError(f"encode_wav expects mono samples of shape (N,), got {mono.shape}")
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(mono, -1.0, 1.0), int(sample_rate), format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _frames_to_uint8(frames: Sequence[Image.Image] | np.ndarray) -> list[np.ndarray]:
    """Frames as a list of ``(H, W, 3)`` uint8 arrays; float arrays are taken to be in [0, 1]."""
    if isinstance(frames, np.ndarray):
        array = frames
        if array.ndim == 3:  # (F, H, W) greyscale -> (F, H, W, 3)
            array = np.repeat(array[..., None], 3, axis=-1)
        if array.ndim != 4 or array.shape[-1] not in (3, 4):
            raise ValueError(f"video frames must have shape (F, H, W, 3), got {array.shape}")
        if np.issubdtype(array.dtype, np.floating):
            array = np.clip(array * 255.0 + 0.5, 0, 255)
        return [np.ascontiguousarray(f[..., :3].astype(np.uint8)) for f in array]
    out = [np.asarray(_to_rgb(frame)) for frame in frames]
    if not out:
        raise ValueError("cannot encode a video with no frames")
    return out


def encode_mp4(frames: Sequence[Image.Image] | np.ndarray, fps: int = 8) -> bytes:
    """Encode frames as an H.264 (libx264, yuv420p) MP4; odd sides are padded to even by edge replication."""
    arrays = _frames_to_uint8(frames)
    if not arrays:
        raise ValueError("cannot encode a video with no frames")
    height, width = arrays[0].shape[:2]
    pad_h, pad_w = height % 2, width % 2  # yuv420p subsamples chroma 2x2, so sides must be even
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.width, stream.height = width + pad_w, height + pad_h
        stream.pix_fmt = "yuv420p"
        # The same frames must give the same bytes (datasets, caches and tests compare them): one encoder thread
        # (x264 would pick a count from the machine's cores, and embeds it in the stream), and no macroblock-tree
        # rate control, whose lookahead made about one encode in a hundred differ in a process that had loaded torch.
        stream.options = {"crf": "18", "preset": "veryfast", "x264-params": "mbtree=0"}
        stream.codec_context.thread_count = 1
        for array in arrays:
            if array.shape[:2] != (height, width):
                raise ValueError(f"all frames must share one size; got {array.shape[:2]} after {(height, width)}")
            if pad_h or pad_w:
                array = np.pad(array, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):  # flush delayed frames
            container.mux(packet)
    return buffer.getvalue()


def encode_gif(frames: Sequence[Image.Image] | np.ndarray, fps: int = 8) -> bytes:
    """Encode frames as a looping animated GIF.

    Note that GIF stores durations in centiseconds and Pillow merges identical consecutive frames.
    """
    images = [Image.fromarray(array) for array in _frames_to_uint8(frames)]
    buffer = io.BytesIO()
    images[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=max(1, round(1000 / fps)),
        loop=0,
        disposal=1,
    )
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------------------------
# mime sniffing
# ------------------------------------------------------------------------------------------------------------------
def _is_mp3_frame(data: bytes) -> bool:
    # MPEG audio frame sync: 11 set bits, a non-reserved version, and layer bits != 00 (00 marks AAC ADTS).
    return len(data) >= 2 and data[0] == 0xFF and (data[1] & 0xE0) == 0xE0 and (data[1] & 0x06) != 0


def _matroska_mime(data: bytes) -> str:
    return "video/webm" if b"webm" in data[:64] else "video/x-matroska"


def _iso_bmff_mime(data: bytes) -> str:
    brand = data[8:12]
    return {b"M4A ": "audio/mp4", b"qt  ": "video/quicktime"}.get(brand, "video/mp4")


# (predicate, mime or mime-from-bytes), checked in order; JPEG precedes the looser MP3 frame-sync test.
_MAGIC: list[tuple[Callable[[bytes], bool], str | Callable[[bytes], str]]] = [
    (lambda d: d.startswith(b"\x89PNG\r\n\x1a\n"), "image/png"),
    (lambda d: d.startswith(b"\xff\xd8\xff"), "image/jpeg"),
    (lambda d: d[:6] in (b"GIF87a", b"GIF89a"), "image/gif"),
    (lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP", "image/webp"),
    (lambda d: d[:4] in (b"RIFF", b"RF64") and d[8:12] == b"WAVE", "audio/wav"),
    (lambda d: d.startswith(b"fLaC"), "audio/flac"),
    (lambda d: d.startswith(b"OggS"), "audio/ogg"),
    (lambda d: d.startswith(b"ID3") or _is_mp3_frame(d), "audio/mpeg"),
    (lambda d: d[4:8] == b"ftyp", _iso_bmff_mime),
    (lambda d: d.startswith(b"\x1a\x45\xdf\xa3"), _matroska_mime),
    (lambda d: d.startswith(b"BM"), "image/bmp"),
]


def sniff_mime(data: bytes) -> str | None:
    """Best-effort MIME type from magic bytes (PNG, JPEG, GIF, WebP, WAV, FLAC, OGG, MP3, MP4, WebM); else None."""
    head = bytes(data[:64])
    for matches, mime in _MAGIC:
        if matches(head):
            return mime(head) if callable(mime) else mime
    return None


# ------------------------------------------------------------------------------------------------------------------
# registry
# ------------------------------------------------------------------------------------------------------------------
DECODERS: Registry[Decoder] = Registry("media decoder", "mmgraph.decoders")
DECODERS.register("image", decode_image)
DECODERS.register("audio", decode_audio)
DECODERS.register("video", decode_video)


def decode(kind: str, data: bytes, limits: MediaLimits, **options: Any) -> Any:
    """Decode ``data`` with the decoder registered for ``kind`` (``image``, ``audio``, ``video`` or a plugin)."""
    return DECODERS.get(kind)(data, limits, **options)
