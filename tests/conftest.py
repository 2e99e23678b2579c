"""Shared fixtures: tiny random models built once per session, and a Studio over them.

Every model here is built from a config with random weights and saved with
`save_pretrained` (safetensors) into a session tmp folder, so the tests need no
network and no Hugging Face Hub. The models are tiny (a few thousand to a few
hundred thousand parameters): they test plumbing (seeds, batching, schedulers,
streaming, recipes), not quality.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path

# Before torch / transformers / diffusers are imported: never touch the network,
# and stay on one CPU thread (the machine is shared; more threads are slower).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aigc_studio.catalog import Catalog, local_spec  # noqa: E402
from aigc_studio.config import Settings  # noqa: E402
from aigc_studio.studio import Studio  # noqa: E402
from tests.live_server import running_app  # noqa: E402

# ----- tiers: every test item gets exactly one marker (pytest.ini lists them) -------------
#
#   unit     in-process, tiny random models or none: `make test-fast` (`pytest -m unit`)
#   slow     in-process but heavy machinery: a model converted to ONNX, a fresh Python
#            process that imports the app
#   quality  the embedded offline models' real weights (SmolLM2, Piper, shapes): quality
#            measurements (perplexity, WER, prompt adherence) and other tests that run them
#   server   a real Gradio server (app.py in a subprocess, or launch() in this process)
#   browser  Chromium driven by Playwright against a server
#
# The tier comes from what a test uses (its own code and its fixtures' code), so new
# tests in any module get one without edits; the costliest that applies wins:
#   browser  uses one of BROWSER_DRIVERS
#   server   uses one of SERVER_STARTERS
#   quality  uses one of EMBEDDED_LOADERS, a fixture in QUALITY_FIXTURES, or sits in QUALITY_MODULES
#   slow     uses one of SLOW_NAMES, names an ONNX runtime ("onnx-int8"), or a fixture in SLOW_FIXTURES
# A test that carries a tier marker itself (`@pytest.mark.quality`) keeps that one.

TIERS = ("unit", "slow", "quality", "server", "browser")  # cheapest first
BROWSER_DRIVERS = {"sync_playwright", "open_studio"}
SERVER_STARTERS = {"running_app", "launch"}
EMBEDDED_LOADERS = {"EMBEDDED_MODELS", "load_pipeline"}
QUALITY_FIXTURES = {"real"}  # test_engines_text: a Studio over the embedded SmolLM2
QUALITY_MODULES = {"test_shapes_pipeline.py"}  # the shipped shapes weights, measured and retrained
SLOW_NAMES = {"subprocess", "run_concurrently"}
SLOW_FIXTURES = {"runtimes", "onnx_lm"}  # test_engines_text: tiny models converted to ONNX


def code_names(function) -> tuple[set[str], set[str]]:
    """(names, string constants) that a function's code, and any code nested in it, uses."""
    names: set[str] = set()
    strings: set[str] = set()
    stack = [getattr(function, "__code__", None)]
    while stack:
        code = stack.pop()
        if code is None:
            continue
        names.update(code.co_names)
        strings.update(c for c in code.co_consts if isinstance(c, str))
        stack.extend(c for c in code.co_consts if hasattr(c, "co_names"))
    return names, strings


def tier_of(item) -> str:
    own = [m.name for m in item.iter_markers() if m.name in TIERS]
    if own:
        return max(own, key=TIERS.index)
    functions = [getattr(item, "function", None)]
    fixtures = getattr(item, "_fixtureinfo", None)
    for definitions in (fixtures.name2fixturedefs.values() if fixtures else []):
        functions.append(definitions[-1].func)  # the definition this item gets
    names: set[str] = set()
    strings: set[str] = set()
    for function in functions:
        found_names, found_strings = code_names(function)
        names |= found_names
        strings |= found_strings
    used_fixtures = set(item.fixturenames)
    if names & BROWSER_DRIVERS:
        return "browser"
    if names & SERVER_STARTERS:
        return "server"
    if names & EMBEDDED_LOADERS or used_fixtures & QUALITY_FIXTURES or item.path.name in QUALITY_MODULES:
        return "quality"
    if names & SLOW_NAMES or used_fixtures & SLOW_FIXTURES or any(s.startswith("onnx-") for s in strings):
        return "slow"
    return "unit"


