"""Trainer: overfit, NaN handling, exact resume after SIGTERM/SIGKILL, DDP, SRGAN, export."""
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from sr.checkpoints import load_model, read_metadata
from sr.paths import PROJECT_ROOT
from sr.train import Trainer, TrainingDiverged, load_config, train
from sr.train.__main__ import main as cli_main
from tests.test_train_data import write_images

TINY_EDSR = {"n_resblocks": 1, "n_feats": 8, "rgb_range": 1}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("traindata")
    write_images(root / "hr", [(40, 48), (48, 40), (36, 36), (44, 52)], seed=1)
    write_images(root / "bench" / "Tiny" / "HR", [(32, 24), (28, 36)], seed=2)
    return root


def recipe(tmp_path: Path, data_dir: Path, **sections) -> Path:
    """A tiny recipe file: EDSR-baseline with one block of 8 channels, x2, 8-px LR patches."""
    cfg = {
        "model": {"name": "edsr_baseline", "scale": 2, "hparams": TINY_EDSR},
        "data": {"root": str(data_dir), "hr_dirs": ["hr"], "patch": 8, "batch": 4, "workers": 0,
                 "cache_mb": 16},
        "optim": {"lr": 1.0e-3},
        # one thread: tests share a few cores, where more threads only wait on each other
        "train": {"steps": 20, "log_every": 5, "ckpt_every": 5, "threads": 1},
        "val": {"dataset": None},
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def read_csv(path: Path) -> list[dict]:
    import csv
    with path.open() as f:
        return list(csv.DictReader(f))


def test_tiny_overfit_loss_falls_and_psnr_rises(tmp_path, data_dir):
    one = tmp_path / "one"
    write_images(one / "hr", [(32, 32)], seed=3)
    write_images(one / "bench" / "One" / "HR", [(32, 32)], seed=3)  # the same image
    cfg = load_config(recipe(tmp_path, one, data={"patch": 16, "augment": False},
                             train={"steps": 80, "log_every": 10, "ckpt_every": 0},
                             optim={"lr": 3e-3}, val={"dataset": "One", "root": str(one / "bench"), "every": 0}))
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    before = trainer.evaluate(trainer.model)["psnr_y"]
    summary = trainer.fit()
    after = trainer.evaluate(trainer.model)["psnr_y"]
    trainer.close()
    rows = read_csv(tmp_path / "run" / "train.csv")
    assert float(rows[-1]["loss"]) < 0.5 * float(rows[0]["loss"])
    assert after > before + 3.0, (before, after)
    assert summary["stopped"] == "done" and summary["step"] == 80
    # the export carries provenance and the validation score of the exported weights
    meta = read_metadata(summary["final"])
    assert meta["arch"] == "edsr_baseline" and meta["scale"] == 2
    assert meta["provenance"]["steps"] == 80 and meta["provenance"]["data"]["images"] == 1
    assert meta["eval"]["One"]["psnr"] == pytest.approx(after, abs=1e-3)
    exported = load_model(summary["final"])
    assert all(torch.equal(a, b) for a, b in zip(exported.state_dict().values(),
                                                  trainer.model.state_dict().values()))


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, data_dir):
    # lr x 1e40 from step 4 on: the 5th update blows the weights up, the 6th loss is inf/NaN
    cfg = load_config(recipe(tmp_path, data_dir, sched={"milestones": [4], "gamma": 1.0e40},
                             train={"steps": 20, "log_every": 2, "ckpt_every": 2}))
    with pytest.raises(TrainingDiverged, match=r"at step 6\b.*last good checkpoint is kept"):
        train(cfg, tmp_path / "run", progress=False)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["step"] == 4
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    assert not (tmp_path / "run" / "final.safetensors").exists()


def _ckpt_step(path: Path) -> int:
    try:
        return int(torch.load(path, weights_only=True)["step"])
    except (FileNotFoundError, EOFError, RuntimeError):
        return -1


