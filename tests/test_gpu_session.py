"""benchmarks/gpu_session.sh: packing, and the training half of `run` with the benchmarks
skipped (they need a GPU machine; their dry run with tiny settings is in the script's header)."""
import os
import re
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

from sr.paths import PROJECT_ROOT
from tests.test_train_data import write_images

SCRIPT = PROJECT_ROOT / "benchmarks" / "gpu_session.sh"


def _bash(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})), timeout=120)


def test_prepare_packs_training_images_losslessly_and_the_validation_sets(tmp_path):
    shared = tmp_path / "shared"
    originals = {f"{folder}/{path.stem}": np.asarray(Image.open(path).convert("RGB"))
                 for folder, sizes in (("T91", [(24, 20), (18, 30)]), ("BSD200", [(20, 20)]))
                 for path in write_images(shared / "datasets" / "train" / folder, sizes, seed=len(folder))}
    for name in ("Set5", "Set14"):
        for sub in ("HR", "LR_bicubic/X4"):
            (shared / "datasets" / "benchmarks" / name / sub).mkdir(parents=True)
            (shared / "datasets" / "benchmarks" / name / sub / "a.png").write_bytes(b"x")
    pack = tmp_path / "pack"
    env = {"SR_SHARED_DIR": str(shared), "GPU_PACK_DIR": str(pack)}
    too_big = _bash("prepare", env=dict(env, GPU_TRAVEL_LIMIT="1000"))
    assert too_big.returncode == 1 and "too big to travel" in too_big.stderr
    done = _bash("prepare", env=env)
    assert done.returncode == 0, done.stderr
    assert "MiB of the 64 MiB that travel" in done.stdout
    for key, pixels in originals.items():
        with Image.open(pack / "datasets" / "train" / f"{key}.webp") as im:
            assert np.array_equal(np.asarray(im.convert("RGB")), pixels)
    assert (pack / "datasets" / "benchmarks" / "Set14" / "HR" / "a.png").is_file()
    assert not (pack / "datasets" / "benchmarks" / "Set14" / "LR_bicubic").exists()  # made at validation
    assert not Path(f"{pack}.tmp").exists()


def test_run_without_a_pack_and_unknown_verbs_say_what_to_do(tmp_path):
    done = _bash("run", env={"GPU_PACK_DIR": str(tmp_path / "missing")})
    assert done.returncode == 2 and "prepare" in done.stderr
    done = _bash("train")
    assert done.returncode == 2 and "usage" in done.stderr


def test_run_trains_several_recipes_side_by_side_and_keeps_what_comes_back(tmp_path):
    pack = tmp_path / "pack"
    write_images(pack / "datasets" / "train" / "T91", [(40, 40)] * 3, seed=1)
    out = tmp_path / "out"
    tiny = ["val.dataset=null", "data.hr_dirs=[T91]", "data.patch=8", "data.batch=2", "train.ema=0"]
    env = {"GPU_PACK_DIR": str(pack), "OUT": str(out), "GPU_SKIP_BENCH": "1", "GPU_DEADLINE_S": "200",
           "AUTO_STEPS_FALLBACK_ITS": "1", "AUTO_STEPS_SHARE": "0.01", "CUDA_VISIBLE_DEVICES": ""}
    done = _bash("run", "espcn", "0.5", "train.steps=3", *tiny, "--", "fsrcnn", "auto", "train.steps=auto", *tiny,
                 env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    log = (out / "gpu_session.log").read_text()
    assert "benchmarks skipped" in log
    # auto minutes: until the deadline less the export margin; auto steps: the floor of 100
    line = next(x for x in log.splitlines() if x.startswith("== training fsrcnn"))
    assert re.match(r"== training fsrcnn x4 for 2\.\d+ min: train\.steps=100 ", line), line
    assert line.endswith("val.every=12 train.ckpt_every=25")
    for model, steps in (("espcn", 3), ("fsrcnn", 100)):
        run = out / f"run_{model}"
        assert sorted(p.name for p in run.iterdir()) == ["final.safetensors", "train.csv", "val.csv"]
        assert f"\n{steps}," in (run / "train.csv").read_text()
    assert not list(out.glob("train_*.log"))  # folded into gpu_session.log
