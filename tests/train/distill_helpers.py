"""Teachers and frames for the mtl-distill tests: hand-built foreign ONNX graphs (no mtlkd metadata, outputs
named as another project would), a vit-nano mtlkd checkpoint, and PNG frames from a tiny synthetic set."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtlkd.data.synthetic import CLASS_NAMES

CLASSES = list(CLASS_NAMES)


def foreign_onnx(path: Path, channels: int, size: tuple[int, int] = (32, 32), activation: str | None = None,
                 scale: float = 1.0, shift: float = 0.0, seed: int = 0, output: str = "out0") -> Path:
    """A 1x1 convolution from RGB to `channels` maps (then `activation`, then * scale + shift), static input
    N x 3 x H x W, named `pixel_values` -> `output`: a stand-in for a model from elsewhere."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 1, (channels, 3, 1, 1)).astype(np.float32)
    bias = rng.normal(0, 0.1, (channels,)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["pixel_values", "w", "b"], ["conv"])]
    last = "conv"
    if activation:
        nodes.append(helper.make_node(activation, [last], ["act"]))
        last = "act"
    nodes += [helper.make_node("Mul", [last, "scale"], ["scaled"]),
              helper.make_node("Add", ["scaled", "shift"], [output])]
    graph = helper.make_graph(
        nodes, "foreign",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["N", 3, *size])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", channels, *size])],
        initializer=[numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b"),
                     numpy_helper.from_array(np.array(scale, np.float32), "scale"),
                     numpy_helper.from_array(np.array(shift, np.float32), "shift")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def nano_checkpoint(folder: Path, tasks: list[str], seed: int = 0, size: tuple[int, int] = (32, 32)) -> Path:
    """A random-weight vit-nano mtlkd checkpoint for `tasks` (it describes itself)."""
    import torch

    from mtlkd.checkpoint import model_metadata, save_checkpoint
    from mtlkd.models import create_model, model_config

    config = model_config("vit-nano", tasks, 13 if "seg" in tasks else None, CLASSES if "seg" in tasks else None,
                          img_size=size).to_dict()
    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.safetensors"
    save_checkpoint(path, create_model(config).state_dict(), model_metadata(config))
    return path


def write_frames(data: Path, out: Path, split: str = "train") -> Path:
    """The split's images (only its image/ folder is read) as 8-bit PNG frames."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    for path in sorted((data / split / "image").glob("*.npy"), key=lambda p: int(p.stem)):
        image = np.load(path)
        Image.fromarray(np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)).save(out / f"{int(path.stem):05d}.png")
    return out
