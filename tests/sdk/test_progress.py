"""The ``[progress]`` line format: count, optional detail, and how the CLI display and the
hub's client-facing logs read it."""

from __future__ import annotations

from cogkit.cli.display import Display
from cogkit.hub.logs import for_clients
from cogkit.progress import format_progress, parse_progress, progress_detail


def test_round_trip_with_and_without_detail() -> None:
    plain = format_progress("denoising", 3, 30)
    assert plain == "[progress] denoising: 3/30"
    assert parse_progress(plain) == ("denoising", 3, 30) and progress_detail(plain) == ""
    line = format_progress("training", 5, 20, "loss=0.0412")
    assert line == "[progress] training: 5/20 loss=0.0412"
    assert parse_progress(line) == ("training", 5, 20)
    assert progress_detail(line) == "loss=0.0412"
    assert parse_progress("[progress] training: 5/20x") is None  # the count must end the number


def test_hub_logs_keep_the_detail_as_a_tqdm_postfix() -> None:
    out = for_clients("[progress] training: 5/20 loss=0.0412\n")
    assert out == " 25%|##        | 5/20 [training, loss=0.0412]\n"


def test_live_display_shows_the_detail_beside_one_bar() -> None:
    d = Display(live=True)
    try:
        d.log("[progress] training: 1/4 loss=0.9\n[progress] training: 2/4 loss=0.5\n")
        assert list(d._bars) == ["training"]
        task = d._progress.tasks[d._bars["training"]]
        assert task.completed == 2 and task.fields["detail"] == "loss=0.5"
    finally:
        d.close()
