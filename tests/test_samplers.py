"""The numpy samplers against diffusers' schedulers, step for step."""

import itertools
import re
import warnings

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from edgegen.errors import ConfigError, InputError  # noqa: E402
from edgegen.runtimes.samplers import SAMPLERS, make_sampler  # noqa: E402

SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTIONS = ("epsilon", "v_prediction", "sample")
SPACINGS = ("leading", "trailing", "linspace")
DETERMINISTIC = {"ddim": diffusers.DDIMScheduler, "dpmpp-2m": diffusers.DPMSolverMultistepScheduler,
                 "euler": diffusers.EulerDiscreteScheduler}
MU, STD = 0.3, 0.5
W = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32) * 0.3


def schedule_kwargs(schedule):
    kwargs = {"beta_schedule": schedule}
    if schedule == "scaled_linear":  # latent diffusion's own values
        kwargs.update(beta_start=0.00085, beta_end=0.012)
    return kwargs


def make_model(alphas_cumprod, prediction_type):
    """A realistic model function: the optimal denoiser of Gaussian data N(MU, STD^2), plus a
    small nonlinearity, answering in the requested parameterization. Fractional timesteps
    (Euler) interpolate the schedule."""
    grid = np.arange(len(alphas_cumprod))

    def model_fn(x, t):
        a = np.interp(t, grid, alphas_cumprod)[:, None]
        sa, sb = np.sqrt(a), np.sqrt(1 - a)
        x0 = MU + a * STD**2 * (x - sa * MU) / ((a * STD**2 + 1 - a) * sa) + 0.05 * np.tanh(x @ W)
        eps = (x - sa * x0) / sb
        out = {"epsilon": eps, "sample": x0, "v_prediction": sa * eps - sb * x0}[prediction_type]
        return out.astype(np.float32)

    return model_fn


def diffusers_loop(scheduler, model_fn, x, timesteps):
    x = torch.from_numpy(x)
    for t in timesteps:
        model_input = scheduler.scale_model_input(x, t)
        out = model_fn(model_input.numpy(), np.full(len(x), float(t), np.float32))
        x = scheduler.step(torch.from_numpy(out), t, x).prev_sample
    return x.numpy()


def assert_same_sample(ours, ref):
    # 1e-4, relative to the sample's scale where it exceeds 1 (epsilon models on the cosine
    # schedule start from sigma ~1e4, where float32 alone carries that much)
    np.testing.assert_allclose(ours, ref, atol=1e-4 * max(1.0, float(np.abs(ref).max())), rtol=0)


X_T = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)


@pytest.mark.parametrize("name", DETERMINISTIC)
@pytest.mark.parametrize("schedule, prediction, spacing", list(itertools.product(SCHEDULES, PREDICTIONS, SPACINGS)))
def test_deterministic_samplers_equal_diffusers(name, schedule, prediction, spacing):
    kwargs = {**schedule_kwargs(schedule), "prediction_type": prediction, "timestep_spacing": spacing}
    for steps in (10, 20, 25):
        sampler = make_sampler(name, **kwargs)
        scheduler = DETERMINISTIC[name](**kwargs)
        scheduler.set_timesteps(steps)
        np.testing.assert_array_equal(sampler.timesteps(steps), scheduler.timesteps.numpy())
        model_fn = make_model(sampler.alphas_cumprod, prediction)
        x_T = X_T * np.float32(scheduler.init_noise_sigma)  # as diffusers' pipelines start
        ref = diffusers_loop(scheduler, model_fn, x_T, scheduler.timesteps)
        assert_same_sample(sampler.sample(model_fn, X_T, steps), ref)


MULTISTEP = {"pndm": diffusers.PNDMScheduler, "lms": diffusers.LMSDiscreteScheduler}


@pytest.mark.parametrize("name, options", [("pndm", {}), ("pndm", {"skip_prk_steps": True}),
                                           ("pndm", {"skip_prk_steps": True, "set_alpha_to_one": True, "steps_offset": 1}),
                                           ("lms", {})])
