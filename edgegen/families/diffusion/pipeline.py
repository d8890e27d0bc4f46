"""The diffusion pipeline: the sampling loop over the exported denoiser, classifier-free
guidance as one batch of 2n, img2img and inpainting. numpy only."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import ConfigError, InputError, not_one_of
from ...runtimes.pipeline import (
    ImageConfig,
    Pipeline,
    as_float_array,
    broadcast_mask,
    check_range,
    check_count,
    check_number,
    class_labels,
    class_problems,
    finite_result,
    make_rng,
)
from ...runtimes.samplers import BETA_SCHEDULES, PREDICTION_TYPES, SAMPLERS, Callback, Sampler, make_sampler, schedule_problems
from .. import dim_problems, positive

DEFAULT_STEPS = 20
DEFAULT_SAMPLER = "dpmpp-2m"
DEFAULT_GUIDANCE = 3.0
DEFAULT_STRENGTH = 0.6  # img2img: how far the picture is noised before it is denoised back
MAX_GUIDANCE = 100.0    # |guidance_scale| beyond this only amplifies the model's noise (7.5 is a large one)
ORDINARY_NOISE = 6.0    # |a standard normal draw| of ten million values stays below this (p ~ 2e-9 each)


@dataclass(kw_only=True)
class DiffusionConfig(ImageConfig):
    """The denoiser's training noise schedule and its classes (0: unconditional)."""
    num_classes: int
    null_label: int                  # the "no label" index classifier-free guidance feeds
    num_train_timesteps: int
    beta_schedule: str
    beta_start: float
    beta_end: float
    prediction_type: str
    # the sampler a call without one uses, and its settings: an imported diffusers package's
    # scheduler (docs/diffusers.md); settings of other samplers apply where they take them, as
    # diffusers' from_config carries a scheduler's config over to another class
    sampler: str = DEFAULT_SAMPLER
    sampler_options: dict = field(default_factory=dict)
    held_out: dict | None = None   # an imported package's recorded inputs, for optimize (runtimes/feeds.py)

    def problems(self) -> list[str]:
        problems = super().problems() + positive(self, "num_train_timesteps")
        problems += class_problems(self)
        if self.sampler not in SAMPLERS:
            problems.append(f"sampler expected one of {', '.join(SAMPLERS)}, found {self.sampler!r}")
        if self.beta_schedule not in BETA_SCHEDULES:
            problems.append(f"beta_schedule expected one of {', '.join(BETA_SCHEDULES)}, found {self.beta_schedule!r}")
        if self.prediction_type not in PREDICTION_TYPES:
            problems.append(f"prediction_type expected one of {', '.join(PREDICTION_TYPES)}, found {self.prediction_type!r}")
        if not 0 < self.beta_start < self.beta_end < 1:
            problems.append(f"beta_start and beta_end expected 0 < start < end < 1, found {self.beta_start}, {self.beta_end}")
        else:
            problems += schedule_problems(self.beta_schedule, self.num_train_timesteps, self.beta_start, self.beta_end)
        if self.held_out is not None and not {"file", "sha256"} <= set(self.held_out):
            problems.append(f"held_out expected file and sha256, found keys {sorted(self.held_out)}")
        taken = {"timestep_spacing", "steps_offset"}.union(*(s.options for s in SAMPLERS.values()))
        unknown = sorted(set(self.sampler_options) - taken)
        if unknown:
            problems.append(f"sampler_options expected options some sampler takes ({', '.join(sorted(taken))}), "
                            f"found {unknown}")
        if not problems:   # the package's own sampler, built once: its settings are checked here, not mid-call
            try:
                make_sampler(self.sampler, num_train_timesteps=self.num_train_timesteps, beta_schedule=self.beta_schedule,
                             beta_start=self.beta_start, beta_end=self.beta_end, prediction_type=self.prediction_type,
                             **self.sampler_settings(self.sampler))
            except (ConfigError, TypeError, ValueError) as exc:
                problems.append(f"sampler_options: {exc}")
        if not problems:   # and the settings each sampler a call may switch to takes (a sampler that cannot run
            # this model at all, PNDM with sample prediction, is refused by the call that picks it)
            problems += next((found for found in (s.settings_problems(self.sampler_settings(name))
                                                  for name, s in SAMPLERS.items()) if found), [])
        return problems

    denoised_space = "image_shape"   # the config field the UNet's sample is shaped by (ldm: latent_shape)

    def graph_problems(self, graphs: dict) -> list[str]:
        """And the UNet's sample and prediction (and a latent model's latents) have the space's shape:
        an edited shape loaded, and the first call failed mid-run."""
        space = getattr(self, self.denoised_space)
        return super().graph_problems(graphs) + dim_problems(
            graphs, [(part, tensor, axis + 1, self.denoised_space, size, list(space)) for part in graphs
                     for tensor in ("sample", "prediction", "latent") for axis, size in enumerate(space)])

    def sampler_settings(self, name: str) -> dict:
        """The package's sampler settings that sampler `name` takes (as diffusers' from_config
        hands a scheduler's config to another class)."""
        takes = set(SAMPLERS[name].options) | {"timestep_spacing", "steps_offset"}
        # None: the class's default, as diffusers' configs write it (DPMSolver's variance_type)
        return {k: v for k, v in self.sampler_options.items() if k in takes and v is not None}


