"""Document context: sentences of one -DOCSTART- document read together, in training, scoring and tagging alike."""

import shutil

import torch
from conftest import TINY, compose_train
from test_model import SENTS, TAGS, make

from ner.data import schemes
from ner.data.batching import context_runs
from ner.model.engine import Engine


def test_runs_keep_to_one_document_and_the_token_budget():
    lengths, documents = [3, 4, 5, 20, 2, 2, 1], [0, 0, 0, 0, 1, 1, 2]
    runs = context_runs(lengths, documents, max_tokens=10)
    assert runs == [range(0, 2), range(2, 3), range(3, 4), range(4, 6), range(6, 7)]  # 20 > 10 stands alone
    assert context_runs(lengths, documents, max_tokens=0) == [range(i, i + 1) for i in range(7)]
    assert context_runs([], [], 10) == []


def test_a_model_with_context_reads_a_sentence_with_its_neighbours():
    model = make(context_tokens=50).eval()
    apart = model.featurizer.encode(SENTS, TAGS, documents=[0, 1, 2, 3])
    joined = model.featurizer.encode([[w for s in SENTS for w in s]])
    itos = model.featurizer.labels.itos
    flat = [itos[i] for i in model.decode(joined.batch([0]))[0]]
    bounds = [0, 4, 6, 8, 9]
    engine = Engine(model)
    together = [schemes.convert(flat[a:b], "iob2") for a, b in zip(bounds, bounds[1:], strict=False)]
    assert engine.predict(SENTS, documents=[0, 0, 0, 0]) == together
    alone = [schemes.convert([itos[i] for i in model.decode(apart.batch([i]))[0]], "iob2") for i in range(4)]
    assert engine.predict(SENTS, documents=[0, 1, 2, 3]) == alone
    with torch.no_grad():  # the second sentence's scores depend on the first only when they are read together
        alone = model.emissions(apart.batch([1]))[0]
        in_context = model.emissions(joined.batch([0]))[0, 4:6]
    assert not torch.allclose(alone, in_context)


def test_context_is_off_for_a_training_file_without_documents(tmp_path, capsys):
    from ner.training.pipeline import build

    data = tmp_path / "tweets"
    shutil.copytree(TINY, data)
    for split in ("train.txt", "valid.txt", "test.txt"):
        path = data / split
        path.write_text("".join(line for line in path.read_text().splitlines(True) if "-DOCSTART-" not in line))
    *_, with_docs = build(compose_train(tmp_path, "model.context_tokens=40"))
    *_, without = build(compose_train(tmp_path, "model.context_tokens=40", f"data.path={data}"))
    assert (with_docs.cfg.context_tokens, without.cfg.context_tokens) == (40, 0)
    assert "no -DOCSTART- lines" in capsys.readouterr().out


def test_a_run_with_context_trains_scores_and_saves_it(tmp_path):
    """The run's logged model keeps the setting, and tagging with it gives the scores the run logged."""
    from ner.data.corpus import DataConfig, Sentences, load_corpus
    from ner.evaluation import metrics
    from ner.tracking import model_uri
    from ner.training.pipeline import train

    result = train(compose_train(tmp_path, "model.context_tokens=40", "trainer.max_epochs=2"))
    assert result["epochs"] == 2
    model = model_uri.load(f"runs:/{result['run_id']}/model", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert model.cfg.context_tokens == 40
    test = Sentences.of(load_corpus(DataConfig(path=str(TINY), cache_dir=str(tmp_path / "cache")))[0]["test"])
    assert metrics.score(test.gold, Engine(model).predict(test.tokens, test.documents))["f1"] == result["test_f1"]