@pytest.mark.parametrize("schedule, prediction, spacing", list(itertools.product(SCHEDULES, PREDICTIONS, SPACINGS)))
def test_multistep_samplers_equal_diffusers(name, options, schedule, prediction, spacing):
    """PNDM (with and without its Runge-Kutta warm-up, as Stable Diffusion configures it) and LMS,
    call for call: the timesteps the loop visits and the sample after every call."""
    kwargs = {**schedule_kwargs(schedule), "prediction_type": prediction, "timestep_spacing": spacing, **options}
    if name == "pndm" and prediction == "sample":
        with pytest.raises(ConfigError, match="pndm': expected prediction_type epsilon or v_prediction"):
            make_sampler(name, **kwargs)
        return
    for steps in (4, 10, 25):
        sampler = make_sampler(name, **kwargs)
        scheduler = MULTISTEP[name](**kwargs)
        scheduler.set_timesteps(steps)
        np.testing.assert_array_equal(sampler.timesteps(steps), scheduler.timesteps.numpy())
        model_fn = make_model(sampler.alphas_cumprod, prediction)
        steps_seen = []
        ours = sampler.sample(model_fn, X_T, steps, callback=lambda i, t, x: steps_seen.append(x))
        x = torch.from_numpy(X_T) * scheduler.init_noise_sigma
        references = []
        for t in scheduler.timesteps:
            out = model_fn(scheduler.scale_model_input(x, t).numpy(), np.full(len(X_T), float(t), np.float32))
            x = scheduler.step(torch.from_numpy(out), t, x).prev_sample
            references.append(x.numpy())
        if name == "pndm" and not options and schedule == "squaredcos_cap_v2" and scheduler.timesteps[0] == 999:
            # The Runge-Kutta warm-up's half step from alpha_bar 2e-9 multiplies the sample by
            # ~2e4: a float32 ulp at the first call decides the rest (diffusers' own epsilon
            # samples grow to 1e4-1e7), so only the timesteps are compared here.
            continue
        for ours_at_step, reference in zip(steps_seen, references, strict=True):
            assert_same_sample(ours_at_step, reference)
        assert_same_sample(ours, x.numpy())


def test_dpm_solver_options():
    for options in ({"solver_type": "heun"}, {"lower_order_final": False}, {"euler_at_final": True},
                    {"final_sigmas_type": "sigma_min"}):
        sampler = make_sampler("dpmpp-2m", **options)
        scheduler = diffusers.DPMSolverMultistepScheduler(**options)
        scheduler.set_timesteps(12)
        model_fn = make_model(sampler.alphas_cumprod, "epsilon")
        assert_same_sample(sampler.sample(model_fn, X_T, 12), diffusers_loop(scheduler, model_fn, X_T, scheduler.timesteps))


