"""Progress without a terminal: rich draws nothing there, so `track` prints plain periodic lines."""

from rluf.progress import track


def test_track_prints_plain_lines_when_stderr_is_not_a_terminal(capsys):
    items = list(track(iter(range(5)), "scoring", total=5, every_s=0))  # every item: a line
    assert items == [0, 1, 2, 3, 4]
    lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert lines[0].startswith("scoring: 1/5 after") and lines[-1].startswith("scoring: 5/5 after")
    assert len(list(track(range(3), "quiet", every_s=3600))) == 3  # long interval: no line, nothing lost
    assert capsys.readouterr().err == ""
