"""ONNX export of the towers with the contract's tensor names, plus ONNX Runtime vs PyTorch parity checks."""

from __future__ import annotations

import copy
import hashlib
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from .models import EMBED_DIM, IMAGE_SIZE, MAX_TEXT_TOKENS, ImageTower, TextTower

# Opset 17: first with a native LayerNormalization (fewer nodes, and TensorRT fuses it); supported by
# ONNX Runtime >= 1.12 and every Triton release of the last years.
DEFAULT_OPSET = 17
MIN_COSINE = 0.9999


class ParityError(AssertionError):
    """ONNX output differs from PyTorch beyond the allowed tolerance."""


@dataclass
class Parity:
    """How closely ONNX Runtime reproduces PyTorch on one batch."""

    case: str
    min_cosine: float
    max_abs_diff: float
    max_abs_ref: float

    def check(self, min_cosine: float) -> None:
        """Raise ParityError when the cosine between rows falls below ``min_cosine``."""
        if not self.min_cosine >= min_cosine:  # also catches NaN
            raise ParityError(f"{self.case}: min cosine {self.min_cosine:.6f} < {min_cosine} "
                              f"(max abs diff {self.max_abs_diff:.3g})")


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _Half(torch.nn.Module):
    """Runs a copy of a tower in fp16 while keeping the contract's FP32 input/output tensors.

    The original stays fp32, so the parity check measures the fp16 graph against the fp32 model (weight
    rounding included): that is the drift an index built with fp32 embeddings would see.
    """

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = copy.deepcopy(inner).half()

    def forward(self, *args):  # noqa: D102
        args = [a.half() if a.is_floating_point() else a for a in args]
        return self.inner(*args).float()


def _export(module: torch.nn.Module, args: tuple, path: Path, input_names: list[str], output_name: str,
            dynamic_axes: dict, opset: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of dynamo; it still gives the
        # simplest graph with stable names for these encoder-only models (see README).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # transformers' attention-mask code indexes with non-negative indices only; the padded-batch
        # parity checks below prove the exported mask handling correct.
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        torch.onnx.export(
            module, args, str(path), input_names=input_names, output_names=[output_name],
            dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True, dynamo=False,
        )
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)