class RecordingRng:
    """An rng whose draws are replayed into diffusers, so stochastic samplers can be compared."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.draws = []

    def standard_normal(self, shape, dtype=np.float32):
        draw = self.rng.standard_normal(shape, dtype=dtype)
        self.draws.append(draw)
        return draw


@pytest.mark.parametrize("name, cls, options, module", [
    ("ddpm", "DDPMScheduler", {}, "scheduling_ddpm"),
    ("ddpm", "DDPMScheduler", {"variance_type": "fixed_large"}, "scheduling_ddpm"),
    ("ddpm", "DDPMScheduler", {"timestep_spacing": "trailing", "beta_schedule": "squaredcos_cap_v2"}, "scheduling_ddpm"),
    ("ddpm", "DDPMScheduler", {"timestep_spacing": "linspace", "beta_schedule": "scaled_linear"}, "scheduling_ddpm"),
    ("euler-a", "EulerAncestralDiscreteScheduler", {"timestep_spacing": "leading"}, "scheduling_euler_ancestral_discrete"),
    ("ddim", "DDIMScheduler", {"eta": 1.0}, "scheduling_ddim"),
    ("ddim", "DDIMScheduler", {"eta": 0.3}, "scheduling_ddim"),
    ("ddim", "DDIMScheduler", {"eta": 0.3, "use_clipped_model_output": True}, "scheduling_ddim"),
    ("euler-a", "EulerAncestralDiscreteScheduler", {}, "scheduling_euler_ancestral_discrete"),
])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_stochastic_samplers_equal_diffusers_given_the_same_noise(name, cls, options, module, prediction, monkeypatch):
    sampler = make_sampler(name, prediction_type=prediction, **options)
    model_fn = make_model(sampler.alphas_cumprod, prediction)
    rng = RecordingRng(5)
    ours = sampler.sample(model_fn, X_T, 20, rng=rng)
    replay = [torch.from_numpy(d) for d in rng.draws]
    monkeypatch.setattr(f"diffusers.schedulers.{module}.randn_tensor", lambda *a, **k: replay.pop(0))
    step_arguments = ("eta", "use_clipped_model_output")  # diffusers takes these per step, not in the config
    scheduler = getattr(diffusers, cls)(prediction_type=prediction,
                                        **{k: v for k, v in options.items() if k not in step_arguments})
    step_kwargs = {k: v for k, v in options.items() if k in step_arguments}
    scheduler.set_timesteps(20)
    x = torch.from_numpy(X_T) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        out = model_fn(scheduler.scale_model_input(x, t).numpy(), np.full(len(X_T), float(t), np.float32))
        x = scheduler.step(torch.from_numpy(out), t, x, **step_kwargs).prev_sample
    assert not replay, "diffusers drew a different number of noise tensors"
    assert_same_sample(ours, x.numpy())
    np.testing.assert_array_equal(sampler.timesteps(20), scheduler.timesteps.numpy())


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_starting_part_way_matches_diffusers_img2img(name):
    """img2img: noise the image to step k (add_noise), then run the rest of the schedule."""
    steps, start = 20, 8
    sampler = make_sampler(name)
    scheduler = DETERMINISTIC[name]()
    scheduler.set_timesteps(steps)
    x0 = np.random.default_rng(2).uniform(-1, 1, (3, 4)).astype(np.float32)
    noise = np.random.default_rng(3).standard_normal((3, 4)).astype(np.float32)
    t_start = scheduler.timesteps[start:start + 1]
    ref_noised = scheduler.add_noise(torch.from_numpy(x0), torch.from_numpy(noise), t_start).numpy()
    noised = sampler.noised(x0, noise, steps, start)
    np.testing.assert_allclose(noised, ref_noised, atol=1e-5)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start)
    model_fn = make_model(sampler.alphas_cumprod, "epsilon")
    ref = diffusers_loop(scheduler, model_fn, ref_noised, scheduler.timesteps[start:])
    assert_same_sample(sampler.denoise(model_fn, noised, steps, start=start), ref)


def test_callback_and_after_step_see_every_step():
    sampler = make_sampler("ddim")
    seen = []
    model_fn = make_model(sampler.alphas_cumprod, "epsilon")
    sampler.sample(model_fn, X_T, 5, callback=lambda i, t, x: seen.append((i, t)))
    assert [i for i, _ in seen] == [0, 1, 2, 3, 4]
    assert [t for _, t in seen] == [float(t) for t in sampler.timesteps(5)]
    # what after_step returns is the sample the next step starts from
    pinned = sampler.sample(model_fn, X_T, 5, after_step=lambda i, x: np.full_like(x, 0.25) if i == 3 else x)
    expected = sampler.denoise(model_fn, np.full_like(X_T, 0.25), 5, start=4)
    np.testing.assert_array_equal(pinned, expected)


@pytest.mark.parametrize("call, message", [
    (lambda: make_sampler("plms"), "sampler 'plms': expected one of ddpm, ddim, dpmpp-2m, euler, euler-a, pndm, lms"),
    (lambda: make_sampler("pndm").timesteps(3), r"pndm' with its Runge-Kutta warm-up expected at least 4, found 3: give more steps, "
                                                r"or choose another sampler \(ddpm"),
    (lambda: make_sampler("pndm").denoise(lambda x, t: x, X_T, 10, start=3), r"expected to start from noise, found img2img starting part-way, at call 3: choose another sampler \(ddpm.*\), or, for a "
     r"pipeline imported from diffusers, set skip_prk_steps true in its scheduler/scheduler_config.json"),
    (lambda: make_sampler("ddim", beta_schedule="cosine"), "beta_schedule: expected one of"),
    (lambda: make_sampler("ddim", prediction_type="noise"), "prediction_type: expected one of"),
    (lambda: make_sampler("ddim", timestep_spacing="karras"), "timestep_spacing: expected one of"),
    (lambda: make_sampler("euler", eta=1.0), r"sampler 'euler': expected options among none, found \['eta'\]"),
    (lambda: make_sampler("ddim").timesteps(0), "steps: expected an integer from 1 to 1000, found 0"),
    (lambda: make_sampler("ddim").timesteps(1001), "found 1001"),
    # 1,000 steps of a 1,000-step schedule repeat a timestep: the second-order step would divide by 0
    (lambda: make_sampler("dpmpp-2m").timesteps(1000), r"steps: expected at most 999 for sampler 'dpmpp-2m' with "
                                                       r"linspace spacing \(more repeat timesteps of the 1000-step "
                                                       r"schedule\), found 1000"),
    (lambda: make_sampler("ddpm").sample(lambda x, t: x, X_T, 3), "expected an rng"),
    # each made every image black (clipped to [0, 0]), or indexed past the schedule mid-run
    (lambda: make_sampler("ddim", clip_sample_range=-1.0), r"sampler 'ddim' option 'clip_sample_range': expected a "
                                                           r"positive number \(the largest \|x0\| kept\), found -1.0"),
    (lambda: make_sampler("ddpm", clip_sample_range=0.0), "expected a positive number"),
    (lambda: make_sampler("ddim", steps_offset=1000), r"steps_offset: expected less than num_train_timesteps \(1000\), "
                                                      "found 1000"),
    (lambda: make_sampler("ddim", steps_offset=1).timesteps(1000), "steps: with steps_offset 1, 1000 steps of leading "
                                                                   "spacing start at timestep 1000, past the 1000-step "
                                                                   "schedule: expected fewer steps"),
    (lambda: make_sampler("dpmpp-2m", steps_offset=1, timestep_spacing="leading").timesteps(999),
     "999 steps of leading spacing start at timestep 1000"),
])
def test_sampler_errors(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


@pytest.mark.parametrize("wrong", [np.zeros(1), np.zeros((1, *X_T.shape[1:]))])
def test_a_prediction_not_shaped_as_x_is_refused_not_broadcast(wrong):
    """One number or one row for the batch: numpy broadcast it and returned a batch of the wrong
    sample (review 173)."""
    with pytest.raises(InputError, match=rf"model_fn at timestep 999: expected a prediction shaped as x, "
                                         rf"{re.escape(str(list(X_T.shape)))}, found {re.escape(str(list(wrong.shape)))}"):
        make_sampler("dpmpp-2m").sample(lambda x, t: wrong, X_T, 5)


def test_the_settings_refused_above_are_taken_where_they_do_no_harm():
    """A clip range with clipping off is never read; Euler interpolates its sigmas, clamped, as
    diffusers does, where the samplers that index by timestep fail one past the schedule."""
    assert make_sampler("ddim", clip_sample=False, clip_sample_range=0.0).config["clip_sample_range"] == 0.0
    timesteps = make_sampler("euler", steps_offset=1, timestep_spacing="leading").timesteps(1000)
    assert timesteps[0] == 1000 and np.isfinite(make_sampler("euler", steps_offset=1, timestep_spacing="leading")
                                                ._sigmas(timesteps)).all()


def test_every_sampler_is_named():
    assert set(SAMPLERS) == {"ddpm", "ddim", "dpmpp-2m", "euler", "euler-a", "pndm", "lms"}


def test_a_schedule_that_starts_in_the_lower_half_warns_that_the_result_stays_noise():
    """One step of linspace or leading spacing visits timestep 0 only: diffusers returns the noise
    all but unremoved, without a word; edgegen says so (dpmpp-2m's one step starts at 999)."""
    from edgegen.errors import EdgegenWarning

    denoiser = lambda x, t: np.zeros_like(x)
    x_T = np.zeros((1, 2), np.float32)
    for name in ("euler", "ddim"):
        with pytest.warns(EdgegenWarning, match=rf"steps=1: sampler '{name}' \((linspace|leading) spacing\) starts from "
                                                r"pure noise at timestep 0 of 1000"):
            make_sampler(name).sample(denoiser, x_T, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_sampler("euler").sample(denoiser, x_T, 2)
        make_sampler("dpmpp-2m").sample(denoiser, x_T, 1)
