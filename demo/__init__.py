"""Gradio web demo of the SR workbench: `python app.py` (also a Hugging Face Space).

`demo.ui.build_demo()` builds the Blocks app, `demo.ui.launch()` serves it with the
queue and upload limits; the handlers in `demo.handlers` are plain functions on PIL
images, so they are testable without a server.
"""
