"""`explain.html=<file>`: one self-contained HTML page of explanations (no scripts, no external files): one row
per input, each explanation's label and probability, and its words (tokens where no words are known) shaded
by attribution, green for support of the label, red against, scaled by the row's largest magnitude."""

from __future__ import annotations

import html
from pathlib import Path

UNITS_STYLE = ".t{padding:.1em .15em;margin:0 .05em;border-radius:.2em;line-height:2}.l{font-weight:600}" \
    ".m{color:#666;font-size:.85em}"  # shaded units, labels, muted text: also embedded by `ftune report`
STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.5em;vertical-align:top;
text-align:left}""" + UNITS_STYLE


def write(rows: list[dict], path: str | Path, title: str) -> Path:
    """Write the page atomically; returns its path."""
    method = rows[0]["explanations"][0]["method"] if rows and rows[0].get("explanations") else ""
    page = (f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p class=m>method: {html.escape(method)}; green supports the label, red speaks against it</p>"
            f"{rows_table(rows)}</body></html>\n")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path


def rows_table(rows: list[dict]) -> str:
    """The table of explained rows (the classes of STYLE: .t shaded unit, .l label, .m muted); also used by
    `ftune report ... explain=N`."""
    body = []
    for number, row in enumerate(rows, 1):
        if "error" in row:
            body.append(f"<tr><td>{number}</td><td colspan=2>{html.escape(row['error'])}</td></tr>")
            continue
        cells = []
        predicted = row.get("prediction")
        for item in row["explanations"]:
            units = item.get("words") or item["tokens"]
            key = "word" if "words" in item else "token"
            scale = max((abs(u["score"]) for u in units), default=0.0) or 1.0
            shaded = " ".join(_shade(u[key], u["score"] / scale) for u in units)
            span = f" “{html.escape(item['span'])}”" if "span" in item else ""
            delta = f", delta {item['delta']:.2g}" if "delta" in item else ""
            cells.append(f"<div><span class=l>{html.escape(item['label'])}</span>{span} "
                         f"<span class=m>p={item['probability']:.3f}{delta}</span><br>{shaded}</div>")
        if not cells:
            cells.append("<div class=m>nothing predicted to explain</div>")
        head = ""
        if predicted and "label" in predicted:
            head = (f"<span class=l>{html.escape(predicted['label'])}</span> "
                    f"<span class=m>{predicted['score']:.3f}</span>")
        elif predicted and "labels" in predicted:  # multi-label: every predicted label with its probability
            head = " ".join(f"<span class=l>{html.escape(label)}</span> <span class=m>{p:.3f}</span>"
                            for label, p in predicted["labels"].items()) or "<span class=m>no label predicted</span>"
        elif predicted and "value" in predicted:  # regression
            head = f"<span class=l>{predicted['value']:.4g}</span>"
        elif predicted and "generated" in predicted:  # a generated text: one row of shading per generated token
            head = f"<span class=l>{html.escape(predicted['generated'])}</span>"
        if "gold" in row:  # `ftune report`: the example's own label
            head += f"<br><span class=m>gold: {html.escape(row['gold'])}</span>"
        body.append(f"<tr><td>{number}</td><td>{head}</td><td>{''.join(cells)}</td></tr>")
    return f"<table><tr><th>#</th><th>prediction</th><th>explanation</th></tr>{''.join(body)}</table>"


def _shade(text: str, weight: float) -> str:
    alpha = min(abs(weight), 1.0) * 0.8
    color = f"rgba(0,150,60,{alpha:.2f})" if weight >= 0 else f"rgba(210,40,40,{alpha:.2f})"
    return f'<span class=t style="background:{color}" title="{weight:+.3f}">{html.escape(text)}</span>'
