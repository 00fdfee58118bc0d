"""The load test of the README's serving section: `mtl-serve --bench` on the CPU demo's network.

Makes a random-weight vit-micro (96x128, the demo's preset; timing does not depend on the weights) with
the demo's 13 classes, exports it to ONNX with mtl-export's pipeline, and load-tests it through the real
Triton server at C = 1, 4, 16 concurrent clients against the single-process Predictor on the same file.
Prints the table and writes OUT/serve_bench.json (beside, then renamed).

    .venv/bin/python scripts/serve_bench.py --out runs/serve_bench
    .venv/bin/python scripts/serve_bench.py --model runs/okd/export/model.onnx --requests 500
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mtlkd.runtime.cpu import cpu_name


def demo_onnx(out: Path) -> Path:
    """A random-weight vit-micro with seg (13 classes), depth and normals, exported and validated."""
    import torch

    from mtlkd.checkpoint import model_metadata, save_checkpoint
    from mtlkd.export.pipeline import export_model
    from mtlkd.models import create_model, preset_config

    onnx = out / "export" / "model.onnx"
    if onnx.is_file():
        return onnx
    config = preset_config("vit-micro", ["seg", "depth", "normal"], num_classes=13)
    torch.manual_seed(0)
    model = create_model(config).eval()
    checkpoint = save_checkpoint(out / "model.safetensors", model.state_dict(), model_metadata(config))
    export_model(checkpoint, out / "export", formats=["onnx"], report=False)
    return onnx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/serve_bench"))
    parser.add_argument("--model", type=Path, help="an exported model file (default: the demo's network)")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--requests", type=int, default=400, help="well-formed requests per level")
    parser.add_argument("--time-limit", type=float, default=90.0, help="seconds per level, at most")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-queue-delay-us", type=int, default=2000)
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()

    from mtlkd.files import atomic_write_bytes
    from mtlkd.serve import ServeOptions
    from mtlkd.serve.bench import LoadTestOptions, format_table, run_load_test
    from mtlkd.ui import user_errors

    with user_errors():
        args.out.mkdir(parents=True, exist_ok=True)
        model = args.model or demo_onnx(args.out)
        serve = ServeOptions(port=args.port, grpc_port=args.port + 1, metrics_port=args.port + 2,
                             max_batch_size=args.max_batch_size, max_queue_delay_us=args.max_queue_delay_us)
        load = LoadTestOptions(concurrency=[int(c) for c in args.concurrency.split(",")], requests=args.requests,
                               time_limit_s=args.time_limit)
        result = run_load_test(model, serve, load, progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(f"CPU: {cpu_name()}")
    print(format_table(result))
    data = {"cpu": cpu_name(), **result.to_dict()}
    atomic_write_bytes(args.out / "serve_bench.json", (json.dumps(data, indent=2) + "\n").encode())
    sys.exit(1 if result.failed_well_formed else 0)


if __name__ == "__main__":
    main()
