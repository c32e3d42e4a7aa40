"""Triton Python-backend model that runs one ONNX file in ONNX Runtime on the CPU.

deploy/local/triton_server.py copies this file as ``<model>/<version>/model.py`` of the local model
repository, next to a ``model.onnx`` link to the chosen export, so every version directory of a model
runs its own weights. The tensor names, dtypes and dims come from the model's config.pbtxt (the
production one, rewritten for the python backend); a graph that does not match it fails the load, so a
wrong file stops Triton at start-up instead of failing requests.

Importable without Triton (``check_session`` is used by ``triton_server.py --dry-run``).
"""

from __future__ import annotations

import json
import os
from typing import Dict, List

import numpy as np

# Triton config data types -> numpy. Only types a Python-backend model can carry as numpy arrays.
DTYPES: Dict[str, type] = {
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
}

# ONNX Runtime type strings -> numpy, to check the ONNX graph against config.pbtxt.
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

# Parameter (config.pbtxt `parameters`) naming the ONNX Runtime intra-op thread count.
THREADS_PARAM = "ort_intra_op_threads"


def open_session(onnx_path: str, threads: int):
    """ONNX Runtime CPU session; idle worker threads sleep (the dev machines are shared)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(onnx_path, sess_options=so, providers=["CPUExecutionProvider"])


def check_session(sess, cfg: dict, where: str) -> None:
    """Raise ValueError unless the ONNX graph has exactly the config's tensors (name, dtype, dims).

    cfg is the model config as a dict (Triton's JSON form, or MessageToDict with proto field names).
    """
    batch = 1 if int(cfg.get("max_batch_size", 0)) > 0 else 0
    problems: List[str] = []

    def check(kind: str, declared: list, actual) -> None:
        by_name = {a.name: a for a in actual}
        for t in declared:
            a = by_name.get(t["name"])
            if a is None:
                problems.append(f"{kind} {t['name']!r} not in ONNX graph (has {sorted(by_name)})")
                continue
            want = DTYPES.get(t.get("data_type", ""))
            if _ORT_DTYPES.get(a.type) is not want:
                problems.append(f"{kind} {t['name']!r}: ONNX type {a.type} vs config {t.get('data_type')}")
            dims = [int(d) for d in t.get("dims", [])]
            onnx_dims = list(a.shape)[batch:]
            if len(onnx_dims) != len(dims) or any(
                    isinstance(od, int) and cd != -1 and od != cd for od, cd in zip(onnx_dims, dims)):
                problems.append(f"{kind} {t['name']!r}: ONNX shape {a.shape} vs config dims {dims}")

    check("input", cfg.get("input", []), sess.get_inputs())
    check("output", cfg.get("output", []), sess.get_outputs())
    undeclared = {i.name for i in sess.get_inputs()} - {t["name"] for t in cfg.get("input", [])}
    if undeclared:
        problems.append(f"ONNX inputs not declared in config: {sorted(undeclared)}")
    if problems:
        raise ValueError(f"{where} does not match its config.pbtxt:\n  " + "\n  ".join(problems))


class TritonPythonModel:
    """One model version: an ONNX Runtime session over <model dir>/<version>/model.onnx."""

    def initialize(self, args):
        import triton_python_backend_utils as pb_utils

        self._pb = pb_utils
        cfg = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in (cfg.get("parameters") or {}).items()}
        threads = int(params.get(THREADS_PARAM) or 1)
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self._sess = open_session(path, threads)
        check_session(self._sess, cfg, f"{args['model_name']} version {args['model_version']}: {os.path.realpath(path)}")
        self._inputs = [(t["name"], DTYPES[t["data_type"]]) for t in cfg["input"]]
        self._outputs = [(t["name"], DTYPES[t["data_type"]]) for t in cfg["output"]]
        self._batched = int(cfg.get("max_batch_size", 0)) > 0

    def execute(self, requests):
        """Run the requests the dynamic batcher hands over: those with equal non-batch shapes run as one
        ONNX batch (Triton's batcher only merges equal shapes anyway); a failing group fails only its requests."""
        pb = self._pb
        groups: Dict[tuple, list] = {}
        for i, req in enumerate(requests):
            feeds = {}
            for name, dt in self._inputs:
                t = pb.get_input_tensor_by_name(req, name)
                if t is not None:  # absent only for optional inputs (Triton checks required ones)
                    feeds[name] = np.ascontiguousarray(t.as_numpy(), dtype=dt)
            key = tuple((n, a.shape[1:] if self._batched else a.shape) for n, a in sorted(feeds.items()))
            groups.setdefault(key if self._batched else (i,), []).append((i, feeds))

        responses = [None] * len(requests)
        names = [n for n, _ in self._outputs]
        for items in groups.values():
            try:
                feeds = {n: np.concatenate([f[n] for _, f in items]) for n in items[0][1]} if len(items) > 1 \
                    else items[0][1]
                outs = self._sess.run(names, feeds)
                start = 0
                for i, f in items:
                    n = next(iter(f.values())).shape[0] if self._batched else 0
                    rows = slice(start, start + n) if self._batched else slice(None)
                    start += n
                    responses[i] = pb.InferenceResponse(output_tensors=[
                        pb.Tensor(name, np.ascontiguousarray(o[rows], dtype=dt))
                        for (name, dt), o in zip(self._outputs, outs)])
            except Exception as e:  # noqa: BLE001 - reported to the client as the request's error
                for i, _ in items:
                    responses[i] = pb.InferenceResponse(error=pb.TritonError(f"onnxruntime: {e}"))
        return responses
