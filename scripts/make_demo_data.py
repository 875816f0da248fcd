"""Generate the DEMO named-entity data set shipped in ``ftune/demo_data/ner/``.

The sentences are synthetic: news-like templates filled with names drawn from small fixed lists.
They exist so the NER pipeline can be demonstrated and smoke-tested offline; they are NOT a
benchmark and scores on them say little about a model's real quality.

Output is CoNLL column format (``TOKEN TAG``, IOB2 tags PER / LOC / ORG / MISC, a blank line
between sentences, ``-DOCSTART- O`` at the top of each file). About 25% of the names of every
list are held out of the training split, so validation / test also measure generalisation.
Output is deterministic for a given ``--seed``. Standard library only.

Run from the repository root (or anywhere):

    python scripts/make_demo_data.py
    python scripts/make_demo_data.py --out /tmp/ner --seed 7 --train 2000
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "ftune" / "demo_data" / "ner"
HELD_OUT = 0.25  # share of each name list that appears only in validation / test

NAMES = {
    "FIRST": "John Maria Ahmed Li Olga Pierre Hans Yuki Carlos Fatima David Anna Mohammed Elena James Sofia "
    "Ivan Kenji Laura Peter Amara Lucas Ingrid Rahul Chen Paolo Grace Tomas Nadia Michael".split(),
    "LAST": "Smith|Garcia|Mueller|Rossi|Tanaka|Ivanov|Dubois|Khan|Silva|Kowalski|Jensen|Okafor|Novak|Schmidt|"
    "Fernandez|Brown|Nakamura|Petrov|Moreau|Hassan|Lindqvist|Costa|Yilmaz|O'Brien|Van Dijk|De Souza|Kim|"
    "Wilson|Weber|Bianchi".split("|"),
    "LOC": "Paris|London|Berlin|Moscow|Tokyo|New York|Buenos Aires|Los Angeles|Rio de Janeiro|Hong Kong|"
    "Cape Town|New Delhi|Sao Paulo|Mexico City|Madrid|Rome|Cairo|Nairobi|Sydney|Beijing|Seoul|Istanbul|"
    "Warsaw|Vienna|Lisbon|Dublin|Athens|Toronto|Chicago|Johannesburg|Germany|France|Brazil|Japan|"
    "United States|South Africa|New Zealand|Saudi Arabia|Sri Lanka|Czech Republic|Argentina|Nigeria|"
    "Kenya|Italy|Spain|Poland|Egypt|Bosnia".split("|"),
    "ORG": "European Commission|Deutsche Bank|United Nations|NATO|World Bank|International Monetary Fund|"
    "Reuters|General Motors|Siemens|Toyota|Microsoft|Goldman Sachs|Royal Dutch Shell|Bank of England|"
    "Federal Reserve|Red Cross|Bayern Munich|Real Madrid|Manchester United|Ajax Amsterdam|Juventus|"
    "Boca Juniors|FIFA|UEFA|Volkswagen|Nestle|British Airways|Air France|Barclays|HSBC|Sony|Samsung|"
    "Ford Motor Co|Credit Suisse|World Health Organisation|European Central Bank|Interpol|Greenpeace|"
    "Amnesty International|Labour Party|Bundesbank|Fiat|Unilever|BBC|Al Jazeera".split("|"),
    "EVENT": "World Cup|Olympic Games|Tour de France|Wimbledon|European Championship|Davis Cup|"
    "Champions League|US Open|Super Bowl|Grand Prix|Ryder Cup|Commonwealth Games|Australian Open|"
    "Asian Games".split("|"),
    "NAT": "German|French|British|American|Russian|Japanese|Chinese|Brazilian|Italian|Spanish|Polish|"
    "Egyptian|Kenyan|Nigerian|Australian|Canadian|Mexican|Dutch|Swedish|Turkish|Indian|"
    "South African".split("|"),
}
# template slot -> entity type; PER is "first last", LAST a surname alone.
ENTITY_SLOTS = {"PER": "PER", "LAST": "PER", "LOC": "LOC", "ORG": "ORG", "EVENT": "MISC", "NAT": "MISC"}
DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
MONTHS = "January February March April May June July August September October November December".split()
FILLERS = {
    "DAY": lambda r: r.choice(DAYS),
    "MONTH": lambda r: r.choice(MONTHS),
    "NUM": lambda r: str(r.randint(2, 99)),
    "DEC": lambda r: f"{r.randint(0, 9)}.{r.randint(1, 9)}",
    "SCORE": lambda r: f"{r.randint(0, 4)}-{r.randint(0, 3)}",
    "SET": lambda r: r.choice(["6-3", "6-4", "7-5", "6-2", "7-6", "6-1"]),
    "YEAR": lambda r: str(r.randint(1990, 2024)),
    "CUR": lambda r: r.choice(["dollars", "euros", "pounds", "yen"]),
    "ORD": lambda r: r.choice(["second", "third", "fourth", "fifth", "sixth"]),
}

TEMPLATES = [
    "{PER} met {PER} in {LOC} on {DAY} .",
    "Shares of {ORG} rose {DEC} percent on {DAY} .",
    "Shares in {ORG} fell {NUM} percent to {NUM} {CUR} in early trading .",
    "The {NAT} team beat {LOC} {SCORE} in {LOC} on {DAY} .",
    "{LOC} beat {LOC} {SCORE} in the {EVENT} final on {DAY} .",
    '" We are very happy with the result , " {PER} told reporters in {LOC} .',
    "{PER} , a spokesman for the {ORG} , said talks in {LOC} would resume next week .",
    "The {ORG} said on {DAY} it would cut {NUM} jobs .",
    "{ORG} 's chief executive {PER} resigned on {DAY} .",
    "{PER} of {LOC} won the men 's {NUM} metres at the {EVENT} .",
    "Police in {LOC} arrested {NUM} people after the protest .",
    "The {NAT} government rejected the proposal from the {ORG} .",
    "{PER} scored twice as {ORG} beat {ORG} {SCORE} .",
    "It was not immediately clear what caused the delay .",
    "The market closed slightly lower on {DAY} after a quiet session .",
    "Trading was thin ahead of the holiday , dealers said .",
    "{PER} ( {LOC} ) finished {ORD} in {NUM} minutes {NUM} seconds .",
    "The {NAT} foreign minister , {PER} , arrived in {LOC} for talks with {PER} .",
    "{ORG} and {ORG} agreed to merge in a deal worth {NUM} million {CUR} .",
    "{PER} will travel to {LOC} and {LOC} next month , the {ORG} said .",
    "The {EVENT} will be held in {LOC} in {MONTH} {YEAR} .",
    "{PER} said the {ORG} had not been informed of the decision .",
    "Heavy rain caused flooding across {LOC} on {DAY} , officials said .",
    "{NAT} troops entered {LOC} early on {DAY} , witnesses said .",
    '" This is a difficult time for everyone , " said {PER} , who joined {ORG} in {YEAR} .',
    "{LAST} 's late goal gave {LOC} a {SCORE} win over {LOC} .",
    "Analysts at {ORG} expect profits to rise by {NUM} percent this year .",
    "{PER} , who was born in {LOC} , became a {NAT} citizen in {YEAR} .",
    "Officials from the {ORG} and the {ORG} will meet in {LOC} on {DAY} .",
    "The price of oil rose to {NUM} dollars a barrel .",
    "{LOC} will host the {EVENT} for the first time .",
    "{PER} beat {PER} {SET} {SET} to reach the {EVENT} semi-finals .",
    "The {NAT} central bank left interest rates unchanged on {DAY} .",
    "{PER} told {ORG} radio that the election in {LOC} was unfair .",
    "Thousands of people marched through {LOC} on {DAY} to protest against the new law .",
    "{ORG} reported a net profit of {NUM} million {CUR} for the first half .",
    "The two sides have not met since the {EVENT} in {YEAR} .",
    "{PER} and {PER} were named in the {NAT} squad for the match against {LOC} .",
    "No injuries were reported .",
    "{PER} , {NUM} , was appointed coach of {ORG} .",
    "Standings after {DAY} 's matches : {ORG} {NUM} points , {ORG} {NUM} , {ORG} {NUM} .",
    "{LAST} added that he expected a decision by the end of {MONTH} .",
    "The government will announce its budget on {DAY} , a spokesman said .",
    "{NAT} and {NAT} fans clashed outside the stadium in {LOC} before the {EVENT} match .",
]
# Clauses for the rare long sentences: no quotes, trailing "." dropped when joined.
CLAUSES = [t for t in TEMPLATES if '"' not in t and ":" not in t]


def split_pools(seed: int) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Return (train pools, evaluation pools); the train pools lack HELD_OUT of every list."""
    rng = random.Random(seed)
    seen, everything = {}, {}
    for key, names in NAMES.items():
        shuffled = sorted(names)
        rng.shuffle(shuffled)
        n_held = round(len(shuffled) * HELD_OUT)
        seen[key] = shuffled[n_held:]
        everything[key] = shuffled
    return seen, everything


