"""OpenAI's released IDM in WorldLoom: VPT's forward pass against VPT's own code (golden), the
`.model` reader that never unpickles, bad weight files, and `vpt:PATH` in idm label / eval and
pretrain eval's controllability judge."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from recordings import frames_of
from safetensors.torch import load_file

from worldloom.errors import UserError
from worldloom.idm import checkpoint, vpt
from worldloom.idm.infer import predict
from worldloom.pipeline.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "vpt_idm"
MODELS = ("tiny", "tiny-memory")  # attention memory 0 (as 4x_idm) and 3 frames (a banded relative bias)


def released_files(tmp_path: Path, name: str) -> Path:
    """The fixture as OpenAI ships an IDM: NAME.weights (torch.save of the state dict) + NAME.model."""
    weights = tmp_path / f"{name}.weights"
    torch.save(load_file(str(FIXTURES / f"{name}.safetensors")), weights)
    shutil.copy(FIXTURES / f"{name}.model", tmp_path / f"{name}.model")
    return weights


@pytest.mark.parametrize("name", MODELS)
def test_logits_match_vpts_own_code(tmp_path, name):
    model, cfg = checkpoint.load_idm(f"vpt:{released_files(tmp_path, name)}")
    golden = load_file(str(FIXTURES / f"{name}-golden.safetensors"))
    assert isinstance(model, vpt.VPTIDM) and cfg.memory == (0 if name == "tiny" else 3) and cfg.temperature == 4.0
    frames = golden["frames"]  # (1, 8, 16, 16, 3) uint8
    with torch.no_grad():
        pad = torch.zeros(1, cfg.context, 16, 16, 3, dtype=torch.uint8)
        buttons, camera = model.logits(model.frame_features(torch.cat([pad, frames, pad], 1)))
        out = model(frames)
    assert (F.log_softmax(buttons, -1) - golden["buttons"]).abs().max() < 1e-4
    assert (F.log_softmax(camera, -1) - golden["camera"]).abs().max() < 1e-4
    assert (F.logsigmoid(out["buttons"]) - golden["buttons"][..., 1]).abs().max() < 1e-4
    # predict (the labeling path) decodes as VPT: argmax buttons, the argmax camera bin's centre
    pred = predict(model, frames[0].numpy())
    np.testing.assert_array_equal(pred["buttons"], golden["argmax_buttons"][0].numpy().astype(bool))
    np.testing.assert_array_equal(pred["camera_bins"], golden["argmax_camera"][0].numpy())
    np.testing.assert_allclose(pred["camera_deg"], golden["camera_deg"][0].numpy(), atol=1e-5)


def test_preset_is_4x_idm():
    """The values of the released 4x_idm.model (its keyword arguments as published) give the preset."""
    net = {"attention_heads": 32, "attention_mask_style": "none", "attention_memory_size": 128,
           "conv3d_params": {"inchan": 3, "kernel_size": [5, 1, 1], "outchan": 128, "padding": [2, 0, 0]},
           "hidsize": 4096, "img_shape": [128, 128, 128], "impala_kwargs": {"post_pool_groups": 1}, "impala_width": 16,
           "init_norm_kwargs": {"batch_norm": False, "group_norm_groups": 1}, "n_recurrence_layers": 2,
           "only_img_input": True, "pointwise_ratio": 4, "pointwise_use_activation": False, "recurrence_is_residual": True,
           "recurrence_type": "transformer", "single_output": True, "timesteps": 128, "use_pointwise_layer": True,
           "use_pre_lstm_ln": False}
    doc = {"model": {"args": {"net": {"args": net}, "pi_head_opts": {"temperature": 4}}}}
    assert vpt.config_from_model(doc, Path("4x_idm.model")) == vpt.PRESETS["4x_idm"]
    with torch.device("meta"):
        params = sum(p.numel() for p in vpt.VPTIDM(vpt.PRESETS["4x_idm"]).parameters())
    assert 4.5e8 < params < 5.5e8  # "about 0.5B parameters"


def test_model_file_is_read_without_unpickling(tmp_path):
    doc = vpt.read_model_file(FIXTURES / "tiny.model")
    assert doc["model"]["args"]["net"]["args"]["hidsize"] == 16 and doc["version"] == 1361
    for protocol in (0, 1, 2, 4, 5):  # every protocol of plain data reads back the same
        (tmp_path / "p.model").write_bytes(pickle.dumps(doc, protocol=protocol))
        assert vpt.read_model_file(tmp_path / "p.model") == doc, protocol
    sentinel = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (__import__("os").system, (f"touch {sentinel}",))

    for protocol in (0, 2, 4):
        (tmp_path / "evil.model").write_bytes(pickle.dumps({"model": Evil()}, protocol=protocol))
        with pytest.raises(UserError, match=r"evil.model: holds a pickle (STACK_)?GLOBAL .*system.* never|would import"):
            vpt.read_model_file(tmp_path / "evil.model")
    assert not sentinel.exists()
    (tmp_path / "np.model").write_bytes(pickle.dumps({"t": np.float32(4)}))
    with pytest.raises(UserError, match="numpy"):
        vpt.read_model_file(tmp_path / "np.model")
    (tmp_path / "cut.model").write_bytes(pickle.dumps(doc)[:40])
    with pytest.raises(UserError, match="cut.model: "):
        vpt.read_model_file(tmp_path / "cut.model")


def test_bad_weight_files_are_one_line_errors(tmp_path):
    weights = released_files(tmp_path, "tiny")
    data = weights.read_bytes()
    (tmp_path / "cut.weights").write_bytes(data[: len(data) // 2])
    shutil.copy(tmp_path / "tiny.model", tmp_path / "cut.model")
    with pytest.raises(UserError, match=r"cut.weights: not a readable torch weights file") as err:
        checkpoint.load_idm(f"vpt:{tmp_path / 'cut.weights'}")
    assert "\n" not in str(err.value)
    state = load_file(str(FIXTURES / "tiny.safetensors"))
    for name, change in (("shape", lambda s: s.update({"net.final_ln.weight": torch.zeros(3)})),
                         ("missing", lambda s: s.pop("pi_head.camera.linear_layer.bias"))):
        broken = dict(state)
        change(broken)
        torch.save(broken, tmp_path / f"{name}.weights")
        shutil.copy(tmp_path / "tiny.model", tmp_path / f"{name}.model")
        with pytest.raises(UserError) as err:
            checkpoint.load_idm(f"vpt:{tmp_path / name}.weights")
        message = str(err.value)
        assert "\n" not in message
        if name == "shape":
            assert "tensor 'net.final_ln.weight' has shape (3,)" in message and "needs (16,)" in message
        else:
            assert "no tensor 'pi_head.camera.linear_layer.bias' (needed with shape (22,)" in message
    torch.save({"x": torch.zeros(1), "obj": Path("/etc")}, tmp_path / "object.weights")  # not weights_only-safe
    with pytest.raises(UserError, match="object.weights: not a readable torch weights file"):
        checkpoint.load_idm(f"vpt:{tmp_path / 'object.weights'}")
    with pytest.raises(UserError, match="no such file"):
        checkpoint.load_idm(f"vpt:{tmp_path / 'absent.weights'}")
    # without a .model beside it, the 4x_idm preset: a tiny file does not fit it
    lone = tmp_path / "lone" / "tiny.weights"
    lone.parent.mkdir()
    shutil.copy(weights, lone)
    with pytest.raises(UserError, match="has shape .* the VPT IDM of preset 4x_idm needs"):
        checkpoint.load_idm(f"vpt:{lone}")


def test_label_and_eval_run_vpt_idm(tmp_path):
    from worldloom.datasets import Dataset
    from worldloom.datasets.ingest import IngestConfig, ingest
    from worldloom.io import write_video

    spec = f"vpt:{released_files(tmp_path, 'tiny')}"
    model_id = checkpoint.checkpoint_id(spec)
    assert model_id.startswith("vpt:tiny.weights@sha256-") and checkpoint.model_config(spec).num_frames == 8
    write_video(tmp_path / "videos" / "clip.mp4", frames_of(20, 64), fps=20, pix_fmt="yuv444p", crf=10)
    code = main(["idm", "label", "--model", spec, "--data", str(tmp_path / "videos"), "--out", str(tmp_path / "labeled")])
    assert code == 0
    ds = Dataset(tmp_path / "labeled")
    clip = ds.frames(ds.episode_ids[0])
    assert clip.label_source == "idm" and clip.label_model == model_id + "+hold7" and clip.buttons.shape == (20, 20)
    # idm eval on VPT recordings ingested from the golden fixture (resized to the model's 16x16)
    ingest(IngestConfig(data=(str(Path(__file__).parent / "fixtures" / "vpt"),), out=str(tmp_path / "rec"), resolution="16"))
    assert main(["idm", "eval", "--model", spec, "--data", str(tmp_path / "rec")]) == 0
    report = json.loads((tmp_path / "eval-rec" / "eval.json").read_text())  # beside the weights file
    assert report["model"] == model_id and report["num_steps"] == 17


def test_vpt_idm_judges_controllability(tmp_path):
    from worldloom.pretrain.evaluate import controllability

    spec = f"vpt:{released_files(tmp_path, 'tiny')}"
    rng = np.random.default_rng(0)
    truth = torch.from_numpy(frames_of(12, 32)[None].repeat(2, 0))  # (2, 12, 32, 32, 3): resized to 16x16 inside
    gen = {"truth": truth, "true": truth[:, 4:12].flip(1).contiguous()}
    clips = {"buttons": torch.from_numpy(rng.random((2, 12, 20)) < 0.3).float(),
             "camera": torch.from_numpy(rng.normal(0, 2, (2, 12, 2))).float()}
    out = controllability(spec, gen, clips, context=4, horizon=8)
    assert set(out) == {"real", "generated", "ratio"} and 0.0 <= out["real"]["button_accuracy_mean"] <= 1.0
