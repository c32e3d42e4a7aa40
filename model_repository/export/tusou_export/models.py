"""PyTorch modules with exactly the I/O of the Triton models (see tusou-contracts / ENVIRONMENT "The model").

* :class:`ImageTower`: ``pixel_values`` FP32 [B,3,224,224] -> ``image_embeds`` FP32 [B,512]
  (CLIPVisionModelWithProjection; not normalised).
* :class:`TextTower`: ``input_ids``/``attention_mask`` INT64 [B,S] -> ``text_embeds`` FP32 [B,512]
  (DistilBERT, attention-mask mean pooling, Dense without activation, as sentence-transformers'
  ``clip-ViT-B-32-multilingual-v1``; not normalised).

Builders exist for three sources: a hub name or local directory (production), a full-size random
initialisation (same architecture, no download) and a tiny random initialisation (committed test models).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import (CLIPVisionConfig, CLIPVisionModelWithProjection, DistilBertConfig, DistilBertModel)

EMBED_DIM = 512
IMAGE_SIZE = 224
MAX_TEXT_TOKENS = 128

# Export with the plain ("eager") attention: it traces to MatMul/Softmax that every ONNX Runtime / TensorRT
# version handles, and it is numerically the same function as SDPA.
ATTN = "eager"


class ImageTower(nn.Module):
    """CLIP vision tower + visual projection; returns the raw (un-normalised) projection."""

    def __init__(self, clip: CLIPVisionModelWithProjection):
        super().__init__()
        self.clip = clip

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.clip(pixel_values=pixel_values).image_embeds


class TextTower(nn.Module):
    """DistilBERT -> mean pooling over the attention mask -> Dense (sentence-transformers layout)."""

    def __init__(self, bert: DistilBertModel, dense: nn.Linear, activation: nn.Module | None = None):
        super().__init__()
        self.bert = bert
        self.dense = dense
        self.activation = activation if activation is not None else nn.Identity()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:  # noqa: D102
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        # sentence_transformers.models.Pooling (mean mode): sum(h * m) / clamp(sum(m), 1e-9).
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        summed = (hidden * mask).sum(dim=1)
        counts = mask.sum(dim=1).clamp(min=1e-9)
        return self.activation(self.dense(summed / counts))


# ---------------------------------------------------------------------------------------------------------
# Configurations


def full_image_config() -> CLIPVisionConfig:
    """ViT-B/32 as in openai/clip-vit-base-patch32 (the CLIPVisionConfig defaults are ViT-B/32)."""
    return CLIPVisionConfig(
        hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        image_size=IMAGE_SIZE, patch_size=32, projection_dim=EMBED_DIM, hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )


def tiny_image_config() -> CLIPVisionConfig:
    """Same geometry (224 px, 32 px patches, 512-d projection), ~0.3 M parameters."""
    return CLIPVisionConfig(
        hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
        image_size=IMAGE_SIZE, patch_size=32, projection_dim=EMBED_DIM, hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )


def full_text_config() -> DistilBertConfig:
    """distilbert-base-multilingual-cased: vocab 119547, dim 768, 6 layers, 12 heads, 512 positions."""
    return DistilBertConfig(
        vocab_size=119547, dim=768, n_layers=6, n_heads=12, hidden_dim=3072,
        max_position_embeddings=512, activation="gelu", pad_token_id=0,
    )


def tiny_text_config(vocab_size: int) -> DistilBertConfig:
    """Same layers as DistilBERT, dim 64, 2 layers, 2 heads, 128 positions (the gateway's max length)."""
    return DistilBertConfig(
        vocab_size=vocab_size, dim=64, n_layers=2, n_heads=2, hidden_dim=256,
        max_position_embeddings=MAX_TEXT_TOKENS, activation="gelu", pad_token_id=0,
    )


# ---------------------------------------------------------------------------------------------------------
# Builders


def random_image_tower(config: CLIPVisionConfig, seed: int) -> ImageTower:
    """A randomly initialised image tower (deterministic for a seed). No download."""
    config._attn_implementation = ATTN
    torch.manual_seed(seed)
    return ImageTower(CLIPVisionModelWithProjection(config)).eval()


def random_text_tower(config: DistilBertConfig, seed: int, out_features: int = EMBED_DIM) -> TextTower:
    """A randomly initialised text tower (deterministic for a seed). No download."""
    config._attn_implementation = ATTN
    torch.manual_seed(seed)
    bert = DistilBertModel(config)
    dense = nn.Linear(config.dim, out_features, bias=False)
    return TextTower(bert, dense).eval()


def pretrained_image_tower(name_or_path: str, revision: str | None = None) -> ImageTower:
    """openai/clip-vit-base-patch32 (or a local copy): works with a full CLIPModel checkpoint too."""
    clip, info = CLIPVisionModelWithProjection.from_pretrained(
        name_or_path, revision=revision, attn_implementation=ATTN, output_loading_info=True)
    _require_all_weights(name_or_path, info)
    if clip.config.projection_dim != EMBED_DIM:
        raise ValueError(f"{name_or_path}: projection_dim {clip.config.projection_dim} != {EMBED_DIM}")
    return ImageTower(clip.float()).eval()


def _require_all_weights(name: str, info: dict) -> None:
    """transformers silently random-initialises weights missing from a checkpoint; refuse that."""
    missing = list(info.get("missing_keys") or [])
    mismatched = list(info.get("mismatched_keys") or [])
    if missing or mismatched:
        raise ValueError(f"{name}: checkpoint does not cover the model: missing {missing[:10]}, "
                         f"mismatched {mismatched[:10]}")


@dataclass
class SentenceTransformerParts:
    """Where the pieces of a sentence-transformers checkpoint live (resolved local directory)."""

    root: Path
    transformer_dir: Path
    pooling_config: dict
    dense_config: dict
    dense_weights: Path
    st_config: dict  # sentence_bert_config.json (max_seq_length, do_lower_case), {} if absent


def resolve_sentence_transformer(name_or_path: str, revision: str | None = None) -> SentenceTransformerParts:
    """Find modules.json, 1_Pooling and 2_Dense in a local directory or a hub snapshot."""
    root = Path(name_or_path)
    if not root.is_dir():
        from huggingface_hub import snapshot_download  # only needed where the hub is reachable

        root = Path(snapshot_download(name_or_path, revision=revision))
    modules = json.loads((root / "modules.json").read_text())
    by_type = {m["type"].rsplit(".", 1)[-1]: root / m["path"] for m in modules}
    missing = {"Transformer", "Pooling", "Dense"} - set(by_type)
    if missing:
        raise ValueError(f"{root}: modules.json lacks {sorted(missing)}; expected Transformer, Pooling, Dense")
    dense_dir = by_type["Dense"]
    weights = next((dense_dir / f for f in ("model.safetensors", "pytorch_model.bin") if (dense_dir / f).exists()),
                   None)
    if weights is None:
        raise FileNotFoundError(f"{dense_dir}: no model.safetensors or pytorch_model.bin")
    return SentenceTransformerParts(
        root=root,
        transformer_dir=by_type["Transformer"],  # path "" -> the root itself
        pooling_config=json.loads((by_type["Pooling"] / "config.json").read_text()),
        dense_config=json.loads((dense_dir / "config.json").read_text()),
        dense_weights=weights,
        st_config=_read_json(by_type["Transformer"] / "sentence_bert_config.json"),
    )


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def pooling_modes(pool: dict) -> list[str]:
    """Enabled pooling modes, from either config format: sentence-transformers < 6 writes booleans
    (``"pooling_mode_mean_tokens": true``), 6.x writes ``"pooling_mode": "mean"`` (or a list)."""
    if "pooling_mode" in pool:
        mode = pool["pooling_mode"]
        return [mode] if isinstance(mode, str) else list(mode)
    names = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
             "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
             "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
    return [names.get(k, k) for k, v in pool.items() if k.startswith("pooling_mode") and v]


_ACTIVATIONS = {
    "torch.nn.modules.linear.Identity": nn.Identity,
    "torch.nn.modules.activation.Tanh": nn.Tanh,
}


def pretrained_text_tower(parts: SentenceTransformerParts) -> TextTower:
    """Rebuild the sentence-transformers pipeline with plain torch, so the ONNX graph holds all of it."""
    modes = pooling_modes(parts.pooling_config)
    if modes != ["mean"]:
        raise ValueError(f"only mean pooling is supported, 1_Pooling/config.json enables {modes}")
    if parts.st_config.get("do_lower_case"):
        raise ValueError("sentence_bert_config.json has do_lower_case=true: the gateway tokenizer does not lowercase")
    dc = parts.dense_config
    act_name = dc.get("activation_function", "torch.nn.modules.linear.Identity")
    if act_name not in _ACTIVATIONS:
        raise ValueError(f"unsupported Dense activation {act_name!r}")
    bert, info = DistilBertModel.from_pretrained(str(parts.transformer_dir), attn_implementation=ATTN,
                                                 output_loading_info=True)
    _require_all_weights(str(parts.transformer_dir), info)
    bert = bert.float()
    if bert.config.dim != dc["in_features"]:
        raise ValueError(f"Dense in_features {dc['in_features']} != transformer dim {bert.config.dim}")
    dense = nn.Linear(dc["in_features"], dc["out_features"], bias=dc.get("bias", True))
    if parts.dense_weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(parts.dense_weights))
    else:
        state = torch.load(str(parts.dense_weights), map_location="cpu", weights_only=True)
    state = {k.removeprefix("linear."): v for k, v in state.items()}
    dense.load_state_dict(state, strict=True)
    return TextTower(bert, dense, _ACTIVATIONS[act_name]()).eval()
