"""The work behind the Studio facade, one service per modality over one shared runtime.

    runtime.py  Runtime: settings, catalog, loaded models, device/dtype, history, recipes,
                `use(spec)` (a loaded model for one request) and `run(task, ...)`, the one
                place a model runs, whose executor is local or ZeroGPU (hosting.py)
    text.py     TextService, the text tasks, and the text backends (local or remote)
    image.py    ImageService and the image tasks
    audio.py    AudioService (speech, music, chorale notes, audio grids) and its tasks
    tune.py     TuneService: fine-tuning and the adapters it leaves

Imports point down: studio.py -> services -> engines, models, catalog, params.
"""
