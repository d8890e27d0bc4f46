"""diffusers pipelines through edgegen (docs/diffusers.md): both layouts imported, gated and run by
edgegen's numpy loops, against diffusers' own pipelines at the same starting noise."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import edgegen  # noqa: E402
from edgegen.cli import main  # noqa: E402
from edgegen.errors import CheckpointError, ConfigError, EdgegenWarning, InputError  # noqa: E402
from edgegen.export.diffusers_import import export_diffusers, read_scheduler  # noqa: E402
from edgegen.families.text2image.diffusers_import import _tokenizer_file, special_token  # noqa: E402
from edgegen.runtimes.tokenizer import BPETokenizer  # noqa: E402
from edgegen.training.data import load_images  # noqa: E402

from diffusers_pipelines import ddpm_layout, sd_layout  # noqa: E402

STEPS = 20
PROMPTS = ["a thick digit seven", "two"]


def assert_images_close(ours: np.ndarray, theirs_nhwc: np.ndarray) -> None:
    """The issue's bar after 20 steps, in [0, 1]: 1e-2 max and 1e-3 mean abs per pixel."""
    diff = np.abs(ours.transpose(0, 2, 3, 1) - theirs_nhwc)
    assert diff.max() <= 1e-2 and diff.mean() <= 1e-3, (diff.max(), diff.mean())


class PredictionCheck:
    """Records every UNet call edgegen's loop makes and checks each prediction against the PyTorch
    module on the same inputs: 1e-4 relative to the prediction's scale."""

    def __init__(self, pipe, module):
        self.session, self.module, self.calls = pipe.sessions["unet"], module, 0
        self._run = self.session.run

        def recording(feeds):
            out = self._run(feeds)
            with torch.inference_mode():
                ref = self.module(*(torch.from_numpy(feeds[s.name]) for s in self.session.inputs)).numpy()
            error = np.abs(out["prediction"] - ref).max() / np.abs(ref).max()
            assert error <= 1e-4, f"call {self.calls}: relative error {error:.2g}"
            self.calls += 1
            return out

        self.session.run = recording

    def close(self):
        self.session.run = self._run


@pytest.fixture(scope="module")
def ddpm_packages(tmp_path_factory):
    """Two UNet2DModel pipelines: RGB 16x16 with attention under DDIM, grey 24x24 under PNDM's
    Runge-Kutta warm-up."""
    root = tmp_path_factory.mktemp("ddpm-layout")
    rgb = ddpm_layout(root / "rgb", sample_size=16, channels=3, scheduler_name="DDIMScheduler")
    grey = ddpm_layout(root / "grey", sample_size=24, channels=1, seed=1, attention=False, scheduler_name="PNDMScheduler",
                       beta_schedule="squaredcos_cap_v2")
    return {name: (folder, export_diffusers(folder, root / f"{name}-pkg")) for name, folder in
            (("rgb", rgb), ("grey", grey))}


def slow_tokenizer(folder) -> None:
    """A tokenizer folder as Stable Diffusion 1.x's: vocab.json and merges.txt without tokenizer.json,
    and tokenizer_config.json's special tokens as AddedToken objects."""
    (folder / "tokenizer.json").unlink()
    settings_path = folder / "tokenizer_config.json"
    settings = json.loads(settings_path.read_text())
    for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
        settings[key] = {"__type": "AddedToken", "content": settings[key], "lstrip": False, "normalized": True,
                         "rstrip": False, "single_word": False}
    settings_path.write_text(json.dumps(settings))


@pytest.fixture(scope="module")
def sd_packages(tmp_path_factory):
    """Two Stable Diffusion layouts: latents 16x16 (images 32x32) under PNDM, with the tokenizer as
    vocab.json and merges.txt, as SD 1.x ships it; and latents 8x8 (images 16x16) with a 12-token
    context under DDIM predicting v (SD 2.x's), with a fast tokenizer's tokenizer.json."""
    root = tmp_path_factory.mktemp("sd-layout")
    big = sd_layout(root / "sd16", sample_size=16, max_length=16)
    slow_tokenizer(big / "tokenizer")   # as Stable Diffusion 1.x's folders: the import builds tokenizer.json
    small = sd_layout(root / "sd8", sample_size=8, max_length=12, cross=24, seed=3, scheduler_name="DDIMScheduler",
                      prediction_type="v_prediction")
    return {name: (folder, export_diffusers(folder, root / f"{name}-pkg")) for name, folder in
            (("sd16", big), ("sd8", small))}


# -- the DDPM/DDIM layout ----------------------------------------------------------------------------

@pytest.mark.parametrize("name, pipeline_class", [("rgb", "DDIMPipeline"), ("grey", "PNDMPipeline")])
def test_unet2d_pipeline_matches_diffusers(ddpm_packages, name, pipeline_class):
    folder, package = ddpm_packages[name]
    theirs = getattr(diffusers, pipeline_class).from_pretrained(folder)
    theirs.set_progress_bar_config(disable=True)
    pipe = edgegen.load(package)
    assert pipe.config.sampler == {"DDIMPipeline": "ddim", "PNDMPipeline": "pndm"}[pipeline_class]
    reference = theirs(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=STEPS,
                       output_type="np").images
    # diffusers' randn_tensor with one CPU generator is torch.randn on it
    noise = torch.randn((2, *pipe.space_shape), generator=torch.Generator().manual_seed(0)).numpy()
    from edgegen.families.diffusion.diffusers_import import UNetDenoiser

    check = PredictionCheck(pipe, UNetDenoiser(theirs.unet).eval())
    try:
        ours = pipe.sample(2, steps=STEPS, noise=noise)
    finally:
        check.close()
    assert check.calls == len(theirs.scheduler.timesteps)   # diffusers' own calls, PNDM's repeats included
    assert_images_close(ours, reference)


@pytest.mark.parametrize("sampler, scheduler", [("euler", "EulerDiscreteScheduler"), ("lms", "LMSDiscreteScheduler"),
                                                ("dpmpp-2m", "DPMSolverMultistepScheduler"), ("ddim", "DDIMScheduler")])
