"""Settings from environment variables (and the CLI, which sets the same fields).

Every setting has an AIGC_* variable; Gradio's own GRADIO_SERVER_NAME and
GRADIO_SERVER_PORT are read by Gradio itself at launch. Three switches set by others
are read here too, as functions, since they matter before any Settings exist:
SPACES_ZERO_GPU (`zero_gpu`), HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE (`hub_offline`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PRESETS = ("auto", "hub", "offline")
TEXT_RUNTIMES = ("auto", "onnx-int8", "onnx-fp32", "torch")


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "aigc-studio"


@dataclass
class Settings:
    preset: str = "auto"  # auto | hub | offline
    device: str = "auto"  # auto | cpu | cuda | mps
    dtype: str = "auto"  # auto | float32 | float16 | bfloat16
    threads: int = 0  # torch CPU threads; 0 leaves torch's default
    memory_budget_gb: float = 8.0  # models are evicted, least recently used first, above this
    cache_dir: Path = field(default_factory=_default_cache)  # converted embedded models
    output_dir: Path = field(default_factory=lambda: Path("outputs"))
    allowlist: tuple[str, ...] = ()  # extra model ids (hub repos) the operator allows
    queue_size: int = 32  # requests waiting beyond this get "busy, try again"
    concurrency: int = 1  # generations running at once per event
    attention_slicing: bool = False  # image models: less GPU memory, a little slower
    vae_tiling: bool = False  # image models: decode big images in tiles
    cpu_offload: bool = False  # image models: sub-models wait on the CPU (CUDA only)
    # text models: auto = ONNX Runtime int8 for the embedded model on CPU, torch otherwise
    text_runtime: str = "auto"
    # Retention: files unused this long are deleted from the output folder and Gradio's
    # cache; above the size budget the least recently used go first (a Space's disk is 50 GB).
    keep_hours: float = 24.0
    max_output_mb: float = 2000.0  # the output folder (AIGC_OUTPUT_DIR)
    max_cache_mb: float = 2000.0  # Gradio's cache (GRADIO_TEMP_DIR): every file shown or served
    mcp: bool = True  # serve the API as MCP tools at /gradio_api/mcp/ (AIGC_MCP=0 turns it off)
    # Remote text: an OpenAI-compatible server (vLLM, SGLang, Ollama, llama.cpp, another
    # studio) at e.g. http://host:8000/v1; its models join the catalog as remote:<name>.
    text_endpoint: str = ""  # AIGC_TEXT_ENDPOINT
    text_api_key: str = ""  # AIGC_TEXT_API_KEY: sent as a bearer token to the endpoint
    text_timeout_s: float = 60.0  # AIGC_TEXT_TIMEOUT_S: connect/read timeout per request to the endpoint
    # The studio's own OpenAI protocol at /v1 (off unless AIGC_OPENAI_API=1); with a key, a bearer check
    openai_api: bool = False
    openai_api_key: str = ""  # AIGC_OPENAI_API_KEY
    # ZeroGPU: the models loaded at start-up (AIGC_PRELOAD=id,id; empty: the catalog's ZeroGPU
    # set and the preset's defaults), and whether AIGC_MEMORY_BUDGET_GB was given at all
    preload: tuple[str, ...] = ()
    memory_budget_given: bool = False

    @classmethod
    def from_env(cls, environ: dict | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        settings = cls()
        if "AIGC_PRESET" in env:
            settings.preset = env["AIGC_PRESET"]
        settings.device = env.get("AIGC_DEVICE", settings.device)
        settings.dtype = env.get("AIGC_DTYPE", settings.dtype)
        settings.threads = _number(env, "AIGC_THREADS", "threads", settings.threads, int)
        settings.memory_budget_gb = _number(env, "AIGC_MEMORY_BUDGET_GB", "memory_budget_gb", settings.memory_budget_gb, float)
        settings.memory_budget_given = "AIGC_MEMORY_BUDGET_GB" in env
        if "AIGC_CACHE_DIR" in env:
            settings.cache_dir = Path(env["AIGC_CACHE_DIR"])
        if "AIGC_OUTPUT_DIR" in env:
            settings.output_dir = Path(env["AIGC_OUTPUT_DIR"])
        settings.text_runtime = env.get("AIGC_TEXT_RUNTIME", settings.text_runtime).strip().lower()
        allow = env.get("AIGC_ALLOWLIST", "")
        settings.allowlist = tuple(x.strip() for x in allow.split(",") if x.strip())
        preload = env.get("AIGC_PRELOAD", "")
        settings.preload = tuple(dict.fromkeys(x.strip() for x in preload.split(",") if x.strip()))
        settings.queue_size = _number(env, "AIGC_QUEUE_SIZE", "queue_size", settings.queue_size, int)
        settings.concurrency = _number(env, "AIGC_CONCURRENCY", "concurrency", settings.concurrency, int)
        settings.keep_hours = _number(env, "AIGC_KEEP_HOURS", "keep_hours", settings.keep_hours, float)
        settings.max_output_mb = _number(env, "AIGC_MAX_OUTPUT_MB", "max_output_mb", settings.max_output_mb, float)
        settings.max_cache_mb = _number(env, "AIGC_MAX_CACHE_MB", "max_cache_mb", settings.max_cache_mb, float)
        settings.text_endpoint = env.get("AIGC_TEXT_ENDPOINT", settings.text_endpoint).strip().rstrip("/")
        settings.text_api_key = env.get("AIGC_TEXT_API_KEY", settings.text_api_key).strip()
        settings.text_timeout_s = _number(env, "AIGC_TEXT_TIMEOUT_S", "text_timeout_s", settings.text_timeout_s, float)
        settings.openai_api_key = env.get("AIGC_OPENAI_API_KEY", settings.openai_api_key).strip()
        for name in ("attention_slicing", "vae_tiling", "cpu_offload", "mcp", "openai_api"):
            variable = f"AIGC_{name.upper()}"
            if variable in env:
                setattr(settings, name, _switch(env[variable]))
        settings.check()
        return settings

    def check(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset: must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if self.device not in ("auto", "cpu", "cuda", "mps"):
            raise ValueError(f"device: must be auto, cpu, cuda or mps, got {self.device!r}")
        if self.dtype not in ("auto", "float32", "float16", "bfloat16"):
            raise ValueError(f"dtype: must be auto, float32, float16 or bfloat16, got {self.dtype!r}")
        if self.text_runtime not in TEXT_RUNTIMES:
            raise ValueError(f"text_runtime (AIGC_TEXT_RUNTIME): must be one of {', '.join(TEXT_RUNTIMES)}, "
                             f"got {self.text_runtime!r}")
        if self.queue_size < 1:
            raise ValueError(f"queue_size (AIGC_QUEUE_SIZE): must be at least 1, got {self.queue_size}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency (AIGC_CONCURRENCY): must be at least 1, got {self.concurrency}")
        for name in ("keep_hours", "max_output_mb", "max_cache_mb"):
            if not 0 < getattr(self, name) < float("inf"):  # NaN fails too
                raise ValueError(f"{name} (AIGC_{name.upper()}): must be a number above 0, got {getattr(self, name)}")
        if self.text_endpoint and not self.text_endpoint.startswith(("http://", "https://")):
            raise ValueError(f"text_endpoint (AIGC_TEXT_ENDPOINT): must be an http(s) URL such as "
                             f"http://localhost:8000/v1, got {self.text_endpoint!r}")
        if not 0 < self.text_timeout_s < float("inf"):
            raise ValueError(f"text_timeout_s (AIGC_TEXT_TIMEOUT_S): must be a number above 0, got {self.text_timeout_s}")
        if not self.memory_budget_gb > 0:
            raise ValueError(f"memory_budget_gb (AIGC_MEMORY_BUDGET_GB): must be above 0, got {self.memory_budget_gb}")


def _switch(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def zero_gpu(environ: dict | None = None) -> bool:
    """True on a ZeroGPU Space: SPACES_ZERO_GPU set (what `spaces` itself checks)."""
    env = os.environ if environ is None else environ
    return _switch(env.get("SPACES_ZERO_GPU"))


def hub_offline(environ: dict | None = None) -> bool:
    """True when HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE asks for no Hugging Face Hub traffic."""
    env = os.environ if environ is None else environ
    return any(_switch(env.get(name)) for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _number(env, variable: str, name: str, default, kind: type):
    """A numeric setting from env, with an error naming the setting and its variable."""
    if variable not in env:
        return default
    try:
        return kind(env[variable])
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise ValueError(f"{name} ({variable}): must be {what}, got {env[variable]!r}") from None
