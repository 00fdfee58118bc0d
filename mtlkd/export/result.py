"""What an export returns: every file written (or reused) with the checks it passed (`export_model`'s result,
which export.json and `mtl-export --json` hold). Its own module so that the pipeline and its steps both
use it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtlkd.export.validate import Check, summary
from mtlkd.metadata import SCHEMA_VERSION


@dataclass
class Artifact:
    """One file written (or reused), with the checks it passed."""

    key: str
    format: str
    precision: str
    path: Path
    note: str = ""
    checks: list[Check] = field(default_factory=list)
    reused: bool = False
    bytes: int = 0  # measured when the file is recorded (a failed export's files are gone afterwards)

    def __post_init__(self) -> None:
        if not self.bytes and self.path.is_file():
            extra = self.path.with_suffix(".bin") if self.path.suffix == ".xml" else None
            self.bytes = self.path.stat().st_size + (extra.stat().st_size if extra and extra.is_file() else 0)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "format": self.format, "file": str(self.path), "bytes": self.bytes,
                "precision": self.precision, "note": self.note, "reused": self.reused,
                "checks": summary(self.checks)}  # fmt: skip


@dataclass
class ExportResult:
    """Every file written and every check made. `problems`: what could not be done although the rest was
    written (a TensorRT engine without TensorRT, or built but not runnable here)."""

    out: Path
    artifacts: list[Artifact] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    report: Path | None = None

    @property
    def checks(self) -> list[Check]:
        return [c for a in self.artifacts for c in a.checks]

    @property
    def ok(self) -> bool:
        return not self.problems and all(c.ok for c in self.checks)

    def path(self, key: str) -> Path:
        """The file of an artifact key ("onnx", "openvino.int8", ...)."""
        for artifact in self.artifacts:
            if artifact.key == key:
                return artifact.path
        raise KeyError(f"{key!r} was not exported (exported: {', '.join(a.key for a in self.artifacts)})")

    def to_dict(self) -> dict[str, Any]:
        """What export.json and `mtl-export --json` hold."""
        return {"schema_version": SCHEMA_VERSION, "out": str(self.out),
                "artifacts": [a.to_dict() for a in self.artifacts], "problems": list(self.problems),
                "checks": [c.__dict__ for c in self.checks]}  # fmt: skip
