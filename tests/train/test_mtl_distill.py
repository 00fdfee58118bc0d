"""mtl-distill end to end on tiny data: teachers of every kind, the cache, the losses, resume, and that the
training never opens a label file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mtlkd.errors import ConfigError

sys.path.insert(0, str(Path(__file__).parent))
from distill_helpers import CLASSES, foreign_onnx, nano_checkpoint, write_frames  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny synthetic data, its training images as PNG frames, and three teachers: a foreign ONNX seg model
    (logits, its own class file), a foreign ONNX inverse-depth model, an mtlkd normal checkpoint."""
    from mtlkd.data.synthetic import write_synthetic

    root = tmp_path_factory.mktemp("distill")
    data = write_synthetic(root / "syn", 16, 8, size=(32, 32), seed=3, progress=False)
    frames = write_frames(data, root / "frames")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    seg = foreign_onnx(root / "seg.onnx", 13, output="logits")
    depth = foreign_onnx(root / "depth.onnx", 1, activation="Softplus", scale=3.0, shift=0.5, seed=1)
    normal = nano_checkpoint(root / "normal", ["normal"])
    teachers = [f"seg={seg},size=32x32,mean=0/0/0,std=1/1/1,seg=logits,classes={root / 'classes.txt'}",
                f"depth={depth},size=32x32,mean=0.5/0.5/0.5,std=0.5/0.5/0.5,depth=inverse",
                f"normal={normal}"]
    return {"root": root, "data": data, "frames": frames, "teachers": teachers, "seg": seg, "depth": depth}


def distill_options(world, out: Path, **train):
    from mtlkd.train.distill_run import DistillRunOptions
    from mtlkd.train.options import TrainOptions

    base = dict(out=str(out), preset="vit-nano", img_size=[32, 32], epochs=2, batch_size=4, seed=1, device="cpu",
                quiet=True)
    return DistillRunOptions(sources=[str(world["frames"])], teachers=list(world["teachers"]),
                             train=TrainOptions(**{**base, **train}), cache=str(world["root"] / "cache"))


def test_a_foreign_teacher_without_its_settings_is_refused_naming_them(world):
    from mtlkd.runtime.teachers import load_teacher, parse_teacher

    with pytest.raises(ConfigError) as caught:
        load_teacher(parse_teacher(f"seg={world['seg']},size=32x32"))
    message = str(caught.value)
    assert "\n" not in message and str(world["seg"]) in message
    for name in ("mean=", "std=", "seg=", "classes="):
        assert name in message
    assert "size=" not in message.split("needs")[1]  # given, so not asked for
    with pytest.raises(ConfigError, match="needs size=, mean=, std=, depth="):
        load_teacher(parse_teacher(f"depth={world['depth']}"))


def test_wrong_class_count_or_output_shape_is_caught_on_the_first_batch(world, tmp_path):
    from mtlkd.runtime.teachers import load_teacher, parse_teacher

    frames = [np.random.default_rng(0).random((40, 50, 3), dtype=np.float32) for _ in range(3)]
    (tmp_path / "twelve.txt").write_text("\n".join(CLASSES[:12]))
    teacher = load_teacher(parse_teacher(f"seg={world['seg']},size=32x32,mean=0/0/0,std=1/1/1,seg=logits,"
                                         f"classes={tmp_path / 'twelve.txt'}"))
    with pytest.raises(ConfigError, match="seg output has 13 channels, expected 12 classes"):
        teacher.targets(frames)
    three = foreign_onnx(tmp_path / "three.onnx", 3)
    teacher = load_teacher(parse_teacher(f"depth={three},size=32x32,mean=0/0/0,std=1/1/1,depth=metric"))
    with pytest.raises(ConfigError, match="depth output has 3 channels, expected 1 channel"):
        teacher.targets(frames)
    probs = load_teacher(parse_teacher(f"seg={world['seg']},size=32x32,mean=0/0/0,std=1/1/1,seg=probs,"
                                       f"classes={world['root'] / 'classes.txt'}"))
    with pytest.raises(ConfigError, match="do not sum to 1"):  # logits declared as probabilities
        probs.targets(frames)
    with pytest.raises(ConfigError, match="size=64x64, but the graph's input is 32x32"):
        load_teacher(parse_teacher(f"depth={three},size=64x64,mean=0/0/0,std=1/1/1,depth=metric"))