def test_another_sampler_takes_the_scheduler_config_as_diffusers_from_config(ddpm_packages, sampler, scheduler):
    """A sampler other than the package's takes the settings it shares with the scheduler, as
    diffusers' from_config does; against diffusers' standard loop on the same UNet."""
    folder, package = ddpm_packages["rgb"]
    unet = diffusers.UNet2DModel.from_pretrained(folder / "unet")
    base = diffusers.DDIMScheduler.from_pretrained(folder / "scheduler")
    schedule = getattr(diffusers, scheduler).from_config(base.config)
    schedule.set_timesteps(STEPS)
    pipe = edgegen.load(package)
    noise = np.random.default_rng(4).standard_normal((2, *pipe.space_shape), dtype=np.float32)
    np.testing.assert_array_equal(pipe.make_sampler(sampler).timesteps(STEPS), schedule.timesteps.numpy())
    x = torch.from_numpy(noise) * schedule.init_noise_sigma
    with torch.inference_mode():
        for t in schedule.timesteps:
            x = schedule.step(unet(schedule.scale_model_input(x, t), t).sample, t, x).prev_sample
    reference = (x / 2 + 0.5).clamp(0, 1).numpy().transpose(0, 2, 3, 1)
    assert_images_close(pipe.sample(2, steps=STEPS, sampler=sampler, noise=noise), reference)


def test_another_classs_settings_in_a_scheduler_config_are_ignored_as_diffusers_does(ddpm_packages, tmp_path):
    """`DDIMScheduler.from_config(ddpm.scheduler.config)`, diffusers' own way to swap a scheduler,
    saves the DDPM's variance_type (and an Euler's use_karras_sigmas) in the DDIM config; DDIM does
    not take them and diffusers ignores them, where edgegen refused the folder (review 170)."""
    folder = tmp_path / "pipe"
    shutil.copytree(ddpm_packages["rgb"][0], folder)
    settings = folder / "scheduler" / "scheduler_config.json"
    settings.write_text(json.dumps({**json.loads(settings.read_text()), "variance_type": "fixed_large",
                                    "use_karras_sigmas": True}))
    with pytest.warns(EdgegenWarning, match=r"variance_type='fixed_large' is not a setting of DDIMScheduler, which "
                                            r"diffusers ignores there") as said:
        pipe = edgegen.load(export_diffusers(folder, tmp_path / "pkg"))
    assert any("use_karras_sigmas=True is not a setting of DDIMScheduler" in str(w.message) for w in said)
    theirs = diffusers.DDIMPipeline.from_pretrained(folder)
    theirs.set_progress_bar_config(disable=True)
    reference = theirs(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=STEPS,
                       output_type="np").images
    noise = torch.randn((2, *pipe.space_shape), generator=torch.Generator().manual_seed(0)).numpy()
    assert_images_close(pipe.sample(2, steps=STEPS, noise=noise), reference)


def test_unet2d_package_refuses_labels_and_runs_from_the_cli(ddpm_packages, tmp_path, capsys):
    _, package = ddpm_packages["grey"]
    pipe = edgegen.load(package)
    with pytest.raises(InputError, match="unconditional"):
        pipe.sample(1, steps=4, labels=3)
    with pytest.raises(InputError, match="noise: expected 2 rows"):
        pipe.sample(2, steps=4, noise=np.zeros((1, *pipe.space_shape), np.float32))
    out = tmp_path / "grid.png"
    assert main(["generate", str(package), "--n", "2", "--steps", "4", "--out", str(out)]) == 0
    assert out.is_file()
    manifest = json.loads((package / "edgegen.json").read_text())
    assert manifest["config"]["data"]["scheduler"] == "PNDMScheduler"
    assert manifest["graphs"]["unet"]["validation"]["passed"]


# -- the Stable Diffusion layout -----------------------------------------------------------------

def sd_pipeline(folder, scheduler: str | None = None):
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    if scheduler is not None:
        pipe.scheduler = getattr(diffusers, scheduler).from_config(pipe.scheduler.config)
    return pipe


@pytest.mark.parametrize("name, sampler, scheduler", [
    ("sd16", None, None), ("sd16", "ddim", "DDIMScheduler"), ("sd16", "euler", "EulerDiscreteScheduler"),
    ("sd16", "lms", "LMSDiscreteScheduler"), ("sd16", "dpmpp-2m", "DPMSolverMultistepScheduler"),
    ("sd8", None, None), ("sd8", "pndm", "PNDMScheduler")])
@pytest.mark.parametrize("guidance", [7.5, 1.0])
def test_stable_diffusion_matches_diffusers(sd_packages, name, sampler, scheduler, guidance):
    folder, package = sd_packages[name]
    theirs = sd_pipeline(folder, scheduler)
    pipe = edgegen.load(package)
    latents = torch.randn((2, *pipe.space_shape), generator=torch.Generator().manual_seed(1))
    reference = theirs(PROMPTS, num_inference_steps=STEPS, guidance_scale=guidance, latents=latents.clone(),
                       output_type="np").images
    from edgegen.families.text2image.diffusers_import import ConditionedUNet, StableDiffusionParts

    check = PredictionCheck(pipe, ConditionedUNet(StableDiffusionParts(theirs.text_encoder, theirs.unet, theirs.vae)))
    try:
        ours = pipe(PROMPTS, steps=STEPS, sampler=sampler, guidance_scale=guidance, noise=latents.numpy())
    finally:
        check.close()
    assert check.calls == len(theirs.scheduler.timesteps)
    assert_images_close(ours, reference)


