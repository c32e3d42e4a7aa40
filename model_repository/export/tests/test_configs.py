"""The production Triton configs parse with Triton's own protobuf schema and match the wire contract.

Needs only ``tritonclient[grpc]`` (for ``model_config_pb2``), ``protobuf`` and ``onnx``: no PyTorch.
"""

from __future__ import annotations

import re
from pathlib import Path

import onnx
import pytest

mc = pytest.importorskip("tritonclient.grpc.model_config_pb2")
from google.protobuf import text_format  # noqa: E402  (after importorskip)

# The wire contract (tusou-contracts, "Models"): name -> (inputs, outputs) with Triton dtypes and
# per-request dims (batch axis implicit).
CONTRACT = {
    "clip_image": ({"pixel_values": ("TYPE_FP32", [3, 224, 224])}, {"image_embeds": ("TYPE_FP32", [512])}),
    "clip_text": ({"input_ids": ("TYPE_INT64", [-1]), "attention_mask": ("TYPE_INT64", [-1])},
                  {"text_embeds": ("TYPE_FP32", [512])}),
}
# The gateway's default batch size (contract: max_batch_size 64); Triton must accept at least that.
GATEWAY_MAX_BATCH = 64

ONNX_TO_TRITON = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.INT64: "TYPE_INT64"}


def _path(repo_root: Path, name: str) -> Path:
    return repo_root / "model_repository" / name / "config.pbtxt"


def _parse(text: str):
    return text_format.Parse(text, mc.ModelConfig())


def _uncomment_trt(text: str) -> str:
    """Turn the commented-out optional TensorRT block into live config."""
    m = re.search(r"^# TRT-BEGIN\n(.*?)^# TRT-END$", text, flags=re.M | re.S)
    assert m, "TRT-BEGIN/TRT-END block missing"
    block = "\n".join(re.sub(r"^# ?", "", line) for line in m.group(1).splitlines())
    return text[:m.start()] + block + "\n" + text[m.end():]


def _dtype(cfg_io) -> str:
    return mc.DataType.Name(cfg_io.data_type)


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_config_parses_and_matches_contract(repo_root, name):
    cfg = _parse(_path(repo_root, name).read_text())
    assert cfg.name == name
    assert cfg.platform == "onnxruntime_onnx"
    assert cfg.default_model_filename == "model.onnx"
    assert cfg.max_batch_size >= GATEWAY_MAX_BATCH

    inputs, outputs = CONTRACT[name]
    assert {i.name: (_dtype(i), list(i.dims)) for i in cfg.input} == inputs
    assert {o.name: (_dtype(o), list(o.dims)) for o in cfg.output} == outputs

    db = cfg.dynamic_batching
    assert db.preferred_batch_size, "preferred_batch_size set"
    assert all(0 < b <= cfg.max_batch_size for b in db.preferred_batch_size)
    assert 0 < db.max_queue_delay_microseconds <= 10_000
    qp = db.default_queue_policy
    assert qp.timeout_action == mc.ModelQueuePolicy.REJECT
    assert qp.default_timeout_microseconds > 0 and qp.max_queue_size > 0

    assert cfg.instance_group and all(g.kind == mc.ModelInstanceGroup.KIND_GPU for g in cfg.instance_group)
    # Two generations during a model switch: the newest two versions are served, an empty version in a
    # request means the highest (model_repository/README.md, "Serving two generations in Triton").
    assert cfg.version_policy.WhichOneof("policy_choice") == "latest"
    assert cfg.version_policy.latest.num_versions == 2

    # Warm-up inputs must name real inputs with their dtype, and stay within the batch limit.
    assert cfg.model_warmup
    for w in cfg.model_warmup:
        assert 1 <= w.batch_size <= cfg.max_batch_size
        assert set(w.inputs) == set(inputs)
        for key, wi in w.inputs.items():
            dtype, dims = inputs[key]
            assert mc.DataType.Name(wi.data_type) == dtype
            assert len(wi.dims) == len(dims)
            assert all(d == want for d, want in zip(wi.dims, dims) if want != -1)
            if dtype == "TYPE_INT64":  # random ids would be out of vocabulary
                assert wi.WhichOneof("input_data_type") == "zero_data"
    assert max(w.batch_size for w in cfg.model_warmup) == cfg.max_batch_size


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_optional_tensorrt_block_parses(repo_root, name):
    cfg = _parse(_uncomment_trt(_path(repo_root, name).read_text()))
    (acc,) = cfg.optimization.execution_accelerators.gpu_execution_accelerator
    assert acc.name == "tensorrt"
    # Only keys every onnxruntime backend release accepts (unknown keys fail the model load).
    assert set(acc.parameters) <= {"precision_mode", "max_workspace_size_bytes", "trt_engine_cache_enable",
                                   "trt_engine_cache_path"}
    assert acc.parameters["precision_mode"] in ("FP32", "FP16")


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_tiny_onnx_matches_config(repo_root, tiny_dir, name, version):
    """The committed tiny models (every version) have exactly the production signature (so any can be served)."""
    cfg = _parse(_path(repo_root, name).read_text())
    model = onnx.load(str(tiny_dir / name / str(version) / "model.onnx"), load_external_data=False)

    def sig(values):
        out = {}
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
            assert dims[0] == -1, f"{v.name}: batch axis must be dynamic"
            out[v.name] = (ONNX_TO_TRITON[t.elem_type], dims[1:])
        return out

    inputs, outputs = CONTRACT[name]
    assert sig(model.graph.input) == {i.name: (_dtype(i), list(i.dims)) for i in cfg.input} == inputs
    assert sig(model.graph.output) == {o.name: (_dtype(o), list(o.dims)) for o in cfg.output} == outputs
