"""KDAM: a frozen multi-task teacher, alpha L_mt + beta L_CSKD, and the teacher checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from train_helpers import run_steps

from mtlkd.checkpoint import model_metadata, save_checkpoint
from mtlkd.models import create_model, preset_config
from mtlkd.train.methods import create_method
from mtlkd.train.methods.base import MethodContext, unwrap

TASKS = ["seg", "depth", "normal"]
NUM_CLASSES = 5


def _batch(b=4, size=(32, 32), seed=0):
    g = torch.Generator().manual_seed(seed)
    seg = torch.randint(0, NUM_CLASSES, (b, *size), generator=g)
    seg[:, :2] = -1
    return {
        "image": torch.rand(b, 3, *size, generator=g),
        "seg": seg,
        "depth": torch.rand(b, 1, *size, generator=g) * 4 + 0.5,
        "normal": F.normalize(torch.randn(b, 3, *size, generator=g), dim=1),
    }


def _save_net(path, tasks=TASKS, preset="vit-nano", img_size=None, seed=1):
    torch.manual_seed(seed)
    config = preset_config(preset, tasks, NUM_CLASSES, img_size=img_size)
    net = create_model(config)
    save_checkpoint(path, net.state_dict(), model_metadata(config))
    return net


def _ctx(**options):
    config = preset_config("vit-nano", TASKS, NUM_CLASSES)
    return MethodContext(config=config, tasks=TASKS, num_classes=NUM_CLASSES, class_names=None,
                         device=torch.device("cpu"), options=options)


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("kdam") / "model.safetensors"
    _save_net(path)
    return path


def test_missing_teacher_says_how_to_get_one():
    with pytest.raises(ValueError, match="--method mtl") as info:
        create_method("kdam", _ctx())
    assert "\n" not in str(info.value) and "--teacher" in str(info.value)


def test_teacher_must_cover_the_student_tasks(tmp_path):
    path = tmp_path / "seg_depth.safetensors"
    _save_net(path, tasks=["seg", "depth"])
    with pytest.raises(ValueError, match="not normal"):
        create_method("kdam", _ctx(teacher=str(path)))


def test_unknown_kd_is_rejected(teacher_path):
    with pytest.raises(ValueError, match="cs"):
        create_method("kdam", _ctx(teacher=str(teacher_path), kd="mse"))


def test_teacher_is_frozen_and_outside_the_trainable_networks(teacher_path):
    method = create_method("kdam", _ctx(teacher=str(teacher_path)))
    assert list(method.nets) == ["mtl"]
    assert not any(p.requires_grad for p in method.teacher.parameters())
    assert not method.teacher.training
    method.train(True)
    assert not method.teacher.training and method.nets["mtl"].training
    trainable = {id(p) for g in method.parameter_groups(1e-3) for p in g["params"]}
    assert not trainable & {id(p) for p in method.teacher.parameters()}
    # a run folder holding model.safetensors works as well
    assert create_method("kdam", _ctx(teacher=str(teacher_path.parent))).teacher_path == teacher_path


def test_paper_defaults(teacher_path):
    method = create_method("kdam", _ctx(teacher=str(teacher_path)))
    assert (method.kd, method.alpha, method.beta, method.temperature) == ("cs", 1.0, 1.0, 3.0)
    assert create_method("kdam", _ctx(teacher=str(teacher_path), kd="dist")).temperature == 1.0


@pytest.mark.parametrize("kd", ["cs", "kl", "dist"])
def test_total_is_alpha_times_mtl_loss_when_student_equals_teacher(teacher_path, kd):
    method = create_method("kdam", _ctx(teacher=str(teacher_path), kd=kd, alpha=2.0, beta=3.0))
    unwrap(method.nets["mtl"]).load_state_dict(method.teacher.state_dict())
    method.train(True)
    total, logs = method.training_step(_batch(), 0, 0)
    mtl = sum(logs["mtl_loss"].values())
    assert total.item() == pytest.approx(2.0 * mtl, rel=1e-5)
    assert all(v == pytest.approx(0.0, abs=1e-5) for v in logs["kd_loss"].values())
    assert logs["alpha"] == 2.0 and logs["beta"] == 3.0


def test_kd_part_is_positive_for_a_different_student(teacher_path):
    method = create_method("kdam", _ctx(teacher=str(teacher_path), beta=0.5))
    total, logs = method.training_step(_batch(), 0, 0)
    assert set(logs["kd_loss"]) == set(TASKS) and all(v > 0 for v in logs["kd_loss"].values())
    expected = sum(logs["mtl_loss"].values()) + 0.5 * sum(logs["kd_loss"].values())
    assert total.item() == pytest.approx(expected, rel=1e-5)


def test_teacher_with_another_input_size_and_more_tasks(tmp_path):
    path = tmp_path / "big.safetensors"
    _save_net(path, img_size=(48, 64))
    ctx = _ctx(teacher=str(path))
    ctx.tasks = ["seg", "depth"]
    ctx.config = ctx.config.with_tasks(["seg", "depth"])
    method = create_method("kdam", ctx)
    total, logs = method.training_step(_batch(b=2, size=(24, 40)), 0, 0)
    assert torch.isfinite(total) and set(logs["kd_loss"]) == {"seg", "depth"}


@pytest.mark.parametrize("kd", ["cs", "kl"])
def test_trains_vit_nano_with_decreasing_loss(teacher_path, kd):
    torch.manual_seed(0)
    method = create_method("kdam", _ctx(teacher=str(teacher_path), kd=kd))
    teacher_before = {k: v.clone() for k, v in method.teacher.state_dict().items()}
    losses = [s["loss"] for s in run_steps(method, _batch(), 12)]  # asserts a finite loss at every step
    assert losses[-1] < losses[0]
    for k, v in method.teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k])
    assert all(p.grad is None for p in method.teacher.parameters())
