"""The inverse dynamics model: frames -> the actions taken between them (VPT's IDM shape).

    from worldloom.idm.model import IDM, IDMConfig, PRESETS
    model = IDM(PRESETS["tiny"])
    out = model(frames)          # (B, T + 4, H, W, 3) uint8 -> {"buttons": (B, T, 20), "camera": (B, T, 2, 11)}

The shape follows the released `4x_idm` of openai/Video-Pre-Training (`lib/policy.py`,
`lib/impala_cnn.py`): a Conv3d over time (kernel 5, per pixel) so that each frame's features see
the frames around it, a per-frame IMPALA ResNet (stacks of conv, 3x3 max-pool stride 2 and two
residual blocks), two dense layers into the transformer width, a transformer whose attention is
bidirectional inside the window, and one linear head: 20 independent button logits plus 2 x 11
mu-law camera bin logits. `action[t]` is applied between `frame[t]` and `frame[t+1]`, so the
prediction for step t needs the frame after it: the model is non-causal on purpose.

The Conv3d stem is "valid" in time: a window of T predictions takes T + (kernel - 1) frames, the
`context` extra frames on each side being real neighbours (black frames beyond an episode's
ends). So a frame's ResNet features do not depend on where the window starts, and labeling a
long video computes them once per frame (`frame_features`) and runs only the cheap transformer
per overlapping window (`heads`): half the work of running whole windows twice.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from worldloom.actions import BUTTONS, NUM_BUTTONS, NUM_CAMERA_BINS, two_hot_degrees
from worldloom.config import doc


@dataclass(frozen=True)
class IDMConfig:
    """The model's shape; `PRESETS` names the usual ones."""

    height: int = doc("input frame height in pixels (frames are resized to it)", 64)
    width: int = doc("input frame width in pixels", 64)
    num_frames: int = doc("window length T: frames the transformer sees at once", 32)
    stem_channels: int = doc("output channels of the temporal Conv3d stem", 8)
    stem_kernel_t: int = doc("temporal kernel of the Conv3d stem (odd: centred on each frame)", 5)
    stack_channels: tuple[int, ...] = doc("channels of each IMPALA stack (each halves H and W)", (16, 32, 32))
    blocks_per_stack: int = doc("residual blocks per IMPALA stack", 1)
    strided_stacks: int = doc("the first this many stacks halve H and W with a stride-2 conv instead of "
                              "conv + 3x3 max-pool (4x fewer multiply-adds at the largest sizes)", 0)
    frame_dim: int = doc("width of the first dense layer after the ResNet", 256)
    hidden: int = doc("transformer width", 256)
    temporal_conv_layers: int = doc("residual Conv1d layers over time (kernel 5) before the transformer", 0)
    num_layers: int = doc("transformer layers", 2)
    num_heads: int = doc("attention heads", 4)
    mlp_ratio: int = doc("transformer MLP width as a multiple of `hidden`", 4)
    dropout: float = doc("dropout in the transformer", 0.0)
    motion_channels: int = doc("hidden width of the motion branch's MLP (0: no motion branch)", 0)
    motion_radius: int = doc("largest displacement the motion branch matches, in pixels at each of motion_scales", 4)
    motion_grid: int = doc("the motion branch averages its matches over a grid of this many cells a side", 4)
    motion_scales: tuple[int, ...] = doc("the motion branch matches frames averaged down by each of these factors", (2, 4))
    motion_sparse_window: int = doc("the motion branch's sparse-change reader (a pointer over a still screen): the odd "
                                    "window, in pixels, of its local background estimate (0: off)", 0)
    motion_sparse_prior: float = doc("the sparse reader's pointer move, read as a camera move (POINTER_SWEEP_DEG across "
                                     "the frame), goes straight into the camera logits through a per-axis bins x bins "
                                     "map that starts as this times the identity and is learned (0: off)", 0.0)
    camera_reader: int = doc("width of the camera reader: the camera's own temporal model over the motion branch's "
                             "matches, which training also feeds from a cache of them, many more windows a step than "
                             "the trunk sees (0: the camera comes from the trunk's head, as VPT's)", 0)
    button_reader: int = doc("width of the button reader: the same kind of temporal model over the same cached numbers, "
                             "whose button logits are added to the trunk's head's (0: the buttons come from the trunk "
                             "alone, as VPT's)", 0)
    button_reader_skips: tuple[str, ...] = doc(
        "buttons the button reader gives no logit for, left to the trunk alone: those that act on the world (attack "
        "breaks the block in the crosshair, use places one) show in the scene's pixels, not in how the view moves. "
        "Read from the matches, attack was released on 14-17% of the steps the expert held it in the agent study's "
        "footage (the trunk alone: 1%), and a policy cloned from those labels mined stone in 0.56 of episodes "
        "against 0.91 (docs/agent.md, session 35)", ())

    # Fields a checkpoint of an older format may lack (worldloom.checkpoint.FORMAT_VERSION): the version that added each.
    FIELDS_ADDED: ClassVar[dict[str, int]] = {"motion_scales": 2, "motion_sparse_window": 5,
                                                  "motion_sparse_prior": 7, "camera_reader": 9,
                                                  "button_reader": 10, "button_reader_skips": 11}

    def __post_init__(self) -> None:
        for name in ("height", "width", "num_frames", "stem_channels", "frame_dim", "hidden",
                     "num_layers", "num_heads", "blocks_per_stack", "mlp_ratio"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"IDMConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.num_frames < 2 or self.num_frames % 2:
            raise ValueError(f"IDMConfig.num_frames must be even and >= 2 (labeling strides T/2), got {self.num_frames}")
        if self.stem_kernel_t < 1 or self.stem_kernel_t % 2 == 0:
            raise ValueError(f"IDMConfig.stem_kernel_t must be odd, got {self.stem_kernel_t}")
        if not self.stack_channels or min(self.stack_channels) < 1:
            raise ValueError(f"IDMConfig.stack_channels must be positive, got {self.stack_channels!r}")
        if not 0 <= self.strided_stacks <= len(self.stack_channels):
            raise ValueError(f"IDMConfig.strided_stacks must lie in 0..{len(self.stack_channels)}, got {self.strided_stacks}")
        if self.hidden % self.num_heads:
            raise ValueError(f"IDMConfig.hidden ({self.hidden}) must be divisible by num_heads ({self.num_heads})")
        if self.motion_channels and self.stem_kernel_t < 3:
            raise ValueError("IDMConfig.motion_channels needs stem_kernel_t >= 3 (the frame after the last step)")
        if self.camera_reader < 0 or (self.camera_reader and (not self.motion_channels or self.camera_reader % self.num_heads)):
            raise ValueError(f"IDMConfig.camera_reader must be 0, or a width divisible by num_heads ({self.num_heads}) with the "
                             f"motion branch on (motion_channels), got {self.camera_reader}")
        if self.button_reader < 0 or (self.button_reader and (not self.camera_reader or self.button_reader % self.num_heads)):
            raise ValueError(f"IDMConfig.button_reader must be 0, or a width divisible by num_heads ({self.num_heads}) with the "
                             f"camera reader on (camera_reader), got {self.button_reader}")
        unknown = [b for b in self.button_reader_skips if b not in BUTTONS]
        if not isinstance(self.button_reader_skips, tuple) or unknown:
            raise ValueError(f"IDMConfig.button_reader_skips must be a tuple of button names ({', '.join(BUTTONS)}), "
                             f"got {self.button_reader_skips!r}")
        if self.temporal_conv_layers < 0:
            raise ValueError(f"IDMConfig.temporal_conv_layers must be >= 0, got {self.temporal_conv_layers}")
        if not self.motion_sparse_prior >= 0 or (self.motion_sparse_prior and not self.motion_sparse_window):
            raise ValueError(f"IDMConfig.motion_sparse_prior must be >= 0, and needs motion_sparse_window, got "
                             f"{self.motion_sparse_prior} with motion_sparse_window {self.motion_sparse_window}")
        if self.motion_sparse_window < 0 or (self.motion_sparse_window and self.motion_sparse_window % 2 == 0):
            raise ValueError(f"IDMConfig.motion_sparse_window must be 0 or odd, got {self.motion_sparse_window}")
        if self.motion_channels < 0 or self.motion_radius < 1 or self.motion_grid < 1:
            raise ValueError(f"IDMConfig.motion_channels must be >= 0 and motion_radius, motion_grid >= 1, got "
                             f"{self.motion_channels}, {self.motion_radius}, {self.motion_grid}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"IDMConfig.dropout must lie in [0, 1), got {self.dropout}")
        if not self.motion_scales or not all(isinstance(k, int) and k >= 1 and self.height % k == 0 and self.width % k == 0
                                             for k in self.motion_scales):
            raise ValueError(f"IDMConfig.motion_scales must be factors that divide height and width, got {self.motion_scales!r}")
        if not isinstance(self.stack_channels, tuple):
            raise ValueError(f"IDMConfig.stack_channels must be a tuple of ints, got {self.stack_channels!r}")

    @property
    def direct_dim(self) -> int:
        """Width of the sparse reader's logits riding in `IDM.frame_features` (0 when it is off)."""
        return NUM_BUTTONS + 2 * NUM_CAMERA_BINS if self.motion_channels and self.motion_sparse_window else 0

    @property
    def feature_dim(self) -> int:
        """Width of `IDM.frame_features`: hidden, the sparse reader's 42 logits and the camera reader's
        per-step features, each when it is on."""
        return self.hidden + self.direct_dim + self.camera_reader + self.button_reader

    @property
    def context(self) -> int:
        """Extra frames the stem needs on each side of a window."""
        return self.stem_kernel_t // 2

    @property
    def feature_hw(self) -> tuple[int, int]:
        """(H, W) after the IMPALA stacks: each max-pool (stride 2, padding 1) halves, rounding up."""
        h, w = self.height, self.width
        for _ in self.stack_channels:
            h, w = (h + 1) // 2, (w + 1) // 2
        return h, w

    @classmethod
    def from_dict(cls, data: dict) -> IDMConfig:
        """A config from its JSON form (unknown keys rejected by the dataclass)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names})


# Every preset but `vpt` has the same architecture switches on (the motion branch and its sparse
# reader, a stride-2 first stack, the temporal convs: measured on tiny, docs/idm.md) and differs
# only in size; `vpt` is the named variant that is VPT's released 4x_idm exactly.
WORLD_BUTTONS = ("attack", "use")  # what the presets' button reader leaves to the trunk (IDMConfig.button_reader_skips)
PRESETS: dict[str, IDMConfig] = {
    # Tests and CI smoke runs: seconds on one core; not meant to score well.
    "micro": IDMConfig(num_frames=8, stem_channels=8, stack_channels=(8, 16, 16), blocks_per_stack=1,
                       frame_dim=64, hidden=64, num_layers=1, num_heads=2, motion_channels=64, strided_stacks=1,
                       temporal_conv_layers=2, motion_sparse_window=3, motion_sparse_prior=3.0, camera_reader=64, button_reader=64,
                       button_reader_skips=WORLD_BUTTONS),
    # Minutes on 2 CPU cores; about 2.2M parameters. One residual block per stack and an 8-channel
    # stem: 2.5x less CPU time per step than VPT's 2 blocks; windows of 16 frames (trained in
    # batches of 16): more windows per second of CPU and faster learning than 32 (docs/idm.md).
    # The motion branch (block matching, below) is what makes the camera learnable in that time.
    "tiny": IDMConfig(num_frames=16, motion_channels=256, strided_stacks=1, temporal_conv_layers=2, motion_sparse_window=3,
                      motion_sparse_prior=3.0, camera_reader=128, button_reader=128, button_reader_skips=WORLD_BUTTONS),
    # An hour on a workstation (VPT's input size, 128x128, unless the pipeline names another).
    "small": IDMConfig(height=128, width=128, num_frames=64, stem_channels=32, stack_channels=(32, 64, 64), blocks_per_stack=2,
                       frame_dim=512, hidden=512, num_layers=4, num_heads=8, motion_channels=256, strided_stacks=1,
                       temporal_conv_layers=2, motion_sparse_window=3, motion_sparse_prior=3.0, camera_reader=256, button_reader=256,
                       button_reader_skips=WORLD_BUTTONS),
    # The named variant: VPT's released 4x_idm (REFERENCES.md), about 0.5B parameters.
    "vpt": IDMConfig(height=128, width=128, num_frames=128, stem_channels=128, stack_channels=(256, 512, 512), blocks_per_stack=2,
                     frame_dim=256, hidden=4096, num_layers=2, num_heads=32),
}


def init_difference_stem(stem: nn.Conv3d) -> None:
    """Start the temporal stem as frame t (grey) and the differences t+1 - t, t - (t-1), t+2 - t+1, ...

    An action shows as the change from frame t to t+1, so the stem starts by computing it; the
    remaining channels keep their random init. Measured on VoxelWorld with the micro preset in
    docs/idm.md.
    """
    out_channels, _, kt, _, _ = stem.weight.shape
    c = kt // 2
    grey = torch.full((3,), 1.0 / 3)
    taps = [(c, None), (c + 1, c), (c, c - 1), (c + 2, c + 1), (c - 1, c - 2)]  # (plus, minus) tap pairs
    with torch.no_grad():
        for k, (plus, minus) in enumerate(taps[:out_channels]):
            if not 0 <= plus < kt or (minus is not None and not 0 <= minus < kt):
                continue
            stem.weight[k].zero_()
            stem.weight[k, :, plus, 0, 0] = grey * (1.0 if minus is None else 4.0)
            if minus is not None:
                stem.weight[k, :, minus, 0, 0] = -grey * 4.0
            stem.bias[k] = -0.5 if minus is None else 0.0


class ResidualBlock(nn.Module):
    """x + conv(relu(norm(conv(relu(norm(x)))))), as IMPALA's residual block with GroupNorm (VPT)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        groups = math.gcd(channels, 8)
        self.norm1 = nn.GroupNorm(groups, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(self.norm1(x)))  # (N, C, H, W)
        h = self.conv2(F.relu(self.norm2(h)))  # (N, C, H, W)
        return x + h


class ImpalaStack(nn.Module):
    """conv 3x3 -> max-pool 3x3 stride 2 -> residual blocks (or a stride-2 conv 3x3 in place of the first two)."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, strided: bool = False) -> None:
        super().__init__()
        self.strided = strided
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, stride=2 if strided else 1)
        self.blocks = nn.Sequential(*(ResidualBlock(out_channels) for _ in range(num_blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)  # (N, C_out, H, W), or (N, C_out, H/2, W/2) strided
        if not self.strided:
            x = F.max_pool2d(x, 3, stride=2, padding=1)  # (N, C_out, H/2, W/2)
        return self.blocks(x)


# How far a camera move moves the pointer with a screen open: VoxelWorld's cursor crosses the frame
# in 60 degrees (envs/objects.py, GUI_CURSOR_DEG); the sparse prior's map learns another game's.
# Constants are made on the CPU, and nothing is initialised, where a model is built on the meta device for its
# shapes (untrusted.check_fits, before a checkpoint is loaded): arange, eye and normal_ there take torch's Python
# decompositions, whose first use imports dynamo, 1.6 s of every process that loads an IDM.
CPU = torch.device("cpu")
POINTER_SWEEP_DEG = 60.0


class MotionBranch(nn.Module):
    """Where each part of frame t went in frame t+1: block matching at two scales, read by an MLP.

    Frames are averaged down by `motion_scales` (2x and 4x in every preset); at each scale each
    cell of a `grid` x `grid` grid of frame t is compared with frame t+1 moved by every displacement within `radius` (mean absolute RGB
    difference: the block matching of video codecs). The costs, z-scored over the displacements,
    and each cell's soft-argmin (its expected displacement under softmax(-cost / temperature) at
    two temperatures) form a coarse motion field with its uncertainty. A
    camera turn moves every cell the same way, walking forward spreads them apart, a jump moves
    them up; an MLP reads the pattern. The matching has no parameters and runs without gradients:
    it costs a few percent of a training step. Without it `tiny` learned the size of a camera move
    but not its direction (confusing bins 0 and 10) in 15 CPU minutes (docs/idm.md, "The motion
    branch").
    """

    temperatures = (0.5, 2.0)
    SPARSE_FRACTION = 0.03  # the sparse reader answers where at most this share of the pixels changed
    SPARSE_THRESHOLD = 6 / 255  # a pixel changed where a channel moved by more than this
    SPARSE_FEATURES = 6
    COLOUR_GRID = 8

    def __init__(self, cfg: IDMConfig) -> None:
        super().__init__()
        self.radius, self.grid, self.scales = cfg.motion_radius, cfg.motion_grid, tuple(cfg.motion_scales)
        d = (2 * self.radius + 1) ** 2
        per_scale = (d + 2 * len(self.temperatures)) * self.grid ** 2
        num = per_scale * len(self.scales)
        self.norm = nn.LayerNorm(num)
        self.mlp = nn.Sequential(nn.Linear(num, cfg.motion_channels), nn.GELU(), nn.Linear(cfg.motion_channels, cfg.hidden))
        self.sparse_window = cfg.motion_sparse_window
        if self.sparse_window:
            self.sparse_mlp = nn.Sequential(nn.Linear(self.SPARSE_FEATURES, 64), nn.GELU(), nn.Linear(64, cfg.hidden))
            # and straight to the action logits, past the trunk: trained through the trunk alone, the
            # 4% of steps with the inventory open were not learned at the demo's budget (section 16)
            self.sparse_logits = nn.Sequential(nn.Linear(self.SPARSE_FEATURES, 64), nn.GELU(),
                                               nn.Linear(64, NUM_BUTTONS + 2 * NUM_CAMERA_BINS))
            nn.init.zeros_(self.sparse_logits[2].weight)
            nn.init.zeros_(self.sparse_logits[2].bias)
        # the camera reader also takes where the colours are: frame t and its change to t+1 averaged over a
        # COLOUR_GRID x COLOUR_GRID grid (water, sky, an open inventory), which the matches alone do not say
        self.colour_grid = self.COLOUR_GRID if cfg.camera_reader else 0
        self.sparse_prior = cfg.motion_sparse_prior
        if self.sparse_prior:
            # (2, bins, bins): per axis, the two-hot of the measured move (degrees) -> camera logits. A linear
            # read of the reader's move fits the camera on open-inventory steps far better than the demo's IDM
            # learned to through the MLP above in its 459 steps (issue 18's log, section 31).
            self.sparse_prior_map = nn.Parameter(torch.eye(NUM_CAMERA_BINS, device=CPU).repeat(2, 1, 1) * self.sparse_prior)
            self.register_buffer("deg_per_px", torch.tensor([POINTER_SWEEP_DEG / cfg.height, POINTER_SWEEP_DEG / cfg.width]),
                                 persistent=False)
        r = torch.arange(-self.radius, self.radius + 1, dtype=torch.float32, device=CPU)
        self.register_buffer("offsets", torch.stack(torch.meshgrid(r, r, indexing="ij"), -1).view(-1, 2), persistent=False)

    @torch.no_grad()
    def match(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Frames t and t+1 (M, 3, h, w) -> per-cell features (M, (2r+1)^2 + 2 * temperatures, g, g)."""
        r, (h, w), side = self.radius, a.shape[-2:], 2 * self.radius + 1
        b = F.pad(b, (r, r, r, r), mode="replicate")
        rows = []
        for dy in range(side):  # a row of displacements at a time: the channels summed before the pooling
            diff = a.new_empty(a.shape[0], side, h, w)  # (M, 2r + 1, h, w)
            for dx in range(side):
                torch.sum(torch.sub(a, b[..., dy:dy + h, dx:dx + w]).abs_(), 1, out=diff[:, dx])
            rows.append(F.adaptive_avg_pool2d(diff, self.grid))
        cost = torch.cat(rows, 1) / a.shape[1]  # (M, D, g, g): each cell's match, the mean absolute RGB difference
        z = (cost - cost.mean(1, keepdim=True)) / (cost.std(1, keepdim=True) + 1e-3)  # (M, D, g, g)
        cells = [z]
        for temp in self.temperatures:
            p = torch.softmax(-z / temp, 1)  # (M, D, g, g): where each cell went
            cells.append(torch.einsum("mdhw,dk->mkhw", p, self.offsets) / r)  # (M, 2, g, g): its expected (dy, dx)
        return torch.cat(cells, 1)

    @torch.no_grad()
    def sparse_motion(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Frames t and t+1 (M, 3, H, W) -> (M, 6): where a few changed pixels went.

        A pointer of a few pixels moving over a still inventory screen is outvoted in the grid's
        cell averages and too aliased at 64x64 for block matching (docs/log, issue 18, section 16).
        Where at most SPARSE_FRACTION of the pixels changed, the still pixels around each changed
        one (a `motion_sparse_window` box) estimate the background there; a changed pixel where
        frame t stands out from that background more than t+1 held the thing in frame t, else it
        holds it in t+1. The move is the shift of the contrast-weighted centroid from the first
        kind to the second. Returns [answered, 30 x changed fraction, dy / 2, dx / 2 (pixels),
        log1p of each kind's weight / 4]; zeros but the fraction where it did not answer.
        """
        with torch.autocast(a.device.type, enabled=False):  # centroids in float32: bf16 keeps 1/4 pixel at 64
            return self._sparse_motion(a.float(), b.float())

    def _sparse_motion(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        M, _, H, W = a.shape
        k = self.sparse_window
        changed = ((a - b).abs().amax(1, keepdim=True) > self.SPARSE_THRESHOLD).float()  # (M, 1, H, W)
        fraction = changed.flatten(1).mean(1)  # (M,)
        out = a.new_zeros(M, self.SPARSE_FEATURES)
        out[:, 1] = fraction * 30.0
        rows = torch.nonzero((fraction > 0) & (fraction <= self.SPARSE_FRACTION)).flatten()
        if len(rows) == 0:
            return out
        a, b, changed = a[rows], b[rows], changed[rows]
        still = 1.0 - changed
        background = F.avg_pool2d(a * still, k, 1, k // 2, count_include_pad=False) / \
            F.avg_pool2d(still, k, 1, k // 2, count_include_pad=False).clamp_min(1e-6)  # (m, 3, H, W)
        stand_a, stand_b = (a - background).abs().sum(1), (b - background).abs().sum(1)  # (m, H, W)
        was = ((stand_a - stand_b).clamp_min(0) * changed[:, 0]).flatten(1)  # (m, H*W): the thing in frame t
        now = ((stand_b - stand_a).clamp_min(0) * changed[:, 0]).flatten(1)  # (m, H*W): the thing in frame t+1
        ys, xs = torch.meshgrid(torch.arange(H, dtype=a.dtype), torch.arange(W, dtype=a.dtype), indexing="ij")
        grid = torch.stack([ys.flatten(), xs.flatten()], 1)  # (H*W, 2)
        ok = (was.sum(1) > 1e-3) & (now.sum(1) > 1e-3)  # (m,)
        shift = now @ grid / now.sum(1, keepdim=True).clamp_min(1e-6) - was @ grid / was.sum(1, keepdim=True).clamp_min(1e-6)
        # scaled to about unit size: Adam moves a first layer's response in proportion to its inputs
        feats = torch.cat([ok[:, None].to(a.dtype), fraction[rows, None] * 30.0, shift / 2.0 * ok[:, None],
                           torch.log1p(was.sum(1, keepdim=True)) / 4.0, torch.log1p(now.sum(1, keepdim=True)) / 4.0], 1)
        out[rows] = feats
        return out

    def prior_logits(self, sparse: torch.Tensor) -> torch.Tensor:
        """The sparse reader's features (M, 6) -> camera logits (M, 2, bins): where it answered, its
        pointer move in pixels (dy, dx) read as degrees (pitch, yaw), two-hot, through the learned map."""
        move = sparse[:, 2:4] * 2.0 * self.deg_per_px  # (M, 2): [pitch, yaw] degrees, 0 where it did not answer
        return torch.einsum("mab,abc->mac", two_hot_degrees(move), self.sparse_prior_map) * sparse[:, :1, None]

    @property
    def num_match(self) -> int:
        """Width of the matches at every scale: `raw`'s first numbers."""
        return self.norm.normalized_shape[0]

    @property
    def num_raw(self) -> int:
        """Width of `raw`: the matches at every scale, then the sparse reader's features and the colour
        layout (camera reader) where they are on."""
        return self.num_match + (self.SPARSE_FEATURES if self.sparse_window else 0) + 2 * 3 * self.colour_grid ** 2

    @torch.no_grad()
    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, N + 1, H, W) in [0, 1] -> what the matching measured of the N steps t -> t+1, before
        anything learned reads it: (B, N, num_raw): the matches, the sparse reader's numbers and (for the
        camera reader) the colour layout. A pure function of the two frames (no parameters), so training
        may compute it once per step of play and keep it (the camera reader's cache)."""
        B, _, N1, H, W = x.shape
        # contiguous: frames permuted from (H, W, 3) memory keep it, and the 81 shifted differences over
        # channels-last strides ran at half the speed (0.25 s against 0.12 per 256 pairs, one thread)
        frames = x.transpose(1, 2).reshape(B * N1, 3, H, W).contiguous()
        feats = []
        for scale in self.scales:
            f = (frames if scale == 1 else F.avg_pool2d(frames, scale)).view(B, N1, 3, H // scale, W // scale)
            feats.append(self.match(f[:, :-1].flatten(0, 1), f[:, 1:].flatten(0, 1)).flatten(1))  # (B*N, F)
        if self.sparse_window:
            f = frames.view(B, N1, 3, H, W)
            feats.append(self.sparse_motion(f[:, :-1].flatten(0, 1), f[:, 1:].flatten(0, 1)))  # (B*N, 6)
        if self.colour_grid:  # x4: about the matches' unit size once the reader's LayerNorm has them all
            colour = F.adaptive_avg_pool2d(frames, self.colour_grid).view(B, N1, -1) * 4.0  # (B, N1, 3 g^2)
            feats.append(torch.cat([colour[:, :-1], colour[:, 1:] - colour[:, :-1]], -1).flatten(0, 1))  # (B*N, 6 g^2)
        return torch.cat(feats, 1).view(B, N1 - 1, -1)

    def mirror_map(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`raw` of the frames mirrored left-right, as a gather and a sign: raw(flip(x)) equals
        raw(x)[..., index] * sign (up to float rounding). index (num_raw,) int64, sign (num_raw,) float32.

        Every number is a mirror-symmetric measurement: a cell's cost at displacement (dy, dx) is the
        mirrored cell's at (dy, -dx), the expected dx and the sparse reader's dx change sign, the colour
        layout's columns reverse (adaptive average pooling's cells are mirror-symmetric at any size). So
        cached matches can be mirrored without matching again (the camera reader's cache)."""
        g, r = self.grid, self.radius
        side = 2 * r + 1
        cells = torch.arange(g * g).view(g, g).flip(1).flatten()  # cell (i, j) -> (i, g - 1 - j)
        index, sign, base = [], [], 0
        for _ in self.scales:
            for d in range(side * side):  # cost at (dy, dx) <- the mirrored cell's cost at (dy, -dx)
                dy, dx = divmod(d, side)
                index.append(base + (dy * side + side - 1 - dx) * g * g + cells)
                sign.append(torch.ones(g * g))
            for k in range(2 * len(self.temperatures)):  # expected (dy, dx) per temperature: dx negated
                index.append(base + (side * side + k) * g * g + cells)
                sign.append(torch.full((g * g,), -1.0 if k % 2 else 1.0))
            base += (side * side + 2 * len(self.temperatures)) * g * g
        if self.sparse_window:  # [answered, fraction, dy, dx, weights]: dx negated
            index.append(base + torch.arange(self.SPARSE_FEATURES))
            sign.append(torch.tensor([1.0, 1.0, 1.0, -1.0, 1.0, 1.0]))
            base += self.SPARSE_FEATURES
        if self.colour_grid:  # frame t's layout, then its change: (2, 3, g, g), columns reversed
            c = self.colour_grid
            layout = torch.arange(2 * 3 * c * c).view(2, 3, c, c).flip(3).flatten()
            index.append(base + layout)
            sign.append(torch.ones(2 * 3 * c * c))
        return torch.cat(index).long(), torch.cat(sign)

    def direct(self, sparse: torch.Tensor) -> torch.Tensor:
        """The sparse reader's features (..., 6) -> its logits straight to the heads (..., 20 + 22)."""
        direct = self.sparse_logits(sparse)  # (..., 42)
        if self.sparse_prior:
            prior = self.prior_logits(sparse.reshape(-1, self.SPARSE_FEATURES)).reshape(*sparse.shape[:-1], -1)  # (..., 22)
            direct = direct + F.pad(prior, (NUM_BUTTONS, 0))
        return direct

    def read(self, raw: torch.Tensor) -> torch.Tensor:
        """`raw` (B, N, num_raw) -> motion features (B, N, hidden), and with the sparse reader on, its
        logits after them: (B, N, hidden + 20 + 22). The colour layout is the camera reader's alone."""
        num_match = self.num_match
        out = self.mlp(self.norm(raw[..., :num_match]))  # (B, N, hidden)
        if self.sparse_window:
            sparse = raw[..., num_match:num_match + self.SPARSE_FEATURES]  # (B, N, 6)
            out = torch.cat([out + self.sparse_mlp(sparse), self.direct(sparse)], -1)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, N + 1, H, W) in [0, 1] -> `read(raw(x))`: (B, N, hidden [+ 42])."""
        return self.read(self.raw(x))


class Block(nn.Module):
    """Pre-norm transformer block; attention is bidirectional inside the window (VPT's IDM)."""

    def __init__(self, cfg: IDMConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.dropout = cfg.dropout
        self.norm1 = nn.LayerNorm(cfg.hidden)
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
        self.proj = nn.Linear(cfg.hidden, cfg.hidden)
        self.norm2 = nn.LayerNorm(cfg.hidden)
        self.mlp = nn.Sequential(nn.Linear(cfg.hidden, cfg.mlp_ratio * cfg.hidden), nn.GELU(),
                                 nn.Linear(cfg.mlp_ratio * cfg.hidden, cfg.hidden), nn.Dropout(cfg.dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, self.num_heads, D // self.num_heads).unbind(2)  # 3 x (B, T, h, d)
        dropout = self.dropout if self.training else 0.0
        att = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             dropout_p=dropout)  # (B, h, T, d), no mask: non-causal
        x = x + self.proj(att.transpose(1, 2).reshape(B, T, D))  # (B, T, D)
        return x + self.mlp(self.norm2(x))  # (B, T, D)


class TemporalConv(nn.Module):
    """x + conv1d(gelu(norm(x))) over time, kernel 5, zero-padded at the window's edges.

    A camera stroke or a held key is a few steps long: a local filter over time finds it from the
    first steps, where attention has yet to learn that neighbours matter most. Measured on motion
    features alone (docs/idm.md): held-out camera R² 0.60 / 0.61 with two of these against 0.52 /
    0.60 with the two transformer layers only.
    """

    def __init__(self, hidden: int, kernel: int = 5) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.conv = nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(F.gelu(self.norm(x)).transpose(1, 2)).transpose(1, 2)  # (B, T, D)


class CameraReader(nn.Module):
    """The camera's own path: the motion branch's raw numbers of each step -> a temporal model -> camera logits.

    The trunk's convolutions over every frame are most of a training step's cost, and the camera
    does not need them: it is read from how the picture moved, which the parameter-free matching
    measures. So the reader takes the matches, the sparse reader's numbers and a coarse colour layout
    (`MotionBranch.raw`, no pixels), and training feeds it, beside the trunk's windows, windows of
    those numbers cached once per step of play: about 30 times cheaper a window than the trunk's (docs/idm.md, "The camera reader"). On 320 episodes of the demo's
    play a reader trained this way passed persistence's camera R² in a few CPU-minutes, where the
    whole model needed 15 times the demo's budget (issue 18's log, sections 22 and 39). Same temporal
    shape as the trunk's head (temporal convs, bidirectional transformer blocks), at width `camera_reader`.
    """

    def __init__(self, cfg: IDMConfig, num_raw: int, width: int | None = None, outputs: int = 2 * NUM_CAMERA_BINS) -> None:
        super().__init__()
        width = width or cfg.camera_reader
        self.norm_in = nn.LayerNorm(num_raw)
        self.embed = nn.Sequential(nn.Linear(num_raw, width), nn.GELU(), nn.Linear(width, width))
        self.pos = nn.Parameter(torch.zeros(1, cfg.num_frames, width))
        self.temporal = nn.Sequential(*(TemporalConv(width) for _ in range(cfg.temporal_conv_layers)))
        block_cfg = dataclasses.replace(cfg, hidden=width)
        self.blocks = nn.ModuleList(Block(block_cfg) for _ in range(cfg.num_layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, outputs)
        if not self.pos.is_meta:
            nn.init.normal_(self.pos, std=0.02)

    def steps(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw matches (B, N, num_raw) -> per-step features (B, N, width)."""
        return self.embed(self.norm_in(raw))

    def logits(self, steps: torch.Tensor) -> torch.Tensor:
        """Per-step features of one window (B, T, width) -> logits (B, T, outputs): the camera reader's
        2 x bins (axis-major), the button reader's 20."""
        T = steps.shape[1]
        x = self.temporal(steps + self.pos[:, :T])  # (B, T, width)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


class IDM(nn.Module):
    """Conv3d stem -> IMPALA ResNet per frame -> dense -> transformer -> button and camera logits."""

    def __init__(self, cfg: IDMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        kt = cfg.stem_kernel_t
        self.stem = nn.Conv3d(3, cfg.stem_channels, (kt, 1, 1))  # valid in time: see the module docstring
        channels = (cfg.stem_channels, *cfg.stack_channels)
        self.stacks = nn.Sequential(*(ImpalaStack(channels[i], channels[i + 1], cfg.blocks_per_stack, i < cfg.strided_stacks)
                                      for i in range(len(cfg.stack_channels)))).to(memory_format=torch.channels_last)
        fh, fw = cfg.feature_hw
        self.frame_dense = nn.Linear(cfg.stack_channels[-1] * fh * fw, cfg.frame_dim)
        self.hidden_dense = nn.Linear(cfg.frame_dim, cfg.hidden)
        self.motion = MotionBranch(cfg) if cfg.motion_channels else None
        self.pos = nn.Parameter(torch.zeros(1, cfg.num_frames, cfg.hidden))
        self.temporal = nn.Sequential(*(TemporalConv(cfg.hidden) for _ in range(cfg.temporal_conv_layers)))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.norm = nn.LayerNorm(cfg.hidden)
        self.camera_reader = CameraReader(cfg, self.motion.num_raw) if cfg.camera_reader else None
        # the buttons' cheap path: a reader of the same numbers whose logits the trunk's head adds to
        self.button_reader = CameraReader(cfg, self.motion.num_raw, cfg.button_reader, NUM_BUTTONS) if cfg.button_reader else None
        # 1 for each button the reader reads, 0 for those it leaves to the trunk (its logit there is multiplied away)
        self.register_buffer("reader_buttons", torch.tensor([float(b not in cfg.button_reader_skips) for b in BUTTONS]),
                             persistent=False)
        # with the camera reader on, the trunk's head reads the buttons only
        self.head = nn.Linear(cfg.hidden, NUM_BUTTONS + (0 if cfg.camera_reader else 2 * NUM_CAMERA_BINS))
        if not self.pos.is_meta:  # built for its shapes only (CPU above: see CPU)
            nn.init.normal_(self.pos, std=0.02)
            init_difference_stem(self.stem)

    def frame_features(self, frames: torch.Tensor, raw: torch.Tensor | None = None) -> torch.Tensor:
        """frames (B, N + 2 * context, H, W, 3) uint8 -> per-frame features (B, N, cfg.feature_dim):
        the trunk's (hidden), then the sparse reader's 42 logits and the camera reader's per-step
        features where they are on (`heads` takes them). `raw`: the motion branch's matches of the N
        steps (B, N, num_raw) where already known (training's cache), else computed here."""
        cfg = self.cfg
        B, N_in, H, W, _ = frames.shape
        if (H, W) != (cfg.height, cfg.width) or N_in <= 2 * cfg.context:
            raise ValueError(f"IDM expects (B, N + {2 * cfg.context}, {cfg.height}, {cfg.width}, 3) frames, got {tuple(frames.shape)}")
        pixels = frames.permute(0, 4, 1, 2, 3).float() / 255.0  # (B, 3, N_in, H, W)
        x = self.stem(pixels)  # (B, C, N, H, W): each frame mixed with its kt - 1 neighbours, per pixel
        N = x.shape[2]
        # channels_last: oneDNN's convolutions (forward and backward) ran 1.6x faster on a 2-core CPU
        x = x.transpose(1, 2).reshape(B * N, -1, H, W).contiguous(memory_format=torch.channels_last)  # (B*N, C, H, W)
        x = F.relu(self.stacks(x))  # (B*N, C', H/8, W/8)
        x = F.relu(self.frame_dense(x.contiguous().flatten(1)))  # (B*N, frame_dim), flattened in (C, H, W) order
        x = self.hidden_dense(x).view(B, N, -1)  # (B, N, D)
        if self.motion is not None:  # frame t -> t+1 for each of the N frames
            if raw is None:
                raw = self.motion.raw(pixels[:, :, cfg.context:cfg.context + N + 1])  # (B, N, num_raw)
            motion = self.motion.read(raw)  # (B, N, D [+ 42])
            parts = [x + motion[..., :cfg.hidden], motion[..., cfg.hidden:]]  # the sparse reader's logits ride along
            if self.camera_reader is not None:
                parts.append(self.camera_reader.steps(raw))  # (B, N, camera_reader)
            if self.button_reader is not None:
                parts.append(self.button_reader.steps(raw))  # (B, N, button_reader)
            x = torch.cat(parts, -1)
        return x

    def camera_from_raw(self, raw: torch.Tensor) -> torch.Tensor:
        """The camera reader on raw matches of one window (B, T, num_raw) -> camera logits (B, T, 2, bins):
        what `heads` gives for the camera of the same window (the sparse reader's camera logits added)."""
        return self.readers_from_raw(raw)["camera"]

    def readers_from_raw(self, raw: torch.Tensor) -> dict[str, torch.Tensor]:
        """The readers on raw matches of one window (B, T, num_raw) -> {"camera": (B, T, 2, bins)} and, with
        the button reader on, {"buttons": (B, T, 20)}: the camera as `heads` gives it for the same window,
        the buttons as the button reader alone reads them (the sparse reader's logits added to both)."""
        B, T, _ = raw.shape
        camera = self.camera_reader.logits(self.camera_reader.steps(raw)).view(B, T, 2, NUM_CAMERA_BINS)
        out = {"camera": camera}
        if self.button_reader is not None:
            out["buttons"] = self.button_reader.logits(self.button_reader.steps(raw)) * self.reader_buttons
        if self.cfg.direct_dim:
            m = self.motion.num_match
            direct = self.motion.direct(raw[..., m:m + MotionBranch.SPARSE_FEATURES])
            out["camera"] = camera + direct[..., NUM_BUTTONS:].unflatten(-1, (2, NUM_CAMERA_BINS))
            if "buttons" in out:
                out["buttons"] = out["buttons"] + direct[..., :NUM_BUTTONS]
        return out

    def heads(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features of one window (B, T, cfg.feature_dim), T <= num_frames -> logits {"buttons", "camera"}.
        The sparse reader's logits (where on) are added to the heads'; the camera reader (where on)
        gives the camera, and the button reader's logits (where on) are added to the trunk's buttons."""
        B, T, _ = features.shape
        if T > self.cfg.num_frames:
            raise ValueError(f"a window holds at most {self.cfg.num_frames} frames, got {T}")
        hidden, direct_dim = self.cfg.hidden, self.cfg.direct_dim
        trunk, direct = features[..., :hidden], features[..., hidden:hidden + direct_dim]
        x = self.temporal(trunk + self.pos[:, :T])  # (B, T, D)
        for block in self.blocks:
            x = block(x)  # (B, T, D)
        logits = self.head(self.norm(x))  # (B, T, 20 [+ 22])
        if self.camera_reader is not None:
            start = hidden + direct_dim
            logits = torch.cat([logits, self.camera_reader.logits(features[..., start:start + self.cfg.camera_reader])], -1)
        if self.button_reader is not None:
            reader = self.button_reader.logits(features[..., hidden + direct_dim + self.cfg.camera_reader:]) * self.reader_buttons
            logits = logits + F.pad(reader, (0, logits.shape[-1] - NUM_BUTTONS))
        if direct.shape[-1]:  # (features cut to the trunk's width: the model without the sparse reader's logits)
            logits = logits + direct
        return {
            "buttons": logits[..., :NUM_BUTTONS],  # (B, T, 20)
            "camera": logits[..., NUM_BUTTONS:].reshape(B, T, 2, NUM_CAMERA_BINS),  # (B, T, 2, 11)
        }

    def forward(self, frames: torch.Tensor, raw: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """frames (B, T + 2 * context, H, W, 3) uint8 -> logits for the T steps in the middle (`raw`:
        as `frame_features` takes it)."""
        return self.heads(self.frame_features(frames, raw))


def num_parameters(model: nn.Module) -> int:
    """Parameters in `model` (works on the meta device)."""
    return sum(p.numel() for p in model.parameters())