def test_the_affine_invariant_loss_ignores_the_teachers_scale_and_shift():
    from mtlkd.train.soft_targets import ssi_loss

    g = torch.Generator().manual_seed(0)
    target = torch.rand(3, 1, 24, 32, generator=g) * 4 + 0.5
    pred = target + 0.05 * torch.randn(3, 1, 24, 32, generator=g)  # a student close to the teacher
    base = ssi_loss(pred, target)
    # float32 normalisation: each map's values are O(10) after the affine map, eps 1.2e-7, so the loss moves
    # by ~1e-6 relative; 1e-4 leaves two orders of magnitude and still sees any real dependence (next lines).
    for scale, shift in ((3.0, 5.0), (0.01, -2.0), (250.0, 0.0)):
        assert ssi_loss(pred, scale * target + shift).item() == pytest.approx(base.item(), rel=1e-4)
    assert ssi_loss(pred, target**2).item() > 3 * base.item()  # not an affine map: the loss sees it
    assert ssi_loss(2 * target + 1, target).item() == pytest.approx(0.0, abs=1e-5)  # affine copy: no loss


def test_a_changed_teacher_file_invalidates_the_cache(world, tmp_path, monkeypatch):
    from mtlkd.runtime import teachers as teachers_module
    from mtlkd.runtime.teachers import load_teachers, parse_teacher
    from mtlkd.train.teacher_cache import TeacherCache, fill_cache, list_frames

    model = foreign_onnx(tmp_path / "seg.onnx", 13, seed=5)
    spec = f"seg={model},size=32x32,mean=0/0/0,std=1/1/1,seg=logits,classes={world['root'] / 'classes.txt'}"
    cache = TeacherCache(tmp_path / "cache", 10**9)
    frames = list_frames([world["frames"]])
    calls = []
    original = teachers_module.Teacher.run
    monkeypatch.setattr(teachers_module.Teacher, "run", lambda self, batch: calls.append(1) or original(self, batch))
    first = fill_cache(cache, frames, load_teachers([parse_teacher(spec)]), (32, 32), quiet=True)
    before = np.array(first.targets["seg"])
    assert len(calls) == 1 and before.shape == (16, 13, 32, 32)
    np.testing.assert_allclose(before.sum(axis=1), 1.0, atol=1e-2)  # float16 probabilities
    again = fill_cache(cache, frames, load_teachers([parse_teacher(spec)]), (32, 32), quiet=True)
    assert len(calls) == 1 and np.array_equal(np.array(again.targets["seg"]), before)  # reused, not recomputed
    foreign_onnx(model, 13, seed=6)  # the same path, other weights
    changed = fill_cache(cache, frames, load_teachers([parse_teacher(spec)]), (32, 32), quiet=True)
    assert len(calls) == 2
    assert changed.folders[parse_teacher(spec).label] != first.folders[parse_teacher(spec).label]
    assert not np.array_equal(np.array(changed.targets["seg"]), before)


def test_the_cache_limit_stops_the_pass_in_one_line(world, tmp_path):
    from mtlkd.errors import UserError
    from mtlkd.runtime.teachers import load_teachers, parse_teacher
    from mtlkd.train.teacher_cache import TeacherCache, fill_cache, list_frames

    teachers = load_teachers([parse_teacher(world["teachers"][0])])
    with pytest.raises(UserError, match=r"would hold .* GB, over its limit .*--cache-limit"):
        fill_cache(TeacherCache(tmp_path / "small", 20_000), list_frames([world["frames"]]), teachers, (32, 32),
                   quiet=True)


def test_a_student_keeps_the_teachers_classes_and_says_its_depth_is_relative(world, tmp_path):
    from mtlkd.checkpoint import read_metadata
    from mtlkd.train.distill_run import distill

    result = distill(distill_options(world, tmp_path / "run", epochs=1))
    meta = read_metadata(result.out / "model.safetensors")
    assert meta["class_names"] == CLASSES and meta["tasks"] == ["seg", "depth", "normal"]
    assert meta["depth_meaning"] == "relative-inverse" and meta["method"] == "distill"
    assert [t["tasks"] for t in meta["distilled_from"]] == [["seg"], ["depth"], ["normal"]]
    history = [json.loads(line) for line in (result.out / "history.jsonl").read_text().splitlines()]
    assert set(history[0]["val"]["mtl"]["metrics"]) == {"seg", "depth", "normal"}  # agreement on held-out frames
    assert set(result.agreement) >= {"epoch", "seg", "depth", "normal"}


