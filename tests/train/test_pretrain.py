"""SimMIM pretraining: masks, resume, the checkpoint, and that every method's networks start from it."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from mtlkd.train import pretrain as pt
from mtlkd.train.pretrain import PretrainOptions, block_mask, patchify, pretrain


def test_block_mask_hides_the_ratio_in_whole_blocks():
    g = torch.Generator().manual_seed(0)
    mask = block_mask(5, (12, 16), 0.6, 2, g)
    assert mask.shape == (5, 192)
    assert mask.float().mean(1).tolist() == pytest.approx([0.6] * 5, abs=0.01)
    grid = mask.view(5, 12, 16)
    assert torch.equal(grid[:, ::2, ::2], grid[:, 1::2, 1::2])  # every 2x2 block is all hidden or all seen


def test_patchify_follows_the_token_order():
    x = torch.arange(2 * 3 * 4 * 8, dtype=torch.float32).view(2, 3, 4, 8)
    patches = patchify(x, 4)
    assert patches.shape == (2, 2, 48)
    assert torch.equal(patches[1, 1].view(4, 4, 3).permute(2, 0, 1), x[1, :, :, 4:8])


def _options(out, **kw):
    return PretrainOptions(**{**dict(out=str(out), preset="vit-nano", images=16, epochs=2, batch_size=8), **kw})


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MTLKD_CACHE", str(tmp_path / "cache"))


def test_pretraining_learns_resumes_exactly_and_writes_a_backbone(tmp_path, cache, monkeypatch):
    from mtlkd.checkpoint import read_metadata

    straight = pretrain(_options(tmp_path / "a", epochs=3))
    meta = read_metadata(straight)
    history = meta["pretraining"]["history"]
    assert meta["kind"] == "backbone" and meta["objective"] == "simmim" and len(history) == 3
    assert history[-1]["loss"] < history[0]["loss"]
    assert (tmp_path / "a" / "pretrain.png").stat().st_size > 1000

    save = pt._save_state

    def crash_after_first(out, model, optimizer, scheduler, epochs_done, hist):
        save(out, model, optimizer, scheduler, epochs_done, hist)
        raise KeyboardInterrupt

    monkeypatch.setattr(pt, "_save_state", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        pretrain(_options(tmp_path / "b", epochs=3))
    monkeypatch.undo()
    with pytest.raises(ValueError, match="--resume"):
        pretrain(_options(tmp_path / "b", epochs=3))  # never silently over an earlier run
    resumed = pretrain(_options(tmp_path / "b", epochs=3, resume=True))
    a, b = load_file(str(straight)), load_file(str(resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_every_methods_networks_start_from_the_checkpoint(tmp_path, cache):
    from train_helpers import nano_context

    from mtlkd.checkpoint import model_metadata, save_checkpoint
    from mtlkd.models import create_model, preset_config
    from mtlkd.train.methods import create_method

    backbone = load_file(str(pretrain(_options(tmp_path / "pt", epochs=1))))

    def starts_from_checkpoint(vit):
        own = vit.state_dict()
        return all(torch.equal(own[k], v) for k, v in backbone.items())

    teacher_dir = tmp_path / "teachers"
    for task in ("seg", "depth", "normal"):
        net = create_model(preset_config("vit-nano", [task], 13 if task == "seg" else None, arch="stl"))
        save_checkpoint(teacher_dir / f"stl_{task}.safetensors", net.state_dict(), model_metadata(net.config.to_dict()))
    mtl = create_model(preset_config("vit-nano", ["seg", "depth", "normal"], 13))
    save_checkpoint(tmp_path / "teacher.safetensors", mtl.state_dict(), model_metadata(mtl.config.to_dict()))

    weights = str(tmp_path / "pt" / "backbone.safetensors")
    cases = {"mtl": {}, "stl": {}, "okd": {}, "kd-mtl": {"teachers": [str(teacher_dir)]},
             "kdam": {"teacher": str(tmp_path / "teacher.safetensors")}, "cross-stitch": {}}
    for name, options in cases.items():
        ctx = nano_context(**options)
        ctx.backbone_weights = weights
        method = create_method(name, ctx)
        vits = [m.vit for m in method.nets.modules() if hasattr(m, "vit")]
        assert vits, name
        assert all(starts_from_checkpoint(vit) for vit in vits), name


def test_a_checkpoint_of_another_width_is_one_line(tmp_path, cache):
    from mtlkd.models import create_model, preset_config

    path = pretrain(_options(tmp_path / "pt", epochs=1))
    with pytest.raises(ValueError, match="do not fit") as info:
        create_model(preset_config("vit-micro", ["depth"]), str(path))
    assert "\n" not in str(info.value)


def test_pretrained_offline_says_which_file_to_pass(tmp_path, monkeypatch):
    import timm

    from mtlkd.models.pretrained import pretrained_backbone

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(ValueError, match="--backbone-weights") as info:
        pretrained_backbone("vit-tiny", cache=tmp_path)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="no pretrained backbone"):
        pretrained_backbone("vit-nano", cache=tmp_path)


def test_another_input_size_and_quiet(tmp_path, cache, capsys):
    """--img-size pretrains at that size (its position embedding fits the grid), --quiet prints nothing;
    sizes that are not whole patches or are too small are one line each."""
    from mtlkd.errors import ConfigError

    path = pretrain(_options(tmp_path / "wide", epochs=1, img_size=(16, 48), quiet=True, device="cpu"))
    assert load_file(str(path))["pos_embed"].shape == (1, 1 + 2 * 6, 32)
    assert capsys.readouterr().err == ""
    with pytest.raises(ConfigError, match="not a multiple of the 8-pixel patches"):
        pretrain(_options(tmp_path / "odd", img_size=(20, 48)))
    with pytest.raises(ConfigError, match="--img-size 4x48"):
        _options(tmp_path / "small", img_size=(4, 48))


def test_a_second_pretraining_into_a_locked_folder_is_one_line(tmp_path, cache):
    """The trainer's lock: one run per folder, refused before any scene is rendered."""
    from mtlkd.errors import UserError
    from mtlkd.train.runfolder import run_lock

    out = tmp_path / "pt"
    with run_lock(out), pytest.raises(UserError, match="is writing into this folder") as info:
        pretrain(_options(out, epochs=1))
    assert "\n" not in str(info.value) and not (tmp_path / "cache").exists()


