#!/usr/bin/env python3
"""Local NVIDIA Triton for tusou, without Docker and without a GPU.

PyTriton (PyPI `nvidia-pytriton`) ships a real `tritonserver` binary (Triton 2.51) with only the
Python backend. This script binds the project's ONNX models as Python callables that run them in
ONNX Runtime on the CPU, with the input/output names, dtypes, dims, max_batch_size and dynamic
batching (incl. queue policy) read from the production `config.pbtxt` files. The gateway therefore
talks KServe v2 gRPC/HTTP to a real Triton with the production wire contract; only the backend
(python+onnxruntime instead of onnxruntime/TensorRT) and the hardware differ.

Model selection (per model, e.g. clip_image):
  config  <repo>/<model>/config.pbtxt                  (always the production config)
  weights <repo>/<model>/1/model.onnx                  (real export, if present)
          <repo>/tiny/<model>/1/model.onnx             (tiny committed test model otherwise)

Normally started by deploy/local/triton.sh; see deploy/local/README-triton.md.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import pathlib
import shutil
import signal
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np

LOG = logging.getLogger("tusou.triton")

# Triton config data types -> numpy. Only types a Python-backend model can carry as numpy arrays.
_DTYPES: Dict[str, type] = {
    "TYPE_BOOL": np.bool_,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.bytes_,
}

# ONNX Runtime type strings -> numpy, to check the ONNX graph against config.pbtxt at start-up.
_ORT_DTYPES: Dict[str, type] = {
    "tensor(bool)": np.bool_,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(float16)": np.float16,
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
}


@dataclass
class IOSpec:
    """One input or output tensor as the production config declares it (dims without batch dim)."""

    name: str
    dtype: type
    dims: tuple
    optional: bool = False


@dataclass
class ModelSpec:
    """Everything needed to bind one model: parsed config plus the chosen ONNX file."""

    name: str
    config_path: pathlib.Path
    onnx_path: pathlib.Path
    variant: str  # "real" or "tiny"
    max_batch_size: int
    inputs: List[IOSpec]
    outputs: List[IOSpec]
    dynamic_batching: Optional[dict]  # MessageToDict(dynamic_batching), None if absent
    prod_instance_groups: list  # informational only
    warmup: list  # MessageToDict(model_warmup[i]); bound only with --warmup
    not_mirrored: List[str]  # config fields the local python backend cannot mirror (logged)


def parse_config(config_path: pathlib.Path):
    """Parse config.pbtxt with Triton's own protobuf schema (tritonclient ships model_config_pb2).

    Using the real schema (instead of a hand-written parser) means a typo or an unknown field in the
    production config fails here exactly as it would fail in production Triton.
    """
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    cfg = model_config_pb2.ModelConfig()
    text_format.Parse(config_path.read_text(), cfg)
    return cfg, json_format, model_config_pb2


def load_spec(repo: pathlib.Path, model: str, variant: str) -> ModelSpec:
    """Read <repo>/<model>/config.pbtxt and pick the ONNX file according to `variant`."""
    config_path = repo / model / "config.pbtxt"
    if not config_path.is_file():
        raise SystemExit(f"{model}: missing production config {config_path}")
    real = repo / model / "1" / "model.onnx"
    tiny = repo / "tiny" / model / "1" / "model.onnx"
    if variant == "real" or (variant == "auto" and real.is_file()):
        onnx_path, chosen = real, "real"
    else:
        onnx_path, chosen = tiny, "tiny"
    if not onnx_path.is_file():
        raise SystemExit(f"{model}: missing ONNX model {onnx_path} (variant={variant})")

    cfg, json_format, pb = parse_config(config_path)
    if cfg.name and cfg.name != model:
        raise SystemExit(f"{config_path}: name {cfg.name!r} does not match folder {model!r}")

    def io(t, is_input: bool) -> IOSpec:
        dt = pb.DataType.Name(t.data_type)
        if dt not in _DTYPES:
            raise SystemExit(f"{config_path}: tensor {t.name}: unsupported data_type {dt}")
        if t.HasField("reshape"):
            # Triton reshape changes what the backend sees, not the wire shape; the ONNX graph here
            # would need the reshaped form. Nobody uses it in tusou today: refuse instead of guessing.
            raise SystemExit(f"{config_path}: tensor {t.name}: 'reshape' is not supported by the local server")
        return IOSpec(
            name=t.name,
            dtype=_DTYPES[dt],
            dims=tuple(int(d) for d in t.dims),
            optional=bool(getattr(t, "optional", False)) if is_input else False,
        )

    # Fields that exist for the production backend/hardware only (GPU instances, ORT/TensorRT
    # parameters and optimisation). Logged so nobody assumes the local server honours them.
    mirrored = {"name", "platform", "backend", "max_batch_size", "input", "output", "dynamic_batching",
                "version_policy", "default_model_filename", "model_warmup"}
    not_mirrored = sorted(f.name for f, _ in cfg.ListFields() if f.name not in mirrored)

    dyn = None
    if cfg.HasField("dynamic_batching"):
        dyn = json_format.MessageToDict(cfg.dynamic_batching, preserving_proto_field_name=True)
    return ModelSpec(
        name=model,
        config_path=config_path,
        onnx_path=onnx_path,
        variant=chosen,
        max_batch_size=int(cfg.max_batch_size),
        inputs=[io(t, True) for t in cfg.input],
        outputs=[io(t, False) for t in cfg.output],
        dynamic_batching=dyn,
        prod_instance_groups=[json_format.MessageToDict(g, preserving_proto_field_name=True) for g in cfg.instance_group],
        warmup=[json_format.MessageToDict(w, preserving_proto_field_name=True) for w in cfg.model_warmup],
        not_mirrored=not_mirrored,
    )


def _queue_policy(d: Optional[dict]):
    """Config QueuePolicy (as dict) -> pytriton QueuePolicy."""
    from pytriton.model_config import QueuePolicy
    from pytriton.model_config.common import TimeoutAction

    if d is None:
        return None
    return QueuePolicy(
        timeout_action=TimeoutAction(d.get("timeout_action", "REJECT")),
        default_timeout_microseconds=int(d.get("default_timeout_microseconds", 0)),
        allow_timeout_override=bool(d.get("allow_timeout_override", False)),
        max_queue_size=int(d.get("max_queue_size", 0)),
    )


def make_batcher(spec: ModelSpec, queue_timeout_us: Optional[int] = None):
    """Mirror the production dynamic_batching block in a pytriton DynamicBatcher.

    queue_timeout_us, if set, replaces default_queue_policy.default_timeout_microseconds: production
    timeouts are sized for a GPU (a batch in milliseconds); with the real models on this CPU one batch
    takes seconds, so queued requests would be rejected with "Request timeout expired".
    """
    from pytriton.model_config import DynamicBatcher

    d = json.loads(json.dumps(spec.dynamic_batching))  # deep copy
    if d is not None and queue_timeout_us is not None:
        d.setdefault("default_queue_policy", {})["default_timeout_microseconds"] = queue_timeout_us
        LOG.warning("%s: default_queue_policy.default_timeout_microseconds overridden to %d (production: %s)",
                    spec.name, queue_timeout_us,
                    (spec.dynamic_batching.get("default_queue_policy") or {}).get("default_timeout_microseconds", 0))
    if d is None:
        # Production has no dynamic batching: keep Triton's default scheduler behaviour as close as
        # pytriton allows (a batcher with zero delay only groups requests that are already queued).
        LOG.warning("%s: config has no dynamic_batching; using a zero-delay DynamicBatcher", spec.name)
        return DynamicBatcher()
    ignored = set(d) - {
        "max_queue_delay_microseconds",
        "preferred_batch_size",
        "preserve_ordering",
        "priority_levels",
        "default_priority_level",
        "default_queue_policy",
        "priority_queue_policy",
    }
    if ignored:
        LOG.warning("%s: dynamic_batching fields not supported by pytriton, ignored: %s", spec.name, sorted(ignored))
    pq = d.get("priority_queue_policy")
    return DynamicBatcher(
        max_queue_delay_microseconds=int(d.get("max_queue_delay_microseconds", 0)),
        preferred_batch_size=[int(x) for x in d.get("preferred_batch_size", [])] or None,
        preserve_ordering=bool(d.get("preserve_ordering", False)),
        priority_levels=int(d.get("priority_levels", 0)),
        default_priority_level=int(d.get("default_priority_level", 0)),
        default_queue_policy=_queue_policy(d.get("default_queue_policy")),
        priority_queue_policy={int(k): _queue_policy(v) for k, v in pq.items()} if pq else None,
    )


def open_session(spec: ModelSpec, threads: int):
    """ONNX Runtime CPU session, checked against the config so a mismatch fails at start, not per request."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Shared 2-core machines: idle ORT worker threads must sleep, not spin.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(spec.onnx_path), sess_options=so, providers=["CPUExecutionProvider"])

    batch = 1 if spec.max_batch_size > 0 else 0
    problems = []

    def check(kind: str, declared: List[IOSpec], actual) -> None:
        by_name = {a.name: a for a in actual}
        for t in declared:
            a = by_name.get(t.name)
            if a is None:
                problems.append(f"{kind} {t.name!r} not in ONNX graph (has {sorted(by_name)})")
                continue
            if _ORT_DTYPES.get(a.type) is not t.dtype:
                problems.append(f"{kind} {t.name!r}: ONNX type {a.type} vs config {np.dtype(t.dtype).name}")
            onnx_dims = list(a.shape)[batch:]
            if len(onnx_dims) != len(t.dims):
                problems.append(f"{kind} {t.name!r}: ONNX shape {a.shape} vs config dims {list(t.dims)}")
                continue
            for od, cd in zip(onnx_dims, t.dims):
                if isinstance(od, int) and cd != -1 and od != cd:
                    problems.append(f"{kind} {t.name!r}: ONNX shape {a.shape} vs config dims {list(t.dims)}")
                    break

    check("input", spec.inputs, sess.get_inputs())
    check("output", spec.outputs, sess.get_outputs())
    required = {i.name for i in sess.get_inputs()} - {t.name for t in spec.inputs}
    if required:
        problems.append(f"ONNX inputs not declared in config: {sorted(required)}")
    if problems:
        raise SystemExit(f"{spec.name}: {spec.onnx_path} does not match {spec.config_path}:\n  " + "\n  ".join(problems))
    return sess


