"""Diffusion samplers in numpy, step for step the same as diffusers' schedulers of the same name.

A sampler is built from plain values (`make_sampler`) and drives a model function
`model_fn(x, t) -> prediction`, where `t` holds one timestep per batch item; so the samplers
are testable without a network and the same on every backend.

    sampler = make_sampler("dpmpp-2m", beta_schedule="linear", prediction_type="epsilon")
    sampler.timesteps(20)                      # the timesteps the loop will visit
    x0 = sampler.sample(model_fn, x_T, 20)     # x_T: standard normal noise
    x0 = sampler.denoise(model_fn, sampler.noised(image, noise, 20, 8), 20, start=8)   # img2img

| name      | diffusers class                          | default spacing | random? |
|-----------|------------------------------------------|-----------------|---------|
| ddpm      | DDPMScheduler (ancestral)                | leading         | yes     |
| ddim      | DDIMScheduler                            | leading         | eta > 0 |
| dpmpp-2m  | DPMSolverMultistepScheduler (2nd order)  | linspace        | no      |
| euler     | EulerDiscreteScheduler                   | linspace        | no      |
| euler-a   | EulerAncestralDiscreteScheduler          | linspace        | yes     |
| pndm      | PNDMScheduler (Runge-Kutta, then PLMS)   | leading         | no      |
| lms       | LMSDiscreteScheduler (4th order)         | linspace        | no      |

PNDM calls the model more often than `steps` (its warm-up repeats timesteps): `timesteps(steps)`
lists every call, as diffusers' `scheduler.timesteps` does.

Runtime code: numpy only.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..errors import ConfigError, EdgegenWarning, InputError, not_one_of, warn_caller
from .pipeline import check_callback

ModelFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
# callback(step_index, timestep, x) is called after every step, for progress or previews.
Callback = Callable[[int, float, np.ndarray], None]
# after_step(step_index, x) -> x may change the sample between steps (inpainting does).
AfterStep = Callable[[int, np.ndarray], np.ndarray]

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")


def make_betas(beta_schedule: str, num_train_timesteps: int, beta_start: float, beta_end: float) -> np.ndarray:
    """The training noise schedule, as diffusers builds it."""
    if beta_schedule == "linear":
        return np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float64)
    if beta_schedule == "scaled_linear":  # the latent-diffusion schedule
        return np.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=np.float64) ** 2
    if beta_schedule == "squaredcos_cap_v2":  # GLIDE's cosine schedule, betas capped at 0.999

        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        n = num_train_timesteps
        return np.array([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)])
    raise ConfigError(f"beta_schedule: expected one of {', '.join(BETA_SCHEDULES)}, found {beta_schedule!r}")


MIN_ALPHA_BAR = 1e-12   # the cosine schedule ends near 1e-9; below this the samplers' 1/sqrt(alpha_bar) overflow


def schedule_problems(beta_schedule: str, num_train_timesteps: int, beta_start: float, beta_end: float) -> list[str]:
    """Why a training noise schedule cannot be sampled: betas outside (0, 1), or a cumulative
    alpha that underflows float32 (its 1 / sqrt turns the sample to Inf and NaN)."""
    if beta_schedule not in BETA_SCHEDULES or not isinstance(num_train_timesteps, int) or num_train_timesteps < 2:
        return []   # named by the checks of those fields
    betas = make_betas(beta_schedule, num_train_timesteps, beta_start, beta_end).astype(np.float32)
    if not (np.isfinite(betas).all() and (betas > 0).all() and (betas < 1).all()):
        return [f"{beta_schedule} beta schedule from {beta_start} to {beta_end}: expected every beta in (0, 1), "
                f"found {float(betas.min()):.3g} to {float(betas.max()):.3g}"]
    alpha_bar = np.cumprod((np.float32(1.0) - betas).astype(np.float64)).astype(np.float32)
    if alpha_bar[-1] < MIN_ALPHA_BAR:
        step = int(np.argmax(alpha_bar < MIN_ALPHA_BAR))
        return [f"{beta_schedule} beta schedule from {beta_start} to {beta_end} over {num_train_timesteps} steps: "
                f"expected the cumulative alpha to stay above {MIN_ALPHA_BAR:g}, found {float(alpha_bar[-1]):.3g} "
                f"(below from timestep {step}; a smaller beta_end or fewer steps)"]
    return []


def _of_the_kind_of(value, default) -> bool:
    """A sampler option's value is of its default's kind: a bool, a finite number, a string."""
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, type(default))


class Sampler:
    """What every sampler shares: the schedule, the options, the loop."""

    name = ""
    default_spacing = "leading"
    options: dict = {}          # the sampler's own options and their defaults
    stochastic = False
    # whether a timestep past the schedule's end fails its steps (arrays read at it; a division by
    # 0): steps_offset may not move one there. Euler interpolates its sigmas, clamped, as diffusers
    past_schedule_fails = True

    def __init__(self, num_train_timesteps: int = 1000, beta_schedule: str = "linear", beta_start: float = 0.0001,
                 beta_end: float = 0.02, prediction_type: str = "epsilon", timestep_spacing: str | None = None,
                 steps_offset: int = 0, **options):
        if prediction_type not in PREDICTION_TYPES:
            raise ConfigError(f"prediction_type: expected one of {', '.join(PREDICTION_TYPES)}, found {prediction_type!r}")
        problems = self.settings_problems({**options, "timestep_spacing": timestep_spacing, "steps_offset": steps_offset})
        if problems:
            raise ConfigError(problems[0])
        spacing = timestep_spacing or self.default_spacing
        if not isinstance(num_train_timesteps, int) or num_train_timesteps < 2:
            raise ConfigError(f"num_train_timesteps: expected an integer >= 2, found {num_train_timesteps!r}")
        if steps_offset >= num_train_timesteps:   # every timestep past the schedule's end
            raise ConfigError(f"steps_offset: expected less than num_train_timesteps ({num_train_timesteps}), found "
                              f"{steps_offset}")
        problems = schedule_problems(beta_schedule, num_train_timesteps, beta_start, beta_end)
        if problems:
            raise ConfigError(problems[0])
        self.num_train_timesteps = num_train_timesteps
        self.beta_schedule = beta_schedule
        self.prediction_type = prediction_type
        self.timestep_spacing = spacing
        self.steps_offset = steps_offset
        self.config = {**self.options, **options}
        # float32, as diffusers keeps them (torch.cumprod of float32 accumulates in float64):
        # with the cosine schedule the last alphas_cumprod is ~1e-9 and its rounding moves
        # the first sigma (~1e4) enough to show in the result.
        self.betas = make_betas(beta_schedule, num_train_timesteps, beta_start, beta_end).astype(np.float32)
        alphas = (np.float32(1.0) - self.betas).astype(np.float64)
        self.alphas_cumprod32 = np.cumprod(alphas).astype(np.float32)
        self.alphas_cumprod = self.alphas_cumprod32.astype(np.float64)

    @classmethod
    def settings_problems(cls, settings: dict) -> list[str]:
        """What this sampler cannot take among `settings` (its options, timestep_spacing and
        steps_offset; None: the default): a name it lacks, a value not of its default's kind."""
        shared = ("timestep_spacing", "steps_offset")
        options = {k: v for k, v in settings.items() if k not in shared}
        problems = []
        unknown = sorted(set(options) - set(cls.options))
        if unknown:
            problems.append(f"sampler {cls.name!r}: expected options among {sorted(cls.options) or 'none'}, found {unknown}")
        for name, value in options.items():
            if name in cls.options and not _of_the_kind_of(value, cls.options[name]):
                problems.append(f"sampler {cls.name!r} option {name!r}: expected a {type(cls.options[name]).__name__} "
                                f"like its default {cls.options[name]!r}, found {value!r}")
            elif name == "clip_sample_range" and options.get("clip_sample", cls.options.get("clip_sample")) and \
                    not 0 < value < float("inf"):   # 0 or less, clipping: every image black
                problems.append(f"sampler {cls.name!r} option 'clip_sample_range': expected a positive number (the "
                                f"largest |x0| kept), found {value!r}")
        spacing = settings.get("timestep_spacing")
        if spacing is not None and spacing not in TIMESTEP_SPACINGS:
            problems.append(f"timestep_spacing: expected one of {', '.join(TIMESTEP_SPACINGS)}, found {spacing!r}")
        offset = settings.get("steps_offset", 0)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            problems.append(f"steps_offset: expected an integer of 0 or more, found {offset!r}")
        return problems

    def _ve_sigmas(self) -> np.ndarray:
        """sqrt((1 - alpha_bar) / alpha_bar) per training timestep, in float32 as diffusers."""
        a = self.alphas_cumprod32
        return ((np.float32(1.0) - a) / a) ** np.float32(0.5)

    # -- the schedule a run visits ------------------------------------------------------------

    def check_steps(self, steps: int) -> None:
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= self.num_train_timesteps:
            raise ConfigError(f"steps: expected an integer from 1 to {self.num_train_timesteps}, found {steps!r}")

    def timesteps(self, steps: int) -> np.ndarray:
        """The timesteps the loop visits, highest first (DDIM/DDPM spacing rules)."""
        self.check_steps(steps)
        T = self.num_train_timesteps
        if self.timestep_spacing == "linspace":
            return np.linspace(0, T - 1, steps).round()[::-1].astype(np.int64)
        if self.timestep_spacing == "leading":
            return self._offset((np.arange(0, steps) * (T // steps)).round()[::-1].astype(np.int64), steps)
        return np.round(np.arange(T, 0, -T / steps)).astype(np.int64) - 1

    def _offset(self, timesteps: np.ndarray, steps: int) -> np.ndarray:
        """Leading spacing's timesteps moved by steps_offset, or ConfigError where that moves the
        first past the schedule (diffusers indexes past its arrays there)."""
        if self.past_schedule_fails and timesteps[0] + self.steps_offset >= self.num_train_timesteps:
            raise ConfigError(f"steps: with steps_offset {self.steps_offset}, {steps} steps of leading spacing start at "
                              f"timestep {timesteps[0] + self.steps_offset}, past the {self.num_train_timesteps}-step "
                              f"schedule: expected fewer steps")
        return timesteps + self.steps_offset

    def init_noise_sigma(self, steps: int) -> float:
        """How much x_T (standard normal) is scaled before the first step."""
        return 1.0

    # -- the loop ------------------------------------------------------------------------------

    def sample(self, model_fn: ModelFn, x_T: np.ndarray, steps: int, rng: np.random.Generator | None = None,
               callback: Callback | None = None, after_step: AfterStep | None = None) -> np.ndarray:
        """Generate from standard normal noise x_T (scaled here by `init_noise_sigma`)."""
        self.check_steps(steps)
        self._warn_if_it_starts_low(steps)
        x = np.asarray(x_T, dtype=np.float32) * np.float32(self.init_noise_sigma(steps))  # float32, as diffusers
        return self.denoise(model_fn, x, steps, 0, rng, callback, after_step)

    def _warn_if_it_starts_low(self, steps: int) -> None:
        """A schedule whose first timestep lies in the lower half (1 step of linspace or leading
        spacing visits timestep 0 only) leaves pure noise all but unremoved: diffusers returns the
        same, without a word; a preview at --steps 1 is an obvious thing to try."""
        first = int(np.max(self.timesteps(steps)))
        if first < self.num_train_timesteps // 2:
            warn_caller(f"steps={steps}: sampler {self.name!r} ({self.timestep_spacing} spacing) starts from pure noise "
                        f"at timestep {first} of {self.num_train_timesteps}, where the model expects almost clean "
                        f"images, so the result stays mostly noise: give more steps", EdgegenWarning)

    def denoise(self, model_fn: ModelFn, x: np.ndarray, steps: int, start: int = 0,
                rng: np.random.Generator | None = None, callback: Callback | None = None,
                after_step: AfterStep | None = None) -> np.ndarray:
        """Run steps `start`..end of a `steps`-step schedule from x, already at step `start`'s
        noise level (from `sample`, or from `noised()` for img2img and inpainting)."""
        if self.stochastic and rng is None:
            raise ConfigError(f"sampler {self.name!r} draws noise at every step: expected an rng (np.random.Generator), found None")
        check_callback(callback, "(step, timestep, x)")
        timesteps = self.timesteps(steps)
        if not 0 <= start < len(timesteps):
            raise ConfigError(f"start: expected a step index from 0 to {len(timesteps) - 1}, found {start}")
        state = self._begin(steps, timesteps)
        x = np.asarray(x, dtype=np.float32)
        batch = np.empty(len(x), dtype=np.float32)
        for i in range(start, len(timesteps)):
            t = timesteps[i]
            batch.fill(t)
            prediction = np.asarray(model_fn(self.scale_model_input(x, state, i), batch.copy()), dtype=np.float32)
            if prediction.shape != x.shape:   # numpy would broadcast one row, or one number, over the batch
                raise InputError(f"model_fn at timestep {t:g}: expected a prediction shaped as x, {list(x.shape)}, "
                                 f"found {list(prediction.shape)}")
            x = self._step(state, i, t, x, prediction, rng).astype(np.float32, copy=False)
            if after_step is not None:
                x = after_step(i, x)
            if callback is not None:
                callback(i, float(t), x)
        return x

    def scale_model_input(self, x: np.ndarray, state: dict, i: int) -> np.ndarray:
        return x

    def _begin(self, steps: int, timesteps: np.ndarray) -> dict:
        return {"timesteps": timesteps}

    def _step(self, state: dict, i: int, t, x: np.ndarray, prediction: np.ndarray, rng) -> np.ndarray:
        raise NotImplementedError

    def noised(self, x0: np.ndarray, noise: np.ndarray, steps: int, index: int) -> np.ndarray:
        """x0 noised to the level of step `index` of a `steps`-step run, in this sampler's
        own parameterization: what `denoise(..., start=index)` expects (img2img, inpainting)."""
        t = int(self.timesteps(steps)[index])
        a = self.alphas_cumprod[t]
        return (np.sqrt(a) * x0 + np.sqrt(1 - a) * noise).astype(np.float32)

    # -- shared algebra ------------------------------------------------------------------------

    def _x0_and_eps(self, x: np.ndarray, prediction: np.ndarray, a, b) -> tuple[np.ndarray, np.ndarray]:
        """The predicted clean sample and noise where x = a * x0 + b * eps (VP: a^2 + b^2 = 1)."""
        if self.prediction_type == "epsilon":
            return (x - b * prediction) / a, prediction
        if self.prediction_type == "sample":
            return prediction, (x - a * prediction) / b
        return a * x - b * prediction, a * prediction + b * x  # v_prediction

    def describe(self) -> dict:
        return {"name": self.name, "num_train_timesteps": self.num_train_timesteps, "beta_schedule": self.beta_schedule,
                "prediction_type": self.prediction_type, "timestep_spacing": self.timestep_spacing, **self.config}


class DDPMSampler(Sampler):
    """Ancestral sampling (Ho et al., 2020): DDPMScheduler with variance_type fixed_small or fixed_large."""

    name = "ddpm"
    default_spacing = "leading"
    options = {"clip_sample": True, "clip_sample_range": 1.0, "variance_type": "fixed_small"}
    stochastic = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.config["variance_type"] not in ("fixed_small", "fixed_large"):
            raise ConfigError(f"variance_type: expected fixed_small or fixed_large, found {self.config['variance_type']!r}")

    def _step(self, state, i, t, x, prediction, rng):
        timesteps = state["timesteps"]
        prev_t = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else 1.0
        beta_t = 1 - a_t / a_prev
        x0, _ = self._x0_and_eps(x, prediction, np.sqrt(a_t), np.sqrt(1 - a_t))
        if self.config["clip_sample"]:
            x0 = np.clip(x0, -self.config["clip_sample_range"], self.config["clip_sample_range"])
        mean = (np.sqrt(a_prev) * beta_t / (1 - a_t)) * x0 + (np.sqrt(1 - beta_t) * (1 - a_prev) / (1 - a_t)) * x
        if t == 0:
            return mean
        if self.config["variance_type"] == "fixed_small":
            variance = max((1 - a_prev) / (1 - a_t) * beta_t, 1e-20)
        else:
            variance = beta_t
        return mean + np.sqrt(variance) * rng.standard_normal(x.shape, dtype=np.float32)


class DDIMSampler(Sampler):
    """DDIM (Song et al., 2021): deterministic at eta=0, DDPM-like noise at eta=1."""

    name = "ddim"
    default_spacing = "leading"
    options = {"eta": 0.0, "clip_sample": True, "clip_sample_range": 1.0, "set_alpha_to_one": True,
               "use_clipped_model_output": False}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.stochastic = self.config["eta"] > 0

    def _step(self, state, i, t, x, prediction, rng):
        # As diffusers: the previous timestep is one stride back, whatever the spacing. Float32
        # scalars in diffusers' order of operations: with its float64 equivalent the latents of
        # a guided Stable Diffusion run drifted 2e-4 from diffusers' in 20 steps, and a VAE
        # decoder magnifies that (see DPMSolverPP2MSampler._begin).
        prev_t = t - self.num_train_timesteps // len(state["timesteps"])
        one, half = np.float32(1.0), np.float32(0.5)
        alphas = self.alphas_cumprod32
        a_t = alphas[t]
        a_prev = alphas[prev_t] if prev_t >= 0 else (one if self.config["set_alpha_to_one"] else alphas[0])
        b_t = one - a_t
        if self.prediction_type == "epsilon":
            x0, eps = (x - b_t**half * prediction) / a_t**half, prediction
        elif self.prediction_type == "sample":
            x0 = prediction
            eps = (x - a_t**half * x0) / b_t**half
        else:   # v_prediction
            x0, eps = a_t**half * x - b_t**half * prediction, a_t**half * prediction + b_t**half * x
        if self.config["clip_sample"]:
            limit = np.float32(self.config["clip_sample_range"])
            x0 = np.clip(x0, -limit, limit)
        if self.config["use_clipped_model_output"]:
            # the noise estimate consistent with the (clipped) x0: diffusers' step argument
            eps = (x - a_t**half * x0) / b_t**half
        variance = ((one - a_prev) / b_t) * (one - a_t / a_prev)
        std = np.float32(self.config["eta"]) * variance**half
        out = a_prev**half * x0 + (one - a_prev - std**2) ** half * eps
        if self.config["eta"] > 0:
            out = out + std * rng.standard_normal(x.shape, dtype=np.float32)
        return out


class DPMSolverPP2MSampler(Sampler):
    """DPM-Solver++(2M) (Lu et al., 2022): multistep, second order, data prediction.

    As DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2).
    """

    name = "dpmpp-2m"
    default_spacing = "linspace"
    options = {"solver_type": "midpoint", "lower_order_final": True, "euler_at_final": False, "final_sigmas_type": "zero"}

    def timesteps(self, steps: int) -> np.ndarray:
        visited = self._spaced(steps)
        if len(np.unique(visited)) < len(visited):
            # two equal timesteps make a step of no length, which the second-order update divides by
            most = next(n for n in range(steps - 1, 0, -1) if len(np.unique(self._spaced(n))) == n)
            raise ConfigError(f"steps: expected at most {most} for sampler 'dpmpp-2m' with {self.timestep_spacing} "
                              f"spacing (more repeat timesteps of the {self.num_train_timesteps}-step schedule), "
                              f"found {steps}")
        return visited

    def _spaced(self, steps: int) -> np.ndarray:
        self.check_steps(steps)
        T = self.num_train_timesteps
        if self.timestep_spacing == "linspace":
            return np.linspace(0, T - 1, steps + 1).round()[::-1][:-1].astype(np.int64)
        if self.timestep_spacing == "leading":
            ratio = T // (steps + 1)
            return self._offset((np.arange(0, steps + 1) * ratio).round()[::-1][:-1].astype(np.int64), steps)
        return np.arange(T, 0, -T / steps).round().astype(np.int64) - 1

    def _begin(self, steps, timesteps):
        ve_sigmas = self._ve_sigmas()
        sigmas = np.interp(timesteps, np.arange(len(ve_sigmas)), ve_sigmas)
        last = ve_sigmas[0] if self.config["final_sigmas_type"] == "sigma_min" else 0.0
        # float32 scalars, in diffusers' order of operations: with the cosine schedule the
        # first sigma is ~1e4 and float32 rounding there is visible in the result, so
        # matching diffusers means rounding where it rounds.
        sigmas = np.concatenate([sigmas, [last]]).astype(np.float32)
        one = np.float32(1.0)
        alphas = one / (sigmas**2 + one) ** np.float32(0.5)
        with np.errstate(divide="ignore"):  # sigma 0 at the end: lambda = +inf, exp(-h) = 0, exact
            lambdas = np.log(alphas) - np.log(sigmas * alphas)
        return {"timesteps": timesteps, "alphas": alphas, "sigmas": sigmas * alphas, "lambdas": lambdas,
                "previous": None}

    def _step(self, state, i, t, x, prediction, rng):
        n = len(state["timesteps"])
        x0 = self._x0_and_eps(x, prediction, state["alphas"][i], state["sigmas"][i])[0]
        cfg = self.config
        short = cfg["lower_order_final"] and n < 15
        # diffusers' lower_order_second only concerns third order: a second-order solver
        # drops to first order at the first step and (by default) the last.
        first_order = (state["previous"] is None
                       or (i == n - 1 and (cfg["euler_at_final"] or short or cfg["final_sigmas_type"] == "zero")))
        alpha_t, sigma_t, sigma_s = state["alphas"][i + 1], state["sigmas"][i + 1], state["sigmas"][i]
        h = state["lambdas"][i + 1] - state["lambdas"][i]
        one = np.float32(1.0)
        coef = alpha_t * (np.exp(-h) - one)
        if first_order:
            out = (sigma_t / sigma_s) * x - coef * x0
        else:
            h_prev = state["lambdas"][i] - state["lambdas"][i - 1]
            d1 = (one / (h_prev / h)) * (x0 - state["previous"])
            if cfg["solver_type"] == "midpoint":
                out = (sigma_t / sigma_s) * x - coef * x0 - np.float32(0.5) * coef * d1
            else:  # heun
                out = (sigma_t / sigma_s) * x - coef * x0 + (alpha_t * ((np.exp(-h) - one) / h + one)) * d1
        state["previous"] = x0
        return out


class EulerSampler(Sampler):
    """Euler's method on the probability-flow ODE in sigma space (Karras et al., 2022),
    as EulerDiscreteScheduler; its timesteps are fractional with linspace spacing."""

    name = "euler"
    default_spacing = "linspace"
    options = {}
    past_schedule_fails = False

    def timesteps(self, steps: int) -> np.ndarray:
        if self.timestep_spacing == "linspace":  # not rounded: fractional timesteps, as diffusers
            self.check_steps(steps)
            return np.linspace(0, self.num_train_timesteps - 1, steps, dtype=np.float32)[::-1].copy()
        return super().timesteps(steps).astype(np.float32)

    def _sigmas(self, timesteps: np.ndarray) -> np.ndarray:
        ve_sigmas = self._ve_sigmas()
        # float32 as diffusers keeps them (see DPMSolverPP2MSampler._begin)
        return np.concatenate([np.interp(timesteps, np.arange(len(ve_sigmas)), ve_sigmas), [0.0]]).astype(np.float32)

    def init_noise_sigma(self, steps: int) -> float:
        top = float(self._sigmas(self.timesteps(steps)).max())
        return top if self.timestep_spacing in ("linspace", "trailing") else math.sqrt(top**2 + 1)

    def _begin(self, steps, timesteps):
        return {"timesteps": timesteps, "sigmas": self._sigmas(timesteps)}

    def scale_model_input(self, x, state, i):
        sigma = state["sigmas"][i]
        return x / (sigma**2 + np.float32(1.0)) ** np.float32(0.5)

    def _x0(self, x, prediction, sigma):
        # float32 scalars in diffusers' order of operations (see DPMSolverPP2MSampler._begin)
        if self.prediction_type == "epsilon":
            return x - sigma * prediction
        if self.prediction_type == "sample":
            return prediction
        one = np.float32(1.0)
        return prediction * (-sigma / (sigma**2 + one) ** np.float32(0.5)) + (x / (sigma**2 + one))

    def _step(self, state, i, t, x, prediction, rng):
        sigma, sigma_next = state["sigmas"][i], state["sigmas"][i + 1]
        derivative = (x - self._x0(x, prediction, sigma)) / sigma
        return x + derivative * (sigma_next - sigma)

    def noised(self, x0, noise, steps, index):
        sigma = self._sigmas(self.timesteps(steps))[index]
        return (x0 + sigma * noise).astype(np.float32)


class EulerAncestralSampler(EulerSampler):
    """Euler steps to sigma_down plus fresh noise up to sigma_next, as EulerAncestralDiscreteScheduler."""

    name = "euler-a"
    stochastic = True

    def _step(self, state, i, t, x, prediction, rng):
        sigma, sigma_next = state["sigmas"][i], state["sigmas"][i + 1]
        sigma_up = np.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2)
        sigma_down = np.sqrt(sigma_next**2 - sigma_up**2)
        derivative = (x - self._x0(x, prediction, sigma)) / sigma
        out = x + derivative * (sigma_down - sigma)
        return out + sigma_up * rng.standard_normal(x.shape, dtype=np.float32)


class LMSSampler(EulerSampler):
    """Linear multistep (4th order) in sigma space, as LMSDiscreteScheduler: each step integrates
    the Lagrange polynomial through the last derivatives. The polynomial is integrated exactly
    here, where diffusers calls scipy's quad (exact to rounding for these degrees)."""

    name = "lms"
    ORDER = 4   # diffusers' step() default, which its pipelines use
    past_schedule_fails = True   # two clamped sigmas alike: its polynomial divides by their difference

    def _begin(self, steps, timesteps):
        return {**super()._begin(steps, timesteps), "derivatives": []}

    def _step(self, state, i, t, x, prediction, rng):
        sigmas = state["sigmas"].astype(np.float64)
        derivative = (x - self._x0(x, prediction, state["sigmas"][i])) / state["sigmas"][i]
        derivatives = state["derivatives"]
        derivatives.append(derivative)
        del derivatives[:-self.ORDER]
        # the derivatives held (diffusers takes min(step index + 1, 4): the same from the first
        # step; part-way in, for img2img, this does not reach for derivatives never computed)
        order = len(derivatives)
        out = x.astype(np.float64)
        for k, d in zip(range(order), reversed(derivatives)):
            out = out + self._coefficient(sigmas, i, order, k) * d
        return out

    @staticmethod
    def _coefficient(sigmas: np.ndarray, i: int, order: int, k: int) -> float:
        """The integral from sigma_i to sigma_i+1 of the Lagrange basis polynomial of point i - k."""
        basis = np.polynomial.Polynomial([1.0])
        for j in range(order):
            if j != k:
                basis = basis * np.polynomial.Polynomial([-sigmas[i - j], 1.0]) / (sigmas[i - k] - sigmas[i - j])
        integral = basis.integ()
        return float(integral(sigmas[i + 1]) - integral(sigmas[i]))


SIXTH, THIRD = np.float32(1 / 6), np.float32(1 / 3)   # as torch rounds a Python float times a float32 tensor


class PNDMSampler(Sampler):
    """Pseudo numerical methods (Liu et al., 2022), as PNDMScheduler: three Runge-Kutta steps of
    four calls each, then linear multistep (PLMS); with skip_prk_steps (Stable Diffusion's
    setting) PLMS from the start, its second call at the first timestep again."""

    name = "pndm"
    default_spacing = "leading"
    ORDER = 4   # diffusers' pndm_order: the warm-up's timesteps
    options = {"skip_prk_steps": False, "set_alpha_to_one": False}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.prediction_type == "sample":
            raise ConfigError("sampler 'pndm': expected prediction_type epsilon or v_prediction (as diffusers' "
                              "PNDMScheduler), found 'sample'; use ddim or euler for a model that predicts the sample")

    def _ascending(self, steps: int) -> np.ndarray:
        return super().timesteps(steps)[::-1]

    def _prk_timesteps(self, steps: int) -> np.ndarray:
        if self.config["skip_prk_steps"]:
            return np.array([], np.int64)
        if steps < self.ORDER:
            others = ", ".join(name for name in SAMPLERS if name != "pndm")
            raise ConfigError(f"steps: sampler 'pndm' with its Runge-Kutta warm-up expected at least {self.ORDER}, found "
                              f"{steps}: give more steps, or choose another sampler ({others})")
        half = self.num_train_timesteps // steps // 2
        prk = np.repeat(self._ascending(steps)[-self.ORDER:], 2) + np.tile(np.array([0, half]), self.ORDER)
        return np.repeat(prk[:-1], 2)[1:-1][::-1]

    def timesteps(self, steps: int) -> np.ndarray:
        ascending = self._ascending(steps)
        if self.config["skip_prk_steps"]:
            plms = np.concatenate([ascending[:-1], ascending[-2:-1], ascending[-1:]])[::-1]
        else:
            plms = ascending[:-3][::-1]
        return np.concatenate([self._prk_timesteps(steps), plms]).astype(np.int64)

    def denoise(self, model_fn, x, steps, start=0, rng=None, callback=None, after_step=None):
        if start and not self.config["skip_prk_steps"]:
            # the warm-up's four calls per step start from the top timestep: part-way in they
            # would step from the wrong sample (diffusers' PNDMScheduler does so silently)
            others = ", ".join(name for name in SAMPLERS if name != "pndm")
            raise ConfigError(f"sampler 'pndm' with its Runge-Kutta warm-up: expected to start from noise, found img2img "
                              f"starting part-way, at call {start}: choose another sampler ({others}), or, for a "
                              "pipeline imported from diffusers, set skip_prk_steps true in its "
                              "scheduler/scheduler_config.json and import it again (PNDM without the warm-up)")
        return super().denoise(model_fn, x, steps, start, rng, callback, after_step)

    def _begin(self, steps, timesteps):
        return {"timesteps": timesteps, "stride": self.num_train_timesteps // steps,
                "prk": self._prk_timesteps(steps), "counter": 0, "ets": [], "sum": 0.0, "start": None}

    def _step(self, state, i, t, x, prediction, rng):
        step = self._step_prk if state["counter"] < len(state["prk"]) else self._step_plms
        out = step(state, int(t), x, prediction)
        state["counter"] += 1
        return out

    def _step_prk(self, state, t, x, eps):
        counter = state["counter"]
        prev_t = t - (0 if counter % 2 else state["stride"] // 2)
        t = int(state["prk"][counter // 4 * 4])
        phase = counter % 4
        if phase == 0:
            state["sum"] = state["sum"] + SIXTH * eps
            state["ets"].append(eps)
            state["start"] = x
        elif phase in (1, 2):
            state["sum"] = state["sum"] + THIRD * eps
        else:
            eps, state["sum"] = state["sum"] + SIXTH * eps, 0.0
        start = state["start"] if state["start"] is not None else x
        return self._previous(start, t, prev_t, eps)

    def _step_plms(self, state, t, x, eps):
        ets, stride = state["ets"], state["stride"]
        prev_t = t - stride
        if state["counter"] != 1:
            del ets[:-3]
            ets.append(eps)
        else:   # the second call, at the first timestep again: a Heun-like correction of the first
            prev_t, t = t, t + stride
        if len(ets) == 1 and state["counter"] == 0:
            state["start"] = x
        elif len(ets) == 1 and state["counter"] == 1:
            eps, x, state["start"] = (eps + ets[-1]) / 2, state["start"], None
        elif len(ets) == 2:
            eps = (3 * ets[-1] - ets[-2]) / 2
        elif len(ets) == 3:
            eps = (23 * ets[-1] - 16 * ets[-2] + 5 * ets[-3]) / 12
        else:
            eps = (55 * ets[-1] - 59 * ets[-2] + 37 * ets[-3] - 9 * ets[-4]) / 24
        return self._previous(x, t, prev_t, eps)

    def _previous(self, x, t, prev_t, prediction):
        """x at prev_t from x at t (the PNDM paper's formula 9), in float32 scalars in diffusers'
        order of operations: on the cosine schedule alpha_bar reaches 1e-9, the coefficients 1e4,
        and float32 rounding there shows in the result (see DPMSolverPP2MSampler._begin)."""
        one = np.float32(1.0)
        alphas = self.alphas_cumprod32
        a_t = alphas[t]
        a_prev = alphas[prev_t] if prev_t >= 0 else (one if self.config["set_alpha_to_one"] else alphas[0])
        eps = prediction
        if self.prediction_type == "v_prediction":
            eps = a_t ** np.float32(0.5) * prediction + (one - a_t) ** np.float32(0.5) * x
        denominator = a_t * (one - a_prev) ** np.float32(0.5) + (a_t * (one - a_t) * a_prev) ** np.float32(0.5)
        return (a_prev / a_t) ** np.float32(0.5) * x - (a_prev - a_t) * eps / denominator


SAMPLERS: dict[str, type[Sampler]] = {s.name: s for s in
                                      (DDPMSampler, DDIMSampler, DPMSolverPP2MSampler, EulerSampler, EulerAncestralSampler,
                                       PNDMSampler, LMSSampler)}


def make_sampler(name: str, num_train_timesteps: int = 1000, beta_schedule: str = "linear", beta_start: float = 0.0001,
                 beta_end: float = 0.02, prediction_type: str = "epsilon", timestep_spacing: str | None = None,
                 **options) -> Sampler:
    """A sampler by name ('ddpm', 'ddim', 'dpmpp-2m', 'euler', 'euler-a', 'pndm', 'lms') from plain values.

    timestep_spacing None takes the diffusers default of that scheduler."""
    if name not in SAMPLERS:
        raise ConfigError(not_one_of("sampler", name, SAMPLERS))
    return SAMPLERS[name](num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule, beta_start=beta_start,
                          beta_end=beta_end, prediction_type=prediction_type, timestep_spacing=timestep_spacing, **options)
