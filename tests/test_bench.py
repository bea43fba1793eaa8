"""The benchmark's own arithmetic: py-spy's collapsed stacks become the right shares."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.profile import top_frames


def test_top_frames_share_samples_by_function_not_line(tmp_path: Path) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text(
        'process 1:"server";loop (a.py:1);handle (b.py:10);run (ort.py:5) 6\n'
        'process 1:"server";loop (a.py:1);handle (b.py:12) 3\n'
        'process 2:"worker";loop (a.py:2) 1\n'
    )
    frames, total = top_frames(raw)
    assert total == 10
    by_name = {f: (inclusive, own) for f, inclusive, own in frames}
    assert by_name["run (ort.py)"] == pytest.approx((60.0, 60.0))
    assert by_name["handle (b.py)"] == pytest.approx((90.0, 30.0))  # two lines, one function
    assert by_name["loop (a.py)"] == pytest.approx((100.0, 10.0))
    assert [f for f, _, _ in frames][0] == "run (ort.py)"  # ranked by own samples
