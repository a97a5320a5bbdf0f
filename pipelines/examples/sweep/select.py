"""Picks the learning rate of the best mean validation accuracy over the folds in $POLYFLOW_IN/in/*/metrics.json
and writes it alone to $POLYFLOW_OUT/best.json (so that the retraining downstream reruns only when the choice
changes, not when any number of the sweep does)."""

import glob
import json
import os
from collections import defaultdict

accs = defaultdict(list)
for f in glob.glob(os.path.join(os.environ["POLYFLOW_IN"], "in", "*", "metrics.json")):
    m = json.load(open(f))
    accs[m["lr"]].append(m["val"]["acc"])
mean = {lr: sum(v) / len(v) for lr, v in accs.items()}
best = max(sorted(mean), key=lambda lr: mean[lr])
print("mean validation accuracy by lr:", {lr: round(a, 4) for lr, a in sorted(mean.items())}, "-> best", best)
json.dump({"lr": best}, open(os.path.join(os.environ["POLYFLOW_OUT"], "best.json"), "w"))
