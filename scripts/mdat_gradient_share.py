"""How much of the network's gradient comes from MDAT: |∇θ λ_f·L_MDA^Df| and |∇θ λ_o·L_MDA^Do| against |∇θ L_CE|.

Usage: .venv/bin/python scripts/mdat_gradient_share.py runs/study/runs/mdat/seed0 [RUN ...]

For each finished study run (``done.json`` + ``train/checkpoints/latest.pt``) it rebuilds the run's training
config from the recorded command, loads the trained network and classifiers, and averages the gradient norms with
respect to the dissimilarity network's parameters over the first 5 batches of epoch 0, with the domain labels of
τ = 1, 0.75 and 0.5 (eq. 1). An investigation tool for docs/RESULTS.md, not part of the package.
"""
import json
import shlex
import sys

import torch
from torch.nn import functional as F

from mgcda_core.losses.mdat import generator_adversarial_loss
from mgcda_core.losses.segmentation import weighted_cross_entropy
from mgcda_core.training.config import load_train_config
from mgcda_core.training.distributed import DistContext
from mgcda_core.training.run_checkpoints import load_training_checkpoint
from mgcda_core.training.trainer import Trainer

torch.set_num_threads(1)
cpu = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def norms(run, taus=(1.0, 0.75, 0.5), batches=5):
    done = json.load(open(f"{run}/done.json"))
    args = shlex.split(done["train_command"])
    preset = args[args.index("--config") + 1]
    overrides = [args[i + 1] for i, a in enumerate(args) if a == "--set" and not args[i + 1].startswith("checkpoint.out_dir")]
    config = load_train_config(preset, overrides + ["checkpoint.out_dir=/tmp/gradnorm_out"])
    trainer = Trainer(config, cpu, show_progress=False)
    ckpt = load_training_checkpoint(f"{run}/train/checkpoints/latest.pt")
    step = trainer.step_fn
    step.load_state_dict(ckpt["model"], ckpt["training"])
    params = list(step.model.parameters())
    for tau in taus:
        rows = {"ce": [], "mda_f": [], "mda_o": []}
        trainer.sampler.set_epoch(0)
        for i, batch in enumerate(trainer._loader()):
            if i == batches:
                break
            inputs = [batch[k] for k in ("image", "synthesis", "semantic", "prior")]
            label, domain = batch["label"], torch.as_tensor(batch["domain"])
            is_v, is_a = domain == 0, domain == 1
            out = step.model(*inputs)
            terms = {"ce": weighted_cross_entropy(out.logits, label, step.class_weights)}
            pf = step.feature_classifier(out.fused_deepest)
            po = step.output_classifier(F.softmax(out.logits, 1)[:, 1:2])
            terms["mda_f"] = config.loss.lambda_f * generator_adversarial_loss(pf[is_v], pf[is_a], tau)
            terms["mda_o"] = config.loss.lambda_o * generator_adversarial_loss(po[is_v], po[is_a], tau)
            for name, value in terms.items():
                grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
                rows[name].append(float(torch.sqrt(sum((g ** 2).sum() for g in grads if g is not None))))
        mean = {k: sum(v) / len(v) for k, v in rows.items()}
        print(f"{run} labels at tau={tau}: |grad| ce {mean['ce']:.2e}, λ_f·mda_f {mean['mda_f']:.2e} "
              f"({mean['mda_f'] / mean['ce']:.1e} of ce), λ_o·mda_o {mean['mda_o']:.2e} ({mean['mda_o'] / mean['ce']:.1e} of ce)")


for run in sys.argv[1:]:
    norms(run)
