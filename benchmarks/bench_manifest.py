"""Manifest benchmark: validate and plan a 10,000-job manifest, and --help start-up time.

Run:  python benchmarks/bench_manifest.py
Each figure is the best of several runs of the installed ``ruxa-batch`` command in a fresh process,
so it includes interpreter start-up, as a user experiences it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = [
    "rustic oak table",
    "white marble",
    "knitted wool blanket",
    "concrete floor",
    "sunny beach",
    "snowy window sill",
    "kitchen counter",
    "velvet cushion",
]


def command() -> list[str]:
    exe = Path(sys.executable).parent / "ruxa-batch"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "ruxa_batch"]


def write_manifest(folder: Path, products: int) -> Path:
    rows = ["sku,product"] + [f"sku-{i:05d},product number {i}" for i in range(products)]
    (folder / "products.csv").write_text("\n".join(rows) + "\n")
    manifest = folder / "big.yaml"
    manifest.write_text(
        "version: 1\n"
        "name: big\n"
        "vars:\n  cdn: https://cdn.example.com/catalog\n"
        "defaults:\n  image_size: '1:1'\n  output_format: png\n"
        "jobs:\n"
        "  - id: '{sku}-{setting}'\n"
        "    prompt: Place the {product} on a {setting}, soft light\n"
        "    images: ['{cdn}/{sku}.png']\n"
        "    rows: products.csv\n"
        f"    matrix:\n      setting: [{', '.join(SETTINGS)}]\n"
    )
    return manifest


def write_listed_manifest(folder: Path, count: int) -> Path:
    manifest = folder / "listed.yaml"
    jobs = "".join(
        f"  - id: job-{i:05d}\n"
        f"    prompt: Change the background of photo {i} to pixel art style\n"
        f"    images: ['https://cdn.example.com/photos/{i:05d}.png']\n"
        "    image_size: '16:9'\n"
        for i in range(count)
    )
    manifest.write_text("version: 1\nname: listed\njobs:\n" + jobs)
    return manifest


def best_of(runs: int, argv: list[str], cwd: Path) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr}")
        best = min(best, elapsed)
    return best


def main() -> int:
    folder = Path(tempfile.mkdtemp(prefix="ruxa-bench-"))
    try:
        manifest = write_manifest(folder, 10_000 // len(SETTINGS))
        listed = write_listed_manifest(folder, 10_000)
        big_folder = folder / "big"
        big_folder.mkdir()
        big = write_manifest(big_folder, 100_000 // len(SETTINGS))
        base = command()
        rows = [
            ("validate, 10,000 jobs", best_of(3, [*base, "validate", str(manifest)], folder), 2.0),
            (
                "validate, 10,000 listed",
                best_of(3, [*base, "validate", str(listed)], folder),
                2.0,
            ),
            ("plan (text), 10,000 jobs", best_of(3, [*base, "plan", str(manifest)], folder), 2.0),
            (
                "plan (json), 10,000 jobs",
                best_of(3, [*base, "plan", "--format", "json", str(manifest)], folder),
                2.0,
            ),
            ("validate, 100,000 jobs", best_of(2, [*base, "validate", str(big)], folder), 3.0),
            ("plan (text), 100,000 jobs", best_of(2, [*base, "plan", str(big)], folder), 3.0),
            ("--help start-up", best_of(5, [*base, "--help"], folder), 0.3),
        ]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    failed = 0
    print(f"{'figure':<28} {'seconds':>8} {'target':>8}  result")
    for name, seconds, target in rows:
        verdict = "PASS" if seconds < target else "FAIL"
        failed += verdict == "FAIL"
        print(f"{name:<28} {seconds:>8.3f} {'< ' + str(target):>8}  {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
