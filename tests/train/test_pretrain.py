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


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="forks the killed run")
def test_a_kill_between_the_state_and_its_json_resumes_exactly(tmp_path, cache, monkeypatch):
    """The pretraining state commits as a training's does (mtlkd.train.state): SIGKILL after epoch 2's tensors
    are in place but before state.json is rewritten still resumes after epoch 2, not 1 (issue 20, case 4)."""
    import os
    from pathlib import Path

    from train_helpers import killed_at_each

    import mtlkd.files

    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(mtlkd.files, "file_operation_hook", lambda op, path: seen.append((op, Path(path).name)))
    straight = pretrain(_options(tmp_path / "a", epochs=3))
    monkeypatch.setattr(mtlkd.files, "file_operation_hook", None)
    index = [i for i, step in enumerate(seen) if step == ("create", "state.json")][1]  # epoch 2's copy
    [status] = killed_at_each(pretrain, [(_options(tmp_path / "b", epochs=3), index)])
    assert os.WIFSIGNALED(status)
    resumed = pretrain(_options(tmp_path / "b", epochs=3, resume=True))
    a, b = load_file(str(straight)), load_file(str(resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
