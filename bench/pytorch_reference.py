#!/usr/bin/python3
"""The reference recipe in PyTorch (Debian python3-torch 1.13), to time qnet against it in one run.

    /usr/bin/python3 bench/pytorch_reference.py --epochs 1 --repeats 3 [--threads 2] [--model reference|keras]

Same data (MNIST's IDX files from ~/.cache/qnet/mnist or --data-dir), same split (the last 6,000
training images held out), batch 32, Adam 1e-3, NHWC-equivalent model: the article's Conv2D 12 3x3
ReLU, MaxPool 2, Dense 10 (`reference`), or Keras' classic convnet (`keras`: Conv2D 32 3x3 ReLU,
MaxPool 2, Conv2D 64 3x3 ReLU, MaxPool 2, Flatten, Dropout 0.5, Dense 10). Prints seconds per
epoch (the training steps only, as bench_train counts them) and the test accuracy after each.
Not part of the test suite: python3-torch is ~1 GB and not a dependency of qnet.
"""
import argparse
import os
import statistics
import time

import numpy as np
import torch
from torch import nn


def idx(path):
    with open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def model(kind):
    if kind == "reference":
        return nn.Sequential(nn.Conv2d(1, 12, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12 * 13 * 13, 10))
    return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Dropout(0.5), nn.Linear(64 * 5 * 5, 10))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", choices=["reference", "keras"], default="reference")
    ap.add_argument("--data-dir", default=os.path.expanduser("~/.cache/qnet/mnist"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.from_numpy(idx(os.path.join(args.data_dir, "train-images-idx3-ubyte")).astype(np.float32) / 255).unsqueeze(1)
    y = torch.from_numpy(idx(os.path.join(args.data_dir, "train-labels-idx1-ubyte")).astype(np.int64))
    tx = torch.from_numpy(idx(os.path.join(args.data_dir, "t10k-images-idx3-ubyte")).astype(np.float32) / 255).unsqueeze(1)
    ty = torch.from_numpy(idx(os.path.join(args.data_dir, "t10k-labels-idx1-ubyte")).astype(np.int64))
    train_x, train_y = x[:54000], y[:54000]
    seconds = []
    for r in range(args.repeats):
        torch.manual_seed(r + 1)
        m = model(args.model)
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        loss_fn = nn.CrossEntropyLoss()
        for e in range(args.epochs):
            m.train()
            perm = torch.randperm(54000)
            t0 = time.perf_counter()
            for i in range(0, 54000, 32):
                idx_b = perm[i:i + 32]
                opt.zero_grad()
                loss = loss_fn(m(train_x[idx_b]), train_y[idx_b])
                loss.backward()
                opt.step()
            seconds.append(time.perf_counter() - t0)
            m.eval()
            with torch.no_grad():
                acc = (m(tx).argmax(1) == ty).float().mean().item()
            print(f"repeat {r + 1} epoch {e + 1}: {seconds[-1]:.3f} s, test accuracy {acc:.4f}", flush=True)
    print(f"pytorch {torch.__version__} {args.model} float epoch: median {statistics.median(seconds):.3f} s over {len(seconds)} "
          f"epochs, {args.threads} threads")


if __name__ == "__main__":
    main()
