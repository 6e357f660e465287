"""The training loop: one step function, validation, checkpoints, exact resume, export.

Run folder layout::

    config.yaml        the resolved recipe
    last.pt            training state (torch.save; loads with weights_only=True)
    best.safetensors   the best weights on the validation set so far
    final.safetensors  the exported result (EMA weights when EMA is on, else the best)
    train.csv          loss, lr, speed and data-wait share every ``log_every`` steps
    val.csv            validation PSNR/SSIM (Y, paper protocol)

Exact resume: every random draw of the data pipeline is a function of (seed, sample
index) and the degradations of (seed, step), so the state to restore is only the
weights, optimiser, scheduler, scaler and step; the RNG states are saved and restored
too for anything else that draws from the global generators.
"""
from __future__ import annotations

import contextlib
import math
import os
import platform
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn
from tqdm import tqdm

from eval.datasets import load_benchmark
from eval.metrics import evaluate_pair
from sr.checkpoints import load_model, load_state_dict_file, load_weights, read_metadata, save_checkpoint
from sr.color import rgb_to_y
from sr.errors import SRError
from sr.inference import upscale
from sr.models import Discriminator, create_model
from sr.train import distributed
from sr.train.config import ConfigError
from sr.train.data import build_dataset, build_loader, resolve_dirs
from sr.train.degrade import LRMaker, context_margin
from sr.train.logs import CsvLog, tensorboard_writer
from sr.train.losses import AdversarialLoss, PerceptualLoss, pixel_loss
from sr.train.schedule import EMA, lr_factor
from sr.train.state import STATE_FORMAT, ResumeError, atomic_save, load_state, rng_state, set_rng_state

CKPT_NAME = "last.pt"
BEST_NAME = "best.safetensors"
FINAL_NAME = "final.safetensors"


class TrainingDiverged(SRError):
    """The loss (or the weights) became NaN or infinite."""


# ----------------------------------------------------------------------------- helpers

class _TrainForward(nn.Module):
    """What the optimiser trains through: the model on RGB, or its luma network for
    Y-channel models. A module of its own so DDP and torch.compile wrap this call."""

    def __init__(self, model: nn.Module, y_channel: bool):
        super().__init__()
        self.model, self.y_channel = model, y_channel

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.model.forward_y(lr) if self.y_channel else self.model(lr)


