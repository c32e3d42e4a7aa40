#!/usr/bin/env python3
"""Local NVIDIA Triton for tusou, without Docker and without a GPU.

PyTriton (PyPI `nvidia-pytriton`) ships a real `tritonserver` binary (Triton 2.51) with only the
Python backend. This script writes a Triton model repository in which every version of every model is
a Python-backend model (deploy/local/triton_onnx_model.py) running its ONNX file in ONNX Runtime on the
CPU, with the config derived from the production `config.pbtxt` (input/output names, dtypes, dims,
max_batch_size, dynamic batching incl. queue policy, and the version_policy), then runs tritonserver on
it. The gateway therefore talks KServe v2 gRPC/HTTP to a real Triton with the production wire contract
and version handling; only the backend (python+onnxruntime instead of onnxruntime/TensorRT) and the
hardware differ.

Model selection (per model, e.g. clip_image):
  config   <repo>/<model>/config.pbtxt                 (always the production config)
  versions <repo>/<model>/<N>/model.onnx               (real exports, if any version directory has one)
           <repo>/tiny/<model>/<N>/model.onnx          (tiny committed test models otherwise)
Every version found is put in the local repository; the config's version_policy decides which ones
Triton serves (the production policy serves the two highest), exactly as in production.

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
import subprocess
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import triton_onnx_model  # noqa: E402  (next to this file; also the backend's model.py)

LOG = logging.getLogger("tusou.triton")

# Fields of the production config that the local python backend serves as they are. Everything else
# (instance_group, optimization, parameters, platform, default_model_filename) belongs to the production
# backend/hardware and is replaced; it is logged so nobody assumes the local server honours it.
_KEPT = {"name", "max_batch_size", "input", "output", "dynamic_batching", "version_policy", "model_warmup"}

# Python backend shared memory per stub process: start with room for one batch of 8 images (~5 MB) and
# grow in large steps (a batch of 128 images is 77 MB; the default 1 MB steps would grow 77 times).
_SHM_DEFAULT = 16 << 20
_SHM_GROWTH = 64 << 20


@dataclass
class ModelSpec:
    """One model: its production config and the ONNX file of each version found."""

    name: str
    config_path: pathlib.Path
    variant: str  # "real" or "tiny"
    cfg: object  # model_config_pb2.ModelConfig (production, parsed)
    versions: Dict[int, pathlib.Path]  # every version directory with a model.onnx
    served: List[int]  # the versions the config's version_policy serves, ascending
    not_mirrored: List[str]


def parse_config(config_path: pathlib.Path):
    """Parse config.pbtxt with Triton's own protobuf schema (tritonclient ships model_config_pb2).

    Using the real schema (instead of a hand-written parser) means a typo or an unknown field in the
    production config fails here exactly as it would fail in production Triton.
    """
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    cfg = model_config_pb2.ModelConfig()
    text_format.Parse(config_path.read_text(), cfg)
    return cfg


def find_versions(model_dir: pathlib.Path) -> Dict[int, pathlib.Path]:
    """Numbered subdirectories holding a model.onnx, as Triton reads a repository."""
    if not model_dir.is_dir():
        return {}
    return {int(d.name): d / "model.onnx" for d in model_dir.iterdir()
            if d.name.isdigit() and (d / "model.onnx").is_file()}


def served_versions(cfg, available: List[int], where: str) -> List[int]:
    """The versions Triton's version_policy picks from `available` (Triton's default: latest 1)."""
    vp = cfg.version_policy
    kind = vp.WhichOneof("policy_choice") or "latest"
    if kind == "all":
        return sorted(available)
    if kind == "specific":
        want = sorted(int(v) for v in vp.specific.versions)
        missing = [v for v in want if v not in available]
        if missing:  # production Triton fails such a model too
            raise SystemExit(f"{where}: version_policy.specific wants versions {missing}, found only {sorted(available)}")
        return want
    n = int(vp.latest.num_versions) if vp.HasField("latest") else 1
    return sorted(available)[-max(n, 1):]


def load_spec(repo: pathlib.Path, model: str, variant: str) -> ModelSpec:
    """Read <repo>/<model>/config.pbtxt and pick the version directories according to `variant`."""
    config_path = repo / model / "config.pbtxt"
    if not config_path.is_file():
        raise SystemExit(f"{model}: missing production config {config_path}")
    real, tiny = find_versions(repo / model), find_versions(repo / "tiny" / model)
    if variant == "real" or (variant == "auto" and real):
        versions, chosen, where = real, "real", repo / model
    else:
        versions, chosen, where = tiny, "tiny", repo / "tiny" / model
    if not versions:
        raise SystemExit(f"{model}: no <N>/model.onnx under {where} (variant={variant})")

    cfg = parse_config(config_path)
    if cfg.name and cfg.name != model:
        raise SystemExit(f"{config_path}: name {cfg.name!r} does not match folder {model!r}")
    for t in list(cfg.input) + list(cfg.output):
        if t.HasField("reshape"):
            # Triton reshape changes what the backend sees, not the wire shape; the ONNX graph here
            # would need the reshaped form. Nobody uses it in tusou today: refuse instead of guessing.
            raise SystemExit(f"{config_path}: tensor {t.name}: 'reshape' is not supported by the local server")
    return ModelSpec(
        name=model,
        config_path=config_path,
        variant=chosen,
        cfg=cfg,
        versions=versions,
        served=served_versions(cfg, list(versions), str(config_path)),
        not_mirrored=sorted(f.name for f, _ in cfg.ListFields() if f.name not in _KEPT | {"platform", "backend"}),
    )


def local_config(spec: ModelSpec, threads: int, instances: int, queue_timeout_us: Optional[int], warmup: bool):
    """The production config rewritten for the python backend on CPU (everything else kept)."""
    from tritonclient.grpc import model_config_pb2 as mc

    cfg = mc.ModelConfig()
    cfg.CopyFrom(spec.cfg)
    cfg.name = spec.name
    for f in ("platform", "default_model_filename", "instance_group", "optimization", "parameters"):
        cfg.ClearField(f)
    cfg.backend = "python"
    cfg.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=instances)
    cfg.parameters[triton_onnx_model.THREADS_PARAM].string_value = str(threads)
    if not warmup:
        cfg.ClearField("model_warmup")
    if queue_timeout_us is not None and cfg.HasField("dynamic_batching"):
        # Production timeouts are sized for a GPU (a batch in milliseconds); on this CPU one batch of the
        # real models takes seconds, so queued requests would be rejected with "Request timeout expired".
        qp = cfg.dynamic_batching.default_queue_policy
        LOG.warning("%s: default_queue_policy.default_timeout_microseconds overridden to %d (production: %d)",
                    spec.name, queue_timeout_us, qp.default_timeout_microseconds)
        qp.default_timeout_microseconds = queue_timeout_us
    return cfg


def write_repository(out: pathlib.Path, specs: List[ModelSpec], threads: int, instances: int,
                     queue_timeout_us: Optional[int], warmup: bool) -> None:
    """<out>/<model>/config.pbtxt and <out>/<model>/<N>/{model.py, model.onnx -> the chosen export}."""
    from google.protobuf import text_format

    if out.exists():
        shutil.rmtree(out)
    for s in specs:
        mdir = out / s.name
        mdir.mkdir(parents=True)
        cfg = local_config(s, threads, instances, queue_timeout_us, warmup)
        (mdir / "config.pbtxt").write_text(f"# generated by {pathlib.Path(__file__).name} from {s.config_path}\n"
                                           + text_format.MessageToString(cfg))
        for v, onnx_path in sorted(s.versions.items()):
            vdir = mdir / str(v)
            vdir.mkdir()
            shutil.copyfile(HERE / "triton_onnx_model.py", vdir / "model.py")
            (vdir / "model.onnx").symlink_to(onnx_path.resolve())


def check_models(specs: List[ModelSpec], threads: int) -> None:
    """Load every served version in ONNX Runtime here and check it against its config (--dry-run)."""
    from google.protobuf import json_format

    for s in specs:
        cfg = json_format.MessageToDict(s.cfg, preserving_proto_field_name=True)
        for v in s.served:
            sess = triton_onnx_model.open_session(str(s.versions[v]), threads)
            try:
                triton_onnx_model.check_session(sess, cfg, f"{s.name} version {v}: {s.versions[v]}")
            except ValueError as e:
                raise SystemExit(str(e))


def backend_dir(run_dir: pathlib.Path) -> pathlib.Path:
    """A backends/python folder with PyTriton's python backend and the stub built for this interpreter."""
    from pytriton.utils.distribution import get_root_module_path, get_stub_path

    dist = get_root_module_path() / "tritonserver"
    out = run_dir / "triton-backends"
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(dist / "backends", out, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(get_stub_path(f"{sys.version_info[0]}.{sys.version_info[1]}"),
                out / "python" / "triton_python_backend_stub")
    return out


def tritonserver_command(a, repo: pathlib.Path, backends: pathlib.Path) -> List[str]:
    from pytriton.utils.distribution import get_root_module_path

    return [
        str(get_root_module_path() / "tritonserver" / "bin" / "tritonserver"),
        f"--model-repository={repo}",
        "--model-control-mode=none",  # load every model and version the repository holds, as production
        "--strict-readiness=true",
        "--exit-on-error=true",  # a model that fails to load stops the server (triton.sh shows the log)
        f"--exit-timeout-secs=10",  # shutdown waits at most this long for in-flight requests
        f"--http-address={a.address}", f"--http-port={a.http_port}",
        f"--grpc-address={a.address}", f"--grpc-port={a.grpc_port}",
        f"--metrics-address={a.address}", f"--metrics-port={a.metrics_port}",
        # No GPU: skip the DCGM/NVML probe noise; CPU metrics stay on.
        "--allow-gpu-metrics=false", "--allow-cpu-metrics=true",
        f"--log-verbose={a.log_verbose}",
        f"--backend-directory={backends}",
        f"--backend-config=python,shm-default-byte-size={_SHM_DEFAULT}",
        f"--backend-config=python,shm-growth-byte-size={_SHM_GROWTH}",
        # gRPC: tritonserver accepts messages up to INT32_MAX bytes (hard-coded, no flag), so batches of
        # 64 images (38.5 MB) need no server setting; clients must raise their own limit.
    ]


def tritonserver_env() -> Dict[str, str]:
    """PyTriton's bundled libraries on LD_LIBRARY_PATH; this venv first on PATH, so the backend stub's
    embedded Python finds the venv (numpy, onnxruntime) the way PyTriton arranges it."""
    from pytriton.utils.distribution import get_libs_path

    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join(p for p in (env.get("LD_LIBRARY_PATH"), str(get_libs_path())) if p)
    env["PATH"] = f"{pathlib.Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


def redirect_output(log_file: pathlib.Path) -> None:
    """Send our stdout/stderr (and so tritonserver's, which inherits them) to one file."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)


def main(argv: Optional[List[str]] = None) -> int:
    """Parse args, write the local model repository, run tritonserver until SIGINT/SIGTERM."""
    root = HERE.parents[1]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", type=pathlib.Path, default=root / "model_repository", help="model repository folder")
    p.add_argument("--models", default="clip_image,clip_text", help="comma-separated model names")
    p.add_argument("--variant", choices=["auto", "real", "tiny"], default="auto",
                   help="auto: real ONNX if <repo>/<m>/<N>/model.onnx exists, else <repo>/tiny/<m>/<N>/model.onnx")
    p.add_argument("--address", default="127.0.0.1", help="bind address for HTTP, gRPC and metrics")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads per model instance")
    p.add_argument("--instances", type=int, default=1,
                   help="CPU instances per model version (the production instance_group is NOT used: CPU here)")
    p.add_argument("--run-dir", type=pathlib.Path, default=root / ".local" / "run",
                   help="local model repository, backend copy, lock and served-versions file live here")
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
    # One instance per machine: the ports and the local repository are fixed.
    lock = open(a.run_dir / "triton.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        LOG.error("another triton_server.py holds %s", a.run_dir / "triton.lock")
        return 2

    specs = [load_spec(a.repo.resolve(), m.strip(), a.variant) for m in a.models.split(",") if m.strip()]
    served_file = a.run_dir / "triton.served"
    served_file.unlink(missing_ok=True)
    for s in specs:
        LOG.info("%s: %s ONNX versions %s, version_policy %s serves %s; config %s (max_batch_size=%d, "
                 "%d CPU instance(s) x %d thread(s) per version)",
                 s.name, s.variant.upper(), sorted(s.versions), s.cfg.version_policy.WhichOneof("policy_choice"),
                 s.served, s.config_path, s.cfg.max_batch_size, a.instances, a.threads)
        if s.not_mirrored:
            LOG.info("%s: production config fields replaced for the local python backend: %s", s.name, s.not_mirrored)
        if s.cfg.model_warmup and not a.warmup:
            LOG.info("%s: model_warmup (%d entries) skipped (use --warmup)", s.name, len(s.cfg.model_warmup))
        for v in s.served:
            print(f"MODEL {s.name} version={v} variant={s.variant} onnx={s.versions[v]}", flush=True)
    if a.dry_run:
        check_models(specs, a.threads)
        LOG.info("dry run OK")
        return 0

    repo = a.run_dir / "model-repo"
    write_repository(repo, specs, a.threads, a.instances, a.queue_timeout_us, a.warmup)
    cmd = tritonserver_command(a, repo, backend_dir(a.run_dir))
    # What triton.sh waits for: every served version ready (the server is ready before models load).
    served_file.write_text("".join(f"{s.name} {v}\n" for s in specs for v in s.served))

    LOG.info("starting %s", " ".join(cmd))
    proc = subprocess.Popen(cmd, env=tritonserver_env(), stdin=subprocess.DEVNULL)

    # SIGTERM/SIGINT: tritonserver shuts down in order (drains in-flight requests, up to exit_timeout).
    def forward(signum, _frame):
        LOG.info("signal %d received, stopping tritonserver", signum)
        proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    rc = proc.wait()
    served_file.unlink(missing_ok=True)
    LOG.info("tritonserver exited with %d", rc)
    return 0 if rc in (0, -signal.SIGTERM) else 1


if __name__ == "__main__":
    sys.exit(main())
