"""Schemas of the training groups (model, optimizer, scheduler, peft, freeze, trainer, logger) and of a
reference recipe. Values live in configs/<group>/<option>.yaml; plug-in names (optimizers, schedulers, PEFT
methods, strategies, tracker backends) are the keys of their tables in ftune/registry.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from ftune.config.fields import bounded, choice, empty, registered, section


@dataclass
class ModelConfig:
    name: str = MISSING  # short name used in run directories, e.g. "minilm"
    # Hub id ("bert-base-cased"), local folder, or "pkg:<python package>/<folder>" for weights
    # shipped inside an installed package (works offline).
    name_or_path: str = MISSING
    revision: str | None = None
    hub_id: str | None = None  # the hub id of a model shipped in a package: `base_model` of model cards
    trust_remote_code: bool = False  # run Python code shipped with a hub model: only for models you trust
    allow_pickle: bool = False  # load pickle weights (pytorch_model.bin), which can run code when loaded
    quantization: str | None = choice(None, "nf4", "int8", default=None)  # frozen base in 4/8 bits (bitsandbytes): QLoRA


@dataclass
class OptimizerConfig:
    name: str = registered("OPTIMIZERS")
    lr: float = bounded(gt=0)
    weight_decay: float = bounded(ge=0)
    args: dict[str, Any] = empty()  # extra keyword arguments of the optimizer class
    # LoRA+ (Hayou et al., 2024): the LoRA B matrices train at lr × this ratio (the paper: 16); null: off
    loraplus_lr_ratio: float | None = bounded(None, gt=0)


@dataclass
class SchedulerConfig:
    name: str = registered("SCHEDULERS")
    warmup_ratio: float = bounded(ge=0, lt=1)  # fraction of the training steps
    warmup_steps: int = bounded(ge=0)  # wins over warmup_ratio when > 0


@dataclass
class PeftConfig:
    """Parameter-efficient fine-tuning through the peft library (ftune/peft.py). The task head always trains."""

    name: str = registered("PEFT_METHODS")
    args: dict[str, Any] = empty()  # extra keyword arguments of the peft config class


@dataclass
class LowRankConfig(PeftConfig):
    """What LoRA and AdaLoRA share: low-rank updates B·A of the target weights, scaled by alpha / rank."""

    alpha: int = bounded(gt=0)
    dropout: float = bounded(ge=0, lt=1)
    bias: str = choice("none", "all", "lora_only")
    # null: peft's default for the architecture (BERT: query, value); a list of module names; or all-linear
    target_modules: Any = MISSING


@dataclass
class LoraConfig(LowRankConfig):
    r: int = bounded(ge=1)
    use_dora: bool = False  # DoRA (Liu et al., 2024): LoRA on the direction, a trained magnitude per output
    use_rslora: bool = False  # rsLoRA (Kalajdzievski, 2023): scale alpha/sqrt(r), stable at high ranks


@dataclass
class AdaLoraConfig(LowRankConfig):
    """LoRA whose ranks are re-allocated during training (init_r per matrix, shrinking to target_r on average)."""

    init_r: int = bounded(ge=1)
    target_r: int = bounded(ge=1)
    tinit: float = bounded(ge=0, lt=1)  # fraction of training steps before ranks start to shrink
    tfinal: float = bounded(ge=0, lt=1)  # fraction of training steps at the end with ranks fixed
    deltaT: int = bounded(ge=1)  # steps between re-allocations


@dataclass
class IA3Config(PeftConfig):
    target_modules: list[str] | None = MISSING  # null: peft's default (BERT: key, value, output.dense)
    feedforward_modules: list[str] | None = MISSING


@dataclass
class PromptLearningConfig(PeftConfig):
    num_virtual_tokens: int = bounded(ge=1)


@dataclass
class PrefixTuningConfig(PromptLearningConfig):
    prefix_projection: bool = MISSING  # reparameterise the prefix through an MLP (more parameters, steadier)
    encoder_hidden_size: int | None = bounded(ge=1)  # of that MLP; null: the model's hidden size


@dataclass
class PromptTuningConfig(PromptLearningConfig):
    init: str = choice("random", "text")  # text: initialise the soft prompt from the embeddings of init_text
    init_text: str | None = MISSING


@dataclass
class FreezeConfig:
    """Partial fine-tuning without PEFT (ftune/freeze.py): which weights keep requires_grad."""

    name: str = MISSING
    embeddings: bool = MISSING  # freeze the embedding layer
    bottom_layers: int = bounded(ge=0)  # freeze the first N transformer layers
    train_only: str | None = choice(None, "head", "bias")  # head: linear probe; bias: BitFit (biases + head)


PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainerConfig:
    epochs: int | None = bounded(ge=0)  # exactly this many; null: the step rule below decides (engine/steps.py)
    max_steps: int | None = bounded(ge=1)  # optimizer steps; overrides epochs when set
    min_epochs: int = bounded(ge=1)  # the step rule: this many epochs, raised on small data until
    min_steps: int | None = bounded(ge=1)  # the run makes this many optimizer steps (null: min_epochs exactly),
    max_epochs: int | None = bounded(ge=1)  # but never past this many (null: no cap)
    batch_size: int = bounded(ge=1)  # examples per optimizer step on each device, before accumulation
    eval_batch_size: int = bounded(ge=1)
    grad_accum: int = bounded(ge=1)  # micro-batches per optimizer step; the loss is normalised over all their targets
    precision: str = choice(*PRECISIONS)
    max_grad_norm: float | None = bounded(gt=0)
    eval_every: int | None = bounded(ge=1)  # optimizer steps between evaluations (always at epoch end)
    save_every: int | None = bounded(ge=1)  # optimizer steps between checkpoints (always at epoch end)
    log_every: int = bounded(ge=1)
    patience: int | None = bounded(ge=1)  # evaluations without improvement before stopping early
    keep_last: int = bounded(ge=1)  # checkpoints kept in checkpoints/
    seed: int = MISSING
    group_by_length: bool = MISSING
    cache_features: bool = MISSING  # keep tokenised features on disk ($FTUNE_CACHE_DIR) for the next run
    featurize_workers: int = bounded(ge=0)  # processes that tokenise (0: one per available core); features do not depend on it
    nonfinite: str = choice("stop", "skip", "ignore")  # NaN/inf loss or gradients: skip the update (counted), or no check
    gradient_checkpointing: bool = MISSING  # recompute activations in the backward pass: less memory, slower steps
    compile: bool = MISSING  # torch.compile the model (pays off on GPUs; measured no gain on a 2-core CPU)
    num_workers: int = bounded(ge=0)
    device: str = choice(*DEVICES)
    strategy: str = registered("STRATEGIES")  # several processes: ddp (whole model on each) | fsdp (FSDP2, sharded)


@dataclass
class MlflowLoggerConfig:
    """MLflow (ftune/loggers/mlflow.py). null values fall back to MLflow's environment variables."""

    tracking_uri: str | None = None  # null: $MLFLOW_TRACKING_URI, else MLflow's default (sqlite:///mlflow.db)
    experiment: str | None = None  # null: $MLFLOW_EXPERIMENT_NAME, else "ftune"
    run_name: str | None = None  # null: <task>-<model>-<run folder name>