def test_a_scheduler_is_imported_as_the_pipeline_that_loads_the_folder_runs_it(sd_packages, ddpm_packages, tmp_path):
    """diffusers' Stable Diffusion pipelines set steps_offset 1 and clip_sample false on the
    scheduler they are given (a DDIMScheduler() swapped in saves 0 and true), and DDIMPipeline makes
    any scheduler a DDIMScheduler: edgegen ran the file as written, images 0.8 and 1.0 apart."""
    folder = tmp_path / "sd"
    shutil.copytree(sd_packages["sd8"][0], folder)
    settings = folder / "scheduler" / "scheduler_config.json"
    settings.write_text(json.dumps({**json.loads(settings.read_text()), "clip_sample": True, "steps_offset": 0}))
    with pytest.warns(EdgegenWarning, match=r"steps_offset 0 as 1, clip_sample True as False, as diffusers' "
                                            r"StableDiffusionPipeline sets them when it loads this folder"):
        package = export_diffusers(folder, tmp_path / "sd-pkg")
    theirs, pipe = sd_pipeline(folder), edgegen.load(package)
    latents = torch.randn((2, *pipe.space_shape), generator=torch.Generator().manual_seed(1))
    reference = theirs(PROMPTS, num_inference_steps=STEPS, latents=latents.clone(), output_type="np").images
    assert_images_close(pipe(PROMPTS, steps=STEPS, noise=latents.numpy()), reference)
    unet2d = tmp_path / "ddim"
    shutil.copytree(ddpm_packages["rgb"][0], unet2d)
    index = unet2d / "model_index.json"
    index.write_text(json.dumps({**json.loads(index.read_text()), "_class_name": "DDIMPipeline"}))
    settings = unet2d / "scheduler" / "scheduler_config.json"
    settings.write_text(json.dumps({**json.loads(settings.read_text()), "_class_name": "EulerDiscreteScheduler"}))
    with pytest.warns(EdgegenWarning, match=r"_class_name 'EulerDiscreteScheduler' as 'DDIMScheduler', as diffusers' "
                                            r"DDIMPipeline sets them"):
        assert edgegen.load(export_diffusers(unet2d, tmp_path / "ddim-pkg")).config.sampler == "ddim"
    # a class edgegen has no sampler of, with a setting of its own that DDIM does not take: DDIMPipeline
    # runs its DDIM all the same (review 164: refused, naming the schedulers edgegen has)
    heun = {**diffusers.HeunDiscreteScheduler(use_karras_sigmas=True, timestep_spacing="trailing").config,
            "_class_name": "HeunDiscreteScheduler"}
    settings.write_text(json.dumps({k: v for k, v in heun.items() if k != "_use_default_values"}))
    with pytest.warns(EdgegenWarning, match=r"_class_name 'HeunDiscreteScheduler' as 'DDIMScheduler'"):
        pipe = edgegen.load(export_diffusers(unet2d, tmp_path / "heun-pkg"))
    theirs = diffusers.DDIMPipeline.from_pretrained(unet2d)
    theirs.set_progress_bar_config(disable=True)
    assert pipe.config.sampler == "ddim" and pipe.config.sampler_options["timestep_spacing"] == "trailing"
    reference = theirs(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=STEPS,
                       output_type="np").images
    noise = torch.randn((2, *pipe.space_shape), generator=torch.Generator().manual_seed(0)).numpy()
    assert_images_close(pipe.sample(2, steps=STEPS, noise=noise), reference)
    # a value DDIM cannot take, in the other class's config diffusers converts: named, not diffusers' own
    # traceback (review 171)
    for bad, said in (({"beta_schedule": "cosine"}, r"found NotImplementedError: cosine is not implemented"),
                      ({"beta_start": "0.1"}, r"expected beta_start to be a number, found '0.1'")):
        settings.write_text(json.dumps({**{k: v for k, v in heun.items() if k != "_use_default_values"}, **bad}))
        with pytest.raises(CheckpointError, match=rf"scheduler_config.json: .*{said}"), warnings.catch_warnings():
            warnings.simplefilter("ignore", EdgegenWarning)
            export_diffusers(unet2d, tmp_path / "bad-pkg")
    # a setting left unset is said at its class's default: DDIMScheduler's clip_sample is True, not 'unset'
    # (read as the export reads it: a whole export of the pipeline said it the same, in 20 s more)
    sd_settings = folder / "scheduler" / "scheduler_config.json"
    written = json.loads(sd_settings.read_text())
    sd_settings.write_text(json.dumps({**{k: v for k, v in written.items() if k != "clip_sample"},
                                       "_class_name": "DDIMScheduler"}))
    with pytest.warns(EdgegenWarning, match=r"clip_sample True \(the default\) as False, as diffusers' "
                                            r"StableDiffusionPipeline sets them"):
        assert read_scheduler(folder, "StableDiffusionPipeline").sampler_options["clip_sample"] is False


def test_a_component_missing_or_not_fitting_its_weights_is_named(sd_packages, tmp_path):
    """A text encoder whose config.json does not fit its weights was refused with transformers'
    "for details look at the above report" (a report its quieted logger never showed); a missing
    config.json or component folder as "expected safetensors weights, found none"."""
    folder = tmp_path / "sd"
    shutil.copytree(sd_packages["sd8"][0], folder)
    config = folder / "text_encoder" / "config.json"
    written = json.loads(config.read_text())
    config.write_text(json.dumps({**written, "intermediate_size": written["intermediate_size"] + 3}))
    with pytest.raises(CheckpointError, match=r"text_encoder: expected weights for every parameter of its "
                                              r"CLIPTextModel, found weights of another shape for .*mlp\.fc1"):
        export_diffusers(folder, tmp_path / "pkg")
    config.unlink()
    with pytest.raises(CheckpointError, match=r"text_encoder/config.json: expected the text_encoder config.json "
                                              r"model_index.json names, found nothing at that path"):
        export_diffusers(folder, tmp_path / "pkg")
    shutil.rmtree(folder / "vae")
    with pytest.raises(CheckpointError, match=r"sd/vae: expected the vae folder model_index.json names, found nothing"):
        export_diffusers(folder, tmp_path / "pkg")


def test_negative_prompt_and_several_images_per_prompt_match_diffusers(sd_packages):
    folder, package = sd_packages["sd16"]
    theirs = sd_pipeline(folder)
    pipe = edgegen.load(package)
    latents = torch.randn((4, *pipe.space_shape), generator=torch.Generator().manual_seed(2))
    reference = theirs(PROMPTS, negative_prompt=["thin", "one"], num_images_per_prompt=2, num_inference_steps=8,
                       latents=latents.clone(), output_type="np").images
    ours = pipe(PROMPTS, negative_prompt=["thin", "one"], n=2, steps=8, noise=latents.numpy())
    assert_images_close(ours, reference)


