"""bf16 against fp32 in afina's trainer, on the default base model and the samples, in one run.

`AFINA_TUNING_PRECISION=auto` trains in bf16 where the hardware multiplies it natively (on a CPU:
fp32 weights, products autocast to bf16 by oneDNN's AVX-512 BF16 or AMX kernels). This prints
what that buys and costs here: seconds per step and trained tokens/s of the same steps on the same
data in fp32 and in bf16 (the loop's own clock, loading left out), their ratio, and the two runs'
losses side by side (the same run up to bf16's rounding, or not). The two alternate for --rounds
rounds and each side's fastest round counts: other work on the machine only slows a run down.

    PYTHONPATH=. .venv/bin/python benchmarks/precision.py [--steps 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.knowledge import SAMPLES, write_parts  # noqa: E402
from services.settings import Settings  # noqa: E402
from services.tuning import packaged  # noqa: E402
from services.tuning.base import built  # noqa: E402
from services.tuning.train import TrainConfig, main, uses_bf16  # noqa: E402

def run(settings: Settings, folder: Path, parts: list[str], output: Path, precision: str, steps: int) -> dict:
    result = main(TrainConfig.of(settings.tuning, base_model=str(folder), parts=parts, output=str(output),
                                 steps=steps, checkpoint_every=10_000, precision=precision))
    losses = [json.loads(line) for line in (output / "loss.jsonl").read_text().splitlines()]
    return {**result, "losses": [record["loss"] for record in losses]}


def main_(args: argparse.Namespace) -> None:
    settings = Settings()
    folder, _ = built(settings, packaged.SMOLLM2.name, echo=print)
    work = Path(tempfile.mkdtemp(prefix="afina-bench-precision-"))
    parts, tokens = write_parts(folder, SAMPLES / "inbox", work / "parts", settings.normalizer.max_chunk_tokens)
    native = uses_bf16("auto", "cpu")
    print(f"afina precision benchmark: {packaged.SMOLLM2.name}, {len(parts)} sample documents ({tokens} tokens), "
          f"{args.steps} steps of {settings.tuning.micro_batch} x {settings.tuning.gradient_accumulation} x "
          f"{settings.tuning.sequence_length} tokens; this CPU multiplies bf16 natively: {native}", flush=True)
    best: dict[str, dict] = {}
    for r in range(args.rounds):
        for precision in ("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32"):
            started = time.perf_counter()
            result = run(settings, folder, parts, work / f"{precision}-{r}", precision, args.steps)
            per_step = result["seconds"] / result["steps"]
            print(f"round {r + 1} {precision}: {per_step:.2f} s per step, {result['tokens_per_second']:.0f} tokens/s "
                  f"({time.perf_counter() - started:.0f} s with loading)", flush=True)
            if precision not in best or result["tokens_per_second"] > best[precision]["tokens_per_second"]:
                best[precision] = result
    fp32, bf16 = best["fp32"], best["bf16"]
    print(f"\nfp32 {fp32['tokens_per_second']:.0f} tokens/s, bf16 {bf16['tokens_per_second']:.0f} tokens/s: "
          f"bf16/fp32 {bf16['tokens_per_second'] / fp32['tokens_per_second']:.2f}x")
    print("loss by step  fp32: " + " ".join(f"{loss:.3f}" for loss in fp32["losses"]))
    print("              bf16: " + " ".join(f"{loss:.3f}" for loss in bf16["losses"]))
    worst = max(abs(a - b) / a for a, b in zip(fp32["losses"], bf16["losses"]))
    print(f"largest relative loss difference at a step: {worst:.2%}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    main_(parser.parse_args())