@dataclass
class WandbLoggerConfig:
    """Weights & Biases (ftune/loggers/wandb.py). null values fall back to wandb's WANDB_* variables."""

    project: str | None = None  # null: $WANDB_PROJECT, else "ftune"
    entity: str | None = None  # null: $WANDB_ENTITY, else the account's default
    mode: str | None = choice(None, "online", "offline", "disabled", default=None)  # null: $WANDB_MODE, else online
    tags: list[str] = empty(list)  # added to task, model and peft


@dataclass
class LoggerConfig:
    console: str = choice("auto", "rich", "plain", "none")  # auto: a rich bar on a terminal, plain lines otherwise
    jsonl: bool = MISSING
    backends: list[str] = registered("LOGGERS", default=[])  # trackers, several at once: tensorboard, mlflow, wandb
    report: bool = MISSING  # report.html and plots in the run directory, and the model card in best/, at the end
    log_best: bool = MISSING  # also upload best/ to the trackers as an artifact (it may be large)
    max_param_length: int = bounded(ge=20)  # longer config values are cut (with a note) in tracker params
    # the settings of each backend that has any (its schema is registered beside it in registry.LOGGERS)
    mlflow: MlflowLoggerConfig = section(MlflowLoggerConfig)
    wandb: WandbLoggerConfig = section(WandbLoggerConfig)


