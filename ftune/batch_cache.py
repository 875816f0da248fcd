"""The rows of a batch of replies with their KV cache (ftune/generate_batch.py decodes with it): the prompts'
prefill, one decoding step for every row, rows leaving, and another batch's rows joining.

Prefill: the prompts are left-padded into one forward pass (attention mask, and position ids from the mask,
so padding moves no row's positions); transformers' DynamicCache keeps the keys and values. When the prompts
start with the same tokens (a chat template's system prompt: `SHARED_MIN` tokens or more), that prefix is run
once and its cache repeated for every row, then each row's rest follows, left-padded after the prefix (the
mask has the padding in the middle), so the shared tokens are computed once, not once per row. A row that is
done leaves (its cache rows dropped, and cache columns no remaining row uses cut); a batch joins another by
left-padding the narrower cache to the wider one's width. Joining and cutting need plain full-attention cache
layers (`joinable`); other models (sliding windows) keep static batches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SHARED_MIN = 16  # a common prompt prefix at least this long is computed once per batch


def joinable(model: Any) -> bool:
    """Whether a running batch's cache can take new rows: every layer a plain full-attention DynamicLayer."""
    from transformers import DynamicCache

    return _plain(DynamicCache(config=model.config))


class Batch:
    """The active rows with their KV cache, attention mask (rows × columns) and last positions."""

    def __init__(self, rows: list, cache: Any, mask, positions):
        self.rows, self.cache, self.mask, self.positions = rows, cache, mask, positions

    @classmethod
    def prefill(cls, model: Any, rows: list) -> Batch:
        """The prompts' forward pass (left-padded; a shared prefix once) and each row's first token."""
        import torch
        from transformers import DynamicCache

        prompts = [row.request.prompt for row in rows]
        cache, device = DynamicCache(config=model.config), model.device
        shared = _shared(prompts) if len(rows) > 1 and _plain(cache) else 0
        if shared < SHARED_MIN:
            shared = 0
        else:  # the common prefix once (as one prompt alone), its cache then repeated for every row
            _forward(model, torch.tensor([prompts[0][:shared]], device=device),
                     torch.ones(1, shared, dtype=torch.long, device=device),
                     torch.arange(shared, device=device)[None], cache)
            cache.batch_repeat_interleave(len(rows))
        rests = [prompt[shared:] for prompt in prompts]
        width = max(len(rest) for rest in rests)
        ids = torch.tensor([[0] * (width - len(r)) + r for r in rests], device=device)
        mask = torch.tensor([[1] * shared + [0] * (width - len(r)) + [1] * len(r) for r in rests], device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
        batch = cls(rows, cache, mask, positions[:, -1:])
        batch.pick(_forward(model, ids, mask, positions, cache))
        return batch

    def step(self, model: Any) -> None:
        import torch

        ids = torch.tensor([[row.new[-1]] for row in self.rows], device=self.mask.device)
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.rows), 1)], dim=1)
        self.positions = self.positions + 1
        self.pick(_forward(model, ids, self.mask, self.positions, self.cache))

    def pick(self, logits) -> None:
        """Each row's next token; rows that are done leave the batch and the cache."""
        import torch

        keep = [n for n, row in enumerate(self.rows) if not row.step(logits[n:n + 1])]
        if len(keep) == len(self.rows):
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.rows, self.mask, self.positions = [self.rows[n] for n in keep], self.mask[index], self.positions[index]
        unused = int(self.mask.any(0).int().argmax()) if keep else 0  # leading columns that are padding for all
        if unused and _plain(self.cache):
            self._resize(lambda t: t[:, :, unused:])
            self.mask = self.mask[:, unused:]

    def join(self, other: Batch) -> Batch:
        """This batch and another (new rows after their prefill) as one: the narrower one left-padded."""
        import torch
        import torch.nn.functional as F

        if not other.rows:
            return self
        if not self.rows:
            return other
        width = max(self.mask.shape[1], other.mask.shape[1])
        for batch in (self, other):
            grow = width - batch.mask.shape[1]
            if grow:
                batch._resize(lambda t, grow=grow: F.pad(t, (0, 0, grow, 0)))
                batch.mask = F.pad(batch.mask, (grow, 0))
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            mine.keys, mine.values = torch.cat([mine.keys, theirs.keys]), torch.cat([mine.values, theirs.values])
        self.rows = self.rows + other.rows
        self.mask, self.positions = torch.cat([self.mask, other.mask]), torch.cat([self.positions, other.positions])
        return self

    def _resize(self, change: Callable) -> None:
        for layer in self.cache.layers:
            layer.keys, layer.values = change(layer.keys), change(layer.values)


def _shared(prompts: list[list[int]]) -> int:
    """How many first tokens every prompt has in common (each keeps at least its last token of its own)."""
    shortest = min(len(prompt) for prompt in prompts) - 1
    for n in range(shortest):
        if any(prompt[n] != prompts[0][n] for prompt in prompts):
            return n
    return max(shortest, 0)


def _plain(cache: Any) -> bool:
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) is DynamicLayer for layer in cache.layers)


def _forward(model: Any, ids, mask, positions, cache):
    """The logits of each row's last position, in fp32."""
    import torch

    output = model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                   logits_to_keep=1)
    return output.logits[:, -1].to(dtype=torch.float32)
