#!/usr/bin/python3
"""The same models and recipe in PyTorch (Debian python3-torch 1.13), to time qnet against it in one run.

    /usr/bin/python3 bench/pytorch_reference.py --epochs 1 --repeats 3 [--threads 2] [--model reference|keras|resnet8|mobilenet]
        [--data-dir DIR] [--qat] [--infer] [--batch-size 32] [--train-images N]

Same data (IDX files, plain or .gz: MNIST from ~/.cache/qnet/mnist by default, or --data-dir, e.g.
/usr/share/datasets/fashion-mnist), same split (the last 6,000 training images held out), batch 32 (--batch-size; --train-images N trains on the first N only, as bench_train's),
Adam 1e-3 (epsilon 1e-7, Keras'). Models, NCHW-equivalent to qnet's specs:
  reference  the article's Conv2D 12 3x3 ReLU, MaxPool 2, Dense 10
  keras      Keras' classic convnet: Conv2D 32 3x3 ReLU, MaxPool 2, Conv2D 64 3x3 ReLU, MaxPool 2, Flatten,
             Dropout 0.5, Dense 10
  resnet8    models/resnet8.spec: stem conv 16 + BN + ReLU, residual blocks of 16, 32 (stride 2), 64 (stride 2)
             channels (3x3 conv BN ReLU, 3x3 conv BN, identity or 1x1 conv + BN shortcut, add, ReLU), global
             average pooling, Dense 10
  mobilenet  models/mobilenet.spec: stem conv 16 stride 2 + BN + ReLU, depthwise-separable blocks to 32, 64 (stride
             2), 64, 128 (stride 2), global average pooling, Dense 10
BatchNorm: eps 1e-3, momentum 0.01 (Keras' 0.99). --qat: eager-mode QAT as PyTorch's docs do it
(fuse_modules_qat on Conv-BN(-ReLU), FloatFunctional adds, get_default_qat_qconfig('onednn')), then convert.
Prints seconds per epoch (the training steps only, as bench_train counts them) and the test accuracy after
each; --infer then times the f32 model and (with --qat) the converted int8 model on the 10,000 test
images at batch 1 and 256 (the onednn quantized engine), as bench_infer does.
Not part of the test suite: python3-torch is ~1 GB and not a dependency of qnet.
"""
import argparse
import gzip
import os
import statistics
import time

import numpy as np
import torch
from torch import nn
from torch.ao import quantization as tq


def idx(data_dir, stem):
    for name in (stem, stem + ".gz"):
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            with (gzip.open if name.endswith(".gz") else open)(path, "rb") as f:
                data = f.read()
            dims = data[3]
            shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
            return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)
    raise FileNotFoundError(os.path.join(data_dir, stem))


