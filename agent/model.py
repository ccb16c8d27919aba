"""The policy: frames -> the next action, VPT's foundation-model shape at small scale.

    from worldloom.agent.model import Policy, PolicyConfig, PRESETS
    policy = Policy(PRESETS["tiny"])
    out = policy(frames)                     # (B, T, H, W, 3) uint8 -> {"buttons": (B, T, 20), "camera": (B, T, 2, 11)}
    state = policy.initial_state(batch=8)    # per-episode memory for closed-loop play
    logits, state = policy.step(obs, state)  # obs (B, H, W, 3) uint8, one step of B episodes

The shape of openai/Video-Pre-Training's `lib/policy.py` (the foundation model behind its
behaviour-cloned agents), made small: each frame goes through the IDM's per-frame encoder
(`worldloom.idm.model.ImpalaStack`: the same IMPALA stacks, then two dense layers into the
transformer width: shared code, not a copy), a causal transformer attends over the last
`memory` frames (VPT: 128 frames of Transformer-XL memory; here a sliding window), and one
linear head gives the 20 button logits and the 2 x 11 mu-law camera bin logits of the IDM.

Causal on purpose: the action at step t is predicted from frames 0..t only (the IDM sees the
frame after it). Attention is a sliding window of `memory` frames with rotary positions
(Mistral's sliding-window attention): closed-loop play keeps each block's keys and values of
the last `memory` frames in a ring and runs only the newest frame through the network
(`Policy.step`, arranged for speed in agent/inference.py), and training on windows longer than
the memory with the same band mask computes exactly what play computes (tests/test_agent.py
checks step-by-step play against the whole-window forward pass). The stem takes `pool` x `pool`
patches (a 32x32 map of a 64x64 frame): a 4x cheaper encoder for closed-loop evaluation
(benchmarks/bench_agent.py). The convolutions run on channels-last maps, each GroupNorm on an
NCHW copy (torch's CPU GroupNorm of a channels-last map with one channel per group is up to 10x
slower): the same arithmetic as `ImpalaStack.forward`, faster in training and play.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from worldloom.actions import BUTTONS, NUM_BUTTONS, NUM_CAMERA_BINS, dequantize_camera
from worldloom.config import check_range, doc
from worldloom.idm.model import ImpalaStack

MAX_CHANNELS = 1024
# (field, most, unit) of every PolicyConfig size, at least 1 each: a typo past these (--model.hidden
# 1e9: a 256 GB weight; --model.num-layers 1e8) was an allocator's traceback or hours of building
# layers. Generous beside the presets (small: 128x128 frames, memory 64; VPT: 128 frames).
SHAPE_RANGES = (
    ("height", 4096, "pixels"), ("width", 4096, "pixels"), ("pool", 64, "pixels a side per stem pixel"),
    ("memory", 4096, "frames"), ("stem_channels", MAX_CHANNELS, "channels"), ("blocks_per_stack", 64, "blocks"),
    ("frame_dim", 8192, "features"), ("hidden", 8192, "features"), ("num_layers", 256, "layers"),
    ("num_heads", 256, "heads"), ("mlp_ratio", 16, "x hidden"),
)


@dataclass(frozen=True)
class PolicyConfig:
    """The policy's shape; `PRESETS` names the usual ones."""

    height: int = doc("frame height in pixels the policy takes (the env's observation)", 64)
    width: int = doc("frame width in pixels", 64)
    pool: int = doc("the stem's patch size: it maps each pool x pool patch of a frame to one pixel (1: per pixel)", 2)
    memory: int = doc("frames the transformer attends over (the window trained on and played with)", 16)
    stem_channels: int = doc("channels of the per-pixel stem before the IMPALA stacks", 8)
    stack_channels: tuple[int, ...] = doc("channels of each IMPALA stack (each halves H and W)", (8, 16, 32))
    blocks_per_stack: int = doc("residual blocks per IMPALA stack", 1)
    strided_stacks: int = doc("the first this many stacks halve H and W with a stride-2 conv", 2)
    frame_dim: int = doc("width of the first dense layer after the ResNet", 128)
    hidden: int = doc("transformer width", 128)
    num_layers: int = doc("causal transformer layers", 2)
    num_heads: int = doc("attention heads", 4)
    mlp_ratio: int = doc("transformer MLP width as a multiple of `hidden`", 2)
    dropout: float = doc("dropout in the transformer", 0.1)
    tasks: tuple[str, ...] = doc("tasks the policy is conditioned on (short names such as collect_logs; agent train "
                                 "fills it from the data's envs): a learned embedding per task added to every frame's "
                                 "token, and one for no task; empty: an unconditioned policy", ())
    task_heads: bool = doc("with tasks: each task (and no task) gets an action head of its own over the shared "
                           "encoder and transformer, so one task's labels cannot pull another's actions; false: one "
                           "head for all", False)

    def __post_init__(self) -> None:
        for name, high, unit in SHAPE_RANGES:
            check_range(name, getattr(self, name), 1, high, unit)
        if (not isinstance(self.stack_channels, tuple) or not self.stack_channels
                or not all(isinstance(c, int) and 1 <= c <= MAX_CHANNELS for c in self.stack_channels)):
            raise ValueError(f"PolicyConfig.stack_channels must be a tuple of ints in 1..{MAX_CHANNELS}, "
                             f"got {self.stack_channels!r}")
        if not 0 <= self.strided_stacks <= len(self.stack_channels):
            raise ValueError(f"PolicyConfig.strided_stacks must lie in 0..{len(self.stack_channels)}, got {self.strided_stacks}")
        if self.height % self.pool or self.width % self.pool:
            raise ValueError(f"PolicyConfig.pool ({self.pool}) must divide height and width ({self.height}x{self.width})")
        if self.hidden % self.num_heads:
            raise ValueError(f"PolicyConfig.hidden ({self.hidden}) must be divisible by num_heads ({self.num_heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"PolicyConfig.dropout must lie in [0, 1), got {self.dropout}")
        if (not isinstance(self.tasks, tuple) or not all(isinstance(t, str) and t for t in self.tasks)
                or len(set(self.tasks)) != len(self.tasks)):
            raise ValueError(f"PolicyConfig.tasks must be a tuple of distinct task names, got {self.tasks!r}")

    def task_index(self, task: str | None) -> int:
        """The embedding row of a task's short name: 1 + its place in `tasks`; 0 (no task) for None or a
        task the policy was not conditioned on."""
        return self.tasks.index(task) + 1 if task in self.tasks else 0

    @property
    def feature_hw(self) -> tuple[int, int]:
        """(H, W) after the patch stem and the IMPALA stacks (each halves, rounding up)."""
        h, w = self.height // self.pool, self.width // self.pool
        for _ in self.stack_channels:
            h, w = (h + 1) // 2, (w + 1) // 2
        return h, w

    @classmethod
    def from_dict(cls, data: dict) -> PolicyConfig:
        """A config from its JSON form."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names})


PRESETS: dict[str, PolicyConfig] = {
    # Tests and CI: a second of CPU per few steps.
    "micro": PolicyConfig(memory=8, stem_channels=4, stack_channels=(8, 8, 16), frame_dim=64, hidden=64,
                          num_layers=1, num_heads=2, task_heads=True),
    # The study's tiny preset: minutes on 2 CPU cores, about 0.4M parameters. A head per task (2026-12-05, docs/agent.md:
    # bc-env's CollectLogs success 0.38 -> 0.74 and MineStone return 6.41 -> 6.61, bc-idm's 0.34 -> 0.51 and 3.90 -> 4.53).
    "tiny": PolicyConfig(task_heads=True),
    # A workstation: VPT's 128x128 input at full resolution, a longer memory.
    "small": PolicyConfig(height=128, width=128, pool=1, memory=64, stem_channels=16, stack_channels=(32, 64, 64),
                          blocks_per_stack=2, frame_dim=512, hidden=512, num_layers=4, num_heads=8, mlp_ratio=4,
                          task_heads=True),
}


class FrameEncoder(nn.Module):
    """One frame -> one token: a patch stem, the IDM's IMPALA stacks, two dense layers."""

    def __init__(self, cfg: PolicyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # The IDM's stem with a temporal kernel of 1, over pool x pool patches: a learned area pooling
        # (pooling the uint8 frames first cost as much as the whole ResNet on a CPU).
        self.stem = nn.Conv2d(3, cfg.stem_channels, cfg.pool, stride=cfg.pool)
        channels = (cfg.stem_channels, *cfg.stack_channels)
        self.stacks = nn.Sequential(*(ImpalaStack(channels[i], channels[i + 1], cfg.blocks_per_stack, i < cfg.strided_stacks)
                                      for i in range(len(cfg.stack_channels))))
        fh, fw = cfg.feature_hw
        self.frame_dense = nn.Linear(cfg.stack_channels[-1] * fh * fw, cfg.frame_dim)
        self.hidden_dense = nn.Linear(cfg.frame_dim, cfg.hidden)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (N, H, W, 3) uint8 -> (N, hidden)."""
        cfg = self.cfg
        if tuple(frames.shape[1:]) != (cfg.height, cfg.width, 3):
            raise ValueError(f"the policy takes ({cfg.height}, {cfg.width}, 3) frames, got {tuple(frames.shape[1:])}")
        # (N, 3, H, W) with channels-last strides (a view of the frames): the convolutions stay channels-last
        x = frames.permute(0, 3, 1, 2).float() * (1.0 / 255.0)
        x = self.stem(x)  # (N, C, H/pool, W/pool): the stem maps each pool x pool patch to a pixel
        for stack in self.stacks:
            x = impala_stack(stack, x)  # (N, C', h, w)
        x = F.relu(self.frame_dense(F.relu(x).flatten(1)))  # (N, frame_dim)
        return self.hidden_dense(x)  # (N, D)


def impala_stack(stack: ImpalaStack, x: torch.Tensor) -> torch.Tensor:
    """`stack(x)` for channels-last maps, computed as `ImpalaStack.forward` computes it (the same
    modules and weights; tests/test_agent.py checks they agree): the convolutions run on the
    channels-last maps, each GroupNorm on a contiguous copy (torch's CPU GroupNorm of a
    channels-last map with one channel per group is about 10x slower than of an NCHW one)."""
    x = stack.conv(x)  # (N, C, H, W), or (N, C, H/2, W/2) strided
    if not stack.strided:
        x = F.max_pool2d(x, 3, stride=2, padding=1)  # (N, C, H/2, W/2)
    for block in stack.blocks:
        h = block.conv1(norm_relu(block.norm1, x))
        x = x + block.conv2(norm_relu(block.norm2, h))  # (N, C, h, w)
    return x


def norm_relu(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """relu(norm(x)) of a channels-last map (N, C, H, W), normalised in NCHW, returned channels-last."""
    y = F.group_norm(x.contiguous(), norm.num_groups, norm.weight, norm.bias, norm.eps)
    return F.relu(y).contiguous(memory_format=torch.channels_last)


def rotary(pos: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (*pos.shape, dim // 2) float32 of the rotary angles of positions `pos` (RoFormer);
    the angles are taken in float64, so a frame thousands of steps into an episode keeps its
    relative angles to float32 precision."""
    half = dim // 2
    freqs = 100.0 ** (torch.arange(half, device=pos.device, dtype=torch.float64) / -half)  # (half,)
    angle = pos.to(torch.float64)[..., None] * freqs  # (*pos.shape, half)
    return angle.cos().float(), angle.sin().float()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding: x (..., d) rotated by the angles whose cos and sin (..., d // 2)
    broadcast against it. Attention then depends on how far apart two frames are, not on where a
    window starts, so closed-loop play can keep the keys of past frames instead of recomputing them."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)


class CausalBlock(nn.Module):
    """Pre-norm transformer block whose attention sees only the past (and the present) frame."""

    def __init__(self, cfg: PolicyConfig) -> None:
        super().__init__()
        self.num_heads, self.dropout = cfg.num_heads, cfg.dropout
        self.norm1 = nn.LayerNorm(cfg.hidden)
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
        self.proj = nn.Linear(cfg.hidden, cfg.hidden)
        self.norm2 = nn.LayerNorm(cfg.hidden)
        self.mlp = nn.Sequential(nn.Linear(cfg.hidden, cfg.mlp_ratio * cfg.hidden), nn.GELU(),
                                 nn.Linear(cfg.mlp_ratio * cfg.hidden, cfg.hidden), nn.Dropout(cfg.dropout))

    def forward(self, x: torch.Tensor, rot: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        """x (B, T, D); rot: cos and sin (1, 1, T, d // 2) of the frames' positions; `mask` (T, T)
        which frames each frame may see (None: causal) -> (B, T, D)."""
        B, T, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, self.num_heads, D // self.num_heads).unbind(2)  # 3 x (B, T, h, d)
        q, k, v = rotate(q.transpose(1, 2), *rot), rotate(k.transpose(1, 2), *rot), v.transpose(1, 2)  # (B, h, T, d)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                             dropout_p=self.dropout if self.training else 0.0)  # (B, h, T, d)
        x = x + self.proj(att.transpose(1, 2).reshape(B, T, D))  # (B, T, D)
        return x + self.mlp(self.norm2(x))


@dataclass
class PolicyState:
    """Closed-loop memory of B episodes: each block's keys and values of the last `memory` frames."""

    kv: list[torch.Tensor]  # per block (B, 2, h, memory, d): keys, values; a ring, frame n at slot n % memory
    count: torch.Tensor  # (B,) int64 frames seen since the episode began


class Policy(nn.Module):
    """Frame encoder -> causal transformer over the memory window -> button and camera logits."""

    def __init__(self, cfg: PolicyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = FrameEncoder(cfg)
        # row 0: no task (unconditioned play, a task the policy never saw, task dropout in training)
        self.task_embed = nn.Embedding(len(cfg.tasks) + 1, cfg.hidden) if cfg.tasks else None
        if self.task_embed is not None:
            nn.init.normal_(self.task_embed.weight, std=0.02)
        self.blocks = nn.ModuleList(CausalBlock(cfg) for _ in range(cfg.num_layers))
        self.norm = nn.LayerNorm(cfg.hidden)
        heads = len(cfg.tasks) + 1 if cfg.task_heads and cfg.tasks else 1  # row 0 of each: no task
        self.head = nn.Linear(cfg.hidden, heads * ACTION_LOGITS)
        self._fast = None  # closed-loop play's arrangement (agent/inference.py), built on the first step

    def logits(self, x: torch.Tensor, task: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Transformer outputs (B, T, D) and task rows (B,) (None: no task) -> {"buttons": (B, T, 20), "camera":
        (B, T, 2, 11)}: the task's own head where the policy has one per task (`task_heads`)."""
        return split_logits(task_head(self.head(self.norm(x)), task))

    def forward(self, frames: torch.Tensor, task: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """frames (B, T, H, W, 3) uint8, oldest first; task (B,) int64 rows of `cfg.task_index` (None:
        no task) -> logits (B, T, ...) of the action after each frame, each attending over the
        `memory` frames up to it (a sliding window when T > memory)."""
        B, T = frames.shape[:2]
        x = self.encoder(frames.flatten(0, 1)).view(B, T, -1)  # (B, T, D)
        if self.task_embed is not None:
            rows = task if task is not None else torch.zeros(B, dtype=torch.int64, device=x.device)
            x = x + self.task_embed(rows)[:, None]  # the task, added to every frame's token
        i = torch.arange(T, device=x.device)
        rot = tuple(r[None, None] for r in rotary(i, self.cfg.hidden // self.cfg.num_heads))  # (1, 1, T, d / 2) each
        mask = None
        if T > self.cfg.memory:
            mask = (i[None] <= i[:, None]) & (i[:, None] - i[None] < self.cfg.memory)  # (T, T) the band
        for block in self.blocks:
            x = block(x, rot, mask)
        return self.logits(x, task)

    def initial_state(self, batch: int, device: torch.device | str = "cpu") -> PolicyState:
        cfg = self.cfg
        shape = (batch, 2, cfg.num_heads, cfg.memory, cfg.hidden // cfg.num_heads)
        return PolicyState([torch.zeros(shape, device=device) for _ in self.blocks],
                           torch.zeros(batch, dtype=torch.int64, device=device))

    def player(self):
        """This policy arranged for closed-loop play (agent/inference.py), rebuilt when its weights change."""
        from .inference import FastPolicy

        if self._fast is None or not self._fast.current():
            self._fast = FastPolicy(self)
        return self._fast

    @torch.inference_mode()
    def step(self, obs: torch.Tensor, state: PolicyState, reset: torch.Tensor | None = None,
             task: torch.Tensor | None = None) -> tuple[dict[str, torch.Tensor], PolicyState]:
        """One step of B episodes: obs (B, H, W, 3) uint8; `reset` (B,) bool starts those episodes'
        memory afresh; `task` (B,) int64 as in `forward`. -> logits {"buttons": (B, 20), "camera":
        (B, 2, 11)} and the new state (its key and value rings are `state`'s, updated in place).
        Only the newest frame runs through the network: each block attends over its kept keys and
        values of the earlier frames."""
        return self.player().step(obs, state, reset, task)


ACTION_LOGITS = NUM_BUTTONS + 2 * NUM_CAMERA_BINS  # one head's outputs: 20 buttons, then 2 x 11 camera bins


def task_head(out: torch.Tensor, task: torch.Tensor | None) -> torch.Tensor:
    """Every head's outputs (B, ..., heads * 42) -> each episode's task's head (B, ..., 42); task (B,) int64 rows
    (None: no task, row 0). One head: `out` itself."""
    if out.shape[-1] == ACTION_LOGITS:
        return out
    B = out.shape[0]
    rows = task if task is not None else torch.zeros(B, dtype=torch.int64, device=out.device)
    per_head = out.unflatten(-1, (-1, ACTION_LOGITS))  # (B, ..., heads, 42)
    index = rows.view(B, *([1] * (per_head.dim() - 1))).expand(*per_head.shape[:-2], 1, ACTION_LOGITS)
    return per_head.gather(-2, index).squeeze(-2)


def split_logits(out: torch.Tensor) -> dict[str, torch.Tensor]:
    """The head's outputs (..., 42) -> {"buttons": (..., 20), "camera": (..., 2, 11)}."""
    return {"buttons": out[..., :NUM_BUTTONS], "camera": out[..., NUM_BUTTONS:].unflatten(-1, (2, NUM_CAMERA_BINS))}


def sample_actions(logits: dict[str, torch.Tensor], temperature: float, rngs: list[np.random.Generator]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Logits of B steps -> buttons (B, 20) bool and camera (B, 2) degrees, each episode drawing
    from its own generator (the same draws however episodes are batched). Temperature 0: the
    most likely action (buttons with p > 0.5, the argmax camera bin)."""
    b_logits = logits["buttons"].float().cpu().numpy()  # (B, 20)
    c_logits = logits["camera"].float().cpu().numpy()  # (B, 2, 11)
    if temperature <= 0:
        return b_logits > 0, dequantize_camera(c_logits.argmax(-1))
    p_buttons = 1.0 / (1.0 + np.exp(-b_logits / temperature))  # (B, 20)
    z = c_logits / temperature
    p_camera = np.exp(z - z.max(-1, keepdims=True))
    p_camera /= p_camera.sum(-1, keepdims=True)  # (B, 2, 11)
    # each episode's 20 button draws, then its 2 camera draws: one call per generator
    u = np.stack([rng.random(NUM_BUTTONS + 2) for rng in rngs]) if rngs else np.empty((0, NUM_BUTTONS + 2))  # (B, 22)
    buttons = u[:, :NUM_BUTTONS] < p_buttons
    bins = np.minimum((u[:, NUM_BUTTONS:, None] > p_camera.cumsum(-1)).sum(-1), NUM_CAMERA_BINS - 1)  # (B, 2)
    return buttons, dequantize_camera(bins)


def action_space_doc() -> dict:
    """The action space a policy is trained for (stored in its run; checked against an env's)."""
    return {"buttons": list(BUTTONS), "camera_bins": NUM_CAMERA_BINS}


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
