"""`mtl-bench`: is one multi-task network cheaper than the single-task networks it replaces, on every
backend and precision, how close does it run to the machine's own limit, and what does accuracy cost?

    from mtlkd.bench.run import BenchOptions, run_benchmark
    result = run_benchmark(BenchOptions(preset="vit-tiny", backends=["torch", "onnxruntime"]))

Modules, each importing only those before it: `machine` (CPU, features, pinning, peak memory), `stats`
(adaptive timing), `flops` (FLOPs per image), `ceiling` (matrix-product ceilings, square and at the
model's own shapes), `plan` (which backend x precision x variant runs here, and why the others do not),
`inputs` (images and references for the workers), `worker` (one configuration in a fresh process),
`summary` (rows, ratios, accuracy verdicts), `autocache` (the runtime's auto-backend cache), `run` (the
whole benchmark), `plot` (the PNG chart). This module only re-exports.

JSON (`--json`):

* `rows`: one object per measured (backend, precision, variant) x model: `backend`, `precision`,
  `variant` ("default" or a `--variants` name), `label`, `model` ("mtl" or the task of an STL model),
  `tasks`, `batch` (of the throughput), `file`, `file_mb`, `params`, `gflop` (per image), `p50_ms`,
  `p90_ms`, `mean_ms`, `ci_ms` (95% CI of the median), `repeats`, `rounds`, `samples_ms`, `converged`, `load_s`,
  `throughput_ips` (images/s at `batch`), `batch_p50_ms`, `achieved_gflops`, `ceiling_precision`,
  `ceiling_gflops`, `fraction_of_ceiling`, `peak_mem_mb` (RSS growth while loading and running at batch
  1), `peak_mem_batch_mb` (after the batch runs too), `gpu_peak_mb`, accuracy against PyTorch fp32:
  `seg_agreement` (%), `depth_rel_err` (%), `normal_angle` (degrees), `accuracy_kept`; `error` when the
  configuration failed.
* `summary`: `configs` (per backend+precision+variant: `mtl_p50_ms`, `stl_sum_p50_ms`, `latency_ratio`,
  `params_ratio`, `size_ratio`, `gflop_ratio` = MTL / sum of STL, `speedup_vs_torch_fp32` of the MTL
  model, `stl_speedup_vs_torch_fp32`, `mtl_vs_torch_stl_chain`, `fraction_of_ceiling`, `accuracy_kept`),
  `reference`, `fastest`, `fastest_kept`, `targets` (name, description, threshold, value, passed).
* `machine`, `ceilings` (per compute precision: gflops, native, method, size, before/after the rows),
  `models` (params, gflop and its split per backbone/head), `skipped` (what cannot run here, and why),
  `end_to_end` (decode/preprocess/network/postprocess ms, network alone, overhead), `auto_cache`,
  `options`, `command`, `created`.
"""

from mtlkd.bench.plan import PRECISIONS, Config, backend_names, plan, variants
from mtlkd.bench.run import BenchOptions, run_benchmark

__all__ = ["PRECISIONS", "BenchOptions", "Config", "backend_names", "plan", "run_benchmark", "variants"]