def test_resume_ends_bit_identical(world, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    import mtlkd.train.plots as plots
    from mtlkd.train.distill_run import distill

    straight = distill(distill_options(world, tmp_path / "straight")).out
    monkeypatch.setattr(plots, "plot_history", lambda run: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):  # after epoch 1's state is saved
        distill(distill_options(world, tmp_path / "resumed"))
    monkeypatch.undo()
    resumed = distill(distill_options(world, tmp_path / "resumed", resume=True)).out
    a, b = load_file(str(straight / "state.safetensors")), load_file(str(resumed / "state.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [json.loads(line)["epoch"] for line in (resumed / "history.jsonl").read_text().splitlines()] == [1, 2]


def test_mtl_distill_never_opens_a_label_file(world, tmp_path):
    """Every file the command opens is recorded (Python's audit hook sees each open); none is under the
    dataset folder, whose label, depth and normal maps sit beside the images the frames came from."""
    from typer.testing import CliRunner

    from mtlkd.cli.distill import app

    opened: list[str] = []
    recording = [True]

    def hook(event, args):
        if recording[0] and event == "open" and isinstance(args[0], str | Path):
            opened.append(str(Path(args[0]).resolve()))

    sys.addaudithook(hook)  # cannot be removed: it stops recording below
    try:
        argv = [str(world["frames"]), *[a for t in world["teachers"] for a in ("--teacher", t)],
                "--preset", "vit-nano", "--img-size", "32x32", "--epochs", "1", "--batch-size", "4",
                "--device", "cpu", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "run"), "--quiet"]
        result = CliRunner().invoke(app, argv)
    finally:
        recording[0] = False
    assert result.exit_code == 0, result.output
    frames = [p for p in opened if p.startswith(str(world["frames"].resolve()))]
    assert len(set(frames)) == 16  # it did read the frames (so the hook saw the run)
    data = str(world["data"].resolve())
    assert not [p for p in opened if p.startswith(data)]


def test_the_benchmark_finds_a_teacher_agrees_with_itself(world):
    from mtlkd.bench.replace import ReplaceBenchOptions, run_replace_benchmark
    from mtlkd.runtime.teachers import parse_teacher

    normal = world["root"] / "normal" / "model.safetensors"
    result = run_replace_benchmark(ReplaceBenchOptions(student=normal, teachers=[parse_teacher(f"normal={normal}")],
                                                       threads=1, data_dir=world["data"], images=4, budget=0.2))
    agreement = result["agreement"][f"normal={normal}"]["normal"]
    assert agreement["mean_angle_to_teacher"] < 0.05  # identical outputs: float32 rounding of unit vectors
    assert result["ratio"] > 0 and result["student"]["chosen"]["kept_accuracy"]


def test_normals_in_another_axis_convention_come_out_in_mtlkds_frame():
    from mtlkd.runtime.teachers import make_spec, to_mtlkd_normals

    ours = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype(np.float32)
    ours /= np.linalg.norm(ours, axis=1, keepdims=True)
    theirs = np.stack([ours[:, 2], -ours[:, 0], -ours[:, 1]], axis=1)  # their x = our z, y = -our x, z = -our y
    np.testing.assert_allclose(to_mtlkd_normals(theirs, "z,-x,-y"), ours, atol=1e-6)
    assert make_spec(("normal",), "n.onnx", {"normal": "z-x-y"}).normal == "z,-x,-y"  # commas optional
    with pytest.raises(ConfigError, match="name each of x, y, z once"):
        make_spec(("normal",), "n.onnx", {"normal": "x,x,z"})


def test_an_interrupted_teacher_pass_continues_where_it_stopped(world, tmp_path, monkeypatch):
    import mtlkd.train.teacher_cache as cache_module
    from mtlkd.runtime import teachers as teachers_module
    from mtlkd.runtime.teachers import load_teachers, parse_teacher
    from mtlkd.train.teacher_cache import TeacherCache, fill_cache, list_frames

    frames = list_frames([world["frames"]])
    spec = world["teachers"][1]
    monkeypatch.setattr(cache_module, "CHUNK", 4)  # the same batches in both passes: the same numbers, bit for bit
    whole = fill_cache(TeacherCache(tmp_path / "whole", 10**9), frames, load_teachers([parse_teacher(spec)]),
                       (32, 32), quiet=True)
    seen: list[int] = []
    original = teachers_module.Teacher.run

    def run(self, batch):
        if len(seen) == 2:
            raise KeyboardInterrupt  # the third chunk never finishes
        seen.append(len(batch))
        return original(self, batch)

    monkeypatch.setattr(teachers_module.Teacher, "run", run)
    cache = TeacherCache(tmp_path / "parts", 10**9)
    with pytest.raises(KeyboardInterrupt):
        fill_cache(cache, frames, load_teachers([parse_teacher(spec)]), (32, 32), quiet=True)
    monkeypatch.setattr(teachers_module.Teacher, "run", lambda self, batch: seen.append(len(batch)) or
                        original(self, batch))
    resumed = fill_cache(cache, frames, load_teachers([parse_teacher(spec)]), (32, 32), quiet=True)
    assert seen == [4, 4, 4, 4]  # 8 frames before the interruption, only the other 8 after it
    np.testing.assert_array_equal(np.array(resumed.targets["depth"]), np.array(whole.targets["depth"]))
    np.testing.assert_array_equal(np.array(resumed.images), np.array(whole.images))


def test_the_benchmark_refuses_mixed_stl_forms_in_one_line(world):
    from typer.testing import CliRunner

    from mtlkd.cli.bench import app

    normal = world["root"] / "normal" / "model.safetensors"
    result = CliRunner().invoke(app, [str(normal), "--stl", f"normal={normal}", "--stl", str(normal)])
    assert result.exit_code == 2 and "give every --stl as TASKS=MODEL" in result.output
    result = CliRunner().invoke(app, ["--stl", f"normal={normal}"])
    assert result.exit_code == 2 and "pass the student as MODEL" in result.output


def test_resized_targets_decide_classes_as_resized_logits_do():
    from mtlkd.runtime.processing import resize_raw
    from mtlkd.runtime.teachers import targets_at

    logits = np.random.default_rng(0).normal(0, 3, (2, 13, 6, 8)).astype(np.float32)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    by_logits = resize_raw({"seg": logits}, (48, 64))["seg"].argmax(axis=1)
    ours = targets_at({"seg": probs}, (48, 64))["seg"].argmax(axis=1)
    # the same decision but where two classes tie within float32 rounding of the log (~1e-6): none expected
    # among 6,144 pixels with logits spread over +-9
    assert (ours == by_logits).mean() > 0.999
    by_probs = resize_raw({"seg": probs}, (48, 64))["seg"].argmax(axis=1)
    assert (by_probs != by_logits).sum() > 0  # resizing probabilities decides otherwise near boundaries


@pytest.mark.slow
def test_mtl_distill_under_torchrun_fills_the_cache_once_and_rank_0_writes_the_run(world, tmp_path):
    """Both ranks open the same cache entries: the second waits for the first's teacher pass and reads it
    (before, it was refused as "another distillation", or read metrics.json before rank 0 had written it)."""
    import os
    import subprocess

    out, cache = tmp_path / "run", tmp_path / "cache"
    teachers = [arg for spec in world["teachers"] for arg in ("--teacher", spec)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "mtlkd.cli.distill", str(world["frames"]), *teachers, "--preset", "vit-nano", "--img-size", "32x32",
           "--epochs", "1", "--batch-size", "2", "--device", "cpu", "--out", str(out), "--cache", str(cache),
           "--quiet"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert done.stdout.count("run folder:") == 1  # rank 0 prints the run; rank 1 nothing
    summary = json.loads((out / "replace.json").read_text())
    assert summary["frames"] == 16 and set(summary["agreement"]) >= {"seg", "depth", "normal"}
    entries = sorted(folder.name.split("-")[0] for folder in cache.iterdir())
    assert entries == ["frames", "teacher", "teacher", "teacher"]
    for folder in cache.iterdir():
        assert json.loads((folder / "progress.json").read_text())["done"] == 16
