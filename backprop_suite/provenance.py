"""What a result was made with: library versions, machine, code revision, and a checksum of the code."""
import functools
import hashlib
import subprocess
from pathlib import Path

import gradcheck.environment

REPO_ROOT = Path(__file__).resolve().parent.parent
# Modules that present results, schedule runs or benchmark, but never change what an experiment measures;
# a change to them must not make every stored result out of date. (distribute.py is not among them: a
# multi-worker run's results depend on its training loop.)
NOT_EXPERIMENT_CODE = ("backprop_suite/report.py", "backprop_suite/reproduce.py", "backprop_suite/bench.py",
                       "backprop_suite/op_profile.py")


def environment() -> dict:
    """The verifier's record of the machine and versions, with the revision of the suite's code."""
    return {**gradcheck.environment.environment(), "code_revision": CODE_REVISION}


def _git_revision() -> str | None:
    try:
        revision = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                                  capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        # Dirty means the code differs from the revision; results/ changes while results are made.
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no",
                                "--", ".", ":!results"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{revision}+dirty" if dirty else revision


# Read once, when the suite is imported: the revision of the code that is running, not of whatever
# the work tree holds when a long run ends.
CODE_REVISION = _git_revision()


@functools.cache
def code_sha256() -> str:
    """SHA-256 over the code that computes results (models/, backprop_suite/ but NOT_EXPERIMENT_CODE, the verifier
    in verifier/gradcheck/) and the pinned requirements: a result whose stored checksum differs was made by other
    code."""
    folders = ("models", "backprop_suite", "verifier/gradcheck")
    files = sorted(path for folder in folders for path in (REPO_ROOT / folder).rglob("*.py")
                   if path.relative_to(REPO_ROOT).as_posix() not in NOT_EXPERIMENT_CODE)
    digest = hashlib.sha256()
    for path in [*files, REPO_ROOT / "requirements.txt"]:
        content = path.read_bytes()
        digest.update(f"{path.relative_to(REPO_ROOT).as_posix()} {len(content)}\n".encode())
        digest.update(content)
    return digest.hexdigest()
