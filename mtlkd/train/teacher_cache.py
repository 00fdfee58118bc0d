"""The teachers' predictions on a user's unlabeled frames, computed once and kept on disk.

Each epoch of a distillation then costs only the student. The cache holds one entry for the frames (uint8
at the student's input size) and one per teacher (its targets, float16 class probabilities, float32 depth and
normals, at the teacher's own output grid), each a folder of `.npy` arrays opened memory-mapped:

* keyed: a frames entry by every source file's resolved path, size and modification time, the frame step
  and the student's input size; a teacher entry by the frames' key, the teacher file's SHA-256 and its
  settings. A changed teacher file or setting is a new key, so stale predictions are never read;
* resumable: `progress.json` says how many frames are done and is written (atomically) only after their
  rows are flushed, so an interrupted pass continues where it stopped;
* bounded: before an array is allocated, the cache's total size is checked against the limit and the
  disk's free space, and a pass that would exceed either stops with one line saying how much it needs;
* locked: one writer per entry (flock), so two distillations of the same frames cannot interleave rows.
  A second distillation is refused with one line; the ranks of one torchrun distillation (`wait`) queue
  instead: the first to take the locks makes the pass, and the others find it done and only read it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtlkd.errors import ConfigError, MediaError, UserError
from mtlkd.files import atomic_write_bytes
from mtlkd.runtime import processing
from mtlkd.runtime.media import expand_sources, open_video, read_image
from mtlkd.runtime.teachers import Teacher, TeacherSet

CACHE_VERSION = 1  # bump when what an entry holds changes: old entries then become unreachable keys
DTYPES = {"seg": np.float16, "depth": np.float32, "normal": np.float32}
CHUNK = 16  # frames per teacher call and per progress write


@dataclass(frozen=True)
class Frame:
    """One image file, or frame `index` of a video file."""

    path: str
    index: int | None = None

    @property
    def label(self) -> str:
        return self.path if self.index is None else f"{self.path} frame {self.index}"


def list_frames(sources: list[str | Path], frame_step: int = 1) -> list[Frame]:
    """SOURCE arguments as mtl-infer takes them (files, folders, globs, videos) -> every frame, in order;
    videos every `frame_step`-th frame. A name that matches nothing, or a camera, is one clear line."""
    if frame_step < 1:
        raise ConfigError(f"--frame-step {frame_step}: must be 1 or more")
    frames: list[Frame] = []
    for source in expand_sources([str(s) for s in sources]):
        if source.kind == "missing":
            raise MediaError(f"{source.path}: no such file, folder or glob match; pass images, folders or videos")
        if source.kind == "camera":
            raise MediaError(f"camera {source.camera}: a distillation needs a fixed set of frames; record a video")
        if source.kind == "video":
            with open_video(source) as video:
                count = 0
                while video.capture.grab():
                    count += 1
            frames.extend(Frame(source.path, i) for i in range(0, count, frame_step))
        else:
            frames.append(Frame(source.path))
    if not frames:
        raise MediaError(f"no images or video frames found in {', '.join(map(str, sources))}")
    return frames


def frames_key(frames: list[Frame], size: tuple[int, int]) -> str:
    """What identifies the frames without reading them: paths, sizes, modification times, the student size."""
    digest = hashlib.sha256(json.dumps({"version": CACHE_VERSION, "size": list(size)}).encode())
    stats: dict[str, tuple[int, int]] = {}
    for frame in frames:
        if frame.path not in stats:
            st = Path(frame.path).stat()
            stats[frame.path] = (st.st_size, st.st_mtime_ns)
        digest.update(json.dumps([str(Path(frame.path).resolve()), *stats[frame.path], frame.index]).encode())
    return digest.hexdigest()[:24]


def teacher_key(teacher: Teacher, frames: str) -> str:
    from mtlkd.files import sha256_of

    settings = {k: v for k, v in teacher.spec.settings().items() if k not in ("path", "backend")}
    text = json.dumps({"frames": frames, "sha256": sha256_of(teacher.spec.path), "settings": settings,
                       "version": CACHE_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def read_frames(frames: list[Frame], start: int = 0) -> Iterator[np.ndarray]:
    """RGB uint8 frames from `start` on; a video is read through once, keeping the listed frames."""
    i = start
    while i < len(frames):
        frame = frames[i]
        if frame.index is None:
            yield read_image(frame.path)
            i += 1
            continue
        wanted = {}
        while i < len(frames) and frames[i].path == frame.path and frames[i].index is not None:
            wanted[frames[i].index] = i
            i += 1
        last = max(wanted)
        with open_video(frame.path) as video:
            for index, rgb in enumerate(video):
                if index in wanted:
                    yield rgb
                if index >= last:
                    break
            else:
                if index < last:
                    raise MediaError(f"{frame.path}: ended at frame {index}, before frame {last}; was it changed?")


class Entry:
    """One cache folder: arrays, progress, lock."""

    def __init__(self, folder: Path, count: int):
        self.folder = folder
        self.count = count
        self.arrays: dict[str, np.ndarray] = {}

    @property
    def done(self) -> int:
        path = self.folder / "progress.json"
        if not path.is_file():
            return 0
        try:
            return int(json.loads(path.read_text())["done"])
        except (ValueError, KeyError, TypeError):
            return 0  # a damaged progress file: recompute

    def mark(self, done: int, info: dict[str, Any]) -> None:
        for array in self.arrays.values():
            if isinstance(array, np.memmap):
                array.flush()
        atomic_write_bytes(self.folder / "progress.json", json.dumps({"done": done, **info}).encode())

    def array(self, name: str, shape: tuple[int, ...], dtype: Any, cache: TeacherCache) -> np.ndarray:
        path = self.folder / f"{name}.npy"
        if path.is_file() and self.done > 0:
            array = np.load(path, mmap_mode="r+")
            if array.shape == shape and array.dtype == np.dtype(dtype):
                self.arrays[name] = array
                return array
        cache.reserve(int(np.prod(shape)) * np.dtype(dtype).itemsize, path)
        self.arrays[name] = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        return self.arrays[name]

    def open(self, name: str) -> np.ndarray:
        return np.load(self.folder / f"{name}.npy", mmap_mode="r")


class TeacherCache:
    """The folder of cache entries, with its size limit (bytes)."""

    def __init__(self, root: str | Path, limit_bytes: int):
        self.root = Path(root)
        self.limit = limit_bytes

    def used(self) -> int:
        return sum(p.stat().st_size for p in self.root.glob("*/*.npy")) if self.root.is_dir() else 0

    def reserve(self, nbytes: int, path: Path) -> None:
        used = self.used() - (path.stat().st_size if path.is_file() else 0)
        if used + nbytes > self.limit:
            raise UserError(f"the teacher cache {self.root} would hold {(used + nbytes) / 1e9:.2f} GB, over its "
                            f"limit of {self.limit / 1e9:.2f} GB; raise --cache-limit, use fewer frames "
                            f"(--frame-step), or delete old entries in {self.root}")
        free = shutil.disk_usage(self.root).free
        if nbytes > free:
            raise UserError(f"{path}: needs {nbytes / 1e9:.2f} GB but the disk has {free / 1e9:.2f} GB free; "
                            f"pass another --cache folder")

    @contextlib.contextmanager
    def entry(self, name: str, count: int, wait: bool = False) -> Iterator[Entry]:
        """The entry, locked for the block; held by another: an error, or with `wait` a wait for it."""
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(f"{folder}: another distillation is filling this cache entry; wait for it to "
                                f"end (the next run reuses its predictions)") from None
            try:
                yield Entry(folder, count)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class CachedTargets:
    """The frames and every teacher's targets, memory-mapped, ready for a Dataset."""

    images: np.ndarray  # N x 3 x H x W uint8
    targets: dict[str, np.ndarray]  # task -> N x C x h x w
    folders: dict[str, str]  # "frames" and each teacher's label -> its cache folder