def export_image(tower: ImageTower, path: Path, opset: int = DEFAULT_OPSET, fp16: bool = False) -> None:
    """Write ``pixel_values`` FP32 [B,3,224,224] -> ``image_embeds`` FP32 [B,512] (batch axis dynamic)."""
    module = _Half(tower) if fp16 else tower
    dummy = torch.zeros(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    _export(module, (dummy,), path, ["pixel_values"], "image_embeds",
            {"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}}, opset)


def export_text(tower: TextTower, path: Path, opset: int = DEFAULT_OPSET, fp16: bool = False) -> None:
    """Write ``input_ids``/``attention_mask`` INT64 [B,S] -> ``text_embeds`` FP32 [B,512] (B, S dynamic)."""
    module = _Half(tower) if fp16 else tower
    # Trace with a padded batch so no "mask is all ones" shortcut can be baked into the graph.
    ids = torch.tensor([[101, 5, 6, 7, 8, 102], [101, 9, 102, 0, 0, 0]], dtype=torch.int64)
    mask = (ids != 0).to(torch.int64)
    _export(module, (ids, mask), path, ["input_ids", "attention_mask"], "text_embeds",
            {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
             "text_embeds": {0: "batch"}}, opset)


def session(path: Path, providers: list[str] | None = None) -> ort.InferenceSession:
    """An ONNX Runtime session; 1 intra-op thread by default (the dev machine's cores are shared)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])


def _compare(case: str, ref: np.ndarray, got: np.ndarray) -> Parity:
    if ref.shape != got.shape:
        raise ParityError(f"{case}: shape {got.shape} != {ref.shape}")
    ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
    cos = (ref64 * got64).sum(1) / (np.linalg.norm(ref64, axis=1) * np.linalg.norm(got64, axis=1))
    return Parity(case, float(cos.min()), float(np.abs(ref64 - got64).max()), float(np.abs(ref64).max()))


def image_cases(seed: int = 0) -> dict[str, np.ndarray]:
    """Batches of CLIP-normalised-looking pixels (roughly N(0,1)) for batch 1 and 8."""
    rng = np.random.default_rng(seed)
    return {f"image batch {b}": rng.standard_normal((b, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
            for b in (1, 8)}


def text_cases(vocab_size: int, seed: int = 0, pad_id: int = 0, cls_id: int = 101,
               sep_id: int = 102) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Padded id batches (batch 1 and 8; longest 5, 40 and 128 tokens) laid out as the gateway sends them."""
    rng = np.random.default_rng(seed)
    out = {}
    for batch, longest in ((1, 5), (8, 5), (1, 40), (8, 40), (8, MAX_TEXT_TOKENS)):
        lengths = np.concatenate([[longest], rng.integers(3, longest + 1, size=batch - 1)]) if batch > 1 \
            else np.array([longest])
        ids = np.full((batch, longest), pad_id, dtype=np.int64)
        mask = np.zeros((batch, longest), dtype=np.int64)
        for i, n in enumerate(lengths):
            ids[i, 0], ids[i, n - 1] = cls_id, sep_id
            ids[i, 1:n - 1] = rng.integers(104, vocab_size, size=n - 2)
            mask[i, :n] = 1
        out[f"text batch {batch} seq {longest}"] = (ids, mask)
    return out


def check_image(tower: ImageTower, path: Path, min_cosine: float = MIN_COSINE,
                providers: list[str] | None = None) -> list[Parity]:
    """Compare ONNX Runtime with the PyTorch tower (in fp32) and check the I/O signature."""
    sess = session(path, providers)
    _check_signature(sess, {"pixel_values": ("tensor(float)", ["batch", 3, IMAGE_SIZE, IMAGE_SIZE])},
                     {"image_embeds": ("tensor(float)", ["batch", EMBED_DIM])})
    results = []
    for case, x in image_cases().items():
        with torch.no_grad():
            ref = tower(torch.from_numpy(x)).numpy()
        (got,) = sess.run(["image_embeds"], {"pixel_values": x})
        p = _compare(case, ref, got)
        p.check(min_cosine)
        results.append(p)
    return results


def check_text(tower: TextTower, path: Path, vocab_size: int, min_cosine: float = MIN_COSINE,
               providers: list[str] | None = None) -> list[Parity]:
    """Compare ONNX Runtime with the PyTorch tower on padded batches; also checks padding invariance
    (a sentence's embedding must not change when the batch makes it carry extra [PAD])."""
    sess = session(path, providers)
    _check_signature(sess, {"input_ids": ("tensor(int64)", ["batch", "sequence"]),
                            "attention_mask": ("tensor(int64)", ["batch", "sequence"])},
                     {"text_embeds": ("tensor(float)", ["batch", EMBED_DIM])})
    results = []
    for case, (ids, mask) in text_cases(vocab_size).items():
        with torch.no_grad():
            ref = tower(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        (got,) = sess.run(["text_embeds"], {"input_ids": ids, "attention_mask": mask})
        p = _compare(case, ref, got)
        p.check(min_cosine)
        results.append(p)
        if len(ids) > 1:  # row-by-row, unpadded, must match the padded batch rows
            single = np.concatenate([
                sess.run(["text_embeds"], {"input_ids": ids[i:i + 1, :m.sum()], "attention_mask": m[None, :m.sum()]})[0]
                for i, m in enumerate(mask)])
            q = _compare(case + " unpadded rows vs padded batch", got, single)
            q.check(min_cosine)
            results.append(q)
    return results


def _check_signature(sess: ort.InferenceSession, inputs: dict, outputs: dict) -> None:
    def sig(args):
        return {a.name: (a.type, list(a.shape)) for a in args}

    got_in, got_out = sig(sess.get_inputs()), sig(sess.get_outputs())
    if got_in != inputs or got_out != outputs:
        raise ParityError(f"ONNX signature {got_in} -> {got_out}, want {inputs} -> {outputs}")


def parity_dicts(results: list[Parity]) -> list[dict]:
    """JSON-friendly parity numbers for the manifest."""
    return [asdict(r) for r in results]
