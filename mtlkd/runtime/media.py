"""Reading what people point the runtime at: image files, folders, globs, videos and cameras.

Images are read with Pillow and turned upright with their EXIF orientation (phone photos are stored
sideways with a rotation tag; OpenCV's reader ignores EXIF unless asked). Every mode becomes RGB:
grey, palette and grey+alpha are expanded, alpha is dropped, CMYK converted, and 16-bit grey images (I;16
PNGs and TIFFs) keep their precision as float or are scaled to uint8. (Pillow reads 16-bit RGB PNGs as
8-bit RGB; that precision is lost, which the 8-bit-trained networks do not notice.)
Videos and cameras are read with OpenCV and yield RGB frames.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtlkd.errors import MediaError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm", ".gif"}
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


@dataclass(frozen=True)
class Source:
    """One thing to run on: kind is "image", "video", "camera" or "missing" (a name that matched nothing)."""

    kind: str
    path: str
    camera: int | None = None

    @property
    def stem(self) -> str:
        return f"camera{self.camera}" if self.kind == "camera" else Path(self.path).stem


def _grey_to_rgb(values: np.ndarray, scale: float, as_float: bool) -> np.ndarray:
    values = values.astype(np.float32) * np.float32(1.0 / scale)
    grey = np.clip(values, 0.0, 1.0)
    if not as_float:
        grey = (grey * 255.0 + 0.5).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def read_image(path: str | Path, as_float: bool = False) -> np.ndarray:
    """An image file as upright H x W x 3 RGB: uint8, or float32 in [0, 1] with `as_float` (which keeps
    16-bit precision). Raises MediaError naming the file when it is not a readable image."""
    path = Path(path)
    try:
        return _decode(path, as_float)
    except FileNotFoundError:
        raise MediaError(f"{path}: no such file") from None
    except Exception as exc:  # noqa: BLE001  a decoder may raise anything on a hostile file; it is one bad input
        text = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise MediaError(f"{path}: not a readable image ({exc.__class__.__name__}: {text})") from None


def _decode(path: Path, as_float: bool) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        img.load()
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(img)
        if mode == "F":
            high = float(values.max()) if values.size else 0.0
            scale = 1.0 if high <= 1.0 else (255.0 if high <= 255.0 else 65535.0)
        elif mode == "I" and values.size and values.max() <= 255:
            scale = 255.0
        else:
            scale = 65535.0
        return _grey_to_rgb(values, scale, as_float)
    if mode != "RGB":
        img = img.convert("RGB")  # L, LA, P, PA, RGBA, CMYK, YCbCr, 1 ...
    array = np.asarray(img, dtype=np.uint8)
    return array.astype(np.float32) * np.float32(1.0 / 255.0) if as_float else np.ascontiguousarray(array)


def expand_sources(items: list[str | Path]) -> list[Source]:
    """SOURCE arguments -> sources, in order: an image or video file; a folder (its images and videos,
    sorted, not recursive); a glob pattern ("frames/*.png", "**/*.jpg"); a camera index ("0").
    A name that matches nothing becomes a Source of kind "missing" so the caller can report it."""
    sources: list[Source] = []
    for item in items:
        text = str(item)
        if text.isdigit() and not Path(text).exists():
            sources.append(Source("camera", text, int(text)))
            continue
        path = Path(text)
        if path.is_dir():
            # hidden files are not the user's pictures: a killed writer's `.x.png.123.0.tmp.png` among them
            files = sorted(p for p in path.iterdir()
                           if p.is_file() and not p.name.startswith(".") and classify(p) != "other")
            sources.extend(Source(classify(p), str(p)) for p in files)
        elif path.is_file():
            kind = classify(path)
            sources.append(Source("image" if kind == "other" else kind, str(path)))
        elif any(ch in text for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
            matches = [p for p in matches if p.is_file() and classify(p) != "other"]
            sources.extend(Source(classify(p), str(p)) for p in matches)
            if not matches:
                sources.append(Source("missing", text))
        else:
            sources.append(Source("missing", text))
    return sources


def classify(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    return "other"


class VideoReader:
    """RGB frames of a video file or a camera (an int index), with its frame rate (25 when the file does
    not say) and, for files, its frame count. Iterate it; close it, or use it in a `with` block."""

    def __init__(self, source: str | int):
        import cv2

        self.source = source
        self.capture = cv2.VideoCapture(source)
        if not self.capture.isOpened():
            what = f"camera {source}" if isinstance(source, int) else str(source)
            raise MediaError(f"{what}: cannot open it as a video")
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 else 25.0
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = count if count > 0 and not isinstance(source, int) else None

    def __iter__(self) -> Iterator[np.ndarray]:
        import cv2

        while True:
            ok, frame = self.capture.read()
            if not ok:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self.capture.release()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def open_video(source: str | Path | int | Source) -> VideoReader:
    """A video file or camera, ready to iterate as RGB frames:

        with open_video("clip.mp4") as video:      # or open_video(0) / open_video("0") for a camera
            for frame in video:                    # H x W x 3 uint8 RGB
                ...
        video.fps, video.frame_count               # frame count None for cameras and unknown lengths

    Raises MediaError naming the file when it does not exist or OpenCV cannot decode it."""
    if isinstance(source, Source):
        return VideoReader(source.camera if source.kind == "camera" else source.path)
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit() and not Path(source).exists()):
        return VideoReader(int(source))
    path = Path(source)
    if not path.is_file():
        raise MediaError(f"{path}: no such video file" + (" (a folder)" if path.is_dir() else ""))
    return VideoReader(str(path))


class VideoWriter:
    """Writes RGB frames to an .mp4 (mp4v) at `fps`; the frame size is fixed by the first frame, later
    frames are resized to it. The video is written beside `path` and renamed into place on close, so an
    earlier file of that name stays whole until the new one is complete:

        with VideoWriter("out.mp4", fps=25) as video:
            video.write(rgb_frame)                 # H x W x 3 uint8 RGB
    """

    def __init__(self, path: str | Path, fps: float):
        self.path, self.fps, self.writer, self.size, self.frames = Path(path), fps, None, None, 0
        self.tmp: Path | None = None

    def write(self, frame: np.ndarray) -> None:
        import cv2

        if self.writer is None:
            self.size = (frame.shape[1] // 2 * 2, frame.shape[0] // 2 * 2)  # even sizes for most codecs
            from mtlkd.files import temporary_beside

            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = temporary_beside(self.path, ".mp4")
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter.fourcc(*"mp4v"), self.fps, self.size)
            if not self.writer.isOpened():
                self.tmp.unlink(missing_ok=True)
                raise MediaError(f"{self.path}: OpenCV cannot write an mp4 video here")
        if (frame.shape[1], frame.shape[0]) != self.size:
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        """Finish the file, check it holds every frame written, and move it into place (a video with no
        frame leaves nothing behind). OpenCV reports no write error: a full disk gives a truncated file
        without its index, which the check finds, so the earlier video of that name stays."""
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        if self.tmp is not None and self.tmp.exists():
            import os

            try:
                self._check_frames()
                os.replace(self.tmp, self.path)
            finally:
                self.tmp.unlink(missing_ok=True)
        self.tmp = None

    def _check_frames(self) -> None:
        import errno

        import cv2

        from mtlkd.files import disk_full

        capture = cv2.VideoCapture(str(self.tmp))
        try:
            found = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if capture.isOpened() else 0
        finally:
            capture.release()
        if found != self.frames:
            why = f"the video written holds {found} of its {self.frames} frames"
            if disk_full(self.tmp):
                raise OSError(errno.ENOSPC, f"No space left on device ({why})", str(self.path))
            raise MediaError(f"{self.path}: {why}; nothing was replaced, write it again or elsewhere")

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is not None and self.tmp is not None:  # an error midway: keep the earlier file, drop this one
            if self.writer is not None:
                self.writer.release()
                self.writer = None
            self.tmp.unlink(missing_ok=True)
            self.tmp = None
        self.close()