@contextlib.contextmanager
def _stop_on_signals(trainer: "Trainer"):
    """SIGINT/SIGTERM ask the loop to checkpoint and stop; a second SIGINT aborts.
    (Handlers can only be installed from the main thread; elsewhere this does nothing.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, frame):
        if trainer.stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        trainer.stop_signal = signum

    for s in previous:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _say(msg: str) -> None:
    """A line above the progress bar, flushed (runs are often logged to a file)."""
    tqdm.write(msg)
    sys.stdout.flush()


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


# ----------------------------------------------------------------------------- trainer

class Trainer:
    """Builds everything a recipe describes; ``fit()`` trains, validates, checkpoints
    and exports. ``resume``: True (a checkpoint must exist), False (start fresh; an
    existing checkpoint is an error), None (resume when ``run_dir`` has one).
    ``command``: the command line that started (or resumed) the run, for the provenance."""

    def __init__(self, cfg: dict, run_dir: str | os.PathLike, resume: bool | None = None,
                 progress: bool = True, recipe: str | None = None, command: str | None = None):
        self.cfg, self.recipe, self.command = cfg, recipe, command
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.clock = time.monotonic()
        t = cfg["train"]
        self.threads_before = torch.get_num_threads()
        if t["threads"]:
            torch.set_num_threads(int(t["threads"]))
        self.dist = distributed.setup(str(t["device"]))
        self.device = self.dist.device
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed patch sizes: pick the fastest kernels once
        self.main = self.dist.main
        self.scale = int(cfg["model"]["scale"])
        self.stop_signal: int | None = None
        try:
            self._setup(resume)
        except BaseException:
            self.close()
            raise

    def _setup(self, resume: bool | None) -> None:
        cfg, t = self.cfg, self.cfg["train"]
        ckpt = self.run_dir / CKPT_NAME
        if resume is None:
            resume = ckpt.is_file()
        elif resume and not ckpt.is_file():
            raise ResumeError(f"--resume: no checkpoint {ckpt}; start without --resume")
        elif not resume and ckpt.is_file():
            raise ResumeError(f"{ckpt} exists; resume it or choose another run folder")
        state = load_state(ckpt) if resume else None

        torch.manual_seed(int(t["seed"]))
        self._build_model()
        self._build_losses()
        self._build_optim()
        self.step = 0
        self.best = {"psnr_y": -math.inf, "step": 0}
        self.wall_before = 0.0
        self.commands: list[str] = []  # this run's start command, then each resume's
        self.history: list[dict] = []  # the earlier runs these weights continue (init.from)
        if state is not None:
            self._load(state)
        elif cfg["init"]["from"]:
            self._init_from(cfg["init"]["from"], bool(cfg["init"]["strict"]))
            self.history = _history_of(cfg["init"]["from"])
        if self.command:
            self.commands.append(self.command)
        if self.ema is not None and state is None:
            self.ema.module.load_state_dict(self.model.state_dict())

        self.margin = context_margin(self.scale, cfg["degrade"])
        self.dataset = build_dataset(cfg, self.scale, self.margin, self.progress and self.main)
        if cfg["data"]["lr_dirs"] and any(v["prob"] > 0 for v in cfg["degrade"].values()):
            raise ConfigError("degradations apply to LR made on the fly; with data.lr_dirs turn them off")
        batch = int(cfg["data"]["batch"])
        self.lr_maker = LRMaker(self.scale, cfg["degrade"], self._resize_mode(), self.margin,
                                int(t["seed"]), batch, self.dist.rank * (batch // self.dist.world))
        self.val_images = self._load_val() if self.main else []
        if self.main:
            self._open_logs(resumed=state is not None)
        self.data_wait = 0.0

    # ------------------------------------------------------------------ construction

    def _build_model(self) -> None:
        cfg, t = self.cfg, self.cfg["train"]
        m = cfg["model"]
        self.model = create_model(m["name"], self.scale, **(m["hparams"] or {})).to(self.device)
        y = t["y_channel"]
        if y == "auto":
            y = hasattr(self.model, "forward_y")
        if y and not hasattr(self.model, "forward_y"):
            raise ConfigError(f"train.y_channel is on but {m['name']} is not a Y-channel model")
        self.y_channel = bool(y)
        cl = t["channels_last"]
        self.channels_last = self.device.type == "cuda" if cl == "auto" else bool(cl)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.ema = EMA(self.model, float(t["ema"])) if t["ema"] else None
        self.amp_dtype = self._amp_dtype(t["amp"])
        self.forward = self._wrap(_TrainForward(self.model, self.y_channel))
        self.disc = None
        if self.cfg["loss"]["adversarial"]["weight"] > 0:
            self.disc = Discriminator(**(self.cfg["gan"]["d_hparams"] or {})).to(self.device)
            if self.channels_last:
                self.disc.to(memory_format=torch.channels_last)
            self.disc_ddp = self._wrap(self.disc)

    def _wrap(self, module: nn.Module) -> nn.Module:
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            module = nn.parallel.DistributedDataParallel(module, device_ids=ids)
        mode = self.cfg["train"]["compile"]
        if mode:
            module = torch.compile(module, mode=None if mode is True else mode)
        return module

    def _amp_dtype(self, amp: str) -> torch.dtype | None:
        cuda = self.device.type == "cuda"
        if amp == "auto":
            if not cuda:
                return None
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if amp == "fp16" and not cuda:
            raise ConfigError("train.amp=fp16 needs a CUDA GPU; use bf16 or off on the CPU")
        return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]

    def _resize_mode(self) -> str:
        mode = self.cfg["data"]["lr_resize"]
        if mode == "auto":
            return "float" if self.device.type == "cuda" else "exact"
        return mode

    def _build_losses(self) -> None:
        loss = self.cfg["loss"]
        px = loss["pixel"]
        self.pixel = pixel_loss(px["type"], px["eps"]) if px["weight"] > 0 else None
        pc = loss["perceptual"]
        self.perceptual = None
        if pc["weight"] > 0:
            self.perceptual = PerceptualLoss(pc["layer"], bool(pc["before_activation"]), str(pc["weights"]),
                                             float(pc["feature_scale"]), pc["criterion"]).to(self.device)
        self.adversarial = AdversarialLoss(loss["adversarial"]["type"]) if self.disc is not None else None
        if self.y_channel and (self.perceptual is not None or self.adversarial is not None):
            raise ConfigError("perceptual and adversarial losses work on RGB; set train.y_channel=false")
        if self.pixel is None and self.perceptual is None:
            raise ConfigError("no content loss: give loss.pixel.weight or loss.perceptual.weight > 0")

    def _build_optim(self) -> None:
        o, t = self.cfg["optim"], self.cfg["train"]
        cls = torch.optim.AdamW if o["type"] == "adamw" else torch.optim.Adam
        # Fused Adam on every device (the CPU too, since torch 2.4): one operator for all the
        # parameters instead of ten per tensor, which counts when a step is dispatch-bound.
        self.opt = cls(self.model.parameters(), lr=float(o["lr"]), betas=tuple(o["betas"]),
                       eps=float(o["eps"]), weight_decay=float(o["weight_decay"]), fused=True)
        total = int(t["steps"])
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_factor(self.cfg["sched"], float(o["lr"]), total))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        if self.disc is not None:
            g = self.cfg["gan"]["optim"]
            self.opt_d = cls(self.disc.parameters(), lr=float(g["lr"]), betas=tuple(g["betas"]), fused=True)
            self.sched_d = torch.optim.lr_scheduler.LambdaLR(
                self.opt_d, lr_factor(self.cfg["sched"], float(g["lr"]), total))

    def _init_from(self, path: str, strict: bool) -> None:
        sd = load_state_dict_file(Path(path).expanduser())
        what = f"init.from {path}"
        if strict:
            load_weights(self.model, sd, what)
            return
        own = self.model.state_dict()
        fit = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
        if not fit:
            raise ConfigError(f"{what}: no tensor matches {self.model.arch} x{self.scale}")
        self.model.load_state_dict(fit, strict=False)
        if self.main:
            _say(f"init: {len(fit)}/{len(own)} tensors from {path}")

    def _load_val(self) -> list:
        v = self.cfg["val"]
        if not v["dataset"]:
            return []
        bench = load_benchmark(str(v["dataset"]), self.scale, v["root"])
        images = list(bench)[:v["max_images"] or None]
        return [(img.lr.float().div(255).unsqueeze(0).to(self.device), img.hr) for img in images]

    def _open_logs(self, resumed: bool) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(yaml.safe_dump(self.cfg, sort_keys=False))
        keep = self.step if resumed else None
        names = ["loss"] + self._loss_names()
        self.train_log = CsvLog(self.run_dir / "train.csv",
                                ["step", *names, "lr", "steps_per_s", "data_wait", "elapsed_s"], keep)
        self.val_log = CsvLog(self.run_dir / "val.csv", ["step", "psnr_y", "ssim_y", "best_psnr_y"], keep)
        self.tb = tensorboard_writer(self.run_dir)

    def _loss_names(self) -> list[str]:
        names = [n for n, on in (("pixel", self.pixel), ("perceptual", self.perceptual)) if on is not None]
        return names + (["adversarial", "d_loss"] if self.disc is not None else [])

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        state = {
            "format": STATE_FORMAT,
            "step": self.step,
            "config": self.cfg,
            "model": self.model.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best": dict(self.best),
            "rng": rng_state(),
            # The sampler position: the data order is a function of (seed, sample index).
            "data": {"next_sample": self.step * int(self.cfg["data"]["batch"]),
                     "seed": int(self.cfg["train"]["seed"])},
            "wall_time_s": self.wall_time(),
            "commands": self.commands,
            "history": self.history,
        }
        if self.disc is not None:
            state.update(disc=self.disc.state_dict(), disc_optimizer=self.opt_d.state_dict(),
                         disc_scheduler=self.sched_d.state_dict())
        return state

    def _load(self, state: dict) -> None:
        try:
            self.model.load_state_dict(state["model"])
            if self.ema is not None:
                if state["ema"] is None:
                    raise ResumeError("the checkpoint has no EMA weights but train.ema is on")
                self.ema.module.load_state_dict(state["ema"])
            self.opt.load_state_dict(state["optimizer"])
            self.sched.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            if self.disc is not None:
                self.disc.load_state_dict(state["disc"])
                self.opt_d.load_state_dict(state["disc_optimizer"])
                self.sched_d.load_state_dict(state["disc_scheduler"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise ResumeError(f"the checkpoint in {self.run_dir} does not fit this recipe "
                              f"({str(e).splitlines()[0]}); use another --run-dir") from None
        self.step = int(state["step"])
        self.best = dict(state["best"])
        self.wall_before = float(state["wall_time_s"])
        self.commands = list(state.get("commands", []))
        self.history = list(state.get("history", []))
        set_rng_state(state["rng"])
        changed = _diff(state["config"], self.cfg)
        if self.main:
            _say(f"resuming {self.run_dir} at step {self.step}"
                 + (f" (changed since: {', '.join(changed)})" if changed else ""))

    def wall_time(self) -> float:
        return self.wall_before + time.monotonic() - self.clock

    def save(self) -> None:
        """Write the training checkpoint (rank 0), after checking nothing is NaN."""
        self._check_weights()
        if self.main:
            atomic_save(self.state_dict(), self.run_dir / CKPT_NAME)
        distributed.barrier(self.dist)

    def _check_weights(self) -> None:
        bad = any(not bool(torch.isfinite(p).all()) for p in self.model.parameters())
        if distributed.any_rank(self.dist, bad):
            raise TrainingDiverged(f"the weights became NaN/inf by step {self.step}; stopped without "
                                   f"saving ({self._last_good()}); lower optim.lr or set optim.grad_clip")

    def _last_good(self) -> str:
        ckpt = self.run_dir / CKPT_NAME
        if ckpt.is_file():
            return f"the last good checkpoint is kept: {ckpt}"
        return "no checkpoint had been written yet"

    # ------------------------------------------------------------------ one step

    def autocast(self):
        """The AMP context of the training step (a no-op when AMP is off)."""
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def inputs(self, batch, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A loader batch -> (LR, HR) float tensors on the device (luma for Y models)."""
        if isinstance(batch, (list, tuple)):
            lr, hr = (b.to(self.device, non_blocking=True).float().div_(255) for b in batch)
        else:
            lr, hr = self.lr_maker(batch.to(self.device, non_blocking=True), step)
        if self.y_channel:
            lr, hr = rgb_to_y(lr), rgb_to_y(hr)
        if self.channels_last:
            lr = lr.contiguous(memory_format=torch.channels_last)
        return lr, hr

    def _content(self, sr: torch.Tensor, hr: torch.Tensor, parts: dict) -> torch.Tensor:
        cfg = self.cfg["loss"]
        total = 0.0
        if self.pixel is not None:
            parts["pixel"] = self.pixel(sr.float(), hr)
            total = total + cfg["pixel"]["weight"] * parts["pixel"]
        if self.perceptual is not None:
            parts["perceptual"] = self.perceptual(sr, hr)
            total = total + cfg["perceptual"]["weight"] * parts["perceptual"]
        return total

    def _optimizer_step(self, loss: torch.Tensor, opt: torch.optim.Optimizer, params) -> None:
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        clip = float(self.cfg["optim"]["grad_clip"])
        if clip > 0:
            self.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, clip)
        self.scaler.step(opt)

    def train_step(self, batch, step: int) -> dict[str, torch.Tensor]:
        """One optimisation step (generator and, with a GAN loss, discriminator).
        Returns the detached loss terms (device tensors: no host sync here)."""
        lr, hr = self.inputs(batch, step)
        parts: dict[str, torch.Tensor] = {}
        with self.autocast():
            sr = self.forward(lr)
            loss = self._content(sr, hr, parts)
            if self.disc is not None:
                loss = loss + self.cfg["loss"]["adversarial"]["weight"] * self._adv_generator(sr, hr, parts)
        self._optimizer_step(loss, self.opt, self.model.parameters())
        if self.disc is not None:
            self._discriminator_step(sr.detach(), hr, parts)
        self.scaler.update()
        self.sched.step()
        if self.disc is not None:
            self.sched_d.step()
        parts["loss"] = loss
        return {k: v.detach().float() for k, v in parts.items()}

    def _adv_generator(self, sr: torch.Tensor, hr: torch.Tensor, parts: dict) -> torch.Tensor:
        # D's own module (not its DDP wrapper): its weights are not trained in this pass.
        # D normalises with batch statistics (BatchNorm in train mode), so it must see the
        # same real+fake batch as in its own step: on SR alone it would judge features
        # re-centred on the fakes, which it was never trained on, and G would chase that.
        self.disc.requires_grad_(False)
        try:
            real, fake = self.disc(torch.cat([hr, sr])).chunk(2)
        finally:
            self.disc.requires_grad_(True)
        parts["adversarial"] = self.adversarial.generator(real.detach(), fake)
        return parts["adversarial"]

    def _discriminator_step(self, fake: torch.Tensor, hr: torch.Tensor, parts: dict) -> None:
        # Real and fake in one forward: DDP expects one forward per backward.
        with self.autocast():
            real_logits, fake_logits = self.disc_ddp(torch.cat([hr, fake])).chunk(2)
            d_loss = self.adversarial.discriminator(real_logits, fake_logits)
        self._optimizer_step(d_loss, self.opt_d, self.disc.parameters())
        parts["d_loss"] = d_loss

    # ------------------------------------------------------------------ the loop

    def make_loader(self, start: int):
        d = self.cfg["data"]
        return build_loader(self.dataset, int(d["batch"]), start, int(self.cfg["train"]["steps"]),
                            int(self.cfg["train"]["seed"]), int(d["workers"]), self.dist.rank,
                            self.dist.world, pin_memory=self.device.type == "cuda")

    def fit(self) -> dict:
        """Train to ``train.steps`` (or the time budget, or a signal). Returns a summary."""
        t = self.cfg["train"]
        total, log_every = int(t["steps"]), int(t["log_every"])
        val_every, ckpt_every = int(self.cfg["val"]["every"] or 0), int(t["ckpt_every"] or 0)
        budget = t["max_minutes"] * 60 if t["max_minutes"] else None
        reason = "done"
        try:
            with _stop_on_signals(self):
                bar = tqdm(total=total, initial=self.step, unit="step", dynamic_ncols=True,
                           disable=not (self.progress and self.main), desc=self.recipe or "train")
                pending: list[tuple[int, dict]] = []
                window = (time.perf_counter(), self.step, self.data_wait)
                loader = iter(self.make_loader(self.step))
                while self.step < total:
                    t0 = time.perf_counter()
                    batch = next(loader)
                    self.data_wait += time.perf_counter() - t0
                    parts = self.train_step(batch, self.step)
                    self.step += 1
                    if self.ema is not None:
                        self.ema.update(self.model, self.step)
                    pending.append((self.step, parts))
                    bar.update(1)
                    validate = val_every and self.step % val_every == 0 and self.step < total
                    checkpoint = ckpt_every and self.step % ckpt_every == 0
                    if self.step % log_every == 0 or validate or checkpoint:
                        window = self._flush(pending, bar, window)
                    if validate:
                        self.validate()
                    if checkpoint:
                        self.save()
                    if validate or checkpoint:  # keep their time out of the next speed reading
                        window = (time.perf_counter(), self.step, self.data_wait)
                    stop_time = budget is not None and time.monotonic() - self.clock > budget
                    if distributed.any_rank(self.dist, self.stop_signal is not None or stop_time):
                        reason = "signal" if self.stop_signal is not None else "time budget"
                        break
                self._flush(pending, bar, window)
                bar.close()
            self.save()
            if reason == "signal":
                if self.main:
                    _say(f"stopped by signal at step {self.step}; checkpoint {self.run_dir / CKPT_NAME} "
                         "(run again with --resume to continue)")
                return self.summary(reason, None)
            if self.main and reason == "time budget":
                _say(f"time budget of {t['max_minutes']} min reached at step {self.step}")
            final = self.finish()
            return self.summary(reason, final)
        finally:
            if getattr(self, "tb", None) is not None:
                self.tb.close()

    def _flush(self, pending: list, bar, window: tuple) -> tuple:
        """Check the pending losses (one host sync), log their mean; raise on NaN/inf."""
        if not pending:
            return window
        names = list(pending[-1][1])
        values = torch.stack([torch.stack([p[k] for k in names]) for _, p in pending]).cpu()
        finite = torch.isfinite(values).all(dim=1)
        bad_step = pending[int((~finite).nonzero()[0])][0] if not bool(finite.all()) else None
        if distributed.any_rank(self.dist, bad_step is not None):
            what = f"the loss became {values[~torch.isfinite(values)][0].item()} at step {bad_step}" \
                if bad_step is not None \
                else "the loss became NaN/inf on another process"
            raise TrainingDiverged(f"{what}; stopped without saving ({self._last_good()}); "
                                   "lower optim.lr, set optim.grad_clip or train.amp=off")
        mean = dict(zip(names, values.mean(dim=0).tolist()))
        pending.clear()
        now = time.perf_counter()
        t0, s0, w0 = window
        elapsed = max(now - t0, 1e-9)
        lr = self.opt.param_groups[0]["lr"]
        if self.main:
            row = {"step": self.step, **mean, "lr": lr, "steps_per_s": (self.step - s0) / elapsed,
                   "data_wait": (self.data_wait - w0) / elapsed, "elapsed_s": self.wall_time()}
            self.train_log.write(row)
            bar.set_postfix(loss=f"{mean['loss']:.4g}", lr=f"{lr:.3g}")
            if self.tb is not None:
                for k, v in row.items():
                    if k != "step":
                        self.tb.add_scalar(f"train/{k}", v, self.step)
        return now, self.step, self.data_wait

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict | None:
        """Mean protocol PSNR/SSIM (Y) of ``model`` on the validation set (rank 0)."""
        if not self.val_images:
            return None
        scores = [evaluate_pair(upscale(model, lr, device=self.device, precision="fp32"), hr, self.scale)
                  for lr, hr in self.val_images]
        return {k: float(np.mean([s[k] for s in scores])) for k in ("psnr_y", "ssim_y")}

    def eval_model(self) -> nn.Module:
        """The weights validation and export use: the EMA when on, else the live model."""
        return self.ema.module if self.ema is not None else self.model

    def validate(self) -> dict | None:
        scores = self.evaluate(self.eval_model()) if self.main else None
        if scores is not None:
            if scores["psnr_y"] > self.best["psnr_y"]:
                self.best = {"psnr_y": scores["psnr_y"], "ssim_y": scores["ssim_y"], "step": self.step}
                save_checkpoint(self.eval_model(), self.run_dir / BEST_NAME, self._metadata(scores))
            self.val_log.write({"step": self.step, **scores, "best_psnr_y": self.best["psnr_y"]})
            if self.tb is not None:
                for k, v in scores.items():
                    self.tb.add_scalar(f"val/{k}", v, self.step)
            _say(f"step {self.step}: {self.cfg['val']['dataset']} x{self.scale} "
                 f"PSNR {scores['psnr_y']:.3f} dB, SSIM {scores['ssim_y']:.4f} (Y); "
                 f"best {self.best['psnr_y']:.3f} at step {self.best['step']}")
        distributed.barrier(self.dist)
        return scores

    def finish(self) -> Path | None:
        """Validate the final weights and export the ones ``train.export`` names
        (auto: the EMA when on, else the best on the validation set)."""
        last = self.validate()
        path = self._export(last) if self.main else None
        # destroy_process_group is collective: a rank that left while rank 0 still
        # exported was once aborted in gloo teardown ("terminate called ...", SIGABRT).
        distributed.barrier(self.dist)
        return path

    def _export(self, last: dict | None) -> Path:
        choice = self.cfg["train"]["export"]
        if choice == "auto":
            choice = "ema" if self.ema is not None else "best"
        if choice == "best" and not (self.run_dir / BEST_NAME).is_file():
            choice = "last"  # nothing was validated
        if choice == "best":
            model, scores = load_model(self.run_dir / BEST_NAME), self.best
        elif choice == "ema":
            model, scores = self.ema.module, last
        else:
            model = self.model
            scores = last if self.ema is None else self.evaluate(self.model)
        path = self.run_dir / FINAL_NAME
        save_checkpoint(model, path, self._metadata(scores, choice))
        _say(f"exported the {choice} weights to {path}")
        return path

    def _metadata(self, scores: dict | None, weights: str = "best") -> dict:
        d = self.cfg["data"]
        provenance = {
            "recipe": self.recipe,
            "config": self.cfg,
            "data": {"hr_dirs": [str(p) for p in resolve_dirs(d["hr_dirs"], d["root"])],
                     "lr_dirs": d["lr_dirs"], "images": len(self.dataset.usable)},
            "steps": self.step,
            "weights": weights,
            "device": _device_name(self.device),
            "world_size": self.dist.world,
            "wall_time_s": round(self.wall_time(), 1),
            "torch": torch.__version__,
        }
        if self.commands:
            provenance["command"] = self.commands[0]
            if len(self.commands) > 1:
                provenance["resumed_with"] = self.commands[1:]
        if self.history:
            provenance["history"] = self.history
        meta = {"provenance": provenance}
        if scores is not None:
            meta["eval"] = {str(self.cfg["val"]["dataset"]): {
                "scale": self.scale, "psnr": round(scores["psnr_y"], 4), "ssim": round(scores["ssim_y"], 4),
                "step": scores.get("step", self.step)}}
        return meta

    def summary(self, reason: str, final: Path | None) -> dict:
        return {"step": self.step, "stopped": reason, "signal": self.stop_signal, "best": self.best, "final": final,
                "wall_time_s": self.wall_time(), "data_wait_s": self.data_wait}

    def close(self) -> None:
        """Leave the process group and restore torch's CPU thread count."""
        distributed.teardown(self.dist)
        torch.set_num_threads(self.threads_before)