def _run_until(args: list[str], ckpt: Path, min_step: int, sig: int) -> subprocess.Popen:
    """Start a training subprocess and send it ``sig`` once its checkpoint reaches ``min_step``."""
    proc = subprocess.Popen([sys.executable, "-m", "sr.train", *args, "--no-progress"], cwd=PROJECT_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while _ckpt_step(ckpt) < min_step:
        if proc.poll() is not None:
            pytest.fail(f"training ended before the signal:\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no checkpoint within 120 s")
        time.sleep(0.02)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    return proc


def test_resume_after_sigterm_and_sigkill_matches_an_uninterrupted_run(tmp_path, data_dir):
    steps = 150
    path = recipe(tmp_path, data_dir, train={"steps": steps, "ckpt_every": 5, "log_every": 5, "ema": 0.9,
                                             "export": "last"},
                  sched={"type": "cosine", "warmup_steps": 10, "min_lr": 1.0e-5})
    # uninterrupted, in this process, no data workers
    whole = tmp_path / "whole"
    train(load_config(path), whole, progress=False)
    # interrupted twice, in subprocesses with a data worker: SIGTERM checkpoints at once
    # and exits 143; SIGKILL leaves the last periodic checkpoint
    run = tmp_path / "run"
    ckpt = run / "last.pt"
    args = ["--config", str(path), "--run-dir", str(run), "data.workers=1"]
    term = _run_until(args, ckpt, 10, signal.SIGTERM)
    assert term.returncode == 128 + signal.SIGTERM, term.stdout.read()
    first = _ckpt_step(ckpt)
    assert 10 <= first < steps
    kill = _run_until(args + ["--resume"], ckpt, first + 10, signal.SIGKILL)
    assert kill.returncode == -signal.SIGKILL
    second = _ckpt_step(ckpt)
    assert first + 10 <= second < steps and not (run / "final.safetensors").exists()
    # resume to the end (here, in-process)
    summary = train(load_config(path), run, resume=True, progress=False)
    assert summary["step"] == steps
    a = torch.load(whole / "last.pt", weights_only=True)
    b = torch.load(run / "last.pt", weights_only=True)
    for part in ("model", "ema"):
        for key, t in a[part].items():
            assert torch.equal(t, b[part][key]), f"{part}.{key} differs after resume"
    assert a["optimizer"]["state"][0]["exp_avg_sq"].equal(b["optimizer"]["state"][0]["exp_avg_sq"])
    assert a["scheduler"] == b["scheduler"]
    # the log has every step once, no rows left over from the killed run
    logged = [int(r["step"]) for r in read_csv(run / "train.csv")]
    assert logged == sorted(set(logged)) and logged[-1] == steps


def test_ddp_two_cpu_processes_match_one_process(tmp_path, data_dir):
    path = recipe(tmp_path, data_dir, train={"steps": 8, "ckpt_every": 0, "log_every": 4, "device": "cpu"})
    env = dict(os.environ, OMP_NUM_THREADS="1")
    ddp = tmp_path / "ddp"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "sr.train", "--config", str(path), "--run-dir", str(ddp), "--no-progress"],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    train(load_config(path), tmp_path / "one", progress=False)
    a = torch.load(ddp / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "one" / "last.pt", weights_only=True)["model"]
    fresh = Trainer(load_config(path), tmp_path / "fresh", progress=False)
    init = fresh.model.state_dict()
    fresh.close()
    moved = max((b[k] - init[k]).abs().max().item() for k in b)
    diff = max((a[k] - b[k]).abs().max().item() for k in b)
    # Same data and the same averaged gradient, up to float summation order.
    assert moved > 1e-3 and diff < 1e-5, (moved, diff)
    assert (ddp / "final.safetensors").is_file()
    assert len(read_csv(ddp / "train.csv")) == 2  # rank 0 logs alone


VGG54_RANDOM = {"pixel": {"weight": 0.0}, "perceptual": {"weight": 1.0, "before_activation": False,
                                                         "feature_scale": 1 / 12.75, "weights": "random"}}
MSE_CONTENT = {"pixel": {"type": "mse", "weight": 4.0}, "perceptual": {"weight": 0.0}}  # SRGAN-MSE


@pytest.mark.parametrize("adv, content", [("gan", VGG54_RANDOM), ("ragan", VGG54_RANDOM), ("gan", MSE_CONTENT)],
                         ids=["gan-vgg54", "ragan-vgg54", "gan-mse"])
def test_srgan_two_stage_smoke(tmp_path, data_dir, adv, content):
    tiny = {"n_resblocks": 1, "n_feats": 8}
    stage1 = load_config(recipe(tmp_path, data_dir, model={"name": "srresnet", "hparams": tiny},
                                loss={"pixel": {"type": "mse"}}, train={"steps": 4, "export": "last"}))
    first = train(stage1, tmp_path / "stage1", progress=False)["final"]
    path = recipe(tmp_path, data_dir, model={"name": "srgan", "hparams": tiny},
                  init={"from": str(first)},
                  loss={**content, "adversarial": {"weight": 1e-3, "type": adv}},
                  gan={"d_hparams": {"n_feats": 8}}, train={"steps": 3, "ckpt_every": 3, "export": "last"})
    trainer = Trainer(load_config(path), tmp_path / "stage2", progress=False)
    start = load_model(first).state_dict()
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in start.items())
    d_init = {k: v.clone() for k, v in trainer.disc.state_dict().items()}
    d_batches = []
    trainer.disc.register_forward_pre_hook(lambda module, args: d_batches.append(args[0].shape[0]))
    summary = trainer.fit()
    # D normalises by batch statistics: in G's pass as in its own step it sees HR and SR together.
    assert len(d_batches) == 2 * 3 and set(d_batches) == {2 * trainer.cfg["data"]["batch"]}
    trainer.close()
    state = torch.load(tmp_path / "stage2" / "last.pt", weights_only=True)
    assert any(not torch.equal(d_init[k], v) for k, v in state["disc"].items())
    assert state["disc_optimizer"]["state"]
    row = read_csv(tmp_path / "stage2" / "train.csv")[-1]
    content_col = "perceptual" if content is VGG54_RANDOM else "pixel"
    assert (trainer.perceptual is None) == (content is MSE_CONTENT)
    for col in (content_col, "adversarial", "d_loss"):
        assert math.isfinite(float(row[col])) and float(row[col]) > 0
    assert read_metadata(summary["final"])["arch"] == "srgan"


