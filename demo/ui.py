"""The Gradio app: layout, event wiring (`build_demo`) and serving limits (`launch`).

Handlers here only adapt Gradio values (file payloads, SelectData, gr.Progress) to the
plain functions in `demo.handlers`, and turn the errors a user can cause into a
one-line gr.Error, so a bad upload never takes the server down.
"""
import functools
import logging

import gradio as gr

from demo import benchmarks
from demo.examples import example_rows
from demo.handlers import UPLOAD, Workbench, as_scale, run_markdown
from demo.model_cache import BICUBIC, catalogue
from demo.model_cards import model_cards
from demo.settings import Settings, load_settings
from sr.errors import SRError
from sr.models import count_parameters

log = logging.getLogger("sr.demo")

# Preferred default model among the bundled ones: good quality, still quick on a CPU.
PREFERRED = ("edsr_baseline", "srresnet", "rcan", "edsr", "fsrcnn", "espcn", "srcnn", "srgan")
CROP_SIZES = (16, 24, 32, 48, 64, 96, 128)
NO_COMPARE = ""
MODEL_CONCURRENCY_ID = "model-runs"  # whole-image runs and evaluations share one lane
CROP_CONCURRENCY_ID = "crops"       # crops (small compare-model runs at most) get their own
CROP_CONCURRENCY = 2

INTRO = """# Super-resolution workbench
Upload an image, pick a model and a scale, and compare the result with bicubic
interpolation. Click on the input image to inspect a region pixel by pixel. Tick
*treat my upload as the high-resolution original* to measure PSNR/SSIM against it."""


