"""`mtl-serve`: serve a model through a real Triton Inference Server (`mtlkd.serve.serve_model`), or load-test
one (`--bench`, `mtlkd.serve.bench.run_load_test`).

Options in, one library call, its result printed: endpoints and the models' states on stderr while it
runs; with --bench the load-test table (or JSON) on stdout.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from mtlkd.cli.common import JSON_STDOUT, MtlCommand, check_json_target, emit_json
from mtlkd.ui import user_errors


def command(
    model: Path = typer.Argument(..., metavar="MODEL", show_default=False,
                                 help="model.onnx, an OpenVINO model.xml, a TensorRT .engine/.plan, a "
                                      "model.safetensors (exported to ONNX first), or a Triton repository folder "
                                      "(mtl-export --triton REPO --triton-backend python)."),
    host: str = typer.Option("127.0.0.1", "--host", metavar="ADDRESS",
                             help="Where every endpoint listens (0.0.0.0: every interface, open to the network)."),
    port: int = typer.Option(8000, "--port", metavar="N", help="HTTP/REST port (KServe v2)."),
    grpc_port: int = typer.Option(8001, "--grpc-port", metavar="N", help="gRPC port (KServe v2)."),
    metrics_port: int = typer.Option(8002, "--metrics-port", metavar="N", help="Prometheus metrics port (/metrics)."),
    max_batch_size: int = typer.Option(8, "--max-batch-size", metavar="N",
                                       help="Dynamic batching: most images the server gathers into one network call."),
    max_queue_delay_us: int = typer.Option(2000, "--max-queue-delay-us", metavar="US",
                                           help="How long the scheduler waits to fill a batch, in microseconds."),
    instances: int = typer.Option(1, "--instances", metavar="N", help="Model instances, each with its own Predictor."),
    name: str | None = typer.Option(None, "--name", metavar="NAME",
                                    help="The model's name (default: as mtl-export --triton names it: mtlkd_onnx, "
                                         "mtlkd_openvino, mtlkd_tensorrt)."),
    serve_env: Path | None = typer.Option(None, "--serve-env", metavar="DIR",
                                          help="The Python environment with the server (default: $MTLKD_SERVE_ENV, "
                                               "else .venv-serve of the checkout, made by `make serve-env`)."),
    log: Path | None = typer.Option(None, "--log", metavar="FILE", help="Keep the server's own log here (appended)."),
    startup_timeout: float = typer.Option(120.0, "--startup-timeout", metavar="S",
                                          help="Seconds to wait for the models to load."),
    bench: bool = typer.Option(False, "--bench",
                               help="Load test instead of serving: C concurrent clients over loopback, against the "
                                    "single-process Predictor on the same file, then stop."),
    concurrency: str = typer.Option("1,4,16", "--concurrency", metavar="C[,C...]", help="--bench: clients at once."),
    requests: int = typer.Option(200, "--requests", metavar="N", help="--bench: well-formed requests per level."),
    time_limit: float = typer.Option(60.0, "--time-limit", metavar="S", help="--bench: most seconds per level."),
    json_out: str | None = typer.Option(None, "--json", metavar="[PATH]",
                                        help="--bench: the result as JSON, on stdout or into PATH (a .json)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines; only results and errors."),
) -> None:  # fmt: skip
    """Serve a model on a real Triton Inference Server (HTTP, gRPC, metrics) on this machine's CPU.

    The server is the tritonserver of the nvidia-pytriton wheel, in its own
    environment (`make serve-env`); the model runs mtlkd's Predictor in
    Triton's Python backend. Input `image` N x 3 x H x W float32, one output
    per task, as in the repository mtl-export --triton writes: a client of
    that deployment works unchanged. Ctrl-C or SIGTERM stops it cleanly.

    Examples:

      mtl-serve runs/okd/export/model.onnx

      mtl-serve runs/okd/export/openvino/model.xml --port 9000 --max-batch-size 16

      mtl-serve runs/okd/export/model.onnx --bench --concurrency 1,4,16 --requests 300 --json
    """
    from mtlkd.serve import ServeOptions, serve_model

    say = (lambda line: None) if quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    with user_errors():
        check_json_target(json_out)
        options = ServeOptions(host=host, port=port, grpc_port=grpc_port, metrics_port=metrics_port,
                               max_batch_size=max_batch_size, max_queue_delay_us=max_queue_delay_us,
                               instances=instances, name=name, serve_env=serve_env, log_file=log,
                               startup_timeout_s=startup_timeout).check()  # fmt: skip
        if bench:
            from mtlkd.serve.bench import LoadTestOptions, format_table, run_load_test

            levels = [int(c) for c in concurrency.split(",") if c.strip()]
            result = run_load_test(model, options, LoadTestOptions(concurrency=levels, requests=requests,
                                                                   time_limit_s=time_limit), progress=say,
                                   quiet=quiet)
            if json_out != JSON_STDOUT:
                typer.echo(format_table(result))
            emit_json(result.to_dict(), json_out)
            if result.failed_well_formed:
                raise typer.Exit(1)
            return
        result = serve_model(model, options, progress=say, on_ready=lambda server: _ready(server, say))
    say(f"stopped ({result.reason}); tritonserver exit status {result.exit_status}")


def _ready(server, say) -> None:
    for model in server.models.values():
        say(f"model {model.name}: {model.state}")
    say(f"serving on HTTP {server.http_url}, gRPC {server.grpc_url}, metrics {server.metrics_url}")
    say(f"  health: curl -s -o /dev/null -w '%{{http_code}}\\n' http://{server.http_url}/v2/health/ready")
    say("Ctrl-C or SIGTERM stops it")


app = typer.Typer(add_completion=False)
app.command(cls=MtlCommand)(command)


if __name__ == "__main__":
    app()
