"""The losses of learning from feedback: dpo's preference losses (from the summed log-probabilities of each
pair's replies), and below them the reward model's, KTO's and GRPO's.

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


# ---- reward models, KTO and GRPO (tasks reward, kto, grpo); the formulas as TRL writes them -------------------
def bradley_terry(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Per-pair reward-model loss −log σ(r_c − r_r − m) (Bradley–Terry; with a margin m as Llama 2's)."""
    return -F.logsigmoid(chosen.float() - rejected.float() - margin)


def kto_loss(logratios: torch.Tensor, desirable: torch.Tensor, kl: torch.Tensor, beta: float,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> torch.Tensor:
    """Per-example KTO loss (Ethayarajh et al. 2024), r = log π − log ref of the completion, z = the KL estimate:
    desirable λ_D·(1 − σ(β(r − z))), undesirable λ_U·(1 − σ(β(z − r)))."""
    desirable_losses = desirable_weight * (1 - torch.sigmoid(beta * (logratios - kl)))
    undesirable_losses = undesirable_weight * (1 - torch.sigmoid(beta * (kl - logratios)))
    return torch.where(desirable, desirable_losses, undesirable_losses)


def kto_kl(policy_mismatched: torch.Tensor, reference_mismatched: torch.Tensor) -> torch.Tensor:
    """KTO's reference point z: the batch mean of log π − log ref on mismatched (prompt, completion) pairs,
    clamped at 0 and never differentiated (as TRL)."""
    return (policy_mismatched - reference_mismatched).mean().detach().clamp(min=0)


def group_advantages(rewards: torch.Tensor, group: int, scale: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO's advantages of rewards laid out group by group (`group` completions per prompt): reward minus its
    group's mean, divided by the group's standard deviation (+1e-4) when `scale`; and, per group, whether all its
    rewards are equal (their advantages are then 0: such a group teaches nothing)."""
    grouped = rewards.float().view(-1, group)
    mean, std = grouped.mean(1, keepdim=True), grouped.std(1, keepdim=True) if group > 1 else torch.zeros_like(grouped[:, :1])
    advantages = grouped - mean
    if scale:
        advantages = advantages / (std + 1e-4)
    return advantages.view(-1), torch.isclose(std[:, 0], torch.zeros_like(std[:, 0]))


def grpo_token_loss(logps: torch.Tensor, old_logps: torch.Tensor, ref_logps: torch.Tensor | None,
                    advantages: torch.Tensor, epsilon_low: float, epsilon_high: float,
                    beta: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token GRPO loss −min(ρ·A, clip(ρ, 1−ε_low, 1+ε_high)·A) + β·KL, ρ = π/π_old, and the per-token KL
    estimate k3 = e^(ref − log π) − (ref − log π) − 1 (Schulman's unbiased, non-negative estimator)."""
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    loss = -torch.min(ratio * advantages[:, None], clipped * advantages[:, None])
    kl = None
    if ref_logps is not None:
        delta = ref_logps - logps
        kl = torch.exp(delta) - delta - 1
        if beta:
            loss = loss + beta * kl
    return loss, kl


GRPO_LOSS_TYPES = ("grpo", "dr_grpo", "dapo")


def grpo_reduce(token_loss: torch.Tensor, mask: torch.Tensor, loss_type: str,
                max_completion_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss sum, targets) whose quotient, over a whole optimizer step (the engine divides the summed losses by
    the summed targets), is each loss type's normalisation:
        grpo     mean over sequences of each sequence's mean token loss   (sum of per-sequence means, sequences)
        dr_grpo  token sum / (sequences · max_completion_length)           (token sum / L, sequences)
        dapo     token sum / tokens of the whole step                      (token sum, tokens)"""
    mask = mask.to(token_loss.dtype)
    summed = (token_loss * mask).sum(1)
    if loss_type == "grpo":
        return (summed / mask.sum(1).clamp(min=1)).sum(), torch.tensor(mask.shape[0], device=mask.device)
    if loss_type == "dr_grpo":
        return summed.sum() / max_completion_length, torch.tensor(mask.shape[0], device=mask.device)
    if loss_type == "dapo":
        return summed.sum(), mask.sum()
    raise FtuneError(f"unknown loss_type `{loss_type}`", where="task.loss_type", fix=f"choose from: {', '.join(GRPO_LOSS_TYPES)}")
