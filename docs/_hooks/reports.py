"""MkDocs hook: the committed reports and benchmark results are part of the site where they lie
(reports/*.md and their plots, each default model's training report, bench/*.md and profiles),
so a page links `reports/quality.md` or shows `reports/quality.png` without a copy in docs/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files, InclusionLevel

ROOT = Path(__file__).resolve().parents[2]
PATTERNS = (
    "reports/*.md",
    "reports/*.png",
    "reports/*/*/report.md",
    "reports/*/*/curves.png",
    "bench/*.md",
    "bench/*.svg",
)


def on_files(files: Files, config: Any) -> Files:
    for pattern in PATTERNS:
        for path in sorted(ROOT.glob(pattern)):
            files.append(
                File(
                    path.relative_to(ROOT).as_posix(),
                    str(ROOT),
                    config["site_dir"],
                    config["use_directory_urls"],
                    inclusion=InclusionLevel.NOT_IN_NAV,
                )
            )
    return files