def pick(slot: str, pools: dict[str, list[str]], rng: random.Random) -> str:
    if slot == "PER":
        return f"{rng.choice(pools['FIRST'])} {rng.choice(pools['LAST'])}"
    return rng.choice(pools["LAST" if slot == "LAST" else slot])


def render(template: str, pools: dict[str, list[str]], rng: random.Random) -> list[tuple[str, str]]:
    """Fill one template; returns (token, IOB2 tag) pairs. Names are not repeated within a sentence."""
    out: list[tuple[str, str]] = []
    used: set[str] = set()
    for tok in template.split():
        slot = tok[1:-1] if tok.startswith("{") and tok.endswith("}") else None
        if slot in ENTITY_SLOTS:
            name = pick(slot, pools, rng)
            for _ in range(20):
                if name not in used:
                    break
                name = pick(slot, pools, rng)
            used.add(name)
            etype = ENTITY_SLOTS[slot]
            out += [(w, ("B-" if i == 0 else "I-") + etype) for i, w in enumerate(name.split())]
        elif slot in FILLERS:
            out.append((FILLERS[slot](rng), "O"))
        else:
            out.append((tok, "O"))
    return out


def long_sentence(pools: dict[str, list[str]], rng: random.Random) -> list[tuple[str, str]]:
    """Join several clauses with "," and "and" into one 60-90 token sentence."""
    while True:
        sent: list[tuple[str, str]] = []
        while len(sent) < 60:
            clause = render(rng.choice(CLAUSES), pools, rng)[:-1]  # drop the final "."
            if sent:
                word, tag = clause[0]
                if tag == "O":
                    clause[0] = (word.lower(), tag)
                sent += [(",", "O")] + ([("and", "O")] if rng.random() < 0.5 else [])
            sent += clause
        sent.append((".", "O"))
        if len(sent) <= 90:
            return sent


