"""docs/make_crops_figure.py: the zoo's crops figure is made by a script, not by hand."""
import importlib.util
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("make_crops_figure", ROOT / "docs" / "make_crops_figure.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_crops_figure_has_a_panel_per_model(benchmarks_dir, tmp_path, capsys):
    out = tmp_path / "crops.png"
    code = _script().main(["--image", "Set5/butterfly", "--box", "100", "100", "32", "--zoom", "2",
                           "--models", "espcn,not_a_shipped_model", "--data-root", str(benchmarks_dir),
                           "--out", str(out)])
    assert code == 0
    img = Image.open(out)
    # HR, bicubic, espcn, and a grey "no weights" panel for the missing model
    assert img.width == 4 * (64 + 8) + 8
    assert not list(tmp_path.glob("*.tmp.png"))
    assert "espcn: " in (err := capsys.readouterr().err) and "dB, detail " in err


def test_crops_figure_rejects_a_box_outside_the_image(benchmarks_dir, tmp_path, capsys):
    code = _script().main(["--image", "Set5/butterfly", "--box", "200", "200", "96",
                           "--data-root", str(benchmarks_dir), "--out", str(tmp_path / "c.png")])
    assert code == 2 and "does not fit" in capsys.readouterr().err
