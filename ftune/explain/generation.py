"""Attributions of a generated text (tasks with explain_output "generation": seq2seq, sft, dpo): the model
generates its reply to the prompt as `ftune predict` does (the task's `generate`); the reply is tokenised again
and fed back teacher-forced, and each of its tokens' log-probability, log p(y_t | prompt, y_<t), is attributed
over the prompt tokens (the encoder's input for an encoder-decoder model; the prompt's embeddings, before the
reply, for a decoder-only model). The earlier reply tokens stay as they are: only the prompt moves on the path
from the baseline. Attention: the last layer's cross-attention (encoder-decoder) or self-attention from the
position that predicts the token (decoder-only), mean over heads.

Captum's own LLMGradientAttribution (captum 0.9.0) does the same for decoder-only models only (it calls the
model with `input_ids`, so not a seq2seq encoder) and does not return integrated gradients' convergence delta;
this module runs captum's IntegratedGradients / InputXGradient / NoiseTunnel through `Explainer.integrate`.
"""

from __future__ import annotations

import math
from typing import Any

import torch


def explain_generation(explainer: Any, feature: dict) -> tuple[list[dict], dict]:
    """(one target per generated token, {"generated": the text}) for one prompt feature."""
    task, model, tokenizer = explainer.task, explainer.model, explainer.tokenizer
    if explainer.settings.target is not None:
        from ftune.errors import FtuneError

        raise FtuneError(f"task={task.name} explains the tokens it generates; explain.target does not apply",
                         where="explain.target", fix="leave explain.target unset")
    batch = explainer.task.collate([feature])
    batch["inputs"] = {k: v.to(explainer.device) for k, v in batch["inputs"].items()}
    with torch.no_grad():
        text = task.generate(model, batch)[0] or ""
    encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    if encoder_decoder:
        reply = tokenizer(text_target=text)["input_ids"]
    else:
        reply = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([list(feature["input_ids"])], device=explainer.device)
    mask = torch.ones_like(ids)
    reply_ids = torch.tensor([reply], device=explainer.device, dtype=torch.long)
    forward = _forward(model, ids.shape[1], reply_ids, encoder_decoder, explainer.embeddings)
    targets = []
    if reply:
        with torch.no_grad():
            log_probs = forward(explainer.embeddings(ids), mask)[0].tolist()
        attention = _attention(explainer, ids, reply_ids, encoder_decoder) if explainer.settings.method == "attention" \
            else None
        for t, token in enumerate(reply):
            if attention is not None:
                scores, delta = attention[t], None
            else:
                scores, delta = explainer.integrate(ids, mask, forward, index=t)
            targets.append({"label": tokenizer.convert_ids_to_tokens(token), "index": token, "positions": None,
                            "probability": math.exp(log_probs[t]), "log_probability": log_probs[t],
                            "scores": scores, "delta": delta})
    return targets, {"generated": text}


def _forward(model: Any, prompt_length: int, reply: torch.Tensor, encoder_decoder: bool, embeddings: Any):
    """forward(prompt embeddings [batch, prompt, dim], mask) → log p of each reply token [batch, reply]."""
    if encoder_decoder:
        decoder_ids = model.prepare_decoder_input_ids_from_labels(labels=reply)  # the reply shifted right

        def forward(embeds, mask):
            batch = embeds.shape[0]
            logits = model(inputs_embeds=embeds, attention_mask=mask.expand(batch, -1),
                           decoder_input_ids=decoder_ids.expand(batch, -1)).logits
            return logits.float().log_softmax(-1).gather(-1, reply.expand(batch, -1)[..., None])[..., 0]
        return forward

    with torch.no_grad():
        fixed = embeddings(reply)  # the reply's tokens, teacher-forced: not on the path

    def forward(embeds, mask):
        batch = embeds.shape[0]
        full = torch.cat([embeds, fixed.expand(batch, -1, -1)], 1)
        logits = model(inputs_embeds=full, attention_mask=torch.ones(full.shape[:2], device=full.device,
                                                                     dtype=torch.long)).logits
        predicting = logits[:, prompt_length - 1:-1].float().log_softmax(-1)  # position i predicts token i + 1
        return predicting.gather(-1, reply.expand(batch, -1)[..., None])[..., 0]
    return forward


def _attention(explainer: Any, ids: torch.Tensor, reply: torch.Tensor, encoder_decoder: bool) -> list[list[float]]:
    """Per reply token, the last layer's attention (mean over heads) over the prompt tokens."""
    if encoder_decoder:
        decoder_ids = explainer.model.prepare_decoder_input_ids_from_labels(labels=reply)
        last = explainer.attentions({"input_ids": ids, "attention_mask": torch.ones_like(ids),
                                     "decoder_input_ids": decoder_ids}, "cross_attentions")
        return last[-1][0].float().mean(0).cpu().tolist()  # [reply, prompt], mean over heads
    full = torch.cat([ids, reply], 1)
    last = explainer.attentions({"input_ids": full})[-1][0].float().mean(0)  # [tokens, tokens]
    start = ids.shape[1] - 1
    return last[start:start + reply.shape[1], :ids.shape[1]].cpu().tolist()
