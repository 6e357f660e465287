"""`python -m eval.readme_sync`: README blocks are copied from the eval CLI's table.md files."""
from pathlib import Path

import pandas as pd
import pytest

from eval import readme_sync
from eval.tables import to_markdown

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def project(tmp_path):
    """A folder with one eval output (with LPIPS) and a README that shows it twice."""
    summary = pd.read_csv(ROOT / "results" / "lpips_x4" / "summary.csv")
    (tmp_path / "results" / "x").mkdir(parents=True)
    (tmp_path / "results" / "x" / "table.md").write_text(to_markdown(summary))
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\nintro\n\n"
                      "<!-- from results/x/table.md (y); update with: python -m eval.readme_sync -->\n"
                      "old table\n<!-- end of generated table -->\n\ntext between\n\n"
                      "<!-- from results/x/table.md (lpips); update with: python -m eval.readme_sync -->\n"
                      "| old |\n<!-- end of generated table -->\n\nthe end\n")
    return tmp_path, summary


def test_sections_of_an_eval_table(project):
    root, summary = project
    md = (root / "results" / "x" / "table.md").read_text()
    y = readme_sync.section(md, "y")
    assert y.startswith("| Method | Scale | Params") and y.endswith("B100 x4, Urban100 x4.")
    assert "RGB PSNR" not in y and "PSNR (dB) / SSIM on the Y channel" in y
    lp = readme_sync.section(md, "lpips")
    assert lp.splitlines()[0] == "| Method | Scale | Set5 | Set14 | B100 | Urban100 |"
    assert len(lp.splitlines()) == 2 + summary["model"].nunique()
    with pytest.raises(readme_sync.SyncError, match="--lpips"):
        readme_sync.section(to_markdown(summary.drop(columns="lpips")), "lpips")
    with pytest.raises(readme_sync.SyncError, match="unknown part"):
        readme_sync.section(md, "rgb")


def test_sync_rewrites_only_the_blocks_and_is_idempotent(project):
    root, _ = project
    text = (root / "README.md").read_text()
    new, changed = readme_sync.sync(text, root)
    assert changed == ["results/x/table.md (y)", "results/x/table.md (lpips)"]
    assert "old table" not in new and "| old |" not in new
    assert new.startswith("# Title\n\nintro\n\n<!-- from") and new.endswith("\n\nthe end\n")
    assert "text between" in new and new.count("<!-- end of generated table -->") == 2
    assert readme_sync.sync(new, root) == (new, [])


def test_cli_check_then_update(project, monkeypatch, capsys):
    root, _ = project
    monkeypatch.setattr(readme_sync, "ROOT", root)
    readme = root / "README.md"
    before = readme.read_text()
    assert readme_sync.main([str(readme), "--check"]) == 1
    assert readme.read_text() == before
    assert "stale block from results/x/table.md (y)" in capsys.readouterr().out
    assert readme_sync.main([str(readme)]) == 0
    assert readme_sync.main([str(readme), "--check"]) == 0


def test_missing_source_is_a_one_line_error(project, capsys):
    root, _ = project
    readme = root / "README.md"
    readme.write_text(readme.read_text().replace("results/x/", "results/gone/"))
    with pytest.raises(readme_sync.SyncError, match="results/gone/table.md does not exist"):
        readme_sync.sync(readme.read_text(), root)
    assert readme_sync.main([str(readme)]) == 2
    assert "does not exist" in capsys.readouterr().err
