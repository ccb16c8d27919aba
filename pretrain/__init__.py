"""worldloom.pretrain: the action-conditioned video world model (a diffusion transformer over
spacetime patches, causal in time), its training, sampling and evaluation.

    worldloom pretrain --data data/env --preset tiny --out runs/wm --minutes 20
    worldloom pretrain eval --model runs/wm --data data/heldout --idm runs/idm-judge
    worldloom rollout --model runs/wm --data data/heldout --episode ep-000 --horizon 64 --out r.mp4

Modules: `model` (WorldModelConfig, PRESETS, WorldModel), `flow` (flow_loss, next_frame,
rollout), `autoencoder` (latent presets), `data` (datasets to tensors), `train` (TrainConfig,
main, train_worker, run_ray), `checkpoint` (run directory, load_world_model), `evaluate`
(EvalConfig, evaluate), `rollout` (RolloutConfig, rollout_episode). See docs/pretrain.md.
"""
