"""Token attributions of a loaded model (an `Inference`) with captum, for what the task says to explain.

The model is differentiated with respect to its input embeddings (the output of the word-embedding layer):
integrated gradients (captum's IntegratedGradients, with its convergence delta), gradient × input
(InputXGradient), SmoothGrad (NoiseTunnel over InputXGradient) and, without gradients, the last layer's
attention (mean over heads) from the explained positions. What is explained is the task's
(`TaskBase.explain_targets`, by the kind of output it declares, `explain_output`): for "labels", the
probability of the predicted label (or of `target`) for a sequence classifier, the mean probability of an
entity's predicted tags at its words for NER; for "independent_labels" (multi-label), each predicted label's
own sigmoid probability; for "value" (regression), the predicted number itself; for "span" (extractive QA), p(start) · p(end) of the predicted
answer span; for "generation", each generated token's log-probability (generation.py). Position and token-type
embeddings stay as the model adds them; the baseline replaces every non-special token's embedding by the
baseline token's (pad, mask, unk) or by zeros.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ftune.errors import FtuneError

METHODS = ("integrated_gradients", "gradient_x_input", "smooth_grad", "attention")
# the kinds of output a task may declare (TaskBase.explain_output)
OUTPUTS = ("labels", "independent_labels", "value", "span", "generation")
BASELINES = ("pad", "mask", "unk", "zero")


@dataclass
class Settings:
    method: str = "integrated_gradients"
    steps: int = 32  # integrated gradients: points on the path
    baseline: str = "pad"
    samples: int = 8  # smooth_grad: noisy copies
    noise: float = 0.1  # smooth_grad: noise std as a share of the embeddings' std
    target: str | None = None  # a label (NER: an entity type) to explain instead of the predicted one
    internal_batch_size: int = 16


class Explainer:
    """Explains examples (dicts as `task.read_inputs` makes them) of one loaded model, on its device, in fp32."""

    def __init__(self, inference: Any, settings: Settings):
        task = inference.task
        if not task.explainable:
            raise FtuneError(f"task={task.name} cannot be explained (no attribution targets)", where="task",
                             fix="explain a run of an explainable task (e.g. a classifier or a tagger)")
        if inference.runtime != "torch":
            raise FtuneError("explain needs gradients: runtime=onnx cannot be explained", where="runtime",
                             fix="use runtime=torch")
        check_settings(settings)
        if task.explain_output not in OUTPUTS:
            raise FtuneError(f"task={task.name} declares explain_output `{task.explain_output}`", where="task",
                             fix=f"a task plug-in declares one of: {', '.join(OUTPUTS)}")
        self.kind = task.explain_output
        self.inference, self.task, self.tokenizer, self.settings = inference, task, inference.tokenizer, settings
        self.device = _device(inference.device)
        self.model = inference.model.float().to(self.device).eval()
        self.embeddings = self.model.get_input_embeddings()
        self.baseline_id = _baseline_id(self.tokenizer, settings.baseline)
        # the tokens a baseline keeps and a ranking never removes ([CLS], [SEP], padding); [UNK] stands for a word
        self.specials = set(self.tokenizer.all_special_ids) - {self.tokenizer.unk_token_id}

    # ---- the model as a function of what is explained ---------------------------------------------------
    def inputs(self, features: list[dict]) -> dict:
        return {k: v.to(self.device) for k, v in self.task.collate(features)["inputs"].items()}

    def probabilities(self, features: list[dict]) -> torch.Tensor:
        with torch.no_grad():
            return self.output_probabilities(self.model(**self.inputs(features)))

    def output_probabilities(self, outputs) -> torch.Tensor:
        """[batch, labels] or [batch, tokens, labels] ("labels": softmax; "independent_labels": a sigmoid per
        label; "value": the outputs as they are); [batch, tokens, 2]: start, end ("span")."""
        if self.kind == "span":
            return torch.stack((outputs.start_logits.float().softmax(-1), outputs.end_logits.float().softmax(-1)), -1)
        logits = outputs.logits.float()
        if self.kind == "independent_labels":
            return logits.sigmoid()
        return logits if self.kind == "value" else logits.softmax(-1)

    @staticmethod
    def score(probabilities: torch.Tensor, target: dict) -> torch.Tensor:
        """The explained quantity from probabilities [batch, labels] or [batch, tokens, labels]."""
        if target.get("span"):  # an answer span: p(start at its first token) · p(end at its last)
            first, last = target["positions"][0], target["positions"][-1]
            return probabilities[:, first, 0] * probabilities[:, last, 1]
        if target["positions"] is None:
            return probabilities[:, target["index"]]
        positions = torch.tensor(target["positions"], device=probabilities.device)
        index = torch.tensor(target["index"], device=probabilities.device)
        return probabilities[:, positions, index].mean(-1)

    def _forward(self, target: dict, rest: dict):
        def forward(embeds, mask):
            batch = embeds.shape[0]
            extra = {k: v.expand(batch, -1) for k, v in rest.items()}
            outputs = self.model(inputs_embeds=embeds, attention_mask=mask, **extra)
            return self.score(self.output_probabilities(outputs), target)
        return forward

    # ---- attributions ----------------------------------------------------------------------------------
    def explain_feature(self, feature: dict) -> tuple[list[dict], dict | None]:
        """(targets, each with `scores` per token, `delta` for integrated gradients; the prediction the task
        reports for a sequence (`explain_prediction`: {"label", "score"}, {"labels"}, {"value"}) or the generated
        text ({"generated"}), else None)."""
        if self.kind == "generation":
            from ftune.explain.generation import explain_generation

            return explain_generation(self, feature)
        probabilities = self.probabilities([feature])[0]
        targets = self.task.explain_targets(feature, probabilities.cpu(), self.settings.target)
        for target in targets:
            target["probability"] = float(self.score(probabilities[None], target)[0])
            target["scores"], target["delta"] = self.attribute(feature, target)
        return targets, self.task.explain_prediction(probabilities.cpu())

    def attribute(self, feature: dict, target: dict) -> tuple[list[float], float | None]:
        """Per-token attributions of one target (special tokens included, at 0 for the baseline methods)."""
        method = self.settings.method
        inputs = self.inputs([feature])
        if method == "attention":
            return self._attention(inputs, target), None
        ids, mask = inputs.pop("input_ids"), inputs.pop("attention_mask")
        return self.integrate(ids, mask, self._forward(target, inputs))

    def integrate(self, ids: torch.Tensor, mask: torch.Tensor, forward, index: int | None = None):
        """(per-token attributions, delta or None) of forward(embeds, mask) (its output `index` when it gives
        several per input) with respect to the embeddings of `ids` [1, tokens], by the gradient method."""
        from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel

        embeds, method, delta = self.embeddings(ids).detach().requires_grad_(), self.settings.method, None
        if method == "integrated_gradients":
            scores, delta = IntegratedGradients(forward).attribute(
                embeds, baselines=self._baseline(ids, embeds), additional_forward_args=(mask,), target=index,
                n_steps=self.settings.steps, internal_batch_size=self.settings.internal_batch_size,
                return_convergence_delta=True)
            delta = float(delta[0])
        elif method == "gradient_x_input":
            scores = InputXGradient(forward).attribute(embeds, additional_forward_args=(mask,), target=index)
        else:  # smooth_grad
            torch.manual_seed(0)  # the same noise for the same input: explanations are reproducible
            scores = NoiseTunnel(InputXGradient(forward)).attribute(
                embeds, nt_type="smoothgrad", nt_samples=self.settings.samples, target=index,
                nt_samples_batch_size=self.settings.internal_batch_size,
                stdevs=self.settings.noise * float(embeds.std()), additional_forward_args=(mask,))
        return scores.sum(-1)[0].detach().cpu().tolist(), delta

    def _baseline(self, ids: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        keep = torch.tensor([[i in self.specials for i in row] for row in ids.tolist()], device=ids.device)
        if self.baseline_id is None:
            replaced = torch.zeros_like(embeds)
        else:
            replaced = self.embeddings(torch.full_like(ids, self.baseline_id)).detach()
        return torch.where(keep[..., None], embeds.detach(), replaced)

    def attentions(self, inputs: dict, key: str = "attentions"):
        """The model's attention weights (`key`: attentions, cross_attentions), eager attention switched on."""
        if getattr(self.model.config, "_attn_implementation", "eager") != "eager":
            self.model.set_attn_implementation("eager")  # sdpa returns no attention weights
        with torch.no_grad():
            attentions = getattr(self.model(**inputs, output_attentions=True), key, None)
        if not attentions:
            raise FtuneError("this model returns no attention weights", where="explain.method",
                             fix="use integrated_gradients or gradient_x_input")
        return attentions

    def _attention(self, inputs: dict, target: dict) -> list[float]:
        attentions = self.attentions(inputs)
        last = attentions[-1][0].float().mean(0)  # [tokens, tokens], mean over heads
        rows = target["positions"] if target["positions"] is not None else [0]
        return last[rows].mean(0).cpu().tolist()


def words_of(scores: list[float], words: list[str], index: list) -> list[dict]:
    """Word attributions: the sum of each word's sub-token scores (special tokens belong to no word)."""
    sums = [0.0] * len(words)
    for score, word in zip(scores, index, strict=True):
        if word is not None:
            sums[word] += score
    return [{"word": w, "score": s} for w, s in zip(words, sums, strict=True)]


def check_settings(settings: Settings) -> None:
    from ftune.errors import did_you_mean

    for key, value, allowed in (("method", settings.method, METHODS), ("baseline", settings.baseline, BASELINES)):
        if value not in allowed:
            raise FtuneError(f"unknown {key} `{value}`", where=f"explain.{key}",
                             fix=did_you_mean(value, allowed) or f"choose from: {', '.join(allowed)}")


def _baseline_id(tokenizer: Any, name: str) -> int | None:
    if name == "zero":
        return None
    found = getattr(tokenizer, f"{name}_token_id", None)
    if found is None:
        raise FtuneError(f"the tokenizer has no {name} token", where="explain.baseline",
                         fix="use baseline=pad, mask, unk or zero")
    return found


def _device(name: str) -> torch.device:
    if name in ("auto", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