def fill_cache(cache: TeacherCache, frames: list[Frame], teachers: TeacherSet, size: tuple[int, int],
               quiet: bool = False, wait: bool = False) -> CachedTargets:
    """Compute what is not cached yet (one pass over the frames for the image copy and every teacher that
    has rows missing), showing the pass with its rate and ETA; returns the filled arrays. `wait`: queue
    behind another process filling the same entries (the ranks of one run) instead of refusing."""
    from mtlkd.ui import progress_bar

    key = frames_key(frames, size)
    names = {"frames": f"frames-{key}", **{t.spec.label: f"teacher-{teacher_key(t, key)}" for t in teachers.teachers}}
    with contextlib.ExitStack() as stack:
        entries = {label: stack.enter_context(cache.entry(name, len(frames), wait))  # always in this order
                   for label, name in names.items()}
        start = min(entry.done for entry in entries.values())
        if start < len(frames):
            images = entries["frames"].array("images", (len(frames), 3, *size), np.uint8, cache)
            with progress_bar("frame", quiet=quiet) as bar:
                job = bar.add_task("teacher pass", total=len(frames) - start, info="")
                chunk: list[np.ndarray] = []
                position = start
                for rgb in read_frames(frames, start):
                    chunk.append(rgb)
                    if len(chunk) == CHUNK or position + len(chunk) == len(frames):
                        _fill_chunk(cache, entries, teachers, images, chunk, position, size)
                        position += len(chunk)
                        bar.update(job, advance=len(chunk), info="")
                        chunk = []
                if position < len(frames):
                    raise MediaError(f"read {position} of {len(frames)} frames; were the sources changed?")
        return CachedTargets(
            images=entries["frames"].open("images"),
            targets={task: entries[t.spec.label].open(task) for t in teachers.teachers for task in t.spec.tasks},
            folders={label: str(entry.folder) for label, entry in entries.items()},
        )


def _fill_chunk(cache: TeacherCache, entries: dict[str, Entry], teachers: TeacherSet, images: np.ndarray,
                chunk: list[np.ndarray], position: int, size: tuple[int, int]) -> None:
    end = position + len(chunk)
    if entries["frames"].done < end:
        batch, _ = processing.preprocess(chunk, size)
        images[position:end] = np.clip(np.rint(batch * 255.0), 0, 255).astype(np.uint8)
        entries["frames"].mark(end, {"count": len(images)})
    for teacher in teachers.teachers:
        entry = entries[teacher.spec.label]
        if entry.done >= end:
            continue
        targets = teacher.targets(chunk)
        for task, value in targets.items():
            array = entry.arrays.get(task)
            if array is None:
                array = entry.array(task, (entry.count, *value.shape[1:]), DTYPES[task], cache)
            if array.shape[1:] != value.shape[1:]:
                raise ConfigError(f"teacher {teacher.spec.label}: its {task} output changed shape from "
                                  f"{array.shape[1:]} to {value.shape[1:]} between batches")
            array[position:end] = value
        entry.mark(end, {"count": entry.count, "teacher": teacher.spec.settings()})
