"""Where a preset's pretrained backbone comes from (`mtl-train --pretrained`).

- The CPU presets (vit-micro, vit-micro-wide) have no ImageNet checkpoint anywhere: their backbones are
  SimMIM-pretrained by `mtl-pretrain` on synthetic scenes that are not the benchmark's, and ship inside
  the package (`mtlkd/models/weights/`, with the command that made them in their metadata).
- The paper-sized presets take timm's ImageNet weights for the same architecture, downloaded once into
  the cache where the machine is online; offline, one line says which file to pass instead.
"""

from __future__ import annotations

from pathlib import Path

from mtlkd.errors import CheckpointError, ConfigError

WEIGHTS_DIR = Path(__file__).with_name("weights")
BUNDLED = {
    "vit-micro": "vit-micro-simmim.safetensors",
    "vit-micro-lite": "vit-micro-simmim.safetensors",  # vit-micro's backbone, lighter heads
    "vit-micro-wide": "vit-micro-wide-simmim.safetensors",
}
TIMM_NAMES = {
    "vit-tiny": "vit_tiny_patch16_384.augreg_in21k_ft_in1k",
    "vit-small": "vit_small_patch16_384.augreg_in21k_ft_in1k",
    "deeplabv3-r50": "resnet50.a1_in1k",
    "deeplabv3-r18": "resnet18.a1_in1k",
}


def pretrained_backbone(preset: str, cache: Path | None = None) -> Path:
    """A local safetensors file of the preset's pretrained backbone (timm key names)."""
    if preset in BUNDLED:
        path = WEIGHTS_DIR / BUNDLED[preset]
        if not path.is_file():
            raise CheckpointError(f"--pretrained: {path} is missing from this install; make it with "
                             f"`mtl-pretrain --preset {preset}` and pass --backbone-weights")
        return path
    if preset not in TIMM_NAMES:
        raise ConfigError(f"--pretrained: no pretrained backbone is known for preset {preset!r}; "
                         "pass --backbone-weights FILE")
    from mtlkd.data import cache_dir

    name = TIMM_NAMES[preset]
    path = (Path(cache) if cache is not None else cache_dir()) / "pretrained" / f"{name}.safetensors"
    if path.is_file():
        return path
    try:
        import timm

        state = timm.create_model(name, pretrained=True).state_dict()
    except Exception as exc:  # offline, hub errors, proxies: all mean "get the file another way"
        raise CheckpointError(
            f"--pretrained: could not download timm's {name} ({type(exc).__name__}); where you are online run "
            f"`python -c \"import timm, safetensors.torch as s; s.save_file(timm.create_model('{name}', "
            f"pretrained=True).state_dict(), '{name}.safetensors')\"` and pass --backbone-weights "
            f"{name}.safetensors"
        ) from None
    from mtlkd.checkpoint import save_checkpoint

    save_checkpoint(path, state, {"source": f"timm/{name}"})
    return path
