"""Energy distance and mode statistics of a trained toy DDPM vs ring8, with a target-vs-target floor.

  python experiments/ddpm_toy_stats.py runs/toy   (PYTHONPATH=. ; prints one JSON line)
"""
import json
import sys
import time

import jax
import numpy as np

from configs import ddpm
from genjax.data.toy import TOYS
from genjax.eval.toy_metrics import energy_distance, mode_statistics
from genjax.train.experiment import Experiment

n = 2000
cfg = ddpm.get_config("toy")
exp = Experiment(cfg)
state, step = exp.restore(sys.argv[1], "latest")
t0 = time.perf_counter()
gen = jax.jit(exp.family.generate, static_argnames="num")
x = np.asarray(gen(exp.eval_params(state), {}, jax.random.key(123), num=n))
spec = TOYS["ring8"]
a, _ = spec.sample(np.random.default_rng(100), n)
b, _ = spec.sample(np.random.default_rng(101), n)
out = {"step": step, "n": n, "sampler": cfg.model.sampler, "energy_distance_model_vs_target": energy_distance(x, a),
       "energy_distance_target_vs_target": energy_distance(b, a),
       "model_modes": mode_statistics(x, spec.modes, spec.mode_std),
       "target_modes": mode_statistics(b, spec.modes, spec.mode_std), "seconds": time.perf_counter() - t0}
print(json.dumps(out))
