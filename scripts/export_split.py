"""Link a checkpoint's validation split into its own REAL/FAKE folder, for `aigi evaluate`.

    python scripts/export_split.py DATA --model CKPT --out DIR

The split is rebuilt from the checkpoint's config (seed and fraction) and checked
against the file-list digest recorded at training time, so the folder holds exactly
the images the model never trained on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common.detector.checkpoint import read_config
from common.detector.config import LABELS, SHIPPED_MODEL
from common.detector.dataset import scan, stratified_split, summarize


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path)
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    config = read_config(args.model)
    split = config.data["split"]
    _, val = stratified_split(scan(args.data), split["val_fraction"], split["seed"])
    recorded = config.data["validation"]["files_sha256"]
    if summarize(val)["files_sha256"] != recorded:
        raise SystemExit("this data folder does not give the split the model was trained on")
    for sample in val:
        target = args.out / LABELS[sample.label] / sample.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(sample.path.resolve())
    print(f"{len(val)} validation images linked under {args.out}")


if __name__ == "__main__":
    main()