def test_prompts_tokenize_as_transformers_and_repeat_from_the_cache(sd_packages):
    folder, package = sd_packages["sd16"]
    tokenizer = sd_pipeline(folder).tokenizer
    pipe = edgegen.load(package)
    # special tokens in the text are special, as CLIPTokenizer has them (a tokenizer rebuilt by hand spelled them out)
    texts = ["A  THICK digit, seven!", "", " ".join(["seven"] * 40), "naïve café 7", "<|startoftext|> seven<|endoftext|>"]
    expected = tokenizer(texts, padding="max_length", max_length=pipe.config.max_length, truncation=True).input_ids
    with pytest.warns(edgegen.EdgegenWarning, match=r"^prompts\[2\]: the text encoder takes 16 tokens, .* the rest was "
                                                    r"cut: 'seven seven"):   # 40 words: cut as transformers cuts them
        assert pipe.tokenizer.encode_padded(texts, pipe.config.max_length, pipe.config.pad_token_id).tolist() == expected
    encoder = pipe.sessions["text_encoder"]
    run, calls = encoder.run, []
    encoder.run = lambda feeds: calls.append(len(feeds["input_ids"])) or run(feeds)
    first = pipe.encode_prompt(["seven", "two", "seven"])
    again = pipe.encode_prompt("two")
    assert calls == [2]   # each new text once; a repeated one from the cache
    np.testing.assert_array_equal(again[0], first[1])
    many = [f"seven {i}" for i in range(70)]   # more than the cache holds, in one call
    states = pipe.encode_prompt(many)
    assert len(states) == 70 and len(pipe._encoded) == 64
    np.testing.assert_array_equal(states[-1], pipe.encode_prompt(many[-1])[0])


@pytest.mark.filterwarnings("ignore:.*the rest was cut")   # long prompts on purpose
def test_a_tokenizer_saved_as_vocab_and_merges_imports_the_same(sd_packages, tmp_path):
    """sd16's folder has no tokenizer.json (the test above holds its package to transformers' own
    tokenizer); here the import's tokenizer step on sd8's folder made slow gives what sd8's
    tokenizer.json gives, pad token included."""
    assert not (sd_packages["sd16"][0] / "tokenizer" / "tokenizer.json").exists()
    folder, package = sd_packages["sd8"]
    copy = tmp_path / "slow-tokenizer"
    shutil.copytree(folder, copy)
    slow_tokenizer(copy / "tokenizer")
    built, read = _tokenizer_file(copy, json.loads((copy / "model_index.json").read_text()), tmp_path)
    pipe = edgegen.load(package)
    pad = special_token(read, "pad_token", "")   # an AddedToken object, read as its content
    assert Tokenizer.from_file(str(built)).token_to_id(pad) == pipe.config.pad_token_id
    texts = ["A  THICK digit, seven!", " ".join(["two"] * 20)]
    ours = BPETokenizer(built).encode_padded(texts, pipe.config.max_length, pipe.config.pad_token_id)
    expected = pipe.tokenizer.encode_padded(texts, pipe.config.max_length, pipe.config.pad_token_id)
    np.testing.assert_array_equal(ours, expected)


