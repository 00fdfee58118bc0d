"""A stand-in for the `tensorrt` module's builder API (no TensorRT or GPU here): it records what the
exporter asks of it and can be told to behave like the real thing does on a user's machine (a timing
cache from another GPU, no timing cache after the build)."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field

import pytest


@dataclass
class TrtState:
    rejected_cache: bytes = b"other-gpu"  # set_timing_cache returns False for a cache made from these bytes
    cache_after_build: bool = True  # False: get_timing_cache() returns None
    flags: set = field(default_factory=lambda: {"TF32"})  # TensorRT enables TF32 by default
    profile: tuple | None = None
    caches_set: list = field(default_factory=list)


class _Cache:
    def __init__(self, data: bytes):
        self.data = data

    def serialize(self) -> bytes:
        return b"fresh-timings" if not self.data else self.data + b"+timings"


class _Config:
    def __init__(self, state: TrtState):
        self.state, self.cache = state, None

    def set_memory_pool_limit(self, pool, size):
        assert size > 0

    def set_flag(self, flag):
        self.state.flags.add(flag)

    def clear_flag(self, flag):
        self.state.flags.discard(flag)

    def add_optimization_profile(self, profile):
        self.state.profile = profile.shapes

    def create_timing_cache(self, data: bytes):
        return _Cache(bytes(data))

    def set_timing_cache(self, cache, ignore_mismatch: bool) -> bool:
        self.state.caches_set.append(cache.data)
        if cache.data == self.state.rejected_cache:
            return False
        self.cache = cache
        return True

    def get_timing_cache(self):
        return self.cache if self.state.cache_after_build else None


class _Profile:
    def set_shape(self, name, low, opt, high):
        self.shapes = (name, low, opt, high)


def make_fake_tensorrt(state: TrtState) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "11.1.0"

    class Logger:
        WARNING, VERBOSE = 2, 4

        def __init__(self, level):
            self.level = level

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return object()

        def create_builder_config(self):
            return _Config(state)

        def create_optimization_profile(self):
            return _Profile()

        def build_serialized_network(self, network, config):
            return b"ENGINE-" + ("tf32" if "TF32" in state.flags else "fp32").encode()

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            return True

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, OnnxParser
    trt.BuilderFlag = types.SimpleNamespace(TF32="TF32")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=0)
    return trt


@pytest.fixture
def fake_tensorrt(monkeypatch) -> TrtState:
    """Install the stand-in as `tensorrt` for one test; returns its state."""
    state = TrtState()
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt(state))
    return state
