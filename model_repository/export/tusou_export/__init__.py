"""tusou model export tooling: ONNX exports of the CLIP image/text towers for Triton, and tiny test models."""

from pathlib import Path

# model_repository/export/tusou_export/__init__.py -> repository root
REPO_ROOT = Path(__file__).resolve().parents[3]
