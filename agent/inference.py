"""Closed-loop play arranged for speed: what `Policy.step` runs (the eval's actors call it every step).

    player = policy.player()                          # FastPolicy: weights gathered once (again when they change)
    logits, state = player.step(obs, state, reset)    # as policy.step: obs (B, H, W, 3) uint8, B episodes
    x = player.encoder(obs)                           # FastEncoder: (B, hidden), as policy.encoder(obs)

The same arithmetic as `Policy.forward` over the memory window, up to float rounding
(tests/test_agent.py checks the encoders against each other and step-by-step play against the
whole-window forward pass to 1e-5, past the window and across resets), inference only:
- Only the newest frame goes through the network: each block keeps the keys and values of the
  last `memory` frames in a ring (`PolicyState.kv`), so a step attends over them instead of
  recomputing the window.
- The stem (pool x pool patches) and the first stack's 3x3 convolution are both linear with
  nothing between them, so they run as one convolution: kernel 3 pool, stride pool x the
  stack's stride, the 1/255 of the uint8 frames folded into its weights, plus a bias map (the
  zero padding between the two convolutions makes the stem's bias reach the border pixels
  through fewer taps). One call and one map fewer.
- On a CPU with oneDNN, each convolution's weights are reordered once into oneDNN's blocked
  layout (`torch.ops.mkldnn._convolution_pointwise`, the op torch.compile's CPU backend calls)
  instead of on every call: about 15% of each small convolution.
- The maps stay channels-last (oneDNN's fastest layout for few channels), each GroupNorm on an
  NCHW copy (torch's CPU GroupNorm of a channels-last map is up to 10x slower at these sizes),
  whose output goes to the next convolution as it is.
- The blocks are plain functional calls on the weights, the rotary embedding one batched
  matrix product, the per-episode bookkeeping (ring slots, what each frame sees, rotations) numpy.
Alone and warm, the tiny preset's step of 16 episodes takes about 0.65x the time it took
before this module (the encoder 0.67x; both timed interleaved in one process); in the eval loop
the gain is smaller (docs/agent.md has benchmarks/bench_agent.py's figures).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_PACKABLE = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise") \
    and hasattr(torch.ops.mkldnn, "_reorder_convolution_weight")


def weights_key(params: list[torch.Tensor]) -> tuple:
    """Where each parameter's data lives and how often it was changed in place: differs after
    training steps, `load_state_dict` or a move to another device."""
    return tuple((p.data_ptr(), p._version) for p in params)


class Conv:
    """A 2-d convolution for inference: oneDNN's prepacked weights on a CPU (packed for the first
    input's shape: oneDNN picks the layout by it), `F.conv2d` elsewhere."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, padding: int):
        self.weight, self.bias = weight.detach(), None if bias is None else bias.detach()
        self.stride, self.padding = [stride, stride], [padding, padding]
        self.packed: torch.Tensor | None = None
        self.pack = _PACKABLE and weight.device.type == "cpu" and weight.dtype == torch.float32

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, C, H, W) channels-last -> (N, C', H', W') channels-last."""
        if self.pack:
            if self.packed is None:
                self.packed = torch.ops.mkldnn._reorder_convolution_weight(self.weight, self.padding, self.stride, [1, 1],
                                                                            1, list(x.shape))
            return torch.ops.mkldnn._convolution_pointwise(x, self.packed, self.bias, self.padding, self.stride, [1, 1], 1,
                                                           "none", [], "")
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)


