"""Compare compact-backbone candidates on the same short schedule (architecture by measurement).

    python scripts/select_architecture.py DATA OUT.json [--epochs 3]

Each candidate trains for the same number of epochs (cosine schedule, batch 128, bf16
autocast where the CPU supports it) on the same stratified split; the JSON records its
validation accuracy, parameters and training throughput.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from common.detector.training import TrainOptions, train

CANDIDATES = {
    "w32-b111": ((32, 64, 128), (1, 1, 1), "resized"),
    "w32-b222": ((32, 64, 128), (2, 2, 2), "resized"),
    "w48-b111": ((48, 96, 192), (1, 1, 1), "resized"),
    "w32-b222-pad": ((32, 64, 128), (2, 2, 2), "pad"),
    "w64-b222-pad": ((64, 128, 256), (2, 2, 2), "pad"),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--only", default="", help="comma-separated candidate names")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    chosen = [n for n in args.only.split(",") if n] or list(CANDIDATES)
    for name in chosen:
        widths, blocks, crop = CANDIDATES[name]
        started = time.perf_counter()
        result = train(
            TrainOptions(
                data=args.data,
                out=Path(f"/tmp/arch-{name}"),
                widths=widths,
                blocks=blocks,
                crop=crop,
                epochs=args.epochs,
                batch_size=128,
                lr=2e-3,
                schedule="cosine",
                precision=args.precision,
                patience=100,
                show_progress=False,
            )
        )
        results[name] = {
            "widths": widths,
            "blocks": blocks,
            "crop": crop,
            "epochs": args.epochs,
            "val_accuracy": result.best_val_accuracy,
            "roc_auc": result.metrics["roc_auc"],
            "params": result.metrics["params"],
            "minutes": round((time.perf_counter() - started) / 60, 1),
            "torch_threads": torch.get_num_threads(),
        }
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    logging.info("results: %s", json.dumps(results))


if __name__ == "__main__":
    main()
