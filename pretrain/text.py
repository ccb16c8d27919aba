"""The caption encoder of a text-conditioned world model, trained from scratch with it (no download).

    worldloom pretrain train --data data/env --out runs/wm-text --text              # captions from the data
    worldloom pretrain rollout --model runs/wm-text --prompt "walking in the desert at night" --out p.gif

    from worldloom.pretrain.text import TextConfig, TextEncoder, build_vocab, tokenize
    vocab = build_vocab(["data/env"])                  # the captions' words (UserError if there are none)
    tokens = tokenize(["walks in the desert at night"], TextConfig(vocab=vocab))   # (B, max_words) int64
    emb = TextEncoder(TextConfig(vocab=vocab), width=128)(tokens)                   # (B, 128)

Captions are engine-exact and made by rules (datasets/captions.py, the datasets' `caption`
column), so their language is small: a word-level vocabulary of the rules' phrasings plus the
words of the training captions (item and block names) is all of it, and an unknown word of a
prompt maps to one `<unk>` id. The encoder embeds the words, adds a learned position, runs
`layers` pre-norm transformer blocks (0: a bag of embeddings), mean-pools the words and maps the
result through an MLP to the world model's width; the world model adds it to every frame's
adaLN condition beside the noise level and the action (pretrain/model.py). A caption with no
words (none in the data, dropped for classifier-free guidance) gets a learned null embedding.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from worldloom.config import doc
from worldloom.errors import UserError

PAD, UNK = 0, 1  # token ids before the vocabulary's
WORD = re.compile(r"[a-z]+")


@dataclasses.dataclass(frozen=True)
class TextConfig:
    layers: int = doc("transformer blocks of the caption encoder (0: a bag of word embeddings and an MLP)", 1)
    num_heads: int = doc("attention heads of the encoder's blocks", 4)
    max_words: int = doc("words read from a caption (the rest are cut)", 32)
    vocab: tuple[str, ...] = doc("the encoder's words: the caption rules' and the training captions' (set by training)", ())

    def __post_init__(self):
        for name, low in (("layers", 0), ("num_heads", 1), ("max_words", 1)):  # one line for the field that is wrong
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if len(set(self.vocab)) != len(self.vocab) or not all(isinstance(w, str) and WORD.fullmatch(w) for w in self.vocab):
            raise ValueError("vocab must be distinct lower-case words")


def words(text: str) -> list[str]:
    """A caption or prompt as lower-case words (punctuation and digits dropped; accents taken off, so a
    typed "désert" is the captions' "desert", not "d" and "sert")."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return WORD.findall(plain.lower())


def in_vocab(word: str, vocab: set[str] | dict[str, int]) -> str | None:
    """`word`, or the vocabulary's form of the same verb or noun where the word itself is not in it (the
    captions say "walks", "trees"; a prompt says "walking", "walked", "walk", "tree": each read as the
    captions' form), else None. Tried in order: the word, +s, +es, -ing/-ed +s (a doubled last consonant
    single: running -> runs), -s."""
    if word in vocab:
        return word
    stems = [word]
    for ending in ("ing", "ed"):
        if word.endswith(ending) and len(word) > len(ending) + 2:
            stem = word[:-len(ending)]
            stems += [stem, stem[:-1]] if len(stem) > 2 and stem[-1] == stem[-2] else [stem, stem + "e"]
    tries = [f(stem) for stem in stems for f in (lambda w: w + "s", lambda w: w + "es")]
    tries += [word[:-1]] if word.endswith("s") and len(word) > 3 else []
    return next((w for w in tries if w in vocab), None)


def rule_words() -> set[str]:
    """Every word the caption rules can write (datasets/captions.py's phrasings)."""
    from worldloom.datasets import captions as rules

    phrases = [p for table in (rules.ACTIVITY, rules.TURN, rules.BIOME, rules.TIME) for ps in table.values() for p in ps]
    phrases += [*rules.HELD, *rules.EMPTY_HANDED, *rules.COLLECT, *rules.PLACE, *rules.TARGET, "a an and then is"]
    return {w for p in phrases for w in words(p)}


def build_vocab(paths: Sequence[str]) -> tuple[str, ...]:
    """The sorted words of the caption rules and of the `caption` column of every dataset in `paths`;
    UserError naming the datasets when none of them holds a caption."""
    from worldloom.datasets import Dataset
    from worldloom.datasets.schema import CAPTION_COLUMN

    seen: set[str] = set()
    num_captions = 0
    for path in paths:
        ds = Dataset(path)
        if ds.version < 3:
            continue
        for shard in ds.manifest["shards"]:
            column = ds.read_shard(shard["path"], [CAPTION_COLUMN]).column(CAPTION_COLUMN)
            for text in column.unique().to_pylist():
                if text:
                    num_captions += 1
                    seen.update(words(text))
    if not num_captions:
        raise UserError(f"--text: no captions in {', '.join(paths)} (the `caption` column of format version 3 is null or "
                        "absent); capture the data with `worldloom capture` (envs that report state), or caption an "
                        "older dataset with `worldloom dataset merge OLD --out NEW`")
    return tuple(sorted(seen | rule_words()))


def tokenize(texts: Sequence[str], cfg: TextConfig) -> torch.Tensor:
    """Captions -> word ids (B, max_words) int64: PAD-padded, UNK for words outside the vocabulary."""
    index = {w: i + 2 for i, w in enumerate(cfg.vocab)}
    out = torch.full((len(texts), cfg.max_words), PAD, dtype=torch.int64)
    for b, text in enumerate(texts):
        ids = [index.get(in_vocab(w, index) or "", UNK) for w in words(text or "")][: cfg.max_words]
        out[b, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
    return out


class TextBlock(nn.Module):
    """Pre-norm self-attention over a caption's words (padding masked out), then an MLP."""

    def __init__(self, width: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"), nn.Linear(4 * width, width))

    def forward(self, h, keep):
        # h (B, L, D); keep (B, L) bool, at least one True per row
        B, L, D = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(B, L, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])  # (B, H, L, Dh)
        h = h + self.proj(out.transpose(1, 2).reshape(B, L, D))
        return h + self.mlp(self.norm2(h))


class TextEncoder(nn.Module):
    """Word ids (B, L) -> caption embeddings (B, width); all-PAD rows get the learned null embedding."""

    def __init__(self, cfg: TextConfig, width: int):
        super().__init__()
        if width % cfg.num_heads:
            raise ValueError(f"the world model's width {width} must split into {cfg.num_heads} text heads")
        self.cfg = cfg
        self.embed = nn.Embedding(len(cfg.vocab) + 2, width, padding_idx=PAD)
        self.pos = nn.Parameter(torch.randn(cfg.max_words, width) * 0.02)
        self.blocks = nn.ModuleList(TextBlock(width, cfg.num_heads) for _ in range(cfg.layers))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.null = nn.Parameter(torch.randn(width) * 0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens[:, : self.cfg.max_words]
        keep = tokens != PAD  # (B, L)
        empty = ~keep.any(dim=1)  # (B,)
        keep = keep | (empty[:, None] & (torch.arange(tokens.shape[1], device=tokens.device) == 0))  # no all-masked row
        h = self.embed(tokens) + self.pos[: tokens.shape[1]]  # (B, L, D)
        for block in self.blocks:
            h = block(h, keep)
        pooled = (h * keep[..., None]).sum(dim=1) / keep.sum(dim=1, keepdim=True)  # (B, D)
        e = self.out(pooled)
        return torch.where(empty[:, None], self.null.to(e.dtype), e)


__all__ = ["TextConfig", "TextEncoder", "build_vocab", "rule_words", "tokenize", "words"]