def fuse_stem(stem: nn.Conv2d, conv: nn.Conv2d, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """The stem (kernel = stride = pool) followed by a 3x3 convolution (padding 1) as one
    convolution of the uint8 frames' float values: -> weight (C', 3, 3 pool, 3 pool), bias map
    (1, C', h, w) channels-last, stride, padding. `size` (H, W) of the frames."""
    p, s = stem.stride[0], conv.stride[0]
    with torch.no_grad():
        # w[o, i, a p + u, b p + v] = sum_m conv[o, m, a, b] stem[m, i, u, v]
        weight = F.conv_transpose2d(conv.weight, stem.weight, stride=p) * (1.0 / 255.0)  # (C', 3, 3p, 3p)
        stem_bias = stem.bias.view(1, -1, 1, 1).expand(1, -1, size[0] // p, size[1] // p)  # (1, C, H/p, W/p)
        bias = F.conv2d(stem_bias, conv.weight, conv.bias, s, 1)  # (1, C', h, w): fewer taps at the border
    return weight, bias.contiguous(memory_format=torch.channels_last), p * s, p


def norm_relu_nchw(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """relu(norm(x)) of a channels-last map (N, C, H, W), normalised and returned in NCHW: the
    next convolution takes it as it is (oneDNN's lays it out channels-last itself), one copy and
    one map fewer than `norm_relu` (about 4% of the encoder, interleaved with env steps)."""
    return F.group_norm(x.contiguous(), norm.num_groups, norm.weight, norm.bias, norm.eps).relu_()


class FastEncoder:
    """`FrameEncoder.forward` for inference (see the module docstring), of the weights it was built from."""

    def __init__(self, encoder: nn.Module):
        cfg = encoder.cfg
        self.cfg = cfg
        first = encoder.stacks[0]
        weight, self.stem_bias, stride, padding = fuse_stem(encoder.stem, first.conv, (cfg.height, cfg.width))
        self.stem = Conv(weight, None, stride, padding)
        self.stacks = [(None if i == 0 else Conv(s.conv.weight, s.conv.bias, s.conv.stride[0], s.conv.padding[0]),
                        s.strided, [(b.norm1, Conv(b.conv1.weight, b.conv1.bias, 1, 1), b.norm2,
                                     Conv(b.conv2.weight, b.conv2.bias, 1, 1)) for b in s.blocks])
                       for i, s in enumerate(encoder.stacks)]
        self.frame_dense, self.hidden_dense = encoder.frame_dense, encoder.hidden_dense

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (N, H, W, 3) uint8 -> (N, hidden)."""
        cfg = self.cfg
        if tuple(frames.shape[1:]) != (cfg.height, cfg.width, 3):
            raise ValueError(f"the policy takes ({cfg.height}, {cfg.width}, 3) frames, got {tuple(frames.shape[1:])}")
        x = self.stem(frames.permute(0, 3, 1, 2).float()).add_(self.stem_bias)  # (N, C, h, w) the first stack's conv
        for conv, strided, blocks in self.stacks:
            if conv is not None:
                x = conv(x)
            if not strided:
                x = F.max_pool2d(x, 3, stride=2, padding=1)  # (N, C, h/2, w/2)
            for norm1, conv1, norm2, conv2 in blocks:
                x = x + conv2(norm_relu_nchw(norm2, conv1(norm_relu_nchw(norm1, x))))  # the residual block
        x = F.relu(F.linear(x.relu_().flatten(1), self.frame_dense.weight, self.frame_dense.bias))  # (N, frame_dim)
        return F.linear(x, self.hidden_dense.weight, self.hidden_dense.bias)  # (N, D)


class FastPolicy:
    """`Policy.step`: one step of B episodes, only the newest frame through the network.

    Each block's keys and values of the last `memory` frames are kept in a ring (PolicyState.kv,
    (B, 2, h, memory, d), frame n of an episode at slot n % memory, keys already rotated to
    their positions); the newest frame's are written in place and it attends over the slots of
    its own episode. The blocks run as plain functional calls on weights gathered once, the
    rotary embedding as one batched matrix product: a step costs little more than its arithmetic."""

    def __init__(self, policy: nn.Module):
        cfg = policy.cfg
        self.params = list(policy.parameters())  # whose changes `current` notices
        self.key = weights_key(self.params)
        self.encoder = FastEncoder(policy.encoder)
        self.heads, self.memory, self.hidden = cfg.num_heads, cfg.memory, cfg.hidden
        self.blocks = [Block(b) for b in policy.blocks]
        self.norm, self.head = _plain(policy.norm), _plain(policy.head)
        self.task_embed = None if policy.task_embed is None else policy.task_embed.weight  # (tasks + 1, D)
        self.device = self.params[0].device
        d = cfg.hidden // cfg.num_heads
        half = d // 2
        # the per-episode bookkeeping is a few tiny arrays: numpy on the host costs a tenth of torch's op overhead
        self.freqs = 100.0 ** (np.arange(half, dtype=np.float64) / -half)  # (d / 2,) as `rotary`
        # x @ (cos I + sin J) rotates x's pairs (i, i + d/2) as `rotate` does
        self.eye = np.eye(d, dtype=np.float32)
        self.turn = np.zeros((d, d), np.float32)
        self.turn[np.arange(half) + half, np.arange(half)] = -1.0
        self.turn[np.arange(half), np.arange(half) + half] = 1.0
        self.slots = np.arange(cfg.memory)
        self.rows: dict[int, torch.Tensor] = {}

    def current(self) -> bool:
        """False once the policy's weights changed (moved, loaded, trained) after this was built."""
        return weights_key(self.params) == self.key

    def __deepcopy__(self, memo):  # a copied policy builds its own (oneDNN's packed weights do not copy)
        return None

    def step(self, obs: torch.Tensor, state, reset: torch.Tensor | None = None, task: torch.Tensor | None = None):
        """obs (B, H, W, 3) uint8, state: a PolicyState (its rings updated in place), reset (B,)
        bool or None, task (B,) int64 embedding rows or None (no task) -> logits {"buttons": (B, 20),
        "camera": (B, 2, 11)} and the new state."""
        from .model import PolicyState, split_logits, task_head

        count = state.count.cpu().numpy()  # (B,) frames each episode has seen
        if reset is not None:
            count = np.where(reset.cpu().numpy(), 0, count)
        B, M, device = len(count), self.memory, self.device
        slot = count % M  # (B,) where this frame's keys and values go
        visible = (slot[:, None] - self.slots) % M <= count[:, None]  # (B, M): this episode's last count + 1 frames
        angle = count[:, None] * self.freqs  # (B, d / 2) as `rotary`
        cos, sin = np.tile(np.cos(angle), 2).astype(np.float32), np.tile(np.sin(angle), 2).astype(np.float32)  # (B, d)
        turn = cos[:, None] * self.eye + sin[:, None] * self.turn  # (B, d, d) each episode's rotation
        rows = self.rows.get(B)
        if rows is None:
            rows = self.rows[B] = torch.arange(B, device=device)
        slot_t, turn_t = torch.from_numpy(slot).to(device), torch.from_numpy(turn).to(device)
        visible_t = torch.from_numpy(visible).to(device)[:, None, None]  # (B, 1, 1, M)
        x = self.encoder(obs)  # (B, D): every episode's frame in one call
        if self.task_embed is not None:
            x = x + (self.task_embed[task] if task is not None else self.task_embed[0])
        for block, cache in zip(self.blocks, state.kv, strict=True):
            x = block(x, turn_t, cache, rows, slot_t, visible_t, self.heads)
        x = F.layer_norm(x, (self.hidden,), *self.norm)
        logits = split_logits(task_head(F.linear(x, *self.head), task))  # each episode's task's head
        return logits, PolicyState(state.kv, torch.from_numpy(count + 1).to(device))


def _plain(module: nn.Module) -> tuple:
    """(weight, bias[, eps]) of a Linear or LayerNorm, for the functional call."""
    return (module.weight, module.bias, module.eps) if isinstance(module, nn.LayerNorm) else (module.weight, module.bias)


class Block:
    """`CausalBlock.forward` for the newest frame of B episodes, given the kept keys and values."""

    def __init__(self, block: nn.Module):
        self.norm1, self.qkv, self.proj = _plain(block.norm1), _plain(block.qkv), _plain(block.proj)
        self.norm2, self.up, self.down = _plain(block.norm2), _plain(block.mlp[0]), _plain(block.mlp[2])

    def __call__(self, x: torch.Tensor, turn: torch.Tensor, cache: torch.Tensor, rows: torch.Tensor, slot: torch.Tensor,
                 visible: torch.Tensor, heads: int) -> torch.Tensor:
        """x (B, D); turn (B, d, d) rotations; cache: keys and values (B, 2, h, M, d), this frame's
        written at [rows, :, :, slot]; visible (B, 1, 1, M) bool -> (B, D)."""
        B, D = x.shape
        qkv = F.linear(F.layer_norm(x, (D,), *self.norm1), *self.qkv).view(B, 3, heads, D // heads)  # (B, 3, h, d)
        qkv[:, :2] = torch.bmm(qkv[:, :2].reshape(B, 2 * heads, -1), turn).view(B, 2, heads, -1)  # at their positions
        cache[rows, :, :, slot] = qkv[:, 1:]  # keys and values (B, 2, h, d)
        att = F.scaled_dot_product_attention(qkv[:, 0, :, None], cache[:, 0], cache[:, 1], attn_mask=visible)  # (B, h, 1, d)
        x = x + F.linear(att.view(B, D), *self.proj)  # (B, D)
        h = F.gelu(F.linear(F.layer_norm(x, (D,), *self.norm2), *self.up))  # (B, mlp_ratio D)
        return x + F.linear(h, *self.down)
