"""Tagging progress: a bar on a terminal; redirected, a plain line every few minutes and never a carriage return."""

from ner.tagging.progress import Lines, progress


def test_redirected_progress_is_a_line_now_and_then(capsys):
    bar = progress(total=2 * 2**30, enabled=True, every=0.0)  # under pytest stderr is not a terminal
    assert isinstance(bar, Lines)
    bar.set_postfix_str("10 docs, 5,000 tokens/s")
    bar.update(2**30)
    bar.close()
    assert capsys.readouterr().err == "tagging: 50% of 2.00 GiB read (10 docs, 5,000 tokens/s)\n"


def test_lines_wait_their_interval_and_progress_false_prints_nothing(capsys):
    bar = progress(total=100, enabled=True, every=3600.0)
    for _ in range(100):
        bar.update(1)
    quiet = progress(total=100, enabled=False, every=0.0)
    quiet.update(50)
    assert capsys.readouterr().err == ""
