"""The task registry: losses ignore what has no ground truth, decoding follows the output conventions."""

import numpy as np
import pytest
import torch

from mtlkd.tasks import TASKS, colourise_depth, colourise_seg, get_task, palette, parse_tasks


def test_parse_tasks_checks_registry_and_availability():
    assert parse_tasks("seg, depth") == ["seg", "depth"]
    assert parse_tasks(None, available=["seg"]) == ["seg"]
    with pytest.raises(ValueError, match="unknown task"):
        parse_tasks("edges")
    with pytest.raises(ValueError, match="not available"):
        parse_tasks("normal", available=["seg", "depth"])


def test_losses_ignore_missing_ground_truth():
    pred = torch.full((1, 1, 2, 2), 2.0)
    target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])  # only one measured pixel, error 1
    assert get_task("depth").loss(pred, target).item() == pytest.approx(1.0)
    normal_pred = torch.nn.functional.normalize(torch.ones(1, 3, 1, 2), dim=1)
    normal_target = torch.zeros(1, 3, 1, 2)
    normal_target[0, :, 0, 0] = normal_pred[0, :, 0, 0]  # the second pixel has no ground truth
    assert get_task("normal").loss(normal_pred, normal_target).item() == pytest.approx(0.0, abs=1e-6)
    logits = torch.tensor([[[[5.0, 0.0]], [[0.0, 5.0]]]])
    labels = torch.tensor([[[0, -1]]])
    assert get_task("seg").loss(logits, labels).item() < 0.01


def test_decode_follows_conventions():
    raw = np.zeros((3, 2, 2), dtype=np.float32)
    raw[1] = 1.0
    assert (TASKS["seg"].decode(raw) == 1).all()
    normal = TASKS["normal"].decode(raw * 3)
    assert normal.shape == (2, 2, 3) and np.allclose(np.linalg.norm(normal, axis=-1), 1)
    assert TASKS["depth"].decode(raw[:1]).shape == (2, 2)


def test_colours():
    assert len({tuple(c) for c in palette(13)}) == 13
    seg = np.array([[0, 1], [-1, 12]])
    rgb = colourise_seg(seg, num_classes=13)
    assert rgb.shape == (2, 2, 3) and (rgb[1, 0] == 0).all()
    depth = np.array([[0.0, 1.0], [2.0, 3.0]], dtype=np.float32)
    coloured = colourise_depth(depth)
    assert (coloured[0, 0] == 0).all() and not (coloured[0, 1] == coloured[1, 1]).all()
