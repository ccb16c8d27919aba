"""OpenAI's released IDM (`4x_idm.weights` + `4x_idm.model`), loaded and run by WorldLoom.

    worldloom idm label --model vpt:models/4x_idm.weights --data videos/ --out data/labeled
    worldloom idm eval --model vpt:models/4x_idm.weights --data data/vpt
    worldloom pretrain eval --model runs/wm --data data/heldout --idm vpt:models/4x_idm.weights

    from worldloom.idm.vpt import load_vpt_idm
    model, cfg = load_vpt_idm("models/4x_idm.weights")   # cfg from 4x_idm.model beside it, or the preset
    out = model(frames)        # (B, T, 128, 128, 3) uint8 -> {"buttons": (B, T, 20), "camera": (B, T, 2, 11)}

`VPTIDM` is VPT's inverse dynamics forward pass (openai/Video-Pre-Training `lib/policy.py`
`InverseActionNet`, `lib/impala_cnn.py`, `lib/xf.py`, `lib/action_head.py`), written anew:
- pixels / 255; a Conv3d over time (kernel (5, 1, 1), zero padding of 2 frames at the window's
  edges, bias) then ReLU;
- IMPALA stacks (widths 16, 32, 32 x 16): GroupNorm(1) -> conv 3x3 (no bias) -> ReLU, max-pool 3x3
  stride 2, GroupNorm(1); two residual blocks of [GroupNorm(1) -> conv 3x3 -> ReLU] x 2;
- flattened (C, H, W) -> LayerNorm -> dense 256 -> ReLU -> LayerNorm -> dense 4096 -> ReLU;
- two transformer blocks. Each: h = LayerNorm(x); x = h + attention(h) (VPT adds the attention to
  the normalised input, not to x); x = x + W2 ReLU(W1 LayerNorm(x)). Attention: 32 heads,
  q (bias), k, v (no bias), logits q.k / head_dim (muP, not the square root) plus a relative-
  position bias from 10 basis functions (`rel` projects h to 10 weights per head, `rel_basis` holds
  each basis' value per distance, up to `memory_size - timesteps` frames back; none for 4x_idm),
  over `memory_size - timesteps` zero memory keys (VPT's initial state) and the window, no mask;
- ReLU, LayerNorm, then the heads: 20 buttons x 2 classes and 2 camera axes x 11 bins, logits
  divided by the temperature (4). VPT computes a `lastlayer` dense and discards it (`pi_latent` is
  overwritten); its weights are read and ignored here.

`heads` returns what the rest of WorldLoom reads: button logits for a sigmoid (the difference of
the 2-way logits, the same probability) and camera logits. Labels decode the camera as VPT does:
the argmax bin's centre (`camera_decoding = "argmax"`). A window shorter than 128 is run as it is
(VPT's transformer has no position embedding), not padded.

Files: the `.weights` file is a torch state dict, read with `torch.load(weights_only=True)` (a
`.safetensors` file is read with safetensors); the `.model` file is a pickle of keyword arguments,
read by `read_model_file`, which interprets pickle opcodes itself and accepts only dicts, lists,
tuples, numbers, strings, booleans and None: it never imports or calls anything. Without a
`.model` beside the weights, the values of the released 4x_idm.model are used (`PRESETS`).
"""

from __future__ import annotations

import hashlib
import pickletools
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from worldloom.actions import NUM_BUTTONS, NUM_CAMERA_BINS
from worldloom.errors import UserError

PREFIX = "vpt:"
NUM_BASIS = 10  # lib/xf.py: relative attention basis functions
CNN_OUTSIZE = 256  # lib/policy.py: ImgObsProcess(cnn_outsize=256)