def make_infer_func(spec: ModelSpec, sess) -> Callable:
    """Build the pytriton callable: Triton's dynamic batcher hands it a list of requests, @batch
    concatenates them along the batch dim (Triton only co-batches requests of equal shape)."""
    from pytriton.decorators import batch

    out_names = [o.name for o in spec.outputs]
    out_dtypes = [o.dtype for o in spec.outputs]
    in_dtypes = {i.name: i.dtype for i in spec.inputs}

    def run(**inputs):
        feeds = {k: np.ascontiguousarray(v, dtype=in_dtypes[k]) for k, v in inputs.items()}
        results = sess.run(out_names, feeds)
        return {n: np.asarray(r, dtype=dt) for n, r, dt in zip(out_names, results, out_dtypes)}

    return batch(run) if spec.max_batch_size > 0 else run


def make_warmup(spec: ModelSpec):
    """Production model_warmup -> pytriton ModelWarmup (zero_data / random_data inputs only)."""
    from pytriton.model_config.common import ModelWarmup, WarmupInput

    out = []
    for w in spec.warmup:
        inputs = {}
        for name, v in w.get("inputs", {}).items():
            if "input_data_file" in v:
                raise SystemExit(f"{spec.name}: warmup {w.get('name')}: input_data_file is not supported locally")
            inputs[name] = WarmupInput(dtype=_DTYPES[v["data_type"]], shape=tuple(int(d) for d in v.get("dims", [])),
                                       zero_data=bool(v.get("zero_data")), random_data=bool(v.get("random_data")))
        out.append(ModelWarmup(name=w.get("name", "warmup"), batch_size=int(w.get("batch_size", 1)),
                               inputs=inputs, count=int(w.get("count", 1))))
    return out or None