def test_a_vae_shift_factor_is_left_as_stable_diffusions_pipelines_leave_it(sd_packages, tmp_path):
    """diffusers' Stable Diffusion pipelines scale latents by scaling_factor alone and never read
    shift_factor (SD3's and Flux's do): the import applied it, 6e-3 off diffusers' decode."""
    from edgegen.families.text2image.diffusers_import import Decoder, Encoder, import_stable_diffusion

    folder = tmp_path / "shifted"
    shutil.copytree(sd_packages["sd8"][0], folder)
    config = json.loads((folder / "vae" / "config.json").read_text())
    (folder / "vae" / "config.json").write_text(json.dumps({**config, "shift_factor": 0.5}))
    layout = json.loads((folder / "model_index.json").read_text())
    (tmp_path / "scratch").mkdir()
    with pytest.warns(edgegen.ImportedSettingWarning, match=r"shift_factor 0.5 is not applied, as diffusers' Stable "
                                                            r"Diffusion pipelines do not apply it"):
        checkpoint, _ = import_stable_diffusion(folder, layout, tmp_path / "scratch")
    parts, vae = checkpoint.model, sd_pipeline(folder).vae
    latents = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    image = torch.rand((2, 3, 16, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = (vae.decode(latents / vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
        torch.testing.assert_close(Decoder(parts)(latents), theirs, atol=1e-6, rtol=0)
        torch.testing.assert_close(Encoder(parts)(image), vae.encode(image * 2 - 1).latent_dist.mean
                                   * vae.config.scaling_factor, atol=1e-6, rtol=0)


def test_a_feature_extractor_is_passed_over_and_an_image_encoder_said(sd_packages, tmp_path):
    """Stable Diffusion 2.x's folders, and 1.x's saved with safety_checker=None, keep the safety
    checker's feature_extractor: it was refused as if it were the checker."""
    from edgegen.families.text2image.diffusers_import import import_stable_diffusion

    folder = tmp_path / "with-extractor"
    shutil.copytree(sd_packages["sd8"][0], folder)
    layout = {**json.loads((folder / "model_index.json").read_text()), "safety_checker": [None, None],
              "feature_extractor": ["transformers", "CLIPImageProcessor"]}
    (tmp_path / "scratch").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("error", edgegen.EdgegenWarning)   # edgegen's own, not the libraries' deprecations
        import_stable_diffusion(folder, layout, tmp_path / "scratch")
    layout["image_encoder"] = ["transformers", "CLIPVisionModelWithProjection"]
    with pytest.warns(edgegen.ImportedSettingWarning, match=r"its image_encoder \(IP-Adapter's image prompts\) is not "
                                                            r"imported; the package takes text prompts"):
        import_stable_diffusion(folder, layout, tmp_path / "scratch")


def test_img2img_and_inpainting_with_a_prompt(sd_packages):
    _, package = sd_packages["sd16"]
    pipe = edgegen.load(package)
    image = np.random.default_rng(0).uniform(0, 1, (2, *pipe.image_shape)).astype(np.float32)
    np.testing.assert_array_equal(pipe.img2img("seven", image, strength=0.0, steps=10), image)
    changed = pipe.img2img(["seven", "two"], image, strength=0.5, steps=10, seed=1)
    assert changed.shape == image.shape and not np.allclose(changed, image)
    mask = np.zeros(pipe.image_shape[1:], np.float32)
    mask[:, : pipe.image_shape[2] // 2] = 1
    painted = pipe.inpaint("seven", image, mask, steps=10, seed=1)
    np.testing.assert_array_equal(painted[..., pipe.image_shape[2] // 2:], image[..., pipe.image_shape[2] // 2:])
    with pytest.raises(InputError, match="prompt: expected one, or one per image"):
        pipe.img2img(["a", "b", "c"], image, steps=4)
    with pytest.raises(InputError, match="negative_prompt: expected none with guidance_scale 1 .*, found 'two'"):
        pipe("seven", negative_prompt="two", guidance_scale=1.0, steps=2)
    # "" is guidance's negative prompt when none is given: the same images, taken (it was refused as "one")
    for empty in ("", [""], ("",)):
        np.testing.assert_array_equal(pipe("seven", negative_prompt=empty, guidance_scale=1.0, steps=2, seed=0),
                                      pipe("seven", guidance_scale=1.0, steps=2, seed=0))
    with pytest.raises(InputError, match="prompt: expected a text or a non-empty list"):
        pipe([], steps=2)


def test_text_to_image_from_the_cli(sd_packages, tmp_path):
    _, package = sd_packages["sd8"]
    out = tmp_path / "seven.png"
    assert main(["generate", str(package), "--prompt", "a thick seven", "--n", "2", "--steps", "3", "--out", str(out)]) == 0
    assert out.is_file()
    # one sample by default, as diffusers' pipelines draw (a grid of 16 is for edgegen's small models)
    one, default = tmp_path / "one.png", tmp_path / "default.png"
    assert main(["generate", str(package), "--prompt", "a thick seven", "--n", "1", "--steps", "3", "--out", str(one)]) == 0
    assert main(["generate", str(package), "--prompt", "a thick seven", "--steps", "3", "--out", str(default)]) == 0
    assert default.read_bytes() == one.read_bytes() != out.read_bytes()
    assert main(["generate", str(package), "--steps", "3", "--out", str(out)]) == 2   # no --prompt
    assert main(["generate", str(package), "--prompt", "x", "--label", "3", "--out", str(out)]) == 2   # not this family's
    # from a picture: img2img and inpainting, the pipeline's calls on it read at the package's size
    from PIL import Image

    from edgegen.images import load_image, load_mask, save_grid

    pipe = edgegen.load(package)
    Image.fromarray((load_images("digits", image_size=32).test[0, 0] * 255).astype(np.uint8)).save(tmp_path / "d.png")
    mask = np.zeros((32, 32), np.uint8)
    mask[16:] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    image = np.repeat(load_image(tmp_path / "d.png", pipe.image_shape), 2, axis=0)
    for pictures, expected in ((["--strength", "0.7"], pipe.img2img("a thick seven", image, strength=0.7, steps=3, seed=1)),
                               (["--mask", str(tmp_path / "mask.png")],
                                pipe.inpaint("a thick seven", image, load_mask(tmp_path / "mask.png", pipe.image_shape),
                                             steps=3, seed=1))):
        assert main(["generate", str(package), "--prompt", "a thick seven", "--image", str(tmp_path / "d.png"),
                     *pictures, "--n", "2", "--steps", "3", "--seed", "1", "--out", str(out)]) == 0
        save_grid(expected, tmp_path / "expected.png")
        assert out.read_bytes() == (tmp_path / "expected.png").read_bytes()


def test_bench_runs_the_imported_pipelines_folder_beside_the_package(ddpm_packages, sd_packages, tmp_path):
    """bench --vs-torch takes the diffusers folder a package was imported from: imported again, its
    weights checked against the package's record, its modules timed beside the graphs."""
    import shutil

    from edgegen.bench import bench_package

    for folder, package in (ddpm_packages["grey"], sd_packages["sd8"]):
        report = bench_package(package, batch=1, iters=2, warmup=0, vs_torch=folder, energy=False, generation=False)
        graphs = set(json.loads((package / "edgegen.json").read_text())["graphs"])
        assert set(report["speedup_vs_torch_p50"]) == graphs and all(r > 0 for r in report["speedup_vs_torch_p50"].values())
    folder, package = ddpm_packages["grey"]
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    weights = next((other / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-4] + bytes(4))   # other weights, same layout
    with pytest.raises(CheckpointError, match="expected the weights package .* was imported from"):
        bench_package(package, batch=1, iters=1, warmup=0, vs_torch=other, energy=False, generation=False)
    (tmp_path / "empty").mkdir()
    assert main(["bench", str(package), "--iters", "1", "--vs-torch", str(tmp_path / "empty")]) == 2


# -- what is refused ----------------------------------------------------------------------------

@pytest.mark.parametrize("edit, message", [
    ({"_class_name": "HeunDiscreteScheduler"}, "expected a scheduler among DDPMScheduler"),
    ({"_class_name": "EulerDiscreteScheduler", "use_karras_sigmas": True},
     "use_karras_sigmas=True: edgegen's euler sampler implements use_karras_sigmas=False"),
    ({"thresholding": True}, "thresholding=True"),
    ({"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "sde-dpmsolver++"}, "algorithm_type='dpmsolver"),
    ({"_class_name": "DPMSolverMultistepScheduler", "solver_order": 3}, "solver_order=3"),
    ({"_class_name": "EulerDiscreteScheduler", "final_sigmas_type": "sigma_min"}, "final_sigmas_type='sigma_min'"),
    ({"_class_name": "DDPMScheduler", "variance_type": "learned_range"}, "variance_type='learned_range': edgegen's ddpm "
     "sampler implements variance_type=None or variance_type='fixed_small' or variance_type='fixed_large' only"),
    ({"_class_name": "PNDMScheduler", "prediction_type": "sample"}, "pndm': expected prediction_type epsilon"),
    ({"trained_betas": [0.1, 0.2]}, "trained_betas"),
    ({"trained_betas": [0.01] * 1000}, r"trained_betas=\[0\.01, .*\.\.\. \(1000 values\): edgegen's ddim sampler implements "
                                       r"trained_betas=None only"),   # one line, not the 5 kB of them all
    ({"some_new_setting": 3}, "some_new_setting=3 is not one edgegen's ddim sampler implements"),
    ({"steps_offset": "one"}, "expected steps_offset to be an integer, found 'one'"),
    ({"beta_start": "0.1"}, "expected beta_start to be a number, found '0.1'"),
])
def test_schedulers_edgegen_cannot_match_are_refused(ddpm_packages, tmp_path, edit, message):
    folder, _ = ddpm_packages["rgb"]
    copy = tmp_path / "pipe"
    shutil.copytree(folder, copy)
    config_path = copy / "scheduler" / "scheduler_config.json"
    config = {**json.loads(config_path.read_text()), **edit}
    config_path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        export_diffusers(copy, tmp_path / "pkg")
    assert not (tmp_path / "pkg").exists()


def test_unet2d_settings_no_sampler_here_steps_are_refused_by_name(tmp_path):
    """A learned time embedding's Gather took the float timestep (an internal error's traceback);
    Fourier features of log(t) exported, then gave NaN at the t = 0 every schedule ends at; an
    out_channels of another size was said to be learned variances (review 164)."""
    for embedding, why in (("learned", "a table looked up by integer timestep"),
                           ("fourier", "Gaussian Fourier features of log\\(t\\), a score-SDE model's")):
        folder = ddpm_layout(tmp_path / embedding, unet_config={"time_embedding_type": embedding, "flip_sin_to_cos": False,
                                                                "num_train_timesteps": 1000})
        with pytest.raises(CheckpointError, match=rf"expected time_embedding_type 'positional' .*, found '{embedding}' "
                                                  rf"\({why}"):
            export_diffusers(folder, tmp_path / "pkg")
    for out_channels, why in ((6, "learned variances"), (1, "a prediction of another shape than the sample's")):
        folder = ddpm_layout(tmp_path / f"out{out_channels}", unet_config={"out_channels": out_channels})
        with pytest.raises(CheckpointError, match=rf"expected out_channels 3 .*, found {out_channels} \({why}"):
            export_diffusers(folder, tmp_path / "pkg")
    assert not (tmp_path / "pkg").exists()


def test_a_rectangular_stable_diffusion_unet_matches_diffusers(sd_packages, tmp_path):
    """sample_size [height, width], as diffusers' Stable Diffusion pipelines read it, was refused
    (review 164); the sample size does not change the weights."""
    folder = tmp_path / "sd"
    shutil.copytree(sd_packages["sd8"][0], folder)
    config = folder / "unet" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "sample_size": [8, 12]}))
    pipe = edgegen.load(export_diffusers(folder, tmp_path / "pkg"))
    assert pipe.space_shape[1:] == (8, 12)
    latents = torch.randn((2, *pipe.space_shape), generator=torch.Generator().manual_seed(2))
    reference = sd_pipeline(folder)(PROMPTS, num_inference_steps=STEPS, latents=latents.clone(), output_type="np").images
    ours = pipe(PROMPTS, steps=STEPS, noise=latents.numpy())
    assert ours.shape[2:] == (16, 24)
    assert_images_close(ours, reference)


def test_layouts_edgegen_does_not_import_are_refused(ddpm_packages, sd_packages, tmp_path):
    folder, _ = ddpm_packages["rgb"]
    with pytest.raises(CheckpointError, match="expected model_index.json"):
        export_diffusers(folder / "unet", tmp_path / "a")
    odd = tmp_path / "odd"   # a traceback and "internal error" from torch.export, as diffusers' forward fails too
    shutil.copytree(folder, odd)
    config = json.loads((odd / "unet" / "config.json").read_text())
    (odd / "unet" / "config.json").write_text(json.dumps({**config, "sample_size": 9}))
    with pytest.raises(CheckpointError, match=r"expected sample_size sides that are multiples of 2 \(its down "
                                              r"blocks halve them 1 time; UNet2DModel's forward fails on others\), found 9"):
        export_diffusers(odd, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    with pytest.raises(CheckpointError, match="nothing at that path"):
        export_diffusers(tmp_path / "missing", tmp_path / "a")
    copy = tmp_path / "weird"
    shutil.copytree(folder, copy)
    index = json.loads((copy / "model_index.json").read_text())
    (copy / "model_index.json").write_text(json.dumps({**index, "unet": ["diffusers", "UNet1DModel"]}))
    with pytest.raises(CheckpointError, match="expected a unet among UNet2DModel, UNet2DConditionModel"):
        export_diffusers(copy, tmp_path / "a")
    (copy / "model_index.json").write_text(json.dumps(index))
    for weights in (copy / "unet").glob("*.safetensors"):
        weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(CheckpointError, match="expected safetensors weights, found .*pickled weights are not loaded"):
        export_diffusers(copy, tmp_path / "a")
    for weights in (copy / "unet").glob("*.bin"):
        weights.rename(weights.with_suffix(".safetensors"))
    from safetensors.torch import load_file, save_file

    (weights,) = (copy / "unet").glob("*.safetensors")   # a parameter without weights: random where it loaded
    state = load_file(weights)
    state["not_in_the_model.weight"] = state.pop("conv_in.bias")
    save_file(state, weights)
    with pytest.raises(CheckpointError, match=r"unet: expected weights for every parameter of its UNet2DModel, found "
                                              r"no weights for conv_in.bias \(loaded, those would be random\)"):
        export_diffusers(copy, tmp_path / "a")
    state["conv_in.bias"] = state["conv_out.bias"].new_zeros(state["conv_in.weight"].shape[0])
    save_file(state, weights)   # complete, with a weight the model does not use: said, and exported
    with pytest.warns(EdgegenWarning, match="weights its UNet2DModel does not use were left out: not_in_the_model.weight"):
        assert export_diffusers(copy, tmp_path / "exported").is_dir()
    text_copy = tmp_path / "partial-text-encoder"   # transformers' components too
    shutil.copytree(sd_packages["sd8"][0], text_copy)
    (weights,) = (text_copy / "text_encoder").glob("*.safetensors")
    state = load_file(weights)
    state.pop(next(key for key in state if key.endswith("layers.0.layer_norm1.bias")))
    save_file(state, weights, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"text_encoder: expected weights for every parameter of its CLIPTextModel, "
                                              r"found no weights for \S*layers.0.layer_norm1.bias \("):
        export_diffusers(text_copy, tmp_path / "b")
    sd_folder, _ = sd_packages["sd8"]
    sd_copy = tmp_path / "with-checker"
    shutil.copytree(sd_folder, sd_copy)
    index = json.loads((sd_copy / "model_index.json").read_text())
    (sd_copy / "model_index.json").write_text(json.dumps(
        {**index, "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"]}))
    with pytest.raises(CheckpointError, match="save the pipeline with safety_checker=None"):
        export_diffusers(sd_copy, tmp_path / "a")
    (sd_copy / "model_index.json").write_text(json.dumps(index))
    vocab = json.loads((sd_copy / "text_encoder" / "config.json").read_text())["vocab_size"]
    from tokenizers import Tokenizer   # ids the text encoder has no row for: refused, not an IndexError in the check

    tokenizer = Tokenizer.from_file(str(sd_copy / "tokenizer" / "tokenizer.json"))
    tokenizer.add_tokens([f"extra{i}" for i in range(vocab + 3 - tokenizer.get_vocab_size(with_added_tokens=True))])
    tokenizer.save(str(sd_copy / "tokenizer" / "tokenizer.json"))
    with pytest.raises(CheckpointError, match=f"tokenizer.json: expected token ids below the model's vocab_size of "
                                              f"{vocab}, found ids up to {vocab + 2} in the tokenizer's vocabulary and "
                                              "added tokens"):
        export_diffusers(sd_copy, tmp_path / "a")
    with pytest.raises(ConfigError, match="--from-diffusers: expected alone"):
        from edgegen.cli import _cmd_export, build_parser

        _cmd_export(build_parser().parse_args(["export", "ckpt", "--from-diffusers", str(folder), "--out", "x"]))


def test_components_that_disagree_are_refused_in_one_line_and_variant_weights_load(sd_packages, tmp_path):
    """What a Hub folder or an edit gives: a UNet whose cross-attention width is not the text
    encoder's (torch.export's hundreds of lines, before), a config.json its weights do not fit
    (diffusers' state-dict traceback), and weights saved with save_pretrained(variant="fp16")
    (diffusers' "no file named" error): the first two refused in one line, the third loaded.
    --data, which an imported pipeline's gate never reads, is refused rather than recorded."""
    from edgegen.cli import _cmd_export, build_parser
    from edgegen.export.diffusers_import import load_component, read_layout

    swapped = tmp_path / "swapped"
    shutil.copytree(sd_packages["sd16"][0], swapped)
    shutil.rmtree(swapped / "unet")
    shutil.copytree(sd_packages["sd8"][0] / "unet", swapped / "unet")   # cross_attention_dim 24 beside a 32-wide encoder
    with pytest.raises(CheckpointError, match=r"unet: expected cross_attention_dim 32 \(the text encoder's hidden_size, "
                                              r"which its attention reads\), found 24$"):
        export_diffusers(swapped, tmp_path / "a")
    edited = tmp_path / "edited"
    shutil.copytree(sd_packages["sd16"][0], edited)
    config = json.loads((edited / "unet" / "config.json").read_text())
    (edited / "unet" / "config.json").write_text(json.dumps({**config, "cross_attention_dim": 24}))
    with pytest.raises(CheckpointError, match=r"unet: expected the UNet2DConditionModel its config.json describes, with its "
                                              r"weights, found diffusers refusing them: \d+ of another shape \(\S+attn2.to_k"
                                              r".weight \[\d+, 32\] against the config's \[\d+, 24\], "):
        export_diffusers(edited, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    variant = tmp_path / "variant"
    shutil.copytree(sd_packages["sd16"][0], variant)
    (weights,) = (variant / "unet").glob("*.safetensors")
    weights.rename(weights.with_name("diffusion_pytorch_model.fp16.safetensors"))
    folder, layout = read_layout(variant)
    unet, _ = load_component(folder, layout, "unet", ("UNet2DConditionModel",))
    original, _ = load_component(*read_layout(sd_packages["sd16"][0]), "unet", ("UNet2DConditionModel",))
    assert all(torch.equal(a, b) for a, b in zip(unet.state_dict().values(), original.state_dict().values()))
    (variant / "unet" / "diffusion_pytorch_model.bf16.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"unet: expected one set of weights, found variants bf16, fp16 and no plain"):
        load_component(folder, layout, "unet", ("UNet2DConditionModel",))
    args = ["export", "--from-diffusers", str(sd_packages["sd16"][0]), "--out", str(tmp_path / "b"), "--data", "digits"]
    with pytest.raises(ConfigError, match=r"data \(--data\) 'digits': expected a family whose export gates on data, "
                                          r"found an imported diffusers pipeline, whose gate draws its own inputs"):
        _cmd_export(build_parser().parse_args(args))
    assert not (tmp_path / "b").exists()


# -- optimize and check on imported packages ------------------------------------------------------------

@pytest.mark.parametrize("name", ["sd8", "ddpm"])
def test_imported_packages_optimize_on_the_inputs_their_export_recorded(sd_packages, ddpm_packages, tmp_path, name):
    """No checkpoint to draw from: optimize calibrates and gates on the held-out feeds the import
    recorded; each graph's variant is gated on its own and a refused one leaves that graph in fp32."""
    from edgegen.optimize import optimize_package

    source = sd_packages[name][1] if name == "sd8" else ddpm_packages["rgb"][1]
    package = tmp_path / "pkg"
    shutil.copytree(source, package)
    manifest = json.loads((package / "edgegen.json").read_text())
    assert manifest["config"]["held_out"]["feeds"] == 8
    records = optimize_package(package, "fp16", target="tensorrt", progress=lambda line: None)
    assert set(records) == set(manifest["graphs"])
    assert "file" in records["unet"], records["unet"]   # else the comparison below would be fp32 against itself
    for record in records.values():
        assert record["calibration"] is None and record["gate"]["metric"] == "PSNR dB"
        assert ("file" in record) == record["gate"]["passed"]
    pipe = edgegen.load(package, precision="fp16")
    fp32 = edgegen.load(package)
    if name == "sd8":
        half, full = pipe("seven", steps=6, seed=0), fp32("seven", steps=6, seed=0)
    else:
        half, full = pipe.sample(2, steps=6, seed=0), fp32.sample(2, steps=6, seed=0)
    assert np.abs(half - full).mean() < 0.01   # fp16 rounding, carried through the steps
    assert main(["check", str(package), "--target", "tensorrt"]) == 0


def test_every_default_scheduler_config_builds_every_sampler():
    """A package imported with any scheduler's default config can switch to any sampler, taking
    the settings the other sampler has (None settings are the class defaults, as from_config)."""
    from edgegen.export.diffusers_import import SCHEDULERS, scheduler_settings
    from edgegen.families.diffusion.pipeline import DiffusionConfig
    from edgegen.runtimes.samplers import SAMPLERS

    for name in SCHEDULERS:
        settings = scheduler_settings(dict(getattr(diffusers, name)().config, _class_name=name), name)
        config = DiffusionConfig(image_shape=[1, 8, 8], num_classes=0, null_label=0, **settings.config_fields())
        assert not config.problems()
        for sampler in SAMPLERS:
            edgegen.runtimes.samplers.make_sampler(sampler, **settings.schedule, **config.sampler_settings(sampler))


def test_a_text_to_image_request_is_served(sd_packages):
    """The served request (edgegen triton's Python backend) carries the prompt and the options."""
    from edgegen.serving.requests import arguments, served

    _, package = sd_packages["sd8"]
    pipe = edgegen.load(package)
    request = served(edgegen.families.get("text2image"), pipe.config)
    values = {"prompt": np.array([b"a thick seven"], dtype=np.object_), "n": np.array([2]), "seed": np.array([3]),
              "steps": np.array([3])}
    (answer,) = request.answer(pipe, arguments(request.inputs, values))
    np.testing.assert_array_equal(answer["images"], pipe("a thick seven", n=2, seed=3, steps=3))
    image = load_images("digits", image_size=pipe.image_shape[-1], channels=pipe.image_shape[0]).test[:1]
    (answer,) = request.answer(pipe, arguments(request.inputs, {**values, "image": image, "strength": np.array([0.5])}))
    np.testing.assert_array_equal(answer["images"], pipe.img2img("a thick seven", np.repeat(image, 2, axis=0),
                                                                 strength=0.5, seed=3, steps=3))
    with pytest.raises(InputError, match="request input 'prompt': expected it, found none"):
        arguments(request.inputs, {"n": np.array([1])})


RUN_WITHOUT_TORCH = """
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "onnx", "transformers", "diffusers", "safetensors"):
            raise ImportError(f"blocked for this test: {name}")

sys.meta_path.insert(0, Block())
import numpy as np
import edgegen
sd = edgegen.load(sys.argv[1], backend="ort-cpu")
images = sd("a thick seven", negative_prompt="thin", n=2, steps=4, seed=0)
assert images.shape == (2, *sd.image_shape), images.shape
sd.img2img("two", images, strength=0.5, steps=4)
ddpm = edgegen.load(sys.argv[2], backend="ort-cpu")
for sampler in ("pndm", "lms", "ddim"):
    ddpm.sample(2, steps=5, sampler=sampler, seed=0)
print("ok")
"""


def test_imported_packages_run_without_torch_transformers_or_diffusers(sd_packages, ddpm_packages):
    """The runtime side of both layouts: numpy, ONNX Runtime and the tokenizers library only."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", RUN_WITHOUT_TORCH, str(sd_packages["sd8"][1]),
                             str(ddpm_packages["grey"][1])], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"


def test_a_manifest_whose_shapes_disagree_with_its_graphs_is_refused_at_load(sd_packages, ddpm_packages, tmp_path):
    """An edited latent_shape, max_length (text2image) or image_shape (an imported UNet2DModel's) loaded,
    and the first call failed mid-run on the graph's shapes; now the load names the field."""
    from edgegen.errors import ManifestError

    for name, source, field, value, said in (
            ("latents", sd_packages["sd16"][1], "latent_shape", [4, 8, 8],
             r"latent_shape \[4, 8, 8\]: expected sample of graph 'unet' to have 8 at axis 2, found 16"),
            ("tokens", sd_packages["sd16"][1], "max_length", 20,
             r"max_length 20: expected input_ids of graph 'text_encoder' to have 20 at axis 1, found 16"),
            ("pixels", ddpm_packages["rgb"][1], "image_shape", [1, 16, 16],
             r"image_shape \[1, 16, 16\]: expected sample of graph 'unet' to have 1 at axis 1, found 3")):
        copy = tmp_path / name
        shutil.copytree(source, copy)
        manifest = json.loads((copy / "edgegen.json").read_text())
        manifest["config"][field] = value
        (copy / "edgegen.json").write_text(json.dumps(manifest))
        with pytest.raises(ManifestError, match=rf"disagrees with its graphs: .*{said}"):
            edgegen.load(copy)
        assert main(["info", str(copy)]) == 1, name


def test_hugging_face_bars_and_the_torchvision_notice_are_quiet_inside_the_block_only():
    """text2image's export printed transformers' torchvision notices and its "Writing model shards"
    and "Loading weights" bars between its own progress lines (helper 79); other warnings stay."""
    import logging

    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from edgegen.export.hugging_face import LOAD_REPORT_LOGGER, TORCHVISION_NOTICE_LOGGER, quiet_hugging_face

    transformers_logging.enable_progress_bar()   # as a process starts (HF_HUB_DISABLE_PROGRESS_BARS unset)
    diffusers_logging.enable_progress_bar()
    notice, report, seen = logging.getLogger(TORCHVISION_NOTICE_LOGGER), logging.getLogger(LOAD_REPORT_LOGGER), []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    notice.addHandler(handler)
    report.addHandler(handler)
    try:
        with quiet_hugging_face():
            assert not transformers_logging.is_progress_bar_enabled() and not diffusers_logging.is_progress_bar_enabled()
            notice.warning("`CLIPImageProcessor` requires torchvision (not installed); falling back to ...")
            notice.warning("another warning")
            report.warning("\x1b[1mGPT2LMHeadModel LOAD REPORT\x1b[0m from: gpt2\nKey | Status")
        notice.warning("`SiglipImageProcessor` requires torchvision (not installed); falling back to ...")
        report.warning("GPT2LMHeadModel LOAD REPORT from: gpt2")
    finally:
        notice.removeHandler(handler)
        report.removeHandler(handler)
    assert transformers_logging.is_progress_bar_enabled() and diffusers_logging.is_progress_bar_enabled()
    assert seen == ["another warning", "`SiglipImageProcessor` requires torchvision (not installed); falling back to ...",
                    "GPT2LMHeadModel LOAD REPORT from: gpt2"]
