"""The text-conditioned world model: the caption encoder, training on a captured dataset's captions,
save and load, prompt-only and prompt-plus-context rollouts, and a prompt to a model without captions.

    pytest tests/test_pretrain_text.py -q
"""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors import safe_open

from worldloom.capture import Recorder
from worldloom.capture.config import EpisodeSpec
from worldloom.datasets import commit_shards
from worldloom.envs import make_env
from worldloom.pipeline.cli import main as cli
from worldloom.pretrain.checkpoint import load_world_model
from worldloom.pretrain.flow import (
    FlowConfig,
    SampleConfig,
    drop_text_and_context,
    prompt_rollout,
    rollout,
)
from worldloom.pretrain.model import WorldModel, WorldModelConfig
from worldloom.pretrain.text import (
    PAD,
    UNK,
    TextConfig,
    TextEncoder,
    in_vocab,
    rule_words,
    tokenize,
)

MICRO = ["--model.width", "32", "--model.depth", "1", "--model.num-heads", "2", "--model.image-size", "32",
         "--camera-fov-deg", "0", "--threads", "1", "--batch-size", "4", "--checkpoint-every", "2"]


@pytest.fixture(scope="module")
def captioned(tmp_path_factory):
    """Two 60-step VoxelWorld episodes (small world, 64x64) with their captions, and the same as footage."""
    root = tmp_path_factory.mktemp("text")
    targets = {"env": str(root / "env"), "none": str(root / "none")}
    specs = [EpisodeSpec(f"ep-{i}", i, "voxel", seed=3 + i, player="mixture", steps=60, height=64, width=64)
             for i in range(2)]
    rec = Recorder(targets, env="voxel", height=64, width=64,
                   make_env=lambda name, h, w: make_env(name, height=h, width=w, world_size=(32, 32, 32)))
    result = rec.record([(spec, ("env", "none")) for spec in specs])
    for label, where in targets.items():
        commit_shards(where, result["shards"][label])
    return root, targets


def test_tokens_encoder_and_dropout():
    cfg = TextConfig(vocab=tuple(sorted(rule_words())), max_words=6)
    tokens = tokenize(["Walks in the DESERT at night!", "", "zebra walks"], cfg)
    assert tokens.shape == (3, 6) and tokens.dtype == torch.int64
    assert (tokens[0, :6] > UNK).all() and (tokens[1] == PAD).all() and tokens[2, 0] == UNK and tokens[2, 2] == PAD
    # accents come off ("désert" was read as "d" and "sert"): the same ids as the captions' own spelling
    assert torch.equal(tokenize(["Walks in the DÉSERT at níght"], cfg), tokenize(["walks in the desert at night"], cfg))
    # a prompt's other forms of the captions' verbs and nouns are read as theirs; a word of no caption stays unknown
    assert torch.equal(tokenize(["walking, running among the tree"], cfg), tokenize(["walks runs among the trees"], cfg))
    assert [in_vocab(w, set(cfg.vocab)) for w in ("walked", "swimming", "spinning", "forward")] == \
        ["walks", "swims", "spins", None]
    for layers in (0, 1):
        enc = TextEncoder(dataclass_replace(cfg, layers=layers), width=16)
        e = enc(tokens)
        assert e.shape == (3, 16) and torch.isfinite(e).all()
        assert torch.equal(e[1], enc.null) and not torch.equal(e[0], enc.null)
    # caption dropout empties a window's words; context dropout blanks its frames before the last, unscored
    text = tokens[:1].expand(4000, -1)
    t, weight, keep = torch.rand(4000, 3) * 0.1, torch.zeros(4000, 3), torch.ones(4000, 3, dtype=torch.bool)
    weight[:, -1] = 1
    out, t2, w2, k2 = drop_text_and_context(text, t, weight, keep, FlowConfig(caption_dropout=0.1, context_dropout=0.2),
                                            torch.Generator().manual_seed(0))
    assert 0.07 < (out == PAD).all(dim=1).float().mean() < 0.13
    blank = (t2[:, :2] == 1).all(dim=1)
    assert 0.17 < blank.float().mean() < 0.23 and (w2[blank, :2] == 0).all() and (w2[:, -1] == 1).all()
    assert not k2[blank].any() and k2[~blank].all()


def dataclass_replace(cfg, **kw):
    import dataclasses

    return dataclasses.replace(cfg, **kw)


