"""The load test of `mtl-serve --bench`: C concurrent clients against the served model, and the same model
in one process.

For each concurrency C: C client threads, each with its own keep-alive HTTP connection, send batch-1
requests until `requests` have been answered or `time_limit_s` has passed (bounded in count and in time,
loopback only). Every answer is compared with the Predictor's output for that image on the same file and
backend, under the fp32 accuracy policy: a wrong answer counts as an error. Meanwhile one more client sends,
every 0.2 s in turn, requests the server must refuse (a wrong shape, a wrong dtype, a batch above the
maximum) and one that hangs up halfway; each must get an error (or, the half request, nothing) while the
others go on.

The reference is the single-process Predictor (`Predictor.run_raw`, batch 1, one image after another): what
serving adds, or gains through dynamic batching, on the same machine. Within each level the two take turns
(ROUNDS rounds of a quarter of the requests each, the server idle while the Predictor runs), so that each
ratio compares measurements taken under the same load from other jobs; clients, server and reference share
the CPUs.
"""

from __future__ import annotations

import itertools
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtlkd.accuracy import compare_outputs, verdict
from mtlkd.errors import ConfigError, InferError
from mtlkd.serve.client import HttpClient, send_half_and_close
from mtlkd.serve.options import ServeOptions
from mtlkd.serve.server import TritonServer, prepare_repository

POOL = 16  # distinct images the clients cycle through (each with its Predictor reference)
WARMUP = 8  # requests before timing: the stub's first calls pay for lazy initialisation
ROUNDS = 4  # per level, the Predictor and the clients take turns this often: both see the same load from others
MALFORMED_EVERY_S = 0.2  # one malformed request this often: present throughout, a small share of the load


@dataclass
class LoadTestOptions:
    concurrency: Sequence[int] = (1, 4, 16)
    requests: int = 200  # well-formed requests answered per concurrency level, at most
    time_limit_s: float = 60.0  # per level, at most
    malformed: bool = True  # one more client sends requests the server must refuse

    def check(self) -> LoadTestOptions:
        if not self.concurrency or any(not 1 <= int(c) <= 256 for c in self.concurrency):
            raise ConfigError(f"--concurrency {','.join(map(str, self.concurrency))}: each level 1 to 256 clients")
        if self.requests < 1:
            raise ConfigError(f"--requests {self.requests}: at least 1")
        if self.time_limit_s <= 0:
            raise ConfigError(f"--time-limit {self.time_limit_s}: more than 0 seconds")
        return self


