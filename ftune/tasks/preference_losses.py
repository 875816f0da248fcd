"""The preference losses of the dpo task, from the summed log-probabilities of each pair's replies.

With log π the summed log-probability of a reply, ā its mean per token, and
Δ = (log π_c − log ref_c) − (log π_r − log ref_r):

    sigmoid (DPO, Rafailov et al. 2023)   −(1−ε)·log σ(β·Δ) − ε·log σ(−β·Δ)      (ε: label_smoothing)
    ipo (Azar et al. 2023)                (Δ̄ − 1/(2β))², Δ̄ as Δ on per-token means (as TRL)
    orpo (Hong et al. 2024)               −ā_c − β·log σ(log odds(ā_c) − log odds(ā_r)), odds(a) = e^a/(1−e^a)
    simpo (Meng et al. 2024)              −log σ(β·(ā_c − ā_r) − γ)

Rewards are β·(log π − log ref) (ORPO, SimPO: β·ā).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ftune.errors import FtuneError

LOSSES = ("sigmoid", "ipo", "orpo", "simpo")
DEFAULT_BETA = {"sigmoid": 0.1, "ipo": 0.1, "orpo": 0.1, "simpo": 2.0}  # the papers' / TRL's usual values


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the summed log-probability of its labelled tokens (labels -100 elsewhere) and their count."""
    labels = labels[:, 1:]  # token t is predicted from the tokens before it
    keep = labels != -100
    # only the reply positions go through the (vocabulary-wide) softmax
    picked = logits[:, :-1][keep].float().log_softmax(-1).gather(-1, labels[keep][:, None])[:, 0]
    sums = torch.zeros(labels.shape[0], device=logits.device).index_add(0, keep.nonzero()[:, 0], picked)
    return sums, keep.sum(1)


def preference_loss(kind: str, beta: float, chosen: torch.Tensor, rejected: torch.Tensor, chosen_n: torch.Tensor,
                    rejected_n: torch.Tensor, reference: tuple | None = None, label_smoothing: float = 0.0,
                    gamma: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair losses and the rewards of chosen and rejected, from summed log-probabilities (see above)."""
    mean_c, mean_r = chosen / chosen_n.clamp(min=1), rejected / rejected_n.clamp(min=1)
    if kind == "sigmoid":
        reward_c, reward_r = beta * (chosen - reference[0]), beta * (rejected - reference[1])
        h = reward_c - reward_r
        return -(1 - label_smoothing) * F.logsigmoid(h) - label_smoothing * F.logsigmoid(-h), reward_c, reward_r
    if kind == "ipo":
        ref_c, ref_r = reference[0] / chosen_n.clamp(min=1), reference[1] / rejected_n.clamp(min=1)
        h = (mean_c - ref_c) - (mean_r - ref_r)
        return (h - 1 / (2 * beta)) ** 2, beta * (mean_c - ref_c), beta * (mean_r - ref_r)
    if kind == "simpo":
        return -F.logsigmoid(beta * (mean_c - mean_r) - gamma), beta * mean_c, beta * mean_r
    if kind == "orpo":
        # log(1 − e^a) as log(−expm1(a)): exact near a = 0, where 1 − e^a loses every digit
        log_odds = (mean_c - mean_r) - (torch.log(-torch.expm1(mean_c.clamp(max=-1e-7)))
                                        - torch.log(-torch.expm1(mean_r.clamp(max=-1e-7))))
        return -mean_c - beta * F.logsigmoid(log_odds), beta * mean_c, beta * mean_r
    raise FtuneError(f"unknown loss `{kind}`", where="task.loss", fix=f"choose from: {', '.join(LOSSES)}")
