"""Web demo of the SR workbench: `python app.py` (also the entry of the Hugging Face Space).

Serves on http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT change that)
with the bundled weights in weights/ (or $SR_WEIGHTS_DIR) and bicubic. Limits are set
with SR_DEMO_* environment variables, see demo/settings.py.
"""
import logging
import os

# Before Gradio is imported: no usage analytics or other calls home from a demo that
# must also run offline.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from demo.ui import build_demo, launch  # noqa: E402

demo = build_demo()

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    launch(demo)
