"""The exported repositories on a real Triton server (2.51, from the nvidia-pytriton wheel), on this CPU.

Native backends: the server must parse and accept every config.pbtxt and fail only because the ONNX
Runtime / OpenVINO backend libraries are not in the wheel (they are in NVIDIA's containers); a config
broken on purpose shows that it would say something else. Python backend: every model READY, answering
over HTTP (Triton's own tritonclient.http, running the repository README's client code unchanged, and
mtlkd's stdlib client) and gRPC (tritonclient.grpc) with the Predictor's outputs on the same file, within
the fp32 accuracy policy: the same engine on the same bytes, so only re-association differs.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest
from serve_helpers import TASKS, free_ports

pytestmark = pytest.mark.slow
BACKEND_MISSING = "unable to find backend library"


def _options(**changes):
    from mtlkd.serve import ServeOptions

    port, grpc_port, metrics_port = free_ports()
    return ServeOptions(port=port, grpc_port=grpc_port, metrics_port=metrics_port, **changes)


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def _kept_fp32(reference: dict, served: dict) -> list[str]:
    from mtlkd.accuracy import compare_outputs, verdict

    return verdict(compare_outputs(reference, served), "fp32", trained=False).failures


def test_native_configs_are_accepted_and_fail_only_for_the_missing_backend(exported, serve_environment, tmp_path):
    from mtlkd.serve import TritonServer

    repo = tmp_path / "repo"
    shutil.copytree(exported["native"], repo)
    # The controls: the ONNX model's config with a typo, and with a preferred batch above the maximum.
    broken = {"mtlkd_typo": ("max_batch_size", "max_batch_sise", "failed to read text proto"),
              "mtlkd_batch": ("preferred_batch_size: [ 4, 8 ]", "preferred_batch_size: [ 4, 16 ]",
                              "preferred size must be <= max batch size")}  # fmt: skip
    for name, (old, new, _why) in broken.items():
        shutil.copytree(repo / "mtlkd_onnx", repo / name)
        text = (repo / name / "config.pbtxt").read_text().replace('name: "mtlkd_onnx"', f'name: "{name}"')
        assert old in text
        (repo / name / "config.pbtxt").write_text(text.replace(old, new))
    with TritonServer(repo, _options(), serve_environment) as server:
        states = server.models
        assert not server.ready()  # strict readiness: not every model loaded
    assert set(states) == {"mtlkd_onnx", "mtlkd_openvino", *broken}
    for name in ("mtlkd_onnx", "mtlkd_openvino"):
        assert states[name].state == "UNAVAILABLE" and BACKEND_MISSING in states[name].reason, states[name]
    for name, (_old, _new, why) in broken.items():
        assert states[name].state == "REJECTED" and why in states[name].reason, states[name]


README_CLIENT = re.compile(r"```python\n(.*?)```", re.S)


@pytest.mark.numerics  # the server's ONNX Runtime/OpenVINO against the Predictor's, by the policy
def test_python_backend_repository_answers_http_and_grpc_like_the_predictor(exported, serve_environment, tmp_path):
    import tritonclient.grpc as grpcclient

    from mtlkd.errors import InferError
    from mtlkd.runtime import Predictor
    from mtlkd.serve import TritonServer
    from mtlkd.serve.client import HttpClient, send_half_and_close

    files = {"mtlkd_onnx": (exported["onnx"], "onnxruntime"), "mtlkd_openvino": (exported["openvino"], "openvino")}
    rng = np.random.default_rng(0)
    images = rng.random((3, 3, 32, 32), dtype=np.float32)
    with TritonServer(exported["python"], _options(), serve_environment) as server:
        assert {n: m.state for n, m in server.models.items()} == {n: "READY" for n in files}
        assert server.ready()
        pgid = server.process.pid
        grpc = grpcclient.InferenceServerClient(url=server.grpc_url)
        assert grpc.is_server_live() and grpc.is_model_ready("mtlkd_onnx")
        http = HttpClient(server.http_url)
        for name, (path, backend) in files.items():
            reference = Predictor.load(path, backend=backend).run_raw(images, TASKS)
            request = grpcclient.InferInput("image", list(images.shape), "FP32")
            request.set_data_from_numpy(images)
            answer = grpc.infer(name, [request], outputs=[grpcclient.InferRequestedOutput(t) for t in TASKS])
            assert not _kept_fp32(reference, {t: answer.as_numpy(t) for t in TASKS}), name
            assert not _kept_fp32(reference, http.infer(name, images, TASKS)), name

        # Requests a server must refuse, each with its own error, while it goes on answering the others.
        refused = {"wrong shape": lambda: http.infer("mtlkd_onnx", images[:, :, :16], TASKS),
                   "wrong dtype": lambda: http.infer("mtlkd_onnx", images, TASKS, datatype="FP64"),
                   "batch above the maximum": lambda: http.infer("mtlkd_onnx", np.zeros((9, 3, 32, 32)), TASKS),
                   "unknown output": lambda: http.infer("mtlkd_onnx", images, ["albedo"])}  # fmt: skip
        for what, send in refused.items():
            with pytest.raises(InferError) as error:
                send()
            assert error.value.status == 400, (what, error.value)
        send_half_and_close(server.http_url, "mtlkd_onnx", images, TASKS)
        reference = Predictor.load(exported["onnx"], backend="onnxruntime").run_raw(images[:1], TASKS)
        assert not _kept_fp32(reference, http.infer("mtlkd_onnx", images[:1], TASKS))
        http.close()

        # The repository README's client code, run unchanged by Triton's own tritonclient.http.
        snippet = README_CLIENT.search((exported["python"] / "README.md").read_text())[1]
        snippet = snippet.replace("localhost:8000", server.http_url)  # the one thing a user changes: the address
        save = f"np.savez(r'{tmp_path / 'out.npz'}', image=image, **outputs)"
        script = f"import numpy as np\nnp.random.seed(7)\n{snippet}\n{save}\n"
        done = subprocess.run([str(serve_environment.prefix / "bin" / "python"), "-c", script], capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
    assert _group_gone(pgid)  # the server and its stubs ended
    saved = np.load(tmp_path / "out.npz")
    reference = Predictor.load(exported["onnx"], backend="onnxruntime").run_raw(saved["image"], TASKS)
    assert not _kept_fp32(reference, {t: saved[t] for t in TASKS})


@pytest.mark.numerics  # the server's ONNX Runtime/OpenVINO against the Predictor's, by the policy
def test_a_model_file_is_served_with_dynamic_batching(exported, serve_environment, tmp_path):
    """Eight clients at once with a long queue delay: the server gathers them, so the model runs fewer
    times than it answers (Triton's own counters), and each answer is that client's own image's."""
    from mtlkd.runtime import Predictor
    from mtlkd.serve import TritonServer, prepare_repository
    from mtlkd.serve.client import HttpClient

    options = _options(max_batch_size=8, max_queue_delay_us=200_000)
    repository, names = prepare_repository(exported["onnx"], options, tmp_path)
    assert names == ["mtlkd_onnx"]
    server = TritonServer(repository, options, serve_environment)
    images = np.random.default_rng(1).random((8, 1, 3, 32, 32), dtype=np.float32)
    answers: dict[int, dict] = {}

    def client(i: int) -> None:
        connection = HttpClient(server.http_url)
        answers[i] = connection.infer("mtlkd_onnx", images[i], TASKS)
        connection.close()

    with server:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        metrics = _metrics(server.metrics_url)
    assert len(answers) == 8
    predictor = Predictor.load(exported["onnx"], backend="onnxruntime")
    for i, answer in answers.items():
        assert not _kept_fp32(predictor.run_raw(images[i], TASKS), answer), i
    assert metrics["nv_inference_count"] == 8 and metrics["nv_inference_exec_count"] < 8, metrics


def _metrics(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    totals: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"(nv_inference_(?:count|exec_count))\{[^}]*\} (\S+)", line)
        if match:
            totals[match[1]] = totals.get(match[1], 0.0) + float(match[2])
    return totals


def _start_mtl_serve(model, stdout=subprocess.PIPE) -> tuple[subprocess.Popen, int, list[str]]:
    """`mtl-serve MODEL` on free ports, read until it says it serves or fails: (process, HTTP port, lines)."""
    port, grpc_port, metrics_port = free_ports()
    command = [sys.executable, "-m", "mtlkd.cli.serve", str(model), "--port", str(port),
               "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port)]  # fmt: skip
    process = subprocess.Popen(command, stdout=stdout, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in process.stderr:
            lines.append(line)
            if "stops it" in line or "error" in line:
                break
    except BaseException:  # never leave a server behind
        process.kill()
        raise
    return process, port, lines


@pytest.mark.parametrize("stop_with", [signal.SIGINT, signal.SIGTERM])
def test_mtl_serve_runs_and_stops_cleanly_on_ctrl_c_and_sigterm(exported, serve_environment, stop_with):
    process, port, lines = _start_mtl_serve(exported["openvino"])
    try:
        assert any("model mtlkd_openvino: READY" in line for line in lines), "".join(lines)
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=5).status == 200
        found = subprocess.run(["pgrep", "-f", "--", f"--http-port={port}"], capture_output=True, text=True)
        server_pids = found.stdout.split()
        assert server_pids
        process.send_signal(stop_with)
        _out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:  # a failed check above: never leave a server behind
            process.terminate()
            process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert f"stopped ({stop_with.name}); tritonserver exit status 0" in err
    assert all(_group_gone(int(pid)) for pid in server_pids)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_killed_mtl_serve_does_not_leave_its_server_running(exported, serve_environment):
    from mtlkd.serve.server import EXIT_TIMEOUT_S

    process, port, lines = _start_mtl_serve(exported["openvino"], stdout=subprocess.DEVNULL)
    server_pids: list[str] = []
    try:
        assert any("READY" in line for line in lines), "".join(lines)
        found = subprocess.run(["pgrep", "-f", "--", f"--http-port={port}"], capture_output=True, text=True)
        server_pids = found.stdout.split()
        assert server_pids
        process.kill()  # SIGKILL: mtl-serve runs no code of its own to stop the server
        process.wait(timeout=10)
        deadline = time.monotonic() + EXIT_TIMEOUT_S + 20
        while not all(_group_gone(int(pid)) for pid in server_pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert all(_group_gone(int(pid)) for pid in server_pids), "tritonserver outlived a SIGKILLed mtl-serve"
    finally:
        if process.poll() is None:
            process.kill()
        for pid in server_pids:  # a failed check above: never leave a server behind
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid), signal.SIGKILL)


@pytest.mark.numerics  # the server's ONNX Runtime/OpenVINO against the Predictor's, by the policy
def test_the_load_test_checks_every_answer_and_refuses_the_malformed(exported, serve_environment):
    """Bounded by count: every well-formed request answered with the Predictor's output, every malformed one
    refused, at each concurrency, with Triton's own counters behind the mean batch."""
    from mtlkd.serve.bench import LoadTestOptions, format_table, run_load_test

    result = run_load_test(exported["onnx"], _options(), LoadTestOptions(concurrency=[1, 4], requests=24),
                           quiet=True)  # fmt: skip
    assert [level.concurrency for level in result.levels] == [1, 4]
    for level in result.levels:
        assert (level.answered, level.errors) == (24, 0), level.first_error
        assert level.malformed_sent >= 4 and level.malformed_refused == level.malformed_sent
        assert level.mean_batch is not None and 1 <= level.mean_batch <= 8
        assert level.predictor_throughput > 0 and level.p50_ms <= level.p99_ms
    assert result.predictor.answered == 48 and "C=4" in format_table(result)


def test_a_checkpoint_is_exported_to_onnx_in_the_workspace_and_served_from_there(exported, tmp_path):
    """No server needed: the repository a .safetensors becomes, built beside nothing of the user's."""
    from mtlkd.runtime import Predictor
    from mtlkd.serve import prepare_repository

    before = sorted(p.name for p in exported["checkpoint"].parent.iterdir())
    repository, names = prepare_repository(exported["checkpoint"], _options(name="nano"), tmp_path)
    assert names == ["nano"] and repository == tmp_path / "models"
    assert {p.name for p in (repository / "nano" / "1").iterdir()} == {"model.onnx", "model.py"}
    assert 'backend: "python"' in (repository / "nano" / "config.pbtxt").read_text()
    assert Predictor.load(repository / "nano" / "1" / "model.onnx").tasks == TASKS
    assert sorted(p.name for p in exported["checkpoint"].parent.iterdir()) == before
