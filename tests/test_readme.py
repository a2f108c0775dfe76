"""The README's examples stay true."""

from __future__ import annotations

import re
from pathlib import Path

from helpers import REPO


def yaml_blocks() -> list[str]:
    text = (REPO / "README.md").read_text("utf-8")
    return re.findall(r"```yaml\n(.*?)```", text, flags=re.S)


def test_format_example_in_readme_is_valid(run, hermetic: Path) -> None:
    block = next(b for b in yaml_blocks() if b.lstrip().startswith("# yaml-language-server"))
    (hermetic / "readme.yaml").write_text(block)
    (hermetic / "products.csv").write_text("sku\nmug\ncap\n")
    (hermetic / "photos").mkdir()
    for name in ("a", "b"):  # JPEG by their bytes: what the example's glob matches
        (hermetic / "photos" / f"{name}.jpg").write_bytes(b"\xff\xd8\xff\xe0" + name.encode())
    result = run(["ruxa-batch", "validate", "readme.yaml"])
    assert (result.code, result.err) == (0, "")
    assert result.out == "readme.yaml: ok, 9 jobs\n"


def test_validation_sample_in_readme_matches_the_real_output(run, hermetic: Path) -> None:
    text = (REPO / "README.md").read_text("utf-8")
    sample = re.search(r"\$ ruxa-batch validate manifests/spring.yaml\n(.*?)```", text, flags=re.S)
    assert sample is not None
    (hermetic / "manifests").mkdir()
    source = (REPO / "tests" / "data" / "several_problems.yaml").read_text()
    (hermetic / "manifests" / "spring.yaml").write_text(source)
    result = run(["ruxa-batch", "validate", "manifests/spring.yaml"])
    assert result.err == sample.group(1)


def test_shell_completion_lines_in_readme_produce_a_script() -> None:
    """Each completion line of the README names a shell click can write a script for."""
    import os
    import subprocess
    import sys

    text = (REPO / "README.md").read_text("utf-8")
    shells = re.findall(r"_RUXA_BATCH_COMPLETE=(\w+)_source ruxa-batch", text)
    assert set(shells) == {"bash", "zsh", "fish"}
    exe = Path(sys.executable).parent / "ruxa-batch"
    for shell in set(shells):
        done = subprocess.run(
            [str(exe)],
            env={**os.environ, "_RUXA_BATCH_COMPLETE": f"{shell}_source"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0 and "_RUXA_BATCH_COMPLETE" in done.stdout, shell


def test_the_pre_commit_example_names_this_release() -> None:
    from ruxa_batch import __version__

    hook = next(b for b in yaml_blocks() if "ruxa-batch-validate" in b)
    assert f"rev: v{__version__}" in hook
