"""Human-readable run artifacts: CoNLL-format predictions, a confusion plot, and the final score table."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ner.data.schemes import split_tag


def conll_predictions(tokens: list[list[str]], gold: list[list[str]], pred: list[list[str]]) -> str:
    """`token gold predicted` per line, blank line between sentences: the file conlleval reads."""
    lines = []
    for toks, g, p in zip(tokens, gold, pred, strict=True):
        lines.extend(f"{t} {a} {b}" for t, a, b in zip(toks, g, p, strict=True))
        lines.append("")
    return "\n".join(lines) + "\n"


def confusion(gold: list[list[str]], pred: list[list[str]]) -> tuple[list[str], list[list[int]]]:
    """Token-level confusion of entity types (B-/I- dropped; 'O' kept): rows gold, columns predicted."""
    pairs = Counter(
        (split_tag(g)[1] or "O", split_tag(p)[1] or "O")
        for gs, ps in zip(gold, pred, strict=True)
        for g, p in zip(gs, ps, strict=True)
    )
    names = sorted({n for pair in pairs for n in pair} - {"O"}) + ["O"]
    return names, [[pairs[(g, p)] for p in names] for g in names]


def confusion_plot(gold: list[list[str]], pred: list[list[str]], path: str | Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, matrix = confusion(gold, pred)
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 1.2 * len(names) + 1))
    ax.imshow([[v**0.5 for v in row] for row in matrix], cmap="Blues")
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def table(rows: dict[str, dict[str, float]], keys: list[str]) -> str:
    """A small Markdown table: one row per split, one column per metric."""
    head = "| split | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys) + "\n"
    body = "".join(
        f"| {name} | " + " | ".join(f"{vals.get(k, float('nan')):.2f}" for k in keys) + " |\n"
        for name, vals in rows.items()
    )
    return head + body