def test_the_caption_changes_the_prediction_and_guidance_runs():
    torch.manual_seed(0)
    cfg = WorldModelConfig(image_size=16, patch_size=8, width=32, depth=1, num_heads=2, num_frames=3)
    model = WorldModel(cfg, TextConfig(vocab=tuple(sorted(rule_words())))).eval()
    for p in model.parameters():  # adaLN-zero starts every branch at identity: perturb so the condition shows
        p.data.add_(torch.randn_like(p) * 0.05)
    text = tokenize(["walks in the desert at night", "swims on open water by day"], model.text_cfg)
    x, t = torch.randn(2, 3, 3, 16, 16), torch.rand(2, 3)
    a, m = torch.zeros(2, 3, 24), torch.zeros(2, 3, dtype=torch.bool)
    v = model(x, t, a, m, text=text)
    assert not torch.allclose(v, model(x, t, a, m, text=text.flip(0)))
    assert torch.allclose(model(x, t, a, m), model(x, t, a, m, text=torch.zeros_like(text)))  # None: the null caption
    with pytest.raises(ValueError, match="no caption encoder"):
        WorldModel(cfg)(x, t, a, m, text=text)
    g = torch.Generator().manual_seed(1)
    out = prompt_rollout(model, text, 3, SampleConfig(num_steps=1, guidance=2.0, context_noise=0.0), g)
    assert out.shape == (2, 3, 3, 16, 16) and torch.isfinite(out).all()
    ctx = torch.rand(2, 2, 3, 16, 16) * 2 - 1
    out = rollout(model, ctx, torch.zeros(2, 4, 24), torch.zeros(2, 4, dtype=torch.bool), 3,
                  SampleConfig(num_steps=2, guidance=1.5), g, text=text)
    assert out.shape == (2, 3, 3, 16, 16)


