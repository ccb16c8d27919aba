"""Closed-loop play arranged for speed: what `Policy.step` runs (the eval's actors call it every step).

    player = policy.player()                          # FastPolicy: weights gathered once (again when they change)
    logits, state = player.step(obs, state, reset)    # as policy.step: obs (B, H, W, 3) uint8, B episodes
    x = player.encoder(obs)                           # FastEncoder: (B, hidden), as policy.encoder(obs)
    player, runtime = closed_loop_player(policy, "auto", batch=16)  # OnnxPolicy on a CPU (runtime "onnxruntime")

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

On a CPU, `OnnxPolicy` runs the same step as one ONNX Runtime graph (`StepGraph`, exported from
the policy's modules once per set of weights, batch size and process): at these sizes each torch call costs
more in dispatch than in arithmetic, and ONNX Runtime runs the graph's 128 nodes (tiny preset) with
less overhead a node (MLAS convolutions in a blocked layout, fused matrix products). The kept keys and
values stay in `PolicyState.kv`: the graph reads the ring, returns the newest frame's keys and
values, and attends over the ring's visible slots plus the newest frame, so nothing but those is
copied. In the eval loop (benchmarks/bench_agent.py, the tiny preset, 16 episodes) its step costs
about 0.65x FastPolicy's; logits agree to 1e-5 (tests/test_agent.py).
"""

from __future__ import annotations

import hashlib
import io
import warnings

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
        self.positions = Positions(cfg)
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

        count, slot, visible, turn = self.positions(state.count, reset)
        B, device = len(count), self.device
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