@dataclass
class ObjectiveConfig:
    """How a model is trained: `standard` (the task's loss over the whole model, or what peft/freeze leave), or
    `setfit` (classification family, a sentence-transformer body such as model=minilm: contrastive pairs, then a
    logistic-regression head; ftune/engine/contrastive.py). The setfit keys are set in configs/objective/setfit.yaml."""

    name: str = choice("standard", "setfit")
    num_iterations: int | None = bounded(None, ge=1)  # pairs per example and iteration: one positive, one negative
    body_epochs: int | None = bounded(None, ge=1)  # passes over the pairs
    body_lr: float | None = bounded(None, gt=0)  # the body's learning rate in the contrastive phase
    body_batch_size: int | None = bounded(None, ge=1)  # pairs per step
    head_c: float | None = bounded(None, gt=0)  # inverse L2 strength of the logistic-regression head (scikit-learn's C)


@dataclass
class PromptConfig:
    """Prompted evaluation of a causal LM on a task's data (ftune/prompted/): `ftune eval model=<LM> task=<task>
    prompt=zero_shot|few_shot`. Templates: {text} ({text_pair}; qa: {question}, {context}); {labels} and
    {types} in the instruction list the verbalizers or entity types."""

    name: str = MISSING  # zero_shot | few_shot
    shots: int = bounded(ge=0)  # examples of the training split in every prompt (0: zero-shot)
    seed: int = MISSING  # the draw of the shots (balanced over labels where possible)
    instruction: str | None = MISSING  # the prompt's first paragraph; null: the task family's default
    template: str | None = MISSING  # one item (shots and the evaluated item); null: the task family's default
    verbalizers: Any = None  # classification: {label: word}; labels left out are scored by their own name
    normalize: str = choice("none", "tokens", "chars")  # divide a verbalizer's log-likelihood by its length
    chat: Any = MISSING  # auto | true | false: wrap in the tokenizer's chat template (auto: when it has one)
    max_length: int | None = bounded(None, ge=8)  # longest prompt, in tokens; null: the model's position limit
    max_new_tokens: int = bounded(ge=1)  # ner, qa: tokens generated per item (greedy)
    batch_size: int = bounded(ge=1)  # items per forward pass (classification: each with all its verbalizers)
    shared_prefix: bool = MISSING  # the instruction and shots go through the model once, reused by every batch
    limit: int | None = bounded(None, ge=1)  # evaluate the first N items of the split only


@dataclass
class ContinualConfig:
    """Training a model again without forgetting what it knew (ftune/continual/, docs/continual.md). The run
    starts from an earlier one with `init_from`; these settings say what keeps the earlier tasks."""

    name: str = MISSING
    # earlier runs whose validation splits are evaluated again at the end: the forgetting table
    previous: list[str] = empty(list)
    every_eval: bool = False  # evaluate them at every evaluation too (metrics.jsonl: previous<i>/<metric>)
    replay: str | None = None  # earlier data mixed into training: a data file, or an earlier run (its train split)
    replay_ratio: float = bounded(ge=0, lt=1)  # share of the epoch's training examples drawn from `replay`
    regularizer: str = choice("none", "l2sp", "ewc")  # pull towards the starting weights (EWC: by importance)
    strength: float = bounded(ge=0)  # the regulariser's weight: strength/2 · Σ F·(w − w₀)², F = 1 for L2-SP
    fisher_examples: int = bounded(ge=1)  # EWC: most earlier examples the diagonal Fisher is estimated on
    adapter: str | None = None  # PEFT: the name this stage's adapter is saved under (<run>/adapters/<name>/)
    # new data that leaves the earlier types untagged (NER: tagged O): the earlier model's predictions fill them in
    pseudo_label: bool = False


@dataclass
class RecipeConfig:
    """A reference recipe (configs/experiment/<name>.yaml sets it): what the run usually reaches.
    ftune/recipes.py checks a finished run against it and records the verdict in results.json."""

    name: str | None = None  # the experiment's name; null: not a reference recipe
    # split -> metric -> [low, high], in the metric's own scale (NER F1 0-1, SQuAD F1 0-100)
    expected: dict[str, dict[str, list[float]]] = empty()
    source: str = ""  # where the range comes from: "measured here (...)" or a paper
    # split -> data fingerprint (ftune.recipes.fingerprint): a run on the same data and model matches the
    # recipe even without experiment=; empty for hub data, which is matched by name only
    fingerprints: dict[str, str] = empty()
