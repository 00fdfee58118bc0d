"""The trainer end to end on tiny synthetic data: outputs of a run, exact resume, clear errors."""

import json

import pytest
import torch
from safetensors.torch import load_file

from mtlkd.data.synthetic import write_synthetic
from mtlkd.train.trainer import TrainOptions, train


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("data") / "syn", 16, 8, size=(32, 32), seed=3, progress=False)


def options(data, out, **kw):
    base = dict(dataset="synthetic", data_dir=str(data), out=str(out), preset="vit-nano", epochs=2,
                batch_size=4, max_steps_per_epoch=3, seed=1, device="cpu")
    return TrainOptions(**{**base, **kw})


def test_mtl_run_leaves_everything_behind(tiny_data, tmp_path):
    run = train(options(tiny_data, tmp_path / "mtl"))
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2]
    assert set(history[-1]["val"]["mtl"]["metrics"]) == {"seg", "depth", "normal"}
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["seg"]) == {"miou", "pixel_acc"}
    assert set(metrics["normal"]) == {"mean", "median", "within_11.25", "within_22.5", "within_30"}
    assert (run / "curves.png").stat().st_size > 1000
    from mtlkd.checkpoint import read_metadata

    meta = read_metadata(run / "model.safetensors")
    assert meta["tasks"] == ["seg", "depth", "normal"] and len(meta["class_names"]) == 13
    assert meta["normalization"]["mean"] == [0.485, 0.456, 0.406]


def test_stl_saves_one_checkpoint_per_task(tiny_data, tmp_path):
    run = train(options(tiny_data, tmp_path / "stl", method="stl", tasks=["seg", "depth"], epochs=1))
    assert (run / "stl_seg.safetensors").exists() and (run / "stl_depth.safetensors").exists()
    assert set(json.loads((run / "metrics.json").read_text())) == {"seg", "depth"}


def test_resume_reaches_the_same_weights(tiny_data, tmp_path, monkeypatch):
    straight = train(options(tiny_data, tmp_path / "straight"))

    import mtlkd.train.plots as plots

    def crash(run):
        raise KeyboardInterrupt  # after epoch 1's state is saved: the run dies here

    monkeypatch.setattr(plots, "plot_history", crash)
    with pytest.raises(KeyboardInterrupt):
        train(options(tiny_data, tmp_path / "resumed"))
    monkeypatch.undo()
    resumed = train(options(tiny_data, tmp_path / "resumed", resume=True))

    a = load_file(str(straight / "state.safetensors"))
    b = load_file(str(resumed / "state.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    lines = (resumed / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]


def test_unknown_method_and_task_are_user_errors(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="unknown method"):
        train(options(tiny_data, tmp_path / "x", method="nope"))
    with pytest.raises(ValueError, match="task"):
        train(options(tiny_data, tmp_path / "y", tasks=["edges"]))


def test_plots_carry_information_and_count_whole_epochs(tmp_path, monkeypatch):
    from mtlkd.train.plots import plot_history

    def record(epoch, weights):
        return {"epoch": epoch, "train": {"loss": 1.0 / epoch}, "task_weights": weights,
                "val": {"mtl": {"loss": {"depth": 1.0}, "metrics": {"depth": {"abs_err": 1.0 / epoch}}}}}

    equal = [record(e, {"seg": 1.0, "depth": 1.0}) for e in (1, 2)]
    (tmp_path / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in equal))
    names = {p.name for p in plot_history(tmp_path)}
    assert names == {"curves.png"}  # equal weights: no task_weights.png of flat lines
    varying = [record(1, {"seg": 1.0, "depth": 1.0}), record(2, {"seg": 1.3, "depth": 0.7})]
    (tmp_path / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in varying))
    assert "task_weights.png" in {p.name for p in plot_history(tmp_path)}

    from mtlkd.train import plots

    captured = []
    real_close = plots.plt.close

    def close(fig):  # the ticks as saved, read just before the figure is closed
        captured.extend(t for ax in fig.axes if ax.get_xlabel() == "epoch" for t in ax.get_xticks())
        real_close(fig)

    monkeypatch.setattr(plots.plt, "close", close)
    plot_history(tmp_path)
    assert captured and all(float(t).is_integer() for t in captured)