class Positions:
    """The per-episode bookkeeping of a closed-loop step: where each episode's newest frame goes in
    the key and value rings, which slots it sees, and its rotary rotation. A few tiny arrays: numpy
    on the host costs a tenth of torch's op overhead."""

    def __init__(self, cfg) -> None:
        d = cfg.hidden // cfg.num_heads
        half = d // 2
        self.memory = cfg.memory
        self.freqs = 100.0 ** (np.arange(half, dtype=np.float64) / -half)  # (d / 2,) as `rotary`
        # x @ (cos I + sin J) rotates x's pairs (i, i + d/2) as `rotate` does
        self.eye = np.eye(d, dtype=np.float32)
        self.turn = np.zeros((d, d), np.float32)
        self.turn[np.arange(half) + half, np.arange(half)] = -1.0
        self.turn[np.arange(half), np.arange(half) + half] = 1.0
        self.slots = np.arange(cfg.memory)

    def __call__(self, count: torch.Tensor, reset: torch.Tensor | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """count (B,) frames each episode has seen, reset (B,) bool or None -> count after the resets
        (B,) int64, slot (B,) where this frame's keys and values go, visible (B, M) bool: the slots
        holding this episode's last count + 1 frames (this one's included), turn (B, d, d) float32."""
        count = count.cpu().numpy()
        if reset is not None:
            count = np.where(reset.cpu().numpy(), 0, count)
        M = self.memory
        slot = count % M
        visible = (slot[:, None] - self.slots) % M <= count[:, None]
        angle = count[:, None] * self.freqs  # (B, d / 2) as `rotary`
        cos, sin = np.tile(np.cos(angle), 2).astype(np.float32), np.tile(np.sin(angle), 2).astype(np.float32)  # (B, d)
        return count, slot, visible, cos[:, None] * self.eye + sin[:, None] * self.turn


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


RUNTIMES = ("auto", "onnxruntime", "torch")
_SESSIONS: dict[str, object] = {}  # weights digest -> ONNX Runtime session: an eval actor's runners share one per policy
MAX_SESSIONS = 4


class StepGraph(nn.Module):
    """`FastPolicy.step`'s arithmetic as one traceable module, exported to ONNX for `OnnxPolicy`.

    forward(frames (B, H, W, 3) uint8, task (B,) int64 embedding rows, turn (B, d, d) rotations,
    before (B, 1, 1, M) bool: the ring's slots holding this episode's earlier frames, *rings (B, 2,
    h, M, d) per block) -> logits (B, 42) of each episode's task's head, then per block the newest
    frame's keys (rotated) and values, (B, h, d) each. Attention runs over the ring's visible slots and
    the newest frame's own key, so the ring is only read (the caller writes the returned keys and
    values into it): the softmax over both is the one `Block` takes after writing the slot."""

    def __init__(self, policy: nn.Module):
        super().__init__()
        cfg = policy.cfg
        self.policy, self.heads = policy, cfg.num_heads
        weight, bias, self.stride, self.padding = fuse_stem(policy.encoder.stem, policy.encoder.stacks[0].conv,
                                                            (cfg.height, cfg.width))
        self.register_buffer("stem_weight", weight, persistent=False)
        self.register_buffer("stem_bias", bias.contiguous(), persistent=False)
        # each block's qkv as two products: queries (pre-scaled by 1/sqrt(d): rotation is linear) with keys, and values
        D, d = cfg.hidden, cfg.hidden // cfg.num_heads
        scale = torch.cat([torch.full((D,), d ** -0.5), torch.ones(D)])[:, None]
        with torch.no_grad():
            self.qk = [(b.qkv.weight[:2 * D] * scale, b.qkv.bias[:2 * D] * scale[:, 0]) for b in policy.blocks]
            self.v = [(b.qkv.weight[2 * D:].clone(), b.qkv.bias[2 * D:].clone()) for b in policy.blocks]

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (B, H, W, 3) uint8 -> (B, D), as `FastEncoder` computes it."""
        encoder = self.policy.encoder
        x = F.conv2d(frames.permute(0, 3, 1, 2).float(), self.stem_weight, None, self.stride, self.padding) + self.stem_bias
        for i, stack in enumerate(encoder.stacks):
            if i:
                x = stack.conv(x)
            if not stack.strided:
                x = F.max_pool2d(x, 3, stride=2, padding=1)
            for b in stack.blocks:
                x = x + b.conv2(F.relu(group_norm(b.norm2, b.conv1(F.relu(group_norm(b.norm1, x))))))
        return encoder.hidden_dense(F.relu(encoder.frame_dense(F.relu(x).flatten(1))))

    def forward(self, frames: torch.Tensor, task: torch.Tensor, turn: torch.Tensor, before: torch.Tensor,
                *rings: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from .model import ACTION_LOGITS

        policy, h = self.policy, self.heads
        x = self.encode(frames)
        B, D = x.shape
        d = D // h
        if policy.task_embed is not None:
            x = x + policy.task_embed(task)
        new = []
        for block, (wqk, bqk), (wv, bv), ring in zip(policy.blocks, self.qk, self.v, rings, strict=True):
            x_norm = block.norm1(x)
            q, k = torch.matmul(F.linear(x_norm, wqk, bqk).view(B, 2 * h, d), turn).split(h, 1)  # at their positions
            v = F.linear(x_norm, wv, bv).view(B, h, d)
            new += [k, v]  # (B, h, d) each
            earlier = torch.matmul(q[:, :, None], ring[:, 0].transpose(-1, -2))  # (B, h, 1, M)
            earlier = earlier.masked_fill(~before, float("-inf"))
            own = (q * k).sum(-1, keepdim=True)[:, :, None]  # (B, h, 1, 1)
            p = torch.softmax(torch.cat([earlier, own], -1), -1)
            att = torch.matmul(p[..., :-1], ring[:, 1]) + p[..., -1:] * v[:, :, None]  # (B, h, 1, d)
            x = x + block.proj(att.reshape(B, D))
            x = x + block.mlp[2](block.mlp[1](block.mlp[0](block.norm2(x))))
        out = policy.head(policy.norm(x))
        if out.shape[-1] != ACTION_LOGITS:  # a head per task: each episode's own
            out = out.view(B, -1, ACTION_LOGITS).gather(1, task.view(B, 1, 1).expand(B, 1, ACTION_LOGITS))[:, 0]
        return (out, *new)


def group_norm(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """norm(x), exported as one InstanceNormalization node where each group is one channel (the
    exporter's GroupNorm is five: reshape, normalise, reshape, scale, shift)."""
    if norm.num_groups == norm.num_channels:
        return F.instance_norm(x, weight=norm.weight, bias=norm.bias, eps=norm.eps)
    return norm(x)


def weights_digest(policy: nn.Module) -> str:
    """A digest of a policy's config and weights: names the exported graph."""
    digest = hashlib.blake2b(repr(policy.cfg).encode(), digest_size=16)
    for name, tensor in policy.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def export_step(policy: nn.Module, batch: int) -> bytes:
    """The policy's closed-loop step (`StepGraph`) for `batch` episodes as an ONNX model. The batch is
    fixed: a free one adds about 50 shape nodes (Shape, Gather, Concat) to a graph of 130."""
    cfg = policy.cfg
    h, d, B = cfg.num_heads, cfg.hidden // cfg.num_heads, batch
    args = (torch.zeros(B, cfg.height, cfg.width, 3, dtype=torch.uint8), torch.zeros(B, dtype=torch.int64),
            torch.eye(d).expand(B, d, d).contiguous(), torch.ones(B, 1, 1, cfg.memory, dtype=torch.bool),
            *(torch.zeros(B, 2, h, cfg.memory, d) for _ in range(cfg.num_layers)))
    inputs = ["frames", "task", "turn", "before", *(f"ring{i}" for i in range(cfg.num_layers))]
    outputs = ["logits", *(f"{kv}{i}" for i in range(cfg.num_layers) for kv in "kv")]
    buf = io.BytesIO()
    graph = StepGraph(policy).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation, tracer notes
        torch.onnx.export(graph, args, buf, dynamo=False, opset_version=18, input_names=inputs, output_names=outputs,
                          training=torch.onnx.TrainingMode.EVAL)
    return buf.getvalue()


def step_session(policy: nn.Module, batch: int):
    """An ONNX Runtime session of the policy's step of `batch` episodes on the CPU, one thread per torch
    thread; kept for the next runner of the same weights and batch in this process."""
    import onnxruntime as ort

    key = f"{weights_digest(policy)}-{batch}"
    session = _SESSIONS.get(key)
    if session is None:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(export_step(policy, batch), options, providers=["CPUExecutionProvider"])
        while len(_SESSIONS) >= MAX_SESSIONS:
            _SESSIONS.pop(next(iter(_SESSIONS)))
        _SESSIONS[key] = session
    return session


class OnnxPolicy:
    """`Policy.step` on a CPU through ONNX Runtime (module docstring): the same inputs, outputs and
    state as `FastPolicy.step`, the rings updated in place. A graph per batch size, exported when
    a step first has that many episodes."""

    def __init__(self, policy: nn.Module, batch: int | None = None):
        self.policy = policy
        self.params = list(policy.parameters())
        self.key = weights_key(self.params)
        self.positions = Positions(policy.cfg)
        self.sessions: dict[int, tuple[object, set[str]]] = {}
        if batch:
            self.session(batch)

    def session(self, batch: int) -> tuple[object, set[str]]:
        """The graph of `batch` episodes and its input names (no `task` in an unconditioned policy's)."""
        if batch not in self.sessions:
            session = step_session(self.policy, batch)
            self.sessions[batch] = session, {i.name for i in session.get_inputs()}
        return self.sessions[batch]

    def current(self) -> bool:
        """False once the policy's weights changed after this was built."""
        return weights_key(self.params) == self.key

    def step(self, obs: torch.Tensor, state, reset: torch.Tensor | None = None, task: torch.Tensor | None = None):
        """As `FastPolicy.step`: obs (B, H, W, 3) uint8 -> logits {"buttons": (B, 20), "camera": (B, 2, 11)} and
        the new state (its rings, CPU tensors, updated in place)."""
        from .model import PolicyState, split_logits

        count, slot, visible, turn = self.positions(state.count, reset)
        B = len(count)
        session, inputs = self.session(B)
        rings = [kv.numpy() for kv in state.kv]  # (B, 2, h, M, d) each: views of the state's tensors
        feeds = {"frames": np.ascontiguousarray(obs.numpy()), "turn": turn,
                 "before": (visible & (self.positions.slots != slot[:, None]))[:, None, None],
                 **{f"ring{i}": ring for i, ring in enumerate(rings)}}
        if "task" in inputs:
            feeds["task"] = task.numpy() if task is not None else np.zeros(B, np.int64)
        logits, *kvs = session.run(None, feeds)
        rows = np.arange(B)
        for i, ring in enumerate(rings):  # the newest frame's keys and values, at its slot
            ring[rows, 0, :, slot], ring[rows, 1, :, slot] = kvs[2 * i], kvs[2 * i + 1]
        return split_logits(torch.from_numpy(logits)), PolicyState(state.kv, torch.from_numpy(count + 1))


def closed_loop_player(policy: nn.Module, runtime: str = "auto", batch: int = 1) -> tuple[object, str, str]:
    """(what plays `policy`'s steps of `batch` episodes, the runtime's name, a note): `OnnxPolicy` for
    "onnxruntime", and for "auto" on a CPU where ONNX Runtime is installed and the export works;
    `FastPolicy` for "torch" and elsewhere. The note says why "auto" fell back to torch on a CPU (the
    caller prints it once: an eval's actors each build a player); "" otherwise. UserError where
    "onnxruntime" cannot be had."""
    from worldloom.errors import UserError

    if runtime not in RUNTIMES:
        raise UserError(f"--runtime {runtime}: one of {', '.join(RUNTIMES)}")
    on_cpu = next(policy.parameters()).device.type == "cpu"
    if runtime == "torch" or (runtime == "auto" and not on_cpu):
        return policy.player(), "torch", ""
    if not on_cpu:
        raise UserError(f"--runtime onnxruntime plays on the CPU, but the policy is on {next(policy.parameters()).device}: "
                        "use --device cpu, or --runtime torch on a GPU")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        if runtime == "onnxruntime":
            raise UserError("--runtime onnxruntime: ONNX Runtime is not installed (pip install onnx onnxruntime), "
                            "or use --runtime torch") from None
        return policy.player(), "torch", "ONNX Runtime is not installed (pip install onnx onnxruntime)"
    try:
        return OnnxPolicy(policy, batch), "onnxruntime", ""  # exported and loaded here, where a failure can fall back
    except Exception as err:  # an exporter this torch lacks, a graph this onnxruntime refuses: play on torch
        why = f"the policy's step did not export to ONNX ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        if runtime == "onnxruntime":
            raise UserError(f"--runtime onnxruntime: {why}; use --runtime torch") from None
        return policy.player(), "torch", why
