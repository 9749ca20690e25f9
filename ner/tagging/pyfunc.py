"""The MLflow pyfunc, logged as "models from code": no pickle, just this file, the `ner` package and the files.

Input: a DataFrame (or list) of raw texts in a `text` column, or of token lists in a `tokens` column.
Output: one dict per row: tokens, IOB2 tags and entities (character offsets for text, token positions for tokens).
Loading a pyfunc runs its code: load models only from stores you trust.
"""

from __future__ import annotations

import mlflow
from mlflow.pyfunc import PythonModel


class NerPyfunc(PythonModel):
    def load_context(self, context) -> None:
        import torch

        from ner.model.tagger import Tagger
        from ner.tagging.annotate import Annotator

        torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
        self.annotator = Annotator(Tagger.load(context.artifacts["tagger"]))

    def predict(self, context, model_input, params=None) -> list[dict]:
        from ner.tagging.annotate import token_entities

        rows = _rows(model_input)
        if rows and not isinstance(rows[0], str):
            sentences = [list(r) for r in rows]
            tags = self.annotator.tag_tokens(sentences)
            return [
                {"tokens": s, "tags": t, "entities": token_entities(s, t)} for s, t in zip(sentences, tags, strict=True)
            ]
        docs = self.annotator.annotate([r or "" for r in rows])
        return [
            {
                "tokens": [t for s in d["sentences"] for t in s["tokens"]],
                "tags": [t for s in d["sentences"] for t in s["tags"]],
                "entities": d["entities"],
            }
            for d in docs
        ]


def _rows(model_input) -> list:
    """Texts or token lists from a DataFrame (`text` or `tokens` column), records, a dict, a list, or a string.

    MLflow turns `{"text": ["a", "b"]}` into one row whose cell is a list, so list cells of `text` are flattened.
    """
    if hasattr(model_input, "columns"):
        if "tokens" in model_input.columns and model_input["tokens"].notna().any():
            return [list(v) for v in model_input["tokens"].tolist()]
        return [t for v in model_input["text"].tolist() for t in (v if _is_list(v) else [v])]
    if isinstance(model_input, dict):
        return _rows([model_input])
    if isinstance(model_input, str):
        return [model_input]
    if model_input and isinstance(model_input[0], dict):
        if all(r.get("tokens") is not None for r in model_input):
            return [list(r["tokens"]) for r in model_input]
        return [t for r in model_input for t in (r["text"] if _is_list(r["text"]) else [r["text"]])]
    return list(model_input)


def _is_list(value) -> bool:
    return not isinstance(value, str) and hasattr(value, "__len__")


mlflow.models.set_model(NerPyfunc())
