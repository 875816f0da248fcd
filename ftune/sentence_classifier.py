"""A sentence-transformer classifier as a transformers model (the SetFit architecture): an encoder body, mean
pooling over the real tokens, L2 normalisation, and a linear head. `objective=setfit` trains it
(ftune/engine/contrastive.py); it saves with save_pretrained and loads through AutoModelForSequenceClassification
once `register()` has run (ftune.models.load_pretrained calls it), so eval, predict and serve use it like
any sequence classifier.
"""

from __future__ import annotations

import functools

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import SequenceClassifierOutput

MODEL_TYPE = "ftune_sentence_classifier"


class SentenceClassifierConfig(PretrainedConfig):
    model_type = MODEL_TYPE

    def __init__(self, body: dict | None = None, normalize: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.body = body or {}  # the encoder's own config (to_dict), e.g. a BertConfig's
        self.normalize = normalize

    @property
    def body_config(self) -> PretrainedConfig:
        body = dict(self.body)
        return AutoConfig.for_model(body.pop("model_type"), **body)

    @property
    def hidden_size(self) -> int:
        return int(self.body.get("hidden_size", 0))


class SentenceClassifier(PreTrainedModel):
    config_class = SentenceClassifierConfig
    base_model_prefix = "body"
    _no_split_modules: list[str] = []

    def __init__(self, config: SentenceClassifierConfig):
        super().__init__(config)
        self.body = AutoModel.from_config(config.body_config, add_pooling_layer=False) \
            if config.body.get("model_type") == "bert" else AutoModel.from_config(config.body_config)
        self.head = torch.nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, torch.nn.Linear) and module is getattr(self, "head", None):
            module.weight.data.zero_()
            module.bias.data.zero_()

    def embed(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """Mean of the last hidden states over the real tokens (normalised): the sentence embedding."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = self.body(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1) if self.config.normalize else pooled

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        logits = self.head(self.embed(input_ids, attention_mask, token_type_ids).to(self.head.weight.dtype))
        return SequenceClassifierOutput(logits=logits)

    @classmethod
    def from_encoder(cls, classifier: PreTrainedModel) -> SentenceClassifier:
        """From a built sequence classifier (e.g. BertForSequenceClassification): its encoder and labels."""
        encoder = classifier.base_model
        labels = classifier.config
        config = SentenceClassifierConfig(body=encoder.config.to_dict(), num_labels=labels.num_labels,
                                          id2label=labels.id2label, label2id=labels.label2id,
                                          problem_type=labels.problem_type)
        model = cls(config)
        missing, _ = model.body.load_state_dict(encoder.state_dict(), strict=False)
        assert not [m for m in missing if "pooler" not in m], missing
        return model


@functools.cache
def register() -> None:
    AutoConfig.register(MODEL_TYPE, SentenceClassifierConfig)
    AutoModelForSequenceClassification.register(SentenceClassifierConfig, SentenceClassifier)