@dataclass(frozen=True)
class VPTConfig:
    """The shape of a VPT IDM; the fields of `4x_idm.model` that WorldLoom reads."""

    height: int = 128
    width: int = 128
    stem_channels: int = 128  # conv3d_params.outchan
    stem_kernel_t: int = 5  # conv3d_params.kernel_size[0]
    impala_chans: tuple[int, ...] = (16, 32, 32)
    impala_width: int = 16
    hidsize: int = 4096
    num_layers: int = 2  # n_recurrence_layers
    num_heads: int = 32  # attention_heads
    timesteps: int = 128
    memory_size: int = 128  # attention_memory_size
    pointwise_ratio: int = 4
    temperature: float = 4.0  # pi_head_opts.temperature

    def __post_init__(self) -> None:
        if self.stem_kernel_t % 2 == 0 or self.hidsize % self.num_heads or self.memory_size < self.timesteps:
            raise ValueError(f"not a VPT IDM shape: {self}")

    # the names the rest of WorldLoom reads from a model config
    @property
    def num_frames(self) -> int:
        return self.timesteps

    @property
    def context(self) -> int:
        return self.stem_kernel_t // 2

    @property
    def hidden(self) -> int:
        return self.hidsize

    @property
    def feature_dim(self) -> int:
        return self.hidsize

    @property
    def stack_channels(self) -> tuple[int, ...]:
        return tuple(c * self.impala_width for c in self.impala_chans)

    @property
    def memory(self) -> int:
        """Zero memory keys before the window (VPT's maxlen = memory_size - timesteps)."""
        return self.memory_size - self.timesteps

    def to_json(self) -> dict:
        return asdict(self)


# The released 4x_idm.model's values (model.args.net.args and pi_head_opts).
PRESETS = {"4x_idm": VPTConfig()}


# ---- the model ---------------------------------------------------------------------------------

