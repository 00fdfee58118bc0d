"""Augmentation keeps image and targets aligned: the class is encoded in the image colour to check it."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from mtlkd.data.augment import flip, random_flip, random_scale_crop  # noqa: E402

H, W = 30, 40
NORMALS = torch.nn.functional.normalize(torch.tensor([[0.3, -0.2, -1.0], [-0.6, 0.1, -0.8], [0.0, 0.9, -0.4]]), dim=1)


def blocky_sample() -> dict[str, torch.Tensor]:
    """Blocks of classes 0..2 (image = one-hot colour), plus an ignore block: black, depth 0, normal 0."""
    gen = torch.Generator().manual_seed(0)
    blocks = torch.randint(-1, 3, (H // 5, W // 5), generator=gen)
    blocks[0, 0], blocks[0, 1] = -1, 2
    seg = blocks.repeat_interleave(5, 0).repeat_interleave(5, 1)
    valid = seg >= 0
    image = torch.zeros(3, H, W)
    image[:, valid] = torch.eye(3)[seg[valid]].T
    depth = torch.where(valid, 1.0 + seg.clamp_min(0).float(), torch.zeros(())).unsqueeze(0)
    normal = torch.zeros(3, H, W)
    normal[:, valid] = NORMALS[seg[valid]].T
    return {"image": image, "seg": seg, "depth": depth, "normal": normal}


def check_aligned(sample: dict[str, torch.Tensor], scale: float, flipped: bool) -> None:
    image, seg, depth, normal = sample["image"], sample["seg"], sample["depth"][0], sample["normal"]
    valid = seg >= 0
    pure = image.max(0).values > 0.999  # pixels whose bilinear neighbourhood is one class
    assert pure.sum() > 0.3 * H * W
    assert (image.argmax(0)[pure & valid] == seg[pure & valid]).all()
    assert ((depth == 0) == ~valid).all() and ((normal.abs().sum(0) == 0) == ~valid).all()
    torch.testing.assert_close(depth[valid], (1.0 + seg[valid].float()) / scale)
    expected = NORMALS[seg[valid]].T.clone()
    if flipped:
        expected[0] = -expected[0]
    torch.testing.assert_close(normal[:, valid], expected)


def test_identity_scale_is_a_no_op():
    sample = blocky_sample()
    out = random_scale_crop(sample, torch.Generator().manual_seed(1), scales=(1.0,))
    for key in sample:
        assert torch.equal(out[key], sample[key]), key


@pytest.mark.parametrize("scale", [1.2, 1.5, 2.0])
def test_scale_crop_divides_depth_and_keeps_targets_aligned(scale):
    out = random_scale_crop(blocky_sample(), torch.Generator().manual_seed(2), scales=(scale,))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "image": (3, H, W), "seg": (H, W), "depth": (1, H, W), "normal": (3, H, W)
    }  # fmt: skip
    assert out["seg"].dtype == torch.int64
    assert set(out["seg"].unique().tolist()) <= {-1, 0, 1, 2}
    check_aligned(out, scale, flipped=False)


def test_flip_mirrors_everything_and_negates_normal_x():
    sample = blocky_sample()
    out = flip(sample)
    assert torch.equal(out["seg"], sample["seg"].flip(-1))
    assert torch.equal(out["image"], sample["image"].flip(-1))
    assert torch.equal(out["normal"][0], -sample["normal"][0].flip(-1))
    assert torch.equal(out["normal"][1:], sample["normal"][1:].flip(-1))
    assert torch.equal(sample["normal"], blocky_sample()["normal"])  # input untouched
    check_aligned(out, 1.0, flipped=True)


def test_random_flip_is_seeded_and_flips_about_half():
    sample = blocky_sample()
    gen = torch.Generator().manual_seed(3)
    flips = [not torch.equal(random_flip(sample, gen)["seg"], sample["seg"]) for _ in range(200)]
    assert 60 < sum(flips) < 140
    gen = torch.Generator().manual_seed(3)
    again = [not torch.equal(random_flip(sample, gen)["seg"], sample["seg"]) for _ in range(200)]
    assert flips == again


def test_combined_augmentation_through_the_dataset_stays_aligned(tmp_path):
    """MTANDataset(augment=True) on synthetic data: the depth of floor pixels still fits one plane scale."""
    from mtlkd.data.mtan import MTANDataset
    from mtlkd.data.synthetic import write_synthetic

    root = write_synthetic(tmp_path / "syn", n_train=2, n_val=1, size=(24, 32), progress=False)
    plain = MTANDataset(root, "synthetic")
    torch.manual_seed(0)
    augmented = MTANDataset(root, "synthetic", augment=True)
    for _ in range(6):
        a, p = augmented[0], plain[0]
        assert a.keys() == p.keys()
        assert a["depth"].min() > 0 and set(a["seg"].unique().tolist()) <= set(p["seg"].unique().tolist())
        torch.testing.assert_close(a["normal"].norm(dim=0), torch.ones(24, 32))
        scale = p["depth"].mean() / a["depth"].mean()
        assert 0.6 < float(scale) < 2.2
