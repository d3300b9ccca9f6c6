"""CLIPScore and FID with a local CLIP folder.

- ``clipscore`` = mean_i 100 * cos(image_i, prompt_i) with CLIP's projected embeddings, no clamp
  (the paper's convention, ``docs/method.md`` section 7; the paper used openai/clip-vit-large-patch14).
- ``fid`` = Frechet distance between Gaussians fitted to image features. No Inception network
  ships offline, so the features here are the CLIP image embeddings of the same CLIP folder: the
  number is comparable only with reference statistics made by the same extractor (``fid_reference``
  as an image folder, or an ``.npz`` written by :func:`reference_stats`), NOT with published
  Inception FIDs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..defs.errors import DataError, ModelError

__all__ = ["ClipModel", "frechet_distance", "feature_stats", "load_reference_stats", "reference_stats"]

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)).

    tr((S1 S2)^(1/2)) = sum_i sqrt(lambda_i(S1^(1/2) S2 S1^(1/2))): a symmetric PSD matrix, so the
    eigenvalues are real (negative round-off clipped to 0), also for singular covariances.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise DataError(f"FID statistics differ in shape: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} "
                        f"vs {s2.shape}; the reference must come from the same feature extractor")
    w, v = np.linalg.eigh((s1 + s1.T) / 2)
    root1 = (v * np.sqrt(w.clip(min=0))) @ v.T
    inner = root1 @ s2 @ root1
    tr_covmean = np.sqrt(np.linalg.eigvalsh((inner + inner.T) / 2).clip(min=0)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma): mean and unbiased covariance of features ``[N, D]`` (N >= 2)."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise DataError(f"FID needs at least 2 feature vectors, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def load_reference_stats(path: str | os.PathLike, *, clip: ClipModel | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``.npz`` with ``mu`` and ``sigma``, or a folder of images (featurised with ``clip``)."""
    p = Path(path).expanduser()
    if p.is_file():
        try:
            with np.load(p, allow_pickle=False) as z:
                return z["mu"], z["sigma"]
        except (KeyError, ValueError, OSError) as exc:
            raise DataError(f"fid_reference={str(path)!r}: expected an .npz with arrays 'mu' and 'sigma' "
                            f"({exc})") from None
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in _IMAGE_SUFFIXES)
        if len(files) < 2:
            raise DataError(f"fid_reference={str(path)!r}: needs at least 2 images (png/jpg/webp/bmp)")
        if clip is None:
            raise ModelError("fid_reference as an image folder needs clip_model (the feature extractor)")
        return feature_stats(clip.image_features(files))
    raise DataError(f"fid_reference={str(path)!r}: no such file or folder (.npz with mu/sigma, or images)")


def reference_stats(images: Sequence, *, clip: ClipModel, out: str | os.PathLike) -> Path:
    """Write ``mu``/``sigma`` of the CLIP features of ``images`` to an ``.npz`` for later ``fid`` runs."""
    mu, sigma = feature_stats(clip.image_features(images))
    out = Path(out)
    np.savez(out, mu=mu, sigma=sigma)
    return out


class ClipModel:
    """A local ``CLIPModel`` + ``CLIPProcessor`` folder."""

    def __init__(self, folder: str | os.PathLike, *, device: str | None = None):
        from transformers import CLIPModel, CLIPProcessor  # lazy: transformers (~1 s), only for loading a model

        path = Path(folder).expanduser()
        if not (path / "config.json").is_file():
            raise ModelError(f"clip_model={str(folder)!r}: no config.json there; give a local CLIP folder "
                             "(e.g. openai/clip-vit-large-patch14 saved locally)")
        try:
            self.model = CLIPModel.from_pretrained(path, local_files_only=True).eval()
            self.processor = CLIPProcessor.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelError(f"clip_model={str(folder)!r}: could not load ({first})") from None
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device)
        self.source = str(path)

    @staticmethod
    def _open(images: Sequence):
        return [Image.open(i).convert("RGB") if isinstance(i, (str, Path)) else i for i in images]

    def image_features(self, images: Sequence, *, batch_size: int = 32) -> np.ndarray:
        feats = []
        for i in range(0, len(images), batch_size):
            px = self.processor(images=self._open(images[i:i + batch_size]), return_tensors="pt")
            with torch.inference_mode():
                f = self.model.get_image_features(pixel_values=px["pixel_values"].to(self.device))
            feats.append(_tensor(f).float().cpu().numpy())
        return np.concatenate(feats)

    def clipscore(self, images: Sequence, prompts: Sequence[str], *, batch_size: int = 32) -> list[float]:
        """100 * cos(image_i, prompt_i) per pair, no clamp."""
        scores: list[float] = []
        for i in range(0, len(images), batch_size):
            inputs = self.processor(text=list(prompts[i:i + batch_size]), images=self._open(images[i:i + batch_size]),
                                    return_tensors="pt", padding=True, truncation=True).to(self.device)
            with torch.inference_mode():
                im = _tensor(self.model.get_image_features(pixel_values=inputs["pixel_values"]))
                tx = _tensor(self.model.get_text_features(input_ids=inputs["input_ids"],
                                                          attention_mask=inputs["attention_mask"]))
            scores.extend((100 * torch.nn.functional.cosine_similarity(im, tx, dim=-1)).float().cpu().tolist())
        return scores


def _tensor(x):
    # transformers 5 may return a model output with the projected embeddings in pooler_output.
    return x if hasattr(x, "float") else x.pooler_output