def sentences(n: int, pools: dict[str, list[str]], rng: random.Random) -> list[list[tuple[str, str]]]:
    out = []
    while len(out) < n:
        if rng.random() < 0.02:
            out.append(long_sentence(pools, rng))
            continue
        sent = render(rng.choice(TEMPLATES), pools, rng)
        if 5 <= len(sent) <= 40:
            out.append(sent)
    return out


def write(path: Path, sents: list[list[tuple[str, str]]]) -> None:
    lines = ["-DOCSTART- O", ""]
    for sent in sents:
        lines += [f"{tok} {tag}" for tok, tag in sent] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ents = Counter(tag[2:] for sent in sents for _, tag in sent if tag.startswith("B-"))
    per_type = " ".join(f"{t}={ents[t]}" for t in ("PER", "LOC", "ORG", "MISC"))
    n_tokens = sum(len(s) for s in sents)
    print(f"{path.name}: {len(sents)} sentences, {n_tokens} tokens, entities {per_type}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate the synthetic DEMO NER data (CoNLL format).")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--train", type=int, default=1200, help="training sentences")
    parser.add_argument("--validation", type=int, default=100, help="validation sentences")
    parser.add_argument("--test", type=int, default=100, help="test sentences")
    args = parser.parse_args(argv)

    seen, everything = split_pools(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    splits = [("train", args.train, seen), ("validation", args.validation, everything)]
    splits.append(("test", args.test, everything))
    for offset, (split, n, pools) in enumerate(splits):
        rng = random.Random(args.seed * 1000 + offset + 1)
        write(args.out / f"{split}.conll", sentences(n, pools, rng))


if __name__ == "__main__":
    main()
