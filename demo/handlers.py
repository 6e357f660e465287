"""Upscale-tab logic as plain functions on images; errors a user can cause raise SRError.

`Workbench.upscale` runs one request and keeps the result (a `Run`) for the crop
inspector; `Workbench.crops` cuts the same region out of every image of a run. The UI
layer (`demo.ui`) only adapts Gradio values and turns SRError into gr.Error.
"""
from __future__ import annotations

import atexit
import contextlib
import math
import os
import shutil
import tempfile
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from demo.model_cache import BICUBIC, ModelCache
from demo.settings import DECODE_FACTOR, Settings
from eval.metrics import evaluate_pair, quantize
from sr.errors import ImageReadError, InputTooLargeError, ScaleError, SRError
from sr.inference import upscale, upscale_with_info
from sr.io import ImagePlanes, compose, decompose, image_info, read_image, save_image
from sr.models import count_parameters
from sr.resize import imresize, modcrop

# The crop views are magnified with nearest neighbour to about this width.
CROP_DISPLAY_PX = 320
# LR context around a compare-model crop: the inference engine's largest default tile
# overlap, enough for the crop to match a whole-image run.
COMPARE_MARGIN = 32
MIN_SIDE = 4  # smaller images have too little context for any of the models
UPLOAD = "upload"  # model choice that means "use the uploaded checkpoint file"

Progress = Callable[[int, int], Any]


@dataclass
class Run:
    """One finished upscale: the images the slider, crops and download show."""

    run_id: str
    model: str             # model label as chosen ("bicubic", "edsr_baseline", a file name)
    scale: int
    lr: Image.Image        # what the model got
    bicubic: Image.Image
    sr: Image.Image
    hr: Image.Image | None  # ground-truth mode only
    sr_path: Path
    bicubic_path: Path
    info: dict = field(default_factory=dict)
    # Multiply a click on the upload (its own pixels) by this to get LR pixels: the
    # upload may have been downscaled, or be the HR original in ground-truth mode.
    click_to_lr: tuple[float, float] = (1.0, 1.0)

    @property
    def nbytes(self) -> int:
        return sum(_nbytes(im) for im in (self.lr, self.bicubic, self.sr, self.hr) if im is not None)


class RunStore:
    """Finished runs for the crop inspector, newest kept, older ones dropped past a byte budget.

    Each run has a folder under a per-process temp folder (PNG files for download);
    dropping a run deletes its folder. Gradio has copied the files it serves by then.
    """

    def __init__(self, parent: Path, budget_bytes: int):
        parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_run_folders(parent)
        self.root = Path(tempfile.mkdtemp(prefix=f"runs-{os.getpid()}-", dir=parent))
        atexit.register(shutil.rmtree, self.root, True)
        self.budget = budget_bytes
        self._runs: OrderedDict[str, Run] = OrderedDict()
        self._lock = threading.Lock()

    def new_folder(self) -> tuple[str, Path]:
        run_id = uuid.uuid4().hex[:12]
        folder = self.root / run_id
        folder.mkdir()
        return run_id, folder

    def add(self, run: Run) -> None:
        with self._lock:
            self._runs[run.run_id] = run
            total = sum(r.nbytes for r in self._runs.values())
            while total > self.budget and len(self._runs) > 1:
                _, old = self._runs.popitem(last=False)
                total -= old.nbytes
                shutil.rmtree(self.root / old.run_id, ignore_errors=True)

    def get(self, run_id: str | None) -> Run:
        with self._lock:
            run = self._runs.get(run_id) if run_id else None
            if run is None:
                raise SRError("no result to inspect: press Upscale first (older results are "
                              "dropped when the server needs the memory)")
            self._runs.move_to_end(run_id)
            return run

    def __len__(self) -> int:
        return len(self._runs)