def bind(triton, spec: ModelSpec, threads: int, instances: int, queue_timeout_us: Optional[int], warmup: bool) -> None:
    """Bind one model with the production tensors, batch size and batcher."""
    from pytriton.model_config import ModelConfig, Tensor

    sessions = [open_session(spec, threads) for _ in range(instances)]
    funcs = [make_infer_func(spec, s) for s in sessions]
    cfg = ModelConfig(
        batching=spec.max_batch_size > 0,
        max_batch_size=max(spec.max_batch_size, 0),
        batcher=make_batcher(spec, queue_timeout_us),
        model_warmup=make_warmup(spec) if warmup else None,
    )
    triton.bind(
        model_name=spec.name,
        infer_func=funcs if instances > 1 else funcs[0],
        inputs=[Tensor(name=t.name, dtype=t.dtype, shape=t.dims, optional=t.optional) for t in spec.inputs],
        outputs=[Tensor(name=t.name, dtype=t.dtype, shape=t.dims) for t in spec.outputs],
        config=cfg,
        strict=True,  # validate every output against the declared dtype/dims
    )


def redirect_output(log_file: pathlib.Path) -> None:
    """Send our stdout/stderr (and so tritonserver's, which pytriton pipes through) to one file."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)


def main(argv: Optional[List[str]] = None) -> int:
    """Parse args, load models, start Triton and serve until SIGINT/SIGTERM."""
    root = pathlib.Path(__file__).resolve().parents[2]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", type=pathlib.Path, default=root / "model_repository", help="model repository folder")
    p.add_argument("--models", default="clip_image,clip_text", help="comma-separated model names")
    p.add_argument("--variant", choices=["auto", "real", "tiny"], default="auto",
                   help="auto: real ONNX if <repo>/<m>/1/model.onnx exists, else <repo>/tiny/<m>/1/model.onnx")
    p.add_argument("--address", default="127.0.0.1", help="bind address for HTTP, gRPC and metrics")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads per model instance")
    p.add_argument("--instances", type=int, default=1,
                   help="model instances per model (production instance_group count is NOT used: CPU here)")
    p.add_argument("--run-dir", type=pathlib.Path, default=root / ".local" / "run",
                   help="pytriton workspace, lock and selection files live here")
    p.add_argument("--queue-timeout-us", type=int, default=None,
                   help="override default_queue_policy.default_timeout_microseconds (production values are "
                        "sized for a GPU; real models on CPU need seconds). Default: as in config.pbtxt")
    p.add_argument("--warmup", action="store_true",
                   help="also run the config's model_warmup (off by default: on CPU the batch-max warmups of "
                        "the real models take long and prove nothing about the GPU)")
    p.add_argument("--log-file", type=pathlib.Path, default=None, help="append all output here (default: stdout)")
    p.add_argument("--log-verbose", type=int, default=0, help="tritonserver --log-verbose level")
    p.add_argument("--dry-run", action="store_true", help="parse configs and load models, then exit")
    a = p.parse_args(argv)

    if a.log_file:
        redirect_output(a.log_file)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    a.run_dir.mkdir(parents=True, exist_ok=True)
    # One instance per machine: the ports and the workspace are fixed.
    lock = open(a.run_dir / "triton.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        LOG.error("another triton_server.py holds %s", a.run_dir / "triton.lock")
        return 2

    specs = [load_spec(a.repo.resolve(), m.strip(), a.variant) for m in a.models.split(",") if m.strip()]
    for s in specs:
        LOG.info("%s: serving %s ONNX %s with config %s (max_batch_size=%d, dynamic_batching=%s, "
                 "production instance_group=%s ignored: %d CPU instance(s), %d thread(s))",
                 s.name, s.variant.upper(), s.onnx_path, s.config_path, s.max_batch_size,
                 json.dumps(s.dynamic_batching), json.dumps(s.prod_instance_groups), a.instances, a.threads)
        if s.not_mirrored:
            LOG.info("%s: config fields not mirrored by the local python backend: %s", s.name, s.not_mirrored)
        if s.warmup and not a.warmup:
            LOG.info("%s: model_warmup (%d entries) skipped (use --warmup)", s.name, len(s.warmup))
        print(f"MODEL {s.name} variant={s.variant} onnx={s.onnx_path}", flush=True)
    if a.dry_run:
        for s in specs:
            open_session(s, a.threads)
        LOG.info("dry run OK")
        return 0

    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    workspace = a.run_dir / "pytriton-workspace"
    if workspace.exists():  # left by a killed run; we hold the lock, so nobody uses it
        shutil.rmtree(workspace)
    config = TritonConfig(
        http_address=a.address,
        http_port=a.http_port,
        grpc_address=a.address,
        grpc_port=a.grpc_port,
        metrics_address=a.address,
        metrics_port=a.metrics_port,
        # No GPU: skip the DCGM/NVML probe noise; CPU metrics stay on.
        allow_gpu_metrics=False,
        allow_cpu_metrics=True,
        log_verbose=a.log_verbose,
        exit_timeout_secs=10,  # shutdown waits at most this long for in-flight requests
        # gRPC: tritonserver itself accepts messages up to INT32_MAX bytes (hard-coded, no flag), so
        # batches of 64 images (38.5 MB) need no server setting; clients must raise their own limit.
    )

    # SIGTERM behaves like Ctrl-C: pytriton's serve() then stops tritonserver and cleans up.
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    # PyTriton restricts shared-memory, model-repository, statistics, trace and logging behind a random
    # token by default. Production Triton restricts nothing, and tests want statistics (did batching
    # happen?), so only model-repository stays restricted: an unload through it would silently break
    # the PyTriton-managed models. Everything is bound to 127.0.0.1 anyway.
    security = TritonSecurityConfig(restricted_endpoints=["model-repository"])
    triton = Triton(config=config, workspace=workspace, security_config=security)
    try:
        for s in specs:
            bind(triton, s, a.threads, a.instances, a.queue_timeout_us, a.warmup)
        triton.serve()  # blocks; returns on SIGINT/SIGTERM or when tritonserver/proxy dies
    except KeyboardInterrupt:
        LOG.info("signal received, stopping")
    finally:
        triton.stop()
    LOG.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
