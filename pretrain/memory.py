"""Pose memory: a rollout recalls the real frames it was given by where the camera was.

    sample = SampleConfig(memory=64)                   # recall real frames up to 64 steps back
    frames = rollout(model, context, actions, has, horizon, sample)

A world model with a window of a few frames forgets a place as soon as it turns away from it:
after a 360-degree turn it has to make the place up again (docs/pretrain.md, "Revisit
consistency"). The actions say where the camera went, though. From them `track_poses` follows
each frame's camera (yaw and pitch in degrees, the horizontal position in steps walked, whether
the inventory is open, a count of the clicks that may have changed the world). Before each new
frame, `PoseMemory.recall` turns the real context frames taken from the new frame's spot into
its view (the rotation's homography, as the camera warp turns the previous frame:
pretrain/camera.py) and hands the model what they cover, the HUD kept, in place of the turned
previous frame: the base its correction starts from (`WorldModel.forward`'s `recall`), which
the network also sees and its gate still weighs per pixel. At the end of a 360-degree turn the
base is the first visit itself. This is the memory of WorldMem (Xiao et al. 2025: frames stored
with their poses and retrieved by view overlap), done by geometry instead of learned attention:
nothing is trained, the network is unchanged, and a rollout with `memory=0` is bit for bit the
rollout without it (the default is 64 steps). `flow.rollout` recalls (eval, `pretrain rollout`,
the revisit and counterfactual scores); the agent's closed-loop dreams (agent/dream.py, one
`next_frame` at a time) do not yet.

What it assumes, and where a recall is refused:
- The frames are pixels (a latent model recalls nothing) and the camera is the model's fitted
  pinhole (`camera_fov_deg`; 0: no recall). Pitch starts at the first context frame's absolute
  pitch where the rollout knows it (a dataset's `state_pitch`, a branches file's `context_pitch`),
  so a turn swings about the world's vertical as the game's does; else at 0, where a turn is
  exact only at pitch 0.
- Positions come from the movement keys, one unit a step (sprinting forward 1.3, sneaking 0.3),
  along the view's heading; a remembered frame is recalled only from within `POSITION_TOLERANCE`
  of where it was taken. A walk into a wall, a fall or a slope breaks the estimate; the recall
  then draws a place from the wrong spot (walking out and back along open ground, the engine's
  revisit paths, is what it is for).
- Frames within `AIRBORNE_STEPS` of a jump, with the inventory open, or sprinting (the view
  widens) are neither recalled nor recalled into, and an `attack` or `use` press forgets
  everything before it (a block may have gone or come). Animals move; memory shows them where
  they were.
- The inventory may be open before the rollout begins, where the mouse moves a cursor and not
  the view; the actions cannot say. `check_context` (a camera move between context frames that
  the frames do not show) and `observe` (the first generated frame that should have turned 1.5
  pixels, drawn by the model closer to the real frame unturned) switch such a rollout's memory off.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from worldloom.actions import BUTTONS, NUM_BUTTONS, world_model_camera

from .camera import centre_shift_px, rotate_frames, view_rays
from .model import SNEAK_SPEED, SPRINT_SPEED

POSITION_TOLERANCE = 0.25  # steps walked: a remembered frame is recalled from at most this far
AIRBORNE_STEPS = 12  # a jump is in the air for about 0.6 s (12 steps at 20 Hz) in Minecraft
_I = {name: BUTTONS.index(name) for name in ("attack", "back", "forward", "jump", "left", "right", "sneak", "sprint",
                                             "use", "inventory")}


def track_poses(actions: torch.Tensor, has_action: torch.Tensor, start_pitch: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
    """Each frame's camera pose from the actions between frames (world-model action features).

    actions (B, T - 1, A) world-model features (worldloom.actions.world_model_features: buttons,
    then the camera), has_action (B, T - 1): action[t] moves frame t to frame t + 1; a missing
    action is the null action; start_pitch (B,): frame 0's absolute pitch in degrees where known
    (a dataset's state_pitch; NaN or None: 0, level). -> {"yaw", "pitch"} (B, T) degrees (frame 0:
    yaw 0, its pitch; pitch clamped to +-90, still while the inventory is open, where the mouse moves
    the cursor; an absolute pitch makes a turn's recall swing about the world's vertical as the game's does), "position" (B, T, 2)
    steps walked (x right, z forward of frame 0's heading), "recallable" (B, T) bool (not in the
    air, inventory closed, not sprinting), "epoch" (B, T) the number of attack or use presses
    before the frame.
    """
    B, n = actions.shape[:2]
    act = torch.where(has_action[..., None], actions.float(), torch.zeros_like(actions, dtype=torch.float32))
    press = act[..., :NUM_BUTTONS] > 0.5  # (B, T-1, 20)
    camera = world_model_camera(act)  # (B, T-1, 2) pitch, yaw degrees
    yaw = torch.zeros(B, n + 1)
    pitch = torch.zeros(B, n + 1)
    if start_pitch is not None:
        pitch[:, 0] = start_pitch.float().cpu().nan_to_num(0.0).clamp(-90.0, 90.0)
    pos = torch.zeros(B, n + 1, 2)
    recallable = torch.ones(B, n + 1, dtype=torch.bool)
    epoch = torch.zeros(B, n + 1, dtype=torch.long)
    gui = torch.zeros(B, dtype=torch.bool)
    since_jump = torch.full((B,), AIRBORNE_STEPS + 1)
    for t in range(n):
        p = press[:, t]
        gui = gui ^ p[:, _I["inventory"]]
        turn = torch.where(gui[:, None], torch.zeros_like(camera[:, t]), camera[:, t])
        yaw[:, t + 1] = yaw[:, t] + turn[:, 1]
        pitch[:, t + 1] = (pitch[:, t] + turn[:, 0]).clamp(-90.0, 90.0)
        sprint = p[:, _I["sprint"]] & p[:, _I["forward"]]
        speed = torch.where(p[:, _I["sneak"]], SNEAK_SPEED, torch.where(sprint, SPRINT_SPEED, 1.0))
        ahead = p[:, _I["forward"]].float() - p[:, _I["back"]].float()
        side = p[:, _I["right"]].float() - p[:, _I["left"]].float()
        norm = torch.sqrt(ahead ** 2 + side ** 2).clamp_min(1.0)
        heading = torch.deg2rad(yaw[:, t + 1])
        step = torch.stack([ahead * heading.sin() + side * heading.cos(), ahead * heading.cos() - side * heading.sin()], -1)
        pos[:, t + 1] = pos[:, t] + torch.where(gui[:, None], 0.0, step * (speed / norm)[:, None])
        since_jump = torch.where(p[:, _I["jump"]], 0, since_jump + 1)
        recallable[:, t + 1] = (since_jump >= AIRBORNE_STEPS) & ~gui & ~sprint
        epoch[:, t + 1] = epoch[:, t] + (p[:, _I["attack"]] | p[:, _I["use"]]).long()
    return {"yaw": yaw, "pitch": pitch, "position": pos, "recallable": recallable, "epoch": epoch}


def camera_to_world(yaw_deg: torch.Tensor, pitch_deg: torch.Tensor) -> torch.Tensor:
    """(N,) degrees -> (N, 3, 3): a view's rays (right, up, forward) in the frame-0 camera's axes;
    the same turn (yaw about the vertical, then pitch down) as camera.rotation_grid."""
    y, p = torch.deg2rad(yaw_deg.float()), torch.deg2rad(pitch_deg.float())
    cy, sy, cp, sp = y.cos(), y.sin(), p.cos(), p.sin()
    zero, one = torch.zeros_like(cy), torch.ones_like(cy)
    turn_right = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).view(-1, 3, 3)
    look_down = torch.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1).view(-1, 3, 3)
    return turn_right @ look_down


def view_grid(src: torch.Tensor, dst: torch.Tensor, fov_deg: float, height: int, width: int):
    """Where each pixel of view `dst` lies in view `src`: src, dst (N, 3, 3) camera_to_world ->
    grid (N, H, W, 2) in [-1, 1] (grid_sample's) and covered (N, H, W) bool (in front of src, inside it)."""
    half = math.tan(math.radians(fov_deg) / 2)
    aspect = width / height
    ray = view_rays(fov_deg, height, width)  # (H, W, 3)
    rel = src.transpose(1, 2) @ dst  # (N, 3, 3): dst's rays in src's axes
    d = torch.einsum("nij,hwj->nhwi", rel, ray)
    z = d[..., 2]
    gx = d[..., 0] / z.clamp_min(1e-6) / (half * aspect)
    gy = -d[..., 1] / z.clamp_min(1e-6) / half
    covered = (z > 1e-6) & (gx.abs() <= 1) & (gy.abs() <= 1)
    return torch.stack([gx, gy], -1), covered


def turn_deg(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """The rotation between views src and dst (N, 3, 3) camera_to_world, in degrees. -> (N,)."""
    trace = (src.transpose(1, 2) @ dst).diagonal(dim1=1, dim2=2).sum(-1)
    return torch.rad2deg(torch.arccos(((trace - 1) / 2).clamp(-1, 1)))


class PoseMemory:
    """The real frames of one rollout, recalled into generated frames by pose (module docstring).

    poses: track_poses of the rollout's actions (frames 0..T-1); real: the number of real frames
    at the start (the context); max_age: the oldest frame recalled, in steps before the frame
    redrawn (0: none); fov_deg: the model's camera; hud (H, W) or None: pixels never redrawn; fill
    (H * W,) or None: camera.hud_fill_index of that mask, so a remembered frame's HUD is not turned into
    the scene (as the model's warp does).
    """

    def __init__(self, poses: dict, real: int, max_age: int, fov_deg: float, hud: torch.Tensor | None = None,
                 fill: torch.Tensor | None = None):
        self.poses, self.real, self.max_age, self.fov = poses, real, max_age, fov_deg
        self.hud = None if hud is None else hud > 0.5
        self.fill = fill  # (H * W,) where each pixel's value comes from before a frame is turned (the HUD filled)
        self.decided = None  # (B,) bool once `observe` runs: the rollouts whose poses have been checked
        self.rot = camera_to_world(poses["yaw"].flatten(), poses["pitch"].flatten()).view(*poses["yaw"].shape, 3, 3)

    def check_context(self, context: torch.Tensor, actions: torch.Tensor, has_action: torch.Tensor) -> torch.Tensor:
        """Turn memory off for the rollouts whose real frames contradict the poses: a camera move of a
        pixel or more between two context frames that the frames do not show (the inventory was open
        before the rollout began: the mouse moved a cursor). context (B, Tc, C, H, W) real frames, actions
        (B, >= Tc - 1, A) and has_action: the rollout's. -> (B,) bool: the rollouts that keep their memory."""
        B, Tc, C, H, W = context.shape
        keep = torch.ones(B, dtype=torch.bool)
        scene = torch.ones(H, W, dtype=torch.bool) if self.hud is None else ~self.hud
        for i in range(Tc - 1):
            step = torch.where(has_action[:, i, None], actions[:, i].float(), torch.zeros_like(actions[:, i], dtype=torch.float32))
            camera = world_model_camera(step).cpu()  # (B, 2)
            moved = centre_shift_px(camera, self.fov, H) >= 1.0
            if not moved.any():
                continue
            before, after = context[:, i].float().cpu(), context[:, i + 1].float().cpu()
            turned = rotate_frames(before, camera, self.fov)
            still_err = (after - before).pow(2)[..., scene].mean(dim=(1, 2))  # (B,)
            turn_err = (after - turned).pow(2)[..., scene].mean(dim=(1, 2))
            keep &= ~(moved & (turn_err > still_err))
        self.poses = dict(self.poses, recallable=self.poses["recallable"] & keep[:, None])
        return keep

    def observe(self, frames: list[torch.Tensor], index: int) -> None:
        """Check the poses against the model once per rollout, at the first generated frame whose view has
        turned 1.5 pixels or more from the last real frame's (from the same spot): if the model drew it closer
        to that real frame as it was than to it turned, the view does not turn with the mouse (an inventory
        opened before the rollout began, which the actions cannot say) and the rollout recalls nothing more."""
        if index < self.real or self.max_age <= 0 or self.fov <= 0:
            return
        P, last = self.poses, self.real - 1
        frame = frames[index]
        B, C, H, W = frame.shape
        if self.decided is None:
            self.decided = torch.zeros(B, dtype=torch.bool)
        same = (P["position"][:, last] - P["position"][:, index]).norm(dim=-1) <= POSITION_TOLERANCE
        angle = turn_deg(self.rot[:, last], self.rot[:, index])
        px = centre_shift_px(torch.stack([angle, torch.zeros_like(angle)], -1), self.fov, H)
        ask = ~self.decided & same & P["recallable"][:, index] & (px >= 1.5)
        if not ask.any():
            return
        grid, covered = view_grid(self.rot[:, last], self.rot[:, index], self.fov, H, W)
        real = frames[last].float().cpu()
        turned = F.grid_sample(real, grid, mode="bilinear", padding_mode="border", align_corners=False)
        scene = covered if self.hud is None else covered & ~self.hud[None]
        drawn = frame.float().cpu()
        area = scene.sum(dim=(1, 2)).clamp_min(1)
        turn_err = ((drawn - turned).pow(2).mean(1) * scene).sum(dim=(1, 2)) / area
        still_err = ((drawn - real).pow(2).mean(1) * scene).sum(dim=(1, 2)) / area
        off = ask & (turn_err > still_err)
        self.decided |= ask
        self.poses = dict(P, recallable=P["recallable"] & ~off[:, None])

    def recall(self, frames: list[torch.Tensor], index: int):
        """What the remembered real frames show of frame `index`'s view (it need not exist yet: the
        frame about to be generated). -> (seen (B, C, H, W), take (B, H, W) bool: the pixels recalled),
        or (None, None) where nothing is."""
        if self.max_age <= 0 or self.fov <= 0:
            return None, None
        B, C, H, W = frames[0].shape
        dev, P = frames[0].device, self.poses
        best = torch.full((B, H, W), math.inf, device=dev)
        seen = torch.zeros(B, C, H, W, device=dev)
        for j in range(max(0, index - self.max_age), min(self.real, index)):
            same = (P["recallable"][:, j] & P["recallable"][:, index] & (P["epoch"][:, j] == P["epoch"][:, index])
                    & ((P["position"][:, j] - P["position"][:, index]).norm(dim=-1) <= POSITION_TOLERANCE))  # (B,)
            if not same.any():
                continue
            grid, covered = view_grid(self.rot[:, j], self.rot[:, index], self.fov, H, W)  # (B, H, W, 2), (B, H, W)
            angle = turn_deg(self.rot[:, j], self.rot[:, index])  # (B,) the turn between the views
            take = covered.to(dev) & same.to(dev)[:, None, None] & (angle.to(dev)[:, None, None] < best)
            if self.hud is not None:
                take &= ~self.hud.to(dev)
            if not take.any():
                continue
            source = frames[j].float()
            if self.fill is not None:
                source = source.flatten(-2)[..., self.fill.to(dev)].view_as(source)
            drawn = F.grid_sample(source, grid.to(dev), mode="bilinear", padding_mode="border", align_corners=False)
            seen = torch.where(take[:, None], drawn, seen)
            best = torch.where(take, angle.to(dev)[:, None, None].expand_as(best), best)
        taken = best < math.inf
        return (seen, taken) if taken.any() else (None, None)