def test_init_from_another_scale_loads_what_fits(tmp_path, data_dir):
    x2 = train(load_config(recipe(tmp_path, data_dir, train={"steps": 2, "export": "last"})),
               tmp_path / "x2", progress=False)["final"]
    cfg = load_config(recipe(tmp_path, data_dir, model={"scale": 4}, init={"from": str(x2), "strict": False}))
    trainer = Trainer(cfg, tmp_path / "x4", progress=False)
    trainer.close()
    model = trainer.model
    src = load_model(x2).state_dict()
    own = model.state_dict()
    assert torch.equal(own["head.0.weight"], src["head.0.weight"])
    assert "tail.0.2.weight" in own and "tail.0.2.weight" not in src  # the x4 upsampler's second stage
    strict = load_config(recipe(tmp_path, data_dir, model={"scale": 4}, init={"from": str(x2)}))
    with pytest.raises(Exception, match="do not fit"):
        Trainer(strict, tmp_path / "x4strict", progress=False)


def test_cli_overrides_and_errors(tmp_path, data_dir, capsys):
    path = recipe(tmp_path, data_dir)
    assert cli_main(["--config", str(path), "optim.lrr=1"]) == 1
    assert "did you mean 'optim.lr'" in capsys.readouterr().err
    run = tmp_path / "run"
    assert cli_main(["--config", str(path), "--run-dir", str(run), "--no-progress",
                     "train.steps=3", "train.ckpt_every=0", "optim.lr=5e-4"]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["steps"] == 3 and saved["optim"]["lr"] == 5e-4
    # a finished run folder resumes (and stays finished); --resume on an empty one is an error
    assert cli_main(["--config", str(path), "--run-dir", str(run), "--no-progress", "train.steps=3"]) == 0
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 3
    assert cli_main(["--config", str(path), "--run-dir", str(tmp_path / "empty"), "--resume"]) == 1
    assert "no checkpoint" in capsys.readouterr().err


def test_provenance_keeps_every_command_of_a_chain_of_continuations(tmp_path, data_dir):
    path = recipe(tmp_path, data_dir, train={"steps": 3, "ckpt_every": 0, "export": "last"})
    a, b, c = (tmp_path / n for n in "abc")
    base = ["--config", str(path), "--no-progress"]
    assert cli_main([*base, "--run-dir", str(a)]) == 0
    first = read_metadata(a / "final.safetensors")["provenance"]
    assert first["command"] == f"python -m sr.train --config {path} --no-progress --run-dir {a}"
    assert "history" not in first and "resumed_with" not in first
    # b continues a's weights, stops at step 2, then is resumed to step 4
    init = f"init.from={a / 'final.safetensors'}"
    assert cli_main([*base, "--run-dir", str(b), init, "train.steps=2"]) == 0
    assert cli_main([*base, "--run-dir", str(b), init, "train.steps=4", "--resume"]) == 0
    second = read_metadata(b / "final.safetensors")["provenance"]
    assert second["steps"] == 4 and second["command"].endswith("train.steps=2")
    assert second["resumed_with"] == [second["command"].replace("steps=2", "steps=4") + " --resume"]
    assert second["history"] == [{"file": str(a / "final.safetensors"), "command": first["command"],
                                  "steps": 3, "wall_time_s": first["wall_time_s"],
                                  "device": first["device"], "weights": "last"}]
    # c continues b: both earlier runs, oldest first
    assert cli_main([*base, "--run-dir", str(c), f"init.from={b / 'final.safetensors'}"]) == 0
    third = read_metadata(c / "final.safetensors")["provenance"]
    assert [h["command"] for h in third["history"]] == [first["command"], second["command"]]
    assert third["history"][1]["resumed_with"] == second["resumed_with"]