class DiffusionPipeline(Pipeline):
    family = "diffusion"
    # sample_batched merges calls whose denoiser takes nothing but the sample, the timestep and
    # the labels; a subclass whose graph takes more (a ControlNet's control) sets this False
    merges_calls = True
    stoppable = True   # callback= in its loops (docs/serving.md: a cancelled request stops)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def make_sampler(self, name: str | None = None, eta: float = 0.0, **options) -> Sampler:
        """A sampler configured with the package's training noise schedule (name None: the
        package's own sampler, with its settings)."""
        name = self.config.sampler if name is None else name   # "" is a name, refused as one
        if name not in SAMPLERS:
            raise ConfigError(not_one_of("sampler", name, SAMPLERS))
        options = {**self.config.sampler_settings(name), **options}
        eta = check_number(eta, "eta", 0.0, 1.0)   # 1: DDPM's variance; above it the noise outgrows the signal
        if eta:
            if name != "ddim":
                raise ConfigError(f"eta: only the ddim sampler takes eta, found eta={eta} with sampler {name!r}")
            options["eta"] = eta
        if name == "ddim":
            # With x0 clipped (diffusers' default) and guidance, an unclipped noise estimate
            # drifts away from x0 step after step: measured by benchmarks/diffusion.py, DDIM
            # at 50 steps and guidance 3 fell to 23% label accuracy; with the consistent
            # estimate, 100%. (An imported package says False, as diffusers' pipelines run.)
            options.setdefault("use_clipped_model_output", True)
        c = self.config
        return make_sampler(name, num_train_timesteps=c.num_train_timesteps, beta_schedule=c.beta_schedule,
                            beta_start=c.beta_start, beta_end=c.beta_end, prediction_type=c.prediction_type, **options)

    # -- the denoiser, with guidance ----------------------------------------------------------

    def _labels(self, labels: Any, n: int) -> np.ndarray | None:
        """None (unconditional), one class id for all, or one per image -> int64 [n]."""
        return class_labels(labels, n, self.num_classes, None, names=self.class_names)

    def denoiser(self, labels: np.ndarray | None, guidance_scale: float, feeds: dict[str, np.ndarray] | None = None):
        """model_fn(x, t) for the samplers. With labels and guidance_scale != 1, the
        conditional and unconditional branches run as one batch of 2n through the engine.
        feeds: the graph's other per-image inputs (a ControlNet's control and scale), the
        same for both branches."""
        feeds = feeds or {}
        session = self.sessions["unet"]
        null = self.config.null_label
        guidance_scale = check_number(guidance_scale, "guidance_scale", -MAX_GUIDANCE, MAX_GUIDANCE)
        if not any(spec.name == "class_labels" for spec in session.inputs):   # an imported unconditional UNet
            return lambda x, t: session.run_rows({"sample": x, "timestep": t, **feeds})["prediction"]

        def unconditional(n: int) -> np.ndarray:
            return np.full(n, null, np.int64)

        if labels is None or guidance_scale == 1.0:

            def model_fn(x, t):
                y = labels if labels is not None else unconditional(len(x))
                return session.run_rows({"sample": x, "timestep": t, "class_labels": y, **feeds})["prediction"]

            return model_fn

        both_labels = np.concatenate([labels, unconditional(len(labels))])
        both_feeds = {name: np.concatenate([value, value]) for name, value in feeds.items()}
        scale = np.float32(guidance_scale)

        def guided(x, t):
            out = session.run_rows({"sample": np.concatenate([x, x]), "timestep": np.concatenate([t, t]),
                               "class_labels": both_labels, **both_feeds})["prediction"]
            cond, uncond = np.split(out, 2)
            return uncond + scale * (cond - uncond)

        return guided

    def conditioned_denoiser(self, condition, n: int, guidance_scale: float, feeds=None):
        """model_fn(x, t) for n images under the loops' condition: class labels here (None, one id
        or n of them); a family conditioned otherwise (a text prompt's embeddings) overrides it."""
        return self.denoiser(self._labels(condition, n), guidance_scale, feeds)

    # -- the space the denoiser works in: pixels here, a latent diffusion package's latents --

    @property
    def space_shape(self) -> tuple[int, ...]:
        return self.image_shape

    def to_space(self, images: np.ndarray) -> np.ndarray:
        """Images in [0, 1] -> the denoiser's space ([-1, 1] pixels)."""
        return images * 2 - 1

    def to_images(self, x: np.ndarray) -> np.ndarray:
        """The denoiser's space -> images in [0, 1]."""
        return _to_unit(x)

    def space_mask(self, mask: np.ndarray) -> np.ndarray:
        """An inpainting mask over the images -> one over the denoiser's space."""
        return mask

    # -- the public API -------------------------------------------------------------------------

    def sample(self, n: int, steps: int = DEFAULT_STEPS, sampler: str | None = None, guidance_scale: float | None = None, labels=None,
               seed: int | None = None, eta: float = 0.0, callback: Callback | None = None,
               noise: np.ndarray | None = None) -> np.ndarray:
        """n images [n, C, H, W] in [0, 1]. labels: None (unconditional), a class id, or n ids;
        guidance_scale (DEFAULT_GUIDANCE unless given) takes labels, 1.0 turning guidance off. noise: the starting
        noise [n, *space_shape] (standard normal) instead of the seed's, as diffusers' `latents=`."""
        return self._sample(check_count(n), steps, sampler, guidance_scale, labels, seed, eta, callback, noise=noise)

    def img2img(self, image, strength: float = DEFAULT_STRENGTH, steps: int = DEFAULT_STEPS, sampler: str | None = None,
                guidance_scale: float | None = None, labels=None, seed: int | None = None, eta: float = 0.0,
                callback: Callback | None = None) -> np.ndarray:
        """Noise `image` ([n, C, H, W] in [0, 1]) part of the way (strength 0: unchanged,
        1: all the way) and denoise it back, as diffusers' img2img pipelines do."""
        return self._img2img(image, strength, steps, sampler, guidance_scale, labels, seed, eta, callback)

    def inpaint(self, image, mask, steps: int = DEFAULT_STEPS, sampler: str | None = None, guidance_scale: float | None = None,
                labels=None, seed: int | None = None, eta: float = 0.0, callback: Callback | None = None) -> np.ndarray:
        """Generate the pixels where mask is 1 and keep the others: after every step the
        known part is replaced by the image noised to the next step's level, and at the end
        by the image itself."""
        return self._inpaint(image, mask, steps, sampler, guidance_scale, labels, seed, eta, callback)

    def sample_batched(self, calls: list[dict]) -> list[np.ndarray]:
        """Several sample() calls ({"n", "seed", "labels", "steps", ...}) in as few loops as their
        settings allow, for a server that has several requests at once: calls with the same
        steps, sampler, guidance_scale and eta, all labelled or all not, run as one batch
        through the denoiser. Each call's noise, first and at every step, comes from its own
        seed, so each result is what sample() gives alone (up to the float rounding of a
        larger batch in the denoiser)."""
        if not self.merges_calls:
            raise ConfigError(f"{self.family}: expected sample() for each call, found sample_batched, which this "
                              "family's pipeline does not merge (its calls carry more than labels)")
        if not isinstance(calls, (list, tuple)) or not all(isinstance(call, dict) for call in calls):
            raise InputError(f"sample_batched: expected a list of calls, each a dict of sample()'s arguments, found "
                             f"{calls!r:.60}")
        groups: dict[tuple, list[int]] = {}
        for index, call in enumerate(calls):
            unknown = set(call) - {"n", "seed", "labels", "steps", "sampler", "guidance_scale", "eta"}
            if unknown:
                raise InputError(f"sample_batched: expected sample()'s arguments, found {sorted(unknown)}")
            try:   # the scale the call runs at: None and 1.0 run alike unlabelled, None and 3.0 labelled
                guidance_scale = self._guidance(call.get("guidance_scale"), call.get("labels"))
            except InputError as exc:
                raise InputError(f"sample_batched: calls[{index}]: {exc}") from None
            key = (call.get("steps", DEFAULT_STEPS), call.get("sampler"), guidance_scale, call.get("eta", 0.0),
                   call.get("labels") is None)
            try:
                groups.setdefault(key, []).append(index)
            except TypeError:   # a list where a setting goes: said as the call's, checked one by one in the loop
                raise InputError(f"sample_batched: calls[{index}]: expected single values for steps, sampler "
                                 f"and eta, found {key[:4]!r:.80}") from None
        counts = {i: check_count(call.get("n", 1), f"sample_batched: calls[{i}]: n") for i, call in enumerate(calls)}
        check_count(sum(counts.values()), "sample_batched: n of all the calls together")   # each within the cap is not enough
        results: list = [None] * len(calls)
        for (steps, sampler, guidance_scale, eta, unlabelled), members in groups.items():
            counts_here = [counts[i] for i in members]
            rngs = RowGenerators([make_rng(calls[i].get("seed")) for i in members], counts_here)
            labels = None if unlabelled else np.concatenate([self._call_labels(calls, i, n)
                                                             for i, n in zip(members, counts_here)])
            images = self._sample(sum(counts_here), steps, sampler, guidance_scale, labels, None, eta, None, rng=rngs)
            for index, part in zip(members, np.split(images, np.cumsum(counts_here)[:-1])):
                results[index] = part
        return results

    def _call_labels(self, calls: list[dict], index: int, n: int) -> np.ndarray:
        """One sample_batched call's labels, a refusal naming the call as its other refusals do."""
        try:
            return self._labels(calls[index]["labels"], n)
        except InputError as exc:
            raise InputError(f"sample_batched: calls[{index}]: {exc}") from None

    # -- the loops, with the graph's other inputs (feeds) for the families that have them --------

    def _sample(self, n, steps, sampler, guidance_scale, labels, seed, eta, callback, feeds=None, noise=None,
                rng=None) -> np.ndarray:
        """rng: the draws' source instead of the seed's (sample_batched's per-call generators)."""
        guidance_scale = self._guidance(guidance_scale, labels)
        rng = rng or make_rng(seed)
        run = self.make_sampler(sampler, eta)
        model_fn = self.conditioned_denoiser(labels, n, guidance_scale, feeds)
        if noise is None:
            x_T = rng.standard_normal((n, *self.space_shape), dtype=np.float32)
        else:
            x_T = as_float_array(noise, "noise", (None, *self.space_shape))
            if len(x_T) != n:
                raise InputError(f"noise: expected {n} rows (n), found {len(x_T)}")
        with _warnings_left_to_finished():
            x = run.sample(model_fn, x_T, steps, rng=step_noise(rng, n), callback=callback)
        return self._finished(x, guidance_scale, run.name, feeds, None if noise is None else x_T)

    def _img2img(self, image, strength, steps, sampler, guidance_scale, labels, seed, eta, callback,
                 feeds=None) -> np.ndarray:
        guidance_scale = self._guidance(guidance_scale, labels)
        images = self._images(image)
        rng = make_rng(seed)
        run = self.make_sampler(sampler, eta)
        start = self.img2img_start(run, steps, strength)
        if start == len(run.timesteps(steps)):   # strength 0
            return images.copy()
        x0 = self.to_space(images)
        noise = rng.standard_normal(x0.shape, dtype=np.float32)
        model_fn = self.conditioned_denoiser(labels, len(x0), guidance_scale, feeds)
        with _warnings_left_to_finished():
            x = run.denoise(model_fn, run.noised(x0, noise, steps, start), steps, start, step_noise(rng, len(x0)),
                            callback)
        return self._finished(x, guidance_scale, run.name, feeds)

    @staticmethod
    def img2img_start(run: Sampler, steps: int, strength: float) -> int:
        """The step of `run`'s `steps`-step schedule img2img starts from at `strength` (as
        diffusers: the last strength x steps of them run); all the steps' count at strength 0,
        which runs none. A strength above 0 that runs no step is refused, as diffusers does:
        it would return the input unchanged."""
        strength = check_number(strength, "strength", 0.0, 1.0)
        run.check_steps(steps)
        if strength == 0:
            return len(run.timesteps(steps))
        start = steps - min(int(steps * strength), steps)
        if start >= steps:
            least = math.ceil(1e4 / steps) / 1e4   # rounded up: a shown 0.333333 of 3 steps would run none
            raise InputError(f"strength {strength:g}: expected it to run at least one of the {steps} steps "
                             f"(strength x steps >= 1), found {steps * strength:g}: give a strength of at least "
                             f"{least:g}, or more steps")
        return start

    def _inpaint(self, image, mask, steps, sampler, guidance_scale, labels, seed, eta, callback, feeds=None) -> np.ndarray:
        guidance_scale = self._guidance(guidance_scale, labels)
        images = self._images(image)
        pixel_mask = broadcast_mask(mask, images.shape)
        x0 = self.to_space(images)
        keep = 1.0 - self.space_mask(pixel_mask)
        n = len(x0)
        rng = make_rng(seed)
        run = self.make_sampler(sampler, eta)
        last = len(run.timesteps(steps)) - 1   # PNDM calls the model more often than `steps`
        each_row = step_noise(rng, n)   # the sampler's and the known pixels' noise at every step

        def paste_known(i: int, x: np.ndarray) -> np.ndarray:
            if i == last:
                known = x0
            else:
                known = run.noised(x0, each_row.standard_normal(x0.shape, dtype=np.float32), steps, i + 1)
            return (keep * known + (1 - keep) * x).astype(np.float32)

        model_fn = self.conditioned_denoiser(labels, n, guidance_scale, feeds)
        x_T = rng.standard_normal(x0.shape, dtype=np.float32)
        with _warnings_left_to_finished():
            x = run.sample(model_fn, x_T, steps, rng=each_row, callback=callback, after_step=paste_known)
        generated = self._finished(x, guidance_scale, run.name, feeds)
        # the known pixels exactly as given (in pixel space this changes nothing; a decoder's are near, not equal)
        return ((1 - pixel_mask) * images + pixel_mask * generated).astype(np.float32)

    def _guidance(self, guidance_scale, labels) -> float:
        """The guidance scale of a call: DEFAULT_GUIDANCE where none is given, 1.0 (off) for
        unlabelled samples, which are unconditional (an error names the scale a sample ran at). One
        given without labels is refused (unless 1.0), as the CLI refuses --guidance without --label:
        the scale would do nothing."""
        if guidance_scale is None:
            return DEFAULT_GUIDANCE if labels is not None else 1.0
        scale = check_number(guidance_scale, "guidance_scale", -MAX_GUIDANCE, MAX_GUIDANCE)
        if labels is None and scale != 1.0:
            raise InputError(f"guidance_scale {scale:g}: expected with labels (classifier-free guidance steers "
                             "toward a class; samples without labels are unconditional, so it would do nothing), "
                             "found labels=None")
        return scale

    def _finished(self, x: np.ndarray, guidance_scale: float, sampler: str, feeds: dict | None = None,
                  noise: np.ndarray | None = None) -> np.ndarray:
        """The sampled space -> images, refused if the loop produced NaN or Inf, naming the
        settings that could have: the caller's own starting noise and conditioning scale too."""
        cause = f"sampler {sampler!r}, guidance_scale {guidance_scale:g}"
        if feeds and "conditioning_scale" in feeds:
            cause += f", conditioning_scale up to {float(np.abs(feeds['conditioning_scale']).max()):g}"
        reach = float(np.abs(noise).max()) if noise is not None and noise.size else 0.0
        if reach > ORDINARY_NOISE:   # named where it is the likely cause, not for ordinary draws
            cause += f", the given noise reaching {reach:.3g} in magnitude (standard normal expected)"
        return finite_result(self.to_images(finite_result(x, "sample", cause)), "images", cause)

    def _images(self, image, what: str = "image") -> np.ndarray:
        """Pictures [n, C, H, W] in [0, 1], named in an error as the caller's argument (img2img's `image`)."""
        return check_range(as_float_array(image, what, (None, *self.image_shape)), what, 0, 1)


