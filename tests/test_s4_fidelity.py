"""Fidelity to the S4 authors' code: LegS B clipped to Im in [-2, 2]; S4 refuses zoh."""

from __future__ import annotations

import pytest
import torch

from search_spaces.config import load_search_config
from search_spaces.errors import ConfigError
from workers.models.s4 import S4Kernel, nplr_init
from workers.models.s4d import B_CLIP, S4DKernel, legs_B, legs_normal_eigen


def reference_convention_B_P(N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """V^* B and V^* P with the authors' eigenvectors: eigh of -i S, the N/2 negative-imaginary
    eigenvalues in ascending order (their half-plane; ours is its conjugate).  # (N/2) x2"""
    n = torch.arange(N, dtype=torch.float64)
    q = torch.sqrt(2 * n + 1)  # (N)
    A = -torch.tril(q[:, None] * q[None, :], diagonal=-1) - torch.diag(n + 1)  # (N N) HiPPO-LegS
    P = torch.sqrt(n + 0.5)  # (N)
    S = A + P[:, None] * P[None, :]  # (N N) normal part
    w, V = torch.linalg.eigh(-1j * S.to(torch.complex128))  # (N), (N N)
    V = V[:, torch.argsort(w)[: N // 2]]  # (N N/2)
    return V.conj().T @ q.to(torch.complex128), V.conj().T @ P.to(torch.complex128)


def test_legs_B_clips_the_imaginary_part_only():
    raw, clipped = legs_B(64, clip=None), legs_B(64)  # (32) each
    changed = raw.imag.abs() > B_CLIP
    assert B_CLIP == 2.0
    assert int(changed.sum()) == 11 and raw.abs().max() > 40  # the figures for N = 64
    assert clipped.imag.abs().max() <= 2.0
    torch.testing.assert_close(clipped.real, raw.real, rtol=0, atol=0)
    torch.testing.assert_close(clipped[~changed], raw[~changed], rtol=0, atol=0)
    torch.testing.assert_close(clipped.imag[changed], 2.0 * torch.sign(raw.imag[changed]), rtol=0, atol=0)


@pytest.mark.parametrize("N", [8, 16, 64])
def test_clip_is_the_authors_clip_in_our_half_plane(N):
    """Our modes are the conjugates of the authors' up to a sign shared by B and P, so clipping Im(B)
    to a symmetric box commutes with the change of convention: same system after the clip."""
    B_ref, P_ref = reference_convention_B_P(N)
    B_ref_clipped = torch.complex(B_ref.real, B_ref.imag.clamp(-2, 2))
    _, V, _ = legs_normal_eigen(N)
    n = torch.arange(N, dtype=torch.float64)
    P_ours = V.conj().T @ torch.sqrt(n + 0.5).to(torch.complex128)  # (N/2)
    sign = (P_ours / P_ref.conj()).real  # (N/2)
    torch.testing.assert_close(sign.abs(), torch.ones_like(sign), rtol=0, atol=1e-9)
    torch.testing.assert_close(legs_B(N), sign * B_ref_clipped.conj(), rtol=0, atol=1e-9)


def test_s4_and_s4d_legs_start_from_the_clipped_B():
    _, P, B = nplr_init("legs", 3, 64)  # (H N/2) each
    torch.testing.assert_close(B, legs_B(64).expand(3, 32))
    assert B.imag.abs().max() <= 2.0 and P.abs().max() > 0
    s4 = S4Kernel(2, 64, init="legs")
    s4d = S4DKernel(2, 64, init="legs", trainable_B=True)
    for kernel in (s4, s4d):
        assert torch.view_as_complex(kernel.B).imag.abs().max() <= 2.0 + 1e-6


def test_s4_refuses_zoh_in_the_kernel():
    with pytest.raises(ConfigError, match=r"model.disc: got 'zoh' with model.kind 's4'"):
        S4Kernel(2, 4, disc="zoh")
    assert S4Kernel(2, 4).disc == "bilinear"


def test_config_s4_defaults_to_bilinear_and_refuses_explicit_zoh(tmp_path):
    base = "name: x\ntask: {name: listops, data_dir: /tmp/none}\n"
    (tmp_path / "unset.yaml").write_text(base + "model: {kind: s4}\n")
    (tmp_path / "zoh.yaml").write_text(base + "model: {kind: s4, disc: zoh}\n")
    (tmp_path / "s4d.yaml").write_text(base + "model: {kind: s4d, disc: zoh}\n")
    assert load_search_config(tmp_path / "unset.yaml").model.disc == "bilinear"
    assert load_search_config(tmp_path / "s4d.yaml").model.disc == "zoh"
    with pytest.raises(ConfigError, match=r"model.disc='zoh' with model.kind='s4'.*expected bilinear"):
        load_search_config(tmp_path / "zoh.yaml")


def test_cli_exits_2_on_s4_with_zoh(tmp_path, monkeypatch, capsys):
    from orchestrator.cli import main

    monkeypatch.delenv("S4OP_DEBUG", raising=False)
    (tmp_path / "zoh.yaml").write_text("name: x\ntask: {name: listops, data_dir: /tmp/none}\n"
                                       "model: {kind: s4, disc: zoh}\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(tmp_path / "zoh.yaml"), "--out", str(tmp_path / "out")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1
    assert "model.disc='zoh' with model.kind='s4'" in lines[0]
    assert not (tmp_path / "out").exists()