def _diff(old, new, path: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new), key=str)
                for d in _diff(old.get(k), new.get(k), f"{path}{k}.")]
    return [path.rstrip(".")] if old != new else []


def _history_of(init_from: str) -> list[dict]:
    """The runs behind an ``init.from`` checkpoint, oldest first, so that a chain of
    continuations keeps every command that made its weights (the checkpoint's own
    history, then the checkpoint's run). Empty for files without our provenance."""
    try:
        prov = read_metadata(Path(init_from).expanduser()).get("provenance")
    except (SRError, OSError):
        return []
    if not isinstance(prov, dict):
        return []
    earlier = prov.get("history") if isinstance(prov.get("history"), list) else []
    stage = {k: prov[k] for k in ("command", "resumed_with", "steps", "wall_time_s", "device", "weights")
             if k in prov}
    return earlier + [{"file": str(init_from), **stage}]


def train(cfg: dict, run_dir: str | os.PathLike, resume: bool | None = None, progress: bool = True,
          recipe: str | None = None, command: str | None = None) -> dict:
    """Build a Trainer, run it, tear the process group down. Returns ``fit()``'s summary."""
    trainer = Trainer(cfg, run_dir, resume, progress, recipe, command)
    try:
        return trainer.fit()
    finally:
        trainer.close()
