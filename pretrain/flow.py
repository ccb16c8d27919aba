"""Rectified flow with a noise level per frame (diffusion forcing), and frame-by-frame sampling.

    loss = flow_loss(model, x0, action, has_action, generator=g)     # training
    frames = rollout(model, context, actions, horizon=64)             # generation

Training: x_t = (1 - t) x_0 + t * noise, target v = noise - x_0 (rectified flow). A quarter of
the windows draw t independently per frame (diffusion forcing: any mix of clean and noisy
frames); the rest look like sampling (context slightly noised, last frame at any level) and
only the last frame is scored. The velocity error is weighted by t^2 (an even clean-frame
error over t; unweighted, nearly clean frames dominate: 19.3 against 23.4 dB next-frame PSNR
after 225 and 300 steps, docs/pretrain.md). Sampling: the context (the last num_frames - 1 frames, real or
generated) is encoded once per new frame, its temporal keys and values are kept, and a few
Euler steps take the new frame from noise to a frame (Oasis: per-frame noise, context kept
slightly noised; DIAMOND: 3 Euler steps).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from worldloom.actions import BUTTONS, world_model_camera
from worldloom.config import doc

from .model import T_MIN, WorldModel, shift_actions

LOG_FLOOR = 4 * 10 ** (-45 / 10)  # the per-pixel MSE of 45 dB PSNR in model units ([-1, 1], a range of 2)


@dataclasses.dataclass(frozen=True)
class FlowConfig:
    p_sampling_pattern: float = doc("fraction of windows noised like sampling (clean context, noisy last frame)", 0.75)
    context_noise_max: float = doc("max noise level of the context in sampling-pattern windows", 0.1)
    p_pure_noise: float = doc("fraction of sampling-pattern windows whose last frame is pure noise (t = 1), the "
                              "only level that one-step sampling reads", 0.5)
    action_dropout: float = doc("probability that a frame's action is replaced by the null action", 0.1)
    log_mse: bool = doc("weight each pure-noise frame's error by 1 / (its error + a 45 dB floor): the gradient of a "
                        "per-frame log-MSE, i.e. of the mean per-frame PSNR that eval scores, which a plain MSE "
                        "spends on the hardest frames (issue 18's log: +0.35 dB next frame at 5 CPU-minutes)", False)
    own_previous: float = doc("fraction of sampling-pattern windows whose frame before the last is the model's own "
                              "one-step prediction (from pure noise, given the real frames before it; no gradient): it "
                              "learns to continue from what it generates, as a rollout does (self forcing)", 0.0)
    caption_dropout: float = doc("text models: probability that a window's caption is replaced by the null caption "
                                 "(classifier-free guidance on captions, as on actions)", 0.1)
    context_dropout: float = doc("text models: probability that a window's frames before the last are blanks (pure "
                                 "noise, t = 1, no actions), so the model learns to make a first frame from the caption "
                                 "alone (a prompt-only rollout)", 0.1)
    prompt_levels: float = doc("text models: fraction of blank-context windows whose frame is noised to a uniform "
                               "random level rather than the objective's (pure noise in `tiny`), so a prompt-only first "
                               "frame can be drawn in several Euler steps (SampleConfig.prompt_steps) instead of one "
                               "step's conditional mean", 0.0)

    def __post_init__(self):
        for name in ("p_sampling_pattern", "context_noise_max", "p_pure_noise", "action_dropout", "own_previous",
                     "caption_dropout", "context_dropout", "prompt_levels"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


def sample_noise_levels(B: int, T: int, cfg: FlowConfig, generator=None, device="cpu"):
    """Noise level per frame and a per-frame loss weight. -> t (B, T), weight (B, T)."""
    t = torch.rand(B, T, generator=generator, device=device)
    ctx = torch.rand(B, T, generator=generator, device=device) * cfg.context_noise_max
    pattern = torch.rand(B, 1, generator=generator, device=device) < cfg.p_sampling_pattern  # (B, 1)
    last = torch.arange(T, device=device) == T - 1  # (T,)
    pure = torch.rand(B, 1, generator=generator, device=device) < cfg.p_pure_noise
    t = torch.where(pattern & ~last, ctx, t)
    t = torch.where(pattern & pure & last, torch.ones_like(t), t)
    weight = torch.where(pattern & ~last, 0.0, 1.0)
    return t, weight


def flow_loss(model: WorldModel, x0, action, has_action, cfg: FlowConfig, generator=None, text=None, pitch=None):
    """Mean squared velocity error. x0 (B, T, C, H, W) in model space; action (B, T, A) per step;
    text (B, L) word ids of each window's caption (text models only; pretrain/text.py); pitch (B, T) each
    frame's view pitch in degrees, NaN where unknown (the dataset's state_pitch; world_yaw models turn with it)."""
    B, T = x0.shape[:2]
    t, weight = sample_noise_levels(B, T, cfg, generator, x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device)
    cond, mask = shift_actions(action, has_action)  # frame t gets action[t-1]
    pitched = {} if pitch is None else {"view_pitch": torch.cat([pitch[:, :1], pitch[:, :-1]], dim=1)}  # the frame before's
    keep = torch.rand(B, T, generator=generator, device=x0.device) >= cfg.action_dropout
    if text is not None:
        text, t, weight, keep = drop_text_and_context(text, t, weight, keep, cfg, generator)
    own = (weight[:, 0] == 0) & (torch.rand(B, generator=generator, device=x0.device) < cfg.own_previous)  # (B,)
    if T >= 3 and own.any():  # self forcing: the frame before the last is the model's own
        x0 = x0.clone()
        fresh = torch.randn(x0[own, :T - 1].shape, generator=generator, device=x0.device)
        x0[own, T - 2] = own_prediction(model, x0[own, :T - 1], t[own, :T - 1], fresh, cond[own, :T - 1],
                                        (mask & keep)[own, :T - 1],
                                        None if pitch is None else pitched["view_pitch"][own, :T - 1])
    tt = t[:, :, None, None, None]
    xt = (1 - tt) * x0 + tt * noise
    v = model(xt, t, cond, mask & keep, **({"text": text} if text is not None else {}), **pitched)  # (B, T, C, H, W)
    err = F.mse_loss(v.float(), noise - x0, reduction="none").mean(dim=(2, 3, 4))  # (B, T)
    # velocity MSE times t^2 = clean-frame MSE, even over noise levels: |v - v*|^2 = |x0 - x0*|^2 / t^2,
    # undo the 1/t^2 that buries large t (measured: docs/pretrain.md)
    weight = weight * t.clamp_min(T_MIN) ** 2
    pure = (t >= 1.0) & (weight > 0)
    if cfg.log_mse and pure.any():  # d log(e + floor) = de / (e + floor); rescaled to keep the mean weight
        e = (err * t.clamp_min(T_MIN) ** 2).detach()  # clean-frame MSE (B, T)
        weight = torch.where(pure, weight * (e[pure].mean() + LOG_FLOOR) / (e + LOG_FLOOR), weight)
    return (err * weight).sum() / weight.sum()


def drop_text_and_context(text, t, weight, keep, cfg: FlowConfig, generator=None):
    """Caption dropout (a window's words all PAD: the null caption) and context dropout (a window's
    frames before the last at t = 1, unscored, without actions: blanks, what a prompt-only rollout
    starts from). text (B, L), t and weight and keep (B, T) -> the same, changed."""
    B, T = t.shape
    dev = t.device
    dropped = torch.rand(B, generator=generator, device=dev) < cfg.caption_dropout  # (B,)
    text = torch.where(dropped[:, None], torch.zeros_like(text), text)
    blank = (torch.rand(B, 1, generator=generator, device=dev) < cfg.context_dropout) & (
        torch.arange(T, device=dev) < T - 1)  # (B, T): the frames before the last of blank windows
    t = torch.where(blank, torch.ones_like(t), t)
    weight = torch.where(blank, torch.zeros_like(weight), weight)
    last = torch.arange(T, device=dev) == T - 1
    if cfg.prompt_levels > 0:  # some blank windows' frame at any level: a prompt-only frame drawn in several steps
        level = blank.any(dim=1, keepdim=True) & (torch.rand(B, 1, generator=generator, device=dev) < cfg.prompt_levels)
        t = torch.where(level & last, torch.rand(B, 1, generator=generator, device=dev), t)
    weight = torch.where(blank.any(dim=1, keepdim=True) & last, torch.ones_like(weight), weight)
    keep = keep & ~blank.any(dim=1, keepdim=True)  # no action leads out of a blank
    return text, t, weight, keep


@torch.no_grad()
def own_prediction(model: WorldModel, x0, t, noise, action, action_mask, view_pitch=None):
    """The model's one-step prediction of the last frame of x0 (B, T', C, H, W) from pure noise, the frames
    before it noised at their levels t (B, T'); noise (B, T', C, H, W); view_pitch (B, T') as WorldModel takes it.
    -> (B, C, H, W) in [-1, 1]."""
    t = t.clone()
    t[:, -1] = 1.0
    tt = t[:, :, None, None, None]
    x = (1 - tt) * x0 + tt * noise
    v = model(x, t, action, action_mask, **({} if view_pitch is None else {"view_pitch": view_pitch}))[:, -1].float()
    return (x[:, -1] - v).clamp(-1, 1)  # one Euler step from t = 1 to 0


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    num_steps: int = doc("Euler steps per frame", 4)
    context_noise: float = doc("noise level the real context frames are kept at (0 = clean)", 0.02)
    guidance: float = doc("classifier-free guidance on actions, and on the caption for text models (1 = none)", 1.0)
    generated_noise: float = doc("noise level generated frames are kept at when a rollout feeds them back as "
                                 "context, as diffusion forcing does (docs/pretrain.md: measured, off by default)", 0.0)
    dead_zone: float = doc("x_skip models trained with a dead zone: corrections under max(this, the model's own) "
                           "8-bit levels are dropped when sampling (issue 18's log, section 9: 6 against the tiny "
                           "preset's 3 raised next-frame PSNR by 0.2 dB and 64-frame PSNR by 1.4-2.1 dB on two runs)", 6.0)
    memory: int = doc("pose memory: the real context frames up to this many steps back that saw the new frame's view "
                      "from the same spot, turned into it, are the base the model corrects in place of the turned "
                      "previous frame (pretrain/memory.py; 0: off; docs/pretrain.md, 'Pose memory': revisit gains of 15-21 dB, "
                      "other rollout figures within 0.15 dB)", 64)
    prompt_steps: int = doc("Euler steps for a prompt-only rollout's first frame (text models trained with "
                            "prompt_levels; 0: num_steps)", 0)
    canvas: bool = doc("rollouts sample the last real frame once through all the warps since, instead of resampling "
                       "each generated frame (pretrain/canvas.py; models with a camera warp, no text guidance; issue 18's "
                       "log, section 28: textures kept, the colour drift at 33-64 frames cut by 0.04-0.05, rollout PSNR 0.1-0.5 dB lower)",
                       True)

    def __post_init__(self):
        if not 0.0 <= self.dead_zone <= 64.0:
            raise ValueError(f"dead_zone must be in [0, 64] 8-bit levels, got {self.dead_zone}")
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
        if self.prompt_steps < 0:
            raise ValueError(f"prompt_steps must be >= 0 (0: num_steps), got {self.prompt_steps}")
        for name in ("context_noise", "generated_noise"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.guidance < 0:
            raise ValueError(f"guidance must be >= 0, got {self.guidance}")
        if self.memory < 0:
            raise ValueError(f"memory must be >= 0 steps, got {self.memory}")


def noise(shape: tuple[int, ...], generator, device) -> torch.Tensor:
    """Gaussian noise of `shape` (B, ...) from `generator`, or, given one generator per row (`clip_generators`),
    row b from generator b: then a clip's noise, and so its frames, do not depend on which clips share its
    batch (scores that changed with `--batch-size` before)."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
        return torch.stack([torch.randn(shape[1:], generator=g, device=device) for g in generator])
    return torch.randn(shape, generator=generator, device=device)


def clip_generators(seed: int, clips) -> list[torch.Generator]:
    """One generator per clip, clip i's seeded from (seed, i): for `noise` in batches of any size. `clips`: a
    number of clips (0, 1, ...), or the clips' own indices (an episode's index in an evaluation)."""
    return [torch.Generator().manual_seed(seed * 1_000_003 + i) for i in (range(clips) if isinstance(clips, int) else clips)]


@torch.no_grad()
def next_frame(model: WorldModel, context, context_action, context_mask, action, has_action,
               cfg: SampleConfig, generator=None, context_levels=None, text=None, recall=None, canvas=None,
               context_pitch=None):
    """One new frame after a context.

    context (B, Tc, C, H, W) clean frames; context_action (B, Tc, A) and context_mask (B, Tc):
    the action that produced each context frame; action (B, A), has_action (B,): the action
    taken after the last context frame; context_levels (Tc,): the noise level each context
    frame is kept at (default: `cfg.context_noise` for all; 1: a blank); text (B, L): the
    caption's word ids (text models); recall: a pose memory's view of the new frame (WorldModel.forward);
    canvas: the rollout's pretrain/canvas.Canvas of the last context frame (not with guidance; its `pending`
    is the new frame's after the call); context_pitch (B, Tc): each context frame's view pitch in degrees, NaN
    where unknown (`track_pitch`; world_yaw models turn the yaw about the world's vertical from it).
    -> (B, C, H, W).
    """
    B, Tc = context.shape[:2]
    dev = context.device
    levels = torch.full((Tc,), cfg.context_noise) if context_levels is None else torch.as_tensor(context_levels, dtype=torch.float32)
    t_ctx = levels.to(dev)[None].expand(B, Tc)
    tt = t_ctx[:, :, None, None, None]
    ctx = (1 - tt) * context + tt * noise(context.shape, generator, dev)
    guided = cfg.guidance != 1.0
    pitched = {} if context_pitch is None else {"view_pitch": torch.cat([context_pitch[:, :1], context_pitch[:, :-1]], 1)}
    extra = {}
    if text is not None and guided:  # the context seen under the caption, then under the null caption
        extra = {"text": torch.cat([text, torch.zeros_like(text)])}
        twice = {k: torch.cat([v, v]) for k, v in pitched.items()}
        _, kv = model(torch.cat([ctx, ctx]), torch.cat([t_ctx, t_ctx]), torch.cat([context_action, context_action]),
                      torch.cat([context_mask, context_mask]), return_kv=True, **extra, **twice)
    else:
        extra = {} if text is None else {"text": text}
        _, kv = model(ctx, t_ctx, context_action, context_mask, return_kv=True, **extra, **pitched)
    if guided:  # second half of the batch: the same context, the null action (and the null caption)
        if text is None:
            kv = [(torch.cat([k, k]), torch.cat([v, v])) for k, v in kv]
        action = torch.cat([action, action])
        has_action = torch.cat([has_action, torch.zeros_like(has_action)])
    x = noise((B, 1, *context.shape[2:]), generator, dev)  # (B, 1, C, H, W)
    trained_zone = getattr(model.cfg, "dead_zone", 0.0)
    zone = {"dead_zone": max(trained_zone, cfg.dead_zone)} if trained_zone > 0 else {}
    times = torch.linspace(1.0, 0.0, cfg.num_steps + 1)
    for t_now, t_next in zip(times[:-1].tolist(), times[1:].tolist(), strict=True):
        xin = torch.cat([x, x]) if guided else x
        t = torch.full((xin.shape[0], 1), t_now, device=dev)
        prev, prev_t = ctx[:, -1], t_ctx[:, -1]
        prev_action = (context_action[:, -1], context_mask[:, -1])  # what made the frame before: its field of view
        turn_from = {} if context_pitch is None else {"view_pitch": context_pitch[:, -1:]}  # (B, 1): the frame before's
        seen = recall
        if guided:
            prev, prev_t = torch.cat([prev, prev]), torch.cat([prev_t, prev_t])
            prev_action = tuple(torch.cat([p, p]) for p in prev_action)
            turn_from = {k: torch.cat([v, v]) for k, v in turn_from.items()}
            if recall is not None and recall[0] is not None:
                seen = (torch.cat([recall[0], recall[0]]), torch.cat([recall[1], recall[1]]))
        mem = {} if seen is None or seen[0] is None else {"recall": seen}
        if canvas is not None and not guided:
            mem["canvas"] = canvas
        v = model(xin, t, action[:, None], has_action[:, None], past_kv=kv, start=Tc, prev=prev, prev_t=prev_t, prev_action=prev_action, **turn_from, **zone,
                  **extra, **mem).float()
        if guided:
            v = v[B:] + cfg.guidance * (v[:B] - v[B:])
        x = x + (t_next - t_now) * v
    return x[:, 0]


@torch.no_grad()
def rollout(model: WorldModel, context, actions, has_action, horizon: int, cfg: SampleConfig, generator=None,
            window: int | None = None, text=None, context_levels=None, context_pitch=None):
    """Generate `horizon` frames after `context`, one at a time, with a sliding window.

    context (B, Tc, C, H, W) real frames; actions (B, Tc + horizon - 1, A) and has_action
    (B, Tc + horizon - 1): action[t] is applied between frame t and t+1. -> (B, horizon, C, H, W).
    window: frames the model sees (default its context, num_frames - 1; fewer cuts its memory).
    text (B, L): the caption's word ids (text models); context_levels (Tc,): the noise level of
    each context frame (default cfg.context_noise; 1.0: a blank, as prompt_rollout starts from);
    context_pitch (B, Tc): each context frame's view pitch in degrees (a dataset's state_pitch), NaN or None
    where unknown; the generated frames' follow the actions (`track_pitch`).
    """
    window = window or model.cfg.num_frames - 1
    Tc = context.shape[1]
    if actions.shape[1] < Tc + horizon - 1:
        raise ValueError(f"need {Tc + horizon - 1} actions for {Tc} context frames and horizon {horizon}, got {actions.shape[1]}")
    frames = list(context.unbind(1))
    levels = [cfg.context_noise] * Tc if context_levels is None else [float(v) for v in context_levels]
    blanks = any(v >= 1.0 for v in levels[:Tc])  # a prompt-only rollout's context shows nothing to recall
    start = None if context_pitch is None else torch.as_tensor(context_pitch, dtype=torch.float32)[:, 0]
    memory = None if blanks else pose_memory(model, context, actions[:, :Tc + horizon - 1], has_action[:, :Tc + horizon - 1],
                                             cfg.memory, start)
    canvas = None if blanks or not cfg.canvas or cfg.guidance != 1.0 or not can_recall(model) else make_canvas(model, context[:, -1])
    pitches = None
    if context_pitch is not None and getattr(model.cfg, "world_yaw", False):
        pitches = track_pitch(torch.as_tensor(context_pitch, dtype=torch.float32, device=context.device),
                              actions[:, :Tc + horizon - 1], has_action[:, :Tc + horizon - 1])  # (B, Tc + horizon)
    for _ in range(horizon):
        n = len(frames)
        lo = max(0, n - window)
        ctx = torch.stack(frames[lo:], dim=1)  # (B, W, C, H, W)
        a_ctx, m_ctx = shift_actions(actions[:, lo:n], has_action[:, lo:n])  # window frame 0: null
        recall = None if memory is None else memory.recall(frames, n)
        new = next_frame(model, ctx, a_ctx, m_ctx, actions[:, n - 1], has_action[:, n - 1], cfg, generator, levels[lo:],
                         text, recall, canvas, None if pitches is None else pitches[:, lo:n])
        if canvas is not None:
            canvas.commit()
        frames.append(new.clamp(-1, 1))
        levels.append(cfg.generated_noise)
        if memory is not None:
            memory.observe(frames, n)
    return torch.stack(frames[Tc:], dim=1)


def track_pitch(context_pitch: torch.Tensor, actions: torch.Tensor, has_action: torch.Tensor) -> torch.Tensor:
    """Each frame's view pitch through a rollout: the context's (B, Tc) degrees as given (NaN where unknown),
    then each generated frame's the one before plus its action's camera pitch, clamped to +-90 (VoxelWorld's and
    Minecraft's limit), still while the inventory is open (toggled by its key from the last context frame on,
    taken closed there) and where the action is unknown. actions (B, Tc + H - 1, A) world-model features,
    action[t] between frame t and t + 1; has_action (B, Tc + H - 1). -> (B, Tc + H)."""
    B, Tc = context_pitch.shape
    steps = actions.shape[1] + 1
    out = torch.full((B, steps), float("nan"), device=context_pitch.device)
    out[:, :Tc] = context_pitch
    gui = torch.zeros(B, dtype=torch.bool, device=context_pitch.device)
    inventory = BUTTONS.index("inventory")
    for t in range(Tc - 1, steps - 1):
        known = has_action[:, t].bool()
        gui = gui ^ (known & (actions[:, t, inventory] > 0.5))
        turn = torch.where(known & ~gui, world_model_camera(actions[:, t].float())[:, 0], torch.zeros(B, device=out.device))
        out[:, t + 1] = (out[:, t] + turn).clamp(-90.0, 90.0)
    return out


def can_recall(model: WorldModel) -> bool:
    """Whether pose memory works for this model: pixel frames and a camera warp (a fitted field of view)."""
    return not getattr(model.cfg, "latent_channels", 0) and getattr(model.cfg, "camera_fov_deg", 0.0) > 0


def make_canvas(model: WorldModel, real: torch.Tensor):
    """The pretrain/canvas.Canvas of a rollout starting after the real frame `real` (B, C, H, W)."""
    from .canvas import Canvas

    hud = model.hud if getattr(model.cfg, "hud_mask", False) else None
    fill = model.hud_fill_index() if getattr(model.cfg, "hud_fill", False) else None
    return Canvas(real, hud, fill)


def pose_memory(model: WorldModel, context, actions, has_action, max_age: int, start_pitch=None):
    """The rollout's PoseMemory (pretrain/memory.py) over its real `context` frames (B, Tc, C, H, W), or
    None where it recalls nothing: memory off, a latent model, a model without a camera warp. start_pitch (B,):
    the first context frame's absolute pitch where known (degrees; track_poses)."""
    if max_age <= 0 or not can_recall(model):
        return None
    fov = model.cfg.camera_fov_deg
    from .memory import PoseMemory, track_poses

    hud = model.hud.cpu() if getattr(model.cfg, "hud_mask", False) else None
    fill = model.hud_fill_index().cpu() if getattr(model.cfg, "hud_fill", False) else None
    memory = PoseMemory(track_poses(actions.cpu(), has_action.cpu(), start_pitch), context.shape[1], max_age, fov, hud, fill)
    memory.check_context(context, actions, has_action)
    return memory


@torch.no_grad()
def prompt_rollout(model: WorldModel, text, horizon: int, cfg: SampleConfig, generator=None):
    """Generate `horizon` frames from captions alone (text models): the context is blanks (pure
    noise at t = 1, as context dropout trains), every action the null action.
    text (B, L) word ids. -> (B, horizon, C, H, W)."""
    B, Tc = text.shape[0], model.cfg.num_frames - 1
    size = model.cfg.input_size
    context = torch.zeros(B, Tc, model.cfg.channels, size, size, device=text.device)
    actions = torch.zeros(B, Tc + horizon - 1, model.a_embed[0].in_features, device=text.device)
    has = torch.zeros(B, Tc + horizon - 1, dtype=torch.bool, device=text.device)
    if not cfg.prompt_steps or cfg.prompt_steps == cfg.num_steps:
        return rollout(model, context, actions, has, horizon, cfg, generator, text=text, context_levels=[1.0] * Tc)
    # the first frame in its own number of steps, the rest continuing from it as any rollout does
    first = rollout(model, context, actions[:, :Tc], has[:, :Tc], 1, dataclasses.replace(cfg, num_steps=cfg.prompt_steps),
                    generator, text=text, context_levels=[1.0] * Tc)  # (B, 1, C, H, W)
    if horizon == 1:
        return first
    context = torch.cat([context[:, 1:], first], dim=1)
    rest = rollout(model, context, actions[:, 1:], has[:, 1:], horizon - 1, cfg, generator, text=text,
                   context_levels=[1.0] * (Tc - 1) + [cfg.generated_noise])
    return torch.cat([first, rest], dim=1)
