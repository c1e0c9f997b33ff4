"""How good are cnnkit's heat maps? Localisation and faithfulness of CAM, Grad-CAM, Grad-CAM++ and
guided Grad-CAM for the default model, measured on shapes scenes whose object masks are exact.

Trains the default recipe (`cnnkit train`: fastnet on shapes, 10 epochs) `--runs` times with seeds
0, 1, ... (or scores the given `--run` folders), then scores each run on the same `--num`
single-object scenes at the run's own size (32 px) and prints, as mean (min-max over runs):

  localisation   pointing game: the share of scenes whose heat-map maximum lies on the object,
                 under three scorings, to show what each choice does:
                   upsampled  the map upsampled bilinearly to the image, the bare mask
                   grid       the map on its own grid (a 4 x 4 CAM points at a cell), the bare mask
                   grid+1     the same, the object's mask with its 1 px outline (cnnkit's scoring)
                 with the chance level of each map's grid, and energy in mask (share of the
                 positive heat on the object, grid+1) next to a flat map's share
  faithfulness   deletion AUC (lower is better) and insertion AUC (higher) of the class
                 probability, most salient pixels first, next to a random pixel order

    python benchmarks/explain.py                         # 1 training run (~2 min on 2 idle cores) + scoring
    python benchmarks/explain.py --run runs/fastnet-shapes --num 512
    python benchmarks/explain.py --runs 3
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

import cnnkit
from cnnkit.perf.machine import machine
from cnnkit.engine.inference import load_checkpoint_model
from cnnkit.explain import evaluate_methods

METHODS = ("cam", "gradcam", "gradcam_pp", "guided_gradcam")


def score_run(run: str, num: int, seed: int) -> dict:
    """{variant: evaluate_methods result} for one run: the three localisation scorings; curves once."""
    model, meta, _ = load_checkpoint_model(run)
    common = dict(n=num, size=int(meta["input_size"][-1]), channels=int(meta["input_size"][0]),
                  mean=meta["mean"], std=meta["std"], seed=seed)
    return dict(upsampled=evaluate_methods(model, METHODS, outline=0, native=False, curves=False, **common),
                grid=evaluate_methods(model, METHODS, outline=0, curves=False, **common),
                scored=evaluate_methods(model, METHODS, outline=1, curves=True, **common))


def spread(values) -> str:
    v = torch.tensor(values, dtype=torch.float64)
    if len(v) == 1:
        return f"{float(v[0]):.3f}"
    return f"{float(v.mean()):.3f} ({float(v.min()):.3f}-{float(v.max()):.3f})"


def table(head, rows):
    """Print rows under head in aligned columns: names left, numbers right."""
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    left = {0} | {i for i, h in enumerate(head) if h == "map"}
    for r in [head, *rows]:
        print("  ".join(f"{c:<{w}}" if i in left else f"{c:>{w}}" for i, (c, w) in enumerate(zip(r, widths))))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", nargs="*", default=None, help="score these run folders instead of training")
    ap.add_argument("--runs", type=int, default=1, help="training runs (seeds 0, 1, ...) when --run is not given")
    ap.add_argument("--epochs", type=int, default=None, help="override the default recipe's epochs")
    ap.add_argument("--num", type=int, default=256, help="scenes scored per run")
    ap.add_argument("--seed", type=int, default=0, help="seed of the scenes")
    args = ap.parse_args()

    print(f"machine: {machine()}, cnnkit {cnnkit.__version__}")
    runs, train_s = list(args.run or []), []
    if not runs:
        project = tempfile.mkdtemp(prefix="cnnkit_explain_bench_")
        for k in range(args.runs):
            extra = {"epochs": args.epochs} if args.epochs else {}
            t0 = time.perf_counter()
            res = cnnkit.train(data="shapes", seed=k, quiet=True, project=project, name=f"seed{k}",
                               log=lambda *a, **kw: None, **extra)
            train_s.append(time.perf_counter() - t0)
            runs.append(str(res.run_dir))
            print(f"trained {res.run_dir} in {train_s[-1]:.0f} s, best val acc {res.best_metric:.4f}")
    t0 = time.perf_counter()
    scored = [score_run(r, args.num, args.seed) for r in runs]
    first = scored[0]["scored"]
    print(f"\n{len(runs)} run(s) of {load_checkpoint_model(runs[0])[1]['model']} on shapes; each scored on the same "
          f"{args.num} single-object scenes {first['channels']}x{first['size']}x{first['size']} (scene seed "
          f"{args.seed}); scoring took {time.perf_counter() - t0:.0f} s")
    print(f"model accuracy on the scenes: {spread([s['scored']['accuracy'] for s in scored])}; object area "
          f"{spread([s['grid']['mask_fraction'] for s in scored])} of the image (mask), "
          f"{spread([s['scored']['mask_fraction'] for s in scored])} with its 1 px outline")

    def col(variant, method, key):
        vals = [(s[variant]["baseline"] if method == "centre prior" else s[variant]["methods"][method]).get(key)
                for s in scored]
        return "-" if any(v is None for v in vals) else spread(vals)

    print("\nlocalisation: pointing game under three scorings, the chance level of a random point on the same grid,"
          "\nenergy in mask (grid+1) and what a flat map scores")
    rows = []
    for m in list(METHODS) + ["centre prior"]:
        ref = scored[0]["scored"]["baseline"] if m == "centre prior" else scored[0]["scored"]["methods"][m]
        rows.append([m, ref["map"], col("upsampled", m, "pointing_game"), col("grid", m, "pointing_game"),
                     col("scored", m, "pointing_game"), col("scored", m, "pointing_chance"),
                     col("scored", m, "energy_in_mask"), col("scored", m, "energy_uniform")])
    table(("method", "map", "upsampled", "grid", "grid+1", "chance", "energy", "flat map"), rows)
    print("\nfaithfulness: class probability as pixels go, most salient first, and in random order")
    rows = [[m] + [col("scored", m, k) for k in ("deletion_auc", "random_deletion_auc", "insertion_auc",
                                                  "random_insertion_auc")] for m in METHODS]
    table(("method", "deletion AUC (lower)", "random", "insertion AUC (higher)", "random"), rows)
    note = scored[0]["scored"]["methods"]["cam"].get("note")
    if note:
        print(f"\nnote: cam: {note}")
    print("deletion fills pixels with the image's mean colour, insertion starts from a blurred image (sigma = "
          "side / 8); 17 points per curve; pixels of equal saliency go in random order")


if __name__ == "__main__":
    main()
