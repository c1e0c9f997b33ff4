"""Time-to-accuracy on Fashion-MNIST: cnnkit's default recipe vs the guide's §9 recipe, side by side.

Four runs in one process, on the same machine and data:
  guide-loop    the guide's §9 code as written: per-sample torchvision transforms (Resize 32,
                ToTensor, Normalize 0.5/0.5) in a DataLoader, batch 64, its CNN, Adam 1e-3, fp32,
                and `loss.item()` every step
  cnnkit-seed   the same recipe through cnnkit's engine (`cnnkit train --recipe seed`)
  cnnkit-default cnnkit's default small-image recipe (`cnnkit train --data fashion-mnist --epochs 7`,
                 about three minutes of training on 2 cores)
  cnnkit-1epoch  the same recipe in one epoch: the fastest way to the guide's best (~89 %)

Training time excludes evaluation (each run is evaluated on the 10k test images after every
epoch). Prints, per run, test accuracy after each epoch with the cumulative training time, and
the time to reach 89 % (about the guide's best) and 93 %.

    python benchmarks/fashion_mnist.py                      # all four (about 20 min on 2 cores)
    python benchmarks/fashion_mnist.py --runs cnnkit-default --epochs 12
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

import cnnkit
from cnnkit.perf.machine import machine
from cnnkit.data.datasets import load_data


def guide_loop(epochs: int, log) -> list[tuple[int, float, float]]:
    """The guide's §9 training loop, kept as close to its text as a runnable program allows."""
    from torch import nn, optim
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms
    from PIL import Image

    data = load_data("fashion-mnist")
    transform = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor(),
                                    transforms.Normalize((0.5,), (0.5,))])

    class PILSet(Dataset):  # what torchvision.datasets.FashionMNIST hands the transform: PIL images
        def __init__(self, split):
            self.x, self.y = split.images[:, 0].numpy(), split.targets.tolist()

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            return transform(Image.fromarray(self.x[i], mode="L")), self.y[i]

    trainloader = DataLoader(PILSet(data.train), batch_size=64, shuffle=True)
    testloader = DataLoader(PILSet(data.val), batch_size=256)
    model = cnnkit.create_model("seed_cnn", num_classes=10, in_chans=1)
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=0.001)
    out, total = [], 0.0
    for epoch in range(epochs):
        model.train()
        t0 = time.perf_counter()
        for inputs, labels in trainloader:
            optimizer.zero_grad()
            outputs = model(inputs)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            loss.item()  # the guide prints loss.item(): one host sync per step
        total += time.perf_counter() - t0
        model.eval()
        hits = n = 0
        with torch.no_grad():
            for inputs, labels in testloader:
                hits += (model(inputs).argmax(1) == labels).sum().item()
                n += len(labels)
        out.append((epoch + 1, total, hits / n))
        log(f"  guide-loop epoch {epoch + 1}: {total:7.1f} s  test acc {hits / n:.2%}")
    return out


def cnnkit_run(name: str, epochs: int | None, log, **options) -> list[tuple[int, float, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        if epochs:
            options["epochs"] = epochs
        res = cnnkit.train(data="fashion-mnist", project=tmp, name=name, quiet=True, report=False, log=lambda *a, **k: None,
                           **options)
        out, total = [], 0.0
        for row in res.history:
            total += float(row["epoch_time"])
            out.append((int(row["epoch"]), total, float(row["val_acc"])))
            log(f"  {name} epoch {row['epoch']}: {total:7.1f} s  test acc {float(row['val_acc']):.2%}")
    return out


def time_to(curve, target: float) -> str:
    hit = next((t for _, t, acc in curve if acc >= target), None)
    return f"{hit:.0f} s" if hit is not None else "-"


RUNS = {
    "guide-loop": lambda e, log: guide_loop(e or 10, log),
    "cnnkit-seed": lambda e, log: cnnkit_run("cnnkit-seed", e, log, recipe="seed"),
    # the default recipe with as many epochs as fit in about three minutes of training on 2 cores
    "cnnkit-default": lambda e, log: cnnkit_run("cnnkit-default", e or 7, log),
    # the default recipe in its shortest form: one epoch (one-cycle schedule over that epoch)
    "cnnkit-1epoch": lambda e, log: cnnkit_run("cnnkit-1epoch", 1, log),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    ap.add_argument("--epochs", type=int, default=None, help="override every run's epochs")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    print("n = 1 run per recipe, run one after another in this process\n")
    results = {}
    for name in args.runs:
        print(f"{name}:")
        results[name] = RUNS[name](args.epochs, print)
    print(f"\n{'run':<16}{'epochs':>7}{'train time':>12}{'final acc':>11}{'best acc':>10}{'to 89%':>9}{'to 93%':>9}"
          f"{'to 94%':>9}")
    for name, curve in results.items():
        ep, t, acc = curve[-1]
        best = max(a for _, _, a in curve)
        print(f"{name:<16}{ep:>7}{t:>11.0f}s{acc:>11.2%}{best:>10.2%}{time_to(curve, 0.89):>9}{time_to(curve, 0.93):>9}"
              f"{time_to(curve, 0.94):>9}")
    print()
    first = {name: next((t for _, t, a in curve if a >= 0.89), None) for name, curve in results.items()}
    guide = first.pop("guide-loop", None)
    ours = {k: v for k, v in first.items() if v is not None}
    if guide is not None and ours:
        name = min(ours, key=ours.get)
        print(f"time to 89 %: guide-loop {guide:.0f} s, fastest cnnkit run ({name}) {ours[name]:.0f} s: "
              f"{guide / ours[name]:.1f}x sooner (goal >= 10x)")
    for name, curve in results.items():
        if name.startswith("cnnkit"):
            within = [a for _, t, a in curve if t <= 180]
            if within:
                print(f"{name}: best test accuracy within 180 s of training {max(within):.2%} (goal >= 94.0 %)")


if __name__ == "__main__":
    main()