@dataclass
class Level:
    """One concurrency level (or the single-process reference, concurrency 0)."""

    concurrency: int
    answered: int  # well-formed requests answered correctly
    errors: int  # well-formed requests that failed or came back wrong
    seconds: float
    p50_ms: float
    p99_ms: float
    malformed_sent: int = 0
    malformed_refused: int = 0  # of those, answered with an error (the half request: nothing answered)
    mean_batch: float | None = None  # images per network call on the server (Triton's counters)
    first_error: str = ""
    predictor_throughput: float | None = None  # the Predictor's, measured in turns with this level

    @property
    def speedup(self) -> float | None:
        """This level's throughput over the Predictor's measured beside it (the load on the machine alike)."""
        return self.throughput / self.predictor_throughput if self.predictor_throughput else None

    @property
    def throughput(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0


@dataclass
class LoadTestResult:
    model: str
    backend: str
    input_size: tuple[int, int]
    max_batch_size: int
    max_queue_delay_us: int
    predictor: Level
    levels: list[Level] = field(default_factory=list)

    @property
    def failed_well_formed(self) -> int:
        return sum(level.errors for level in self.levels)

    def to_dict(self) -> dict[str, Any]:
        rows = [{**asdict(level), "throughput": level.throughput, "speedup": level.speedup}
                for level in [self.predictor, *self.levels]]
        return {"model": self.model, "backend": self.backend, "input_size": list(self.input_size),
                "max_batch_size": self.max_batch_size, "max_queue_delay_us": self.max_queue_delay_us,
                "predictor": rows[0], "levels": rows[1:]}  # fmt: skip


def _latency(samples: list[float]) -> tuple[float, float]:
    if not samples:
        return float("nan"), float("nan")
    ms = np.asarray(samples) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


@dataclass
class _Alone:
    answered: int
    seconds: float
    samples: list[float]

    @property
    def throughput(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0


def _predictor_level(predictor: Any, images: np.ndarray, tasks: list[str], count: int, limit_s: float) -> _Alone:
    samples, start = [], time.perf_counter()
    for i in range(count):
        t0 = time.perf_counter()
        predictor.run_raw(images[i % len(images)][None], tasks)
        samples.append(time.perf_counter() - t0)
        if t0 - start > limit_s:
            break
    return _Alone(len(samples), time.perf_counter() - start, samples)


def run_load_test(model: str | Path, serve: ServeOptions | None = None, options: LoadTestOptions | None = None,
                  progress: Callable[[str], None] | None = None, quiet: bool = False) -> LoadTestResult:  # fmt: skip
    """Serve `model` (a model file) on loopback, load-test it at each concurrency, stop the server."""
    from mtlkd.export.triton import kind_of, runtime_backend
    from mtlkd.runtime import Predictor

    serve = (serve or ServeOptions()).check()
    options = (options or LoadTestOptions()).check()
    if serve.host not in ("127.0.0.1", "::1"):
        raise ConfigError(f"--host {serve.host}: the load test runs on loopback only (127.0.0.1 or ::1)")
    say = progress or (lambda _line: None)
    model = Path(model)
    if model.is_dir():
        raise ConfigError(f"{model}: --bench takes a model file (it compares the server with the Predictor on it)")
    with tempfile.TemporaryDirectory(prefix="mtl-serve-bench-") as workspace:
        repository, (name,) = prepare_repository(model, serve, workspace, say)
        served = next(p for p in (repository / name / "1").iterdir() if kind_of(p))
        backend = runtime_backend(kind_of(served))
        predictor = Predictor.load(served, backend=backend)
        tasks, (height, width) = predictor.tasks, predictor.input_size
        images = np.random.default_rng(0).random((POOL, 3, height, width), dtype=np.float32)
        references = [predictor.run_raw(image[None], tasks) for image in images]
        for image in images[:WARMUP]:
            predictor.run_raw(image[None], tasks)
        result = LoadTestResult(str(model), backend, (height, width), serve.max_batch_size, serve.max_queue_delay_us,
                                Level(0, 0, 0, 0.0, float("nan"), float("nan")))  # fmt: skip
        samples: list[float] = []
        say(f"starting Triton on {repository} ...")
        with TritonServer(repository, serve) as server:
            client = HttpClient(server.http_url)
            for image in images[:WARMUP]:
                client.infer(name, image[None], tasks)
            client.close()
            for concurrency in options.concurrency:
                say(f"{concurrency} client(s) and the single-process Predictor ({backend}, batch 1) in turn, "
                    f"{ROUNDS} rounds; each {options.requests} requests or {options.time_limit_s:g} s ...")
                level, alone = _level(server, predictor, name, tasks, images, references, int(concurrency), options,
                                      quiet)  # fmt: skip
                samples += alone.samples
                result.predictor.answered += alone.answered
                result.predictor.seconds += alone.seconds
                result.levels.append(level)
    result.predictor.p50_ms, result.predictor.p99_ms = _latency(samples)
    return result


def _level(server: TritonServer, predictor: Any, name: str, tasks: list[str], images: np.ndarray,
           references: list[dict], concurrency: int, options: LoadTestOptions,
           quiet: bool) -> tuple[Level, _Alone]:  # fmt: skip
    """One concurrency level: ROUNDS times the Predictor alone, then the clients, a share of the count each."""
    from mtlkd.ui import progress_bar

    counts = [options.requests // ROUNDS + (r < options.requests % ROUNDS) for r in range(ROUNDS)]
    limit_s = options.time_limit_s / ROUNDS
    alone, rounds = _Alone(0, 0.0, []), []
    before = _counters(server.metrics_url)
    with progress_bar("req", quiet=quiet) as bar:
        task = bar.add_task(f"C={concurrency}", total=options.requests, info="")
        for count in counts:
            part = _predictor_level(predictor, images, tasks, count, limit_s)
            alone = _Alone(alone.answered + part.answered, alone.seconds + part.seconds, alone.samples + part.samples)
            rounds.append(_clients(server, name, tasks, images, references, concurrency, count, limit_s,
                                   options.malformed, bar, task))  # fmt: skip
    after = _counters(server.metrics_url)
    calls = after.get("nv_inference_exec_count", 0) - before.get("nv_inference_exec_count", 0)
    images_run = after.get("nv_inference_count", 0) - before.get("nv_inference_count", 0)
    samples = [x for r in rounds for x in r["samples"]]
    p50, p99 = _latency(samples)
    level = Level(concurrency, len(samples), sum(r["errors"] for r in rounds), sum(r["seconds"] for r in rounds),
                  p50, p99, sum(r["sent"] for r in rounds), sum(r["refused"] for r in rounds),
                  images_run / calls if calls else None, next((r["error"] for r in rounds if r["error"]), ""),
                  alone.throughput)  # fmt: skip
    return level, alone


def _clients(server: TritonServer, name: str, tasks: list[str], images: np.ndarray, references: list[dict],
             concurrency: int, count: int, limit_s: float, malformed: bool, bar: Any, task: Any) -> dict:  # fmt: skip
    """`concurrency` clients until `count` requests were answered or `limit_s` passed, and the malformed."""
    lock, samples, errors, first_error = threading.Lock(), [], [0], [""]
    issued = [0]
    deadline = time.monotonic() + limit_s
    stop = threading.Event()

    def take() -> int | None:
        with lock:
            if issued[0] >= count or time.monotonic() > deadline:
                return None
            issued[0] += 1
            return issued[0] - 1

    def client(bar: Any, task: Any) -> None:
        connection = HttpClient(server.http_url)
        while (k := take()) is not None:
            i = k % len(images)
            t0 = time.perf_counter()
            try:
                answer = connection.infer(name, images[i][None], tasks)
                failures = verdict(compare_outputs(references[i], answer), "fp32", trained=False).failures
                problem = f"answer {k} differs: {failures[0]}" if failures else ""
            except (InferError, OSError, ValueError) as error:
                problem = f"request {k}: {type(error).__name__}: {error}"
            elapsed = time.perf_counter() - t0
            with lock:
                if problem:
                    errors[0] += 1
                    first_error[0] = first_error[0] or problem
                else:
                    samples.append(elapsed)
                bar.update(task, advance=1)
        connection.close()

    refused = [0, 0]  # sent, refused

    def saboteur() -> None:
        connection, image = HttpClient(server.http_url), images[0]
        bad = [lambda: connection.infer(name, image[None, :, : image.shape[1] // 2], tasks),  # wrong shape
               lambda: connection.infer(name, image[None], tasks, datatype="FP64"),  # wrong dtype
               lambda: connection.infer(name, np.repeat(image[None], server.options.max_batch_size + 1, 0), tasks)]
        for k in itertools.count():
            if k >= len(bad) + 1 and stop.wait(MALFORMED_EVERY_S):  # each kind at least once, then paced
                break
            refused[0] += 1
            if k % 4 == 3:
                try:
                    send_half_and_close(server.http_url, name, image[None], tasks)
                    refused[1] += 1  # nothing came back, and the server goes on (the other clients say so)
                except OSError:
                    pass
                continue
            try:
                bad[k % 4]()
            except InferError:
                refused[1] += 1
        connection.close()

    threads = [threading.Thread(target=client, args=(bar, task)) for _ in range(concurrency)]
    side = threading.Thread(target=saboteur) if malformed else None
    start = time.perf_counter()
    for thread in threads + ([side] if side else []):
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    stop.set()
    if side:
        side.join()
    return {"samples": samples, "errors": errors[0], "seconds": seconds, "sent": refused[0], "refused": refused[1],
            "error": first_error[0]}


def _counters(url: str) -> dict[str, float]:
    """Triton's inference counters summed over models: images run and network calls (for the mean batch)."""
    import re
    import urllib.request

    text = urllib.request.urlopen(url, timeout=5).read().decode()
    totals: dict[str, float] = {}
    for match in re.finditer(r"^(nv_inference_(?:count|exec_count))\{[^}]*\} (\S+)$", text, re.M):
        totals[match[1]] = totals.get(match[1], 0.0) + float(match[2])
    return totals


def format_table(result: LoadTestResult) -> str:
    """The levels as a plain text table, the single-process Predictor first."""
    head = (f"{result.model}: {result.backend}, {result.input_size[0]}x{result.input_size[1]}, max batch "
            f"{result.max_batch_size}, queue delay {result.max_queue_delay_us} us")
    rows = [f"{'clients':>18} {'answered':>8} {'img/s':>8} {'x Predictor':>11} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'errors':>6} {'mean batch':>10} {'malformed refused':>17}",
            "(x Predictor: over the single-process Predictor's img/s, measured in turns with that level)"]
    for level in [result.predictor, *result.levels]:
        label = "Predictor (1 proc)" if level.concurrency == 0 else f"C={level.concurrency}"
        ratio = 1.0 if level.concurrency == 0 else (level.speedup or float("nan"))
        batch = "-" if level.mean_batch is None else f"{level.mean_batch:.2f}"
        malformed = "-" if level.concurrency == 0 else f"{level.malformed_refused}/{level.malformed_sent}"
        rows.append(f"{label:>18} {level.answered:>8} {level.throughput:>8.1f} {ratio:>11.2f} {level.p50_ms:>8.2f} "
                    f"{level.p99_ms:>8.2f} {level.errors:>6} {batch:>10} {malformed:>17}")
        if level.first_error:
            rows.append(f"{'':>18} first error: {level.first_error}")
    return "\n".join([head, *rows])
