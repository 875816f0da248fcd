"""`objective=setfit`: contrastive few-shot training of a sentence-transformer body, then a classification head
(Tunstall et al., 2022, "Efficient Few-Shot Learning Without Prompts"; the setfit library's method):

1. pairs from the few labelled examples: for every example and iteration, one positive pair (another example
   of its label) and one negative pair (an example of another label), so half the pairs are positive;
2. the body learns that the cosine similarity of the two mean-pooled embeddings is 1 for a positive pair and
   0 for a negative one (CosineSimilarityLoss: the mean squared difference), AdamW with linear warm-up/decay;
3. a logistic regression (scikit-learn, as setfit's default head) on the normalised embeddings of the
   training examples, copied into the model's linear head; the body is then frozen, and the engine's usual
   loop (head only) evaluates, selects best/ and saves the run like any other.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch

log = logging.getLogger("ftune")


def sample_pairs(labels: list[int], iterations: int, seed: int) -> list[tuple[int, int, float]]:
    """(i, j, target) pairs: per iteration and example, one positive (target 1) and one negative (target 0);
    an example whose label has no other example, or no other label exists, skips that pair."""
    rng = random.Random(seed)
    by_label: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    pairs = []
    for _ in range(iterations):
        for i, label in enumerate(labels):
            same = [j for j in by_label[label] if j != i]
            other = [j for j in range(len(labels)) if labels[j] != label]
            if same:
                pairs.append((i, rng.choice(same), 1.0))
            if other:
                pairs.append((i, rng.choice(other), 0.0))
    rng.shuffle(pairs)
    return pairs


def check(cfg: Any, task: Any, resume_from: Any) -> None:
    from ftune.errors import FtuneError
    from ftune.peft import is_active

    if task.prompting != "choice":
        raise FtuneError(f"objective=setfit trains classifiers; task={task.name} is not one", where="objective",
                         fix="use objective=setfit with a classification task (e.g. task=sst2 model=minilm)")
    if is_active(cfg.peft) or resume_from is not None:
        raise FtuneError("objective=setfit trains the whole body and does not resume", where="objective",
                         fix="drop peft= / resume=, or use objective=standard")


def train(classifier: Any, task: Any, features: Any, cfg: Any, seed: int, device: torch.device) -> Any:
    """The SentenceClassifier of a built sequence classifier, its body trained on pairs and its head fitted."""
    from transformers import get_linear_schedule_with_warmup

    from ftune.sentence_classifier import SentenceClassifier

    model = SentenceClassifier.from_encoder(classifier).to(device)
    rows = [dict(features[i]) for i in range(len(features))]
    labels = [row["label"] for row in rows]
    pairs = sample_pairs(labels, cfg.num_iterations, seed)
    batch = cfg.body_batch_size
    steps = cfg.body_epochs * ((len(pairs) + batch - 1) // batch)
    # fused: one kernel for all parameters (the per-tensor loop is ~10x slower on CPU, docs/architecture.md)
    optimizer = torch.optim.AdamW(model.body.parameters(), lr=cfg.body_lr, fused=device.type in ("cpu", "cuda"))
    schedule = get_linear_schedule_with_warmup(optimizer, int(0.1 * steps), steps)
    log.info("setfit: %d pairs (%d positive) from %d examples, %d body steps", len(pairs),
             sum(t == 1.0 for _, _, t in pairs), len(rows), steps)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(cfg.body_epochs):
        order = torch.randperm(len(pairs), generator=generator).tolist() if epoch else range(len(pairs))
        chosen = [pairs[k] for k in order]
        for start in range(0, len(chosen), batch):
            part = chosen[start:start + batch]
            left = _embed(model, task, [rows[i] for i, _, _ in part], device)
            right = _embed(model, task, [rows[j] for _, j, _ in part], device)
            target = torch.tensor([t for _, _, t in part], device=device)
            loss = torch.nn.functional.mse_loss(torch.nn.functional.cosine_similarity(left, right), target)
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            done = epoch * ((len(pairs) + batch - 1) // batch) + start // batch + 1
            if done % 20 == 0:
                log.info("setfit: body step %d/%d, loss %.4f", done, steps, loss.item())
        log.info("setfit: body epoch %d, last loss %.4f", epoch + 1, loss.item())
    fit_head(model, task, rows, labels, cfg.head_c, seed, device)
    for parameter in model.body.parameters():
        parameter.requires_grad_(False)
    return model


def _embed(model, task, rows: list[dict], device) -> torch.Tensor:
    inputs = task.collate(rows)["inputs"]
    return model.embed(**{k: v.to(device) for k, v in inputs.items()})


@torch.no_grad()
def fit_head(model, task, rows: list[dict], labels: list[int], c: float, seed: int, device) -> None:
    """Logistic regression on the embeddings, written into the linear head (binary: logits [0, w·x + b])."""
    from sklearn.linear_model import LogisticRegression

    model.eval()
    embeddings = torch.cat([_embed(model, task, rows[k:k + 64], device) for k in range(0, len(rows), 64)])
    x, y = embeddings.float().cpu().numpy(), np.asarray(labels)
    head = LogisticRegression(C=c, max_iter=1000, random_state=seed).fit(x, y)
    weight = torch.zeros_like(model.head.weight)
    bias = torch.zeros_like(model.head.bias)
    classes = head.classes_.tolist()
    coef, intercept = torch.tensor(head.coef_, dtype=weight.dtype), torch.tensor(head.intercept_, dtype=bias.dtype)
    if len(classes) == 2:
        weight[classes[1]], bias[classes[1]] = coef[0], intercept[0]
    else:
        for row, label in enumerate(classes):
            weight[label], bias[label] = coef[row], intercept[row]
    model.head.weight.copy_(weight)
    model.head.bias.copy_(bias)
    model.train()
