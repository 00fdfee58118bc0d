"""Reading inputs: image modes, EXIF orientation, SOURCE expansion, videos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from mtlkd.errors import MediaError
from mtlkd.runtime.media import VideoReader, VideoWriter, expand_sources, read_image


def test_exif_orientation_is_applied(tmp_path):
    image = np.zeros((20, 30, 3), np.uint8)
    image[:5, :] = 255  # a white band along the top edge of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    Image.fromarray(image).save(tmp_path / "photo.jpg", exif=exif, quality=95)
    upright = read_image(tmp_path / "photo.jpg")
    assert upright.shape == (30, 20, 3)
    assert upright[:, -5:].mean() > 200 and upright[:, :5].mean() < 50  # the band is now on the right


def test_sixteen_bit_keeps_precision_as_float(tmp_path):
    values = (np.arange(12 * 16).reshape(12, 16) * 300).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "d16.png")
    as_float = read_image(tmp_path / "d16.png", as_float=True)
    np.testing.assert_allclose(as_float[..., 0], values / 65535.0, atol=1e-6)
    assert read_image(tmp_path / "d16.png").dtype == np.uint8


def test_palette_and_cmyk(tmp_path):
    Image.new("P", (6, 4), 3).save(tmp_path / "p.png")
    Image.new("CMYK", (6, 4), (0, 255, 0, 0)).save(tmp_path / "c.jpg")
    assert read_image(tmp_path / "p.png").shape == (4, 6, 3)
    assert read_image(tmp_path / "c.jpg").shape == (4, 6, 3)


def test_unreadable_files_name_themselves(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(MediaError, match="bad.png"):
        read_image(tmp_path / "bad.png")
    with pytest.raises(MediaError, match="no such file"):
        read_image(tmp_path / "gone.png")


def test_expand_sources(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ["b.png", "a.JPG", "clip.mp4", "notes.txt"]:
        (folder / name).write_bytes(b"")
    (folder / "sub").mkdir()
    kinds = [(s.kind, s.stem) for s in expand_sources([folder])]
    assert kinds == [("image", "a"), ("image", "b"), ("video", "clip")]
    assert [s.stem for s in expand_sources([str(folder / "*.png")])] == ["b"]
    camera = expand_sources(["0"])[0]
    assert camera.kind == "camera" and camera.camera == 0 and camera.stem == "camera0"
    assert [s.kind for s in expand_sources([tmp_path / "nothing.png", str(tmp_path / "*.gif")])] == ["missing"] * 2
    assert expand_sources([folder / "notes.txt"])[0].kind == "image"  # named explicitly: try to read it


def test_video_round_trip(tmp_path):
    with VideoWriter(tmp_path / "v.mp4", fps=12) as writer:
        for i in range(6):
            writer.write(np.full((24, 33, 3), 40 * i, np.uint8))  # odd width: trimmed to even
    with VideoReader(str(tmp_path / "v.mp4")) as reader:
        frames = list(reader)
        assert reader.fps == pytest.approx(12, abs=0.5)
    assert len(frames) == 6 and frames[0].shape == (24, 32, 3)
    with pytest.raises(MediaError, match="cannot open"):
        VideoReader(str(tmp_path / "missing.mp4"))
    assert cv2.VideoCapture(str(tmp_path / "v.mp4")).isOpened()


def test_open_video_takes_a_path_as_documented(tmp_path):
    from mtlkd.runtime.media import open_video

    with VideoWriter(tmp_path / "clip.mp4", fps=10) as writer:
        for i in range(4):
            writer.write(np.full((16, 20, 3), 50 * i, np.uint8))
    for source in (str(tmp_path / "clip.mp4"), tmp_path / "clip.mp4"):
        with open_video(source) as video:
            frames = list(video)
        assert len(frames) == 4 and frames[0].shape == (16, 20, 3) and frames[0].dtype == np.uint8
        assert video.frame_count == 4
    with pytest.raises(MediaError, match="no such video file"):
        open_video(tmp_path / "absent.mp4")
    with pytest.raises(MediaError, match="camera 97"):
        open_video(97)


def test_video_writer_keeps_the_earlier_file_when_it_fails_midway(tmp_path):
    target = tmp_path / "v.mp4"
    target.write_bytes(b"the earlier, complete video")
    with pytest.raises(RuntimeError), VideoWriter(target, fps=10) as writer:
        writer.write(np.zeros((16, 20, 3), np.uint8))
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"the earlier, complete video"
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]
    with VideoWriter(target, fps=10) as writer:
        writer.write(np.zeros((16, 20, 3), np.uint8))
    assert target.read_bytes() != b"the earlier, complete video" and len(list(tmp_path.iterdir())) == 1
