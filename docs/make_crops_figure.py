"""Crops figure of the model zoo: the same region of a benchmark image, x4, side by side.

    python docs/make_crops_figure.py [--image Set14/baboon] [--box X Y SIZE] [--out docs/crops_x4.png]

Panels: HR, bicubic (MATLAB-exact), then every model of --models that has bundled x4
weights, each labelled with its Y-PSNR on the whole image (evaluation protocol) and the
fine detail of its crop against the HR crop's (``eval.metrics.detail_ratio``: 100% is as
much high-frequency energy as HR, lower is smoother; PSNR says "closer", this says
"sharper", and neither alone tells restored texture from invented texture). A
model without bundled weights gets a grey panel that says so, so the figure never
silently drops a row of the comparison. Inference is exact fp32, as in evaluation.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from eval.datasets import load_benchmark  # noqa: E402
from eval.metrics import detail_ratio, evaluate_pair  # noqa: E402
from sr.checkpoints import load_model  # noqa: E402
from sr.errors import SRError  # noqa: E402
from sr.inference import upscale  # noqa: E402
from sr.io import tensor_to_pil  # noqa: E402
from sr.resize import imresize  # noqa: E402

DEFAULT_MODELS = "edsr_baseline,rcan,srresnet,srgan"
LABEL_HEIGHT = 34


def _to_pil(x: torch.Tensor) -> Image.Image:
    return tensor_to_pil(x.float() / 255 if x.dtype == torch.uint8 else x)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default="Set14/baboon", help="<Set>/<image name> (default Set14/baboon)")
    ap.add_argument("--box", type=int, nargs=3, metavar=("X", "Y", "SIZE"), default=(150, 6, 100),
                    help="HR crop: left, top, size in pixels (default 150 6 100: eye and fur)")
    ap.add_argument("--zoom", type=int, default=3, help="nearest-neighbour zoom of each crop (default 3)")
    ap.add_argument("--models", default=DEFAULT_MODELS, help=f"comma-separated (default {DEFAULT_MODELS})")
    ap.add_argument("--data-root", help="benchmark root (default: $SR_DATA_ROOT, then the shared data)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "crops_x4.png"))
    args = ap.parse_args(argv)

    scale = 4
    set_name, image_name = args.image.split("/", 1)
    try:
        bench = load_benchmark(set_name, scale, args.data_root)
    except SRError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    paths = [p for p in bench.hr_paths if p.stem == image_name]
    if not paths:
        print(f"error: no image {image_name!r} in {bench.hr_dir}", file=sys.stderr)
        return 2
    item = bench.load(paths[0])
    x0, y0, size = args.box
    h, w = item.hr.shape[-2:]
    if x0 + size > w or y0 + size > h:
        print(f"error: the box {x0},{y0}+{size} does not fit the {w}x{h} image", file=sys.stderr)
        return 2

    def region(img: torch.Tensor) -> torch.Tensor:
        return img[..., y0:y0 + size, x0:x0 + size]

    def panel(out: torch.Tensor, title: str):
        psnr = evaluate_pair(out, item.hr, scale)["psnr_y"]
        shown = region(out)
        # scale=1: a crop has no image border to drop beyond the one pixel this trims
        detail = float(detail_ratio(shown, region(item.hr), 1)[0])
        return _to_pil(shown), title, f"{psnr:.2f} dB, detail {100 * detail:.0f}%"

    panels = [(_to_pil(region(item.hr)), "HR", f"{set_name} {image_name}")]
    panels.append(panel(imresize(item.lr, scale=scale), "bicubic"))
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        try:
            model = load_model(name, scale=scale)
        except SRError:
            panels.append((None, name, "no bundled x4 weights"))
            continue
        lr = item.lr.unsqueeze(0).float() / 255
        panels.append(panel(upscale(model, lr, precision="fp32", device="cpu"), name))
        print(f"{name}: {panels[-1][2]}", file=sys.stderr)

    side = size * args.zoom
    sheet = Image.new("RGB", (len(panels) * (side + 8) + 8, side + LABEL_HEIGHT + 16), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (img, title, subtitle) in enumerate(panels):
        left = 8 + i * (side + 8)
        if img is None:
            draw.rectangle([left, 8, left + side - 1, 8 + side - 1], fill=(200, 200, 200))
        else:
            sheet.paste(img.resize((side, side), Image.NEAREST), (left, 8))  # nearest: show pixels
        draw.text((left, side + 12), title, fill="black")
        draw.text((left, side + 12 + LABEL_HEIGHT // 2), subtitle, fill=(80, 80, 80))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.png")
    sheet.save(tmp)
    tmp.replace(out)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
