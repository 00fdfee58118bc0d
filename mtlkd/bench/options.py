"""What a benchmark run is asked to do, checked when it is made: a wrong value is one ConfigError line naming
the `mtl-bench` flag that sets it (each field is the flag of its name, `batch_size` is `--batch-size`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mtlkd.bench.plan import PRECISIONS, backend_names, variants
from mtlkd.errors import ConfigError

STL_ON = ("best", "all")


@dataclass
class BenchOptions:
    """`model`: a trained multi-task checkpoint (else `preset`, trained briefly for the accuracy verdicts);
    `stl`: its single-task counterparts (else random-weight ones of the same architecture, for latency).
    `precisions` None: fp32 and every precision this machine computes natively. `stl_on` "best": the
    single-task models are timed on the reference (torch fp32) and on the fastest configuration that keeps
    the accuracy, "all": on every configuration. `train_steps` 0: random weights, raw-output verdicts only.
    `profile`: where the multi-task model's time goes per kind of operation (ONNX Runtime, OpenVINO).
    """

    model: Path | None = None
    stl: list[Path] = field(default_factory=list)
    preset: str = "vit-tiny"
    img_size: tuple[int, int] | None = None
    backends: list[str] | None = None
    precisions: list[str] | None = None
    variants: list[str] = field(default_factory=list)
    batch_size: int = 8
    data_dir: Path | None = None
    repeats: int = 10
    rounds: int = 1
    budget: float = 3.0
    rel_ci: float = 0.02
    threads: int | None = None
    device: str = "cpu"
    isolate: bool = True
    cache: Path | None = None
    accuracy_images: int = 4
    calib_size: int = 16
    e2e: bool = True
    auto_cache: bool = True
    ceiling_budget: float = 1.0
    stl_on: str = "best"
    train_steps: int = 20
    profile: bool = False

    def __post_init__(self) -> None:
        from mtlkd.models.presets import PRESETS

        if self.preset not in PRESETS:
            raise ConfigError(f"--preset {self.preset!r}: unknown; known presets: {', '.join(PRESETS)}")
        if self.stl and self.model is None:
            raise ConfigError("--stl needs a multi-task MODEL (the model they are compared with)")
        for flag, path in [("MODEL", self.model), *(("--stl", p) for p in self.stl)]:
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{flag} {path}: no such checkpoint file; pass a model.safetensors")
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise ConfigError(f"--data-dir {self.data_dir}: no such folder; pass a dataset folder or leave it out")
        for name, known, values in (("--backends", backend_names(), self.backends), ("--precisions", PRECISIONS,
                                    self.precisions), ("--variants", tuple(variants()), self.variants)):  # fmt: skip
            unknown = [v for v in values or [] if v not in known]
            if unknown or (values == [] and name != "--variants"):
                raise ConfigError(f"{name}: unknown {', '.join(unknown) or 'empty list'}; choose from "
                                  f"{', '.join(known)}")  # fmt: skip
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"--device {self.device!r}: use cpu or cuda")
        if self.stl_on not in STL_ON:
            raise ConfigError(f"--stl-on {self.stl_on!r}: use {' or '.join(STL_ON)}")
        if self.img_size is not None and min(self.img_size) < 8:
            raise ConfigError(f"--img-size {self.img_size}: both sides at least 8 pixels, e.g. 384x384")
        for name in ("batch_size", "repeats", "rounds", "accuracy_images", "calib_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("budget", "ceiling_budget", "rel_ci", "train_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {self.threads}")
