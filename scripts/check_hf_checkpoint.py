#!/usr/bin/env python3
"""Checks a Hugging Face checkpoint folder written by ShardFS (`--format hf`)
against what transformers itself writes for the same weights.

    .venv/bin/python scripts/check_hf_checkpoint.py DIR [--max-shard-size 50GB]

Loads DIR with `AutoModelForCausalLM.from_pretrained(DIR, dtype="auto")`
(so DIR needs its config.json), saves it again with `save_pretrained(tmp,
max_shard_size=...)`, and compares every model*.safetensors* file byte for
byte. The max shard size must be the one DIR was written with. A model
loaded with from_pretrained is split in dot_natural_key order (see
HuggingFaceShards.dotNaturalOrder), so this is the reference for checkpoints
ShardFS writes in that order. Exit status 0
when all files are equal. Loads the whole model into memory: meant for the
small models of the compat tests.
"""

import argparse
import os
import sys
import tempfile

from transformers import AutoModelForCausalLM


def weight_files(folder):
    return sorted(n for n in os.listdir(folder) if n.startswith("model") and ".safetensors" in n)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--max-shard-size", default="50GB",
                        help="as given to ShardFS; a plain number is bytes")
    args = parser.parse_args()
    size = int(args.max_shard_size) if args.max_shard_size.isdigit() else args.max_shard_size

    model = AutoModelForCausalLM.from_pretrained(args.dir, dtype="auto")
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, max_shard_size=size)
        ours, theirs = weight_files(args.dir), weight_files(tmp)
        failures = []
        if ours != theirs:
            failures.append(f"files differ: {ours} vs transformers' {theirs}")
        for name in sorted(set(ours) & set(theirs)):
            a = open(os.path.join(args.dir, name), "rb").read()
            b = open(os.path.join(tmp, name), "rb").read()
            if a != b:
                at = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
                failures.append(f"{name}: {len(a)} bytes vs {len(b)}; first difference at byte {at}")
    for failure in failures:
        print(failure, file=sys.stderr)
    if not failures:
        print(f"{len(ours)} files equal to transformers' save_pretrained")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