def bn(c):
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class Block(nn.Module):
    """ResNet basic block: conv BN ReLU, conv BN, plus the identity or a 1x1 conv + BN, then ReLU."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), bn(cout), nn.ReLU()
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), bn(cout)
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), bn(cout)) if stride != 1 or cin != cout else None
        self.add = nn.quantized.FloatFunctional()
        self.relu2 = nn.ReLU()

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(self.add.add(y, self.shortcut(x) if self.shortcut is not None else x))

    def fuse(self):
        tq.fuse_modules_qat(self, [["conv1", "bn1", "relu1"], ["conv2", "bn2"]], inplace=True)
        if self.shortcut is not None:
            tq.fuse_modules_qat(self.shortcut, [["0", "1"]], inplace=True)


class Net(nn.Module):
    """A quantizable wrapper: QuantStub, the layers, DeQuantStub."""

    def __init__(self, kind):
        super().__init__()
        self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
        self.fusions = []
        if kind == "reference":
            layers = [nn.Conv2d(1, 12, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12 * 13 * 13, 10)]
            self.fusions = [["0", "1"]]
        elif kind == "keras":
            layers = [nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Flatten(), nn.Dropout(0.5), nn.Linear(64 * 5 * 5, 10)]
            self.fusions = [["0", "1"], ["3", "4"]]
        elif kind == "resnet8":
            layers = [nn.Conv2d(1, 16, 3, 1, 1, bias=False), bn(16), nn.ReLU(), Block(16, 16, 1), Block(16, 32, 2),
                      Block(32, 64, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
            self.fusions = [["0", "1", "2"]]
        else:  # mobilenet
            layers = [nn.Conv2d(1, 16, 3, 2, 1, bias=False), bn(16), nn.ReLU()]
            self.fusions = [["0", "1", "2"]]
            for cin, cout, stride in [(16, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2)]:
                at = len(layers)
                layers += [nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), bn(cin), nn.ReLU(),
                           nn.Conv2d(cin, cout, 1, bias=False), bn(cout), nn.ReLU()]
                self.fusions += [[str(at), str(at + 1), str(at + 2)], [str(at + 3), str(at + 4), str(at + 5)]]
            layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.dequant(self.layers(self.quant(x)))

    def prepare_qat(self):
        tq.fuse_modules_qat(self.layers, self.fusions, inplace=True)
        for m in self.layers:
            if isinstance(m, Block):
                m.fuse()
        self.qconfig = tq.get_default_qat_qconfig("onednn")
        tq.prepare_qat(self, inplace=True)


def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        return (torch.cat([model(x[i:i + 1000]) for i in range(0, len(x), 1000)]).argmax(1) == y).float().mean().item()


def time_inference(model, x, batch):
    model.eval()
    with torch.no_grad():
        model(x[:batch])  # warm-up
        t0 = time.perf_counter()
        for i in range(0, len(x), batch):
            model(x[i:i + batch])
        return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", choices=["reference", "keras", "resnet8", "mobilenet"], default="reference")
    ap.add_argument("--data-dir", default=os.path.expanduser("~/.cache/qnet/mnist"))
    ap.add_argument("--qat", action="store_true", help="eager-mode QAT (fused Conv-BN-ReLU, onednn qconfig)")
    ap.add_argument("--infer", action="store_true", help="time f32 and (with --qat) int8 inference at batch 1 and 256")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--train-images", type=int, default=0, help="train on the first N of the 54,000 training images (0: all)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.backends.quantized.engine = "onednn"
    x = torch.from_numpy(idx(args.data_dir, "train-images-idx3-ubyte").astype(np.float32) / 255).unsqueeze(1)
    y = torch.from_numpy(idx(args.data_dir, "train-labels-idx1-ubyte").astype(np.int64))
    tx = torch.from_numpy(idx(args.data_dir, "t10k-images-idx3-ubyte").astype(np.float32) / 255).unsqueeze(1)
    ty = torch.from_numpy(idx(args.data_dir, "t10k-labels-idx1-ubyte").astype(np.int64))
    count = min(args.train_images, 54000) if args.train_images > 0 else 54000
    train_x, train_y = x[:count], y[:count]
    seconds = []
    mode = "QAT" if args.qat else "float"
    for r in range(args.repeats):
        torch.manual_seed(r + 1)
        m = Net(args.model)
        if args.qat:
            m.train()
            m.prepare_qat()
        opt = torch.optim.Adam(m.parameters(), lr=1e-3, eps=1e-7)
        loss_fn = nn.CrossEntropyLoss()
        for e in range(args.epochs):
            m.train()
            perm = torch.randperm(count)
            t0 = time.perf_counter()
            for i in range(0, count, args.batch_size):
                idx_b = perm[i:i + args.batch_size]
                opt.zero_grad()
                loss = loss_fn(m(train_x[idx_b]), train_y[idx_b])
                loss.backward()
                opt.step()
            seconds.append(time.perf_counter() - t0)
            print(f"repeat {r + 1} epoch {e + 1}: {seconds[-1]:.3f} s, test accuracy ({mode}) {accuracy(m, tx, ty):.4f}", flush=True)
        if args.infer and r == args.repeats - 1:
            if args.qat:
                q = tq.convert(m.eval(), inplace=False)
                print(f"int8 (converted) test accuracy {accuracy(q, tx, ty):.4f}")
                for batch in (1, 256):
                    print(f"int8 inference, 10,000 images at batch {batch}: {time_inference(q, tx, batch):.3f} s", flush=True)
            else:
                for batch in (1, 256):
                    print(f"f32 inference, 10,000 images at batch {batch}: {time_inference(m, tx, batch):.3f} s", flush=True)
    print(f"pytorch {torch.__version__} {args.model} {mode} epoch: median {statistics.median(seconds):.3f} s over {len(seconds)} "
          f"epochs, {args.threads} threads, batch {args.batch_size}, {count} images")


if __name__ == "__main__":
    main()