def user_errors(fn):
    """Show SRError (and anything unexpected) as a one-line gr.Error; the app keeps serving."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except SRError as e:
            raise gr.Error(" ".join(str(e).split()), print_exception=False) from None
        except Exception as e:
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(f"unexpected error ({type(e).__name__}); try another input, "
                           "the server log has the details", print_exception=False) from None
    return wrapper


def _path(payload) -> str | None:
    """The server-side path of a file value (a FileData dict when preprocessing is off)."""
    if payload is None:
        return None
    if isinstance(payload, dict):
        return payload.get("path")
    return str(getattr(payload, "path", payload))


def default_model(settings: Settings, models: dict) -> str:
    if settings.default_model in models:
        return settings.default_model
    bundled = [name for name in models if name != BICUBIC]
    preferred = [name for name in PREFERRED if name in bundled]
    return (preferred or bundled or [BICUBIC])[0]


def model_choices(models: dict) -> list[tuple[str, str]]:
    choices = [(f"{name} ({', '.join(f'x{s}' for s in sorted(scales))})", name)
               for name, scales in models.items()]
    return choices + [("upload a checkpoint (.safetensors / .pth)", UPLOAD)]


def compare_choices(models: dict, scale, exclude: str | None) -> list[tuple[str, str]]:
    names = [name for name, scales in models.items()
             if name not in (BICUBIC, exclude) and scale in scales]
    return [("none", NO_COMPARE)] + [(name, name) for name in names]


def _pick_scale(scales: list[int], current) -> int | None:
    if not scales:
        return None
    return current if current in scales else (4 if 4 in scales else scales[-1])


class Events:
    """Event handlers; parameter names are the API's (`/upscale`, `/evaluate`)."""

    def __init__(self, wb: Workbench):
        self.wb = wb
        self.settings = wb.settings

    @user_errors
    def upscale(self, image, model, scale, ground_truth=False, downscale_large=False,
                checkpoint=None, progress=gr.Progress()):
        """Super-resolve `image`; returns the PNG path, (bicubic, SR) paths, info text and dict."""
        def report(done, total):
            progress((done, total), desc="Super-resolving", unit="tiles")
        run = self.wb.upscale(_path(image), model, scale, checkpoint=_path(checkpoint),
                              ground_truth=bool(ground_truth),
                              downscale_large=bool(downscale_large), progress=report)
        sr_path, bic_path = str(run.sr_path), str(run.bicubic_path)
        return sr_path, (bic_path, sr_path), run_markdown(run), run.info, run.run_id

    @user_errors
    def crops(self, run_id, centre, size, other):
        if not run_id:
            return []
        return self.wb.crops(run_id, centre, size, other or None)

    @user_errors
    def select(self, run_id, size, other, evt: gr.SelectData):
        centre = tuple(evt.index)
        return centre, (self.wb.crops(run_id, centre, size, other or None) if run_id else [])

    def model_changed(self, name, current):
        models = catalogue()
        if name == UPLOAD:
            return (gr.update(choices=[], value=None), gr.update(visible=True),
                    gr.update(visible=True, value="Upload a checkpoint to see its scale."),
                    gr.update(choices=compare_choices(models, None, None), value=NO_COMPARE))
        scales = sorted(models.get(name, {}))
        value = _pick_scale(scales, current)
        return (gr.update(choices=scales, value=value), gr.update(visible=False),
                gr.update(visible=False),
                gr.update(choices=compare_choices(models, value, name), value=NO_COMPARE))

    @user_errors
    def checkpoint_uploaded(self, checkpoint):
        path = _path(checkpoint)
        if not path:
            return gr.update(choices=[], value=None), ""
        net = self.wb.checkpoint_model(path)
        return (gr.update(choices=[net.scale], value=net.scale),
                f"Loaded **{net.arch}** x{net.scale}, {count_parameters(net):,} parameters.")

    def scale_changed(self, scale, name):
        return gr.update(choices=compare_choices(catalogue(), scale, name), value=NO_COMPARE)

    def eval_model_changed(self, name, current):
        scales = sorted(catalogue().get(name, {}))
        return gr.update(choices=scales, value=_pick_scale(scales, current))

    def page_loaded(self):
        """Fresh model lists, cards and results: weights or CSVs may have appeared."""
        models = catalogue()
        name = default_model(self.settings, models)
        scales = sorted(models[name])
        value = _pick_scale(scales, None)
        results = benchmarks.load_results(self.settings.results_dir)
        sets = sorted(results["dataset"].dropna().astype(str).unique()) if not results.empty else []
        plot_set = "Set5" if "Set5" in sets else (sets[0] if sets else None)
        root, local_sets = benchmarks.local_benchmarks()
        frame = benchmarks.plot_frame(results, plot_set, 4)
        where = (f"folders with HR images under {root}" if root else
                 "no benchmark data folder found (set SR_DATA_ROOT)")
        shown = not results.empty
        default_set = "Set5" if "Set5" in local_sets else (local_sets[0] if local_sets else None)
        return (gr.update(choices=model_choices(models), value=name),
                gr.update(choices=scales, value=value),
                gr.update(choices=compare_choices(models, value, name), value=NO_COMPARE),
                model_cards(),
                benchmarks.results_note(results, self.settings.results_dir),
                gr.update(value=benchmarks.results_table(results), visible=shown),
                gr.update(visible=shown), gr.update(visible=shown),
                gr.update(choices=sets, value=plot_set),
                frame, frame,
                gr.update(choices=model_choices(models)[:-1], value=name),
                gr.update(choices=scales, value=value),
                gr.update(choices=local_sets, value=default_set, info=where))

    def plot(self, dataset, scale):
        frame = benchmarks.plot_frame(benchmarks.load_results(self.settings.results_dir),
                                      dataset, scale)
        return frame, frame

    @user_errors
    def evaluate(self, model, scale, dataset, progress=gr.Progress()):
        """Protocol PSNR/SSIM of a bundled model (or bicubic) on a local benchmark set."""
        root, _ = benchmarks.local_benchmarks()
        if root is None:
            raise SRError("no benchmark data folder found; set SR_DATA_ROOT to a folder "
                          "with <Set>/HR images")
        scale = as_scale(scale)
        net = self.wb.models.get(model, scale)

        def report(done, total, desc):
            progress((done, total), desc=f"Evaluating {desc}", unit="images")
        text, table = benchmarks.evaluate_model(model, net, dataset, scale, root, report)
        return text, gr.update(value=table, visible=True)


