"""The linear algebra behind `ClassStats`: a class's leading principal components, and their
rows stored as int8 (one fp32 scale each) and made orthonormal again on loading."""

from __future__ import annotations

import torch

__all__ = ["int8_rows", "orthonormal_rows", "top_components"]


def int8_rows(basis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row of `basis` (K, r, D) as int8 (K, r, D) with one fp32 scale (K, r), max |u_k| / 127:
    half the bytes of fp16. `q.float() * scale.unsqueeze(-1)` gives the rows back."""
    basis = basis.float()
    scale = basis.abs().amax(-1).clamp_min(1e-12) / 127.0  # (K, r): one scale per eigenvector
    q = torch.round(basis / scale.unsqueeze(-1)).clamp_(-127, 127).to(torch.int8)
    return q.contiguous(), scale.contiguous()


def orthonormal_rows(basis: torch.Tensor) -> torch.Tensor:
    """Rows of each (r, D) block of `basis` (K, r, D) made orthonormal in order (Gram–Schmidt
    by QR), each keeping the sign of its own direction."""
    if basis.shape[-2] == 0:
        return basis
    q, r = torch.linalg.qr(basis.float().transpose(-1, -2))  # (K, D, r), (K, r, r)
    sign = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    sign[sign == 0] = 1
    return (q * sign.unsqueeze(-2)).transpose(-1, -2).contiguous()


def top_components(xc: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Leading eigenvalues (q,) and eigenvectors (q, D) of the covariance of centred rows
    xc (n, D), float32, descending; q ≥ r where the data allow (a few extra components for the
    variance bookkeeping)."""
    n, d = xc.shape
    if min(n, d) <= 1024:  # small problem: an exact thin SVD, O(n·D·min(n, D))
        _, s, vh = torch.linalg.svd(xc, full_matrices=False)  # s (min(n, D),), vh (min(n, D), D)
        return (s.pow(2) / (n - 1)).float(), vh.float().contiguous()
    q = min(r + max(16, r // 2), n, d)
    with torch.random.fork_rng(devices=[]):  # deterministic, and leaves the global RNG alone
        torch.manual_seed(0)
        _, s, v = torch.svd_lowrank(xc.float(), q=q, niter=6)
    return (s.pow(2) / (n - 1)).float(), v.T.contiguous().float()
