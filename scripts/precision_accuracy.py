"""How much each precision changes a checkpoint's outputs, trained and with random weights, and which int8
node groups cost the accuracy (the README's "Accuracy of the precisions" tables).

    .venv/bin/python scripts/precision_accuracy.py runs/demo/mtl/model.safetensors --out runs/precision

Exports the checkpoint's fp32 graph at full resolution (as the tables were measured), an fp16 graph and
an int8 graph with every product quantised, runs them with ONNX Runtime and the fp32 graph with OpenVINO
in bf16, and compares every output with PyTorch fp32 by `mtlkd.accuracy`, on 8 synthetic scenes; then the
same with random weights of the same architecture; then `int8_sensitivity` on the trained graph.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import warnings
from pathlib import Path

import torch

from mtlkd.accuracy import compare_outputs
from mtlkd.export import precision as prec
from mtlkd.export.onnx import export_onnx
from mtlkd.export.validate import run_onnxruntime, run_openvino, run_torch, validation_images
from mtlkd.models import create_model, load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, default=Path("runs/precision"))
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    net, meta = load_model(str(args.checkpoint))
    tasks, size = list(meta["tasks"]), tuple(meta["input_size"])
    images, calibration = validation_images(size, n=8, seed=2025), validation_images(size, n=16, seed=7)
    rows = {}
    for weights in ("trained", "random"):
        if weights == "random":
            torch.manual_seed(0)
            net = create_model(meta["config"]).eval()
        folder = args.out / weights
        folder.mkdir(parents=True, exist_ok=True)
        graph = export_onnx(net, meta, folder / "model.onnx", tasks, full_resolution=True)
        with contextlib.redirect_stdout(io.StringIO()):
            prec.convert_fp16(graph, folder / "model.fp16.onnx")
            prec.quantize_int8(graph, folder / "model.int8.onnx", calibration, keep_float=())
        reference = run_torch(net, images, tasks)
        outputs = {"fp16 (ONNX Runtime)": run_onnxruntime(folder / "model.fp16.onnx", images),
                   "bf16 (OpenVINO)": run_openvino(graph, images, config={"INFERENCE_PRECISION_HINT": "bf16"}),
                   "int8, every product quantised": run_onnxruntime(folder / "model.int8.onnx", images)}
        for name, out in outputs.items():
            errors = compare_outputs(reference, out)
            rows[f"{weights} {name}"] = {t: e.to_dict() for t, e in errors.items()}
            print(weights, name, {t: (f"{e.raw_rel_err:.1e}", e.agreement) for t, e in errors.items()}, flush=True)
    trained = args.out / "trained" / "model.onnx"
    net, _ = load_model(str(args.checkpoint))
    groups = prec.int8_sensitivity(trained, calibration, images, run_torch(net, images, tasks))
    for kept, entry in groups.items():
        print("int8, float:", kept, {t: f"{e['raw_rel_err']:.1e} {e['agreement']}" for t, e in entry["errors"].items()})
    (args.out / "precision_accuracy.json").write_text(json.dumps({"precisions": rows, "int8_groups": groups},
                                                                 indent=2))


if __name__ == "__main__":
    main()