class RowGenerators:
    """Several calls' generators as one, for a merged batch: a draw of shape [N, ...] is each
    call's own draw for its rows, in order, so every call sees the numbers it would alone."""

    def __init__(self, generators: list[np.random.Generator], counts: list[int]):
        self.generators, self.counts = generators, counts

    def standard_normal(self, shape, dtype=np.float64) -> np.ndarray:
        if shape[0] != sum(self.counts):
            raise ValueError(f"expected a draw of {sum(self.counts)} rows, found {shape[0]}")
        return np.concatenate([g.standard_normal((n, *shape[1:]), dtype=dtype)
                               for g, n in zip(self.generators, self.counts)])

    def per_row(self) -> RowGenerators:
        """A generator of each row's own, spawned from its call's (Generator.spawn: child r is the same
        whatever the count), for the noise drawn at every step: drawn as one [N, ...] array from
        one generator, a row's noise would depend on how many rows are beside it."""
        return RowGenerators([child for g, n in zip(self.generators, self.counts) for child in g.spawn(n)],
                             [1] * sum(self.counts))


def step_noise(rng: np.random.Generator | RowGenerators, n: int) -> RowGenerators:
    """The source of the noise a sampling loop draws after its first: each row's own (RowGenerators.per_row),
    so that a seed gives row r the same image at any n, as the first noise (drawn row by row) already does."""
    return (rng if isinstance(rng, RowGenerators) else RowGenerators([rng], [n])).per_row()


def _warnings_left_to_finished():
    """numpy's warnings off for a sampling loop: a NaN or Inf it reaches is refused by _finished,
    naming the settings that could have made it, and numpy's RuntimeWarnings before that error
    would only say where in the arithmetic it first showed."""
    return np.errstate(invalid="ignore", over="ignore", divide="ignore")


def _to_unit(x: np.ndarray) -> np.ndarray:
    """Model space [-1, 1] -> images in [0, 1]."""
    return np.clip((x + 1) * 0.5, 0.0, 1.0).astype(np.float32)