def build_demo(settings: Settings | None = None) -> gr.Blocks:
    """The whole app. Models and results are read on every page load, so files added
    while it runs appear without a restart."""
    settings = settings or load_settings()
    wb = Workbench(settings)
    examples, example_labels = example_rows(settings.work_dir / "examples")
    models0 = catalogue()
    model0 = default_model(settings, models0)
    scales0 = sorted(models0[model0])
    scale0 = _pick_scale(scales0, None)

    with gr.Blocks(title="Super-resolution workbench", delete_cache=(1800, 3600)) as demo:
        demo.workbench = wb  # for tests and the load-test script
        gr.Markdown(INTRO)
        run_state = gr.State(None)      # id of the latest run (results live in wb.runs)
        centre_state = gr.State(None)   # crop centre (x, y) in the upload's pixels

        with gr.Tab("Upscale"):
            with gr.Row():
                with gr.Column(scale=1):
                    image_in = gr.Image(
                        label="Input image: click on it to choose the crop centre",
                        type="pil", image_mode=None, format="png",
                        sources=["upload", "clipboard"], elem_id="input-image")
                    model = gr.Dropdown(model_choices(models0), value=model0, label="Model",
                                        elem_id="model")
                    checkpoint = gr.File(label="Checkpoint (.safetensors, .pth)", visible=False,
                                         file_types=[".safetensors", ".pth", ".pt"],
                                         elem_id="checkpoint")
                    checkpoint_info = gr.Markdown(visible=False)
                    scale = gr.Dropdown(scales0, value=scale0, label="Scale", elem_id="scale")
                    ground_truth = gr.Checkbox(
                        label="Treat my upload as the high-resolution original",
                        info="Shrinks it with MATLAB bicubic, super-resolves that, and "
                             "measures PSNR/SSIM against your image")
                    downscale = gr.Checkbox(
                        label="Downscale large inputs",
                        info=f"Inputs above {settings.max_megapixels:g} MP are refused "
                             "unless this is ticked")
                    run_btn = gr.Button("Upscale", variant="primary", elem_id="run")
                    gr.Examples(examples, inputs=[image_in, ground_truth],
                                example_labels=example_labels, label="Examples")
                with gr.Column(scale=2):
                    slider = gr.ImageSlider(label="Bicubic (left) vs super-resolved (right)",
                                            type="filepath", format="png", elem_id="result")
                    info_md = gr.Markdown(label="Run info", elem_id="run-info")
                    sr_file = gr.File(label="Download the full-resolution result (PNG)",
                                      elem_id="download")
                    with gr.Accordion("Run info (JSON)", open=False):
                        info_json = gr.JSON(label="Run info (JSON)")
            gr.Markdown("### Crop inspector\nClick on the input image to move the crop; "
                        "all views show the same region, magnified with nearest neighbour.")
            with gr.Row():
                crop_size = gr.Dropdown(list(CROP_SIZES), value=48,
                                        label="Crop size (low-resolution pixels)")
                compare = gr.Dropdown(compare_choices(models0, scale0, model0), value=NO_COMPARE,
                                      label="Compare with")
            crops = gr.Gallery(label="Crops", format="png", columns=5, fit_columns=False,
                               height=300, object_fit="contain", allow_preview=False,
                               elem_id="crops")

        with gr.Tab("Benchmarks"):
            bench_note = gr.Markdown()
            bench_table = gr.Dataframe(interactive=False, label="Results", visible=False)
            with gr.Row(visible=False) as plot_controls:
                plot_dataset = gr.Dropdown([], label="Plot dataset", allow_custom_value=True)
                plot_scale = gr.Dropdown([2, 3, 4], value=4, label="Plot scale")
            with gr.Row(visible=False) as plots:
                plot_params = gr.ScatterPlot(x="params", y="psnr_y", color="model",
                                             x_title="parameters", y_title="PSNR-Y (dB)",
                                             title="PSNR vs parameters", tooltip="all")
                plot_time = gr.ScatterPlot(x="seconds", y="psnr_y", color="model",
                                           x_title="seconds per image", y_title="PSNR-Y (dB)",
                                           title="PSNR vs runtime", tooltip="all")
            gr.Markdown("### Evaluate a model on a local benchmark set")
            with gr.Row():
                eval_model = gr.Dropdown(model_choices(models0)[:-1], value=model0, label="Model")
                eval_scale = gr.Dropdown(scales0, value=scale0, label="Scale")
                eval_set = gr.Dropdown([], label="Benchmark set")
            eval_btn = gr.Button("Evaluate")
            eval_text = gr.Markdown()
            eval_out = gr.Dataframe(interactive=False, label="Evaluation", visible=False)

        with gr.Tab("Models"):
            cards = gr.Markdown()

        ev = Events(wb)
        run_event = run_btn.click(
            ev.upscale, [image_in, model, scale, ground_truth, downscale, checkpoint],
            [sr_file, slider, info_md, info_json, run_state], api_name="upscale",
            preprocess=False, concurrency_limit=settings.concurrency,
            concurrency_id=MODEL_CONCURRENCY_ID)
        crop_lane = dict(api_visibility="private", concurrency_id=CROP_CONCURRENCY_ID,
                         concurrency_limit=CROP_CONCURRENCY)
        run_event.success(ev.crops, [run_state, centre_state, crop_size, compare], crops,
                          **crop_lane)
        image_in.select(ev.select, [run_state, crop_size, compare], [centre_state, crops],
                        **crop_lane)
        # A new image (upload, example, clear) starts a fresh inspection.
        image_in.change(lambda: (None, None, []), None, [centre_state, run_state, crops],
                        api_visibility="private", queue=False)
        for trigger in (crop_size.change, compare.change):
            trigger(ev.crops, [run_state, centre_state, crop_size, compare], crops, **crop_lane)
        model.change(ev.model_changed, [model, scale],
                     [scale, checkpoint, checkpoint_info, compare],
                     api_visibility="private", queue=False)
        checkpoint.upload(ev.checkpoint_uploaded, checkpoint, [scale, checkpoint_info],
                          api_visibility="private", concurrency_limit=settings.concurrency,
                          concurrency_id=MODEL_CONCURRENCY_ID)
        scale.change(ev.scale_changed, [scale, model], compare, api_visibility="private",
                     queue=False)
        eval_model.change(ev.eval_model_changed, [eval_model, eval_scale], eval_scale,
                          api_visibility="private", queue=False)
        for trigger in (plot_dataset.change, plot_scale.change):
            trigger(ev.plot, [plot_dataset, plot_scale], [plot_params, plot_time],
                    api_visibility="private", queue=False)
        eval_btn.click(ev.evaluate, [eval_model, eval_scale, eval_set], [eval_text, eval_out],
                       api_name="evaluate", concurrency_limit=settings.concurrency,
                       concurrency_id=MODEL_CONCURRENCY_ID)
        demo.load(ev.page_loaded, None,
                  [model, scale, compare, cards, bench_note, bench_table, plot_controls, plots,
                   plot_dataset, plot_params, plot_time, eval_model, eval_scale, eval_set],
                  api_visibility="private", queue=False)
    return demo


def launch(demo: gr.Blocks, settings: Settings | None = None, **kwargs):
    """Serve with the queue and upload limits; `kwargs` go to `Blocks.launch`."""
    settings = settings or demo.workbench.settings
    demo.queue(max_size=settings.queue_size, default_concurrency_limit=settings.concurrency)
    options = dict(max_file_size=f"{settings.max_file_mb}mb", show_error=True,
                   theme=gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                                           font_mono=["ui-monospace", "monospace"]),
                   footer_links=["api", "gradio"])
    options.update(kwargs)
    return demo.launch(**options)
