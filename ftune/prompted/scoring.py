"""Log-likelihood of continuations after a prompt, as lm-evaluation-harness scores multiple choice
(`loglikelihood` requests: the summed log-probabilities of the continuation's tokens; its `acc_norm` divides by
the continuation's length in characters), batched: every continuation of a batch of items in one forward pass.

A prompt is (prefix, context): the prefix (instruction and shots) is the same for many items and goes through
the model once; its keys and values are reused by every batch (`shared=True`). Rows are left-padded, with
explicit position ids, so the continuations end every row and only their logits are computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Request:
    prefix: tuple[int, ...]  # token ids shared with other requests (may be empty)
    context: list[int]  # the item's own prompt tokens (at least one when the prefix is empty)
    continuation: list[int]  # the scored tokens


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context and continuation ids as lm-evaluation-harness encodes them: trailing spaces of the context move
    to the continuation, and the continuation is what the whole string adds to the context's tokens."""
    spaces = len(context) - len(context.rstrip(" "))
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    own = tokenizer(context, add_special_tokens=False)["input_ids"]
    if whole[:len(own)] != own:  # the boundary merged: encode the two parts apart
        return own, tokenizer(continuation, add_special_tokens=False)["input_ids"]
    return own, whole[len(own):]


class Scorer:
    """Sums of continuation log-probabilities for lists of requests, `batch_rows` rows per forward pass."""

    def __init__(self, model, pad_id: int, shared: bool = True):
        self.model, self.pad_id, self.shared = model, pad_id, shared
        self._prefixes: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.device = next(model.parameters()).device

    def _prefix_cache(self, prefix: tuple[int, ...]):
        if prefix not in self._prefixes:
            ids = torch.tensor([prefix], device=self.device)
            out = self.model(input_ids=ids, use_cache=True)
            cache = getattr(out, "cache", None) or out.past_key_values
            self._prefixes = {prefix: [(layer.keys, layer.values) for layer in cache.layers]}  # keep the last one
        return self._prefixes[prefix]

    @torch.inference_mode()
    def score(self, requests: list[Request], batch_rows: int) -> list[float]:
        """Summed log-probability of each request's continuation (its length in tokens is len(continuation)).

        Requests with the same prefix and context whose continuations are single tokens (most verbalizers)
        share one row: every such continuation is read off the context's last position, as
        lm-evaluation-harness reuses one-token continuations of a context."""
        rows: dict[tuple, list[int]] = {}
        for i, request in enumerate(requests):
            key = (request.prefix, tuple(request.context))
            rows.setdefault(key, []).append(i)
        work = []  # (prefix, tokens, tail, [request indices]): the row's last `tail` tokens are its continuation
        for (prefix, context), members in rows.items():
            if all(len(requests[i].continuation) == 1 for i in members):
                work.append((prefix, list(context), 0, members))
            else:
                work += [(prefix, [*context, *requests[i].continuation], len(requests[i].continuation), [i])
                         for i in members]
        work.sort(key=lambda row: (row[0], len(row[1])))  # one prefix per batch: its cache serves the whole batch
        out = [0.0] * len(requests)
        start = 0
        while start < len(work):
            end = start
            while end < len(work) and end - start < batch_rows and work[end][0] == work[start][0]:
                end += 1
            self._batch(work[start:end], requests, out)
            start = end
        return out

    def _batch(self, work: list[tuple], requests: list[Request], out: list[float]) -> None:
        from transformers import DynamicCache

        prefix = work[0][0]
        shared = self.shared and len(prefix) > 0
        rows = [tokens if shared else [*prefix, *tokens] for _, tokens, _, _ in work]
        width, size = max(map(len, rows)), len(rows)
        ids = torch.full((size, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((size, width), dtype=torch.long)
        for b, row in enumerate(rows):  # left padding: every row ends with what is scored
            ids[b, width - len(row):] = torch.tensor(row)
            mask[b, width - len(row):] = 1
        offset = len(prefix) if shared else 0
        positions = (mask.cumsum(-1) - 1).clamp(min=0) + offset
        kwargs = {}
        if shared:
            layers = self._prefix_cache(prefix)
            kwargs["cache"] = DynamicCache(ddp_cache_data=[(k.expand(size, -1, -1, -1), v.expand(size, -1, -1, -1))
                                                           for k, v in layers])
            mask = torch.cat([torch.ones((size, offset), dtype=torch.long), mask], dim=1)
        keep = max(tail for _, _, tail, _ in work) + 1
        logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                            position_ids=positions.to(self.device), use_cache=shared,
                            logits_to_keep=keep, **kwargs).logits.float()
        logprobs = logits.log_softmax(-1)  # [rows, keep, vocab]: position j predicts the token after it
        for b, (_, _, tail, members) in enumerate(work):
            for i in members:
                continuation = requests[i].continuation
                targets = torch.tensor(continuation, device=logprobs.device)
                first = keep - tail - 1  # the position before the continuation's first token
                predicted = logprobs[b, first:first + len(continuation)]
                out[i] = float(predicted.gather(-1, targets[:, None]).sum())


def normalised(scores: list[float], continuations: list[str], token_counts: list[int], how: str) -> list[float]:
    """none: the sums; tokens: per token; chars: per character (lm-evaluation-harness acc_norm)."""
    if how == "tokens":
        return [s / max(n, 1) for s, n in zip(scores, token_counts, strict=True)]
    if how == "chars":
        return [s / max(len(text), 1) for s, text in zip(scores, continuations, strict=True)]
    return list(scores)
