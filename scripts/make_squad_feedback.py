"""SQuAD-derived feedback data for task=reward, task=kto, task=dpo and task=grpo, from the shared SQuAD v1.1
dev set (../shared/data/squad_v1.1/dev-v1.1.json; CC BY-SA 4.0). Written under --out, never committed.

    python scripts/make_squad_feedback.py --out runs/squad_feedback

Prompts are scripts/sft_squad_check.py's ("Answer the question with a short phrase copied from the context.",
the paragraph, the question). Training rows come from the first --train-articles articles, held-out rows from
the last --heldout-articles, so no paragraph is in both; paragraphs longer than --max-context characters are
skipped (short sequences on a CPU). Files:

    pairs_{train,heldout}.jsonl    {"prompt", "chosen": a gold answer, "rejected": a wrong span of the same
                                   paragraph (another question's answer there, else a random span of as many words)}
    kto_{train,heldout}.jsonl      each pair split into two unpaired rows: {"prompt", "completion", "label": true|false}
    prompts_{train,heldout}.jsonl  {"prompt", "answer": [every distinct gold answer]} (grpo, exact match / F1)
"""

from __future__ import annotations

import argparse
import json
import random
import re
import string
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SQUAD = REPO.parent / "shared" / "data" / "squad_v1.1" / "dev-v1.1.json"
INSTRUCTION = "Answer the question with a short phrase copied from the context."


def normalize(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def wrong_span(paragraph: dict, golds: list[str], rng: random.Random) -> str:
    """Another question's answer from the same paragraph, else a random span of the paragraph as long as the gold."""
    bad = {normalize(g) for g in golds}
    others = [a["text"] for qa in paragraph["qas"] for a in qa["answers"] if normalize(a["text"]) not in bad]
    others = [o for o in dict.fromkeys(others) if not any(normalize(o) in b or b in normalize(o) for b in bad)]
    if others:
        return rng.choice(others)
    words, n = paragraph["context"].split(), max(1, len(golds[0].split()))
    for _ in range(20):
        start = rng.randrange(0, max(1, len(words) - n))
        span = " ".join(words[start:start + n]).strip(string.punctuation + " ")
        if span and normalize(span) not in bad:
            return span
    return words[0]


def build(articles: list[dict], max_context: int, limit: int, rng: random.Random) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {"pairs": [], "kto": [], "prompts": []}
    for article in articles:
        for paragraph in article["paragraphs"]:
            if len(paragraph["context"]) > max_context:
                continue
            for qa in paragraph["qas"]:
                golds = list(dict.fromkeys(a["text"] for a in qa["answers"]))
                prompt = f"{INSTRUCTION}\n\nContext: {paragraph['context']}\n\nQuestion: {qa['question']}"
                rejected = wrong_span(paragraph, golds, rng)
                out["pairs"].append({"prompt": prompt, "chosen": golds[0], "rejected": rejected})
                out["kto"] += [{"prompt": prompt, "completion": golds[0], "label": True},
                               {"prompt": prompt, "completion": rejected, "label": False}]
                out["prompts"].append({"prompt": prompt, "answer": golds})
    if limit:
        out = {"pairs": out["pairs"][:limit], "kto": out["kto"][:2 * limit], "prompts": out["prompts"][:limit]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/squad_feedback")
    parser.add_argument("--train-articles", type=int, default=3)
    parser.add_argument("--heldout-articles", type=int, default=2)
    parser.add_argument("--max-context", type=int, default=600, help="skip longer paragraphs (characters)")
    parser.add_argument("--max-train", type=int, default=0, help="first N training questions (0: all)")
    parser.add_argument("--max-heldout", type=int, default=0, help="first N held-out questions (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = json.loads(SQUAD.read_text())["data"]
    rng, out = random.Random(args.seed), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    splits = {"train": build(data[:args.train_articles], args.max_context, args.max_train, rng),
              "heldout": build(data[-args.heldout_articles:], args.max_context, args.max_heldout, rng)}
    for split, files in splits.items():
        for kind, rows in files.items():
            path = out / f"{kind}_{split}.jsonl"
            path.write_text("".join(json.dumps(row) + "\n" for row in rows))
            print(f"{path}: {len(rows)} rows")


if __name__ == "__main__":
    main()