def pytest_collection_modifyitems(config, items):
    for item in items:
        tier = tier_of(item)
        if not any(item.iter_markers(tier)):
            item.add_marker(getattr(pytest.mark, tier))


def pytest_collection_finish(session):
    """Everything imported by now (torch, transformers, diffusers, gradio: ~480,000
    objects) lives for the whole run: take it out of the garbage collector's sight.
    The studio runs gc.collect() on every model load and unload (models.free_memory);
    over this heap each took ~0.6 s, after the freeze microseconds. Objects made
    later (every model a test loads) are collected as before."""
    gc.collect()
    gc.freeze()

def drain(updates) -> list:
    """Every update of a handler that streams as an async generator (what Gradio
    iterates; aigc_studio.ui.streaming.run_in_worker), in order."""
    import asyncio

    async def collect():
        return [update async for update in updates]
    return asyncio.run(collect())


# Model ids of the tiny models in the test catalog.
TEXT_ID, IMAGE_ID, SHAPES_ID, VITS_ID, MUSICGEN_ID = "tiny-lm", "tiny-sd", "tiny-shapes", "tiny-vits", "tiny-musicgen"
TINY_IMAGE_SIZE = 32  # pixels; the tiny VAE halves it, the tiny UNet halves it again
VITS_SAMPLE_RATE = 8000
MUSICGEN_SAMPLE_RATE = 1600

# ----- text: a tiny Llama with a word-level tokenizer trained here ------------------

