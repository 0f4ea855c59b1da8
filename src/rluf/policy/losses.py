"""The CGPO losses (DESIGN §2) and the unconstrained GRPO-style baseline, as pure tensor functions.

Inputs are per-sample quantities computed by the trainer: `logp` and `ref_logp` are summed token
log-probabilities of each sampled answer under the policy and the frozen reference, `lengths` the number of
answer tokens, `reward` the weighted calibrated reward, `passed` whether the sample passed all judges.
The selection rules (which sample CODPO pairs, which one CRRAFT imitates) are separate functions so that
tests can check them on hand-made cases.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_cap_factor(logp: torch.Tensor, ref_logp: torch.Tensor, kl_max: float) -> torch.Tensor:
    """max(1 - log(π/π_ref)/KL_max, 0): a sample that drifted KL_max nats from the reference gets no credit.
    Capped at 1 as well, so a sample the policy finds *less* likely than the reference is not boosted."""
    return torch.clamp(1 - (logp - ref_logp).detach() / kl_max, min=0.0, max=1.0)


def crpg_loss(logp: torch.Tensor, ref_logp: torch.Tensor, reward: torch.Tensor, passed: torch.Tensor,
              kl_max: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Constrained regularised policy gradient: R = R_calib · 1[pass] · KL-cap factor, mean baseline."""
    r = reward.detach() * passed.float() * kl_cap_factor(logp, ref_logp, kl_max)
    advantage = r - r.mean()
    loss = -(advantage * logp).mean()
    return loss, {"crpg_reward": float(r.mean()), "crpg_abs_advantage": float(advantage.abs().mean())}


def codpo_pair(reward: list[float], passed: list[bool]) -> tuple[int, int] | None:
    """(best passing sample, worst failing sample — the worst overall when none fails); None = skip prompt."""
    ok = [i for i, p in enumerate(passed) if p]
    if not ok:
        return None
    best = max(ok, key=lambda i: reward[i])
    bad = [i for i, p in enumerate(passed) if not p] or [i for i in range(len(reward)) if i != best]
    if not bad:
        return None
    return best, min(bad, key=lambda i: reward[i])


def codpo_loss(logp_pos: torch.Tensor, ref_pos: torch.Tensor, logp_neg: torch.Tensor, ref_neg: torch.Tensor,
               len_pos: torch.Tensor, beta: float = 0.1, lam: float = 5.0) -> tuple[torch.Tensor, dict[str, float]]:
    """-log σ(β[log π/π_ref(a⁺) - log π/π_ref(a⁻)]) - (λ/|a⁺|)·log π(a⁺|s), averaged over pairs."""
    margin = beta * ((logp_pos - ref_pos) - (logp_neg - ref_neg))
    dpo = -F.logsigmoid(margin)
    nll = -(lam / len_pos.clamp(min=1).float()) * logp_pos
    return (dpo + nll).mean(), {"codpo_margin": margin.mean().item(), "codpo_dpo": dpo.mean().item()}


def crraft_pick(reward: list[float], passed: list[bool], log_ratio: list[float], kl_max: float,
                reference_passed: bool) -> int | str | None:
    """Best passing sample within the KL cap; else 'reference' if the reference answer passes; else None."""
    ok = [i for i in range(len(reward)) if passed[i] and log_ratio[i] <= kl_max]
    if ok:
        return max(ok, key=lambda i: reward[i])
    return "reference" if reference_passed else None


def crraft_loss(logp: torch.Tensor, lengths: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Reward-weighted fine-tuning on the picked answers: -(R_calib · log π(a|s) / |a|), averaged."""
    loss = -(weight.detach() * logp / lengths.clamp(min=1).float()).mean()
    return loss, {"crraft_weight": float(weight.mean())}


def grpo_advantages(reward: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """(r - mean of its group) / (std of its group + eps); samples of one prompt are consecutive."""
    g = reward.view(-1, group_size)
    return ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + eps)).view(-1)


def grpo_loss(logp: torch.Tensor, lengths: torch.Tensor, reward: torch.Tensor, group_size: int,
              ref_logp: torch.Tensor | None = None, beta: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Unconstrained baseline: group-normalised advantages on the weighted reward sum, no judges. One update
    per batch of samples, so the importance ratio is 1 and PPO clipping never binds; the per-token mean
    matches TRL's GRPO loss at that point. Optional KL penalty β·(log π - log π_ref)/|a|."""
    adv = grpo_advantages(reward.detach(), group_size)
    per_token = logp / lengths.clamp(min=1).float()
    loss = -(adv * per_token).mean()
    if beta and ref_logp is not None:
        loss = loss + beta * ((logp - ref_logp.detach()) / lengths.clamp(min=1).float()).mean()
    return loss, {"grpo_abs_advantage": float(adv.abs().mean())}
