"""KD-MTL: frozen single-task teachers, per-task adaptors with their own learning rate, feature loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from train_helpers import run_steps

from mtlkd.checkpoint import model_metadata, save_checkpoint
from mtlkd.models import create_model, preset_config
from mtlkd.train.methods import create_method
from mtlkd.train.methods.base import MethodContext
from mtlkd.train.methods.kd_mtl import FeatureAdaptor, align_to, find_teachers, layer_indices

TASKS = ["seg", "depth", "normal"]
NUM_CLASSES = 5


def _batch(b=4, size=(32, 32), seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.rand(b, 3, *size, generator=g),
        "seg": torch.randint(0, NUM_CLASSES, (b, *size), generator=g),
        "depth": torch.rand(b, 1, *size, generator=g) * 4 + 0.5,
        "normal": F.normalize(torch.randn(b, 3, *size, generator=g), dim=1),
    }


def _ctx(preset="vit-nano", img_size=None, **options):
    config = preset_config(preset, TASKS, NUM_CLASSES, img_size=img_size)
    return MethodContext(config=config, tasks=TASKS, num_classes=NUM_CLASSES, class_names=None,
                         device=torch.device("cpu"), options=options)


def _save_teachers(folder, preset="vit-nano", img_size=None, tasks=TASKS):
    """What an stl run leaves behind: stl_<task>.safetensors, one single-task network each."""
    folder.mkdir(parents=True, exist_ok=True)
    ctx = _ctx(preset, img_size)
    for i, task in enumerate(tasks):
        torch.manual_seed(10 + i)
        config = ctx.task_config(task).to_dict()
        net = create_model(config)
        save_checkpoint(folder / f"stl_{task}.safetensors", net.state_dict(), model_metadata(config))
    return folder


@pytest.fixture(scope="module")
def stl_run(tmp_path_factory):
    return _save_teachers(tmp_path_factory.mktemp("stl"))


def test_teachers_found_in_run_folders_and_files(stl_run):
    assert find_teachers([str(stl_run)], TASKS) == {t: stl_run / f"stl_{t}.safetensors" for t in TASKS}
    files = [str(stl_run / f"stl_{t}.safetensors") for t in reversed(TASKS)]
    assert list(find_teachers(files, TASKS)) == TASKS


def test_missing_teachers_say_to_train_stl_first(stl_run, tmp_path):
    for teachers in (None, [str(tmp_path)], [str(stl_run / "stl_seg.safetensors")]):
        with pytest.raises(ValueError, match="--method stl") as info:
            find_teachers(teachers, TASKS)
        assert "--teachers" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="--method stl"):
        create_method("kd-mtl", _ctx())


def test_multi_task_checkpoint_is_not_a_teacher(tmp_path):
    config = preset_config("vit-nano", TASKS, NUM_CLASSES)
    save_checkpoint(tmp_path / "model.safetensors", create_model(config).state_dict(), model_metadata(config))
    with pytest.raises(ValueError, match="single-task"):
        find_teachers([str(tmp_path / "model.safetensors")], TASKS)


def test_options_are_checked(stl_run):
    with pytest.raises(ValueError, match="kd-layers"):
        create_method("kd-mtl", _ctx(teachers=[str(stl_run)], kd_layers="all"))
    with pytest.raises(ValueError, match="kd-weights"):
        create_method("kd-mtl", _ctx(teachers=[str(stl_run)], kd_weights={"edges": 1.0}))


def test_paper_defaults_and_layers(stl_run):
    method = create_method("kd-mtl", _ctx(teachers=[str(stl_run)]))
    assert method.kd_weights == {"seg": 1.0, "depth": 1.0, "normal": 2.0}
    assert method.kd_layers == "last" and method.student_layers == [1]
    method = create_method("kd-mtl", _ctx(teachers=[str(stl_run)], kd_layers="mid+last", kd_weights={"seg": 3}))
    assert method.kd_weights["seg"] == 3.0 and method.student_layers == [0, 1]
    assert len(method.extra["adaptors"]["seg"]) == 2
    assert layer_indices(12, "mid+last") == [5, 11] and layer_indices(4, "last") == [3]


def test_adaptors_have_the_papers_own_constant_rate_adam_by_default(stl_run):
    method = create_method("kd-mtl", _ctx(teachers=[str(stl_run)]))
    (network,) = method.parameter_groups(1e-3)  # the trainer's AdamW + OneCycle sees the network only
    adaptor_ids = {id(p) for p in method.extra["adaptors"].parameters()}
    assert not adaptor_ids & {id(p) for p in network["params"]}
    (own,) = method.extra_optimizers()
    assert own is method.extra_optimizers()[0]  # one instance, so its state is the one saved on resume
    assert isinstance(own, torch.optim.Adam) and not isinstance(own, torch.optim.AdamW)
    (group,) = own.param_groups
    assert group["lr"] == 0.1 and group["weight_decay"] == 5e-4
    assert {id(p) for p in group["params"]} == adaptor_ids


def test_shared_adaptor_group_has_its_own_learning_rate(stl_run):
    method = create_method("kd-mtl", _ctx(teachers=[str(stl_run)], adaptor_lr=0.05, adaptor_optimizer="shared"))
    assert method.extra_optimizers() == []
    optimizer = torch.optim.AdamW(method.parameter_groups(1e-3))
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["network"]["lr"] == 1e-3 and groups["adaptors"]["lr"] == 0.05
    adaptor_ids = {id(p) for p in method.extra["adaptors"].parameters()}
    assert {id(p) for p in groups["adaptors"]["params"]} == adaptor_ids
    assert not adaptor_ids & {id(p) for p in groups["network"]["params"]}
    assert len(groups["network"]["params"]) == len(list(method.nets.parameters()))
    # OneCycle keeps the ratio: both groups get their own peak
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=10)
    assert scheduler.get_last_lr()[1] / scheduler.get_last_lr()[0] == pytest.approx(50.0)
    default = create_method("kd-mtl", _ctx(teachers=[str(stl_run)], adaptor_optimizer="shared"))
    assert default.parameter_groups(1e-3)[1]["lr"] == pytest.approx(default.adaptor_lr(1e-3))
    assert default.adaptor_lr(1e-3) == pytest.approx(1.0)  # the paper's 0.1 / 1e-4 ratio


@pytest.mark.parametrize("kd_layers", ["last", "mid+last"])
def test_trains_vit_nano_with_frozen_teachers(stl_run, kd_layers):
    torch.manual_seed(0)
    method = create_method("kd-mtl", _ctx(teachers=[str(stl_run)], kd_layers=kd_layers))
    assert list(method.nets) == ["mtl"]
    before = {t: {k: v.clone() for k, v in net.state_dict().items()} for t, net in method.teachers.items()}
    steps = run_steps(method, _batch(), 12)  # asserts a finite loss at every step
    losses, kd = [s["loss"] for s in steps], [sum(s["kd_loss"].values()) for s in steps]
    assert losses[-1] < losses[0] and kd[-1] < kd[0]
    logs = steps[-1]
    assert set(logs["kd_loss"]) == set(TASKS) and set(logs["mtl_loss"]) == set(TASKS)
    for task, net in method.teachers.items():
        assert not net.training
        for name, p in net.named_parameters():
            assert not p.requires_grad and p.grad is None
            assert torch.equal(p, before[task][name])
    assert all(p.grad is not None for p in method.extra["adaptors"].parameters())


def test_total_is_task_loss_plus_weighted_distillation(stl_run):
    method = create_method("kd-mtl", _ctx(teachers=[str(stl_run)]))
    total, logs = method.training_step(_batch(), 0, 0)
    expected = sum(logs["mtl_loss"].values()) + sum(
        method.kd_weights[t] * v for t, v in logs["kd_loss"].items())
    assert total.item() == pytest.approx(expected, rel=1e-5)


def test_teachers_of_another_size_are_resized(tmp_path):
    folder = _save_teachers(tmp_path / "big", img_size=(48, 48))
    method = create_method("kd-mtl", _ctx(teachers=[str(folder)]))
    total, _ = method.training_step(_batch(b=2), 0, 0)
    assert torch.isfinite(total)


def test_adaptor_is_a_linear_layer_on_tokens_and_a_1x1_conv_on_maps():
    adaptor = FeatureAdaptor(6, 4)
    maps = torch.randn(2, 6, 3, 5)
    tokens = maps.flatten(2).transpose(1, 2)
    from_maps = adaptor(maps)
    assert from_maps.shape == (2, 4, 3, 5)
    assert torch.allclose(adaptor(tokens), from_maps.flatten(2).transpose(1, 2), atol=1e-6)
    conv = torch.nn.Conv2d(6, 4, 1, bias=False)
    conv.weight.data = adaptor.weight.data[:, :, None, None]
    assert torch.allclose(conv(maps), from_maps, atol=1e-6)


def test_align_to_resizes_tokens_and_maps():
    tokens = torch.randn(2, 6 * 6, 8)
    student = torch.randn(2, 4 * 4, 3)
    assert align_to(tokens, student, (6, 6), (4, 4)).shape == (2, 16, 8)
    assert align_to(torch.randn(2, 8, 6, 6), torch.randn(2, 3, 4, 4), None, None).shape == (2, 8, 4, 4)


def test_cnn_student_and_teachers(tmp_path):
    """DeepLabV3 (ResNet-18) features are B x C x h x w maps: the adaptors act as 1x1 convolutions."""
    folder = _save_teachers(tmp_path / "cnn", preset="deeplabv3-r18", img_size=(32, 32), tasks=["seg", "depth"])
    ctx = _ctx("deeplabv3-r18", (32, 32), teachers=[str(folder)], kd_layers="mid+last")
    ctx.tasks = ["seg", "depth"]
    ctx.config = ctx.config.with_tasks(["seg", "depth"])
    method = create_method("kd-mtl", ctx)
    method.train(True)
    total, logs = method.training_step(_batch(b=2), 0, 0)
    total.backward()
    assert torch.isfinite(total) and all(v > 0 for v in logs["kd_loss"].values())
    weights = [p.weight for p in method.extra["adaptors"]["seg"]]
    assert [tuple(w.shape) for w in weights] == [(128, 128), (512, 512)]
    assert all(w.grad is not None for w in weights)