CORPUS = """
the quick brown fox jumps over the lazy dog while rain falls on the quiet town
a red circle sits beside a blue square and a green triangle under a yellow sun
write a short poem about spring rain and the smell of wet earth in the morning
music drifts from an open window where someone plays a slow song on an old piano
the studio turns every knob and shows each variant side by side with its recipe
seeds make every result repeatable so a creator can keep what they like best
""".strip().splitlines()
NUMBER_WORDS = [f"n{i}" for i in range(150)]  # widen the vocabulary to a few hundred
SPECIAL_TOKENS = ["<|end|>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|> {{ message['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_text_model(folder: Path) -> Path:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS, show_progress=False)
    tokenizer.train_from_iterator(CORPUS + [" ".join(NUMBER_WORDS)], trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|end|>", pad_token="<|end|>", unk_token="<unk>",
        chat_template=CHAT_TEMPLATE,
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, bos_token_id=None,
        eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    fast.save_pretrained(folder)
    return folder


def build_onnx_text_model(folder: Path) -> Path:
    """The tiny Llama with 16-wide attention heads (ONNX Runtime's attention kernel needs a multiple of 16)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    build_text_model(folder)
    config = LlamaConfig.from_pretrained(folder)
    config.hidden_size, config.intermediate_size, config.head_dim = 64, 128, 16
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


# ----- image: a tiny Stable Diffusion pipeline with a hand-written CLIP tokenizer ------

def write_clip_vocab(folder: Path) -> Path:
    """A hand-written CLIP BPE vocabulary: letters, end-of-word letters, a few merges."""
    folder.mkdir(parents=True, exist_ok=True)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in letters:
        vocab[c] = len(vocab)
    for c in letters:
        vocab[c + "</w>"] = len(vocab)
    merges = ["r e", "re d</w>", "c i", "ci r", "s q", "sq u", "b l", "bl u", "blu e</w>"]
    for merge in merges:
        vocab[merge.replace(" ", "")] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder


def build_sd_pipeline(folder: Path) -> Path:
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(write_clip_vocab(folder.parent / "clip-vocab"), model_max_length=16)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=TINY_IMAGE_SIZE // 2, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(8, 16), norm_num_groups=4, attention_head_dim=2, cross_attention_dim=16,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        sample_size=TINY_IMAGE_SIZE,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=2,
        max_position_embeddings=16, projection_dim=16, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    ))
    # PNDM, as Stable Diffusion 1.5 ships it: the 'default' scheduler of this model.
    scheduler = PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
        set_alpha_to_one=False, steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def build_shapes_model(folder: Path) -> Path:
    """The embedded shapes model's layout (unet/ + scheduler/), with random weights."""
    from diffusers import DDPMScheduler, UNet2DModel

    from aigc_studio import shapes

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=shapes.NATIVE_SIZE, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(8, 16), norm_num_groups=4, num_class_embeds=shapes.NUM_CONDITIONS,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    DDPMScheduler(num_train_timesteps=1000).save_pretrained(folder / "scheduler")
    return folder


# ----- audio: tiny VITS (hand-written vocab) and tiny MusicGen (T5 + EnCodec) ----------

VITS_CHARS = ["<pad>", " ", "'", "-", *"abcdefghijklmnopqrstuvwxyz", "<unk>"]


def build_vits(folder: Path) -> Path:
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder / "vocab.json"
    vocab_file.write_text(json.dumps({c: i for i, c in enumerate(VITS_CHARS)}))
    tokenizer = VitsTokenizer(vocab_file=str(vocab_file), phonemize=False, add_blank=True, normalize=True)
    torch.manual_seed(0)
    config = VitsConfig(
        vocab_size=len(VITS_CHARS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, ffn_dim=16,
        flow_size=8, spectrogram_bins=16, upsample_initial_channel=16, upsample_rates=(4, 4),
        upsample_kernel_sizes=(8, 8), resblock_kernel_sizes=(3,), resblock_dilation_sizes=((1,),),
        duration_predictor_filter_channels=16, duration_predictor_num_flows=2, prior_encoder_num_flows=2,
        prior_encoder_num_wavenet_layers=1, posterior_encoder_num_wavenet_layers=1, depth_separable_num_layers=1,
        sampling_rate=VITS_SAMPLE_RATE, pad_token_id=0,
    )
    VitsModel(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def build_musicgen(folder: Path) -> Path:
    from transformers import (
        EncodecConfig,
        EncodecFeatureExtractor,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        MusicgenProcessor,
        T5Config,
        T5Tokenizer,
    )
    from transformers.models.encodec.modeling_encodec import EncodecEuclideanCodebook

    # A hand-written Unigram vocabulary: T5's specials, the space, letters, a few words.
    words = ["a", "calm", "piano", "fast", "drum", "loop", "song"]
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(c, -3.0) for c in "abcdefghijklmnopqrstuvwxyz"] + [("\u2581" + w, -1.0) for w in words]
    tokenizer = T5Tokenizer(vocab=pieces, extra_ids=0)
    codebook_size = 64
    text_encoder = T5Config(
        vocab_size=len(pieces), d_model=16, d_kv=8, d_ff=16, num_layers=1, num_heads=2,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )
    audio_encoder = EncodecConfig(
        sampling_rate=MUSICGEN_SAMPLE_RATE, audio_channels=1, hidden_size=8, num_filters=4, num_residual_layers=1,
        upsampling_ratios=(8, 4), codebook_size=codebook_size, target_bandwidths=[1.2], num_lstm_layers=1,
        kernel_size=3, last_kernel_size=3, residual_kernel_size=3,
    )
    decoder = MusicgenDecoderConfig(
        vocab_size=codebook_size, max_position_embeddings=512, num_hidden_layers=1, ffn_dim=16,
        num_attention_heads=2, hidden_size=16, num_codebooks=2, pad_token_id=codebook_size, bos_token_id=codebook_size,
    )
    assert audio_encoder.num_quantizers >= decoder.num_codebooks, "EnCodec must have a quantizer per codebook"
    torch.manual_seed(0)
    model = MusicgenForConditionalGeneration(MusicgenConfig(text_encoder=text_encoder, audio_encoder=audio_encoder, decoder=decoder))
    # EnCodec codebooks start at zero (they are fitted by k-means in training), which
    # would decode every code to the same sound; give them random entries.
    with torch.no_grad():
        for module in model.audio_encoder.modules():
            if isinstance(module, EncodecEuclideanCodebook):
                module.embed.normal_()
                module.embed_avg.copy_(module.embed)
        # Random heads give near-uniform logits (|logit| ~ 0.05): temperature and guidance
        # would hardly move a sample. Sharpened, every sampling knob visibly matters.
        for head in model.decoder.lm_heads:
            head.weight.mul_(100)
    model.save_pretrained(folder, safe_serialization=True)
    feature_extractor = EncodecFeatureExtractor(feature_size=1, sampling_rate=MUSICGEN_SAMPLE_RATE)
    MusicgenProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


# ----- fixtures ------------------------------------------------------------------------

@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def tiny_lm_path(models_dir) -> Path:
    return build_text_model(models_dir / "lm")


@pytest.fixture(scope="session")
def tiny_sd_path(models_dir) -> Path:
    return build_sd_pipeline(models_dir / "sd")


@pytest.fixture(scope="session")
def tiny_shapes_path(models_dir) -> Path:
    return build_shapes_model(models_dir / "shapes")


@pytest.fixture(scope="session")
def tiny_vits_path(models_dir) -> Path:
    return build_vits(models_dir / "vits")


@pytest.fixture(scope="session")
def tiny_musicgen_path(models_dir) -> Path:
    return build_musicgen(models_dir / "musicgen")


@pytest.fixture(scope="session")
def tiny_catalog(tiny_lm_path, tiny_sd_path, tiny_shapes_path, tiny_vits_path, tiny_musicgen_path):
    """A factory of fresh Catalogs holding only the tiny models (defaults: lm, sd, vits)."""
    image_defaults = {"steps": 3, "guidance": 3.0, "width": TINY_IMAGE_SIZE, "height": TINY_IMAGE_SIZE}

    def make() -> Catalog:
        specs = [
            local_spec(TEXT_ID, "text", "causal-lm", tiny_lm_path, defaults={"max_new_tokens": 12}),
            local_spec(IMAGE_ID, "image", "diffusers", tiny_sd_path, defaults=dict(image_defaults)),
            local_spec(SHAPES_ID, "image", "shapes", tiny_shapes_path, defaults=dict(image_defaults)),
            local_spec(VITS_ID, "audio", "vits", tiny_vits_path),
            local_spec(MUSICGEN_ID, "audio", "musicgen", tiny_musicgen_path, defaults={"duration": 0.5}),
        ]
        return Catalog(specs, {"text": TEXT_ID, "image": IMAGE_ID, "audio": VITS_ID})

    return make


@pytest.fixture(scope="session")
def studio(tmp_path_factory, tiny_catalog):
    """A factory: studio(**settings) builds a fresh offline CPU Studio over the tiny models.

    Each Studio has its own ModelManager (nothing loaded yet) and its own folders.
    """

    def make(**overrides) -> Studio:
        folder = tmp_path_factory.mktemp("studio")
        values = dict(preset="offline", device="cpu", dtype="auto", threads=1,
                      cache_dir=folder / "cache", output_dir=folder / "outputs")
        values.update(overrides)
        return Studio(Settings(**values), catalog=tiny_catalog())

    return make


# ----- one app.py server for the session -----------------------------------------------------

@pytest.fixture(scope="session")
def app_server(tmp_path_factory):
    """(URL, output folder) of one app.py, started as users start it (offline preset,
    embedded models), shared by every test that only calls it: the API, fuzz and
    browser tests. A test that needs other settings (environment variables) starts
    its own with tests.live_server.running_app."""
    output_dir = tmp_path_factory.mktemp("app-server")
    with running_app(output_dir) as url:
        yield url, output_dir


@pytest.fixture(scope="session")
def app_client(app_server, tmp_path_factory):
    """A gradio_client Client of the shared server (files download to a session folder)."""
    from gradio_client import Client

    return Client(app_server[0], verbose=False, download_files=str(tmp_path_factory.mktemp("app-downloads")))


# ----- audio: a tiny Bark (hand-written BERT vocabulary, three tiny GPT-2 stages, tiny EnCodec) --

BARK_ID = "tiny-bark"
BARK_SAMPLE_RATE = 1600


def build_bark(folder: Path) -> Path:
    """A tiny random Bark. Its token ids are shrunk to fit the tiny vocabularies; in
    transformers 5.23 BarkModel.generate reads its three stage configs as dicts from a
    plain GenerationConfig (what from_pretrained gives for the Hub's bark-small)."""
    from transformers import (
        BarkCoarseConfig,
        BarkConfig,
        BarkFineConfig,
        BarkModel,
        BarkProcessor,
        BarkSemanticConfig,
        BertTokenizer,
        EncodecConfig,
        GenerationConfig,
    )
    from transformers.models.encodec.modeling_encodec import EncodecEuclideanCodebook

    folder.mkdir(parents=True, exist_ok=True)
    letters = list("abcdefghijklmnopqrstuvwxyz,.!?'")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *[f"##{c}" for c in letters]]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"), do_lower_case=True)
    semantic_vocab, codebook_size, coarse_books, fine_books = 20, 16, 2, 4
    text_offset = semantic_vocab + 8
    text_pad = text_offset + len(vocab)
    semantic_infer = text_pad + 4
    codec = EncodecConfig(
        sampling_rate=BARK_SAMPLE_RATE, audio_channels=1, hidden_size=8, num_filters=4, num_residual_layers=1,
        upsampling_ratios=(8, 4), codebook_size=codebook_size, target_bandwidths=[2.4], num_lstm_layers=1,
        kernel_size=3, last_kernel_size=3, residual_kernel_size=3,
    )
    assert codec.num_quantizers >= fine_books, "EnCodec must have a quantizer per fine codebook"
    # Wide initial weights: peaked, input-dependent logits, so each stage's knob shows in the audio.
    stage = dict(block_size=1024, num_layers=1, num_heads=2, hidden_size=16, initializer_range=0.5)
    coarse_vocab = semantic_vocab + coarse_books * codebook_size + 8
    config = BarkConfig(
        semantic_config=BarkSemanticConfig(input_vocab_size=semantic_infer + 1, output_vocab_size=semantic_vocab + 8,
                                           **stage).to_dict(),
        coarse_acoustics_config=BarkCoarseConfig(input_vocab_size=coarse_vocab, output_vocab_size=coarse_vocab,
                                                 **stage).to_dict(),
        fine_acoustics_config=BarkFineConfig(input_vocab_size=codebook_size + 8, output_vocab_size=codebook_size + 8,
                                             n_codes_total=fine_books, n_codes_given=coarse_books, **stage).to_dict(),
        codec_config=codec.to_dict(),
    )
    torch.manual_seed(0)
    model = BarkModel(config)
    with torch.no_grad():  # random codebooks, as for MusicGen above
        for module in model.codec_model.modules():
            if isinstance(module, EncodecEuclideanCodebook):
                module.embed.normal_()
                module.embed_avg.copy_(module.embed)
    model.generation_config = GenerationConfig(
        semantic_config=dict(
            eos_token_id=semantic_vocab, semantic_pad_token=semantic_vocab, semantic_vocab_size=semantic_vocab,
            text_encoding_offset=text_offset, text_pad_token=text_pad, semantic_infer_token=semantic_infer,
            max_new_tokens=24, max_input_semantic_length=256, semantic_rate_hz=25,
        ),
        coarse_acoustics_config=dict(
            coarse_semantic_pad_token=semantic_vocab + coarse_books * codebook_size,
            coarse_infer_token=semantic_vocab + coarse_books * codebook_size + 2, coarse_rate_hz=codec.frame_rate,
            n_coarse_codebooks=coarse_books, max_coarse_input_length=256, max_coarse_history=630, sliding_window_len=60,
        ),
        fine_acoustics_config=dict(n_fine_codebooks=fine_books, max_fine_history_length=512, max_fine_input_length=1024),
        sample_rate=BARK_SAMPLE_RATE, codebook_size=codebook_size,
    )
    model.save_pretrained(folder, safe_serialization=True)
    BarkProcessor(tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bark_path(models_dir) -> Path:
    return build_bark(models_dir / "bark")
