"""Quantizers that turn item vectors into one integer per level: residual k-means (GRID's RQ-KMeans)
and a small RQ-VAE (TIGER / LC-Rec). Both are seeded and deterministic on a given machine."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits  # scikit-learn's own dependency
from torch import nn


class RqvaeConfig(BaseModel):
    """RQ-VAE hyperparameters; TIGER's shape (MLP encoder to a 32-d latent, β = 0.25), scaled down so that
    ML-1M's items train in seconds on two CPU cores."""

    model_config = ConfigDict(extra="forbid")

    hidden: list[int] = Field([256, 128], description="encoder MLP widths; the decoder mirrors them")
    latent_dim: int = Field(32, ge=1)
    epochs: int = Field(50, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(3e-3, gt=0)
    beta: float = Field(0.25, ge=0, description="commitment weight")


@dataclass
class Quantized:
    """What a quantizer returns: raw codes (no dedup level yet), its error, and the tensors to save."""

    codes: np.ndarray  # int64 [n_items, levels]
    mse: float  # mean squared reconstruction error in the input space
    tensors: dict[str, np.ndarray]  # codebooks (and RQ-VAE weights), float32


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the small matrix work of both quantizers on one thread. On a quiet machine that costs little;
    on a busy 2-core one (pytest workers, other jobs) two OpenMP threads were 4× (k-means) to 10×
    (RQ-VAE steps) slower, as each waits for the other (k-means gave identical codes either way)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(threads)


def _kmeans(points: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and centroids; duplicate points may leave fewer distinct clusters than k, which is fine."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted = KMeans(n_clusters=min(k, len(points)), n_init=1, random_state=seed).fit(points)
    centroids = fitted.cluster_centers_.astype(np.float32)
    if len(centroids) < k:  # fewer points than codes: unused rows, never chosen
        centroids = np.concatenate([centroids, np.repeat(centroids[:1], k - len(centroids), 0)])
    return fitted.labels_.astype(np.int64), centroids


def _residual_kmeans(
    vectors: np.ndarray, levels: int, codebook_size: int, seed: int
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Codes, per-level centroids and the reconstruction (the sum of the chosen centroids)."""
    residual = np.ascontiguousarray(vectors, dtype=np.float32)
    codes = np.empty((len(vectors), levels), dtype=np.int64)
    books = []
    for level in range(levels):
        labels, centroids = _kmeans(residual, codebook_size, seed + level)
        codes[:, level] = labels
        books.append(centroids)
        residual = residual - centroids[labels]
    return codes, books, vectors - residual


def rkmeans(vectors: np.ndarray, levels: int, codebook_size: int, seed: int = 42) -> Quantized:
    """Residual k-means: k-means on the vectors, then on what each level's centroid leaves over."""
    with one_thread():
        codes, books, reconstruction = _residual_kmeans(vectors, levels, codebook_size, seed)
    mse = float(np.mean((vectors - reconstruction) ** 2))
    return Quantized(codes, mse, {f"codebook.{level}": book for level, book in enumerate(books)})


def _mlp(widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class RQVAE(nn.Module):
    """MLP encoder → residual quantization over one learnable codebook per level → MLP decoder."""

    def __init__(self, dim: int, settings: RqvaeConfig, levels: int, codebook_size: int):
        super().__init__()
        widths = [dim, *settings.hidden, settings.latent_dim]
        self.encoder = _mlp(widths)
        self.decoder = _mlp(widths[::-1])
        self.codebooks = nn.ModuleList(
            nn.Embedding(codebook_size, settings.latent_dim) for _ in range(levels)
        )

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Codes [n, levels], the summed code vectors, and the codebook and commitment losses."""
        residual, total = z, torch.zeros_like(z)
        codes, codebook_loss, commitment = [], z.new_zeros(()), z.new_zeros(())
        for book in self.codebooks:
            chosen = torch.cdist(residual, book.weight).argmin(1)
            vector = book(chosen)
            codebook_loss = codebook_loss + F.mse_loss(vector, residual.detach())
            commitment = commitment + F.mse_loss(residual, vector.detach())
            total = total + vector
            residual = residual - vector.detach()
            codes.append(chosen)
        return torch.stack(codes, 1), total, codebook_loss, commitment

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction, codes, codebook loss, commitment loss."""
        z = self.encoder(x)
        codes, quantized, codebook_loss, commitment = self.quantize(z)
        straight_through = z + (quantized - z).detach()  # the decoder's gradient reaches the encoder
        return self.decoder(straight_through), codes, codebook_loss, commitment


def _train_rqvae(
    vectors: np.ndarray, levels: int, codebook_size: int, settings: RqvaeConfig, seed: int
) -> tuple[RQVAE, torch.Tensor, torch.Tensor]:
    """The trained model (in eval mode) and the input centring and scale it expects."""
    original = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    mean = original.mean(0)
    scale = (original - mean).pow(2).mean().sqrt().clamp_min(1e-12)
    x = (original - mean) / scale
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = RQVAE(x.shape[1], settings, levels, codebook_size)
        with torch.no_grad():
            _, books, _ = _residual_kmeans(model.encoder(x).numpy(), levels, codebook_size, seed)
            for book, centroids in zip(model.codebooks, books, strict=True):
                book.weight.copy_(torch.from_numpy(centroids))
        optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
        order = torch.Generator().manual_seed(seed)
        for _ in range(settings.epochs):
            for rows in torch.randperm(len(x), generator=order).split(settings.batch_size):
                out, _, codebook_loss, commitment = model(x[rows])
                loss = F.mse_loss(out, x[rows]) + codebook_loss + settings.beta * commitment
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    return model.eval(), mean, scale


def rqvae(
    vectors: np.ndarray, levels: int, codebook_size: int, settings: RqvaeConfig, seed: int = 42
) -> Quantized:
    """Train an RQ-VAE on all items and read off their codes.

    The codebooks start from residual k-means over every item's encoded vector (LC-Rec and TIGER's
    repos use the first batch only, which leaves codes dead). Inputs are centred and scaled to unit
    mean variance so that the reconstruction and codebook losses are of the same order."""
    with one_thread():
        model, mean, scale = _train_rqvae(vectors, levels, codebook_size, settings, seed)
        original = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
        with torch.no_grad():
            out, codes, _, _ = model((original - mean) / scale)
            mse = float((out * scale + mean - original).pow(2).mean())
    tensors = {f"rqvae.{name}": t.numpy().copy() for name, t in model.state_dict().items()}
    tensors |= {"rqvae.input_mean": mean.numpy(), "rqvae.input_scale": scale.reshape(1).numpy()}
    return Quantized(codes.numpy().astype(np.int64), mse, tensors)
