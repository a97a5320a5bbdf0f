"""Logistic regression by SGD on data/points.csv, in plain Python (no NumPy): a stand-in for a training script.

`--fold K --folds N` trains on the rows whose index % N != K and reports accuracy and loss on fold K
(`--folds 1`: trains on every row and reports on the training rows). The epochs come from the node's `params`
($POLYFLOW_PARAMS); results go to $POLYFLOW_OUT/metrics.json, the weights to $POLYFLOW_OUT/model.json.
"""

import argparse
import json
import math
import os
import random

ap = argparse.ArgumentParser()
ap.add_argument("--lr", type=float, required=True)
ap.add_argument("--fold", type=int, default=0)
ap.add_argument("--folds", type=int, default=1)
args = ap.parse_args()
params = json.load(open(os.environ["POLYFLOW_PARAMS"]))
out = os.environ["POLYFLOW_OUT"]

rows = [line.split(",") for line in open("data/points.csv").read().split("\n")[1:] if line]
data = [([float(a), float(b), 1.0], int(y)) for a, b, y in rows]
if args.folds > 1:
    train = [d for i, d in enumerate(data) if i % args.folds != args.fold]
    val = [d for i, d in enumerate(data) if i % args.folds == args.fold]
else:
    train = val = data


def prob(w, x):
    z = sum(wi * xi for wi, xi in zip(w, x))
    return 1.0 / (1.0 + math.exp(-max(min(z, 30.0), -30.0)))


# The seed polyflow gives the node ($POLYFLOW_SEED): the order of the examples.
rng = random.Random(int(os.environ.get("POLYFLOW_SEED", "0")))
w = [0.0, 0.0, 0.0]
for epoch in range(params["epochs"]):
    rng.shuffle(train)
    for x, y in train:
        g = prob(w, x) - y
        w = [wi - args.lr * g * xi for wi, xi in zip(w, x)]
    loss = -sum(math.log(max(prob(w, x) if y else 1 - prob(w, x), 1e-12)) for x, y in train) / len(train)
    print(f"epoch {epoch + 1}: train loss {loss:.4f}")

acc = sum((prob(w, x) > 0.5) == bool(y) for x, y in val) / len(val)
loss = -sum(math.log(max(prob(w, x) if y else 1 - prob(w, x), 1e-12)) for x, y in val) / len(val)
json.dump({"lr": args.lr, "val": {"acc": acc, "loss": loss}}, open(os.path.join(out, "metrics.json"), "w"))
json.dump({"w": w}, open(os.path.join(out, "model.json"), "w"))