def test_a_damaged_state_is_one_line_naming_it(tmp_path, cache):
    from mtlkd.errors import CheckpointError

    out = tmp_path / "pt"
    pretrain(_options(out, epochs=1))
    (out / "state.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="state.safetensors: corrupt pretraining state") as info:
        pretrain(_options(out, epochs=2, resume=True))
    assert "\n" not in str(info.value)


def _pretraining_result(out) -> dict:
    import json

    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    for record in history:
        record.pop("seconds")  # a wall-clock time, the one thing a repeat may change
    return {"tensors": {name: load_file(str(out / name)) for name in ("state.safetensors", "backbone.safetensors")},
            "history": history, "state": json.loads((out / "state.json").read_text())}


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="forks the killed runs")
def test_a_kill_at_every_file_operation_resumes_exactly(tmp_path, cache, monkeypatch):
    """Pretraining commits as a training does (mtlkd.train.state): SIGKILL before any file operation, from
    pretrain.json to the last picture, then `--resume`, ends with the bytes of an uninterrupted run and
    every epoch once in its history."""
    import dataclasses
    import os
    import signal
    from pathlib import Path

    from train_helpers import killed_at_each

    import mtlkd.files

    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(mtlkd.files, "file_operation_hook", lambda op, path: seen.append((op, Path(path).name)))
    reference = _options(tmp_path / "straight", images=8, epochs=2, quiet=True, device="cpu")
    pretrain(reference)
    monkeypatch.setattr(mtlkd.files, "file_operation_hook", None)
    expected = _pretraining_result(tmp_path / "straight")
    assert [r["epoch"] for r in expected["history"]] == [1, 2]
    names = {name for _, name in seen}
    assert {"pretrain.json", "state.safetensors", "state.json", "history.jsonl", "backbone.safetensors",
            "pretrain.png"} <= names, names
    runs = [dataclasses.replace(reference, out=str(tmp_path / f"kill{index}")) for index in range(len(seen))]
    statuses = killed_at_each(pretrain, [(run, index) for index, run in enumerate(runs)])
    for index, (run, status) in enumerate(zip(runs, statuses, strict=True)):
        where = f"killed before {seen[index]}"
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, where
        pretrain(dataclasses.replace(run, resume=True))
        out = Path(run.out)
        got = _pretraining_result(out)
        assert [p.name for p in out.iterdir() if ".tmp" in p.name] == [], where  # the killed writer's are gone
        assert got["history"] == expected["history"] and got["state"] == expected["state"], where
        for file, tensors in expected["tensors"].items():
            assert got["tensors"][file].keys() == tensors.keys(), (where, file)
            assert all(torch.equal(got["tensors"][file][k], v) for k, v in tensors.items()), (where, file)