class Stack(nn.Module):
    """GroupNorm -> conv -> ReLU, max-pool, GroupNorm, then residual blocks (VPT's CnnDownStack)."""

    def __init__(self, in_ch: int, out_ch: int, num_blocks: int = 2) -> None:
        super().__init__()
        self.in_norm = nn.GroupNorm(1, in_ch)
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.post_norm = nn.GroupNorm(1, out_ch)
        self.blocks = nn.ModuleList(Residual(out_ch) for _ in range(num_blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv(self.in_norm(x)))  # (N, C, H, W)
        x = self.post_norm(F.max_pool2d(x, 3, stride=2, padding=1))  # (N, C, ceil(H/2), ceil(W/2))
        for block in self.blocks:
            x = block(x)
        return x


class Residual(nn.Module):
    """x + [GroupNorm -> conv -> ReLU] x 2 (VPT's CnnBasicBlock)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.norm0, self.conv0 = nn.GroupNorm(1, ch), nn.Conv2d(ch, ch, 3, padding=1, bias=False)
        self.norm1, self.conv1 = nn.GroupNorm(1, ch), nn.Conv2d(ch, ch, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv0(self.norm0(x)))
        return x + F.relu(self.conv1(self.norm1(h)))


def relative_bias_basis(basis: torch.Tensor, num_queries: int, num_keys: int) -> torch.Tensor:
    """Basis (n, m) of values per distance -> (n, t, T) bias basis: entry [k, i, j] is the value of
    basis k at the distance of key j behind query i, counted as in VPT's `bandify` (zero beyond m)."""
    n, m = basis.shape
    reversed_ = basis.flip(1)  # distance m - 1 ... 0
    band = reversed_[:, -num_keys:] if m >= num_keys else torch.cat([basis.new_zeros(n, num_keys - m), reversed_], 1)
    padded = torch.cat([band, basis.new_zeros(n, num_queries - 1)], 1)  # (n, T + t - 1)
    index = torch.arange(num_keys, device=basis.device)[None, :] + (num_queries - 1 - torch.arange(num_queries, device=basis.device))[:, None]
    return padded[:, index]  # (n, t, T)


class Block(nn.Module):
    """One VPT transformer block (ResidualRecurrentBlock with a SelfAttentionLayer, no mask)."""

    def __init__(self, cfg: VPTConfig) -> None:
        super().__init__()
        d = cfg.hidsize
        self.heads, self.memory = cfg.num_heads, cfg.memory
        self.norm = nn.LayerNorm(d)
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.proj = nn.Linear(d, d)
        self.rel = nn.Linear(d, NUM_BASIS * cfg.num_heads)
        self.rel_basis = nn.Parameter(torch.zeros(NUM_BASIS, cfg.memory))
        self.mlp_norm = nn.LayerNorm(d)
        self.mlp0 = nn.Linear(d, cfg.pointwise_ratio * d, bias=False)
        self.mlp1 = nn.Linear(cfg.pointwise_ratio * d, d)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        return x.view(B, T, self.heads, D // self.heads).transpose(1, 2).reshape(B * self.heads, T, D // self.heads)

    def attention(self, h: torch.Tensor) -> torch.Tensor:
        B, T, D = h.shape
        memory = h.new_zeros(B, self.memory, D)  # VPT's initial state: zero keys and values
        q = self.split(self.q(h))  # (B*heads, T, d)
        k = self.split(torch.cat([memory, self.k(h)], 1))  # (B*heads, M + T, d)
        v = self.split(torch.cat([memory, self.v(h)], 1))  # (B*heads, M + T, d)
        weights = self.split(self.rel(h).float())  # (B*heads, T, 10)
        bias = torch.einsum("btn,ntp->btp", weights, relative_bias_basis(self.rel_basis.float(), T, k.shape[1]))
        logits = torch.baddbmm(bias, q.float(), k.float().transpose(1, 2), alpha=1.0 / q.shape[-1])  # (B*heads, T, M+T)
        out = torch.softmax(logits, -1).to(v.dtype) @ v  # (B*heads, T, d)
        out = out.view(B, self.heads, T, D // self.heads).transpose(1, 2).reshape(B, T, D)
        return self.proj(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        x = h + self.attention(h)  # VPT's attention layer is residual around its (normalised) input
        return x + self.mlp1(F.relu(self.mlp0(self.mlp_norm(x))))


class VPTIDM(nn.Module):
    """VPT's IDM: frames (B, T, H, W, 3) uint8 -> button and camera logits (module docstring)."""

    camera_decoding = "argmax"  # labels take the argmax bin's centre, as VPT decodes
    pads_short_windows = False  # no position embedding: a short window runs as it is

    def __init__(self, cfg: VPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stem = nn.Conv3d(3, cfg.stem_channels, (cfg.stem_kernel_t, 1, 1))
        channels = (cfg.stem_channels, *cfg.stack_channels)
        self.stacks = nn.ModuleList(Stack(channels[i], channels[i + 1]) for i in range(len(cfg.stack_channels)))
        h, w = cfg.height, cfg.width
        for _ in cfg.stack_channels:
            h, w = (h + 1) // 2, (w + 1) // 2
        flat = cfg.stack_channels[-1] * h * w
        self.cnn_norm, self.cnn_dense = nn.LayerNorm(flat), nn.Linear(flat, CNN_OUTSIZE, bias=False)
        self.frame_norm, self.frame_dense = nn.LayerNorm(CNN_OUTSIZE), nn.Linear(CNN_OUTSIZE, cfg.hidsize, bias=False)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.final_norm = nn.LayerNorm(cfg.hidsize)
        self.buttons_head = nn.Linear(cfg.hidsize, NUM_BUTTONS * 2)
        self.camera_head = nn.Linear(cfg.hidsize, 2 * NUM_CAMERA_BINS)

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (B, N + 2 * context, H, W, 3) uint8 -> per-frame features (B, N, hidsize)."""
        cfg = self.cfg
        B, N_in, H, W, _ = frames.shape
        if (H, W) != (cfg.height, cfg.width) or N_in <= 2 * cfg.context:
            raise ValueError(f"the VPT IDM expects (B, N + {2 * cfg.context}, {cfg.height}, {cfg.width}, 3) frames, "
                             f"got {tuple(frames.shape)}")
        x = frames.permute(0, 4, 1, 2, 3).float() / 255.0  # (B, 3, N_in, H, W)
        x = F.relu(self.stem(x))  # (B, C, N, H, W)
        N = x.shape[2]
        x = x.transpose(1, 2).reshape(B * N, -1, H, W)  # (B*N, C, H, W)
        for stack in self.stacks:
            x = stack(x)  # (B*N, C', H', W')
        x = F.relu(self.cnn_dense(self.cnn_norm(x.flatten(1))))  # (B*N, 256), flattened in (C, H, W) order
        x = F.relu(self.frame_dense(self.frame_norm(x)))  # (B*N, D)
        return x.view(B, N, -1)

    def logits(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (B, T, D) -> VPT's per-class logits: buttons (B, T, 20, 2), camera (B, T, 2, 11),
        divided by the temperature (log_softmax of them is VPT's `pd`)."""
        x = features
        for block in self.blocks:
            x = block(x)  # (B, T, D)
        x = self.final_norm(F.relu(x))
        B, T, _ = x.shape
        buttons = self.buttons_head(x).view(B, T, NUM_BUTTONS, 2) / self.cfg.temperature
        camera = self.camera_head(x).view(B, T, 2, NUM_CAMERA_BINS) / self.cfg.temperature
        return buttons, camera

    def heads(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features of one window (B, T, D), T <= timesteps -> {"buttons": (B, T, 20) sigmoid logits,
        "camera": (B, T, 2, 11)}: sigmoid(b1 - b0) is VPT's probability of the press."""
        if features.shape[1] > self.cfg.timesteps:
            raise ValueError(f"a window holds at most {self.cfg.timesteps} frames, got {features.shape[1]}")
        buttons, camera = self.logits(features)
        return {"buttons": buttons[..., 1] - buttons[..., 0], "camera": camera}

    def forward(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """frames (B, T, H, W, 3) uint8, one window -> logits, exactly VPT's (zero frames pad the stem)."""
        pad = frames.new_zeros(frames.shape[0], self.cfg.context, *frames.shape[2:])
        return self.heads(self.frame_features(torch.cat([pad, frames, pad], 1)))


# ---- VPT's parameter names -> ours -------------------------------------------------------------------

# VPT's name <-> ours, with placeholders: {i} {j} stack and block numbers, {k} 0 or 1, {p} weight or bias,
# {x} q, k, v or proj.
NAMES = (
    ("net.conv3d_layer.layer.{p}", "stem.{p}"),
    ("net.img_process.cnn.stacks.{i}.firstconv.norm.{p}", "stacks.{i}.in_norm.{p}"),
    ("net.img_process.cnn.stacks.{i}.firstconv.layer.weight", "stacks.{i}.conv.weight"),
    ("net.img_process.cnn.stacks.{i}.n.{p}", "stacks.{i}.post_norm.{p}"),
    ("net.img_process.cnn.stacks.{i}.blocks.{j}.conv{k}.norm.{p}", "stacks.{i}.blocks.{j}.norm{k}.{p}"),
    ("net.img_process.cnn.stacks.{i}.blocks.{j}.conv{k}.layer.weight", "stacks.{i}.blocks.{j}.conv{k}.weight"),
    ("net.img_process.cnn.dense.norm.{p}", "cnn_norm.{p}"),
    ("net.img_process.cnn.dense.layer.weight", "cnn_dense.weight"),
    ("net.img_process.linear.norm.{p}", "frame_norm.{p}"),
    ("net.img_process.linear.layer.weight", "frame_dense.weight"),
    ("net.recurrent_layer.blocks.{i}.pre_r_ln.{p}", "blocks.{i}.norm.{p}"),
    ("net.recurrent_layer.blocks.{i}.r.orc_block.{x}_layer.{p}", "blocks.{i}.{x}.{p}"),
    ("net.recurrent_layer.blocks.{i}.r.orc_block.r_layer.{p}", "blocks.{i}.rel.{p}"),
    ("net.recurrent_layer.blocks.{i}.r.orc_block.b_nd", "blocks.{i}.rel_basis"),
    ("net.recurrent_layer.blocks.{i}.mlp0.norm.{p}", "blocks.{i}.mlp_norm.{p}"),
    ("net.recurrent_layer.blocks.{i}.mlp0.layer.weight", "blocks.{i}.mlp0.weight"),
    ("net.recurrent_layer.blocks.{i}.mlp1.layer.{p}", "blocks.{i}.mlp1.{p}"),
    ("net.final_ln.{p}", "final_norm.{p}"),
    ("pi_head.buttons.linear_layer.{p}", "buttons_head.{p}"),
    ("pi_head.camera.linear_layer.{p}", "camera_head.{p}"),
)
IGNORED = re.compile(r"net\.lastlayer\..*")  # computed by VPT's forward and then discarded
PLACEHOLDERS = {"i": r"\d+", "j": r"\d+", "k": r"[01]", "p": r"weight|bias", "x": r"q|k|v|proj"}


def _pattern(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w)\}", template)  # text, name, text, name, ...
    return re.compile("".join(re.escape(part) if n % 2 == 0 else f"(?P<{part}>{PLACEHOLDERS[part]})"
                              for n, part in enumerate(parts)))


_FORWARD = [(_pattern(vpt), ours) for vpt, ours in NAMES]
_BACKWARD = [(_pattern(ours), vpt) for vpt, ours in NAMES]


def our_name(vpt_name: str) -> str | None:
    """Our parameter name for one of VPT's, or None when it has none."""
    return _rename(vpt_name, _FORWARD)


def vpt_name(ours: str) -> str:
    """VPT's parameter name for one of ours."""
    return _rename(ours, _BACKWARD) or ours


def _rename(name: str, rules) -> str | None:
    for pattern, template in rules:
        match = pattern.fullmatch(name)
        if match:
            return template.format(**match.groupdict())
    return None


def convert_state_dict(state: dict, model: VPTIDM, path: Path, label: str) -> tuple[dict, list[str]]:
    """VPT's state dict -> ours for `model`; UserError naming the first missing or misshapen tensor.
    Returns (our state dict, VPT names that were not used)."""
    theirs, unused = {}, []
    for name, tensor in state.items():
        ours = our_name(str(name))
        if ours is None:
            if not IGNORED.fullmatch(str(name)):
                unused.append(str(name))
            continue
        theirs[ours] = (name, tensor)
    out = {}
    for ours, want in model.state_dict().items():
        if ours not in theirs:
            raise UserError(f"{path}: no tensor {vpt_name(ours)!r} (needed with shape {tuple(want.shape)} by {label}); "
                            "the file is truncated or is not a VPT IDM's weights")
        name, tensor = theirs[ours]
        if not torch.is_tensor(tensor):
            raise UserError(f"{path}: {name!r} is a {type(tensor).__name__}, not a tensor")
        if tuple(tensor.shape) != tuple(want.shape):
            raise UserError(f"{path}: tensor {name!r} has shape {tuple(tensor.shape)}, {label} needs {tuple(want.shape)}; "
                            "the weights and the .model file (or preset) do not belong together")
        out[ours] = tensor.to(want.dtype)
    return out, unused


# ---- the .model file: pickle opcodes read, never executed -------------------------------------------

SAFE_OPS = {"PROTO", "FRAME", "STOP", "MARK", "EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2",
            "TUPLE3", "DICT", "LIST", "SETITEM", "SETITEMS", "APPEND", "APPENDS", "MEMOIZE", "PUT", "BINPUT",
            "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET", "NONE", "NEWTRUE", "NEWFALSE", "INT", "BININT", "BININT1",
            "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT", "STRING", "BINSTRING", "SHORT_BINSTRING",
            "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "POP", "POP_MARK", "DUP"}


def read_model_file(path: str | Path) -> dict:
    """The keyword arguments pickled in a VPT `.model` file, read without unpickling: pickle opcodes are
    interpreted here and only plain data is built (dict, list, tuple, str, int, float, bool, None).
    UserError naming the opcode (and the global it would import) for anything else."""
    path = Path(path)
    data = path.read_bytes()
    stack: list = []
    memo: dict = {}
    marks: list[int] = []

    def pop_mark() -> list:
        if not marks:
            raise UserError(f"{path}: malformed pickle (no MARK)")
        start = marks.pop()
        items = stack[start:]
        del stack[start:]
        return items

    try:
        for op, arg, pos in pickletools.genops(data):
            name = op.name
            if name not in SAFE_OPS:
                if name == "STACK_GLOBAL" and len(stack) >= 2:
                    arg = f"{stack[-2]} {stack[-1]}"  # module and name were pushed as strings
                what = f" ({arg})" if arg is not None else ""
                raise UserError(f"{path}: holds a pickle {name}{what} at byte {pos}, which would import or call Python "
                                "code; WorldLoom reads only plain data from .model files (remove the file to use the "
                                "built-in 4x_idm values)")
            if name in ("PROTO", "FRAME"):
                continue
            if name == "STOP":
                break
            if name == "MARK":
                marks.append(len(stack))
            elif name in ("EMPTY_DICT",):
                stack.append({})
            elif name == "EMPTY_LIST":
                stack.append([])
            elif name == "EMPTY_TUPLE":
                stack.append(())
            elif name == "TUPLE":
                stack.append(tuple(pop_mark()))
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                n = int(name[-1])
                items = tuple(stack[-n:])
                del stack[-n:]
                stack.append(items)
            elif name == "DICT":
                items = pop_mark()
                stack.append(dict(zip(items[::2], items[1::2], strict=True)))
            elif name == "LIST":
                stack.append(pop_mark())
            elif name == "SETITEM":
                value, key = stack.pop(), stack.pop()
                _set(stack[-1], key, value, path)
            elif name == "SETITEMS":
                items = pop_mark()
                for key, value in zip(items[::2], items[1::2], strict=True):
                    _set(stack[-1], key, value, path)
            elif name == "APPEND":
                value = stack.pop()
                stack[-1].append(value)
            elif name == "APPENDS":
                items = pop_mark()
                stack[-1].extend(items)
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = stack[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo[arg])
            elif name == "POP":
                stack.pop()
            elif name == "POP_MARK":
                pop_mark()
            elif name == "DUP":
                stack.append(stack[-1])
            elif name == "NONE":
                stack.append(None)
            elif name in ("NEWTRUE", "NEWFALSE"):
                stack.append(name == "NEWTRUE")
            elif name in ("STRING", "BINSTRING", "SHORT_BINSTRING"):
                stack.append(arg.decode("latin-1") if isinstance(arg, bytes) else str(arg))
            elif name == "INT" and isinstance(arg, bool):
                stack.append(arg)  # protocol 0 writes booleans as INT 01 / 00
            else:  # numbers and unicode strings: pickletools decoded the argument already
                stack.append(arg)
    except UserError:
        raise
    except (ValueError, IndexError, KeyError, TypeError, AttributeError) as err:
        raise UserError(f"{path}: not a readable .model file ({type(err).__name__}: {err})") from None
    if len(stack) != 1 or not isinstance(stack[0], dict):
        raise UserError(f"{path}: a .model file holds one dict of keyword arguments; this one holds something else")
    return stack[0]


def _set(target, key, value, path: Path) -> None:
    if not isinstance(target, dict) or isinstance(key, (dict, list)):
        raise UserError(f"{path}: malformed pickle (SETITEM on a {type(target).__name__})")
    target[key] = value


def config_from_model(doc: dict, path: Path) -> VPTConfig:
    """The VPTConfig of a `.model` file's keyword arguments; UserError naming an unsupported setting."""
    try:
        net = doc["model"]["args"]["net"]["args"]
        head = doc["model"]["args"].get("pi_head_opts", {})
    except (KeyError, TypeError):
        raise UserError(f"{path}: no model.args.net.args in it; is this a VPT .model file?") from None
    required = {"recurrence_type": "transformer", "attention_mask_style": "none", "use_pointwise_layer": True,
                "pointwise_use_activation": False, "recurrence_is_residual": True}
    for key, want in required.items():
        if net.get(key, want) != want:
            raise UserError(f"{path}: {key} is {net.get(key)!r}; WorldLoom runs VPT IDMs with {key} = {want!r}")
    norm = net.get("init_norm_kwargs", {})
    if norm.get("group_norm_groups") != 1 or norm.get("batch_norm") or net.get("impala_kwargs", {}).get("post_pool_groups") != 1:
        raise UserError(f"{path}: init_norm_kwargs {norm} / impala_kwargs {net.get('impala_kwargs')} differ from "
                        "4x_idm's (GroupNorm(1) everywhere); not supported")
    conv = net.get("conv3d_params") or {}
    kernel, padding = list(conv.get("kernel_size", [])), list(conv.get("padding", []))
    if conv.get("inchan") != 3 or len(kernel) != 3 or kernel[1:] != [1, 1] or padding != [kernel[0] // 2, 0, 0]:
        raise UserError(f"{path}: conv3d_params {conv} is not a temporal (k, 1, 1) stem with 'same' padding; not supported")
    try:
        shape = net["img_shape"]
        return VPTConfig(
            height=int(shape[0]), width=int(shape[1]), stem_channels=int(conv["outchan"]), stem_kernel_t=int(kernel[0]),
            impala_chans=tuple(int(c) for c in net.get("impala_chans", (16, 32, 32))),
            impala_width=int(net.get("impala_width", 1)), hidsize=int(net["hidsize"]),
            num_layers=int(net["n_recurrence_layers"]), num_heads=int(net["attention_heads"]),
            timesteps=int(net["timesteps"]), memory_size=int(net["attention_memory_size"]),
            pointwise_ratio=int(net.get("pointwise_ratio", 4)), temperature=float(head.get("temperature", 1.0)))
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise UserError(f"{path}: model.args.net.args is missing or has a bad value ({type(err).__name__}: {err})") from None


# ---- loading ---------------------------------------------------------------------------------------

def is_spec(model: str | Path) -> bool:
    return str(model).startswith(PREFIX)


def weights_path(model: str | Path) -> Path:
    """The weights file of a `vpt:PATH` spec; UserError if it does not exist."""
    path = Path(str(model)[len(PREFIX):]).expanduser()  # the shell does not expand `~` after `vpt:`
    if path.is_dir():  # the folder the weights were downloaded into: its one weights file
        found = sorted(p for p in path.iterdir() if p.suffix in (".weights", ".safetensors") and p.is_file())
        if len(found) != 1:
            raise UserError(f"{model}: a folder holding {len(found)} .weights/.safetensors files "
                            f"({', '.join(p.name for p in found[:4]) or 'none'}); pass vpt:PATH/4x_idm.weights")
        path = found[0]
    if not path.is_file():
        raise UserError(f"{model}: no such file; pass vpt:PATH/4x_idm.weights (OpenAI's released IDM: 4x_idm.weights "
                        "and 4x_idm.model side by side, linked from github.com/openai/Video-Pre-Training's README)")
    return path


def model_config(model: str | Path) -> tuple[VPTConfig, str]:
    """(config, where it came from): the `.model` file beside the weights, else the 4x_idm preset."""
    path = weights_path(model)
    beside = path.with_suffix(".model")
    if beside.is_file():
        return config_from_model(read_model_file(beside), beside), str(beside)
    return PRESETS["4x_idm"], "preset 4x_idm"


def read_weights(path: Path) -> dict:
    """A torch state dict (torch.load with weights_only=True) or a safetensors file, as {name: tensor}."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise UserError(f"{path}: not a readable safetensors file ({err}); re-download it") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for truncated or foreign files
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: not a readable torch weights file ({first[:200]}); re-download it") from None
    if not isinstance(state, dict):
        raise UserError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors")
    return state


def load_vpt_idm(model: str | Path, device: str | torch.device = "cpu") -> tuple[VPTIDM, VPTConfig]:
    """`vpt:PATH` (or PATH) -> (VPTIDM in eval mode, its config)."""
    spec = str(model) if is_spec(model) else PREFIX + str(model)
    path = weights_path(spec)
    cfg, origin = model_config(spec)
    with torch.device("meta"):  # shapes only: 4x_idm's 0.5B parameters are never initialised, only loaded
        net = VPTIDM(cfg)
    state, unused = convert_state_dict(read_weights(path), net, path, f"the VPT IDM of {origin}")
    net.load_state_dict(state, assign=True)
    if unused:
        print(f"worldloom: {path}: {len(unused)} tensor(s) not part of the IDM were ignored, e.g. {unused[0]!r}",
              file=sys.stderr)
    return net.to(device).eval(), cfg


def checkpoint_id(model: str | Path) -> str:
    """`vpt:<file name>@sha256-<first 12 hex>`: names the exact weights (written as label_model)."""
    path = weights_path(model)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(16 << 20):
            digest.update(chunk)
    return f"{PREFIX}{path.name}@sha256-{digest.hexdigest()[:12]}"


__all__ = ["VPTConfig", "VPTIDM", "PRESETS", "load_vpt_idm", "checkpoint_id", "read_model_file", "config_from_model",
           "convert_state_dict", "is_spec", "model_config", "our_name", "vpt_name"]
