"""The conda environment and requirements.txt pin the same versions."""
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TEST_ONLY = {"pytest"}


def pins(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            out[name.strip().lower()] = version.strip()
    return out


def test_conda_envs_pin_the_requirements():
    required = {k: v for k, v in pins((REPO / "requirements.txt").read_text().splitlines()).items()
                if k not in TEST_ONLY}
    envs = sorted((REPO / "envs").glob("*.yaml"))
    assert envs, "no conda environment in envs/"
    for env in envs:
        deps = yaml.safe_load(env.read_text())["dependencies"]
        pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
        assert pins(pip) == required, f"{env.name} and requirements.txt disagree"
