"""One engine per modality (text.py, image.py, audio.py), each with the same shape:

    model = engine.load(spec, device, dtype, ...)     # called once by the ModelManager
    engine.generate(model, prompt, params, on_step=None, stop=None)

- params: the modality's knob dataclass (params.py); text takes one per column and
  batches them, image takes one per batched call (a seed per image).
- on_step(index, total): progress after each step (a token, a denoising step, a sentence).
- stop: a threading.Event; once set, the engine ends after the current step (text ends
  its columns, image and audio raise GenerationStopped) and the model stays usable.

Engines of different modalities do not import each other; within one modality they may
(e.g. text_remote.py, a server's model, reuses text.py's sampling stages for its
explainer). The services (aigc_studio/services/) run variants side by side for all
three the same way.
"""


class GenerationStopped(Exception):
    """The Stop button (or a vanished client) ended a generation between two steps."""