def _remove_stale_run_folders(parent: Path) -> None:
    """Delete the run folders of demo processes that are gone (killed before atexit ran)."""
    for folder in parent.glob("runs-*-*"):
        pid = folder.name.split("-")[1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


class Workbench:
    """The demo's state shared by all sessions: settings, loaded models, recent results."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.models = ModelCache(settings.model_cache, settings.device)
        self.runs = RunStore(settings.work_dir, settings.results_mb * 2**20)

    # ------------------------------------------------------------------ models

    def checkpoint_model(self, path: str | Path) -> torch.nn.Module:
        """Load (once) a user's checkpoint file; its scale comes from the file."""
        if not path:
            raise SRError("no checkpoint file: upload a .safetensors or .pth file first")
        with _file_name_only(path):
            return self.models.get_file(path)

    # ------------------------------------------------------------------ upscale

    def read_input(self, image, downscale_large: bool = False
                   ) -> tuple[Image.Image, tuple[int, int], str]:
        """The upload as a normalised image (shrunk to the pixel limit when asked), its
        original size, and a note saying what was done."""
        if image is None:
            raise ImageReadError("no image: upload one (or click an example) first")
        limit = self.settings.max_pixels
        with _file_name_only(image):
            img = read_image(image, max_pixels=limit * DECODE_FACTOR)
        w, h = img.size
        if min(w, h) < MIN_SIDE:
            raise ImageReadError(f"the image is {w}x{h} pixels; upload one of at least "
                                 f"{MIN_SIDE}x{MIN_SIDE}")
        if w * h <= limit:
            return img, (w, h), ""
        if not downscale_large:
            raise InputTooLargeError(
                f"the image is {w}x{h} ({w * h / 1e6:.1f} MP), above this demo's limit of "
                f"{limit / 1e6:g} MP: tick 'downscale large inputs' or upload a smaller image")
        small = shrink_to(img, limit)
        note = f"downscaled from {w}x{h} to {small.width}x{small.height} (limit {limit / 1e6:g} MP)"
        return small, (w, h), note

    def upscale(self, image, model: str, scale, *, checkpoint: str | Path | None = None,
                ground_truth: bool = False, downscale_large: bool = False,
                progress: Progress | None = None) -> Run:
        """Super-resolve `image` (path, PIL image or array) with `model` at `scale`.

        model: a name from the catalogue, or "upload" with `checkpoint` a weights file
        (then `scale` may be None: the checkpoint's own).
        ground_truth: treat the image as the HR original (modcrop, MATLAB-bicubic LR,
        metrics against it).
        """
        img, (orig_w, orig_h), note = self.read_input(image, downscale_large)
        if model == UPLOAD:
            net = self.checkpoint_model(checkpoint)
            scale = net.scale if scale is None else as_scale(scale)  # None: the file's own
            if net.scale != scale:
                raise ScaleError(f"the uploaded checkpoint is a x{net.scale} model; "
                                 f"choose x{net.scale}")
            label = Path(checkpoint).name
        else:
            scale = as_scale(scale)
            net = self.models.get(model, scale)
            label = model
        bicubic = self.models.get(BICUBIC, scale)
        name = Path(image).stem if isinstance(image, (str, Path)) else "image"

        run_id, folder = self.runs.new_folder()
        try:
            run = self._run(run_id, folder, img, net, bicubic, label, scale, ground_truth,
                            f"{_safe_stem(name)}_{_safe_stem(label)}_x{scale}", progress)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        per_lr = scale if ground_truth else 1
        run.click_to_lr = (img.width / orig_w / per_lr, img.height / orig_h / per_lr)
        run.info["input"] = image_info(img)
        if note:
            run.info["note"] = note
        self.runs.add(run)
        return run

    def _engine_args(self, exact: bool = False) -> dict:
        # Metrics use fp32 like the evaluation does; display runs take the fastest precision.
        return {"device": self.settings.device, "memory_budget_mb": self.settings.memory_mb,
                "precision": "fp32" if exact else "auto"}

    def _run(self, run_id, folder, img, net, bicubic_net, label, scale, ground_truth, stem,
             progress) -> Run:
        hr = metrics = None
        if ground_truth:
            hr8 = modcrop(quantize(decompose(img).rgb), scale)  # (3, H, W) uint8
            need = 2 * scale + 11  # SSIM's 11x11 window after the scale-pixel border crop
            if min(hr8.shape[-2:]) < need:
                raise ImageReadError(f"ground-truth mode at x{scale} needs an image of at least "
                                     f"{need}x{need} pixels")
            lr8 = imresize(hr8, scale=1 / scale)
            # The baseline as the benchmark tables make it: MATLAB imresize of the uint8 LR.
            bic8 = imresize(lr8, scale=scale)
            sr_out, info = upscale_with_info(net, lr8.float() / 255, progress=progress,
                                             **self._engine_args(exact=True))
            metrics = {BICUBIC: evaluate_pair(bic8, hr8, scale)}
            if label != BICUBIC:
                metrics[label] = evaluate_pair(sr_out, hr8, scale)
            hr, lr = _uint8_pil(hr8), _uint8_pil(lr8)
            bic, sr = _uint8_pil(bic8), _uint8_pil(quantize(sr_out))
        else:
            lr = img
            bic = upscale(bicubic_net, lr, **self._engine_args())
            sr, info = upscale_with_info(net, lr, progress=progress, **self._engine_args())
        sr_path = save_image(sr, folder / f"{stem}.png")
        bicubic_path = save_image(bic, folder / f"bicubic_x{scale}.png")
        w, h = info["output_size"]
        run_info = {
            "model": label, "arch": getattr(net, "arch", "?"), "scale": scale,
            "parameters": count_parameters(net), "output_size": f"{w}x{h}",
            "device": info["device"], "precision": info["precision"], "tiles": info["tiles"],
            "seconds": round(info["seconds"], 3), "ground_truth": ground_truth,
        }
        if metrics:
            run_info["metrics"] = metrics
        return Run(run_id, label, scale, lr, bic, sr, hr, sr_path, bicubic_path, run_info)

    # ------------------------------------------------------------------ crops

    def crops(self, run_id: str | None, centre: tuple[float, float] | None, crop_size: int,
              compare: str | None = None) -> list[tuple[Image.Image, str]]:
        """The same region of every image of a run, magnified with nearest neighbour.

        centre: (x, y) in the uploaded image's pixels (where the user clicked); None for
        the middle. crop_size: side of the region in LR pixels. compare: another model
        whose output for the region is shown too.
        """
        run = self.runs.get(run_id)
        s = run.scale
        lw, lh = run.lr.size
        c = max(1, min(int(crop_size), lw, lh))
        if centre is None:
            cx, cy = lw / 2, lh / 2
        else:
            cx, cy = centre[0] * run.click_to_lr[0], centre[1] * run.click_to_lr[1]
        x0 = min(max(0, round(cx - c / 2)), lw - c)
        y0 = min(max(0, round(cy - c / 2)), lh - c)
        box = (x0, y0, x0 + c, y0 + c)
        big = tuple(v * s for v in box)
        zoom = max(1, math.ceil(CROP_DISPLAY_PX / (c * s)))
        views = [(_magnify(run.lr.crop(box), s * zoom), f"LR input ({x0}, {y0})"),
                 (_magnify(run.bicubic.crop(big), zoom), f"bicubic x{s}")]
        if run.model != BICUBIC:
            views.append((_magnify(run.sr.crop(big), zoom), f"{run.model} x{s}"))
        if run.hr is not None:
            views.append((_magnify(run.hr.crop(big), zoom), "HR original"))
        if compare and compare not in (run.model, BICUBIC):
            views.append((_magnify(self._compare_crop(run, compare, box), zoom), f"{compare} x{s}"))
        return views

    def _compare_crop(self, run: Run, name: str, box: tuple[int, int, int, int]) -> Image.Image:
        """`name`'s output for `box` of the LR image, run on the box plus context only."""
        net = self.models.get(name, run.scale)
        lw, lh = run.lr.size
        x0, y0, x1, y1 = box
        m = COMPARE_MARGIN
        region = (max(0, x0 - m), max(0, y0 - m), min(lw, x1 + m), min(lh, y1 + m))
        out = upscale(net, run.lr.crop(region), **self._engine_args())
        s = run.scale
        ox, oy = (x0 - region[0]) * s, (y0 - region[1]) * s
        return out.crop((ox, oy, ox + (x1 - x0) * s, oy + (y1 - y0) * s))


def shrink_to(img: Image.Image, max_pixels: int) -> Image.Image:
    """`img` shrunk (MATLAB bicubic, antialiased) to at most `max_pixels`, aspect kept."""
    w, h = img.size
    f = math.sqrt(max_pixels / (w * h))
    size = (max(1, math.floor(h * f)), max(1, math.floor(w * f)))
    planes = decompose(img)
    shrunk = ImagePlanes(
        rgb=imresize(planes.rgb, size=size).clamp_(0, 1),
        alpha=None if planes.alpha is None else imresize(planes.alpha, size=size).clamp_(0, 1),
        gray=planes.gray, bit_depth=planes.bit_depth, icc_profile=planes.icc_profile)
    return compose(shrunk)


def run_markdown(run: Run) -> str:
    """Run info as a Markdown table, with the metrics table in ground-truth mode."""
    i = run.info
    rows = [("model", f"{i['model']} ({i['arch']})"), ("parameters", f"{i['parameters']:,}"),
            ("input", i.get("input", "")), ("output", f"{i['output_size']} (x{i['scale']})"),
            ("device", i["device"]), ("precision", i["precision"]), ("tiles", i["tiles"]),
            ("seconds", f"{i['seconds']:.2f}")]
    if "note" in i:
        rows.append(("note", i["note"]))
    text = "| run info | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)
    if "metrics" in i:
        text += ("\n**Against your original** (Y channel, scale-pixel border cropped, "
                 "as in the papers)\n\n| | PSNR-Y (dB) | SSIM-Y |\n|---|---|---|\n")
        for name, m in i["metrics"].items():
            text += f"| {name} | {m['psnr_y']:.2f} | {m['ssim_y']:.4f} |\n"
    return text


@contextlib.contextmanager
def _file_name_only(path):
    """Uploads sit in a server temp folder: errors name the file the user knows instead."""
    try:
        yield
    except SRError as e:
        if not isinstance(path, (str, Path)):
            raise
        raise type(e)(str(e).replace(str(path), Path(path).name)) from None


def as_scale(scale) -> int:
    try:
        value = float(scale)
    except (TypeError, ValueError):
        value = math.nan
    if not value.is_integer():
        raise SRError(f"scale {scale!r} is not a whole number; choose 2, 3 or 4")
    return int(value)


def _uint8_pil(x: torch.Tensor) -> Image.Image:
    """(3, H, W) uint8 tensor -> RGB image."""
    return Image.fromarray(np.ascontiguousarray(x.permute(1, 2, 0).numpy()))


def _magnify(img: Image.Image, factor: int) -> Image.Image:
    if factor == 1:
        return img
    return img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)


def _nbytes(img: Image.Image) -> int:
    per_band = {"I;16": 2, "I": 4, "F": 4}.get(img.mode, 1)
    extra = getattr(img, "samples16", None)
    pixels = img.width * img.height * len(img.getbands()) * per_band
    return pixels + (extra.nbytes if extra is not None else 0)


def _safe_stem(label: str) -> str:
    stem = Path(label).stem
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in stem)[:60] or "model"
