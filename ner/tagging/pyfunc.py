"""The MLflow pyfunc, logged as "models from code": no pickle, just this file, the `ner` package and the files.

Input, one document per row, in any of the forms a user reaches for first:
- a string, or a list (or array) of strings (raw texts);
- a list of token lists (pre-tokenised sentences, one per row);
- records (dicts) with a `text` or a `tokens` field;
- a pandas DataFrame with a `text` or a `tokens` column, or with a single column of strings, whatever its name
  (MLflow and pandas give a list of strings the column name `0`).
Anything else is refused with one `ValueError` that lists these forms.

Output: one record per row, the one `ner.tag` writes (without its `source` and `doc`): the text, its sentences with
tokens, character offsets and IOB2 tags, and the entities with character offsets. For token input the text is the
tokens joined by spaces, so `start` and `end` slice it too.

The model is logged without a signature: MLflow would otherwise reshape a list of strings into a one-column
table and warn about the column; the forms above are checked here instead. Loading a pyfunc runs its code: load
models only from stores you trust.
"""

from __future__ import annotations

import mlflow
from mlflow.pyfunc import PythonModel

ACCEPTED = (
    "a string, a list of strings, a list of token lists, records with a 'text' or 'tokens' field, or a DataFrame"
    " with a 'text' or 'tokens' column (or a single column of strings)"
)


class NerPyfunc(PythonModel):
    # The input forms are many and are checked in `rows`; MLflow's type-hint validation would need one type and
    # warns on every load without one (it reads this attribute, see mlflow.pyfunc.model.PythonModel).
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        import torch

        from ner.model.tagger import Tagger
        from ner.tagging.annotate import Annotator

        torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
        self.annotator = Annotator(Tagger.load(context.artifacts["tagger"]))

    def predict(self, context, model_input, params=None) -> list[dict]:
        texts, token_lists = rows(model_input)
        if token_lists is not None:
            return self.annotator.annotate_tokens([[tokens] for tokens in token_lists])
        return self.annotator.annotate(texts)


def rows(model_input) -> tuple[list[str], list[list[str]] | None]:
    """(texts, None) for raw-text input, or ([], token lists) for pre-tokenised input; a `ValueError` naming the
    accepted forms for anything else."""
    if hasattr(model_input, "tolist") and not hasattr(model_input, "columns"):  # numpy arrays, as MLflow's server
        model_input = model_input.tolist()  # parses {"inputs": [...]} without a signature, and pandas Series
    if hasattr(model_input, "columns"):  # a DataFrame
        columns = list(model_input.columns)
        if "tokens" in columns and model_input["tokens"].notna().any():
            return [], [_tokens(v) for v in model_input["tokens"].tolist()]
        if "text" in columns or len(columns) == 1:
            values = model_input["text" if "text" in columns else columns[0]].tolist()
            if all(_is_token_list(v) for v in values) and values:
                return [], [_tokens(v) for v in values]
            return [_text(v) for v in values], None
        raise ValueError(f"a DataFrame with columns {columns} cannot be tagged: pass {ACCEPTED}")
    if isinstance(model_input, str):
        return [model_input], None
    if isinstance(model_input, dict):
        return _columns_or_record(model_input)
    if not isinstance(model_input, list | tuple):
        raise ValueError(f"a {type(model_input).__name__} cannot be tagged: pass {ACCEPTED}")
    items = list(model_input)
    if items and all(isinstance(r, dict) for r in items):
        if all(r.get("tokens") is not None for r in items):
            return [], [_tokens(r["tokens"]) for r in items]
        if all("text" in r for r in items):
            return [_text(r["text"]) for r in items], None
    elif all(isinstance(r, str) for r in items):
        return items, None
    elif all(_is_token_list(r) for r in items):
        return [], [_tokens(r) for r in items]
    raise ValueError(f"this input cannot be tagged: pass {ACCEPTED}")


def _columns_or_record(data: dict) -> tuple[list[str], list[list[str]] | None]:
    """A dict is one record ({"text": "..."}, {"tokens": ["..."]}) or columns ({"text": [...]}, {"tokens": [[...]]},
    as `mlflow models serve` passes `{"inputs": {"text": [...]}}`)."""
    tokens, text = data.get("tokens"), data.get("text")
    if tokens is not None and _is_token_list(tokens) and all(_is_token_list(t) for t in tokens):
        return [], [_tokens(t) for t in tokens]
    if isinstance(text, list):
        return [_text(t) for t in text], None
    return rows([data])


def _is_token_list(value) -> bool:
    return not isinstance(value, str | bytes | dict) and hasattr(value, "__iter__")


def _tokens(value) -> list[str]:
    if not _is_token_list(value) or not all(isinstance(t, str) for t in value):
        raise ValueError(f"tokens must be a list of strings, got {value!r:.80}: pass {ACCEPTED}")
    return list(value)


def _text(value) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"text must be a string, got {value!r:.80}: pass {ACCEPTED}")
    return value


mlflow.models.set_model(NerPyfunc())