def test_train_with_captions_save_load_and_prompt_rollouts(captioned, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("worldloom.progress.SHOW_AFTER_S", 0.0)  # every stage on the bar, however quick
    _, targets = captioned
    run = tmp_path / "wm-text"
    assert cli(["pretrain", "train", "--data", targets["env"], "--out", str(run), "--max-steps", "4", "--stop-after", "3",
                "--text", *MICRO]) == 0  # stopped at 3 of 4: resumed at the end
    doc = json.loads((run / "config.json").read_text())
    vocab = doc["text"]["vocab"]
    assert {"desert", "night", "walks", "holding"} <= set(vocab) and doc["text"]["layers"] == 1
    with safe_open(str(run / "checkpoint" / "ema.safetensors"), framework="pt") as f:
        assert any(k.startswith("text.embed") for k in f.keys())
    model, _, _ = load_world_model(run)
    assert model.text_cfg.vocab == tuple(vocab)
    # a prompt alone: frames from blanks
    gif = tmp_path / "prompt.gif"
    assert cli(["pretrain", "rollout", "--model", str(run), "--prompt", "desert at night, walking forward", "--horizon", "4",
                "--out", str(gif), "--scale", "2"]) == 0
    captured = capsys.readouterr()  # the issue's own prompt: "walking" is the captions' "walks", "forward" none of theirs
    assert "4 frames after 0 real ones" in captured.out and "read as <unk>: forward\n" in captured.err, captured.err
    with Image.open(gif) as im:  # (GIF merges equal frames: an untrained model's from a blank are)
        assert im.size[0] == 64 and im.size[1] > 64  # 32 px x 2, the prompt's bar above
    text = tokenize(["desert at night, walking forward"], model.text_cfg)
    assert (text[0, :4] == tokenize(["desert at night walks"], model.text_cfg)[0, :4]).all() and text[0, 4] == UNK
    frames = prompt_rollout(model, text, 4, SampleConfig(num_steps=1), torch.Generator().manual_seed(0))
    assert frames.shape == (1, 4, 3, 32, 32) and torch.isfinite(frames).all()
    # a prompt and an episode's context
    both = tmp_path / "both.gif"
    assert cli(["pretrain", "rollout", "--model", str(run), "--prompt", "sprints in a forest by day", "--data",
                targets["env"], "--episode", "ep-0", "--horizon", "3", "--out", str(both), "--scale", "1"]) == 0
    with Image.open(both) as im:
        assert im.n_frames == 2 + 3 and im.size[0] == 2 * 32 + 2
    # the retrieval score: a state classifier on real frames reads prompt-only rollouts and real clips
    out = tmp_path / "retrieval"
    capsys.readouterr()
    assert cli(["pretrain", "retrieval", "--model", str(run), "--data", targets["env"], "--heldout", targets["env"],
                "--num-clips", "3", "--horizon", "2", "--classifier-steps", "3", "--classifier-frames", "32",
                "--batch-size", "2", "--out", str(out)]) == 0
    err = capsys.readouterr().err  # a bar over the stages, naming the one running, in order
    stages = [", loading the world model]", ", generating rollouts]", ", reading labeled frames]",
              ", state classifier 1 of 3]", ", writing the report]", "pretrain retrieval: retrieval.json, retrieval.md in"]
    assert all(stage in err for stage in stages) and sorted(stages, key=err.index) == stages, err
    report = json.loads((out / "retrieval.json").read_text())
    assert report["num_clips"] == 3 and report["classifier"]["frames"] >= 32
    for fact in ("biome", "time"):
        s = report["scores"][fact]
        assert all(0 <= s[k] <= 1 for k in ("real", "prompt", "null")) and s["classes_in_prompts"]
        # by class: every clip counted once, each class's prompt-only clips read by each of the 3 judges
        assert sorted(s["by_class"]) == s["classes_in_prompts"]
        assert sum(c["clips"] for c in s["by_class"].values()) == 3
        assert all(sum(c["prompt_read_as"].values()) == 3 * c["clips"] for c in s["by_class"].values())
    assert "prompt / real" in (out / "retrieval.md").read_text() and "read as" in (out / "retrieval.md").read_text()
    # resuming keeps the vocabulary; the plain rollout of a text model still runs (null caption)
    assert cli(["pretrain", "train", "--data", targets["env"], "--out", str(run), "--max-steps", "4", "--text", *MICRO]) == 0
    assert json.loads((run / "config.json").read_text())["text"]["vocab"] == vocab


def test_bad_input(captioned, tmp_path, capsys):
    _, targets = captioned
    plain = tmp_path / "wm"
    assert cli(["pretrain", "train", "--data", targets["env"], "--out", str(plain), "--max-steps", "1", *MICRO]) == 0
    assert "text" not in json.loads((plain / "config.json").read_text())  # off by default: config as before
    capsys.readouterr()
    assert cli(["pretrain", "rollout", "--model", str(plain), "--prompt", "walks", "--out", str(tmp_path / "p.gif")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(plain) in err and "trained without captions" in err and "--text" in err
    # --text on footage (no caption column values): one line, nothing trained (without actions too,
    # else the refusal of footage without actions comes first)
    assert cli(["pretrain", "train", "--data", targets["none"], "--out", str(tmp_path / "f"), "--max-steps", "1",
                "--text", "--no-use-actions", *MICRO]) == 2
    err = capsys.readouterr().err.strip()
    assert "no captions" in err and "\n" not in err
    assert cli(["pretrain", "retrieval", "--model", str(plain), "--data", targets["env"], "--heldout", targets["env"]]) == 2
    assert "trained without captions" in capsys.readouterr().err
    # neither a prompt nor an episode
    assert cli(["pretrain", "rollout", "--model", str(plain), "--out", str(tmp_path / "p.gif")]) == 2
    assert "--prompt" in capsys.readouterr().err


def test_a_text_model_trains_on_datasets_with_and_without_captions(captioned, tmp_path):
    """Captured data (captions) beside ingested plain video (no captions, no actions): the video's
    clips get the empty caption, which the encoder reads as its null embedding, and --text trains on both."""
    from recordings import frames_of

    from worldloom.datasets.ingest import IngestConfig, ingest
    from worldloom.io import write_video
    from worldloom.pretrain.data import train_batches

    _, targets = captioned
    write_video(tmp_path / "clips" / "c0.mp4", frames_of(60, 64), fps=20, pix_fmt="yuv444p", crf=10)
    video = str(tmp_path / "video")
    ingest(IngestConfig(data=(str(tmp_path / "clips"),), out=video, format="video"))
    batches = train_batches([targets["env"], video], clip_len=4, batch_size=8, seed=0)
    captions, sources = [], []
    for _ in range(4):
        batch = next(batches)
        captions += batch["caption"]
        sources += batch["source"]
    assert {s for s, c in zip(sources, captions, strict=True) if not c} == {1}  # the video's clips: no caption
    assert all(captions[k] for k, s in enumerate(sources) if s == 0) and 0 in sources and 1 in sources
    cfg = TextConfig(vocab=tuple(sorted(rule_words())))
    enc = TextEncoder(cfg, width=16)
    e = enc(tokenize(captions, cfg))
    empty = torch.tensor([not c for c in captions])
    assert torch.equal(e[empty], enc.null.expand(int(empty.sum()), -1)) and not torch.equal(e[~empty][0], enc.null)
    run = tmp_path / "wm-mix"
    assert cli(["pretrain", "train", "--data", targets["env"], video, "--out", str(run), "--max-steps", "2", "--text",
                *MICRO]) == 0
    assert (run / "checkpoint" / "ema.safetensors").is_file()
    assert {"walks", "holding"} <= set(json.loads((run / "config.json").read_text())["text"]["vocab"])


def test_a_prompt_of_no_known_word_is_one_line(captioned, tmp_path, capsys):
    """`rollout --prompt "zzz qqq"` (or "", or a typo of every word) rolled out from <unk> ids alone, exit 0: a
    video as if unprompted under the prompt's title. Now one line; a prompt partly known names its unknown words."""
    _, targets = captioned
    run = tmp_path / "wm-text"
    assert cli(["pretrain", "train", "--data", targets["env"], "--out", str(run), "--max-steps", "1", "--text", *MICRO]) == 0
    capsys.readouterr()
    argv = ["pretrain", "rollout", "--model", str(run), "--horizon", "1", "--out", str(tmp_path / "p.gif")]
    for prompt, words in (("zzz qqq", "none of its words is in"), ("", "it holds no word, and no word is in"),
                          ("42 !", "it holds no word"), ("zzz, qqq!", "none of its words (zzz qqq) is in")):
        assert cli([*argv, "--prompt", prompt]) == 2
        err = capsys.readouterr().err
        assert f"--prompt {prompt!r}: {words}" in err and f"{run}'s vocabulary" in err and err.count("\n") == 1, err
    assert cli([*argv, "--prompt", "zzz " * 1250]) == 2  # 5,000 characters were echoed twice: a 10 KB line
    err = capsys.readouterr().err
    assert len(err) < 600 and " z...': none of its words (zzz) is in" in err, err  # cut, each unknown word once
    assert not (tmp_path / "p.gif").exists()
    assert cli([*argv, "--prompt", "desert at nite"]) == 0
    assert f"pretrain rollout: --prompt: unknown to {run}, read as <unk>: nite" in capsys.readouterr().err
    # a prompt-only rollout has no episode to end it: every frame is held until the video is written, so a
    # --horizon past the free memory ran for half an hour before the machine ran out (a new-user trial,
    # 2026-12-07, measured 0.6 GB a 1,000 frames at 64x64); now one line before any frame is generated
    (tmp_path / "p.gif").unlink()
    assert cli([*argv[:-4], "--horizon", "100000000", "--out", str(tmp_path / "p.gif"), "--prompt", "desert"]) == 2
    err = capsys.readouterr().err
    assert ("--horizon 100000000: the rollout holds its frames in memory until the video is written, about " in err
            and "GiB free: give a smaller --horizon (at most " in err and err.count("\n") == 1), err
    assert not (tmp_path / "p.gif").exists()


def test_prompt_levels_and_prompt_steps():
    """prompt_levels puts the frame of some blank windows at a random noise level (the rest at the objective's),
    so prompt_rollout can draw its first frame in `prompt_steps` Euler steps and continue as any rollout does."""
    text = torch.ones(4000, 4, dtype=torch.int64)
    t, weight, keep = torch.rand(4000, 3) * 0.1, torch.zeros(4000, 3), torch.ones(4000, 3, dtype=torch.bool)
    t[:, -1], weight[:, -1] = 1.0, 1.0  # the tiny objective: clean context, the frame at pure noise
    _, t2, w2, _ = drop_text_and_context(text, t, weight, keep, FlowConfig(context_dropout=0.5, prompt_levels=0.5),
                                         torch.Generator().manual_seed(0))
    blank = (t2[:, :2] == 1).all(dim=1)
    levelled = t2[:, -1] < 1
    assert not levelled[~blank].any() and 0.4 < levelled[blank].float().mean() < 0.6  # only blank windows, half
    assert 0.4 < t2[levelled, -1].mean() < 0.6 and (w2[:, -1] == 1).all()  # uniform levels, scored
    torch.manual_seed(0)
    model = WorldModel(WorldModelConfig(image_size=16, patch_size=8, width=32, depth=1, num_heads=2, num_frames=3),
                       TextConfig(vocab=tuple(sorted(rule_words())))).eval()
    for p in model.parameters():
        p.data.add_(torch.randn_like(p) * 0.05)
    words = tokenize(["walks in the desert at night", "swims on open water by day"], model.text_cfg)
    one = SampleConfig(num_steps=1, context_noise=0.0)
    plain = prompt_rollout(model, words, 3, one, torch.Generator().manual_seed(1))
    same = prompt_rollout(model, words, 3, dataclass_replace(one, prompt_steps=1), torch.Generator().manual_seed(1))
    torch.testing.assert_close(plain, same)  # prompt_steps = num_steps: the one rollout as before
    first = prompt_rollout(model, words, 1, dataclass_replace(one, num_steps=6), torch.Generator().manual_seed(1))
    split = prompt_rollout(model, words, 3, dataclass_replace(one, prompt_steps=6), torch.Generator().manual_seed(1))
    assert split.shape == (2, 3, 3, 16, 16) and torch.isfinite(split).all()
    torch.testing.assert_close(split[:, :1], first)  # the first frame in 6 steps, the rest continue from it
    assert not torch.allclose(split[:, 0], plain[:, 0])


def test_a_retrieval_judge_that_meets_a_non_finite_loss_stops_in_one_line():
    """The judge (a state classifier) is trained inside `pretrain retrieval` and never saved: a NaN in its loss
    (a frame of NaN here, as a damaged input would give) once went on and read every clip as noise."""
    from worldloom.pretrain.retrieval import fact_classes, train_classifier
    from worldloom.training import TrainingDiverged

    classes = fact_classes()
    x = torch.zeros(4, 3, 16, 16)
    x[1] = float("nan")
    labels = {"biome": torch.zeros(4, dtype=torch.long), "time": torch.zeros(4, dtype=torch.long)}
    with pytest.raises(TrainingDiverged, match=r"^loss nan at step 1: training stopped; no checkpoint was written"):
        train_classifier(x, labels, classes, steps=3, batch_size=4, seed=0)


def test_retrieval_scores_do_not_move_with_batch_size_and_null_rollouts_share_the_prompts_noise(captioned, tmp_path):
    """`pretrain retrieval --batch-size` set the state classifier's batch too, so a smaller one given to save memory
    changed every score; and a clip's null-caption rollout drew its noise after the prompted one, so the two differed
    by more than the caption. Now --batch-size is only how many clips are generated at once (the judge has
    --classifier-batch-size), and clip i's two rollouts start from its own generator's first draw."""
    import dataclasses

    from worldloom.pretrain.flow import clip_generators
    from worldloom.pretrain.retrieval import RetrievalConfig, prompt_clips, scored_clips

    _, targets = captioned
    run = tmp_path / "wm"
    assert cli(["pretrain", "train", "--data", targets["env"], "--out", str(run), "--max-steps", "2", "--text", *MICRO]) == 0
    reports = []
    for batch in ("1", "3"):
        out = tmp_path / f"retrieval-{batch}"
        assert cli(["pretrain", "retrieval", "--model", str(run), "--data", targets["env"], "--heldout", targets["env"],
                    "--num-clips", "3", "--horizon", "2", "--classifier-steps", "20", "--classifier-frames", "64",
                    "--classifiers", "2", "--batch-size", batch, "--out", str(out)]) == 0
        reports.append(json.loads((out / "retrieval.json").read_text())["scores"])
    assert reports[0] == reports[1]
    model, _, codec = load_world_model(run)
    torch.manual_seed(0)
    for p in model.parameters():  # two steps leave adaLN-zero's branches near identity: perturb so the noise shows
        p.data.add_(torch.randn_like(p) * 0.05)
    cfg = RetrievalConfig(model=str(run), data=(targets["env"],), heldout=targets["env"], horizon=2, batch_size=2)
    clips = prompt_clips(cfg.heldout, 3, cfg.horizon)
    runs = scored_clips(model, codec, clips, cfg)
    one = scored_clips(model, codec, clips, dataclasses.replace(cfg, batch_size=1))
    for kind in runs:
        torch.testing.assert_close(runs[kind], one[kind], atol=1e-5, rtol=0)
    words = torch.zeros_like(tokenize([c for _, _, c, _ in clips], model.text_cfg))
    null = codec.decode(prompt_rollout(model, words, 2, cfg.sample, clip_generators(cfg.seed, 3))).clamp(-1, 1)
    torch.testing.assert_close(runs["null"], null, atol=1e-5, rtol=0)
    assert not torch.allclose(runs["null"], runs["prompt"], atol=1e-3)  # the caption still shows
